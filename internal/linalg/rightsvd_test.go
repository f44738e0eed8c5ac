package linalg

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestRightSVD: the values and right vectors are those of SVD (vectors up to sign), tall and wide.
func TestRightSVD(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, dims := range [][2]int{{7, 19}, {19, 7}, {5, 5}} {
		m, n := dims[0], dims[1]
		a := make([]float64, m*n)
		for i := range a {
			a[i] = rng.NormFloat64()
		}
		_, s, vt, err := SVD(m, n, slices.Clone(a))
		if err != nil {
			t.Fatal(err)
		}
		s2, vt2, err := RightSVD(m, n, slices.Clone(a))
		if err != nil {
			t.Fatal(err)
		}
		for k := range s {
			var dot float64
			for j := range n {
				dot += vt[k*n+j] * vt2[k*n+j]
			}
			if math.Abs(s[k]-s2[k]) > 1e-12*s[0] || math.Abs(math.Abs(dot)-1) > 1e-10 {
				t.Errorf("%d×%d: σ%d %v vs %v, |v·v'| = %v", m, n, k, s[k], s2[k], math.Abs(dot))
			}
		}
	}
	if _, _, err := RightSVD(1, 2, []float64{1, math.NaN()}); err != ErrNotFinite {
		t.Errorf("NaN: error %v, want ErrNotFinite", err)
	}
}
