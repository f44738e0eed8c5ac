package linalg

import "gonum.org/v1/gonum/lapack"

// RightSVD is SVD without u: the singular values s (descending) and the k×n right singular vectors vt, k =
// min(m,n). Leaving the left vectors out spares the bidiagonal QR iteration their rotations, which for a wide
// matrix are most of its work (EVA's principal directions need only vt). a is overwritten.
func RightSVD(m, n int, a []float64) (s, vt []float64, err error) {
	checkDims(m, n, a)
	k := min(m, n)
	if k == 0 {
		return nil, nil, nil
	}
	if err := finite(a[:m*n]); err != nil {
		return nil, nil, err
	}
	s, vt = make([]float64, k), make([]float64, k*n)
	if !gesvd(lapack.SVDNone, lapack.SVDStore, m, n, a, s, nil, vt) {
		return nil, nil, ErrNoConvergence
	}
	return s, vt, nil
}
