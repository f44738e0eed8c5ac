//go:build amd64 && !noasm

package linalg

import "golang.org/x/sys/cpu"

// Implemented in dotaxpy_amd64.s.
//
//go:noescape
func dotAxpyAVX2(a, x, y *float64, n int, xr float64) float64

var hasAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

func dotAxpy(a, x, y []float64, xr float64) float64 {
	if !hasAVX2 || len(a) == 0 {
		return dotAxpyGo(a, x, y, xr)
	}
	_, _ = x[len(a)-1], y[len(a)-1] // the assembly reads len(a) elements of each
	return dotAxpyAVX2(&a[0], &x[0], &y[0], len(a), xr)
}
