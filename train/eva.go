package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/lathe-ml/lathe/internal/kernels"
	"github.com/lathe-ml/lathe/internal/linalg"
)

// MethodEVA is Explained Variance Adaptation (Paischer et al., "One Initialization to Rule them All: Fine-tuning
// via Explained Variance Adaptation", arXiv 2410.07170; PEFT's EvaConfig and initialize_lora_eva_weights): before
// the first step, a few batches of training windows go through the model, and each targeted projection's A starts
// as the top principal directions of its inputs (B zero, so training still starts from the base model). The ranks
// are then redistributed across modules by explained variance: every module offers its first round(rho·r)
// explained-variance ratios, the r·modules largest of all win a rank each for their module. The run writes a plain
// PEFT LoRA with rank_pattern (and alpha_pattern) for the modules whose rank moved.
const MethodEVA = "eva"

func init() {
	registerMethod(MethodEVA, methodSpec{
		summary: "EVA: A from the principal directions of each projection's inputs, ranks redistributed by explained variance",
		args: map[string]string{"rho": "2", "tau": "0.99", "eva_batches": "8", "whiten": "false",
			"use_label_mask": "true", "adjust_scaling_factors": "true"},
		build: func(cfg LoRAConfig, a methodArgs) (method, error) {
			return &evaMethod{cfg: cfg, rho: a.Float("rho", 1, math.Inf(1)), tau: a.Float("tau", 0, 1),
				batches: a.Int("eva_batches", 1), whiten: a.Bool("whiten"), labelMask: a.Bool("use_label_mask"),
				adjust: a.Bool("adjust_scaling_factors")}, nil
		},
	})
}

// evaStream is the PCG stream of the windows EVA draws, apart from the trainer's own, so that the training windows
// are those of a LoRA run with the same seed.
const evaStream = 0x657661

type evaMethod struct {
	cfg       LoRAConfig
	rho, tau  float64
	batches   int
	whiten    bool
	labelMask bool // only positions whose prediction is scored feed the statistics (PEFT's use_label_mask)
	adjust    bool // alpha scaled with the rank, keeping alpha/r (PEFT's adjust_scaling_factors)
	projs     []*evaLinear
	// groups are the distinct inputs of the targeted projections, layer by layer: q, k and v share one, as do
	// gate and up (PEFT's equal_inputs_map finds the same by hashing the inputs).
	groups []*evaGroup
}

func (e *evaMethod) project(s site) (projection, error) {
	p := &evaLinear{lin: loraLinear{w: s.w}, rows: s.rows, layer: s.layer, input: evaInput(s.module)}
	e.projs = append(e.projs, p)
	return p, nil
}

// plannedTrainable is what the run will train once EVA has shared out the ranks: rᵢ·(in + out) over the modules
// with Σrᵢ = r·modules: about a LoRA of rank r's count (the budget is in ranks, as PEFT's; ranks moved between
// modules of different shapes change the count a little).
func (e *evaMethod) plannedTrainable() int {
	n := 0
	for _, p := range e.projs {
		n += e.cfg.Rank * (p.lin.w.rows + p.lin.w.cols)
	}
	return n
}

// evaInput is the activation of layerActs a projection reads: 0 xn1 (q, k, v), 1 att (o), 2 xn2 (gate, up), 3 h
// (down).
func evaInput(module string) int {
	switch module {
	case "o_proj":
		return 1
	case "gate_proj", "up_proj":
		return 2
	case "down_proj":
		return 3
	}
	return 0
}

// evaLinear is a LoRA projection of its own rank, 0 until EVA has run.
type evaLinear struct {
	lin          loraLinear
	h, tmp       []float32 // x·Aᵀ and the backward's scratch, rows·rank each
	rows         int
	layer, input int
	group        *evaGroup
}

func (p *evaLinear) forward(y, x []float32, n int, buf *[]float32) {
	if p.lin.rank == 0 {
		frozenForward(p.lin.w, y, x, n, buf)
		return
	}
	p.lin.forward(y, p.h, x, n, buf)
}

func (p *evaLinear) backward(dx, dy, x []float32, n int, buf *[]float32) {
	if p.lin.rank == 0 {
		frozenBackward(p.lin.w, dx, dy, n, buf)
		return
	}
	p.lin.backward(dx, dy, x, p.h, p.tmp, n, buf)
}

func (p *evaLinear) params() ([][]float32, [][]float32) {
	return [][]float32{p.lin.a, p.lin.b}, [][]float32{p.lin.da, p.lin.db}
}

