package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/tensor"
	lapackgo "gonum.org/v1/gonum/lapack/gonum"
)

// f32Matrix is an aligned F32 weight over wf, used in place by the passes.
func f32Matrix(name string, rows, cols int, wf []float32) *matrix {
	return &matrix{name: name, dtype: tensor.F32, rows: rows, cols: cols, rowBytes: 4 * cols, data: floatBytes(wf),
		f32: wf}
}

// projectionBackward runs p's forward pass on x (n rows) and its backward pass with dy, and returns dx.
func projectionBackward(p projection, x, dy []float32, n, rows, cols int) []float32 {
	var buf []float32
	p.forward(make([]float32, n*rows), x, n, &buf)
	dx := make([]float32, n*cols)
	p.backward(dx, dy, x, n, &buf)
	return dx
}

// TestPivotedLDU checks the truncated elimination against LAPACK's LU with partial pivoting (gonum's Dgetrf, the
// factorization torch.linalg.lu computes): P·L_r, the pivots and U_r/D_r agree, and with every step the product is
// the matrix itself.
func TestPivotedLDU(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, dims := range [][3]int{{12, 9, 4}, {7, 11, 3}, {9, 6, 6}} {
		rows, cols, r := dims[0], dims[1], dims[2]
		w := randVec(rng, rows*cols, 1)
		pl, d, u, err := pivotedLDU(rows, cols, w, r)
		if err != nil {
			t.Fatal(err)
		}
		// The oracle: the full LU of LAPACK, its row interchanges applied to L to put it in w's row order.
		k := min(rows, cols)
		lu, ipiv := widen(w), make([]int, k)
		lapackgo.Implementation{}.Dgetrf(rows, cols, lu, cols, ipiv)
		order := make([]int, rows)
		for i := range order {
			order[i] = i
		}
		for i, p := range ipiv {
			order[i], order[p] = order[p], order[i]
		}
		var worst float64
		for i := range rows {
			for j := range r {
				want := lu[i*cols+j]
				if j == i {
					want = 1
				} else if j > i {
					want = 0
				}
				worst = max(worst, math.Abs(pl[order[i]*r+j]-want))
			}
		}
		for j := range r {
			worst = max(worst, math.Abs(d[j]-lu[j*cols+j]))
			for c := range cols {
				want := 0.0
				if c >= j {
					want = lu[j*cols+c] / lu[j*cols+j]
				}
				worst = max(worst, math.Abs(u[j*cols+c]-want))
			}
		}
		if worst > 1e-12 {
			t.Errorf("%d×%d rank %d: the elimination differs from LAPACK's LU by %.3g", rows, cols, r, worst)
		}
		if r == k {
			w64 := widen(w)
			for i := range rows {
				for c := range cols {
					var s float64
					for j := range r {
						s += pl[i*r+j] * d[j] * u[j*cols+c]
					}
					worst = max(worst, math.Abs(s-w64[i*cols+c]))
				}
			}
			if worst > 1e-12 {
				t.Errorf("%d×%d: P·L·D·U differs from the matrix by %.3g", rows, cols, worst)
			}
		}
	}
	if _, _, _, err := pivotedLDU(3, 2, []float32{1, 0, 2, 0, 3, 0}, 2); err == nil {
		t.Error("a matrix with a zero column factored without error")
	}
}

// TestLoLDUBackward checks the projection's gradients (x, the pivots z and the scale σ) against central finite
// differences of its function in float64, after moving z and σ off their initial values.
func TestLoLDUBackward(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const n, rows, cols, rank = 3, 7, 10, 3
	wf := randVec(rng, rows*cols, 1)
	pr, err := lolduMethod{}.project(site{w: f32Matrix("w", rows, cols, wf), rows: n,
		cfg: LoRAConfig{Rank: rank, Alpha: 6}})
	if err != nil {
		t.Fatal(err)
	}
	p := pr.(*lolduLinear)
	for i := range p.z {
		p.z[i] += float32(rng.NormFloat64())
	}
	p.sigma[0] = 1.7
	x, r := randVec(rng, n*cols, 1), randVec(rng, n*rows, 1)
	dx := projectionBackward(p, x, r, n, rows, cols)
	w64, l64, u64 := widen(wf), widen(p.l), widen(p.u)
	loss := func(x, z []float64, sigma float64) float64 {
		y := linear64(x, n, w64, rows, cols)
		h := linear64(x, n, u64, rank, cols)
		for i := range h {
			h[i] *= sigma*z[i%rank] - float64(p.sigma0)*float64(p.z0[i%rank])
		}
		delta := linear64(h, n, l64, rows, rank)
		for i := range y {
			y[i] += delta[i]
		}
		return dot64(r, y)
	}
	x64, z64 := widen(x), widen(p.z)
	fdError(t, "loldu dx", x, dx, func(x []float64) float64 { return loss(x, z64, float64(p.sigma[0])) })
	fdError(t, "loldu dz", p.z, p.dz, func(z []float64) float64 { return loss(x64, z, float64(p.sigma[0])) })
	fdError(t, "loldu dσ", p.sigma, p.dsigma, func(s []float64) float64 { return loss(x64, z64, s[0]) })
}

