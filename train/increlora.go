package train

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/lathe-ml/lathe/internal/kernels"
)

// MethodIncreLoRA (Zhang et al., "IncreLoRA: Incremental Parameter Allocation Method for Parameter-Efficient
// Fine-tuning", arXiv 2308.12043) runs AdaLoRA's SVD-form updates the other way round: every module starts with a
// few ranks and, every deltaT steps, the top_h most important modules get incre_rank_num more, until the average
// rank is target_r. Each module holds --rank ranks from the start (the most it can grow to); the ones not yet added
// compute nothing (Λ = 0), and the next ones to add learn in advance with a tiny fixed Λ (the paper's advance
// learning), so that a rank starts from trained P and Q when it is added.
const MethodIncreLoRA = "increlora"

// reserveLambda is the fixed Λ of the ranks learning in advance (the authors' code sets it to 1e-5).
const reserveLambda = 1e-5

func init() {
	registerMethod(MethodIncreLoRA, methodSpec{
		summary: "IncreLoRA: SVD-form updates whose ranks are added to the most important modules as training goes",
		args: map[string]string{"init_r": "1", "target_r": "0", "tinit": "auto", "tfinal": "auto", "deltaT": "1",
			"top_h": "auto", "incre_rank_num": "auto", "beta1": "0.85", "beta2": "0.85", "orth_reg_weight": "0.5"},
		build: func(cfg LoRAConfig, args methodArgs) (method, error) {
			m := &svdMethod{alpha: cfg.Alpha, maxR: cfg.Rank, grow: &growth{growing: make([]float32, 1)}}
			m.initR = args.Int("init_r", 1)
			if err := m.commonArgs(cfg, &args, cfg.Rank/2); err != nil {
				return nil, err
			}
			g := m.grow
			if args.values["incre_rank_num"] == "auto" {
				// the authors' table: 1, 2, 3, 4 ranks a round for an average target of 2, 4, 6, 8
				g.increR = max(1, m.targetR/2)
			} else {
				g.increR = args.Int("incre_rank_num", 1)
			}
			if args.values["top_h"] != "auto" {
				g.topH = args.Int("top_h", 1)
			}
			if args.err != nil {
				return nil, args.err
			}
			if m.initR > m.targetR || m.targetR > m.maxR {
				return nil, fmt.Errorf("train: method %s: want init_r %d ≤ target_r %d ≤ --rank %d (the most ranks a "+
					"module can grow to)", MethodIncreLoRA, m.initR, m.targetR, m.maxR)
			}
			if m.initR < m.targetR {
				g.growing[0] = 1
			}
			return m, nil
		},
	})
}

// growth is IncreLoRA's schedule of one run.
type growth struct {
	// topH is the number of modules that get ranks each round; 0 until the first round for top_h=auto.
	topH, increR int
	// growing is 1 while ranks are being added (a checkpointed state): the modules are scored and have ranks
	// learning in advance.
	growing []float32
	buf     []float32 // for sensitivity: ∂L/∂ΔW, ΔW and P·diag(λ)
}

func (g *growth) scoring() bool { return g.growing[0] != 0 }

// live is the number of leading ranks that train: those added and, while growing, those learning in advance.
func (g *growth) live(s *svdLinear) int {
	n := s.active()
	if g.scoring() {
		n = min(s.r, n+g.increR)
	}
	return n
}

// applyMask sets Λ of the ranks not added: reserveLambda for those learning in advance, 0 for the others.
func (g *growth) applyMask(s *svdLinear) {
	for i := s.active(); i < s.r; i++ {
		s.lam[i] = 0
		if i < g.live(s) {
			s.lam[i] = reserveLambda
		}
	}
}

// sensitivity is the module's score of one pass, Σ|ΔW ⊙ ∂L/∂ΔW| / √(rows·cols) (the authors' backward hook), with
// ∂L/∂ΔW = dyᵀ·x.
func (g *growth) sensitivity(s *svdLinear, dy, x []float32, n int) float64 {
	rows, cols, r := s.w.rows, s.w.cols, s.r
	grad, dw, pl := g.buf[:rows*cols], g.buf[rows*cols:2*rows*cols], g.buf[2*rows*cols:2*rows*cols+rows*r]
	kernels.Sgemm(true, false, rows, cols, n, 1, dy, rows, x, cols, 0, grad, cols)
	scaleCols(pl, s.p, s.lam, rows, r)
	kernels.Sgemm(false, false, rows, cols, r, s.scale(), pl, r, s.q, cols, 0, dw, cols)
	var sum float64
	for i, v := range dw {
		sum += math.Abs(float64(v * grad[i]))
	}
	return sum / math.Sqrt(float64(rows*cols))
}

// afterUpdate smooths the modules' scores as AdaLoRA does its entries', adds ranks every deltaT steps after tinit,
// and stops growing when the budget is reached or at total − tfinal, the ranks learning in advance then put to 0.
func (g *growth) afterUpdate(m *svdMethod, step int) {
	if g.scoring() {
		b1, b2 := float32(m.beta1), float32(m.beta2)
		for _, s := range m.projs {
			sens := float32(s.score)
			s.modScore[0] = b1*s.modScore[0] + (1-b1)*sens
			s.modScore[1] = b2*s.modScore[1] + (1-b2)*float32(math.Abs(float64(sens-s.modScore[0])))
		}
		if step > m.tinit && step%m.deltaT == 0 {
			g.add(m)
		}
		if m.added() >= m.targetR*len(m.projs) || step >= m.total-m.tfinal {
			g.growing[0] = 0
		}
	}
	for _, s := range m.projs {
		s.score = 0
		g.applyMask(s)
	}
}

// added is the number of ranks added over all modules.
func (m *svdMethod) added() int {
	n := 0
	for _, s := range m.projs {
		n += s.active()
	}
	return n
}

// add gives up to incre_rank_num ranks to each of the top_h modules of highest score Ī·Ū that can grow, within the
// budget. top_h=auto is the fewest modules a round that reaches the budget in the rounds of the schedule.
func (g *growth) add(m *svdMethod) {
	left := m.targetR*len(m.projs) - m.added()
	if g.topH == 0 {
		rounds := 0
		for step := m.tinit + 1; step <= m.total-m.tfinal; step++ {
			if step%m.deltaT == 0 {
				rounds++
			}
		}
		need := (m.targetR - m.initR) * len(m.projs)
		g.topH = min(len(m.projs), max(1, (need+rounds*g.increR-1)/max(1, rounds*g.increR)))
	}
	var order []int
	for k, s := range m.projs {
		if s.active() < s.r {
			order = append(order, k)
		}
	}
	score := func(k int) float32 { return m.projs[k].modScore[0] * m.projs[k].modScore[1] }
	slices.SortFunc(order, func(a, b int) int { return cmp.Or(cmp.Compare(score(b), score(a)), cmp.Compare(a, b)) })
	for _, k := range order[:min(len(order), g.topH)] {
		s := m.projs[k]
		act := s.active()
		for i := act; i < act+min(g.increR, left, s.r-act); i++ {
			s.mask[i] = 1
		}
		left -= min(g.increR, left, s.r-act)
	}
}
