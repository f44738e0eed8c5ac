package linalg

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// lowRankPlusNoise is U·diag(s)·Vᵀ for random orthonormal U, V and the given singular values, plus noise of
// spectral norm about noise.
func lowRankPlusNoise(m, n int, s []float64, noise float64, seed uint64) []float32 {
	r := len(s)
	u, _ := QR(m, r, randomMatrix(m, r, seed))
	v, _ := QR(n, r, randomMatrix(n, r, seed+1))
	us := append([]float64(nil), u...)
	for i := range m {
		for j := range r {
			us[i*r+j] *= s[j]
		}
	}
	a := Mul(false, true, m, n, r, us, v)
	rng := rand.New(rand.NewPCG(seed+2, 3))
	out := make([]float32, m*n)
	for i, x := range a {
		out[i] = float32(x + noise*rng.NormFloat64()/math.Sqrt(float64(m+n)))
	}
	return out
}

// TestRandomizedSVDMatchesFull: with a gap after σ_k the randomized triplets agree with the full SVD: singular
// values to float32 rounding, and the rank-k approximations (which do not depend on singular vector signs).
func TestRandomizedSVDMatchesFull(t *testing.T) {
	for _, c := range []struct{ m, n, k int }{{200, 120, 10}, {90, 300, 6}, {64, 64, 16}} {
		t.Run(fmt.Sprintf("%dx%d", c.m, c.n), func(t *testing.T) {
			s := make([]float64, c.k)
			for i := range s {
				s[i] = 10 - 9*float64(i)/float64(c.k)
			}
			a := lowRankPlusNoise(c.m, c.n, s, 1e-3, uint64(c.m))
			a64 := make([]float64, len(a))
			for i, x := range a {
				a64[i] = float64(x)
			}
			fu, fs, fvt, err := SVD(c.m, c.n, append([]float64(nil), a64...))
			if err != nil {
				t.Fatal(err)
			}
			u, rs, vt, err := RandomizedSVD(c.m, c.n, a, c.k, min(2*c.k, c.m, c.n), 2, 1)
			if err != nil {
				t.Fatal(err)
			}
			for i := range c.k {
				if math.Abs(rs[i]-fs[i]) > 1e-5*fs[0] {
					t.Errorf("σ_%d = %v, full SVD %v", i, rs[i], fs[i])
				}
			}
			approx := func(u, s, vt []float64, cols int) []float64 {
				us := make([]float64, c.m*c.k)
				for i := range c.m {
					for j := range c.k {
						us[i*c.k+j] = u[i*cols+j] * s[j]
					}
				}
				return Mul(false, false, c.m, c.n, c.k, us, vt[:c.k*c.n])
			}
			if d := maxAbsDiff(approx(u, rs, vt, c.k), approx(fu, fs, fvt, min(c.m, c.n))); d > 1e-5 {
				t.Errorf("rank-%d approximations differ by %g", c.k, d)
			}
			// Same arguments, same result.
			_, rs2, _, _ := RandomizedSVD(c.m, c.n, a, c.k, min(2*c.k, c.m, c.n), 2, 1)
			for i := range rs {
				if rs[i] != rs2[i] {
					t.Fatal("two runs differ")
				}
			}
		})
	}
	if _, _, _, err := RandomizedSVD(2, 2, []float32{1, float32(math.Inf(1)), 0, 1}, 1, 1, 1, 0); err != ErrNotFinite {
		t.Errorf("Inf input: %v", err)
	}
}

// BenchmarkRandomizedSVD measures a LIFT-sized rank-128 truncated SVD (q = 256, eight subspace iterations, lathe's default) against
// the full SVD it replaces.
func BenchmarkRandomizedSVD(b *testing.B) {
	for _, sh := range [][2]int{{1024, 1024}, {2048, 2048}} {
		m, n := sh[0], sh[1]
		a64 := randomMatrix(m, n, 1)
		a := make([]float32, len(a64))
		for i, x := range a64 {
			a[i] = float32(x)
		}
		b.Run(fmt.Sprintf("randomized/%dx%d", m, n), func(b *testing.B) {
			for b.Loop() {
				if _, _, _, err := RandomizedSVD(m, n, a, 128, 256, 8, 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
