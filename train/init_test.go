package train

import (
	"bytes"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/internal/linalg"
)

// singularValues returns the singular values of a float32 matrix (linalg.SingularValues: values only, by another
// route than the SVD with vectors the initialisation uses).
func singularValues(t *testing.T, rows, cols int, f func(i, j int) float64) []float64 {
	t.Helper()
	a := make([]float64, rows*cols)
	for i := range rows {
		for j := range cols {
			a[i*cols+j] = f(i, j)
		}
	}
	s, err := linalg.SingularValues(rows, cols, a)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSpectralInit checks PiSSA and MiLoRA right after initialisation (r = 8, α = 16: scale 2) on tiny-llama-a:
// for the projections of layer 0, residual + s·B·A is the original weight to float32 rounding; the singular values of
// s·B·A are W's r largest (PiSSA) or r smallest (MiLoRA), and the residual keeps the others (its largest is σ_{r+1}
// for PiSSA, σ₁ for MiLoRA); the LoRA's loss on a few windows is the base model's (that of the default
// initialisation, whose B is zero, in the same passes); the model itself is not changed.
func TestSpectralInit(t *testing.T) {
	m := tinyLlamaHF(t)
	win := windowsOf(t, shakespeare(t, m, "shakespeare_val.txt"), 4, 32)
	const r = 8
	plain, err := NewLoRAConfig(m, LoRAConfig{Rank: r, Alpha: 16}, 4, 32, 1)
	if err != nil {
		t.Fatal(err)
	}
	base, err := plain.Loss(win)
	if err != nil {
		t.Fatal(err)
	}
	for _, init := range []string{InitPiSSA, InitMiLoRA} {
		l, err := NewLoRAConfig(m, LoRAConfig{Rank: r, Alpha: 16, Init: init}, 4, 32, 1)
		if err != nil {
			t.Fatal(err)
		}
		ml := &m.layers[0]
		for i, lin := range l.layers[0].linears() {
			w := []*matrix{&ml.q, &ml.k, &ml.v, &ml.o, &ml.gate, &ml.up, &ml.down}[i]
			if lin.w == w || w.f32 == nil || lin.w.f32 == nil {
				t.Fatalf("%s %s: the LoRA does not compute with an F32 residual of its own", init, w.name)
			}
			rows, cols, s := w.rows, w.cols, float64(lin.scale)
			ba := func(i, j int) float64 {
				var d float64
				for k := range r {
					d += float64(lin.b[i*r+k]) * float64(lin.a[k*cols+j])
				}
				return s * d
			}
			var worst, wmax float64
			for i := range rows {
				for j := range cols {
					orig := float64(w.f32[i*cols+j])
					worst = max(worst, math.Abs(float64(lin.w.f32[i*cols+j])+ba(i, j)-orig))
					wmax = max(wmax, math.Abs(orig))
				}
			}
			if worst > 1e-6*wmax {
				t.Errorf("%s %s: residual + s·B·A differs from W by up to %.3g (max |W| %.3g)", init, w.name, worst,
					wmax)
			}
			sw := singularValues(t, rows, cols, func(i, j int) float64 { return float64(w.f32[i*cols+j]) })
			sba := singularValues(t, rows, cols, ba)
			sres := singularValues(t, rows, cols, func(i, j int) float64 { return float64(lin.w.f32[i*cols+j]) })
			k := len(sw)
			want, resTop := sw[:r], sw[r]
			if init == InitMiLoRA {
				want, resTop = sw[k-r:], sw[0]
			}
			var dev float64
			for j := range r {
				dev = max(dev, math.Abs(sba[j]-want[j])/want[j])
			}
			if i == 0 || i == 6 {
				t.Logf("%s %s: σ(s·B·A) %.5f…%.5f, σ(W) picked %.5f…%.5f (of %.5f…%.5f), rel. dev %.2g; "+
					"σ₁(residual) %.5f; |residual + s·B·A − W| ≤ %.2g", init, w.name, sba[0], sba[r-1], want[0],
					want[r-1], sw[0], sw[k-1], dev, sres[0], worst)
			}
			if dev > 1e-4 || sba[r] > 1e-5*sw[0] {
				t.Errorf("%s %s: singular values of s·B·A %v (next %g), want %v", init, w.name, sba[:r], sba[r], want)
			}
			if math.Abs(sres[0]-resTop) > 1e-5*sw[0] {
				t.Errorf("%s %s: the residual's largest singular value is %g, want %g", init, w.name, sres[0], resTop)
			}
		}
		loss, err := l.Loss(win)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: loss %.7f right after initialisation, base model %.7f", init, loss, base)
		if math.Abs(loss-base) > 1e-6 {
			t.Errorf("%s: loss %.7f right after initialisation, base model %.7f", init, loss, base)
		}
	}
	if again, err := plain.Loss(win); err != nil || again != base {
		t.Errorf("the base model's loss changed from %.7f to %.7f (%v): initialisation touched its weights", base,
			again, err)
	}
}

// TestSpectralTrain trains a few steps from each spectral initialisation: the training loss drops; the adapter
// written is the rank-2r plain LoRA (scale 1) that, applied to the original model by the runtime, gives the loss the
// trainer computes with the residual base; a second run writes the same bytes.
func TestSpectralTrain(t *testing.T) {
	m := tinyLlamaHF(t)
	tokens := shakespeare(t, m, "shakespeare_val.txt")[:3000]
	win := windowsOf(t, tokens, 4, 32)
	before, err := MeanLossTokens(m, win, 33)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		init string
		lr   float64
	}{{InitPiSSA, 5e-4}, {InitMiLoRA, 3e-3}} {
		opts := TrainOptions{Rank: 4, Alpha: 8, Init: c.init, Steps: 8, LR: c.lr, Batch: 2, Ctx: 32, Seed: 3,
			Targets: []string{"q_proj", "v_proj", "down_proj"}}
		l := mustTrain(t, m, &Stream{Tokens: tokens}, opts)
		after, err := l.Loss(win)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), c.init)
		if err := l.WritePEFT(dir); err != nil {
			t.Fatal(err)
		}
		a, err := adapter.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Modules) != 3*m.Config.Layers || a.Modules[0].Rank != 8 || a.Modules[0].Scale != 1 {
			t.Errorf("%s: the adapter has %d modules of rank %d and scale %v, want %d of rank 8 and scale 1", c.init,
				len(a.Modules), a.Modules[0].Rank, a.Modules[0].Scale, 3*m.Config.Layers)
		}
		a.Close()
		applied := adapterLoss(t, dir, win)
		t.Logf("%s: loss %.6f (base) → %.6f after %d steps; the converted adapter on the original base: %.6f",
			c.init, before.Loss, after, opts.Steps, applied)
		if after > before.Loss-0.04 {
			t.Errorf("%s: loss went from %.6f to %.6f", c.init, before.Loss, after)
		}
		if math.Abs(applied-after) > 1e-4 {
			t.Errorf("%s: the converted adapter gives loss %.6f on the original base, the trainer %.6f", c.init,
				applied, after)
		}
		if first, second := adapterBytes(t, l), adapterBytes(t, mustTrain(t, m, &Stream{Tokens: tokens}, opts)); !bytes.Equal(first, second) {
			t.Errorf("%s: two runs with the same seed wrote different adapters", c.init)
		}
	}
}