// checkWrittenDelta writes l's adapter and checks that every module's update as written, Scale·B·A computed in
// float64 from the file, is the method's ΔW that want computes in float64 from the projection's parameters, to
// float32 rounding (1e-5 of the largest entry). l must be trained on a Hugging Face checkpoint, whose rows the
// trainer keeps in the file's order.
func checkWrittenDelta(t *testing.T, l *LoRA, want func(p projection) []float64) {
	t.Helper()
	if !l.m.Config.RopeNeoX {
		t.Fatal("checkWrittenDelta compares rows in the file's order: train on the Hugging Face checkpoint")
	}
	a := writtenAdapter(t, l)
	checked := 0
	for i := range l.layers {
		for j, lin := range l.layers[i].linears() {
			if lin.proj == nil {
				continue
			}
			name := fmt.Sprintf("model.layers.%d.%s", i, peftModules[j])
			k := slices.IndexFunc(a.Modules, func(m adapter.Module) bool { return m.Name == name })
			if k < 0 {
				t.Fatalf("the adapter has no module %s", name)
			}
			left, right, err := a.Modules[k].Factors()
			if err != nil {
				t.Fatal(err)
			}
			rows, cols := lin.w.rows, lin.w.cols
			got := product64(left.Data, right.Data, rows, right.Rows, cols)
			ref := want(lin.proj)
			var worst, scale float64
			for e := range ref {
				worst = max(worst, math.Abs(a.Modules[k].Scale*got[e]-ref[e]))
				scale = max(scale, math.Abs(ref[e]))
			}
			if scale == 0 || worst > 1e-5*scale {
				t.Errorf("%s: the written ΔW differs from the method's by %.3g (largest entry %.3g)", name, worst,
					scale)
			}
			checked++
		}
	}
	t.Logf("%d modules: written ΔW = the method's ΔW", checked)
}

// product64 returns b·a for b rows×r and a r×cols.
func product64(b, a []float64, rows, r, cols int) []float64 {
	at := make([]float64, len(a))
	for i := range r {
		for j := range cols {
			at[j*r+i] = a[i*cols+j]
		}
	}
	return linear64(b, rows, at, cols, r)
}

// TestMethodLoLDU trains LoLDU on q_proj, v_proj and down_proj: r + 1 values per projection (the pivots and σ),
// L and U exactly those of a fresh factorization of each weight after training, the pivots moved, and the adapter
// holding P·L_r·diag(σ·z − σ₀·z₀)·U_r; and on the GGUF model's q_proj, whose adapter must undo its row order.
func TestMethodLoLDU(t *testing.T) {
	const rank = 8
	run := checkMethod(t, TrainOptions{Method: MethodLoLDU, Rank: rank, Alpha: 16,
		Targets: []string{"q_proj", "v_proj", "down_proj"}, Steps: 12, LR: 5e-3, Batch: 2, Ctx: 64, Seed: 7}, false)
	c := run.l.m.Config
	if want := 3 * c.Layers * (rank + 1); run.trainable != want {
		t.Errorf("LoLDU trains %d values, want 3 projections × %d layers × (r + 1) = %d", run.trainable, c.Layers,
			want)
	}
	var moved float64
	for i := range run.l.layers {
		for _, lin := range run.l.layers[i].adapted() {
			p := lin.proj.(*lolduLinear)
			wf := make([]float32, lin.w.rows*lin.w.cols)
			if err := lin.w.decodeRows(wf, 0, lin.w.rows); err != nil {
				t.Fatal(err)
			}
			pl, d, u, err := pivotedLDU(lin.w.rows, lin.w.cols, wf, rank)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range pl {
				if p.l[k] != float32(v) {
					t.Fatalf("%s: P·L_r changed in training", lin.w.name)
				}
			}
			for k, v := range u {
				if p.u[k] != float32(v) {
					t.Fatalf("%s: U_r changed in training", lin.w.name)
				}
			}
			for k, v := range d {
				if p.z0[k] != float32(v) {
					t.Fatalf("%s: the initial pivots are not D_r", lin.w.name)
				}
				moved = max(moved, math.Abs(float64(p.z[k]-p.z0[k])/v))
			}
		}
	}
	t.Logf("largest relative change of a pivot: %.3g", moved)
	if moved == 0 {
		t.Error("no pivot moved in training")
	}
	// The GGUF model keeps q_proj's rows in llama.cpp's rotary order, which the adapter writer undoes.
	checkMethod(t, TrainOptions{Method: MethodLoLDU, Rank: rank, Alpha: 16, Targets: []string{"q_proj"}, Steps: 6,
		LR: 5e-3, Batch: 2, Ctx: 64, Seed: 7}, true)
	checkWrittenDelta(t, run.l, func(pr projection) []float64 {
		p := pr.(*lolduLinear)
		b := widen(p.l)
		for i := range b {
			k := i % rank
			b[i] *= float64(p.sigma[0])*float64(p.z[k]) - float64(p.sigma0)*float64(p.z0[k])
		}
		return product64(b, widen(p.u), p.w.rows, rank, p.w.cols)
	})
}
