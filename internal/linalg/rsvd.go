package linalg

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/lathe-ml/lathe/internal/kernels"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/lapack"
)

// RandomizedSVD returns the leading k singular triplets of the m×n float32 matrix a (row-major, not modified) by
// randomized subspace iteration: Halko, Martinsson and Tropp, "Finding structure with randomness" (SIAM Review
// 2011), algorithm 4.4, which is also what torch.svd_lowrank computes. A Gaussian test matrix of q columns
// (k ≤ q ≤ min(m, n); the extra columns are oversampling) is multiplied into a, then iters times through aᵀ and a
// again, each product re-orthonormalized so that small singular values are not lost to rounding; the q×n
// projection B = Qᵀ·a is then decomposed exactly. When q = min(m, n) the sample spans the whole range of a, the
// iterations are skipped, and the result is the truncated SVD up to rounding.
//
// Everything that scales with m·n runs through internal/kernels: the products in float32 (a is float32 already),
// the orthonormalizations as Cholesky QR in float64 (CholeskyQR2: Yamamoto et al., ETNA 44, 2015), which falls back
// to Householder QR when the sample is too ill-conditioned for it. B is decomposed through the eigenvectors of the
// q×q matrix B·Bᵀ, so singular values far below σ₁ (under about 1e-8·σ₁) lose relative accuracy and the rows of vt
// belonging to σ = 0 are zero. u is m×k, s descending, vt k×n. The Gaussian draw comes from a PCG seeded with seed,
// so equal arguments give equal results on a given machine.
//
// Accuracy depends on the spectrum: the error of the k-th triplet shrinks like (σ_{q+1}/σ_k)^(2·iters+1), so a
// clear gap after σ_k makes the result agree with the full SVD to rounding, while a flat spectrum needs more
// iterations or oversampling.
func RandomizedSVD(m, n int, a []float32, k, q, iters int, seed uint64) (u, s, vt []float64, err error) {
	if m < 0 || n < 0 || len(a) < m*n {
		panic(fmt.Sprintf("linalg: %d×%d matrix with %d elements", m, n, len(a)))
	}
	mn := min(m, n)
	if k < 1 || k > mn || q < k || q > mn || iters < 0 {
		panic(fmt.Sprintf("linalg: randomized SVD of a %d×%d matrix with k=%d, q=%d, iters=%d", m, n, k, q, iters))
	}
	for _, v := range a[:m*n] {
		if v-v != 0 {
			return nil, nil, nil, ErrNotFinite
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	omega := make([]float32, n*q)
	for i := range omega {
		omega[i] = float32(rng.NormFloat64())
	}
	y := make([]float32, m*q) // a·(n×q)
	z := make([]float32, n*q) // aᵀ·(m×q)
	kernels.Sgemm(false, false, m, q, n, 1, a, n, omega, q, 0, y, q)
	// The iterations only need a well-conditioned basis to multiply by next, so one Cholesky QR pass does; the
	// basis B is formed from is orthonormal to working precision.
	final := q == mn || iters == 0
	qm := orthonormal(m, q, y, final)
	if q < mn {
		for it := range iters {
			kernels.Sgemm(true, false, n, q, m, 1, a, n, toFloat32(qm), q, 0, z, q)
			qn := orthonormal(n, q, z, false)
			kernels.Sgemm(false, false, m, q, n, 1, a, n, toFloat32(qn), q, 0, y, q)
			qm = orthonormal(m, q, y, it == iters-1)
		}
	}
	// Bᵀ = aᵀ·Q (n×q), formed so that the product reads a in the same orientation as above.
	kernels.Sgemm(true, false, n, q, m, 1, a, n, toFloat32(qm), q, 0, z, q)
	bt := toFloat64(z)
	// B·Bᵀ = E·diag(λ)·Eᵀ: the left singular vectors of B are E, its singular values √λ, and V = Bᵀ·E·diag(1/σ).
	g := make([]float64, q*q)
	kernels.Dsyrk(true, q, n, 1, bt, q, 0, g, q)
	lambda := make([]float64, q)
	work := []float64{0}
	impl.Dsyev(lapack.EVCompute, blas.Upper, q, g, q, lambda, work, -1)
	work = make([]float64, int(work[0]))
	if !impl.Dsyev(lapack.EVCompute, blas.Upper, q, g, q, lambda, work, len(work)) {
		return nil, nil, nil, ErrNoConvergence
	}
	// Dsyev sorts ascending; the leading k are the last k columns of g, taken in reverse.
	e := make([]float64, q*k)
	s = make([]float64, k)
	for j := range k {
		src := q - 1 - j
		s[j] = math.Sqrt(max(lambda[src], 0))
		for i := range q {
			e[i*k+j] = g[i*q+src]
		}
	}
	u = Mul(false, false, m, k, q, qm, e)
	v := Mul(false, false, n, k, q, bt, e) // Bᵀ·E = V·diag(σ)
	tiny := s[0] * 1e-12
	vt = make([]float64, k*n)
	for j := range k {
		if s[j] <= tiny {
			continue
		}
		for i := range n {
			vt[j*n+i] = v[i*k+j] / s[j]
		}
	}
	return u, s, vt, nil
}

// orthonormal returns, in float64, a basis of the span of the columns of the r×c matrix x (r ≥ c): orthonormal to
// 1e-10 when exact is set, and at least well-conditioned otherwise. CholeskyQR2 (R from the Cholesky factor of xᵀx,
// then x·R⁻¹, twice) costs a few products on the fast kernels; when it fails or, for an exact basis, falls short
// (a rank-deficient or badly conditioned sample, whose Gram matrix loses the small directions), Householder QR is
// used instead.
func orthonormal(r, c int, x []float32, exact bool) []float64 {
	x64 := toFloat64(x[:r*c])
	if q, ok := choleskyQR(r, c, x64); ok {
		if !exact {
			return q
		}
		if q, ok = choleskyQR(r, c, q); ok && orthonormalTo(r, c, q, 1e-10) {
			return q
		}
	}
	q, _ := QR(r, c, x64)
	return q
}

// choleskyQR returns x·R⁻¹ with RᵀR = xᵀx, or false when the Cholesky factorization fails.
func choleskyQR(r, c int, x []float64) ([]float64, bool) {
	g := make([]float64, c*c)
	kernels.Dsyrk(true, c, r, 1, x, c, 0, g, c)
	if !impl.Dpotrf(blas.Upper, c, g, c) || !impl.Dtrtri(blas.Upper, blas.NonUnit, c, g, c) {
		return nil, false
	}
	for i := 1; i < c; i++ {
		clear(g[i*c : i*c+i]) // Dpotrf and Dtrtri leave the lower triangle as it was
	}
	return Mul(false, false, r, c, c, x, g), true
}

// orthonormalTo reports whether the columns of the r×c matrix q are orthonormal to within tol.
func orthonormalTo(r, c int, q []float64, tol float64) bool {
	g := make([]float64, c*c)
	kernels.Dsyrk(true, c, r, 1, q, c, 0, g, c)
	for i := range c {
		g[i*c+i]--
	}
	for _, v := range g {
		if math.Abs(v) > tol || v != v {
			return false
		}
	}
	return true
}

func toFloat64(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}

func toFloat32(x []float64) []float32 {
	y := make([]float32, len(x))
	for i, v := range x {
		y[i] = float32(v)
	}
	return y
}
