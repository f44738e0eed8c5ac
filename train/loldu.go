package train

import (
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/internal/kernels"
)

// MethodLoLDU (Shi et al., arXiv 2410.13618; the authors' minloldu/loldu.py) factors each weight by Gaussian
// elimination with partial pivoting, W = P·L·D·U (L unit lower, U unit upper triangular, D the pivots), keeps the
// first r columns of P·L and rows of U frozen, and trains only the r pivots z (starting at D_r) and one scalar σ
// (starting at α/r): the weight is W_res + σ·P·L_r·diag(z)·U_r with W_res = W − σ₀·P·L_r·diag(z₀)·U_r. Against the
// original weight the update is P·L_r·diag(σ·z − σ₀·z₀)·U_r, a rank-r LoRA, which is what the passes compute and
// what the adapter holds. r + 1 trainable values per projection.
const MethodLoLDU = "loldu"

func init() {
	registerMethod(MethodLoLDU, methodSpec{
		summary: "LoLDU: frozen L and U of a pivoted LDU factorization, trains the r pivots and a scale",
		args:    map[string]string{},
		build:   func(LoRAConfig, methodArgs) (method, error) { return lolduMethod{}, nil },
	})
}

type lolduMethod struct{}

func (lolduMethod) project(s site) (projection, error) {
	w, r := s.w, s.cfg.Rank
	if r > min(w.rows, w.cols) {
		return nil, fmt.Errorf("rank %d exceeds the %d pivots of a %d×%d weight", r, min(w.rows, w.cols), w.rows,
			w.cols)
	}
	wf := make([]float32, w.rows*w.cols)
	if err := w.decodeRows(wf, 0, w.rows); err != nil {
		return nil, err
	}
	pl, d, u, err := pivotedLDU(w.rows, w.cols, wf, r)
	if err != nil {
		return nil, err
	}
	p := &lolduLinear{w: w, rank: r, l: make([]float32, len(pl)), u: make([]float32, len(u)), z: make([]float32, r),
		z0: make([]float32, r), sigma: []float32{float32(s.cfg.Scale())}, dz: make([]float32, r),
		dsigma: make([]float32, 1), c: make([]float32, r), h: make([]float32, s.rows*r), g: make([]float32, s.rows*r)}
	for i, v := range pl {
		p.l[i] = float32(v)
	}
	for i, v := range u {
		p.u[i] = float32(v)
	}
	for i, v := range d {
		p.z[i] = float32(v)
	}
	copy(p.z0, p.z)
	p.sigma0 = p.sigma[0]
	return p, nil
}

// pivotedLDU runs the first r steps of Gaussian elimination with partial pivoting (LAPACK's dgetf2, the LU that
// torch.linalg.lu computes) on the rows×cols matrix w, in float64, and returns the first r columns of P·L (rows×r,
// in w's row order: the permutation is already applied), the first r pivots d and the first r rows of U divided
// by their pivots (r×cols, unit upper trapezoidal), so that W = pl·diag(d)·u + a remainder that is zero on the r
// pivot rows and the first r columns. Later pivoting steps only reorder rows, so they do not change P·L_r.
func pivotedLDU(rows, cols int, w []float32, r int) (pl, d, u []float64, err error) {
	m := make([]float64, len(w))
	for i, v := range w {
		m[i] = float64(v)
	}
	order := make([]int, rows) // order[i] is the original index of the row now at position i
	for i := range order {
		order[i] = i
	}
	for k := range r {
		p := k
		for i := k + 1; i < rows; i++ {
			if math.Abs(m[i*cols+k]) > math.Abs(m[p*cols+k]) { // the first largest, as idamax
				p = i
			}
		}
		if m[p*cols+k] == 0 {
			return nil, nil, nil, fmt.Errorf("column %d has no nonzero pivot: the weight's leading %d columns are "+
				"rank-deficient, so no rank-%d LDU factorization exists", k, k+1, r)
		}
		if p != k {
			for c := range cols {
				m[k*cols+c], m[p*cols+c] = m[p*cols+c], m[k*cols+c]
			}
			order[k], order[p] = order[p], order[k]
		}
		piv := m[k*cols+k]
		for i := k + 1; i < rows; i++ {
			f := m[i*cols+k] / piv
			m[i*cols+k] = f // the multiplier, L's entry
			for c := k + 1; c < cols; c++ {
				m[i*cols+c] -= f * m[k*cols+c]
			}
		}
	}
	pl, d, u = make([]float64, rows*r), make([]float64, r), make([]float64, r*cols)
	for i := range rows {
		for k := range min(i+1, r) {
			v := m[i*cols+k]
			if k == i {
				v = 1
			}
			pl[order[i]*r+k] = v
		}
	}
	for k := range r {
		d[k] = m[k*cols+k]
		u[k*cols+k] = 1
		for c := k + 1; c < cols; c++ {
			u[k*cols+c] = m[k*cols+c] / d[k]
		}
	}
	return pl, d, u, nil
}

