package adapter

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/spectral"
	"github.com/lathe-ml/lathe/tensor"
)

func f32(name string, shape tensor.Shape, vals ...float32) tensor.View {
	data := make([]byte, 4*len(vals))
	if err := tensor.FromFloat32(data, vals, tensor.F32); err != nil {
		panic(err)
	}
	v, err := tensor.NewView(name, tensor.F32, shape, data)
	if err != nil {
		panic(err)
	}
	return v
}

// writePEFT creates a PEFT adapter directory from a config and tensors.
func writePEFT(t *testing.T, config string, views ...tensor.View) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ConfigName), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := safetensors.WriteFile(filepath.Join(dir, WeightsName), views, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

func ggufAdapter(t *testing.T, alpha float32, views ...tensor.View) string {
	t.Helper()
	var md gguf.Metadata
	md.Set("general.architecture", gguf.ValueOf("llama"))
	md.Set("general.type", gguf.ValueOf("adapter"))
	md.Set("adapter.type", gguf.ValueOf("lora"))
	if alpha != 0 {
		md.Set("adapter.lora.alpha", gguf.ValueOf(alpha))
	}
	path := filepath.Join(t.TempDir(), "a.gguf")
	if err := gguf.WriteFile(path, &md, views); err != nil {
		t.Fatal(err)
	}
	return path
}

func delta(t *testing.T, m *Module) *spectral.Matrix {
	t.Helper()
	d, err := m.Delta()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func equalMatrix(t *testing.T, what string, got *spectral.Matrix, rows, cols int, want ...float64) {
	t.Helper()
	if got.Rows != rows || got.Cols != cols {
		t.Fatalf("%s: %d×%d, want %d×%d", what, got.Rows, got.Cols, rows, cols)
	}
	for i, w := range want {
		if math.Abs(got.Data[i]-w) > 1e-12*max(1, math.Abs(w)) {
			t.Fatalf("%s = %v, want %v", what, got.Data, want)
		}
	}
}

// TestLayouts checks how each layout turns stored factors into ΔW in the base tensor's orientation.
func TestLayouts(t *testing.T) {
	// Linear, §8.7: B = [[1],[2]], A = [[3,4]], r = 1, α = 2 → ΔW = 2·BA, and merged into I₂ → [[7,8],[12,17]].
	dir := writePEFT(t, `{"r": 1, "lora_alpha": 2, "target_modules": ["q"]}`,
		f32("base_model.model.l.q.lora_A.weight", tensor.Shape{1, 2}, 3, 4),
		f32("base_model.model.l.q.lora_B.weight", tensor.Shape{2, 1}, 1, 2))
	a, err := OpenPEFT(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	m := &a.Modules[0]
	if m.Name != "l.q" || m.Target != "l.q.weight" || m.Rank != 1 || m.Scale != 2 || m.Layout != Linear {
		t.Fatalf("module %+v", m)
	}
	eye := &spectral.Matrix{Rows: 2, Cols: 2, Data: []float64{1, 0, 0, 1}}
	merged, err := m.Merge(eye)
	if err != nil {
		t.Fatal(err)
	}
	equalMatrix(t, "W + ΔW", merged, 2, 2, 7, 8, 12, 17)

	// PEFT embedding: lora_embedding_A [r, vocab], lora_embedding_B [dim, r]; ΔW = s·(B·A)ᵀ is [vocab, dim].
	dir = writePEFT(t, `{"r": 1, "lora_alpha": 1}`,
		f32("base_model.model.emb.lora_embedding_A", tensor.Shape{1, 3}, 1, 2, 3),
		f32("base_model.model.emb.lora_embedding_B", tensor.Shape{2, 1}, 10, 20))
	e, err := OpenPEFT(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if rows, cols := e.Modules[0].Shape(); rows != 3 || cols != 2 || e.Modules[0].Layout != Transposed {
		t.Fatalf("embedding module %d×%d layout %d", rows, cols, e.Modules[0].Layout)
	}
	equalMatrix(t, "embedding ΔW", delta(t, &e.Modules[0]), 3, 2, 10, 20, 20, 40, 30, 60)

	// fan_in_fan_out: the weight is stored [in, out], ΔW = s·(B·A)ᵀ.
	dir = writePEFT(t, `{"r": 1, "lora_alpha": 1, "fan_in_fan_out": true}`,
		f32("base_model.model.c_attn.lora_A.weight", tensor.Shape{1, 2}, 1, 2),
		f32("base_model.model.c_attn.lora_B.weight", tensor.Shape{3, 1}, 1, 0, -1))
	f, err := OpenPEFT(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	equalMatrix(t, "fan_in_fan_out ΔW", delta(t, &f.Modules[0]), 2, 3, 1, 0, -1, 2, 0, -2)

	// GGUF: lora_a [r, in] and lora_b [out, r] as PEFT; token_embd's lora_a is [vocab, r] and ΔW = s·A·Bᵀ; scale
	// alpha/rank (llama.cpp), or 1 without alpha.
	path := ggufAdapter(t, 4,
		f32("token_embd.weight.lora_a", tensor.Shape{3, 2}, 1, 0, 0, 1, 1, 1),
		f32("token_embd.weight.lora_b", tensor.Shape{2, 2}, 1, 2, 3, 4),
		f32("blk.0.attn_q.weight.lora_a", tensor.Shape{1, 2}, 3, 4),
		f32("blk.0.attn_q.weight.lora_b", tensor.Shape{2, 1}, 1, 2))
	g, err := OpenGGUF(path)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if len(g.Modules) != 2 || g.Modules[0].Target != "blk.0.attn_q.weight" || g.Modules[1].Layout != GGUFEmbedding {
		t.Fatalf("GGUF modules %+v", g.Modules)
	}
	equalMatrix(t, "GGUF linear ΔW (scale 4/1)", delta(t, &g.Modules[0]), 2, 2, 12, 16, 24, 32)
	// A·Bᵀ = [[1,3],[2,4],[3,7]], scale 4/2.
	equalMatrix(t, "GGUF token_embd ΔW", delta(t, &g.Modules[1]), 3, 2, 2, 6, 4, 8, 6, 14)

	noAlpha := ggufAdapter(t, 0, f32("x.weight.lora_a", tensor.Shape{1, 2}, 1, 1), f32("x.weight.lora_b", tensor.Shape{2, 1}, 1, 1))
	n, err := OpenGGUF(noAlpha)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if n.Modules[0].Scale != 1 {
		t.Errorf("GGUF adapter without alpha: scale %g, want 1 (llama.cpp)", n.Modules[0].Scale)
	}
}

// doraOracle is §8.7's DoRA adapter: one module l with B = [[0],[1]], A = [[1,0]], s = 1, magnitudes m = [3,4].
func doraOracle(t *testing.T) *Adapter {
	t.Helper()
	dir := writePEFT(t, `{"r": 1, "lora_alpha": 1, "use_dora": true}`,
		f32("base_model.model.l.lora_A.weight", tensor.Shape{1, 2}, 1, 0),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, 0, 1),
		f32("base_model.model.l.lora_magnitude_vector", tensor.Shape{2}, 3, 4))
	a, err := OpenPEFT(dir)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestDoRAMerge is §8.7: W = diag(3,4), B = [[0],[1]], A = [[1,0]], s = 1, m = [3,4]: the rows of W+BA have norms
// 3 and √17, so W' = [[3,0],[0.9701425001453319, 3.8805700005813275]].
func TestDoRAMerge(t *testing.T) {
	a := doraOracle(t)
	defer a.Close()
	merged, err := a.Modules[0].Merge(&spectral.Matrix{Rows: 2, Cols: 2, Data: []float64{3, 0, 0, 4}})
	if err != nil {
		t.Fatal(err)
	}
	equalMatrix(t, "DoRA merge", merged, 2, 2, 3, 0, 0.9701425001453319, 3.8805700005813275)
}

func TestOpenErrors(t *testing.T) {
	var fe *FormatError
	dir := writePEFT(t, `{"r": 1}`, f32("base_model.model.l.lora_A.weight", tensor.Shape{1, 2}, 1, 2))
	if _, err := OpenPEFT(dir); !errors.As(err, &fe) || fe.Tensor != "base_model.model.l.lora_A.weight" {
		t.Errorf("lora_A without lora_B: %v", err)
	}
	dir = writePEFT(t, `{"r": 2}`,
		f32("base_model.model.l.lora_A.weight", tensor.Shape{2, 2}, 1, 2, 3, 4),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, 1, 2))
	if _, err := OpenPEFT(dir); !errors.As(err, &fe) || !strings.Contains(err.Error(), "rank 2 does not match") {
		t.Errorf("A of rank 2 with B of rank 1: %v", err)
	}
	dir = writePEFT(t, `{"r": 1, "use_dora": true}`,
		f32("base_model.model.l.lora_A.weight", tensor.Shape{1, 2}, 1, 2),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, 1, 2),
		f32("base_model.model.l.lora_magnitude_vector", tensor.Shape{3}, 1, 2, 3))
	if _, err := OpenPEFT(dir); !errors.As(err, &fe) || fe.Tensor != "base_model.model.l.lora_magnitude_vector" {
		t.Errorf("magnitude vector of the wrong length: %v", err)
	}
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, ConfigName), []byte(`{}`), 0o644)
	os.WriteFile(filepath.Join(bin, "adapter_model.bin"), []byte("pickle"), 0o644)
	if _, err := OpenPEFT(bin); err == nil || !strings.Contains(err.Error(), "pickle") {
		t.Errorf("adapter_model.bin only: %v", err)
	}
	var md gguf.Metadata
	md.Set("general.type", gguf.ValueOf("model"))
	model := filepath.Join(t.TempDir(), "m.gguf")
	if err := gguf.WriteFile(model, &md, []tensor.View{f32("w", tensor.Shape{1, 1}, 1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenGGUF(model); !errors.As(err, &fe) || !strings.Contains(err.Error(), "general.type") {
		t.Errorf("GGUF model opened as an adapter: %v", err)
	}
}

// TestWritePEFT rewrites an adapter with one tensor replaced: the configuration is copied byte for byte, the other
// tensors are unchanged, and the input directory is refused as output.
func TestWritePEFT(t *testing.T) {
	cfg := `{"r": 1, "lora_alpha": 2, "custom_field": [1, 2]}`
	dir := writePEFT(t, cfg,
		f32("base_model.model.l.lora_A.weight", tensor.Shape{1, 2}, 3, 4),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, 1, 2),
		f32("base_model.model.lm_head.weight", tensor.Shape{1, 1}, 9))
	a, err := OpenPEFT(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if len(a.Extra) != 1 || a.Extra[0] != "base_model.model.lm_head.weight" {
		t.Errorf("extra tensors %v", a.Extra)
	}
	out := filepath.Join(t.TempDir(), "new")
	nb := f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, 5, 6)
	if err := a.WritePEFT(out, map[string]tensor.View{nb.Name: nb}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(out, ConfigName)); string(got) != cfg {
		t.Errorf("config rewritten: %s", got)
	}
	b, err := OpenPEFT(out)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, name := range a.TensorNames() {
		want, _ := a.Tensor(name)
		if name == nb.Name {
			want = nb
		}
		got, err := b.Tensor(name)
		if err != nil || !bytes.Equal(got.Data, want.Data) || !got.Shape.Equal(want.Shape) {
			t.Errorf("%s: %v %v, want %v", name, got.Shape, err, want.Shape)
		}
	}
	if err := a.WritePEFT(dir, nil); err == nil {
		t.Error("writing over the input adapter's directory accepted")
	}
	if err := a.WritePEFT(filepath.Join(t.TempDir(), "x"), map[string]tensor.View{"nope": nb}); err == nil {
		t.Error("replacement for a tensor the adapter lacks accepted")
	}
}

// TestRealAdapters opens the shared PEFT and GGUF LoRAs and checks what they are known to hold.
func TestRealAdapters(t *testing.T) {
	tiny := testshared.Path(t, "models", "tiny-llama-a", "lora-shakespeare-a")
	smol := testshared.Path(t, "data", "safetensors", "smollm135m-medical-lora")
	for _, c := range []struct {
		path         string
		format       Format
		modules      int
		rank         int
		alpha, scale float64
	}{
		{tiny, PEFT, 42, 8, 16, 2},
		{filepath.Join(tiny, "adapter-f32.gguf"), GGUF, 42, 8, 16, 2},
		{smol, PEFT, 60, 16, 32, 2},
	} {
		a, err := Open(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if a.Format != c.format || len(a.Modules) != c.modules || len(a.Extra) != 0 {
			t.Errorf("%s: %s, %d modules, extra %v", c.path, a.Format, len(a.Modules), a.Extra)
		}
		for _, m := range a.Modules {
			if m.Rank != c.rank || m.ConfigRank != c.rank || m.Alpha != c.alpha || m.Scale != c.scale {
				t.Errorf("%s: %s rank %d/%d α %g scale %g", c.path, m.Name, m.Rank, m.ConfigRank, m.Alpha, m.Scale)
			}
			if a.Format == PEFT && !a.Config.Targets(m.Name) {
				t.Errorf("%s: %s not selected by target_modules", c.path, m.Name)
			}
		}
		a.Close()
	}
}

// ggufName maps a Hugging Face llama module to its GGUF tensor (llama.cpp's tensor naming).
func ggufName(hf string) string {
	var layer int
	var kind, proj string
	if _, err := fmt.Sscanf(strings.NewReplacer(".", " ").Replace(hf), "model layers %d %s %s", &layer, &kind, &proj); err != nil {
		return ""
	}
	short := map[string]string{"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
		"gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}[proj]
	return fmt.Sprintf("blk.%d.%s.weight", layer, short)
}

// TestGGUFMatchesPEFT: llama.cpp's conversion of the shared adapter has, module for module, the same update
// spectrum as the PEFT original (the q/k row permutation it applies to lora_b does not change singular values).
func TestGGUFMatchesPEFT(t *testing.T) {
	dir := testshared.Path(t, "models", "tiny-llama-a", "lora-shakespeare-a")
	p, err := OpenPEFT(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	g, err := OpenGGUF(filepath.Join(dir, "adapter-f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	byTarget := map[string]*Module{}
	for i := range g.Modules {
		byTarget[g.Modules[i].Target] = &g.Modules[i]
	}
	spectrum := func(m *Module) []float64 {
		l, r, err := m.Factors()
		if err != nil {
			t.Fatal(err)
		}
		s, err := spectral.LowRankSVD(l, r, m.Scale)
		if err != nil {
			t.Fatal(err)
		}
		return s.S
	}
	for i := range p.Modules {
		pm := &p.Modules[i]
		gm := byTarget[ggufName(pm.Name)]
		if gm == nil {
			t.Fatalf("%s: no GGUF module %q", pm.Name, ggufName(pm.Name))
		}
		ps, gs := spectrum(pm), spectrum(gm)
		for j := range ps {
			if math.Abs(ps[j]-gs[j]) > 1e-6*ps[0] {
				t.Errorf("%s: σ%d = %g (PEFT) vs %g (GGUF)", pm.Name, j, ps[j], gs[j])
			}
		}
	}
}
