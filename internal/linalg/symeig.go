package linalg

import (
	"math"
	"runtime"
	"slices"
	"sync"

	"github.com/lathe-ml/lathe/internal/kernels"
)

// Singular values by the eigenvalues of the Gram matrix. gonum's Dgesvd is a faithful LAPACK port but runs its
// bidiagonalization on level-2 BLAS in pure Go: minutes for a 4096×4096 layer. When only values are wanted, σᵢ² are
// the eigenvalues of G = AᵀA (or AAᵀ, whichever is smaller), which costs one symmetric rank-k product on the fast
// GEMM, a blocked Householder tridiagonalization whose trailing updates are GEMMs too (LAPACK's dsytrd/dlatrd
// scheme), and gonum's O(n²) tridiagonal QL (Dsterf).
//
// The price is precision at the bottom of the spectrum: an eigenvalue of G is known to about ε·λmax, so a σ below
// about √ε·σmax loses relative accuracy. gramValues therefore reports failure when the smallest eigenvalue is below
// gramTrust·λmax, and SingularValues falls back to Dgesvd for such nearly rank-deficient matrices; above the bound
// every σ is accurate to better than 1e-5 relative, and every σ of the fallback to working precision.

// gramMin is the smaller dimension from which the Gram route is taken; below it Dgesvd is fast anyway.
const gramMin = 96

// gramTrust bounds λmin/λmax for trusting the Gram route. The eigenvalue errors of the reduction are of order
// ε·λmax (measured: below 1e-16·λmax on Gaussian 2048×2048 matrices), so λ ≥ 1e-11·λmax keeps every σ within
// about 1e-5 relative — and every σ far above numpy's matrix_rank tolerance, so the rank is exact too.
const gramTrust = 1e-11

// tridiagBlock is the panel width of the tridiagonalization: wide enough for the trailing GEMMs to run near peak,
// narrow enough that the panel's corrections stay cheap.
const tridiagBlock = 32

// gramValues returns the singular values of the m×n matrix a, descending, via the eigenvalues of its Gram matrix,
// or ok = false when the spectrum reaches below what that route resolves.
func gramValues(m, n int, a []float64) (s []float64, ok bool) {
	k := min(m, n)
	g := make([]float64, k*k)
	// n ≤ m: G = AᵀA (n×n); else G = AAᵀ (m×m). Both have the σᵢ² as eigenvalues.
	kernels.Dsyrk(n <= m, k, max(m, n), 1, a, n, 0, g, k)
	d, e := tridiagonalize(k, g)
	if !impl.Dsterf(k, d, e) {
		return nil, false
	}
	lmax := slices.Max(d)
	if !(lmax > 0) || slices.Min(d) < gramTrust*lmax {
		return nil, false
	}
	s = make([]float64, k)
	for i, l := range d {
		s[k-1-i] = math.Sqrt(l) // Dsterf sorts ascending
	}
	return s, true
}

// tridiagonalize reduces the symmetric n×n matrix a (row-major; only the upper triangle is read, and a is
// overwritten) to a tridiagonal T = Qᵀ·a·Q by Householder reflections, and returns T's diagonal d and off-diagonal
// e. Rows are reduced in panels of tridiagBlock: within a panel each reflector is generated from its row brought up
// to date with the panel's earlier reflectors (LAPACK dlatrd, transposed to the upper triangle of a row-major
// matrix, where a row is contiguous), and after the panel the trailing matrix takes all of them in one update
// A₂₂ −= V·Wᵀ + W·Vᵀ: GEMMs over the upper triangle.
func tridiagonalize(n int, a []float64) (d, e []float64) {
	d, e = make([]float64, n), make([]float64, max(n-1, 0))
	if n == 0 {
		return d, e
	}
	// vw holds a panel's vectors as rows of length 2·nb, [V | W], and wv the same rows swapped, so that the trailing
	// update is the GEMM [V W]·[W V]ᵀ.
	vw := make([]float64, n*2*tridiagBlock)
	wv := make([]float64, n*2*tridiagBlock)
	y := make([]float64, n)
	sy := newSymv(n)
	t1, t2 := make([]float64, tridiagBlock), make([]float64, tridiagBlock)
	for k0 := 0; k0 < n-2; k0 += tridiagBlock {
		nb := min(tridiagBlock, n-2-k0)
		ld := 2 * nb
		clear(vw[:n*ld])
		for i := range nb {
			c := k0 + i
			// Bring row c (columns c..n-1) up to date with the panel's reflectors 0..i-1:
			// a[c][j] −= Σₖ V[j][k]·W[c][k] + W[j][k]·V[c][k].
			vc, wc := vw[c*ld:c*ld+i], vw[c*ld+nb:c*ld+nb+i]
			row := a[c*n : (c+1)*n]
			for j := c; j < n && i > 0; j++ {
				p := vw[j*ld:]
				s := 0.0
				for k := range i {
					s += p[k]*wc[k] + p[nb+k]*vc[k]
				}
				row[j] -= s
			}
			d[c] = row[c]
			// Reflector H = I − τ·v·vᵀ with v[0] = 1 mapping a[c][c+1:] to β·e₁; v overwrites the row.
			x := row[c+1:]
			beta, tau := householder(x)
			e[c] = beta
			if tau == 0 {
				continue // row already reduced: the panel's V and W columns stay zero
			}
			// y = τ·A₂₂·v, with A₂₂ = a[c+1:, c+1:] as stored (not yet updated by this panel) ...
			y := y[:len(x)]
			sy.mul(a, n, c+1, x, y, tau)
			// ... minus the panel's pending update applied to v: τ·(V·(Wᵀv) + W·(Vᵀv)).
			clear(t1[:i])
			clear(t2[:i])
			for r, xr := range x {
				p := vw[(c+1+r)*ld:]
				for k := range i {
					t1[k] += p[nb+k] * xr // Wᵀv
					t2[k] += p[k] * xr    // Vᵀv
				}
			}
			dot := 0.0
			for r, xr := range x {
				p := vw[(c+1+r)*ld:]
				s := 0.0
				for k := range i {
					s += p[k]*t1[k] + p[nb+k]*t2[k]
				}
				y[r] -= tau * s
				dot += y[r] * xr
			}
			alpha := -0.5 * tau * dot
			for r, xr := range x {
				y[r] += alpha * xr
				p := vw[(c+1+r)*ld:]
				p[i], p[nb+i] = xr, y[r]
			}
		}
		// Trailing update of rows and columns s.. with all nb reflectors, one block row of the upper triangle at a
		// time.
		s := k0 + nb
		for r := s; r < n; r++ {
			src, dst := vw[r*ld:r*ld+ld], wv[r*ld:r*ld+ld]
			copy(dst[:nb], src[nb:])
			copy(dst[nb:], src[:nb])
		}
		for i0 := s; i0 < n; i0 += trailingBlock {
			rows := min(trailingBlock, n-i0)
			kernels.Dgemm(false, true, rows, n-i0, ld, -1, vw[i0*ld:], ld, wv[i0*ld:], ld, 1, a[i0*n+i0:], n)
		}
	}
	for c := max(n-2, 0); c < n; c++ {
		d[c] = a[c*n+c]
	}
	if n >= 2 {
		e[n-2] = a[(n-2)*n+n-1]
	}
	return d, e
}

