package adapter

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/spectral"
	"github.com/lathe-ml/lathe/tensor"
)

func openAll(t *testing.T, dirs ...string) []*Adapter {
	t.Helper()
	var in []*Adapter
	for _, d := range dirs {
		a, err := Open(d)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		in = append(in, a)
	}
	return in
}

// combineTo combines the adapters in dirs into a new directory and returns it.
func combineTo(t *testing.T, opts CombineOptions, dirs ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "combined")
	if err := Combine(out, openAll(t, dirs...), opts); err != nil {
		t.Fatal(err)
	}
	return out
}

func combineOpen(t *testing.T, opts CombineOptions, dirs ...string) *Adapter {
	t.Helper()
	return openAll(t, combineTo(t, opts, dirs...))[0]
}

// maxDiff is the largest |a−b| over two matrices of the same shape.
func maxDiff(t *testing.T, what string, a, b *spectral.Matrix) float64 {
	t.Helper()
	if a.Rows != b.Rows || a.Cols != b.Cols {
		t.Fatalf("%s: %d×%d vs %d×%d", what, a.Rows, a.Cols, b.Rows, b.Cols)
	}
	worst := 0.0
	for i := range a.Data {
		worst = max(worst, math.Abs(a.Data[i]-b.Data[i]))
	}
	return worst
}

// weightedSum is Σ wᵢ·ΔWᵢ of module k of each adapter, computed here from Module.Delta.
func weightedSum(t *testing.T, w []float64, in []*Adapter, k int) *spectral.Matrix {
	t.Helper()
	var sum *spectral.Matrix
	for i, a := range in {
		d := delta(t, &a.Modules[k])
		for j := range d.Data {
			d.Data[j] *= w[i]
		}
		if sum == nil {
			sum = d
		} else {
			sum, _ = sum.Add(d)
		}
	}
	return sum
}

func pair(t *testing.T, cfg string, a1, b1 []float32, aShape, bShape tensor.Shape) string {
	return writePEFT(t, cfg, f32("base_model.model.l.lora_A.weight", aShape, a1...), f32("base_model.model.l.lora_B.weight", bShape, b1...))
}

// TestCombineCrossTerms is §8.7's case B₁ = [[1],[0]], A₁ = [[1,0]], B₂ = [[0],[1]], A₂ = [[0,1]], w = [1,1]: the
// exact sum is I (linear, cat, svd), PEFT's factor-wise linear gives [[1,1],[1,1]].
func TestCombineCrossTerms(t *testing.T) {
	cfg := `{"r": 1, "lora_alpha": 1}`
	a1 := pair(t, cfg, []float32{1, 0}, []float32{1, 0}, tensor.Shape{1, 2}, tensor.Shape{2, 1})
	a2 := pair(t, cfg, []float32{0, 1}, []float32{0, 1}, tensor.Shape{1, 2}, tensor.Shape{2, 1})
	for _, c := range []struct {
		opts CombineOptions
		rank int
		want []float64
	}{
		{CombineOptions{Method: CombineLinear}, 2, []float64{1, 0, 0, 1}},
		{CombineOptions{Method: CombineCat}, 2, []float64{1, 0, 0, 1}},
		{CombineOptions{Method: CombineSVD, Rank: 2}, 2, []float64{1, 0, 0, 1}},
		{CombineOptions{Method: CombineLinear, FactorWise: true}, 1, []float64{1, 1, 1, 1}},
	} {
		c.opts.Weights = []float64{1, 1}
		m := &combineOpen(t, c.opts, a1, a2).Modules[0]
		if m.Rank != c.rank || m.Scale != 1 {
			t.Errorf("%s factor-wise %v: rank %d scale %g", c.opts.Method, c.opts.FactorWise, m.Rank, m.Scale)
		}
		d := delta(t, m)
		for i := range d.Data {
			if math.Abs(d.Data[i]-c.want[i]) > 1e-6 {
				t.Errorf("%s factor-wise %v: ΔW %v, want %v", c.opts.Method, c.opts.FactorWise, d.Data, c.want)
				break
			}
		}
	}
}

