package adapter

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/spectral"
	"github.com/lathe-ml/lathe/tensor"
)

func combineOpen(t *testing.T, weights []float64, dirs ...string) *Adapter {
	t.Helper()
	var in []*Adapter
	for _, d := range dirs {
		a, err := Open(d)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		in = append(in, a)
	}
	out := t.TempDir()
	if err := CombineLinear(out, in, weights); err != nil {
		t.Fatal(err)
	}
	c, err := OpenPEFT(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestCombineLinearExact is §8.7's cross-term case: B₁ = [[1],[0]], A₁ = [[1,0]], B₂ = [[0],[1]], A₂ = [[0,1]],
// w = [1,1]: the exact sum is I (PEFT's "linear" gives [[1,1],[1,1]]).
func TestCombineLinearExact(t *testing.T) {
	cfg := `{"r": 1, "lora_alpha": 1}`
	a1 := writePEFT(t, cfg, f32("base_model.model.l.lora_A.weight", tensor.Shape{1, 2}, 1, 0),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, 1, 0))
	a2 := writePEFT(t, cfg, f32("base_model.model.l.lora_A.weight", tensor.Shape{1, 2}, 0, 1),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, 0, 1))
	c := combineOpen(t, []float64{1, 1}, a1, a2)
	if len(c.Modules) != 1 || c.Modules[0].Rank != 2 || c.Modules[0].Scale != 1 {
		t.Fatalf("combined %+v", c.Modules)
	}
	equalMatrix(t, "combined ΔW", delta(t, &c.Modules[0]), 2, 2, 1, 0, 0, 1)
}

// TestCombineLinearScales: adapters with different scaling rules (rsLoRA, alpha_pattern), ranks and module sets
// combine to Σ wᵢ ΔWᵢ module by module; ranks that differ between modules go through rank_pattern/alpha_pattern.
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
	c := combineOpen(t, w, a1, a2)
	open := func(d string) *Adapter {
		a, err := OpenPEFT(d)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		return a
	}
	p1, p2 := open(a1), open(a2)
	want := map[string]*spectral.Matrix{}
	d1, d2 := delta(t, &p1.Modules[0]), delta(t, &p2.Modules[0])
	for i := range d1.Data {
		d1.Data[i] = w[0]*d1.Data[i] + w[1]*d2.Data[i]
	}
	want["m.x"] = d1
	dy := delta(t, &p2.Modules[1])
	for i := range dy.Data {
		dy.Data[i] *= w[1]
	}
	want["m.y"] = dy
	ranks := map[string]int{"m.x": 3, "m.y": 1}
	for i := range c.Modules {
		m := &c.Modules[i]
		if m.Rank != ranks[m.Name] || m.ConfigRank != m.Rank || m.Scale != 1 {
			t.Errorf("%s: rank %d, config rank %d, scale %g", m.Name, m.Rank, m.ConfigRank, m.Scale)
		}
		got := delta(t, m)
		for j, v := range want[m.Name].Data {
			if math.Abs(got.Data[j]-v) > 1e-6*max(1, math.Abs(v)) {
				t.Errorf("%s: ΔW %v, want %v", m.Name, got.Data, want[m.Name].Data)
				break
			}
		}
	}
	if len(c.Modules) != 2 {
		t.Errorf("%d modules, want 2", len(c.Modules))
	}
}

// TestCombineLinearRealAdapter: the shared adapter combined with itself at weights ¼ and ¾ has its own ΔW (rank 16).
func TestCombineLinearRealAdapter(t *testing.T) {
	dir := testshared.Path(t, "models", "tiny-llama-a", "lora-shakespeare-a")
	c := combineOpen(t, []float64{0.25, 0.75}, dir, dir)
	p, err := OpenPEFT(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	worst := 0.0
	for i := range p.Modules {
		if c.Modules[i].Name != p.Modules[i].Name || c.Modules[i].Rank != 16 {
			t.Fatalf("module %d: %s rank %d", i, c.Modules[i].Name, c.Modules[i].Rank)
		}
		want, got := delta(t, &p.Modules[i]), delta(t, &c.Modules[i])
		for j := range want.Data {
			worst = max(worst, math.Abs(want.Data[j]-got.Data[j]))
		}
	}
	t.Logf("%d modules: max abs diff of ΔW %.3g", len(p.Modules), worst)
	if worst > 1e-6 {
		t.Errorf("max abs diff %g", worst)
	}
}

func TestCombineLinearRefuses(t *testing.T) {
	dora := writePEFT(t, `{"r": 1, "lora_alpha": 1, "use_dora": true}`,
		f32("base_model.model.l.lora_A.weight", tensor.Shape{1, 2}, 1, 0),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, 0, 1),
		f32("base_model.model.l.lora_magnitude_vector", tensor.Shape{2}, 3, 4))
	plain := writePEFT(t, `{"r": 1, "lora_alpha": 1}`,
		f32("base_model.model.l.lora_A.weight", tensor.Shape{1, 3}, 1, 0, 1),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, 0, 1))
	plain2 := writePEFT(t, `{"r": 1, "lora_alpha": 1}`,
		f32("base_model.model.l.lora_A.weight", tensor.Shape{1, 2}, 1, 0),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, 0, 1))
	for _, c := range []struct {
		name    string
		dirs    []string
		weights []float64
	}{
		{"DoRA", []string{dora}, []float64{1}},
		{"shapes", []string{plain, plain2}, []float64{1, 1}},
		{"weights", []string{plain}, []float64{1, 2}},
		{"into an input", []string{plain}, []float64{1}},
	} {
		var in []*Adapter
		for _, d := range c.dirs {
			a, err := Open(d)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			in = append(in, a)
		}
		out := filepath.Join(t.TempDir(), "out")
		if c.name == "into an input" {
			out = plain
		}
		if err := CombineLinear(out, in, c.weights); err == nil {
			t.Errorf("%s: no error", c.name)
		} else {
			t.Logf("%s: %v", c.name, err)
		}
	}
}
