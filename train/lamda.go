package train

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/lathe-ml/lathe/internal/kernels"
)

// MethodLaMDA (Azizi, Kundu and Pedram, EMNLP 2024 Findings, arXiv 2406.12832) puts a trainable r×r core S
// between LoRA's two projections: ΔW = s·B·S·A, s = α/r. The first projection A (r×in) is frozen from the start;
// the second, B (out×r), trains during the first steps and is frozen column by column, leading columns first, as
// the authors' gradual_freeze_B does, until after freeze_step updates only S trains. Frozen entries get a zero
// gradient and a zero learning-rate factor, so that AdamW's momentum and weight decay do not move them either.
const MethodLaMDA = "lamda"

// lamdaFreezeShare is the part of the run after which B is frozen when freeze_step is 0: the authors' eta = 0.3.
const lamdaFreezeShare = 0.3

func init() {
	registerMethod(MethodLaMDA, methodSpec{
		summary: "LaMDA: ΔW = B·S·A with A frozen, an r×r core S trained and B frozen after a warm-up",
		args:    map[string]string{"init": "svd", "freeze_step": "0"},
		build: func(cfg LoRAConfig, args methodArgs) (method, error) {
			m := &lamdaMethod{init: args.String("init", "svd", "lora"), freezeStep: args.Int("freeze_step", 0)}
			if m.freezeStep == 0 && cfg.Steps > 0 {
				m.freezeStep = max(1, int(math.Round(lamdaFreezeShare*float64(cfg.Steps))))
			}
			return m, nil
		},
	})
}

// lamdaMethod holds the run's projections, in Params order, for the freezing schedule.
type lamdaMethod struct {
	init string
	// freezeStep is the number of updates after which B is frozen whole; 0 (a LoRA not made by Train, whose run
	// length is unknown) never freezes it.
	freezeStep int
	projs      []*lamdaLinear
	scales     [][]float32
}

func (m *lamdaMethod) project(s site) (projection, error) {
	w, r := s.w, s.cfg.Rank
	p := &lamdaLinear{w: w, rank: r, scale: float32(s.cfg.Scale()), a: make([]float32, r*w.cols),
		core: make([]float32, r*r), b: make([]float32, w.rows*r), dcore: make([]float32, r*r),
		db: make([]float32, w.rows*r), h: make([]float32, s.rows*r), g: make([]float32, s.rows*r),
		e: make([]float32, s.rows*r)}
	switch m.init {
	case "svd":
		// A and B are the top r right and left singular vectors of W, and the core starts at zero, so that training
		// starts from the base model and learns in W's principal subspaces.
		if r > min(w.rows, w.cols) {
			return nil, fmt.Errorf("rank %d exceeds the %d singular values of a %d×%d weight", r,
				min(w.rows, w.cols), w.rows, w.cols)
		}
		_, u, sv, vt, err := w.svd()
		if err != nil {
			return nil, err
		}
		k := len(sv)
		for j := range r {
			for c := range w.cols {
				p.a[j*w.cols+c] = float32(vt[j*w.cols+c])
			}
			for i := range w.rows {
				p.b[i*r+j] = float32(u[i*k+j])
			}
		}
	case "lora":
		// The authors' code: PEFT's LoRA initialisation (A Kaiming-uniform, B zero) and the core as torch's
		// nn.Linear(r, r) draws it, U(−1/√r, 1/√r).
		rng := rand.New(rand.NewPCG(s.seed, 0x6c616d6461))
		fill := func(x []float32, bound float64) {
			for i := range x {
				x[i] = float32((2*rng.Float64() - 1) * bound)
			}
		}
		fill(p.a, 1/math.Sqrt(float64(w.cols)))
		fill(p.core, 1/math.Sqrt(float64(r)))
	}
	m.projs = append(m.projs, p)
	ones := make([]float32, len(p.b))
	for i := range ones {
		ones[i] = 1
	}
	m.scales = append(m.scales, nil, ones)
	return p, nil
}

// frozenColumns is how many leading columns of B are frozen for the update of step (1-based): one more every
// freezeStep/r steps, all of them once freezeStep updates are done.
func (m *lamdaMethod) frozenColumns(step, r int) int {
	if m.freezeStep == 0 {
		return 0
	}
	return min(r, (step-1)*r/m.freezeStep)
}

// beforeUpdate zeroes the gradients of B's frozen columns and sets their learning-rate factors to zero.
func (m *lamdaMethod) beforeUpdate(step int, grads [][]float32) {
	for k, p := range m.projs {
		f := m.frozenColumns(step, p.rank)
		db, s := grads[2*k+1], m.scales[2*k+1]
		for i := range p.w.rows {
			clear(db[i*p.rank : i*p.rank+f])
			row := s[i*p.rank : (i+1)*p.rank]
			clear(row[:f])
			for j := f; j < p.rank; j++ {
				row[j] = 1
			}
		}
	}
}

func (m *lamdaMethod) lrScales() [][]float32 { return m.scales }

// lamdaLinear computes y = x·Wᵀ + s·((x·Aᵀ)·Sᵀ)·Bᵀ.
type lamdaLinear struct {
	w         *matrix
	rank      int
	scale     float32
	a         []float32 // rank×cols, frozen
	core, b   []float32 // rank×rank and rows×rank
	dcore, db []float32
	h, g, e   []float32 // x·Aᵀ, h·Sᵀ and a scratch, n×rank each
}

func (p *lamdaLinear) forward(y, x []float32, n int, buf *[]float32) {
	rows, cols, r := p.w.rows, p.w.cols, p.rank
	frozenForward(p.w, y, x, n, buf)
	h, g := p.h[:n*r], p.g[:n*r]
	kernels.Sgemm(false, true, n, r, cols, 1, x, cols, p.a, cols, 0, h, r)
	kernels.Sgemm(false, true, n, r, r, 1, h, r, p.core, r, 0, g, r)
	kernels.Sgemm(false, true, n, rows, r, p.scale, g, r, p.b, r, 1, y, rows)
}

// backward: dB += s·dyᵀ·g; with e = dy·B, dS += s·eᵀ·h and dx += dy·W + s·(e·S)·A.
func (p *lamdaLinear) backward(dx, dy, x []float32, n int, buf *[]float32) {
	rows, cols, r := p.w.rows, p.w.cols, p.rank
	frozenBackward(p.w, dx, dy, n, buf)
	h, g, e := p.h[:n*r], p.g[:n*r], p.e[:n*r]
	kernels.Sgemm(true, false, rows, r, n, p.scale, dy, rows, g, r, 1, p.db, r)
	kernels.Sgemm(false, false, n, r, rows, 1, dy, rows, p.b, r, 0, e, r)
	kernels.Sgemm(true, false, r, r, n, p.scale, e, r, h, r, 1, p.dcore, r)
	kernels.Sgemm(false, false, n, r, r, p.scale, e, r, p.core, r, 0, g, r) // g is free once dB has it
	kernels.Sgemm(false, false, n, cols, r, 1, g, r, p.a, cols, 1, dx, cols)
}

func (p *lamdaLinear) params() ([][]float32, [][]float32) {
	return [][]float32{p.core, p.b}, [][]float32{p.dcore, p.db}
}

// factors are A and s·B·S: the update is against the original weight, which LaMDA never changes.
func (p *lamdaLinear) factors() (a, b []float32, rank int) {
	r := p.rank
	b = make([]float32, len(p.b))
	kernels.Sgemm(false, false, p.w.rows, r, r, p.scale, p.b, r, p.core, r, 0, b, r)
	return p.a, b, r
}
