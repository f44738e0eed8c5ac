package linalg

import (
	"math"
	"math/rand/v2"
	"testing"
)

func randomMatrix(m, n int, seed uint64) []float64 {
	r := rand.New(rand.NewPCG(seed, 1))
	a := make([]float64, m*n)
	for i := range a {
		a[i] = r.NormFloat64()
	}
	return a
}

func maxAbsDiff(a, b []float64) float64 {
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(a[i]-b[i]))
	}
	return d
}

// TestSVD checks the defining properties: u·diag(s)·vt reproduces a, u and vt are orthonormal, s is descending and
// agrees with SingularValues; for tall, wide and square shapes.
func TestSVD(t *testing.T) {
	for _, sh := range [][2]int{{7, 3}, {3, 7}, {6, 6}, {40, 25}, {1, 5}, {5, 1}} {
		m, n := sh[0], sh[1]
		a := randomMatrix(m, n, uint64(m*100+n))
		orig := append([]float64(nil), a...)
		u, s, vt, err := SVD(m, n, append([]float64(nil), a...))
		if err != nil {
			t.Fatal(err)
		}
		k := min(m, n)
		us := append([]float64(nil), u...)
		for i := range m {
			for j := range k {
				us[i*k+j] *= s[j]
			}
		}
		if d := maxAbsDiff(Mul(false, false, m, n, k, us, vt), orig); d > 1e-12 {
			t.Errorf("%d×%d: reconstruction error %g", m, n, d)
		}
		eye := make([]float64, k*k)
		for i := range k {
			eye[i*k+i] = 1
		}
		if d := maxAbsDiff(Mul(true, false, k, k, m, u, u), eye); d > 1e-12 {
			t.Errorf("%d×%d: uᵀu differs from I by %g", m, n, d)
		}
		if d := maxAbsDiff(Mul(false, true, k, k, n, vt, vt), eye); d > 1e-12 {
			t.Errorf("%d×%d: vt·vtᵀ differs from I by %g", m, n, d)
		}
		for i := 1; i < k; i++ {
			if s[i] > s[i-1] {
				t.Errorf("%d×%d: singular values not descending: %v", m, n, s)
			}
		}
		sv, err := SingularValues(m, n, append([]float64(nil), a...))
		if err != nil {
			t.Fatal(err)
		}
		if d := maxAbsDiff(sv, s); d > 1e-12*s[0] {
			t.Errorf("%d×%d: SingularValues differs from SVD by %g", m, n, d)
		}
	}
}

// TestSingularValuesKnown checks a matrix whose singular values are known in closed form: diag(3,2,1) mixed by two
// rotations keeps them.
func TestSingularValuesKnown(t *testing.T) {
	c, s := math.Cos(0.3), math.Sin(0.3)
	rot := []float64{c, -s, 0, s, c, 0, 0, 0, 1}
	d := []float64{3, 0, 0, 0, 2, 0, 0, 0, 1}
	a := Mul(false, true, 3, 3, 3, Mul(false, false, 3, 3, 3, rot, d), rot)
	sv, err := SingularValues(3, 3, a)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxAbsDiff(sv, []float64{3, 2, 1}); d > 1e-14 {
		t.Errorf("singular values %v, want [3 2 1]", sv)
	}
	if _, err := SingularValues(2, 2, []float64{math.NaN(), 1, 1, 1}); err == nil {
		t.Error("SVD of a matrix with NaN: no error")
	}
}

func TestQR(t *testing.T) {
	for _, sh := range [][2]int{{9, 4}, {4, 4}, {30, 1}} {
		m, n := sh[0], sh[1]
		a := randomMatrix(m, n, uint64(m+n))
		orig := append([]float64(nil), a...)
		q, r := QR(m, n, a)
		if maxAbsDiff(a, orig) != 0 {
			t.Fatalf("%d×%d: QR modified its input", m, n)
		}
		for i := range n {
			for j := range i {
				if r[i*n+j] != 0 {
					t.Fatalf("%d×%d: r not upper triangular", m, n)
				}
			}
		}
		if d := maxAbsDiff(Mul(false, false, m, n, n, q, r), orig); d > 1e-12 {
			t.Errorf("%d×%d: q·r differs from a by %g", m, n, d)
		}
		eye := make([]float64, n*n)
		for i := range n {
			eye[i*n+i] = 1
		}
		if d := maxAbsDiff(Mul(true, false, n, n, m, q, q), eye); d > 1e-12 {
			t.Errorf("%d×%d: qᵀq differs from I by %g", m, n, d)
		}
	}
}

func TestTranspose(t *testing.T) {
	a := []float64{1, 2, 3, 4, 5, 6}
	if got := Transpose(2, 3, a); maxAbsDiff(got, []float64{1, 4, 2, 5, 3, 6}) != 0 {
		t.Errorf("Transpose = %v", got)
	}
}
