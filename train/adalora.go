package train

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/lathe-ml/lathe/internal/kernels"
)

// MethodAdaLoRA (Zhang et al., "Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning", ICLR 2023, arXiv
// 2303.10512) trains each update in SVD form, ΔW = P·Λ·Q·α/r, and prunes the triplets (P column, Λ entry, Q row)
// of least importance until a global rank budget is met. The budget, schedule and scores are those of PEFT's
// AdaLoraConfig and RankAllocator; the result is a plain LoRA whose modules have the ranks the run kept.
const MethodAdaLoRA = "adalora"

func init() {
	registerMethod(MethodAdaLoRA, methodSpec{
		summary: "AdaLoRA: SVD-form updates P·Λ·Q whose triplets are pruned by importance to a global rank budget",
		args: map[string]string{"init_r": "0", "target_r": "0", "tinit": "auto", "tfinal": "auto", "deltaT": "1",
			"beta1": "0.85", "beta2": "0.85", "orth_reg_weight": "0.5"},
		build: func(cfg LoRAConfig, args methodArgs) (method, error) {
			m := &svdMethod{alpha: cfg.Alpha}
			m.initR = args.Int("init_r", 0)
			if m.initR == 0 {
				m.initR = cfg.Rank
			}
			m.maxR = m.initR
			if err := m.commonArgs(cfg, &args, m.initR/2); err != nil {
				return nil, err
			}
			if m.targetR > m.initR {
				return nil, fmt.Errorf("train: method %s: target_r %d exceeds init_r %d: AdaLoRA only prunes",
					MethodAdaLoRA, m.targetR, m.initR)
			}
			return m, nil
		},
	})
}

// svdMethod is AdaLoRA or, with grow set, IncreLoRA (increlora.go) for one run: the SVD-form projections in Params
// order and the allocation of ranks among them. Every projection holds maxR ranks whatever it uses, so that the
// parameter tensors, Adam's moments and checkpoints keep their sizes; a rank that does not compute has Λ = 0.
type svdMethod struct {
	alpha                        float64
	initR, targetR, maxR         int
	total, tinit, tfinal, deltaT int
	beta1, beta2, orth           float64
	grow                         *growth // IncreLoRA's schedule; nil for AdaLoRA
	projs                        []*svdLinear
	// grads are the gradients of the step being taken, kept from beforeUpdate for the importance scores computed
	// after the update (PEFT's update_and_allocate runs between optimizer.step and zero_grad).
	grads [][]float32
	// scratch is shared by the projections, whose passes run one at a time: two n×maxR activations in a pass (n =
	// batch·ctx), the maxR×maxR Gram matrix of the regularizer between passes.
	scratch []float32
}

// commonArgs reads the arguments AdaLoRA and IncreLoRA share: target_r=0 means max(1, half), --steps is the run's
// length, and tinit and tfinal default to a tenth and a fifth of it (PEFT's 0 and 0 would start pruning at the
// first step and end it at the last).
func (m *svdMethod) commonArgs(cfg LoRAConfig, args *methodArgs, half int) error {
	name := args.method
	if cfg.RSLoRA {
		return fmt.Errorf("train: method %s scales its updates by lora_alpha/ranknum, as PEFT does: --rslora is "+
			"for LoRA", name)
	}
	m.targetR = args.Int("target_r", 0)
	if m.targetR == 0 {
		m.targetR = max(1, half)
	}
	m.total = cfg.Steps
	if m.total < 1 {
		return fmt.Errorf("train: method %s schedules its ranks over the run: it needs the number of steps", name)
	}
	auto := func(key string, def int) int {
		if args.values[key] == "auto" {
			return def
		}
		return args.Int(key, 0)
	}
	m.tinit, m.tfinal = auto("tinit", m.total/10), auto("tfinal", m.total/5)
	m.deltaT = args.Int("deltaT", 1)
	m.beta1, m.beta2 = args.Float("beta1", 0, 0.999999), args.Float("beta2", 0, 0.999999)
	m.orth = args.Float("orth_reg_weight", 0, math.MaxFloat32)
	if args.err != nil {
		return args.err
	}
	if m.tinit >= m.total-m.tfinal {
		return fmt.Errorf("train: method %s: tinit %d and tfinal %d leave no steps of %d to allocate ranks in "+
			"(want tinit < steps − tfinal)", name, m.tinit, m.tfinal, m.total)
	}
	return nil
}

