package adapter

import (
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/spectral"
	"github.com/lathe-ml/lathe/tensor"
)

// TestConvertMutated is §8.7's PiSSA oracle: W = diag(4,1), r = 1, scale 1 gives A₀ = [[2,0]], B₀ = [[2],[0]] and
// W_res = [[0,0],[0,1]]. After "training" (A = [[2,0.5]], B = [[2],[1]]), the converted rank-2 adapter merged into W
// equals the trained adapter merged into W_res: W + BA − B₀A₀ = [[4,1],[2,1.5]]. Under rsLoRA (r = 1, α = 3:
// scale 3) the same holds with W_res = W − 3·B₀A₀.
func TestConvertMutated(t *testing.T) {
	for _, c := range []struct {
		config string
		s      float64
	}{{`{"r": 1, "lora_alpha": 1}`, 1}, {`{"r": 1, "lora_alpha": 3, "use_rslora": true}`, 3}} {
		init := openAdapter(t, writePEFT(t, c.config,
			f32("base_model.model.l.lora_A.weight", tensor.Shape{1, 2}, 2, 0),
			f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, 2, 0)))
		trained := openAdapter(t, writePEFT(t, c.config,
			f32("base_model.model.l.lora_A.weight", tensor.Shape{1, 2}, 2, 0.5),
			f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, 2, 1)))
		dir := filepath.Join(t.TempDir(), "plain")
		if err := ConvertMutated(dir, trained, init); err != nil {
			t.Fatal(err)
		}
		plain := openAdapter(t, dir)
		m := &plain.Modules[0]
		if m.Rank != 2 || m.Scale != 1 {
			t.Errorf("%s: rank %d scale %g, want 2 and 1", c.config, m.Rank, m.Scale)
		}
		w := &spectral.Matrix{Rows: 2, Cols: 2, Data: []float64{4, 0, 0, 1}}
		wres := &spectral.Matrix{Rows: 2, Cols: 2, Data: []float64{4 - 4*c.s, 0, 0, 1}}
		got, err := m.Merge(w)
		if err != nil {
			t.Fatal(err)
		}
		want, err := trained.Modules[0].Merge(wres)
		if err != nil {
			t.Fatal(err)
		}
		equalMatrix(t, c.config+": converted into W", got, 2, 2, want.Data...)
		equalMatrix(t, c.config+": trained into W_res", want, 2, 2, 4, c.s, 2*c.s, 1+0.5*c.s)
	}
	a := openAdapter(t, writePEFT(t, `{"r": 1, "lora_alpha": 1}`,
		f32("base_model.model.l.lora_A.weight", tensor.Shape{1, 2}, 2, 0),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, 2, 0)))
	other := openAdapter(t, writePEFT(t, `{"r": 1, "lora_alpha": 1}`,
		f32("base_model.model.k.lora_A.weight", tensor.Shape{1, 2}, 2, 0),
		f32("base_model.model.k.lora_B.weight", tensor.Shape{2, 1}, 2, 0)))
	wide := openAdapter(t, writePEFT(t, `{"r": 2, "lora_alpha": 1}`,
		f32("base_model.model.l.lora_A.weight", tensor.Shape{2, 2}, 2, 0, 0, 1),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 2}, 2, 0, 0, 1)))
	for _, init := range []*Adapter{other, wide} {
		if err := ConvertMutated(filepath.Join(t.TempDir(), "x"), a, init); err == nil {
			t.Errorf("initialization %v: no error", init.Modules[0].A.Shape)
		} else {
			t.Log(err)
		}
	}
}
