package train

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestMethodALLoRA: ALLoRA lowers the loss, its plain LoRA adapter computes what the trainer computed, a resumed
// run is bit-identical, and it trains r·(rows + cols) values per projection (LoRA's count: the adaptive learning
// rate adds no parameters).
func TestMethodALLoRA(t *testing.T) {
	const rank = 4
	run := checkMethod(t, TrainOptions{Method: MethodALLoRA, MethodArgs: map[string]string{"eta": "2"}, Rank: rank,
		Targets: []string{"q_proj", "v_proj", "down_proj"}, Steps: 12, LR: 2e-3, Batch: 2, Ctx: 64, Seed: 7}, false)
	c := run.l.m.Config
	want := c.Layers * rank * ((c.Heads*c.HeadDim + c.Embd) + (c.HeadsKV*c.HeadDim + c.Embd) + (c.Embd + c.FF))
	if run.trainable != want {
		t.Errorf("ALLoRA of rank %d on q, v and down trains %d values, want r·(rows+cols) summed: %d", rank,
			run.trainable, want)
	}
	if s := run.l.layers[0].q.proj.(*plainLoRA).lin.scale; s != 1 {
		t.Errorf("ALLoRA's update is scaled by %v, want 1 (no α/r)", s)
	}
}

// TestALLoRAStepSizes: one trainer step (AdamW, weight decay 0.1) moves every entry of a row of A or B by the
// paper's per-row learning rate lr/√(‖row‖² + 1/η²), the row norm taken before the update: on AdamW's first step,
// p ← p·(1 − lr·s·wd) − lr·s·g/(|g| + eps). B is set to random values first, so that its rows' norms, and the
// factors, differ from row to row.
func TestALLoRAStepSizes(t *testing.T) {
	m := tinyLlamaHF(t)
	const eta, lr, wd = 3.0, 1e-2, 0.1
	opts := TrainOptions{Method: MethodALLoRA, MethodArgs: map[string]string{"eta": "3"}, Rank: 4,
		Targets: []string{"k_proj", "up_proj"}, Steps: 1, LR: lr, WeightDecay: wd, Batch: 2, Ctx: 16, Seed: 3}
	opts.defaults()
	tr, err := newTrainer(m, &Stream{Tokens: shakespeare(t, m, "shakespeare_val.txt")}, opts)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for i := 1; i < len(tr.params); i += 2 { // the B factors
		for j := range tr.params[i] {
			tr.params[i][j] = float32(rng.NormFloat64() * 0.3)
		}
	}
	before := make([][]float32, len(tr.params))
	for i, p := range tr.params {
		before[i] = slices.Clone(p)
	}
	if _, err := tr.next(); err != nil {
		t.Fatal(err)
	}
	cols := func(i int) int { // A is rank×cols, B rows×rank
		if i%2 == 0 {
			return len(before[i]) / opts.Rank
		}
		return opts.Rank
	}
	var worst float64
	factors := map[float64]bool{}
	for i, p0 := range before {
		n := cols(i)
		for r := 0; r < len(p0); r += n {
			var sq float64
			for _, v := range p0[r : r+n] {
				sq += float64(v) * float64(v)
			}
			s := 1 / math.Sqrt(sq+1/(eta*eta))
			factors[math.Round(s*1e3)] = true
			for j := r; j < r+n; j++ {
				g := float64(tr.grads[i][j])
				want := float64(p0[j])*(1-lr*s*wd) - lr*s*g/(math.Abs(g)+1e-8)
				worst = max(worst, math.Abs(float64(tr.params[i][j])-want))
			}
		}
	}
	t.Logf("%d distinct row factors (to 1e-3); largest deviation from the formula %.2e (steps are ~%g)",
		len(factors), worst, lr)
	if worst > 1e-6 {
		t.Errorf("an entry moved %.2e away from p·(1 − lr·s·wd) − lr·s·g/(|g|+eps) with s = 1/√(‖row‖²+1/η²)",
			worst)
	}
	if len(factors) < 10 {
		t.Errorf("only %d distinct row factors: the check would not tell per-row step sizes apart", len(factors))
	}
}

// TestALLoRARefusals: η must be a positive number, and --rslora, a scale, has no meaning for a scale-free method.
func TestALLoRARefusals(t *testing.T) {
	m := tinyLlamaHF(t)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_val.txt")[:2000]}
	for _, c := range []struct {
		args   map[string]string
		rslora bool
		want   string
	}{
		{map[string]string{"eta": "0"}, false, "eta"},
		{map[string]string{"eta": "x"}, false, "eta"},
		{map[string]string{"alpha": "2"}, false, "takes eta"},
		{nil, true, "--rslora"},
	} {
		opts := TrainOptions{Method: MethodALLoRA, MethodArgs: c.args, RSLoRA: c.rslora, Steps: 1, Batch: 1, Ctx: 16}
		if _, _, err := Train(m, data, opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("args %v, rslora %v: error %v, want one saying %q", c.args, c.rslora, err, c.want)
		}
	}
}