// TestCombineLinearScales: adapters with different scaling rules (rsLoRA, alpha_pattern), ranks and module sets
// combine to Σ wᵢ ΔWᵢ module by module under linear and cat; ranks that differ between modules go through
// rank_pattern/alpha_pattern. cat keeps each input's B and carries the weights in A.
func TestCombineLinearScales(t *testing.T) {
	a1 := writePEFT(t, `{"r": 2, "lora_alpha": 3, "use_rslora": true}`,
		f32("base_model.model.m.x.lora_A.weight", tensor.Shape{2, 3}, 1, 2, 3, 4, 5, 6),
		f32("base_model.model.m.x.lora_B.weight", tensor.Shape{2, 2}, 0.5, -1, 2, 0.25))
	a2 := writePEFT(t, `{"r": 1, "lora_alpha": 2, "alpha_pattern": {"x": 7}}`,
		f32("base_model.model.m.x.lora_A.weight", tensor.Shape{1, 3}, -1, 0, 2),
		f32("base_model.model.m.x.lora_B.weight", tensor.Shape{2, 1}, 3, 1),
		f32("base_model.model.m.y.lora_A.weight", tensor.Shape{1, 2}, 1, 1),
		f32("base_model.model.m.y.lora_B.weight", tensor.Shape{2, 1}, 1, -1))
	w := []float64{0.5, -2}
	in := openAll(t, a1, a2)
	want := map[string]*spectral.Matrix{"m.x": weightedSum(t, w, in, 0), "m.y": delta(t, &in[1].Modules[1])}
	for i := range want["m.y"].Data {
		want["m.y"].Data[i] *= w[1]
	}
	ranks := map[string]int{"m.x": 3, "m.y": 1}
	for _, method := range []string{CombineLinear, CombineCat} {
		c := combineOpen(t, CombineOptions{Method: method, Weights: w}, a1, a2)
		if len(c.Modules) != 2 {
			t.Fatalf("%s: %d modules, want 2", method, len(c.Modules))
		}
		for i := range c.Modules {
			m := &c.Modules[i]
			if m.Rank != ranks[m.Name] || m.ConfigRank != m.Rank || m.Scale != 1 {
				t.Errorf("%s %s: rank %d, config rank %d, scale %g", method, m.Name, m.Rank, m.ConfigRank, m.Scale)
			}
			if d := maxDiff(t, m.Name, delta(t, m), want[m.Name]); d > 1e-6 {
				t.Errorf("%s %s: max diff of ΔW %g", method, m.Name, d)
			}
		}
		if method == CombineCat {
			got, _ := floats(c.Modules[0].B)
			// B' = [B₁ | B₂] for m.x: rows (0.5, −1, 3) and (2, 0.25, 1).
			if !slices.Equal(got, []float32{0.5, -1, 3, 2, 0.25, 1}) {
				t.Errorf("cat B = %v, want the inputs' B side by side", got)
			}
		}
	}
}

// TestCombineRealLinearCat: the shared adapter combined with itself at weights ¼ and ¾ under linear and cat has its
// own ΔW (rank 16), and a copy with its ranks permuted (A's rows and B's columns jointly) combined at weight −1
// cancels it: permuting ranks leaves ΔW unchanged.
func TestCombineRealLinearCat(t *testing.T) {
	dir := testshared.Path(t, "models", "tiny-llama-a", "lora-shakespeare-a")
	p := openAll(t, dir)[0]
	perm := permutedCopy(t, p)
	for _, method := range []string{CombineLinear, CombineCat} {
		c := combineOpen(t, CombineOptions{Method: method, Weights: []float64{0.25, 0.75}}, dir, dir)
		z := combineOpen(t, CombineOptions{Method: method, Weights: []float64{1, -1}}, dir, perm)
		worst, zero := 0.0, 0.0
		for i := range p.Modules {
			if c.Modules[i].Name != p.Modules[i].Name || c.Modules[i].Rank != 16 {
				t.Fatalf("%s module %d: %s rank %d", method, i, c.Modules[i].Name, c.Modules[i].Rank)
			}
			want := delta(t, &p.Modules[i])
			worst = max(worst, maxDiff(t, p.Modules[i].Name, delta(t, &c.Modules[i]), want))
			zero = max(zero, maxDiff(t, p.Modules[i].Name, delta(t, &z.Modules[i]), spectral.NewMatrix(want.Rows, want.Cols)))
		}
		t.Logf("%s, %d modules: max abs diff of ΔW %.3g; ΔW − permuted ΔW %.3g", method, len(p.Modules), worst, zero)
		if worst > 1e-6 || zero > 1e-6 {
			t.Errorf("%s: max abs diff %g, permuted %g", method, worst, zero)
		}
	}
}

