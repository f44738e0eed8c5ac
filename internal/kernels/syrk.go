package kernels

import "fmt"

// syrkBlock is the row-block height of the symmetric product: blocks right of the diagonal are computed, the
// rest mirrored, so the work is (1 + 1/blocks)/2 of a full GEMM while each block is still a large GEMM.
const syrkBlock = 256

// Ssyrk computes the symmetric rank-k update C = alpha·A·Aᵀ + beta·C (trans false, A stored n×k) or
// C = alpha·Aᵀ·A + beta·C (trans true, A stored k×n: the Gram matrix of A's columns, WᵀW), for a row-major
// n×n C. Only the upper triangle of C is read; both triangles are written, so C comes out exactly symmetric.
func Ssyrk(trans bool, n, k int, alpha float32, a []float32, lda int, beta float32, c []float32, ldc int) {
	syrk(sgemmImpl, trans, n, k, alpha, a, lda, beta, c, ldc)
}

// Dsyrk is Ssyrk for float64.
func Dsyrk(trans bool, n, k int, alpha float64, a []float64, lda int, beta float64, c []float64, ldc int) {
	syrk(dgemmImpl, trans, n, k, alpha, a, lda, beta, c, ldc)
}

func syrk[T float](im *gemmImpl[T], trans bool, n, k int, alpha T, a []T, lda int, beta T, c []T, ldc int) {
	if n < 0 || k < 0 {
		panic(fmt.Sprintf("kernels: syrk: negative dimension n=%d k=%d", n, k))
	}
	if trans {
		checkMatrix("A", a, k, n, lda)
	} else {
		checkMatrix("A", a, n, k, lda)
	}
	checkMatrix("C", c, n, n, ldc)
	for i0 := 0; i0 < n; i0 += syrkBlock {
		rows := min(syrkBlock, n-i0)
		// Row block i0 of C, from the diagonal to the right edge: op(A)[i0:i0+rows, :]·op(A)[i0:n, :]ᵀ.
		if trans {
			gemm(im, true, false, rows, n-i0, k, alpha, a[i0:], lda, a[i0:], lda, beta, c[i0*ldc+i0:], ldc)
		} else {
			gemm(im, false, true, rows, n-i0, k, alpha, a[i0*lda:], lda, a[i0*lda:], lda, beta, c[i0*ldc+i0:],
				ldc)
		}
	}
	for i := 1; i < n; i++ {
		for j := 0; j < i; j++ {
			c[i*ldc+j] = c[j*ldc+i]
		}
	}
}
