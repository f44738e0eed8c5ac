package train

import (
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/adapter"
)

// dropoutMask64 is the oracle's mask hook for l's dropout on the current micro-batch: each adapter input goes
// through the mask the runtime draws for that projection (applied to ones, it gives 0 or 1/(1−p) per value).
func dropoutMask64(l *LoRA, n int) func(layer, module int, x []float64) []float64 {
	return func(layer, module int, x []float64) []float64 {
		cols := len(x) / n
		ones := make([]float32, len(x))
		for i := range ones {
			ones[i] = 1
		}
		site := layer*len(targetNames) + module
		l.drop.draw(site, n, cols)
		l.drop.apply(ones, ones, site, n, cols, false)
		y := make([]float64, len(x))
		for i, v := range x {
			y[i] = v * float64(ones[i])
		}
		return y
	}
}

// TestLoRADropoutGradient64: with LoRA dropout the training pass's loss is the float64 oracle's with the same
// masks on the adapters' inputs (and only there), and its gradient matches central differences of that loss.
func TestLoRADropoutGradient64(t *testing.T) {
	m := tinyLlamaHF(t)
	const B, T = 2, 8
	l, err := NewLoRAConfig(m, LoRAConfig{Rank: 4, Alpha: 8, Dropout: 0.3}, B, T, 1)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(23, 24))
	randomB(l, rng)
	windows := windowsOf(t, shakespeare(t, m, "shakespeare_val.txt"), B, T)
	scored := [][]bool{{false, true, true, true, true, true, true, true}, {true, true, true, false, true, true, true, true}}
	l.SetDropoutStep(5, 1)
	loss32, err := l.Step(windows, scored)
	if err != nil {
		t.Fatal(err)
	}
	w64 := newModel64(t, m)
	f := l.factors64()
	plain := w64.loss64(l, f, windows, scored)
	w64.mask = dropoutMask64(l, B*T)
	loss64 := w64.loss64(l, f, windows, scored)
	t.Logf("loss: float32 pass %.7f, float64 oracle with the masks %.7f, without %.7f", loss32, loss64, plain)
	if math.Abs(loss32-loss64) > 1e-5*loss64 {
		t.Errorf("the training pass's loss %.7f differs from the oracle's %.7f with the same masks", loss32, loss64)
	}
	if math.Abs(plain-loss64) < 1e-4 {
		t.Errorf("the masks change the oracle's loss by only %.2e: the check cannot tell dropout from none",
			math.Abs(plain-loss64))
	}
	checkGradients64(t, l, w64, f, l.grads64(), windows, scored, rng)
}

// TestLoRADropoutZeroIsPlain: without dropout no projection points at a dropout state and nothing is allocated for
// masks, so the pass is the plain one: the same kernels in the same order as before dropout existed.
func TestLoRADropoutZeroIsPlain(t *testing.T) {
	m := tinyLlamaHF(t)
	for _, p := range []float64{0, 0.1} {
		l, err := NewLoRAConfig(m, LoRAConfig{Rank: 4, Alpha: 8, Dropout: p}, 2, 8, 1)
		if err != nil {
			t.Fatal(err)
		}
		dropping := 0
		for i := range l.layers {
			for _, lin := range l.layers[i].adapted() {
				if lin.drop != nil {
					dropping++
				}
			}
		}
		if want := map[bool]int{false: 0, true: 7 * m.Config.Layers}[p > 0]; dropping != want ||
			(p == 0) != (l.drop.buf == nil && l.drop.masks == nil) {
			t.Errorf("dropout %g: %d projections drop (want %d), buffer allocated %v", p, dropping, want,
				l.drop.buf != nil)
		}
	}
}