// firstModule writes an adapter holding only the first module of the adapter in dir, for the checks that need a
// full-rank SVD.
func firstModule(t *testing.T, dir string) (string, *Module) {
	t.Helper()
	a := openAll(t, dir)[0]
	m := &a.Modules[0]
	fa, _ := floats(m.A)
	fb, _ := floats(m.B)
	one := writePEFT(t, string(a.Config.Raw), f32(m.A.Name, m.A.Shape, fa...), f32(m.B.Name, m.B.Shape, fb...))
	return one, &openAll(t, one)[0].Modules[0]
}

// permutedCopy writes a's tensors with the ranks of every module reversed.
func permutedCopy(t *testing.T, a *Adapter) string {
	t.Helper()
	var views []tensor.View
	for i := range a.Modules {
		m := &a.Modules[i]
		fa, _ := floats(m.A)
		fb, _ := floats(m.B)
		r, in, out := m.Rank, int(m.A.Shape[1]), int(m.B.Shape[0])
		pa, pb := make([]float32, len(fa)), make([]float32, len(fb))
		for k := range r {
			copy(pa[(r-1-k)*in:(r-k)*in], fa[k*in:(k+1)*in])
			for row := range out {
				pb[row*r+r-1-k] = fb[row*r+k]
			}
		}
		views = append(views, f32(m.A.Name, m.A.Shape, pa...), f32(m.B.Name, m.B.Shape, pb...))
	}
	return writePEFT(t, string(a.Config.Raw), views...)
}

// TestCombineSVD: svd at full rank reproduces Σ wᵢΔWᵢ; truncated, its singular values are the leading ones of the
// sum, with PEFT's factors (A = Vh has orthonormal rows, the columns of B = U·S have norms S) or mergekit's (both
// carry √S).
func TestCombineSVD(t *testing.T) {
	dir := testshared.Path(t, "models", "tiny-llama-a", "lora-shakespeare-a")
	perm := permutedCopy(t, openAll(t, dir)[0])
	w := []float64{0.7, -0.4}
	in := openAll(t, dir, perm)
	// The permuted copy has the same ΔW; scale it so the sum is not a multiple of one adapter's own factors.
	full := combineOpen(t, CombineOptions{Method: CombineSVD, Weights: w, Rank: 16}, dir, perm)
	worst := 0.0
	svs := make([][]float64, len(in[0].Modules))
	for k := range in[0].Modules {
		want := weightedSum(t, w, in, k)
		worst = max(worst, maxDiff(t, "full", delta(t, &full.Modules[k]), want))
		var err error
		if svs[k], err = spectral.SingularValues(want); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("full rank: max diff from Σ wᵢΔWᵢ %.3g", worst)
	if worst > 1e-6 {
		t.Errorf("full rank: max diff %g", worst)
	}
	for _, sem := range []Semantics{SemanticsPEFT, SemanticsMergekit} {
		trunc := combineOpen(t, CombineOptions{Method: CombineSVD, Weights: w, Rank: 3, Semantics: sem}, dir, perm)
		worstS, worstF := 0.0, 0.0
		for k := range in[0].Modules {
			sv := svs[k]
			m := &trunc.Modules[k]
			if m.Rank != 3 {
				t.Fatalf("rank %d, want 3", m.Rank)
			}
			a, _ := spectral.FromView(m.A)
			b, _ := spectral.FromView(m.B)
			got, err := spectral.LowRankSVD(b, a, m.Scale)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				worstS = max(worstS, math.Abs(got.S[i]-sv[i])/sv[0])
			}
			for i := range 3 {
				na, nb := 0.0, 0.0
				for j := range a.Cols {
					na += a.Data[i*a.Cols+j] * a.Data[i*a.Cols+j]
				}
				for j := range b.Rows {
					nb += b.Data[j*b.Cols+i] * b.Data[j*b.Cols+i]
				}
				wantA, wantB := 1.0, sv[i]
				if sem == SemanticsMergekit {
					wantA, wantB = math.Sqrt(sv[i]), math.Sqrt(sv[i])
				}
				worstF = max(worstF, math.Abs(math.Sqrt(na)-wantA)/wantA, math.Abs(math.Sqrt(nb)-wantB)/wantB)
			}
		}
		t.Logf("%s rank 3: rel. σ error %.3g, factor norm error %.3g", sem, worstS, worstF)
		if worstS > 1e-5 || worstF > 1e-5 {
			t.Errorf("%s: σ %g, factors %g", sem, worstS, worstF)
		}
	}
}

