package train

import (
	"fmt"
	"math/rand/v2"
	"slices"
)

// MethodLISA is LISA (Pan et al., "LISA: Layerwise Importance Sampling for Memory-Efficient Large Language Model
// Fine-Tuning", NeurIPS 2024, arXiv 2403.17919, Algorithm 1): full-parameter training in which every period of
// lisa_interval steps trains γ = lisa_layers layers drawn at random, the others frozen, while the embedding, the
// output norm and the head are always trained.
const MethodLISA = "lisa"

func init() {
	registerMethod(MethodLISA, methodSpec{
		summary: "LISA: full training of a few random layers per period, embedding and head always (writes a " +
			"merged model)",
		args:  map[string]string{"lisa_layers": "2", "lisa_interval": "20"},
		dense: true,
		build: func(_ LoRAConfig, a methodArgs) (method, error) {
			return &lisaMethod{gamma: a.Int("lisa_layers", 1), interval: a.Int("lisa_interval", 1), period: -1,
				next: []float32{1}}, nil
		},
	})
}

// lisaMethod trains the body layers' projections and norms with an AdamW of its own (see updater) over the
// active layers only, whose state it resets at each period as LMFlow's LISATrainer does (it re-creates the
// optimizer at every switch, keeping the state of the embedding, head and final norm alone): a layer drawn again
// starts from zero moments and bias correction from its first step. The frozen layers are not touched, their weight
// gradients not even computed; the trainer's AdamW updates the embedding, the output norm and the head throughout.
type lisaMethod struct {
	gamma, interval int
	seed            uint64 // the first site's seed: the run's seed, from which each period's layers are drawn
	extra           *extraParams
	// tensors and index are each layer's trained tensors (its projections, then its two norms) and their places in
	// Params order.
	tensors [][][]float32
	index   [][]int
	nproj   int // projections, which come first in Params
	// next holds the step about to be taken, in the checkpointed state, so that a resumed run draws the layers of
	// its first step before computing its gradients.
	next   []float32
	period int   // the period active was drawn for
	active []int // the layers trained in that period, ascending
	// opt is the AdamW of the active layers; its moments are slot-major: the tensors of active[0], then of active[1]…
	opt  AdamW
	m, v [][]float32
}

func (l *lisaMethod) project(s site) (projection, error) {
	if l.nproj == 0 {
		l.seed = s.seed
	}
	p, err := newDenseLinear(s.w)
	if err != nil {
		return nil, err
	}
	layer := s.layer
	p.frozen = func() bool { return !slices.Contains(l.layersOf(int(l.next[0])), layer) }
	for len(l.tensors) <= layer {
		l.tensors, l.index = append(l.tensors, nil), append(l.index, nil)
	}
	l.tensors[layer] = append(l.tensors[layer], p.v)
	l.index[layer] = append(l.index[layer], l.nproj)
	l.nproj++
	return p, nil
}

func (l *lisaMethod) extras(m *Model, rows int) (*extraParams, error) {
	if n := m.Config.Layers; l.gamma > n {
		return nil, fmt.Errorf("lisa_layers=%d: the model has %d layers", l.gamma, n)
	}
	if len(l.tensors) != m.Config.Layers {
		return nil, fmt.Errorf("LISA samples whole layers: target projections in every layer")
	}
	e, err := newExtraParams(m, rows, trainOutside{embed: true, norms: true, head: true})
	if err != nil {
		return nil, err
	}
	l.extra = e
	for li := range l.tensors {
		// Params: the projections, the embedding, then each layer's two norms.
		l.tensors[li] = append(l.tensors[li], e.attnNorm[li], e.ffnNorm[li])
		l.index[li] = append(l.index[li], l.nproj+1+2*li, l.nproj+2+2*li)
	}
	for range l.gamma {
		for _, t := range l.tensors[0] {
			l.m, l.v = append(l.m, make([]float32, len(t))), append(l.v, make([]float32, len(t)))
		}
	}
	return e, nil
}

// layersOf returns the layers trained at a step (1-based): γ of them drawn without replacement from a generator
// seeded with the run's seed and the period, so that a resumed run draws the same.
func (l *lisaMethod) layersOf(step int) []int {
	if p := (step - 1) / l.interval; p != l.period {
		rng := rand.New(rand.NewPCG(l.seed, uint64(p)))
		l.period, l.active = p, rng.Perm(len(l.tensors))[:l.gamma]
		slices.Sort(l.active)
	}
	return l.active
}

func (l *lisaMethod) claimed() []int {
	var out []int
	for _, idx := range l.index {
		out = append(out, idx...)
	}
	return out
}

// beforeUpdate zeroes the norm gradients of the frozen layers (their projections computed none), so that the
// gradient norm and its clipping are those of the trained tensors, as in PyTorch where frozen ones have no grad.
func (l *lisaMethod) beforeUpdate(step int, grads [][]float32) {
	active := l.layersOf(step)
	for li, idx := range l.index {
		if !slices.Contains(active, li) {
			for _, i := range idx {
				clear(grads[i])
			}
		}
	}
}

// update takes an AdamW step of the active layers, with the trainer's hyper-parameters and learning rate; the
// moments start from zero at the first step of each period.
func (l *lisaMethod) update(step int, opt *AdamW, grads [][]float32) {
	active := l.layersOf(step)
	within := (step - 1) % l.interval
	if within == 0 {
		for i := range l.m {
			clear(l.m[i])
			clear(l.v[i])
		}
	}
	var params, gs [][]float32
	for _, li := range active {
		params = append(params, l.tensors[li]...)
		for _, i := range l.index[li] {
			gs = append(gs, grads[i])
		}
	}
	l.opt = AdamW{LR: opt.LR, Beta1: opt.Beta1, Beta2: opt.Beta2, Eps: opt.Eps, WeightDecay: opt.WeightDecay,
		t: within, m: l.m, v: l.v}
	l.opt.Step(params, gs)
	l.next[0] = float32(step + 1)
}

// state is the step about to be taken, the moments of the active layers and every layer's tensors (which the
// trainer's checkpoint leaves out, as it does all claimed ones).
func (l *lisaMethod) state() []namedFloats {
	out := []namedFloats{{"lisa.next", l.next}}
	for i := range l.m {
		out = append(out, namedFloats{fmt.Sprintf("lisa.m.%d", i), l.m[i]},
			namedFloats{fmt.Sprintf("lisa.v.%d", i), l.v[i]})
	}
	for li, ts := range l.tensors {
		for k, t := range ts {
			out = append(out, namedFloats{fmt.Sprintf("lisa.layer.%d.%d", li, k), t})
		}
	}
	return out
}
