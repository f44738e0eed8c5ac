// Package linalg is the small set of dense float64 factorizations lathe's numeric packages need: singular values,
// the thin SVD, the thin QR and products. Matrices are row-major slices with their dimensions passed alongside
// (stride = number of columns), the layout of tensor views, so no copy is needed to call in.
//
// The factorizations are gonum's pure-Go LAPACK (gonum.org/v1/gonum/lapack/gonum, itself row-major), chosen for
// correctness first; products go through internal/kernels. Every function leaves its inputs unchanged unless its
// documentation says it overwrites them.
package linalg

import (
	"errors"
	"fmt"

	"github.com/lathe-ml/lathe/internal/kernels"
	"gonum.org/v1/gonum/lapack"
	lapackgo "gonum.org/v1/gonum/lapack/gonum"
)

var impl lapackgo.Implementation

// ErrNotFinite is returned for a matrix holding NaN or ±Inf, which has no meaningful factorization.
var ErrNotFinite = errors.New("linalg: matrix holds NaN or Inf")

// ErrNoConvergence is returned when the bidiagonal QR iteration of an SVD does not converge (LAPACK's info > 0).
var ErrNoConvergence = errors.New("linalg: SVD did not converge")

func finite(a []float64) error {
	for _, v := range a {
		if v-v != 0 { // NaN or ±Inf
			return ErrNotFinite
		}
	}
	return nil
}

func checkDims(m, n int, a []float64) {
	if m < 0 || n < 0 || len(a) < m*n {
		panic(fmt.Sprintf("linalg: %d×%d matrix with %d elements", m, n, len(a)))
	}
}

// SingularValues returns the min(m,n) singular values of the m×n matrix a in descending order. a is overwritten.
// Matrices whose smaller side reaches gramMin go through the eigenvalues of their Gram matrix (symeig.go), unless
// their spectrum reaches below what that route resolves.
func SingularValues(m, n int, a []float64) ([]float64, error) {
	checkDims(m, n, a)
	k := min(m, n)
	if k == 0 {
		return nil, nil
	}
	if err := finite(a[:m*n]); err != nil {
		return nil, err
	}
	if k >= gramMin {
		if s, ok := gramValues(m, n, a); ok {
			return s, nil
		}
	}
	return exactSingularValues(m, n, a)
}

// exactSingularValues is LAPACK's Dgesvd without vectors: every σ to working precision. a is overwritten.
func exactSingularValues(m, n int, a []float64) ([]float64, error) {
	k := min(m, n)
	s := make([]float64, k)
	if !gesvd(lapack.SVDNone, lapack.SVDNone, m, n, a, s, nil, nil) {
		return nil, ErrNoConvergence
	}
	return s, nil
}

// SVD returns the thin singular value decomposition a = u·diag(s)·vt with k = min(m,n): u is m×k with orthonormal
// columns, s descending, vt is k×n with orthonormal rows. a is overwritten.
func SVD(m, n int, a []float64) (u, s, vt []float64, err error) {
	checkDims(m, n, a)
	k := min(m, n)
	if k == 0 {
		return nil, nil, nil, nil
	}
	if err := finite(a[:m*n]); err != nil {
		return nil, nil, nil, err
	}
	u, s, vt = make([]float64, m*k), make([]float64, k), make([]float64, k*n)
	if !gesvd(lapack.SVDStore, lapack.SVDStore, m, n, a, s, u, vt) {
		return nil, nil, nil, ErrNoConvergence
	}
	return u, s, vt, nil
}

func gesvd(jobU, jobVT lapack.SVDJob, m, n int, a, s, u, vt []float64) bool {
	k := min(m, n)
	ldu, ldvt := max(1, k), max(1, n)
	query := []float64{0}
	impl.Dgesvd(jobU, jobVT, m, n, a, max(1, n), s, u, ldu, vt, ldvt, query, -1)
	work := make([]float64, int(query[0]))
	return impl.Dgesvd(jobU, jobVT, m, n, a, max(1, n), s, u, ldu, vt, ldvt, work, len(work))
}

// QR returns the thin QR factorization a = q·r of an m×n matrix with m ≥ n: q is m×n with orthonormal columns and
// r is n×n upper triangular. a is not modified.
func QR(m, n int, a []float64) (q, r []float64) {
	checkDims(m, n, a)
	if m < n {
		panic(fmt.Sprintf("linalg: QR of a %d×%d matrix needs rows ≥ columns", m, n))
	}
	q = append([]float64(nil), a[:m*n]...)
	r = make([]float64, n*n)
	if n == 0 {
		return q, r
	}
	tau := make([]float64, n)
	query := []float64{0}
	impl.Dgeqrf(m, n, q, n, tau, query, -1)
	work := make([]float64, max(int(query[0]), n))
	impl.Dgeqrf(m, n, q, n, tau, work, len(work))
	for i := range n {
		copy(r[i*n+i:(i+1)*n], q[i*n+i:(i+1)*n])
	}
	impl.Dorgqr(m, n, n, q, n, tau, query, -1)
	if need := int(query[0]); need > len(work) {
		work = make([]float64, need)
	}
	impl.Dorgqr(m, n, n, q, n, tau, work, len(work))
	return q, r
}

// Mul returns c = op(a)·op(b) where op(x) is x or xᵀ, op(a) is m×k and op(b) is k×n; a is stored m×k (or k×m when
// transA) and b k×n (or n×k when transB).
func Mul(transA, transB bool, m, n, k int, a, b []float64) []float64 {
	c := make([]float64, m*n)
	lda, ldb := k, n
	if transA {
		lda = m
	}
	if transB {
		ldb = k
	}
	kernels.Dgemm(transA, transB, m, n, k, 1, a, max(1, lda), b, max(1, ldb), 0, c, max(1, n))
	return c
}

// Transpose returns the n×m transpose of the m×n matrix a.
func Transpose(m, n int, a []float64) []float64 {
	checkDims(m, n, a)
	t := make([]float64, m*n)
	for i := range m {
		for j, v := range a[i*n : (i+1)*n] {
			t[j*m+i] = v
		}
	}
	return t
}