func (m *svdMethod) project(s site) (projection, error) {
	r := m.maxR
	p := &svdLinear{m: m, w: s.w, layer: s.layer, module: s.module, r: r,
		p: make([]float32, s.w.rows*r), lam: make([]float32, r), q: make([]float32, r*s.w.cols),
		dp: make([]float32, s.w.rows*r), dlam: make([]float32, r), dq: make([]float32, r*s.w.cols),
		h: make([]float32, s.rows*r), mask: make([]float32, r)}
	// PEFT's AdaLoRA initialisation: Λ zero, P and Q normal with standard deviation 0.02.
	rng := rand.New(rand.NewPCG(s.seed, 0x6164616c))
	for _, f := range [][]float32{p.p, p.q} {
		for i := range f {
			f[i] = float32(0.02 * rng.NormFloat64())
		}
	}
	for i := range m.initR {
		p.mask[i] = 1
	}
	if m.grow == nil {
		for i, n := range []int{len(p.p), r, len(p.q)} {
			p.ipt[i], p.unc[i] = make([]float32, n), make([]float32, n)
		}
	} else {
		p.modScore = make([]float32, 2)
	}
	m.scratch = grow(m.scratch, max(2*s.rows*r, r*r))
	m.projs = append(m.projs, p)
	if g := m.grow; g != nil {
		g.buf = grow(g.buf, max(len(g.buf), 2*s.w.rows*s.w.cols+s.w.rows*r))
		g.applyMask(p)
	}
	return p, nil
}

// svdLinear is a frozen weight with an update in SVD form: y = x·Wᵀ + scale·((x·Qᵀ)⊙λ)·Pᵀ, P rows×r, λ r, Q r×cols,
// as PEFT's adalora.SVDLinear computes it (without dropout).
type svdLinear struct {
	m         *svdMethod
	w         *matrix
	layer     int
	module    string // the PEFT module name
	r         int
	p, lam, q []float32
	dp, dlam  []float32
	dq        []float32
	h         []float32 // x·Qᵀ of the last forward (n×r)
	// mask is 1 for the ranks that compute (AdaLoRA: not pruned; IncreLoRA: added) and 0 for the others.
	mask []float32
	// ipt and unc are AdaLoRA's smoothed sensitivity Ī and uncertainty Ū of every entry of p, lam and q.
	ipt, unc [3][]float32
	// modScore is IncreLoRA's module sensitivity and uncertainty; score sums the sensitivity of the step's passes.
	modScore []float32
	score    float64
}

// name is layer.module, naming the projection's state in checkpoints.
func (s *svdLinear) name() string { return fmt.Sprintf("%d.%s", s.layer, s.module) }

// active is the number of ranks that compute.
func (s *svdLinear) active() int {
	n := 0
	for _, v := range s.mask {
		if v != 0 {
			n++
		}
	}
	return n
}

// kept returns the indices of the ranks that compute, in order.
func (s *svdLinear) kept() []int {
	var out []int
	for i, v := range s.mask {
		if v != 0 {
			out = append(out, i)
		}
	}
	return out
}

// scale is PEFT's lora_alpha/ranknum: ranknum is init_r for AdaLoRA (PEFT leaves it as built) and the number of
// ranks added so far for IncreLoRA (which increments it with each rank).
func (s *svdLinear) scale() float32 {
	if s.m.grow != nil {
		return float32(s.m.alpha / float64(s.active()))
	}
	return float32(s.m.alpha / float64(s.m.initR))
}

// scaleCols sets dst (n×r) to src with column i multiplied by lam[i].
func scaleCols(dst, src, lam []float32, n, r int) {
	for k := range n {
		d, s := dst[k*r:(k+1)*r], src[k*r:(k+1)*r]
		for i, l := range lam {
			d[i] = s[i] * l
		}
	}
}

func (s *svdLinear) forward(y, x []float32, n int, buf *[]float32) {
	rows, cols, r := s.w.rows, s.w.cols, s.r
	frozenForward(s.w, y, x, n, buf)
	h, hl := s.h[:n*r], s.m.scratch[:n*r]
	kernels.Sgemm(false, true, n, r, cols, 1, x, cols, s.q, cols, 0, h, r)
	scaleCols(hl, h, s.lam, n, r)
	kernels.Sgemm(false, true, n, rows, r, s.scale(), hl, r, s.p, r, 1, y, rows)
}

