package spectral

import "testing"

func decompose(t *testing.T, rows, cols int, data []float64) *SVD {
	t.Helper()
	s, err := Decompose(&Matrix{Rows: rows, Cols: cols, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestIntrudersOracle is §8.4: W₀ = [[3,0],[0,2],[0,0],[0,0]] and W_t with a 10 added at (2,0): σ(W_t) = (√109, 2),
// the top left vector of W_t is (0.287…, 0, 0.958…, 0), whose best |cos| with W₀'s is 0.2873478855663454; the
// second matches exactly.
func TestIntrudersOracle(t *testing.T) {
	base := decompose(t, 4, 2, []float64{3, 0, 0, 2, 0, 0, 0, 0})
	tuned := decompose(t, 4, 2, []float64{3, 0, 0, 2, 10, 0, 0, 0})
	if relErr(tuned.S[0], 10.440306508910550) > 1e-15 || relErr(tuned.S[1], 2) > 1e-15 {
		t.Errorf("σ(W_t) = %v", tuned.S)
	}
	for _, c := range []struct {
		eps  float64
		want int
	}{{0.5, 1}, {0.25, 0}, {0.3, 1}} {
		got, err := FindIntruders(base, tuned, IntruderOptions{K: 10, Epsilon: c.eps})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Left) != c.want {
			t.Errorf("ε = %g: %d intruders, want %d", c.eps, len(got.Left), c.want)
		}
		if relErr(got.MaxCosLeft[0], 0.2873478855663454) > 1e-14 || relErr(got.MaxCosLeft[1], 1) > 1e-14 {
			t.Errorf("max |cos| = %v, want [0.2873478855663454 1]", got.MaxCosLeft)
		}
		// The right singular vectors of both are e₁, e₂: nothing intrudes in the input space.
		if len(got.Right) != 0 {
			t.Errorf("ε = %g: right intruders %v", c.eps, got.Right)
		}
	}
	same, _ := FindIntruders(base, base, IntruderOptions{K: 10, Epsilon: 1})
	if len(same.Left)+len(same.Right) != 0 {
		t.Errorf("W_t = W₀: intruders %v %v", same.Left, same.Right)
	}
	if _, err := FindIntruders(base, decompose(t, 2, 4, []float64{1, 0, 0, 0, 0, 1, 0, 0}), DefaultIntruderOptions()); err == nil {
		t.Error("shape mismatch accepted")
	}
}

// intruderCase builds a base W and a LoRA pair whose update adds a direction far from W's top singular vectors.
func intruderCase() (w, b, a *Matrix, scale float64) {
	w = gaussian(60, 40, 21)
	b, a = gaussian(60, 4, 22), gaussian(4, 40, 23)
	for i := range b.Data {
		b.Data[i] *= 3
	}
	return w, b, a, 2
}

// TestReduceIntruders compares the factored mitigation with PEFT's dense procedure (form W_mit, divide the update by
// the scaling, dense SVD, keep rank r), and checks that λ = 1 and an intruder-free update leave the adapter alone.
func TestReduceIntruders(t *testing.T) {
	w, b, a, scale := intruderCase()
	opts := DefaultMitigationOptions()
	nb, na, found, err := ReduceIntruders(w, b, a, scale, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(found.Left) == 0 {
		t.Fatal("test case has no intruders")
	}
	got, _ := nb.Mul(na)

	// PEFT, densely.
	delta, _ := Product(b, a, scale)
	merged, _ := delta.Add(w)
	m, _ := Decompose(merged)
	mit := merged.Clone()
	for _, j := range found.Left {
		for r := range mit.Rows {
			for c := range mit.Cols {
				mit.Data[r*mit.Cols+c] += (opts.Lambda - 1) * m.U.Data[r*m.U.Cols+j] * m.S[j] * m.Vt.Data[j*m.Vt.Cols+c]
			}
		}
	}
	dw, _ := mit.Sub(w)
	for i := range dw.Data {
		dw.Data[i] /= scale
	}
	d, _ := Decompose(dw)
	for j := 4; j < len(d.S); j++ { // keep the adapter's rank
		d.S[j] = 0
	}
	want := d.reconstruct()
	diff, _ := got.Sub(want)
	if e := maxAbs(diff) / maxAbs(want); e > 1e-10 {
		t.Errorf("factored mitigation differs from the dense one by %g relative", e)
	}
	if nb.Rows != 60 || nb.Cols != 4 || na.Rows != 4 || na.Cols != 40 {
		t.Errorf("new factors %d×%d and %d×%d, want the adapter's 60×4 and 4×40", nb.Rows, nb.Cols, na.Rows, na.Cols)
	}
	// Balanced split: B' and A' carry √S each, so their column and row norms match.
	for j := range 4 {
		cb, ra := 0.0, 0.0
		for i := range 60 {
			cb += nb.Data[i*4+j] * nb.Data[i*4+j]
		}
		for i := range 40 {
			ra += na.Data[j*40+i] * na.Data[j*40+i]
		}
		if relErr(cb, ra) > 1e-10 {
			t.Errorf("component %d: ‖B'col‖² %g ≠ ‖A'row‖² %g", j, cb, ra)
		}
	}

	keep := opts
	keep.Lambda = 1
	kb, ka, _, err := ReduceIntruders(w, b, a, scale, keep)
	if err != nil {
		t.Fatal(err)
	}
	kept, _ := kb.Mul(ka)
	orig, _ := b.Mul(a)
	diff, _ = kept.Sub(orig)
	if e := maxAbs(diff) / maxAbs(orig); e > 1e-10 {
		t.Errorf("λ = 1 changed the update by %g relative", e)
	}

	tiny := b.Clone()
	for i := range tiny.Data {
		tiny.Data[i] *= 1e-6
	}
	tb, ta, none, err := ReduceIntruders(w, tiny, a, scale, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(none.Left) != 0 || maxAbs(must(tb.Sub(tiny))) != 0 || maxAbs(must(ta.Sub(a))) != 0 {
		t.Errorf("intruder-free update: %d intruders, factors changed", len(none.Left))
	}
	if _, _, _, err := ReduceIntruders(w, b, a, 0, opts); err == nil {
		t.Error("scaling 0 accepted")
	}
}

func must(m *Matrix, err error) *Matrix {
	if err != nil {
		panic(err)
	}
	return m
}