// TestCombineClamp: PEFT's svd_clamp bounds the entries of both factors by the clamp-quantile of their values
// (torch.quantile, linear interpolation).
func TestCombineClamp(t *testing.T) {
	if q := quantile([]float64{4, 1, 3, 2}, 0.5); q != 2.5 {
		t.Errorf("median of 1..4 = %g, want 2.5", q)
	}
	if q := quantile([]float64{10, 0}, 0.25); q != 2.5 {
		t.Errorf("0.25-quantile of {0, 10} = %g, want 2.5", q)
	}
	dir := testshared.Path(t, "models", "tiny-llama-a", "lora-shakespeare-a")
	plain := combineOpen(t, CombineOptions{Method: CombineSVD}, dir)
	clamped := combineOpen(t, CombineOptions{Method: CombineSVD, Clamp: 0.9}, dir)
	for k := range plain.Modules {
		pa, _ := floats(plain.Modules[k].A)
		pb, _ := floats(plain.Modules[k].B)
		all := make([]float64, 0, len(pa)+len(pb))
		for _, v := range append(pb, pa...) {
			all = append(all, float64(v))
		}
		hi := quantile(all, 0.9)
		ca, _ := floats(clamped.Modules[k].A)
		cb, _ := floats(clamped.Modules[k].B)
		got := append(cb, ca...)
		for i, v := range append(pb, pa...) {
			if want := max(-hi, min(hi, float64(v))); math.Abs(float64(got[i])-want) > 1e-6*hi {
				t.Fatalf("module %s entry %d: %g, want clamp(%g, ±%g)", plain.Modules[k].Name, i, got[i], v, hi)
			}
		}
	}
}

// vecAdapter is a rank-1 adapter whose ΔW is the 1×n row δ: B = [[1]], A = [δ/s], with scale s = α/r = 2, so the
// test also checks that the scaling is applied once.
func vecAdapter(t *testing.T, delta ...float32) string {
	a := make([]float32, len(delta))
	for i, v := range delta {
		a[i] = v / 2
	}
	return pair(t, `{"r": 1, "lora_alpha": 2}`, a, []float32{1}, tensor.Shape{1, int64(len(a))}, tensor.Shape{1, 1})
}

// TestCombineTaskVectorOracles: §8.7's TIES oracles through Combine (1×4 updates, which the rank-1 SVD keeps
// exactly), under both semantics.
func TestCombineTaskVectorOracles(t *testing.T) {
	for _, c := range []struct {
		name    string
		opts    CombineOptions
		deltas  [][]float32
		want    []float64
		weights []float64
	}{
		{"TIES no trim", CombineOptions{Method: CombineTIES, Density: 1}, [][]float32{{1, -2, 3, 0.5}, {-1, -1, 2, 1}},
			[]float64{1, -1.5, 2.5, 0.75}, []float64{1, 1}},
		{"TIES trimmed", CombineOptions{Method: CombineTIES, Density: 0.5, Semantics: SemanticsMergekit}, [][]float32{{1, -2, 3, 0.5}, {-1, -1.5, 2, 1.2}},
			[]float64{0, -1.75, 2.5, 0}, []float64{1, 1}},
		{"TIES sign peft", CombineOptions{Method: CombineTIES, Density: 1}, [][]float32{{1}, {-1.5}},
			[]float64{-0.75}, []float64{1, 0.5}},
		{"TIES sign mergekit", CombineOptions{Method: CombineTIES, Density: 1, Semantics: SemanticsMergekit}, [][]float32{{1}, {-1.5}},
			[]float64{1}, []float64{1, 0.5}},
		{"magnitude_prune", CombineOptions{Method: CombineMagnitudePrune, Density: 0.5}, [][]float32{{1, -2, 3, 0.5}, {-1, -1.5, 2, 1.2}},
			[]float64{0, -3.5, 5, 0}, []float64{1, 1}},
	} {
		var dirs []string
		for _, d := range c.deltas {
			dirs = append(dirs, vecAdapter(t, d...))
		}
		c.opts.Weights = c.weights
		got := delta(t, &combineOpen(t, c.opts, dirs...).Modules[0])
		for i, w := range c.want {
			if math.Abs(got.Data[i]-w) > 1e-6 {
				t.Errorf("%s: ΔW %v, want %v", c.name, got.Data, c.want)
				break
			}
		}
	}
}