// backward: with g = dy·P (n×r), dP += c·dyᵀ·(h⊙λ), dλᵢ += c·Σₙ gₙᵢhₙᵢ, and with g' = c·g⊙λ, dQ += g'ᵀ·x and
// dx += dy·W + g'·Q, c the scale.
func (s *svdLinear) backward(dx, dy, x []float32, n int, buf *[]float32) {
	rows, cols, r, c := s.w.rows, s.w.cols, s.r, s.scale()
	h, g, hl := s.h[:n*r], s.m.scratch[:n*r], s.m.scratch[n*r:2*n*r]
	if s.m.grow != nil && s.m.grow.scoring() {
		s.score += s.m.grow.sensitivity(s, dy, x, n)
	}
	kernels.Sgemm(false, false, n, r, rows, 1, dy, rows, s.p, r, 0, g, r)
	scaleCols(hl, h, s.lam, n, r)
	kernels.Sgemm(true, false, rows, r, n, c, dy, rows, hl, r, 1, s.dp, r)
	for i := range r {
		var sum float64
		for k := range n {
			sum += float64(g[k*r+i] * h[k*r+i])
		}
		s.dlam[i] += c * float32(sum)
	}
	scaleCols(g, g, s.lam, n, r)
	kernels.Sgemm(true, false, r, cols, n, c, g, r, x, cols, 1, s.dq, cols)
	kernels.Sgemm(false, false, n, cols, r, c, g, r, s.q, cols, 1, dx, cols)
	frozenBackward(s.w, dx, dy, n, buf)
}

func (s *svdLinear) params() ([][]float32, [][]float32) {
	return [][]float32{s.p, s.lam, s.q}, [][]float32{s.dp, s.dlam, s.dq}
}

// factors are the kept ranks as a LoRA: A the kept rows of Q, B the kept columns of P times λ and the scale. A module
// with no rank kept is written as rank 1 with zero factors, because PEFT refuses r = 0 and adapter.Open factors
// with an empty dimension.
func (s *svdLinear) factors() (a, b []float32, rank int) {
	rows, cols := s.w.rows, s.w.cols
	kept := s.kept()
	rank = max(1, len(kept))
	a, b = make([]float32, rank*cols), make([]float32, rows*rank)
	c := s.scale()
	for j, i := range kept {
		copy(a[j*cols:(j+1)*cols], s.q[i*cols:(i+1)*cols])
		for row := range rows {
			b[row*rank+j] = s.p[row*s.r+i] * s.lam[i] * c
		}
	}
	return a, b, rank
}

// orthReg adds to gp and gq the gradient of weight·R, R = ‖PₗᵀPₗ − I‖²_F + ‖QₗQₗᵀ − I‖²_F, over the first live ranks
// (Pₗ the first live columns of P, Qₗ the first live rows of Q), and returns R: ∂R/∂Pₗ = 4·Pₗ(PₗᵀPₗ − I) and
// ∂R/∂Qₗ = 4·(QₗQₗᵀ − I)Qₗ. tmp holds live² values.
func orthReg(p, q, gp, gq []float32, rows, cols, r, live int, weight float32, tmp []float32) float64 {
	cov := tmp[:live*live]
	var reg float64
	for _, side := range []bool{false, true} {
		if side {
			kernels.Sgemm(false, true, live, live, cols, 1, q, cols, q, cols, 0, cov, live)
		} else {
			kernels.Sgemm(true, false, live, live, rows, 1, p, r, p, r, 0, cov, live)
		}
		for i := range live {
			cov[i*live+i]--
		}
		for _, v := range cov {
			reg += float64(v) * float64(v)
		}
		if side {
			kernels.Sgemm(false, false, live, cols, live, 4*weight, cov, live, q, cols, 1, gq, cols)
		} else {
			kernels.Sgemm(false, false, rows, live, live, 4*weight, p, r, cov, live, 1, gp, r)
		}
	}
	return reg
}

// beforeUpdate adds the orthogonality regularizer's gradient and zeroes the gradients of the entries of Λ that do
// not train. The loss gets orth_reg_weight times the mean of the squared norms over the 2·modules factor matrices:
// the paper's R, averaged as PEFT averages its (unsquared) norms, so that the weight means what it does in PEFT
// whatever the number of modules; the paper's plain sum, at PEFT's weight, holds P and Q to orthogonality so hard
// that a short run barely learns.
func (m *svdMethod) beforeUpdate(_ int, grads [][]float32) {
	m.grads = grads
	tmp := m.scratch[:m.maxR*m.maxR]
	weight := float32(m.orth / float64(2*len(m.projs)))
	for k, s := range m.projs {
		gp, gl, gq := grads[3*k], grads[3*k+1], grads[3*k+2]
		live := s.r
		if m.grow != nil {
			live = m.grow.live(s)
		}
		if m.orth > 0 && live > 0 {
			orthReg(s.p, s.q, gp, gq, s.w.rows, s.w.cols, s.r, live, weight, tmp)
		}
		for i, on := range s.mask {
			if on == 0 {
				gl[i] = 0
			}
		}
	}
}

