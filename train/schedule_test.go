package train

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestScheduleFactor checks the schedules against transformers' lr_lambda formulas worked by hand: the optimizer
// step s runs at lr_lambda(s-1), warmup is cur/warmup, linear decay (total-cur)/(total-warmup), cosine
// 0.5·(1+cos(π·(cur-warmup)/(total-warmup))).
func TestScheduleFactor(t *testing.T) {
	for _, c := range []struct {
		s                   Schedule
		step, total, warmup int
		want                float64
	}{
		{Constant, 1, 10, 0, 1},
		{Constant, 10, 10, 0, 1},
		{Constant, 1, 10, 4, 0},
		{Constant, 3, 10, 4, 0.5},
		{Constant, 5, 10, 4, 1},
		{Linear, 1, 10, 2, 0},
		{Linear, 2, 10, 2, 0.5},
		{Linear, 3, 10, 2, 1},
		{Linear, 4, 10, 2, 0.875},
		{Linear, 10, 10, 2, 0.125},
		{Linear, 1, 4, 0, 1},
		{Linear, 4, 4, 0, 0.25},
		{Cosine, 3, 10, 2, 1},
		{Cosine, 7, 10, 2, 0.5},
		{Cosine, 10, 10, 2, 0.5 * (1 + math.Cos(7*math.Pi/8))},
		{Cosine, 2, 5, 0, 0.5 * (1 + math.Cos(math.Pi/5))},
	} {
		if got := c.s.Factor(c.step, c.total, c.warmup); math.Abs(got-c.want) > 1e-15 {
			t.Errorf("%s step %d of %d, warmup %d: factor %v, want %v", c.s, c.step, c.total, c.warmup, got, c.want)
		}
	}
	if _, err := ParseSchedule("exponential"); err == nil {
		t.Error("ParseSchedule accepted exponential")
	}
}

// TestClipGrads checks global-norm clipping against a norm worked by hand: gradients (3, 4) and (12) have norm 13.
func TestClipGrads(t *testing.T) {
	grads := [][]float32{{3, 4}, {12}}
	norm := gradNorm(grads)
	if norm != 13 {
		t.Fatalf("norm %v, want 13", norm)
	}
	clipGrads(grads, norm, 20)
	if grads[0][0] != 3 || grads[0][1] != 4 || grads[1][0] != 12 {
		t.Errorf("max norm 20 above the norm 13 changed the gradients to %v", grads)
	}
	clipGrads(grads, norm, 6.5)
	coef := 6.5 / (13 + 1e-6)
	for i, got := range []float32{grads[0][0], grads[0][1], grads[1][0]} {
		if want := []float64{3, 4, 12}[i] * coef; math.Abs(float64(got)-want) > 1e-6 {
			t.Errorf("clipped gradient %d: %v, want %v", i, got, want)
		}
	}
	if n := gradNorm(grads); math.Abs(n-6.5) > 1e-5 {
		t.Errorf("clipped norm %v, want 6.5", n)
	}
}

// TestGradAccumulation: with every window fully scored, k micro-batches of b windows give the gradient of one batch
// of k·b windows (the same windows: both draw them one after another from the same generator), up to float32
// rounding.
func TestGradAccumulation(t *testing.T) {
	m := tinyLlamaHF(t)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_val.txt")[:5000]}
	const k, b = 3, 2
	var grads [2][][]float32
	for i, o := range []TrainOptions{{Batch: k * b, GradAccum: 1}, {Batch: b, GradAccum: k}} {
		o.Rank, o.Ctx, o.Seed = 4, 16, 9
		o.defaults()
		tr, err := newTrainer(m, data, o)
		if err != nil {
			t.Fatal(err)
		}
		// B random, so that the gradients of A are not zero.
		rng := rand.New(rand.NewPCG(1, 2))
		for j := 1; j < len(tr.params); j += 2 {
			for n := range tr.params[j] {
				tr.params[j][n] = float32(rng.NormFloat64() * 0.05)
			}
		}
		if _, err := tr.gradients(); err != nil {
			t.Fatal(err)
		}
		grads[i] = tr.grads
	}
	var worst, scale float64
	for j := range grads[0] {
		for n, v := range grads[0][j] {
			worst = max(worst, math.Abs(float64(v-grads[1][j][n])))
			scale = max(scale, math.Abs(float64(v)))
		}
	}
	t.Logf("largest gradient %.3g, largest difference %.3g", scale, worst)
	if scale == 0 || worst > 1e-5*scale {
		t.Errorf("accumulated gradient differs from the one-batch gradient by %.3g (largest entry %.3g)", worst, scale)
	}
}