// TestCombineRealTIES: the shared adapter merged with itself by TIES at density 1 (no trimming, all signs agree)
// exposes the semantics: PEFT divides Σ wᵢΔW by the count (ΔW/2 for w = ¼, ¾), mergekit by Σ wᵢ (ΔW); the rank-8 SVD
// keeps it exactly. With density 0.3, every module of the magnitude_prune result at full rank has 30% of ΔW's
// entries, the largest ones, unchanged.
func TestCombineRealTIES(t *testing.T) {
	dir := testshared.Path(t, "models", "tiny-llama-a", "lora-shakespeare-a")
	p := openAll(t, dir)[0]
	w := []float64{0.25, 0.75}
	for _, c := range []struct {
		sem    Semantics
		factor float64
	}{{SemanticsPEFT, 0.5}, {SemanticsMergekit, 1}} {
		got := combineOpen(t, CombineOptions{Method: CombineTIES, Density: 1, Weights: w, Semantics: c.sem}, dir, dir)
		worst := 0.0
		for k := range p.Modules {
			want := delta(t, &p.Modules[k])
			for i := range want.Data {
				want.Data[i] *= c.factor
			}
			worst = max(worst, maxDiff(t, p.Modules[k].Name, delta(t, &got.Modules[k]), want))
		}
		t.Logf("%s TIES of the adapter with itself: max diff from %g·ΔW %.3g", c.sem, c.factor, worst)
		if worst > 1e-6 {
			t.Errorf("%s: max diff %g", c.sem, worst)
		}
	}
	one, m := firstModule(t, dir)
	rows, cols := m.Shape()
	got := combineOpen(t, CombineOptions{Method: CombineMagnitudePrune, Density: 0.3, Rank: min(rows, cols)}, one)
	want := delta(t, m)
	d := delta(t, &got.Modules[0])
	kept := 0
	for i, v := range d.Data {
		if math.Abs(v) > 1e-6 {
			kept++
			if math.Abs(v-want.Data[i]) > 1e-5 {
				t.Fatalf("%s entry %d: %g, want ΔW's %g", m.Name, i, v, want.Data[i])
			}
		}
	}
	if n := int(0.3 * float64(len(d.Data))); kept != n {
		t.Errorf("%s: %d entries kept, want %d", m.Name, kept, n)
	}
}

