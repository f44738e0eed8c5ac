package audit

import (
	"math"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/spectral"
	"github.com/lathe-ml/lathe/tensor"
)

type paths struct{ lora, base, merged, gguf, gguf8, smol string }

func shared(t *testing.T) paths {
	tiny := testshared.Path(t, "models", "tiny-llama-a")
	return paths{
		lora:   filepath.Join(tiny, "lora-shakespeare-a"),
		base:   filepath.Join(tiny, "hf"),
		merged: filepath.Join(tiny, "merged-lora-shakespeare-a"),
		gguf:   filepath.Join(tiny, "gguf", "tiny-llama-a-f32.gguf"),
		gguf8:  filepath.Join(tiny, "gguf", "tiny-llama-a-q8_0.gguf"),
		smol:   testshared.Path(t, "data", "safetensors", "smollm135m-medical-lora"),
	}
}

func rel(a, b float64) float64 { return math.Abs(a-b) / max(math.Abs(b), 1e-300) }

// firstLayers limits the slow analyses (two full SVDs per module) to layers 0 and 1 of tiny-llama-a.
func firstLayers(o Options) Options {
	o.Include = regexp.MustCompile(`layers\.[01]\.`).MatchString
	return o
}

// TestAdapterMatchesFineTune analyzes the shared LoRA with its base, and PEFT's merge of it (stored beside it)
// against the same base: the two routes — factors merged by lathe, and weights merged by PEFT — must agree on every
// layer's update spectrum, tuned α and intruder dimensions. This also checks lathe's scaling (α/r) against PEFT's.
func TestAdapterMatchesFineTune(t *testing.T) {
	p := shared(t)
	opts := firstLayers(DefaultOptions())
	ad, err := Spectrum(p.lora, p.base, opts)
	if err != nil {
		t.Fatal(err)
	}
	ft, err := Spectrum(p.merged, p.base, opts)
	if err != nil {
		t.Fatal(err)
	}
	if ad.Kind != KindAdapter || ft.Kind != KindDelta {
		t.Fatalf("kinds %s, %s", ad.Kind, ft.Kind)
	}
	byName := map[string]Layer{}
	for _, l := range ft.Layers {
		byName[l.Name] = l
	}
	if len(ad.Layers) != 14 {
		t.Fatalf("%d adapter layers in layers 0-1, want 14", len(ad.Layers))
	}
	for _, a := range ad.Layers {
		f, ok := byName[a.Name]
		if !ok || a.Skipped != "" || f.Skipped != "" {
			t.Fatalf("%s: adapter skipped %q, fine-tune present %v skipped %q", a.Name, a.Skipped, ok, f.Skipped)
		}
		// The merged checkpoint is float32: its difference from the base carries rounding of |W|·2⁻²⁴.
		if e := rel(a.Metrics.SVMax, f.Metrics.SVMax); e > 1e-4 {
			t.Errorf("%s: ‖ΔW‖₂ %g (factors) vs %g (merged − base)", a.Name, a.Metrics.SVMax, f.Metrics.SVMax)
		}
		if e := rel(a.Tuned.PowerLaw.Alpha, f.Tuned.PowerLaw.Alpha); e > 1e-6 {
			t.Errorf("%s: tuned α %g vs %g", a.Name, a.Tuned.PowerLaw.Alpha, f.Tuned.PowerLaw.Alpha)
		}
		if !equalInts(a.Intruders.Left, f.Intruders.Left) || !equalInts(a.Intruders.Right, f.Intruders.Right) {
			t.Errorf("%s: intruders %v/%v vs %v/%v", a.Name, a.Intruders.Left, a.Intruders.Right, f.Intruders.Left, f.Intruders.Right)
		}
		if a.Intruders == nil || len(a.Intruders.MaxCosLeft) != 10 || a.DeltaNormRatio <= 0 {
			t.Errorf("%s: intruder report %+v, ratio %g", a.Name, a.Intruders, a.DeltaNormRatio)
		}
	}
	if ad.Intruders != ft.Intruders || ad.Intruders == 0 {
		t.Errorf("intruder totals %d (adapter) and %d (fine-tune)", ad.Intruders, ft.Intruders)
	}
	for _, l := range ft.Layers {
		if !opts.Include(l.Name) {
			t.Errorf("%s: outside the selection", l.Name)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestFactoredSpectrumMatchesFormed is the acceptance test on the real adapters: each module's ΔW spectrum
// from the small factorization equals the SVD of the formed ΔW to 1e-5 relative.
func TestFactoredSpectrumMatchesFormed(t *testing.T) {
	p := shared(t)
	for _, path := range []string{p.lora, p.smol} {
		a, err := adapter.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		for i := range a.Modules {
			if path == p.smol && i%3 != 0 {
				continue // every third SmolLM module keeps the dense SVDs affordable
			}
			m := &a.Modules[i]
			left, right, err := m.Factors()
			if err != nil {
				t.Fatal(err)
			}
			small, err := spectral.LowRankSVD(left, right, m.Scale)
			if err != nil {
				t.Fatal(err)
			}
			d, err := m.Delta()
			if err != nil {
				t.Fatal(err)
			}
			full, err := spectral.SingularValues(d)
			if err != nil {
				t.Fatal(err)
			}
			for j, s := range small.S {
				if rel(s, full[j]) > 1e-5 {
					t.Errorf("%s %s: σ%d = %.9g (factored) vs %.9g (formed)", path, m.Name, j, s, full[j])
				}
			}
			if full[len(small.S)] > 1e-9*full[0] {
				t.Errorf("%s %s: formed ΔW has rank above %d (σ = %g)", path, m.Name, m.Rank, full[len(small.S)])
			}
		}
		a.Close()
	}
}

// TestSmolLMWithoutBase: the real SmolLM-135M LoRA analyzes from its factors alone.
func TestSmolLMWithoutBase(t *testing.T) {
	p := shared(t)
	r, err := Spectrum(p.smol, "", DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != KindAdapter || len(r.Layers) != 60 || r.Summary.Layers != 60 || r.TunedSummary != nil {
		t.Fatalf("report: kind %s, %d layers, summary %+v", r.Kind, len(r.Layers), r.Summary)
	}
	for _, l := range r.Layers {
		m := l.Metrics
		if l.Skipped != "" || m == nil || m.NumEvals != 16 || l.Rank != 16 || l.Scale != 2 || l.Intruders != nil {
			t.Errorf("%s: skipped %q, metrics %v, rank %d, scale %g", l.Name, l.Skipped, m != nil, l.Rank, l.Scale)
			continue
		}
		if m.MatrixRank != 16 || m.StableRank < 1 || m.StableRank > 16 || m.EffectiveRank > 16 || m.Entropy <= 0 || m.Entropy > 1 {
			t.Errorf("%s: rank %d, stable rank %g, erank %g, entropy %g", l.Name, m.MatrixRank, m.StableRank, m.EffectiveRank, m.Entropy)
		}
	}
	// WeightWatcher's peft mode analyzes B·A without α/r = 2: the spectrum halves, the shape-only metrics stay.
	compat := DefaultOptions()
	compat.Spectral.WWCompat = true
	rc, err := Spectrum(p.smol, "", compat)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range rc.Layers {
		m, full := l.Metrics, r.Layers[i].Metrics
		if rel(m.SVMax, full.SVMax/2) > 1e-12 || rel(m.StableRank, full.StableRank) > 1e-12 {
			t.Errorf("%s: WW-compatible σmax %g, scaled %g", l.Name, m.SVMax, full.SVMax)
		}
	}
	c, err := Check(p.smol, "", NoPolicy(), DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if !c.Passed || c.Modules != 60 {
		t.Errorf("check of the SmolLM LoRA: passed %v, %d modules, findings %+v", c.Passed, c.Modules, c.Findings)
	}
}

// TestModelAcrossFormats: a model's spectra do not depend on its file format. The GGUF conversion permutes the
// rows of q and k, which leaves singular values alone, so every tensor's α matches its Hugging Face original; the
// Q8_0 file, dequantized, stays within quantization error of the largest singular value.
func TestModelAcrossFormats(t *testing.T) {
	p := shared(t)
	hf, err := Model(p.base, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	hfm, _ := modelfile.Open(p.base)
	defer hfm.Close()
	gm, _ := modelfile.Open(p.gguf)
	defer gm.Close()
	mapping, err := modelfile.LlamaMapping(hfm, gm)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{p.gguf, p.gguf8} {
		g, err := Model(path, DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		byName := map[string]Layer{}
		for _, l := range g.Layers {
			byName[l.Name] = l
		}
		if len(g.Layers) != len(hf.Layers) {
			t.Errorf("%s: %d layers, Hugging Face %d", path, len(g.Layers), len(hf.Layers))
		}
		for _, l := range hf.Layers {
			name, _ := mapping.Pair(l.Name, int64(l.Rows))
			gl, ok := byName[name]
			if !ok || gl.Metrics == nil || l.Metrics == nil {
				t.Errorf("%s: %s (%s) missing", path, l.Name, name)
				continue
			}
			if path == p.gguf {
				if rel(gl.Metrics.PowerLaw.Alpha, l.Metrics.PowerLaw.Alpha) > 1e-9 || rel(gl.Metrics.Norm, l.Metrics.Norm) > 1e-12 {
					t.Errorf("%s: α %g vs %g", name, gl.Metrics.PowerLaw.Alpha, l.Metrics.PowerLaw.Alpha)
				}
			} else if rel(gl.Metrics.SVMax, l.Metrics.SVMax) > 0.01 {
				t.Errorf("%s (Q8_0): σmax %g vs %g", name, gl.Metrics.SVMax, l.Metrics.SVMax)
			}
		}
	}
}

// copyAdapter writes a variant of the shared PEFT adapter: config replaced, and edit applied to each tensor.
func copyAdapter(t *testing.T, src, config string, edit func(name string, v []float32)) string {
	t.Helper()
	a, err := adapter.OpenPEFT(src)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	dir := t.TempDir()
	var views []tensor.View
	for _, name := range a.TensorNames() {
		v, err := a.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := v.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			edit(name, f)
		}
		data := make([]byte, 4*len(f))
		tensor.FromFloat32(data, f, tensor.F32)
		views = append(views, tensor.View{Name: name, DType: tensor.F32, Shape: v.Shape, Data: data})
	}
	if err := safetensors.WriteFile(filepath.Join(dir, adapter.WeightsName), views, nil); err != nil {
		t.Fatal(err)
	}
	if config == "" {
		config = string(a.Config.Raw)
	}
	if err := os.WriteFile(filepath.Join(dir, adapter.ConfigName), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func count(r *CheckReport, rule, severity string) int {
	n := 0
	for _, f := range r.Findings {
		if f.Rule == rule && f.Severity == severity {
			n++
		}
	}
	return n
}

// TestCheckStructure: each structural rule catches the defect it is for, on variants of the real adapter, and the
// adapter as shipped passes against its base.
func TestCheckStructure(t *testing.T) {
	p := shared(t)
	opts := firstLayers(DefaultOptions())
	const targets = `"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]`
	cases := []struct {
		name     string
		config   string
		edit     func(string, []float32)
		base     string
		rule     string
		severity string
		want     int
	}{
		{"as shipped", "", nil, p.base, "", "", 0},
		{"r disagrees", `{"peft_type": "LORA", "r": 4, "lora_alpha": 16, ` + targets + `}`, nil, "", RuleRank, Error, 42},
		{"rank_pattern disagrees", `{"r": 8, "lora_alpha": 16, "rank_pattern": {"layers\\.0\\.mlp\\.up_proj": 2}, ` + targets + `}`, nil, "", RuleRank, Error, 1},
		{"pattern matches nothing", `{"r": 8, "lora_alpha": 16, "alpha_pattern": {"nothing_here": 2}, ` + targets + `}`, nil, "", RuleScaling, Warning, 1},
		{"not targeted", `{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}`, nil, "", RuleTargets, Error, 18},
		{"dora without vectors", `{"r": 8, "lora_alpha": 16, "use_dora": true, ` + targets + `}`, nil, "", RuleScaling, Error, 42},
		{"NaN", "", func(name string, v []float32) {
			if name == "base_model.model.model.layers.3.mlp.up_proj.lora_A.weight" {
				v[17] = float32(math.NaN())
			}
		}, "", RuleFinite, Error, 1},
		{"zero B", "", func(name string, v []float32) {
			if name == "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight" {
				clear(v)
			}
		}, "", RuleZero, Warning, 1},
		{"wrong base", "", nil, p.gguf, RuleBase, Error, 42},
	}
	for _, c := range cases {
		dir := p.lora
		if c.config != "" || c.edit != nil {
			dir = copyAdapter(t, p.lora, c.config, c.edit)
		}
		r, err := Check(dir, c.base, NoPolicy(), opts)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if c.rule == "" {
			if !r.Passed || len(r.Findings) != 0 {
				t.Errorf("%s: passed %v, findings %+v", c.name, r.Passed, r.Findings)
			}
			continue
		}
		if got := count(r, c.rule, c.severity); got != c.want || r.Passed != (c.severity != Error) {
			t.Errorf("%s: %d %s %s findings (want %d), passed %v; findings %+v", c.name, got, c.severity, c.rule, c.want, r.Passed, r.Findings)
		}
	}
	if _, err := Check(filepath.Join(t.TempDir(), "missing"), "", NoPolicy(), opts); err == nil {
		t.Error("missing adapter: no error")
	}
}

// TestCheckPolicy: the spectral limits fail exactly the layers the analysis puts beyond them.
func TestCheckPolicy(t *testing.T) {
	p := shared(t)
	opts := firstLayers(DefaultOptions())
	spec, err := Spectrum(p.lora, p.base, opts)
	if err != nil {
		t.Fatal(err)
	}
	withIntruders, over1 := 0, 0
	for _, l := range spec.Layers {
		if len(l.Intruders.Left) > 0 {
			withIntruders++
		}
		if l.DeltaNormRatio > 1 {
			over1++
		}
	}
	pol := NoPolicy()
	pol.MaxIntrudersPerLayer = 0
	pol.MaxIntrudersTotal = spec.Intruders
	pol.MaxDeltaNormRatio = 1
	pol.MaxBytes = 1000
	r, err := Check(p.lora, p.base, pol, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := count(r, RuleIntruders, Error); got != withIntruders {
		t.Errorf("per-layer intruder limit 0: %d failures, %d layers have intruders", got, withIntruders)
	}
	if got := count(r, RuleDelta, Error); got != over1 {
		t.Errorf("‖ΔW‖/‖W‖ ≤ 1: %d failures, %d layers above", got, over1)
	}
	if count(r, RuleSize, Error) != 1 || r.Passed {
		t.Errorf("size limit 1000 bytes: %+v", r.Findings)
	}
	pol = NoPolicy()
	pol.MaxIntrudersTotal = spec.Intruders - 1
	pol.AlphaMin, pol.AlphaMax = 1, 100
	if r, _ = Check(p.lora, p.base, pol, opts); count(r, RuleIntruders, Error) != 1 || count(r, RuleAlpha, Error) != 0 {
		t.Errorf("total limit one below the count, generous α range: %+v", r.Findings)
	}
	pol.MaxIntrudersTotal = spec.Intruders
	if r, _ = Check(p.lora, p.base, pol, opts); !r.Passed {
		t.Errorf("limits met: %+v", r.Findings)
	}
	pol.AlphaMax = 1.01
	if r, _ = Check(p.lora, p.base, pol, opts); count(r, RuleAlpha, Error) != len(spec.Layers) {
		t.Errorf("α ≤ 1.01: %d failures for %d layers", count(r, RuleAlpha, Error), len(spec.Layers))
	}
	// Without a base, the intruder limit cannot be checked: a notice, not a failure.
	pol = NoPolicy()
	pol.MaxIntrudersTotal = 0
	if r, _ = Check(p.smol, "", pol, DefaultOptions()); !r.Passed || count(r, RuleIntruders, Notice) != 1 {
		t.Errorf("intruder limit without base: %+v", r.Findings)
	}
}

// TestReduceIntruders: with λ = 1 the rewritten adapter makes the same update; with λ = 0.75 modules without
// intruders are copied byte for byte, and in the others each intruder direction of W + ΔW now carries λ·σ, up to
// what truncating the new update back to rank r discards (bounded by its (r+1)-th singular value).
func TestReduceIntruders(t *testing.T) {
	p := shared(t)
	opts := DefaultOptions()
	opts.Include = regexp.MustCompile(`layers\.0\.`).MatchString
	orig, err := adapter.OpenPEFT(p.lora)
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	base, _ := modelfile.Open(p.base)
	defer base.Close()

	keep := spectral.DefaultMitigationOptions()
	keep.Lambda = 1
	out1 := filepath.Join(t.TempDir(), "keep")
	if _, err := ReduceIntruders(p.lora, p.base, out1, keep, opts); err != nil {
		t.Fatal(err)
	}
	a1, err := adapter.OpenPEFT(out1)
	if err != nil {
		t.Fatal(err)
	}
	defer a1.Close()
	for i := range orig.Modules {
		d0, _ := orig.Modules[i].Delta()
		d1, _ := a1.Modules[i].Delta()
		diff, _ := d1.Sub(d0)
		if e := maxAbs(diff) / maxAbs(d0); e > 1e-5 {
			t.Errorf("λ = 1: %s update changed by %g relative", orig.Modules[i].Name, e)
		}
	}

	mo := spectral.DefaultMitigationOptions()
	out := filepath.Join(t.TempDir(), "reduced")
	rep, err := ReduceIntruders(p.lora, p.base, out, mo, opts)
	if err != nil {
		t.Fatal(err)
	}
	red, err := adapter.OpenPEFT(out)
	if err != nil {
		t.Fatal(err)
	}
	defer red.Close()
	if cfg, _ := os.ReadFile(filepath.Join(out, adapter.ConfigName)); string(cfg) != string(orig.Config.Raw) {
		t.Error("configuration not copied verbatim")
	}
	changed := 0
	for i, mm := range rep.Modules {
		m, n := &orig.Modules[i], &red.Modules[i]
		if mm.Skipped != "" || len(mm.Intruders) == 0 {
			for _, pair := range [][2]tensor.View{{m.A, n.A}, {m.B, n.B}} {
				if string(pair[0].Data) != string(pair[1].Data) {
					t.Errorf("%s: no intruders or skipped, yet %s changed", m.Name, pair[0].Name)
				}
			}
			continue
		}
		changed++
		w, _ := loadMatrix(base, m.Target)
		merged, _ := m.Merge(w)
		svd, _ := spectral.Decompose(merged)
		d, _ := n.Delta()
		mit, _ := w.Add(d)
		// (W_mit − W)/s before truncation, to bound what truncation discards.
		dense, _ := m.Delta()
		for _, j := range mm.Intruders {
			for r := range dense.Rows {
				for c := range dense.Cols {
					dense.Data[r*dense.Cols+c] += (mo.Lambda - 1) * svd.U.Data[r*svd.U.Cols+j] * svd.S[j] * svd.Vt.Data[j*svd.Vt.Cols+c]
				}
			}
		}
		full, _ := spectral.SingularValues(dense)
		bound := full[m.Rank]*1.001 + 1e-5*full[0]
		for _, j := range mm.Intruders {
			got := project(mit, svd, j)
			if want := mo.Lambda * svd.S[j]; math.Abs(got-want) > bound {
				t.Errorf("%s: intruder %d carries %g, want λ·σ = %g (±%g)", m.Name, j, got, want, bound)
			}
		}
	}
	if changed == 0 || rep.Intruders == 0 {
		t.Errorf("no module of layer 0 was mitigated: %+v", rep.Modules)
	}
}

// project returns u_jᵀ·W·v_j for the j-th singular pair of svd.
func project(w *spectral.Matrix, svd *spectral.SVD, j int) float64 {
	s := 0.0
	for r := range w.Rows {
		row := 0.0
		for c := range w.Cols {
			row += w.Data[r*w.Cols+c] * svd.Vt.Data[j*svd.Vt.Cols+c]
		}
		s += svd.U.Data[r*svd.U.Cols+j] * row
	}
	return s
}

func maxAbs(m *spectral.Matrix) float64 {
	d := 0.0
	for _, v := range m.Data {
		d = max(d, math.Abs(v))
	}
	return d
}