// trailingBlock is the height of the block rows of the trailing update: the part of each below the diagonal is
// wasted work, 1/(2·blocks) of the total, against GEMMs large enough to run at speed.
const trailingBlock = 256

// symv multiplies by a symmetric matrix stored in the upper triangle, reading each element once: row r contributes
// its dot product with x to y[r] and, as an axpy, a[r][j]·x[r] to every y[j], j > r. Rows are split between
// goroutines in two ranges of equal work, each adding into its own copy of y.
type symv struct {
	parts [][]float64
}

// symvParallelMin is the size from which the product is split across goroutines.
const symvParallelMin = 256

func newSymv(n int) *symv {
	s := &symv{parts: make([][]float64, runtime.GOMAXPROCS(0))}
	for i := range s.parts {
		s.parts[i] = make([]float64, n)
	}
	return s
}

// mul computes y = alpha·A[s:, s:]·x for the n×n row-major matrix a, from its upper triangle.
func (sy *symv) mul(a []float64, n, s int, x, y []float64, alpha float64) {
	m := n - s
	rows := func(lo, hi int, acc []float64) {
		for r := lo; r < hi; r++ {
			row := a[(s+r)*n+s+r : (s+r)*n+n]
			acc[r] += row[0]*x[r] + dotAxpy(row[1:], x[r+1:], acc[r+1:], x[r])
		}
	}
	workers := len(sy.parts)
	if m < symvParallelMin || workers == 1 {
		clear(y)
		rows(0, m, y)
	} else {
		var wg sync.WaitGroup
		lo := 0
		for w := range workers {
			// Row r of the triangle holds m−r elements: split where the remaining area is (workers−w−1)/workers.
			hi := m
			if w < workers-1 {
				hi = m - int(float64(m)*math.Sqrt(float64(workers-w-1)/float64(workers)))
			}
			acc, from := sy.parts[w][:m], lo
			clear(acc)
			wg.Go(func() { rows(from, hi, acc) })
			lo = hi
		}
		wg.Wait()
		copy(y, sy.parts[0][:m])
		for _, p := range sy.parts[1:] {
			for i, v := range p[:m] {
				y[i] += v
			}
		}
	}
	for i := range y {
		y[i] *= alpha
	}
}

// dotAxpyGo returns Σ a[j]·x[j] and adds a[j]·xr to y[j], in one pass over a; four partial sums hide the latency
// of the additions. dotAxpy is this or, on amd64 with AVX2 and FMA, the assembly version (dotaxpy_amd64.s).
func dotAxpyGo(a, x, y []float64, xr float64) float64 {
	var s0, s1, s2, s3 float64
	j := 0
	for ; j+4 <= len(a); j += 4 {
		a0, a1, a2, a3 := a[j], a[j+1], a[j+2], a[j+3]
		s0 += a0 * x[j]
		s1 += a1 * x[j+1]
		s2 += a2 * x[j+2]
		s3 += a3 * x[j+3]
		y[j] += a0 * xr
		y[j+1] += a1 * xr
		y[j+2] += a2 * xr
		y[j+3] += a3 * xr
	}
	for ; j < len(a); j++ {
		s0 += a[j] * x[j]
		y[j] += a[j] * xr
	}
	return (s0 + s1) + (s2 + s3)
}

// householder turns x into the Householder vector v (v[0] = 1) of the reflector H = I − τ·v·vᵀ with H·x = β·e₁
// (LAPACK dlarfg), and returns β and τ; τ = 0 when x[1:] is already zero.
func householder(x []float64) (beta, tau float64) {
	alpha := x[0]
	scale := 0.0
	for _, v := range x[1:] {
		scale = max(scale, math.Abs(v))
	}
	if scale == 0 {
		x[0] = 1
		return alpha, 0
	}
	ss := 0.0
	for _, v := range x[1:] {
		ss += (v / scale) * (v / scale)
	}
	xnorm := scale * math.Sqrt(ss)
	beta = -math.Copysign(math.Hypot(alpha, xnorm), alpha)
	tau = (beta - alpha) / beta
	f := 1 / (alpha - beta)
	for i := range x[1:] {
		x[1+i] *= f
	}
	x[0] = 1
	return beta, tau
}