// afterUpdate updates the importance scores and, when the schedule says so, prunes to the step's budget (PEFT's
// AdaLoraModel.update_and_allocate); then it puts the masked entries of Λ back to zero, which Adam's moments would
// otherwise move.
func (m *svdMethod) afterUpdate(step int) error {
	if m.grow != nil {
		m.grow.afterUpdate(m, step)
		return nil
	}
	end := m.total - m.tfinal
	if step < end {
		m.updateImportance()
	}
	if budget, prune := m.budget(step); prune {
		m.pruneTo(budget)
	}
	for _, s := range m.projs {
		for i, on := range s.mask {
			if on == 0 {
				s.lam[i] = 0
			}
		}
	}
	return nil
}

// budget is PEFT's RankAllocator.budget_schedule: the initial budget until tinit, the target after total − tfinal,
// and in between a cubic fall from one to the other, applied every deltaT steps and at total − tfinal.
func (m *svdMethod) budget(step int) (int, bool) {
	initial, target := m.initR*len(m.projs), m.targetR*len(m.projs)
	end := m.total - m.tfinal
	switch {
	case step <= m.tinit:
		return initial, false
	case step > end:
		return target, true
	}
	c := 1 - float64(step-m.tinit)/float64(end-m.tinit)
	return int(float64(initial-target)*c*c*c + float64(target)), step%m.deltaT == 0 || step == end
}

// updateImportance folds the step's sensitivities s = |w·∇w| into the exponential averages: Ī ← β₁Ī + (1−β₁)s,
// Ū ← β₂Ū + (1−β₂)|s − Ī| (PEFT's RankAllocator.update_ipt).
func (m *svdMethod) updateImportance() {
	b1, b2 := float32(m.beta1), float32(m.beta2)
	parallel(len(m.projs), func(lo, hi int) {
		for k := lo; k < hi; k++ {
			s := m.projs[k]
			for t, w := range [][]float32{s.p, s.lam, s.q} {
				g, ipt, unc := m.grads[3*k+t], s.ipt[t], s.unc[t]
				for j, v := range w {
					sens := float32(math.Abs(float64(v * g[j])))
					ipt[j] = b1*ipt[j] + (1-b1)*sens
					unc[j] = b2*unc[j] + (1-b2)*float32(math.Abs(float64(sens-ipt[j])))
				}
			}
		}
	})
}

// tripletScores are the importances of s's ranks: with the element score Ī·Ū, Λᵢ's plus the means of its P column's
// and its Q row's (PEFT's RankAllocator.mask_to_budget and _combine_ipt).
func (s *svdLinear) tripletScores() []float64 {
	rows, cols, r := s.w.rows, s.w.cols, s.r
	out := make([]float64, r)
	for i := range r {
		out[i] = float64(s.ipt[1][i]) * float64(s.unc[1][i])
		var sp, sq float64
		for row := range rows {
			j := row*r + i
			sp += float64(s.ipt[0][j]) * float64(s.unc[0][j])
		}
		for col := range cols {
			j := i*cols + col
			sq += float64(s.ipt[2][j]) * float64(s.unc[2][j])
		}
		out[i] += sp/float64(rows) + sq/float64(cols)
	}
	return out
}

// pruneTo masks the least important kept triplets until budget remain. PEFT re-ranks every triplet each time, but
// a pruned one has Λ = 0 and so importance decaying to 0: here it stays pruned, and exactly budget remain (PEFT's
// threshold also masks the ties at the cut).
func (m *svdMethod) pruneTo(budget int) {
	type triplet struct {
		score float64
		k, i  int
	}
	var kept []triplet
	for k, s := range m.projs {
		scores := s.tripletScores()
		for _, i := range s.kept() {
			kept = append(kept, triplet{scores[i], k, i})
		}
	}
	if len(kept) <= budget {
		return
	}
	slices.SortFunc(kept, func(a, b triplet) int {
		return cmp.Or(cmp.Compare(a.score, b.score), cmp.Compare(a.k, b.k), cmp.Compare(a.i, b.i))
	})
	for _, t := range kept[:len(kept)-budget] {
		s := m.projs[t.k]
		s.mask[t.i], s.lam[t.i] = 0, 0
	}
}

// state is the masks and importance averages, which decide the pruning still to come.
func (m *svdMethod) state() []namedFloats {
	var out []namedFloats
	if m.grow != nil {
		out = append(out, namedFloats{"increlora.growing", m.grow.growing})
	}
	for _, s := range m.projs {
		out = append(out, namedFloats{s.name() + ".mask", s.mask})
		if m.grow != nil {
			out = append(out, namedFloats{s.name() + ".score", s.modScore})
			continue
		}
		for t, part := range []string{"p", "lambda", "q"} {
			out = append(out, namedFloats{s.name() + ".ipt." + part, s.ipt[t]},
				namedFloats{s.name() + ".unc." + part, s.unc[t]})
		}
	}
	return out
}
