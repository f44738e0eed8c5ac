package linalg

import (
	"fmt"
	"testing"
)

// BenchmarkSingularValues compares the two values-only routes on Gaussian float64 matrices of the shapes:
// "gram" (SingularValues: Gram matrix, blocked tridiagonalization, Dsterf) and "gesvd" (gonum's Dgesvd).
func BenchmarkSingularValues(b *testing.B) {
	for _, sh := range [][2]int{{1024, 1024}, {2048, 2048}, {4096, 1024}} {
		m, n := sh[0], sh[1]
		a := randomMatrix(m, n, 1)
		work := make([]float64, len(a))
		for _, route := range []struct {
			name string
			f    func(m, n int, a []float64) ([]float64, error)
		}{{"gram", SingularValues}, {"gesvd", exactSingularValues}} {
			b.Run(fmt.Sprintf("%s/%dx%d", route.name, m, n), func(b *testing.B) {
				for b.Loop() {
					copy(work, a)
					if _, err := route.f(m, n, work); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