// TestLoRADropoutMasks: a mask drops a fraction p of the values and scales the rest by 1/(1−p); masks differ
// between projections and micro-batches; and the adapter's output averaged over many masks tends to the output
// without dropout (inverted dropout is unbiased), within 5 standard errors for every value.
func TestLoRADropoutMasks(t *testing.T) {
	m := tinyLlamaHF(t)
	const n, p = 4, 0.25
	l, err := NewLoRAConfig(m, LoRAConfig{Rank: 8, Alpha: 16, Dropout: p}, 1, n, 7)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	randomB(l, rng)
	lin := &l.layers[1].up
	rows, cols := lin.w.rows, lin.w.cols
	x := randVec(rng, n*cols, 1)

	mask := func(site int) []float32 {
		ones := make([]float32, n*cols)
		for i := range ones {
			ones[i] = 1
		}
		l.drop.draw(site, n, cols)
		l.drop.apply(ones, ones, site, n, cols, false)
		return ones
	}
	l.SetDropoutStep(1, 0)
	m0 := mask(lin.site)
	dropped := 0
	for _, v := range m0 {
		switch v {
		case 0:
			dropped++
		case float32(1 / (1 - p)):
		default:
			t.Fatalf("mask value %v: want 0 or 1/(1-p) = %v", v, float32(1/(1-p)))
		}
	}
	// Binomial(n·cols, p): 5 standard deviations.
	if frac, sd := float64(dropped)/float64(len(m0)), math.Sqrt(p*(1-p)/float64(len(m0))); math.Abs(frac-p) > 5*sd {
		t.Errorf("the mask dropped %.4f of the values, want %.2f ± %.4f", frac, p, 5*sd)
	}
	other := mask(l.layers[1].gate.site)
	l.SetDropoutStep(1, 1)
	next := mask(lin.site)
	l.SetDropoutStep(1, 0)
	if again := mask(lin.site); !bitsEqual(again, m0) {
		t.Error("the same step, micro-batch and projection gave another mask")
	}
	if bitsEqual(other, m0) || bitsEqual(next, m0) {
		t.Error("another projection or micro-batch gave the same mask")
	}

	y0, h := make([]float32, n*rows), make([]float32, n*lin.rank)
	var buf []float32
	lin.forward(y0, h, x, n, &buf)
	const K = 2000
	sum, sq := make([]float64, n*rows), make([]float64, n*rows)
	y := make([]float32, n*rows)
	l.drop.on = true
	differs := false
	for k := range K {
		l.SetDropoutStep(k, 0)
		lin.forward(y, h, x, n, &buf)
		for i, v := range y {
			sum[i] += float64(v)
			sq[i] += float64(v) * float64(v)
			differs = differs || math.Abs(float64(v-y0[i])) > 1e-3
		}
	}
	l.drop.on = false
	if !differs {
		t.Fatal("the outputs with dropout equal the output without: the adapter's input is not dropped")
	}
	worst := 0.0
	for i := range sum {
		mean := sum[i] / K
		se := math.Sqrt(max(sq[i]/K-mean*mean, 0) / K)
		z := math.Abs(mean-float64(y0[i])) / (se + 1e-6*math.Abs(float64(y0[i])))
		worst = max(worst, z)
	}
	t.Logf("mean over %d masks vs no dropout: worst deviation %.2f standard errors", K, worst)
	if worst > 5 {
		t.Errorf("the mean output over %d masks is %.1f standard errors from the output without dropout", K, worst)
	}
}

func bitsEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// TestTrainDropoutResume: a run with dropout writes the same bytes twice and the bytes of its own resumption from
// the checkpoint of step 3 of 6 (with accumulation, so several micro-batches per step), differs from the run
// without dropout, records lora_dropout in adapter_config.json, and refuses a resumption with another dropout.
// Validation runs without dropout: Loss is the same bits whatever the dropout.
func TestTrainDropoutResume(t *testing.T) {
	m := tinyLlamaHF(t)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_val.txt")[:6000]}
	base := TrainOptions{Rank: 4, Alpha: 8, Steps: 6, LR: 3e-3, GradAccum: 2, Batch: 2, Ctx: 24, Seed: 11,
		Dropout: 0.2, Targets: []string{"q_proj", "o_proj", "down_proj"}}
	l := mustTrain(t, m, data, base)
	want := adapterBytes(t, l)
	if !bytes.Equal(adapterBytes(t, mustTrain(t, m, data, base)), want) {
		t.Error("two runs with dropout wrote different adapters")
	}
	plain := base
	plain.Dropout = 0
	if bytes.Equal(adapterBytes(t, mustTrain(t, m, data, plain)), want) {
		t.Error("the run with dropout wrote the adapter of the run without")
	}
	dir := filepath.Join(t.TempDir(), "lora")
	if err := l.WritePEFT(dir); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, adapter.ConfigName))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), `"lora_dropout": 0.2`) {
		t.Errorf("adapter_config.json does not record lora_dropout 0.2:\n%s", cfg)
	}

	kept := checkpointAt(t, m, data, base, 3)
	resumed := base
	resumed.ResumeFrom = kept
	if got := adapterBytes(t, mustTrain(t, m, data, resumed)); !bytes.Equal(got, want) {
		t.Error("the run with dropout resumed at step 3 wrote a different adapter from the uninterrupted run")
	}
	resumed.Dropout = 0.1
	if _, _, err := Train(m, data, resumed); err == nil || !strings.Contains(err.Error(), "lora-dropout 0.2, this run has lora-dropout 0.1") {
		t.Errorf("resume with another dropout: error %v, want one naming lora-dropout", err)
	}

	// Validation: the same factors give the same loss bits with and without dropout, while Step's differ.
	windows := windowsOf(t, data.Tokens, 2, 24)
	var losses, steps []float64
	for _, p := range []float64{0, 0.5} {
		l, err := NewLoRAConfig(m, LoRAConfig{Rank: 4, Alpha: 8, Dropout: p}, 2, 24, 5)
		if err != nil {
			t.Fatal(err)
		}
		randomB(l, rand.New(rand.NewPCG(3, 4)))
		loss, err := l.Loss(windows)
		if err != nil {
			t.Fatal(err)
		}
		step, err := l.Step(windows, nil)
		if err != nil {
			t.Fatal(err)
		}
		losses, steps = append(losses, loss), append(steps, step)
	}
	if losses[0] != losses[1] {
		t.Errorf("validation loss %v with dropout 0.5, %v without: validation must not drop", losses[1], losses[0])
	}
	if steps[0] == steps[1] {
		t.Error("Step's loss is the same with dropout 0.5 as without")
	}
}

