package train

import (
	"math/rand/v2"
	"testing"
)

// sorsaRegularizer64 is ‖UᵀU − I‖²_F + ‖VᵀV − I‖²_F in float64 for U (rows×r) and Vᵀ (r×cols).
func sorsaRegularizer64(u, vt []float64, rows, cols, r int) float64 {
	var sum float64
	for a := range r {
		for b := range r {
			var du, dv float64
			for i := range rows {
				du += u[i*r+a] * u[i*r+b]
			}
			for c := range cols {
				dv += vt[a*cols+c] * vt[b*cols+c]
			}
			if a == b {
				du, dv = du-1, dv-1
			}
			sum += du*du + dv*dv
		}
	}
	return sum
}

// sorsaTestLinear is a SORSA projection on a random rows×cols F32 weight with U, S and Vᵀ moved off their SVD
// values, so that no term of a gradient vanishes.
func sorsaTestLinear(t *testing.T, m *sorsaMethod, rng *rand.Rand, n, rows, cols, rank int) (*sorsaLinear, []float32) {
	t.Helper()
	wf := randVec(rng, rows*cols, 1)
	pr, err := m.project(site{w: f32Matrix("w", rows, cols, wf), rows: n, cfg: LoRAConfig{Rank: rank}})
	if err != nil {
		t.Fatal(err)
	}
	p := pr.(*sorsaLinear)
	for _, x := range [][]float32{p.u, p.s, p.vt} {
		for i := range x {
			x[i] += float32(0.3 * rng.NormFloat64())
		}
	}
	return p, wf
}

// TestSORSABackward checks the projection's gradients (x, U, S, Vᵀ) against central finite differences of
// y = x·Wᵀ + x·(U·diag(S)·Vᵀ − U₀·diag(S₀)·V₀ᵀ)ᵀ in float64.
func TestSORSABackward(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	const n, rows, cols, rank = 3, 7, 10, 3
	p, wf := sorsaTestLinear(t, &sorsaMethod{}, rng, n, rows, cols, rank)
	x, r := randVec(rng, n*cols, 1), randVec(rng, n*rows, 1)
	dx := projectionBackward(p, x, r, n, rows, cols)
	w64, c064, vt064 := widen(wf), widen(p.c0), widen(p.vt0)
	loss := func(x, u, s, vt []float64) float64 {
		y := linear64(x, n, w64, rows, cols)
		h := linear64(x, n, vt, rank, cols)
		for i := range h {
			h[i] *= s[i%rank]
		}
		delta := linear64(h, n, u, rows, rank)
		initial := linear64(linear64(x, n, vt064, rank, cols), n, c064, rows, rank)
		for i := range y {
			y[i] += delta[i] - initial[i]
		}
		return dot64(r, y)
	}
	x64, u64, s64, vt64 := widen(x), widen(p.u), widen(p.s), widen(p.vt)
	fdError(t, "sorsa dx", x, dx, func(x []float64) float64 { return loss(x, u64, s64, vt64) })
	fdError(t, "sorsa dU", p.u, p.du, func(u []float64) float64 { return loss(x64, u, s64, vt64) })
	fdError(t, "sorsa dS", p.s, p.ds, func(s []float64) float64 { return loss(x64, u64, s, vt64) })
	fdError(t, "sorsa dVᵀ", p.vt, p.dvt, func(vt []float64) float64 { return loss(x64, u64, s64, vt) })
}

// TestSORSARegularizer checks what the gradient hook adds to the gradients of U and Vᵀ against central finite
// differences of γ·(‖UᵀU − I‖²_F + ‖VᵀV − I‖²_F), on two projections so that each gets its own term.
func TestSORSARegularizer(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	const gamma, rank = 0.7, 3
	m := &sorsaMethod{gamma: gamma, gram: make([]float32, rank*rank)}
	dims := [][2]int{{9, 6}, {5, 8}}
	var grads [][]float32
	for _, d := range dims {
		p, _ := sorsaTestLinear(t, m, rng, 1, d[0], d[1], rank)
		grads = append(grads, make([]float32, len(p.u)), make([]float32, len(p.s)), make([]float32, len(p.vt)))
	}
	m.beforeUpdate(1, grads)
	for k, p := range m.projs {
		rows, cols := dims[k][0], dims[k][1]
		u64, vt64 := widen(p.u), widen(p.vt)
		fdError(t, "regularizer dU", p.u, grads[3*k], func(u []float64) float64 {
			return gamma * sorsaRegularizer64(u, vt64, rows, cols, rank)
		})
		fdError(t, "regularizer dVᵀ", p.vt, grads[3*k+2], func(vt []float64) float64 {
			return gamma * sorsaRegularizer64(u64, vt, rows, cols, rank)
		})
		for _, g := range grads[3*k+1] {
			if g != 0 {
				t.Fatal("the regularizer changed the gradient of S")
			}
		}
	}
}

// TestMethodSORSA trains SORSA on k_proj and v_proj: r·(out + 1 + in) values per projection, the adapter (rank 2r)
// holding U·diag(S)·Vᵀ − U₀·diag(S₀)·V₀ᵀ, and U and V closer to orthonormal than in the same run without the
// regularizer.
func TestMethodSORSA(t *testing.T) {
	const rank = 8
	opts := TrainOptions{Method: MethodSORSA, Rank: rank, Targets: []string{"k_proj", "v_proj"}, Steps: 12,
		LR: 2e-3, Batch: 2, Ctx: 64, Seed: 13}
	run := checkMethod(t, opts, false)
	want := 0
	for i := range run.l.layers {
		for _, lin := range run.l.layers[i].adapted() {
			want += rank * (lin.w.rows + 1 + lin.w.cols)
		}
	}
	if run.trainable != want {
		t.Errorf("SORSA trains %d values, want Σ r·(out + 1 + in) = %d", run.trainable, want)
	}
	checkWrittenDelta(t, run.l, func(pr projection) []float64 {
		p := pr.(*sorsaLinear)
		rows, cols := p.w.rows, p.w.cols
		us := widen(p.u)
		for i := range us {
			us[i] *= float64(p.s[i%rank])
		}
		d, d0 := product64(us, widen(p.vt), rows, rank, cols), product64(widen(p.c0), widen(p.vt0), rows, rank, cols)
		for i := range d {
			d[i] -= d0[i]
		}
		return d
	})

	orthogonality := func(l *LoRA) float64 {
		var sum float64
		for _, p := range l.method.(*sorsaMethod).projs {
			sum += sorsaRegularizer64(widen(p.u), widen(p.vt), p.w.rows, p.w.cols, rank)
		}
		return sum
	}
	plain := opts
	plain.MethodArgs = map[string]string{"gamma": "0"}
	free := mustTrain(t, run.l.m, &Stream{Tokens: shakespeare(t, run.l.m, "shakespeare_train.txt")}, plain)
	with, without := orthogonality(run.l), orthogonality(free)
	t.Logf("Σ ‖UᵀU − I‖²_F + ‖VᵀV − I‖²_F after %d steps: %.4g with gamma %s, %.4g without", opts.Steps, with,
		methods[MethodSORSA].args["gamma"], without)
	if !(with < without/2) {
		t.Errorf("the regularizer does not keep U and V closer to orthonormal: %.4g with it, %.4g without", with,
			without)
	}
}