// TestCombineDARE: with one adapter at full rank (where the SVD is exact), the DARE result of the first module is
// its ΔW masked by the documented stream — TaskRand(seed, module, 0), an entry kept when its draw is below the
// density, in the row-major order of B·A — and rescaled by 1/density (PEFT) or ‖ΔW‖₁/‖kept‖₁ (mergekit). The same
// seed gives byte-identical files whatever the number of workers; another seed differs.
func TestCombineDARE(t *testing.T) {
	dir := testshared.Path(t, "models", "tiny-llama-a", "lora-shakespeare-a")
	one, m := firstModule(t, dir)
	rows, cols := m.Shape()
	full := delta(t, m)
	const density = 0.4
	for _, sem := range []Semantics{SemanticsPEFT, SemanticsMergekit} {
		got := delta(t, &combineOpen(t, CombineOptions{Method: CombineDARELinear, Density: density, Rank: min(rows, cols), Semantics: sem, Seed: 9}, one).Modules[0])
		rng := TaskRand(9, m.Name, 0)
		want := spectral.NewMatrix(rows, cols)
		l1, kept := 0.0, 0.0
		for i, v := range full.Data {
			l1 += math.Abs(v)
			if rng.Float64() < density {
				want.Data[i] = v
				kept += math.Abs(v)
			}
		}
		factor := 1 / density
		if sem == SemanticsMergekit {
			factor = l1 / kept
		}
		peak := 0.0
		for i := range want.Data {
			want.Data[i] *= factor
			peak = max(peak, math.Abs(want.Data[i]))
		}
		d := maxDiff(t, m.Name, got, want)
		t.Logf("%s DARE at density %g: factor %.6g, max diff from the masked ΔW %.3g (peak %.3g)", sem, density, factor, d, peak)
		if d > 1e-5*peak {
			t.Errorf("%s: max diff %g", sem, d)
		}
	}
	file := func(seed uint64, workers int) []byte {
		out := combineTo(t, CombineOptions{Method: CombineDARETIES, Density: 0.5, Weights: []float64{0.6, 0.4}, Seed: seed, Workers: workers}, dir, dir)
		data, err := os.ReadFile(filepath.Join(out, WeightsName))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	a, b, c := file(1, 1), file(1, 2), file(2, 2)
	if !bytes.Equal(a, b) {
		t.Error("same seed, 1 and 2 workers: different files")
	}
	if bytes.Equal(a, c) {
		t.Error("seeds 1 and 2: identical files")
	}
}

// TestCombineGPT2FanInFanOut: the fan_in_fan_out adapter (Transposed layout) combines under every method; the full
// rank result of svd equals the input's ΔW in the base orientation.
func TestCombineGPT2FanInFanOut(t *testing.T) {
	dir := testshared.Path(t, "data", "safetensors", "peft-gpt2-lora")
	p := openAll(t, dir)[0]
	c := combineOpen(t, CombineOptions{Method: CombineSVD, Weights: []float64{2}}, dir)
	worst := 0.0
	for k := range p.Modules {
		if c.Modules[k].Layout != Transposed {
			t.Fatalf("%s: layout %d, want Transposed", c.Modules[k].Name, c.Modules[k].Layout)
		}
		want := delta(t, &p.Modules[k])
		for i := range want.Data {
			want.Data[i] *= 2
		}
		worst = max(worst, maxDiff(t, p.Modules[k].Name, delta(t, &c.Modules[k]), want))
	}
	t.Logf("%d fan_in_fan_out modules: max diff %.3g", len(p.Modules), worst)
	if worst > 1e-6 {
		t.Errorf("max diff %g", worst)
	}
}

func TestCombineRefuses(t *testing.T) {
	dora := writePEFT(t, `{"r": 1, "lora_alpha": 1, "use_dora": true}`,
		f32("base_model.model.l.lora_A.weight", tensor.Shape{1, 2}, 1, 0),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, 0, 1),
		f32("base_model.model.l.lora_magnitude_vector", tensor.Shape{2}, 3, 4))
	cfg := `{"r": 1, "lora_alpha": 1}`
	plain := pair(t, cfg, []float32{1, 0, 1}, []float32{0, 1}, tensor.Shape{1, 3}, tensor.Shape{2, 1})
	plain2 := pair(t, cfg, []float32{1, 0}, []float32{0, 1}, tensor.Shape{1, 2}, tensor.Shape{2, 1})
	rank2 := pair(t, `{"r": 2, "lora_alpha": 2}`, []float32{1, 0, 0, 1}, []float32{0, 1, 1, 0}, tensor.Shape{2, 2}, tensor.Shape{2, 2})
	for _, c := range []struct {
		name string
		dirs []string
		opts CombineOptions
		want []string // substrings of the message
	}{
		{"DoRA", []string{dora}, CombineOptions{}, []string{dora, "module l", "DoRA"}},
		{"shapes", []string{plain, plain2}, CombineOptions{}, []string{plain2, "module l", "[1, 3]"}},
		{"weights", []string{plain}, CombineOptions{Weights: []float64{1, 2}}, []string{"2 weights"}},
		{"into an input", []string{plain}, CombineOptions{}, []string{"elsewhere"}},
		{"no density", []string{plain2, plain2}, CombineOptions{Method: CombineTIES}, []string{"ties", "density 0"}},
		{"density above 1", []string{plain2}, CombineOptions{Method: CombineDARELinear, Density: 1.5}, []string{"density 1.5", "(0, 1]"}},
		{"unknown method", []string{plain2}, CombineOptions{Method: "lego"}, []string{`"lego"`, "linear"}},
		{"factor-wise ranks", []string{plain2, rank2}, CombineOptions{FactorWise: true}, []string{rank2, "module l", "rank 2"}},
		{"factor-wise mergekit", []string{plain2}, CombineOptions{FactorWise: true, Method: CombineTIES, Density: 1, Semantics: SemanticsMergekit}, []string{"PEFT"}},
		{"clamp mergekit", []string{plain2}, CombineOptions{Method: CombineSVD, Clamp: 0.5, Semantics: SemanticsMergekit}, []string{"clamp"}},
		{"negative rank", []string{plain2}, CombineOptions{Method: CombineSVD, Rank: -1}, []string{"rank -1"}},
	} {
		out := filepath.Join(t.TempDir(), "out")
		if c.name == "into an input" {
			out = plain
		}
		err := Combine(out, openAll(t, c.dirs...), c.opts)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		for _, s := range c.want {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: %q does not mention %q", c.name, err, s)
			}
		}
		if _, serr := os.Stat(out); c.name != "into an input" && serr == nil {
			t.Errorf("%s: output written despite the error", c.name)
		}
	}
}