// checkpointAt runs opts with a checkpoint every step steps and returns a directory holding the checkpoint of
// step step, as a run killed after it would have left it.
func checkpointAt(t *testing.T, m *Model, data *Stream, opts TrainOptions, step int) string {
	t.Helper()
	ckpt, kept := t.TempDir(), t.TempDir()
	opts.Checkpoint, opts.SaveEvery = ckpt, step
	opts.Log = keepCheckpoint(t, ckpt, kept, step)
	if _, _, err := Train(m, data, opts); err != nil {
		t.Fatal(err)
	}
	return kept
}

// TestTrainDropoutRefused: dropout outside [0, 1) and dropout with a method that computes its projections whole
// are refused, naming what is wrong; so is recomputation with EVA, whose initialisation reads every layer's
// activations.
func TestTrainDropoutRefused(t *testing.T) {
	m := tinyLlamaHF(t)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_val.txt")[:3000]}
	for _, c := range []struct {
		opts TrainOptions
		want string
	}{
		{TrainOptions{Dropout: 1}, "dropout 1: want a probability in [0, 1)"},
		{TrainOptions{Dropout: -0.1}, "dropout -0.1"},
		{TrainOptions{Dropout: math.NaN()}, "dropout NaN"},
		{TrainOptions{Dropout: 0.1, Method: "dora"}, "method dora computes its projections whole"},
		{TrainOptions{Recompute: true, Method: MethodEVA}, "method eva reads all layers' activations"},
	} {
		o := c.opts
		o.Steps, o.Batch, o.Ctx = 1, 2, 16
		if _, _, err := Train(m, data, o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one containing %q", c.opts, err, c.want)
		}
	}
}

// TestTrainRecompute: recomputing activations in the backward pass gives the same bits as keeping them — the final
// parameters and the last step's gradients — for LoRA with dropout and accumulation, DyLoRA, DoRA and full
// fine-tuning (which also trains the embedding, norms and head); and it keeps one layer's activations, not all.
func TestTrainRecompute(t *testing.T) {
	m := tinyLlamaHF(t)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_val.txt")[:6000]}
	for _, o := range []TrainOptions{
		{Method: MethodLoRA, Dropout: 0.1, GradAccum: 2, Targets: []string{"k_proj", "o_proj", "up_proj"}},
		{Method: MethodDyLoRA},
		{Method: "dora"},
		{Method: "full"},
	} {
		o.Rank, o.Alpha, o.Steps, o.LR, o.Batch, o.Ctx, o.Seed = 4, 8, 3, 3e-3, 2, 24, 9
		kept := mustTrain(t, m, data, o)
		o.Recompute = true
		re := mustTrain(t, m, data, o)
		if len(re.acts) != 1 || len(kept.acts) != m.Config.Layers {
			t.Errorf("%s: %d and %d sets of layer activations, want %d kept and 1 recomputed", o.Method,
				len(kept.acts), len(re.acts), m.Config.Layers)
		}
		p1, g1 := kept.Params()
		p2, g2 := re.Params()
		for i := range p1 {
			if !bitsEqual(p1[i], p2[i]) || !bitsEqual(g1[i], g2[i]) {
				t.Errorf("%s: tensor %d of %d differs with recomputation", o.Method, i, len(p1))
				break
			}
		}
		if o.Method == MethodLoRA && !bytes.Equal(adapterBytes(t, kept), adapterBytes(t, re)) {
			t.Error("lora: the adapter written differs with recomputation")
		}
	}
}
