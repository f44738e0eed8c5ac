//go:build amd64 && !noasm

package linalg

import (
	"math"
	"testing"
)

// TestDotAxpyAVX2 runs the assembly and the Go version on the same inputs, for every length that exercises the
// 16-, 4- and 1-element paths.
func TestDotAxpyAVX2(t *testing.T) {
	if !hasAVX2 {
		t.Skip("CPU without AVX2 and FMA: only the Go version runs")
	}
	for n := 0; n <= 70; n++ {
		a, x := randomMatrix(1, n, uint64(n)), randomMatrix(1, n, uint64(n+100))
		y1, y2 := randomMatrix(1, n, 7), randomMatrix(1, n, 7)
		s1 := dotAxpy(a, x, y1, 0.75)
		s2 := dotAxpyGo(a, x, y2, 0.75)
		if math.Abs(s1-s2) > 1e-13*(1+math.Abs(s2)) {
			t.Errorf("n = %d: dot %v (AVX2) vs %v (Go)", n, s1, s2)
		}
		for i := range y1 {
			if math.Abs(y1[i]-y2[i]) > 1e-15*(1+math.Abs(y2[i])) {
				t.Errorf("n = %d: y[%d] %v (AVX2) vs %v (Go)", n, i, y1[i], y2[i])
				break
			}
		}
	}
}
