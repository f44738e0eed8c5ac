package train

import (
	"slices"
	"testing"
)

// TestMethodLISA: LISA lowers the loss, its merged model computes what the trainer computed, a run resumed in the
// middle of a period (after step 4, the first of the second period of 3 steps) ends bit-identical, and it trains
// every weight of the model.
func TestMethodLISA(t *testing.T) {
	run := checkMethod(t, TrainOptions{Method: MethodLISA, MethodArgs: map[string]string{"lisa_layers": "2",
		"lisa_interval": "3"}, Steps: 8, LR: 1e-4, Batch: 2, Ctx: 64, Seed: 9}, false)
	c := run.l.m.Config
	qDim, kvDim := c.Heads*c.HeadDim, c.HeadsKV*c.HeadDim
	layer := c.Embd*(2*qDim+2*kvDim) + 3*c.Embd*c.FF + 2*c.Embd
	if want := c.Layers*layer + 2*c.Vocab*c.Embd + c.Embd; run.trainable != want {
		t.Errorf("LISA holds %d trainable values, want every weight of the model: %d", run.trainable, want)
	}
	l := run.l.method.(*lisaMethod)
	var periods [][]int
	for p := range 3 {
		periods = append(periods, slices.Clone(l.layersOf(1+3*p)))
	}
	t.Logf("layers per period: %v", periods)
	for _, p := range periods {
		if len(p) != 2 || p[0] == p[1] {
			t.Errorf("a period trains layers %v, want 2 distinct ones", p)
		}
	}
	if slices.Equal(periods[0], periods[1]) && slices.Equal(periods[1], periods[2]) {
		t.Errorf("every period draws layers %v: the draw does not depend on the period", periods[0])
	}
}

// TestLISAFrozenLayers: after one period, the layers not drawn for it are bit-identical to the base model — their
// projections and their norms — while the drawn ones, the embedding, the output norm and the head have changed;
// the optimizer state holds the moments of γ layers only.
func TestLISAFrozenLayers(t *testing.T) {
	m := tinyLlamaHF(t)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_train.txt")}
	const K = 3
	l := mustTrain(t, m, data, TrainOptions{Method: MethodLISA, MethodArgs: map[string]string{"lisa_layers": "2",
		"lisa_interval": "3"}, Steps: K, LR: 1e-4, Batch: 2, Ctx: 32, Seed: 11})
	lm := l.method.(*lisaMethod)
	active := lm.layersOf(1)
	t.Logf("period 0 trains layers %v", active)
	for li := range l.layers {
		ml := &m.layers[li]
		frozen := !slices.Contains(active, li)
		same := true
		for _, lin := range l.layers[li].linears() {
			p := lin.proj.(*denseLinear)
			w := make([]float32, len(p.v))
			if err := lin.w.decodeRows(w, 0, lin.w.rows); err != nil {
				t.Fatal(err)
			}
			same = same && slices.Equal(p.v, w)
		}
		same = same && slices.Equal(l.extra.attnNorm[li], ml.attnNorm) && slices.Equal(l.extra.ffnNorm[li], ml.ffnNorm)
		if same != frozen {
			t.Errorf("layer %d (frozen %t): weights identical to the base: %t", li, frozen, same)
		}
	}
	if slices.Equal(l.extra.outNorm, m.outNorm) {
		t.Errorf("the output norm was not trained")
	}
	embd := make([]float32, len(l.extra.embd))
	if err := m.embd.decodeRows(embd, 0, m.embd.rows); err != nil {
		t.Fatal(err)
	}
	if slices.Equal(embd, l.extra.embd) {
		t.Errorf("the embedding was not trained")
	}
	var state, layer int
	for _, mv := range lm.m {
		state += 2 * len(mv)
	}
	for _, ts := range lm.tensors[0] {
		layer += len(ts)
	}
	if state != 2*2*layer {
		t.Errorf("LISA's own optimizer holds %d values, want the two moments of 2 layers: %d", state, 4*layer)
	}
}
