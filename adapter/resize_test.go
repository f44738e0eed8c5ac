package adapter

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/spectral"
	"github.com/lathe-ml/lathe/tensor"
)

// frobDiff returns ‖x − y‖_F and ‖y‖_F.
func frobDiff(t *testing.T, x, y *spectral.Matrix) (diff, norm float64) {
	t.Helper()
	if x.Rows != y.Rows || x.Cols != y.Cols {
		t.Fatalf("%d×%d vs %d×%d", x.Rows, x.Cols, y.Rows, y.Cols)
	}
	for i := range x.Data {
		diff += (x.Data[i] - y.Data[i]) * (x.Data[i] - y.Data[i])
		norm += y.Data[i] * y.Data[i]
	}
	return math.Sqrt(diff), math.Sqrt(norm)
}

func moduleByName(t *testing.T, a *Adapter, name string) *Module {
	t.Helper()
	for i := range a.Modules {
		if a.Modules[i].Name == name {
			return &a.Modules[i]
		}
	}
	t.Fatalf("%s: no module %s", a.Path, name)
	return nil
}

// TestResizeKnownSpectrum: ΔW = 4·B·A (rsLoRA, r = 4, α = 8: α/√r = 4) with B = U·diag(√(σ/4)), A = diag(√(σ/4))·Vᵀ,
// U the 4×4 Hadamard matrix /2, V the identity's columns 2, 0, 3, 1 of 5, and σ = (64, 36, 16, 4), all exact in
// float32: resizing to 2 keeps (64²+36²)/Σσ² = 5392/5664 of the energy and leaves exactly U₂·diag(64,36)·V₂ᵀ;
// resizing to 4 or 9 keeps rank 4 and ΔW.
func TestResizeKnownSpectrum(t *testing.T) {
	h := []float64{1, 1, 1, 1, 1, -1, 1, -1, 1, 1, -1, -1, 1, -1, -1, 1} // Hadamard; /2 is orthonormal
	perm := []int{2, 0, 3, 1}
	sigma := []float64{64, 36, 16, 4}
	const scale = 4           // rsLoRA, α = 8, r = 4
	b := make([]float32, 16)  // [out 4, r 4]
	a := make([]float32, 4*5) // [r 4, in 5]
	for k, s := range sigma {
		for i := range 4 {
			b[i*4+k] = float32(h[i*4+k] / 2 * math.Sqrt(s/scale))
		}
		a[k*5+perm[k]] = float32(math.Sqrt(s / scale))
	}
	in := openAdapter(t, writePEFT(t, `{"r": 4, "lora_alpha": 8, "use_rslora": true}`,
		f32("base_model.model.l.lora_A.weight", tensor.Shape{4, 5}, a...),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{4, 4}, b...)))
	full := delta(t, &in.Modules[0])
	for _, c := range []struct {
		rank, want int
		retained   float64
	}{{2, 2, 5392.0 / 5664}, {4, 4, 1}, {9, 4, 1}} {
		dir := filepath.Join(t.TempDir(), "out")
		rep, err := Resize(dir, in, c.rank)
		if err != nil {
			t.Fatal(err)
		}
		e := rep.Modules[0]
		if e.NewRank != c.want || math.Abs(e.Retained-c.retained) > 1e-12 || math.Abs(rep.Retained-c.retained) > 1e-12 ||
			math.Abs(e.Total-5664) > 1e-9 {
			t.Errorf("rank %d: %+v, total retained %g; want rank %d, retained %g of 5664", c.rank, e, rep.Retained, c.want, c.retained)
		}
		out := openAdapter(t, dir)
		m := &out.Modules[0]
		if m.Rank != c.want || m.Scale != 1 {
			t.Errorf("rank %d: written rank %d scale %g, want %d and 1", c.rank, m.Rank, m.Scale, c.want)
		}
		want := full
		if c.want == 2 {
			want = spectral.NewMatrix(4, 5)
			for k := range 2 {
				for i := range 4 {
					want.Data[i*5+perm[k]] = h[i*4+k] / 2 * sigma[k]
				}
			}
		}
		if d, n := frobDiff(t, delta(t, m), want); d > 1e-6*n {
			t.Errorf("rank %d: ‖ΔW' − want‖ = %g (‖want‖ %g)", c.rank, d, n)
		}
	}
	if _, err := Resize(t.TempDir(), in, 0); err == nil {
		t.Error("rank 0: no error")
	}
	dora := doraOracle(t)
	defer dora.Close()
	if _, err := Resize(filepath.Join(t.TempDir(), "d"), dora, 1); err == nil {
		t.Error("DoRA: no error")
	}
}

// TestResizeTinyLlama: the shared rank-8 LoRA resized to 8 gives back every ΔW to float32 rounding; resized to 4,
// each ΔW' is the best rank-4 approximation, ‖ΔW − ΔW'‖_F² = Σ_{i>4} σᵢ² with σ from a dense SVD of ΔW (Eckart–Young),
// and the reported energy is Σ_{i≤4} σᵢ² / Σ σᵢ².
func TestResizeTinyLlama(t *testing.T) {
	in := openAdapter(t, filepath.Join(sharedModel(t), "lora-shakespeare-a"))
	for _, rank := range []int{8, 4} {
		dir := filepath.Join(t.TempDir(), "out")
		rep, err := Resize(dir, in, rank)
		if err != nil {
			t.Fatal(err)
		}
		out := openAdapter(t, dir)
		if len(out.Modules) != len(in.Modules) {
			t.Fatalf("%d modules, want %d", len(out.Modules), len(in.Modules))
		}
		worst, worstE := 0.0, 0.0
		for i := range in.Modules {
			m := &in.Modules[i]
			d := delta(t, m)
			got := delta(t, moduleByName(t, out, m.Name))
			diff, norm := frobDiff(t, got, d)
			sv, err := spectral.SingularValues(d)
			if err != nil {
				t.Fatal(err)
			}
			tail, total := 0.0, 0.0
			for j, s := range sv {
				total += s * s
				if j >= rank {
					tail += s * s
				}
			}
			worst = max(worst, math.Abs(diff*diff-tail)/total)
			e := rep.Modules[i]
			worstE = max(worstE, math.Abs(e.Retained-(total-tail)/total))
			if rank == 8 && diff > 2e-7*norm {
				t.Errorf("%s: resize to the full rank: relative error %g", m.Name, diff/norm)
			}
		}
		t.Logf("rank %d: total energy retained %.6f; worst |‖ΔW−ΔW'‖²−Σtail σ²|/‖ΔW‖² %.2g, worst energy error %.2g", rank, rep.Retained, worst, worstE)
		if worst > 1e-6 || worstE > 1e-9 {
			t.Errorf("rank %d: Eckart–Young mismatch %g, energy mismatch %g", rank, worst, worstE)
		}
	}
}

// BenchmarkResize resizes the shared rank-8 LoRA (42 modules) to rank 4.
func BenchmarkResize(b *testing.B) {
	a, err := Open(filepath.Join(testshared.Path(b, "models", "tiny-llama-a"), "lora-shakespeare-a"))
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	dir := filepath.Join(b.TempDir(), "out")
	for b.Loop() {
		if _, err := Resize(dir, a, 4); err != nil {
			b.Fatal(err)
		}
	}
}