// factors are A and scale·B.
func (p *evaLinear) factors() (a, b []float32, rank int) {
	b = slices.Clone(p.lin.b)
	kernels.Scale(p.lin.scale, b)
	return p.lin.a, b, p.lin.rank
}

// setRank gives the projection rank r with A's rows from a (r×cols) and B zero.
func (p *evaLinear) setRank(r int, a []float32, scale float32) {
	w := p.lin.w
	p.lin = loraLinear{w: w, rank: r, active: r, scale: scale, a: a, b: make([]float32, w.rows*r),
		da: make([]float32, r*w.cols), db: make([]float32, w.rows*r)}
	p.h, p.tmp = make([]float32, p.rows*r), make([]float32, p.rows*r)
}

// evaGroup is the principal component analysis of one input, updated batch by batch as PEFT's IncrementalPCA
// (sklearn's partial_fit: the new batch centred on its mean, stacked under the previous singular values times
// components, plus one row correcting for the shift of the mean) but without its truncation to round(rho·r)
// components: every component is kept, so the result is the exact PCA of all the rows seen, the SVD of their
// centred stack. Each update is one LAPACK SVD in float64 of at most cols + rows-of-the-batch + 1 rows.
type evaGroup struct {
	layer, input, cols int
	n                  int // rows seen
	batches            int // batches taken (a group stops once the components its modules need have converged)
	mean               []float64
	sv, vt             []float64 // all singular values of the centred rows seen, and their right vectors (rows)
	// components are the first round(rho·r) rows of vt, signed as svd_flip(u_based_decision=False) signs them
	// (the entry of largest magnitude positive), with their explained-variance ratios.
	components []float64
	ratios     []float64
	converged  []bool // per component: cosine similarity with the previous batch's ≥ tau
	need       int    // the largest rank a module of the group has in the current distribution
}

// start runs EVA on batches of the run's training windows and sets every projection's rank and A.
func (e *evaMethod) start(t *trainer) error {
	l := t.lora
	r := e.cfg.Rank
	comps := int(math.RoundToEven(float64(r) * e.rho)) // Python's round, as PEFT's round(r·rho)
	byKey := map[[2]int]*evaGroup{}
	for _, p := range e.projs {
		key := [2]int{p.layer, p.input}
		g := byKey[key]
		if g == nil {
			cols := p.lin.w.cols
			if comps > cols {
				return fmt.Errorf("train: eva: round(rho·r) = %d components exceed the %d inputs of %s", comps, cols,
					p.lin.w.name)
			}
			g = &evaGroup{layer: p.layer, input: p.input, cols: cols, need: comps}
			byKey[key] = g
			e.groups = append(e.groups, g)
		}
		p.group = g
	}
	rng := rand.New(rand.NewPCG(t.opts.Seed, evaStream))
	var x []float64
	for b := range e.batches {
		var active []*evaGroup
		for _, g := range e.groups {
			if g.converged == nil || slices.Contains(g.converged[:g.need], false) {
				active = append(active, g)
			}
		}
		if len(active) == 0 {
			break // every component a module needs has converged
		}
		windows, scored, err := t.data.Windows(rng, t.opts.Batch, t.opts.Ctx)
		if err != nil {
			return fmt.Errorf("train: eva: %w", err)
		}
		B, T := len(windows), len(windows[0])-1
		l.m.mu.Lock()
		l.forward(windows, nil, B, T)
		l.m.mu.Unlock()
		for _, g := range active {
			in := l.acts[g.layer]
			act := [][]float32{in.xn1, in.att, in.xn2, in.h}[g.input]
			x = x[:0]
			for row := range B * T {
				if e.labelMask && scored != nil && !scored[row/T][row%T] {
					continue
				}
				for _, v := range act[row*g.cols : (row+1)*g.cols] {
					x = append(x, float64(v))
				}
			}
			if err := g.add(x, b > 0, comps, e.tau); err != nil {
				return fmt.Errorf("train: eva: layer %d: %w", g.layer, err)
			}
		}
		e.distribute(nil)
	}
	for _, g := range e.groups {
		if g.ratios == nil {
			return fmt.Errorf("train: eva: %d batches gave layer %d's %s %d rows, fewer than the round(rho·r) = %d "+
				"components wanted (raise eva_batches or the batch)", e.batches, g.layer,
				[]string{"attention input", "attention output", "MLP input", "MLP hidden state"}[g.input], g.n, comps)
		}
	}
	ranks := make([]int, len(e.projs))
	e.distribute(ranks)
	for i, p := range e.projs {
		ri, g := ranks[i], p.group
		if ri == 0 {
			// As PEFT, a module that gets no rank is not adapted at all.
			for j := range l.layers {
				for _, lin := range l.layers[j].linears() {
					if lin.proj == projection(p) {
						lin.proj = nil
					}
				}
			}
			continue
		}
		a := make([]float32, ri*g.cols)
		for k := range ri {
			f := 1.0
			if e.whiten {
				f = 1 / math.Sqrt(g.sv[k])
			}
			for c := range g.cols {
				a[k*g.cols+c] = float32(f * g.components[k*g.cols+c])
			}
		}
		cfg := LoRAConfig{Rank: ri, Alpha: e.cfg.Alpha, RSLoRA: e.cfg.RSLoRA}
		if e.adjust {
			cfg.Alpha *= float64(ri) / float64(r)
		}
		p.setRank(ri, a, float32(cfg.Scale()))
	}
	return nil
}