// adapterLoss is the mean loss of the windows through the runtime (F32 cache) on tiny-llama-a with the adapter in
// dir applied.
func adapterLoss(t *testing.T, dir string, windows [][]int32) float64 {
	t.Helper()
	a, err := adapter.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	return appliedLoss(t, tinyLlamaHF(t), a, windows)
}

// TestSpectralInitRefused: unknown initialisations, quantized bases and ranks beyond a weight's smaller side are
// refused with a message saying which.
func TestSpectralInitRefused(t *testing.T) {
	hf, q := tinyLlamaHF(t), tinyLlama(t, "q4_0")
	for _, c := range []struct {
		m    *Model
		cfg  LoRAConfig
		want string
	}{
		{hf, LoRAConfig{Rank: 4, Alpha: 8, Init: "olora"}, `initialisation "olora"`},
		{q, LoRAConfig{Rank: 4, Alpha: 8, Init: InitPiSSA}, "blk.0.attn_q.weight is q4_0"},
		{hf, LoRAConfig{Rank: 129, Alpha: 8, Init: InitMiLoRA, Targets: []string{"k_proj"}},
			"rank 129 exceeds the 128 singular values of blk.0.attn_k.weight"},
	} {
		_, err := NewLoRAConfig(c.m, c.cfg, 1, 8, 0)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(c.want)) {
			t.Errorf("%+v: error %v, want one containing %q", c.cfg, err, c.want)
		}
	}
}

// TestSpectralResume: a PiSSA run resumed from its checkpoint of step 2 of 4 writes the converted adapter of the
// uninterrupted run byte for byte (the resumed run recomputes the initial factors, which the conversion subtracts).
func TestSpectralResume(t *testing.T) {
	m := tinyLlamaHF(t)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_val.txt")[:3000]}
	ckpt, kept := t.TempDir(), t.TempDir()
	opts := TrainOptions{Rank: 4, Alpha: 8, Init: InitPiSSA, Steps: 4, LR: 5e-4, Batch: 2, Ctx: 16, Seed: 5,
		Targets: []string{"q_proj", "down_proj"}, Checkpoint: ckpt, SaveEvery: 2}
	opts.Log = keepCheckpoint(t, ckpt, kept, 2)
	want := adapterBytes(t, mustTrain(t, m, data, opts))
	opts.Log, opts.SaveEvery, opts.ResumeFrom = nil, 0, kept
	if !bytes.Equal(adapterBytes(t, mustTrain(t, m, data, opts)), want) {
		t.Error("the PiSSA run resumed at step 2 wrote a different adapter from the uninterrupted run")
	}
}
