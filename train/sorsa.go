package train

import (
	"fmt"

	"github.com/lathe-ml/lathe/internal/kernels"
)

// MethodSORSA (Cao, arXiv 2409.00055; the authors' sorsa package) splits each weight as PiSSA does, W = W_res +
// U·diag(S)·Vᵀ over its r principal singular triplets, trains U (out×r), S (r) and Vᵀ (r×in) with W_res frozen,
// and pulls U and V towards orthonormal columns with the regularizer γ·(‖UᵀU − I‖²_F + ‖VᵀV − I‖²_F), whose
// gradient it adds before the update. The passes compute W + U·diag(S)·Vᵀ − U₀·diag(S₀)·V₀ᵀ, the same function
// without a float32 copy of W_res; the adapter is that update against the original weight, a LoRA of rank 2r.
const MethodSORSA = "sorsa"

func init() {
	registerMethod(MethodSORSA, methodSpec{
		summary: "SORSA: trains the principal singular vectors and values, orthonormality-regularized",
		args:    map[string]string{"gamma": "0.1"},
		build: func(cfg LoRAConfig, args methodArgs) (method, error) {
			gamma := args.Float("gamma", 0, 1e6)
			return &sorsaMethod{gamma: float32(gamma), gram: make([]float32, cfg.Rank*cfg.Rank)}, nil
		},
	})
}

// sorsaMethod holds the run's projections, in Params order, for the regularizer.
type sorsaMethod struct {
	gamma float32
	projs []*sorsaLinear
	gram  []float32 // r×r scratch of the regularizer
}

func (m *sorsaMethod) project(s site) (projection, error) {
	w, r := s.w, s.cfg.Rank
	if r > min(w.rows, w.cols) {
		return nil, fmt.Errorf("rank %d exceeds the %d singular values of a %d×%d weight", r, min(w.rows, w.cols),
			w.rows, w.cols)
	}
	_, u, sv, vt, err := w.svd()
	if err != nil {
		return nil, err
	}
	k := len(sv)
	p := &sorsaLinear{w: w, rank: r, u: make([]float32, w.rows*r), s: make([]float32, r),
		vt: make([]float32, r*w.cols), c0: make([]float32, w.rows*r), du: make([]float32, w.rows*r),
		ds: make([]float32, r), dvt: make([]float32, r*w.cols), h: make([]float32, s.rows*r),
		g: make([]float32, s.rows*r), e: make([]float32, s.rows*r), h0: make([]float32, s.rows*r)}
	for j := range r {
		p.s[j] = float32(sv[j])
		for c := range w.cols {
			p.vt[j*w.cols+c] = float32(vt[j*w.cols+c])
		}
		for i := range w.rows {
			p.u[i*r+j] = float32(u[i*k+j])
			p.c0[i*r+j] = p.u[i*r+j] * p.s[j]
		}
	}
	p.vt0 = append([]float32(nil), p.vt...)
	m.projs = append(m.projs, p)
	return p, nil
}

// beforeUpdate adds γ times the regularizer's gradient, 4·U·(UᵀU − I) and 4·(VᵀV − I)·Vᵀ, to those of U and Vᵀ
// (orthReg, AdaLoRA's regularizer over all r ranks).
func (m *sorsaMethod) beforeUpdate(_ int, grads [][]float32) {
	if m.gamma == 0 {
		return
	}
	for k, p := range m.projs {
		orthReg(p.u, p.vt, grads[3*k], grads[3*k+2], p.w.rows, p.w.cols, p.rank, p.rank, m.gamma, m.gram)
	}
}

// sorsaLinear computes y = x·Wᵀ + ((x·V)⊙S)·Uᵀ − (x·V₀)·C₀ᵀ with C₀ = U₀·diag(S₀).
type sorsaLinear struct {
	w        *matrix
	rank     int
	u, s, vt []float32 // rows×rank, rank, rank×cols
	c0, vt0  []float32 // U₀·diag(S₀) and V₀ᵀ, frozen
	du, ds   []float32
	dvt      []float32
	h, g, e  []float32 // x·V, h⊙S and a scratch, n×rank each
	h0       []float32 // x·V₀, n×rank
}

func (p *sorsaLinear) forward(y, x []float32, n int, buf *[]float32) {
	rows, cols, r := p.w.rows, p.w.cols, p.rank
	frozenForward(p.w, y, x, n, buf)
	h, g, h0 := p.h[:n*r], p.g[:n*r], p.h0[:n*r]
	kernels.Sgemm(false, true, n, r, cols, 1, x, cols, p.vt, cols, 0, h, r)
	kernels.Sgemm(false, true, n, r, cols, 1, x, cols, p.vt0, cols, 0, h0, r)
	for i, v := range h {
		g[i] = v * p.s[i%r]
	}
	kernels.Sgemm(false, true, n, rows, r, 1, g, r, p.u, r, 1, y, rows)
	kernels.Sgemm(false, true, n, rows, r, -1, h0, r, p.c0, r, 1, y, rows)
}

// backward: dU += dyᵀ·g; with e = dy·U, dS_j += Σₙ e_nj·h_nj and dVᵀ += (e⊙S)ᵀ·x;
// dx += dy·W + (e⊙S)·Vᵀ − (dy·C₀)·V₀ᵀ.
func (p *sorsaLinear) backward(dx, dy, x []float32, n int, buf *[]float32) {
	rows, cols, r := p.w.rows, p.w.cols, p.rank
	frozenBackward(p.w, dx, dy, n, buf)
	h, g, e, f := p.h[:n*r], p.g[:n*r], p.e[:n*r], p.h0[:n*r]
	kernels.Sgemm(true, false, rows, r, n, 1, dy, rows, g, r, 1, p.du, r)
	kernels.Sgemm(false, false, n, r, rows, 1, dy, rows, p.u, r, 0, e, r)
	for j := range r {
		var t float64
		for i := j; i < n*r; i += r {
			t += float64(e[i]) * float64(h[i])
		}
		p.ds[j] += float32(t)
	}
	for i := range e {
		e[i] *= p.s[i%r]
	}
	kernels.Sgemm(true, false, r, cols, n, 1, e, r, x, cols, 1, p.dvt, cols)
	kernels.Sgemm(false, false, n, cols, r, 1, e, r, p.vt, cols, 1, dx, cols)
	kernels.Sgemm(false, false, n, r, rows, 1, dy, rows, p.c0, r, 0, f, r) // h0 is not needed after forward
	kernels.Sgemm(false, false, n, cols, r, -1, f, r, p.vt0, cols, 1, dx, cols)
}

func (p *sorsaLinear) params() ([][]float32, [][]float32) {
	return [][]float32{p.u, p.s, p.vt}, [][]float32{p.du, p.ds, p.dvt}
}

// factors are the update against the original weight as one LoRA of rank 2r: B = [U·diag(S), −U₀·diag(S₀)],
// A = [Vᵀ; V₀ᵀ], so that B·A = U·diag(S)·Vᵀ − U₀·diag(S₀)·V₀ᵀ exactly.
func (p *sorsaLinear) factors() (a, b []float32, rank int) {
	r := p.rank
	a = append(append(make([]float32, 0, 2*len(p.vt)), p.vt...), p.vt0...)
	b = make([]float32, 2*len(p.u))
	for i := range p.w.rows {
		for j := range r {
			b[i*2*r+j] = p.u[i*r+j] * p.s[j]
			b[i*2*r+r+j] = -p.c0[i*r+j]
		}
	}
	return a, b, 2 * r
}
