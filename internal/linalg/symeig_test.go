package linalg

import (
	"math"
	"testing"
)

// TestGramValuesMatchSVD compares the Gram route with Dgesvd on tall, wide and square matrices, including sizes that
// are not multiples of the panel width and a matrix with a planted wide spectrum.
func TestGramValuesMatchSVD(t *testing.T) {
	for _, sh := range [][2]int{{100, 100}, {130, 97}, {97, 300}, {257, 200}, {600, 250}} {
		m, n := sh[0], sh[1]
		a := randomMatrix(m, n, uint64(m*7+n))
		// Scale the columns over four decades so that the spectrum is far from flat.
		for i := range m {
			for j := range n {
				a[i*n+j] *= math.Pow(10, -2*float64(j)/float64(n))
			}
		}
		want, err := exactSingularValues(m, n, append([]float64(nil), a...))
		if err != nil {
			t.Fatal(err)
		}
		got, ok := gramValues(m, n, a)
		if !ok {
			t.Fatalf("%d×%d: Gram route declined (σ range %g..%g)", m, n, want[len(want)-1], want[0])
		}
		for i := range want {
			if e := math.Abs(got[i]-want[i]) / want[i]; e > 1e-5 {
				t.Errorf("%d×%d: σ%d = %.12g, Dgesvd %.12g (rel %g)", m, n, i, got[i], want[i], e)
			}
		}
	}
}

// TestGramValuesDeclines: a rank-deficient matrix is left to Dgesvd, so its zero singular values come out exact.
func TestGramValuesDeclines(t *testing.T) {
	m, n, r := 200, 150, 20
	b, c := randomMatrix(m, r, 1), randomMatrix(r, n, 2)
	a := Mul(false, false, m, n, r, b, c)
	if _, ok := gramValues(m, n, append([]float64(nil), a...)); ok {
		t.Fatal("Gram route accepted a rank-20 matrix")
	}
	s, err := SingularValues(m, n, a)
	if err != nil {
		t.Fatal(err)
	}
	if s[r-1] < 1 || s[r] > 1e-10*s[0] {
		t.Errorf("rank-%d matrix: σ%d = %g, σ%d = %g", r, r-1, s[r-1], r, s[r])
	}
}

// TestTridiagonalize checks the reduction itself: T has the eigenvalues of A (trace and Frobenius norm are
// invariants), for sizes around the panel width.
func TestTridiagonalize(t *testing.T) {
	for _, n := range []int{1, 2, 3, 31, 32, 33, 34, 65, 100} {
		x := randomMatrix(n, n, uint64(n))
		a := Mul(true, false, n, n, n, x, x)
		trace, frob := 0.0, 0.0
		for i := range n {
			trace += a[i*n+i]
		}
		for _, v := range a {
			frob += v * v
		}
		d, e := tridiagonalize(n, append([]float64(nil), a...))
		tt, tf := 0.0, 0.0
		for _, v := range d {
			tt += v
			tf += v * v
		}
		for _, v := range e {
			tf += 2 * v * v
		}
		if math.Abs(tt-trace) > 1e-10*trace || math.Abs(tf-frob) > 1e-10*frob {
			t.Errorf("n = %d: trace %g vs %g, ‖·‖F² %g vs %g", n, tt, trace, tf, frob)
		}
		if n > 2 {
			w := make([]float64, n)
			copy(w, d)
			if !impl.Dsterf(n, w, append([]float64(nil), e...)) {
				t.Fatal("Dsterf failed")
			}
			want, _ := exactSingularValues(n, n, x)
			for i := range n {
				if lam := want[n-1-i] * want[n-1-i]; math.Abs(w[i]-lam) > 1e-10*want[0]*want[0] {
					t.Errorf("n = %d: λ%d = %g, σ² = %g", n, i, w[i], lam)
					break
				}
			}
		}
	}
}