// lolduLinear computes y = x·Wᵀ + ((x·Uᵀ)⊙c)·Lᵀ with c = σ·z − σ₀·z₀: the frozen weight is the original one and
// the pass adds the change of the LDU part, the same function as W_res + σ·L·diag(z)·U.
type lolduLinear struct {
	w    *matrix
	rank int
	// l is P·L_r (rows×rank) and u is U_r (rank×cols), both frozen; z0 and sigma0 their initial scales.
	l, u   []float32
	z, z0  []float32
	sigma  []float32 // one value: a tensor, so that AdamW and checkpoints treat it as the others
	sigma0 float32
	dz     []float32
	dsigma []float32
	c      []float32 // σ·z − σ₀·z₀ of the last forward
	h, g   []float32 // x·Uᵀ and a scratch, n×rank each
}

func (p *lolduLinear) coefficients() {
	for i, z := range p.z {
		p.c[i] = p.sigma[0]*z - p.sigma0*p.z0[i]
	}
}

func (p *lolduLinear) forward(y, x []float32, n int, buf *[]float32) {
	rows, cols, r := p.w.rows, p.w.cols, p.rank
	frozenForward(p.w, y, x, n, buf)
	p.coefficients()
	h, g := p.h[:n*r], p.g[:n*r]
	kernels.Sgemm(false, true, n, r, cols, 1, x, cols, p.u, cols, 0, h, r)
	for i, v := range h {
		g[i] = v * p.c[i%r]
	}
	kernels.Sgemm(false, true, n, rows, r, 1, g, r, p.l, r, 1, y, rows)
}

// backward: with e = dy·L (n×r) and t_k = Σₙ e_nk·h_nk, dz_k += σ·t_k, dσ += Σ_k z_k·t_k, and
// dx += dy·W + (e⊙c)·U.
func (p *lolduLinear) backward(dx, dy, x []float32, n int, buf *[]float32) {
	rows, cols, r := p.w.rows, p.w.cols, p.rank
	frozenBackward(p.w, dx, dy, n, buf)
	h, e := p.h[:n*r], p.g[:n*r]
	kernels.Sgemm(false, false, n, r, rows, 1, dy, rows, p.l, r, 0, e, r)
	var ds float64
	for k := range r {
		var t float64
		for i := k; i < n*r; i += r {
			t += float64(e[i]) * float64(h[i])
		}
		p.dz[k] += p.sigma[0] * float32(t)
		ds += float64(p.z[k]) * t
	}
	p.dsigma[0] += float32(ds)
	for i := range e {
		e[i] *= p.c[i%r]
	}
	kernels.Sgemm(false, false, n, cols, r, 1, e, r, p.u, cols, 1, dx, cols)
}

func (p *lolduLinear) params() ([][]float32, [][]float32) {
	return [][]float32{p.z, p.sigma}, [][]float32{p.dz, p.dsigma}
}

// factors is the update against the original weight: A = U_r, B = P·L_r·diag(σ·z − σ₀·z₀).
func (p *lolduLinear) factors() (a, b []float32, rank int) {
	p.coefficients()
	b = make([]float32, len(p.l))
	for i, v := range p.l {
		b[i] = v * p.c[i%p.rank]
	}
	return p.u, b, p.rank
}