// add takes the rows x (n×cols, row-major) into the analysis and recomputes the group's components; with compare
// set, each is converged when its cosine similarity with the one before is at least tau.
func (g *evaGroup) add(x []float64, compare bool, comps int, tau float64) error {
	n, cols := len(x)/g.cols, g.cols
	if n == 0 {
		return nil
	}
	g.batches++
	mean := make([]float64, cols)
	for row := range n {
		for c, v := range x[row*cols : (row+1)*cols] {
			mean[c] += v
		}
	}
	for c := range mean {
		mean[c] /= float64(n)
	}
	var stack []float64
	for k, s := range g.sv {
		for _, v := range g.vt[k*cols : (k+1)*cols] {
			stack = append(stack, s*v)
		}
	}
	for row := range n {
		for c, v := range x[row*cols : (row+1)*cols] {
			stack = append(stack, v-mean[c])
		}
	}
	total := g.n + n
	if g.n > 0 {
		f := math.Sqrt(float64(g.n) * float64(n) / float64(total))
		for c := range cols {
			stack = append(stack, f*(g.mean[c]-mean[c]))
			mean[c] = (float64(g.n)*g.mean[c] + float64(n)*mean[c]) / float64(total)
		}
	}
	sv, vt, err := linalg.RightSVD(len(stack)/cols, cols, stack)
	if err != nil {
		return fmt.Errorf("the SVD of %d inputs: %w", cols, err)
	}
	g.n, g.mean, g.sv, g.vt = total, mean, sv, vt
	if len(sv) < comps {
		return nil // too few rows yet: PEFT skips such a batch
	}
	var sum float64
	for _, s := range sv {
		sum += s * s
	}
	prev := g.components
	g.components, g.ratios = slices.Clone(vt[:comps*cols]), make([]float64, comps)
	for k := range comps {
		g.ratios[k] = sv[k] * sv[k] / sum
		v := g.components[k*cols : (k+1)*cols]
		big := 0
		for c := range v {
			if math.Abs(v[c]) > math.Abs(v[big]) {
				big = c
			}
		}
		if v[big] < 0 {
			for c := range v {
				v[c] = -v[c]
			}
		}
	}
	if !compare || prev == nil {
		return nil
	}
	g.converged = make([]bool, comps)
	for k := range comps {
		var dot float64
		for c := range cols {
			dot += prev[k*cols+c] * g.components[k*cols+c]
		}
		g.converged[k] = dot >= tau // both unit vectors: the dot is the cosine similarity
	}
	return nil
}

// distribute redistributes the rank budget r·modules by explained variance (PEFT's _get_rank_distribution): every
// module offers its input's first round(rho·r) explained-variance ratios, and each of the budget's largest wins
// its module a rank. Ties (the modules sharing an input offer the same ratios) go to the module first in
// loraLayer.linears order, which also gives the group's first module the largest rank, as PEFT's swap ensures. It
// sets every group's need and, when ranks is not nil, the rank of every projection.
func (e *evaMethod) distribute(ranks []int) {
	type offer struct {
		ratio  float64
		module int
	}
	var offers []offer
	for i, p := range e.projs {
		if p.group.ratios == nil {
			return // a group without enough rows yet: keep the distribution as it is
		}
		for _, v := range p.group.ratios {
			offers = append(offers, offer{v, i})
		}
	}
	slices.SortStableFunc(offers, func(a, b offer) int {
		if a.ratio != b.ratio {
			if a.ratio > b.ratio {
				return -1
			}
			return 1
		}
		return a.module - b.module
	})
	count := make([]int, len(e.projs))
	for _, o := range offers[:e.cfg.Rank*len(e.projs)] {
		count[o.module]++
	}
	for _, g := range e.groups {
		g.need = 0
	}
	for i, p := range e.projs {
		p.group.need = max(p.group.need, count[i])
	}
	if ranks != nil {
		copy(ranks, count)
	}
}