func BenchmarkCombineTIES(b *testing.B) {
	a, err := Open(testshared.Path(b, "models", "tiny-llama-a", "lora-shakespeare-a"))
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	out := b.TempDir()
	b.SetBytes(a.Bytes)
	for b.Loop() {
		if err := Combine(out, []*Adapter{a, a}, CombineOptions{Method: CombineTIES, Density: 0.5}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCombineZeroUpdate: an adapter minus itself under magnitude_prune is a zero update, which the randomized SVD
// (64×64, rank 2: q < 64) must return as zero factors, not NaN.
func TestCombineZeroUpdate(t *testing.T) {
	const n, r = 64, 2
	a, b := make([]float32, r*n), make([]float32, n*r)
	for i := range a {
		a[i] = float32(math.Sin(float64(i)))
		b[i] = float32(math.Cos(float64(3 * i)))
	}
	dir := pair(t, `{"r": 2, "lora_alpha": 4}`, a, b, tensor.Shape{r, n}, tensor.Shape{n, r})
	m := &combineOpen(t, CombineOptions{Method: CombineMagnitudePrune, Density: 0.5, Weights: []float64{1, -1}}, dir, dir).Modules[0]
	if m.Rank != r {
		t.Errorf("rank %d, want %d", m.Rank, r)
	}
	for i, v := range delta(t, m).Data {
		if v != 0 {
			t.Fatalf("ΔW entry %d = %g, want 0", i, v)
		}
	}
}

// TestCombineTruncationError: the randomized SVD that truncates a dense DARE-TIES result (a full-rank update) to
// rank 8 is near the best rank-8 approximation: its Frobenius error is within 0.1% of √(Σ_{i>8} σᵢ²) of the full-rank
// result (same seed, so the same masks).
func TestCombineTruncationError(t *testing.T) {
	dir := testshared.Path(t, "models", "tiny-llama-a", "lora-shakespeare-a")
	one, m := firstModule(t, dir)
	perm := permutedCopy(t, openAll(t, one)[0])
	rows, cols := m.Shape()
	opts := CombineOptions{Method: CombineDARETIES, Density: 0.3, Weights: []float64{0.7, 0.3}, Seed: 3, Rank: min(rows, cols)}
	full := delta(t, &combineOpen(t, opts, one, perm).Modules[0])
	opts.Rank = 8
	trunc := delta(t, &combineOpen(t, opts, one, perm).Modules[0])
	sv, err := spectral.SingularValues(full)
	if err != nil {
		t.Fatal(err)
	}
	best, got := 0.0, 0.0
	for _, s := range sv[8:] {
		best += s * s
	}
	for i := range full.Data {
		d := full.Data[i] - trunc.Data[i]
		got += d * d
	}
	best, got = math.Sqrt(best), math.Sqrt(got)
	t.Logf("rank 8 of a %d×%d DARE-TIES update: error %.6g, optimal %.6g (ratio %.5f), σ₈/σ₉ = %.4g", rows, cols, got, best, got/best, sv[7]/sv[8])
	if got > 1.001*best {
		t.Errorf("truncation error %g, optimal %g", got, best)
	}
}
