package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/tensor"
)

// svdRun checks what AdaLoRA and IncreLoRA runs share: every module holds r ranks of P (rows×r), λ (r) and Q (r×cols),
// r·(rows+cols+1) trainable values (Zhang et al. 2023, §3.1: the triplets G = {P, Λ, Q}); the ranks kept sum to
// the budget target_r·modules; Λ is zero outside them; and the written adapter's ΔW = B·A·scale of every module
// equals the kept part of P·diag(λ)·Q·α/ranknum computed in float64 from the trained parameters.
func svdRun(t *testing.T, run methodRun, r, targetR int) {
	t.Helper()
	m := run.l.method.(*svdMethod)
	want := 0
	for _, s := range m.projs {
		want += r * (s.w.rows + s.w.cols + 1)
	}
	if run.trainable != want {
		t.Errorf("%d trainable values, want Σ r·(rows+cols+1) = %d", run.trainable, want)
	}
	kept, hist := 0, map[int]int{}
	for _, s := range m.projs {
		n := len(s.kept())
		kept += n
		hist[n]++
		for i, on := range s.mask {
			if on == 0 && s.lam[i] != 0 {
				t.Errorf("%s: rank %d is not kept but has λ = %g", s.name(), i, s.lam[i])
			}
		}
	}
	t.Logf("%d modules: ranks kept %v (rank: modules)", len(m.projs), hist)
	if budget := targetR * len(m.projs); kept != budget {
		t.Errorf("%d ranks kept at the end, want the budget target_r·modules = %d", kept, budget)
	}
	if len(hist) < 2 {
		t.Errorf("every module kept the same rank: the allocation did not tell modules apart")
	}

	a, err := adapter.Open(run.written)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	byName := map[string]*adapter.Module{}
	for i := range a.Modules {
		byName[a.Modules[i].Name] = &a.Modules[i]
	}
	var worst float64
	for _, s := range m.projs {
		mod := byName[fmt.Sprintf("model.layers.%d.%s", s.layer, peftModules[slices.Index(targetNames, s.module)])]
		if mod == nil {
			t.Fatalf("%s: no module in the written adapter", s.w.name)
		}
		keep := s.kept()
		if mod.Rank != max(1, len(keep)) {
			t.Errorf("%s: written with rank %d, %d ranks kept", s.w.name, mod.Rank, len(keep))
		}
		rows, cols, rk := s.w.rows, s.w.cols, mod.Rank
		fa, fb := make([]float32, rk*cols), make([]float32, rows*rk)
		tensor.ToFloat32(fa, mod.A.Data, mod.A.DType)
		tensor.ToFloat32(fb, mod.B.Data, mod.B.DType)
		scale := m.alpha / float64(m.initR)
		if m.grow != nil {
			scale = m.alpha / float64(len(keep))
		}
		var diff, norm float64
		for row := range rows {
			for col := range cols {
				var got, ref float64
				for j := range rk {
					got += float64(fb[row*rk+j]) * float64(fa[j*cols+col])
				}
				got *= mod.Scale
				for _, i := range keep {
					ref += float64(s.p[row*s.r+i]) * float64(s.lam[i]) * float64(s.q[i*cols+col])
				}
				ref *= scale
				diff, norm = max(diff, math.Abs(got-ref)), max(norm, math.Abs(ref))
			}
		}
		if len(keep) == 0 {
			if diff != 0 {
				t.Errorf("%s: no rank kept, but the written ΔW is not zero", s.w.name)
			}
			continue
		}
		if norm == 0 {
			t.Fatalf("%s: ΔW is zero: the comparison proves nothing", s.w.name)
		}
		worst = max(worst, diff/norm)
	}
	t.Logf("written ΔW against float64 P·Λ·Q·scale: max relative difference %.2e", worst)
	if worst > 1e-5 {
		t.Errorf("written ΔW differs from P·Λ·Q·scale by %.2e relative, want ≤ 1e-5", worst)
	}
}

// TestMethodAdaLoRA trains with AdaLoRA from rank 4 to an average of 2 over 16 steps: checkMethod's checks (from the
// GGUF file and the Hugging Face checkpoint), the parameter count, the budget, the written adapter's equivalence with the SVD form, and that the regularizer made
// P and Q more orthogonal than they started (P, Q ~ N(0, 0.02²) are far from it: R ≈ 6 per module).
func TestMethodAdaLoRA(t *testing.T) {
	const r = 4
	opts := TrainOptions{Method: MethodAdaLoRA, Rank: r, Alpha: 8, Steps: 16, LR: 3e-2, Batch: 2, Ctx: 64, Seed: 7}
	checkMethod(t, opts, true) // the GGUF model: q and k's B rows go back to Hugging Face's order, per module rank
	run := checkMethod(t, opts, false)
	svdRun(t, run, r, r/2)
	// A LoRA built with the same configuration holds the initial parameters.
	l0, err := NewLoRAConfig(run.l.m, LoRAConfig{Rank: r, Alpha: 8, Method: MethodAdaLoRA, Steps: opts.Steps}, 1, 8,
		opts.Seed)
	if err != nil {
		t.Fatal(err)
	}
	var before, after float64
	for k, s := range run.l.method.(*svdMethod).projs {
		f := l0.method.(*svdMethod).projs[k]
		rows, cols := s.w.rows, s.w.cols
		tmp := make([]float32, r*r)
		before += orthReg(f.p, f.q, make([]float32, len(f.p)), make([]float32, len(f.q)), rows, cols, r, r, 1, tmp)
		after += orthReg(s.p, s.q, make([]float32, len(s.p)), make([]float32, len(s.q)), rows, cols, r, r, 1, tmp)
	}
	t.Logf("orthogonality regularizer ΣR: %.3f at initialisation → %.3f after training", before, after)
	if !(after < before/2) {
		t.Errorf("ΣR %.3f after training, want well below the %.3f of the initialisation", after, before)
	}
}

// TestMethodIncreLoRA trains with IncreLoRA from rank 1 to an average of 2, modules holding up to 4: checkMethod's
// checks, the parameter count (every module holds --rank ranks), and the budget reached by growth.
func TestMethodIncreLoRA(t *testing.T) {
	const r = 4
	run := checkMethod(t, TrainOptions{Method: MethodIncreLoRA, Rank: r, Alpha: 8, Steps: 16, LR: 1e-2, Batch: 2,
		Ctx: 64, Seed: 9}, false)
	svdRun(t, run, r, r/2)
	if g := run.l.method.(*svdMethod).grow; g.scoring() {
		t.Errorf("still growing after the last step")
	}
}

// TestAdaLoRABudget: PEFT's cubic schedule, for init_r 12, target_r 8, 10 modules over 100 steps with tinit 10,
// tfinal 20 and deltaT 5: the values are PEFT's budget_schedule computed by hand, int((120−80)·c³ + 80) with
// c = 1 − (step−10)/70.
func TestAdaLoRABudget(t *testing.T) {
	m := &svdMethod{initR: 12, targetR: 8, total: 100, tinit: 10, tfinal: 20, deltaT: 5, projs: make([]*svdLinear, 10)}
	for _, c := range []struct {
		step, budget int
		prune        bool
	}{{1, 120, false}, {10, 120, false}, {11, 118, false}, {15, 112, true}, {30, 94, true}, {45, 85, true}, {79, 80, false},
		{80, 80, true}, {81, 80, true}, {100, 80, true}} {
		b, prune := m.budget(c.step)
		if b != c.budget || prune != c.prune {
			t.Errorf("step %d: budget %d (prune %v), want %d (%v)", c.step, b, prune, c.budget, c.prune)
		}
	}
}

// TestAdaLoRAOrthGradient checks the regularizer's value and gradient against a float64 oracle of
// R = ‖PₗᵀPₗ − I‖² + ‖QₗQₗᵀ − I‖² by central finite differences, with 3 of 5 ranks live: the other ranks get none.
func TestAdaLoRAOrthGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const rows, cols, r, live, weight = 7, 9, 5, 3, 0.7
	p, q := randVec(rng, rows*r, 0.5), randVec(rng, r*cols, 0.5)
	gp, gq := make([]float32, rows*r), make([]float32, r*cols)
	got := orthReg(p, q, gp, gq, rows, cols, r, live, weight, make([]float32, r*r))
	// the oracle over the live ranks: the first live columns of P and rows of Q
	reg := func(p, q []float64) float64 {
		pl := make([]float64, rows*live)
		for k := range rows {
			copy(pl[k*live:(k+1)*live], p[k*r:])
		}
		return sorsaRegularizer64(pl, q[:live*cols], rows, cols, live)
	}
	p64, q64 := widen(p), widen(q)
	if want := reg(p64, q64); math.Abs(got-want) > 1e-5*want {
		t.Errorf("R = %.8g, float64 oracle %.8g", got, want)
	}
	fdError(t, "orthogonality dP", p, gp, func(p []float64) float64 { return weight * reg(p, q64) })
	fdError(t, "orthogonality dQ", q, gq, func(q []float64) float64 { return weight * reg(p64, q) })
	for k := range rows {
		for i := live; i < r; i++ {
			if gp[k*r+i] != 0 || gq[i*cols+k] != 0 {
				t.Fatalf("rank %d is not live but got a regularizer gradient", i)
			}
		}
	}
}

// TestSVDLinearBackward checks the projection's gradients (input, P, λ, Q) against central finite differences of
// a float64 oracle of y = x·Wᵀ + scale·((x·Qᵀ)⊙λ)·Pᵀ, as backward_test.go checks plain LoRA's.
func TestSVDLinearBackward(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const n, rows, cols, r = 3, 7, 10, 3
	w, wf := testWeight(rng, rows, cols, tensor.F32)
	m := &svdMethod{alpha: 4.5, initR: r, maxR: r, scratch: make([]float32, 2*n*r)}
	s := &svdLinear{m: m, w: w, r: r, p: randVec(rng, rows*r, 1), lam: randVec(rng, r, 1), q: randVec(rng, r*cols, 1),
		dp: make([]float32, rows*r), dlam: make([]float32, r), dq: make([]float32, r*cols), h: make([]float32, n*r),
		mask: []float32{1, 1, 1}}
	x, dy := randVec(rng, n*cols, 1), randVec(rng, n*rows, 1)
	y, dx := make([]float32, n*rows), make([]float32, n*cols)
	var buf []float32
	s.forward(y, x, n, &buf)
	s.backward(dx, dy, x, n, &buf)
	w64 := widen(wf)
	loss := func(x, p, lam, q []float64) float64 {
		y := linear64(x, n, w64, rows, cols)
		h := linear64(x, n, q, r, cols)
		for k := range n {
			for i := range r {
				h[k*r+i] *= lam[i]
			}
		}
		d := linear64(h, n, p, rows, r)
		for i := range y {
			y[i] += 1.5 * d[i] // α/r = 4.5/3
		}
		return dot64(dy, y)
	}
	x64, p64, l64, q64 := widen(x), widen(s.p), widen(s.lam), widen(s.q)
	fdError(t, "svd linear dx", x, dx, func(x []float64) float64 { return loss(x, p64, l64, q64) })
	fdError(t, "svd linear dP", s.p, s.dp, func(p []float64) float64 { return loss(x64, p, l64, q64) })
	fdError(t, "svd linear dλ", s.lam, s.dlam, func(l []float64) float64 { return loss(x64, p64, l, q64) })
	fdError(t, "svd linear dQ", s.q, s.dq, func(q []float64) float64 { return loss(x64, p64, l64, q) })

	// A module whose ranks were all pruned is written as a zero rank-1 LoRA: PEFT and adapter.Open refuse rank 0.
	s.mask = make([]float32, r)
	a, b, rank := s.factors()
	if rank != 1 || len(a) != cols || len(b) != rows || slices.ContainsFunc(a, func(v float32) bool { return v != 0 }) ||
		slices.ContainsFunc(b, func(v float32) bool { return v != 0 }) {
		t.Errorf("no rank kept: factors of rank %d (%d, %d values), want zero factors of rank 1", rank, len(a), len(b))
	}
}

// TestAdaLoRAArgs: the schedule must leave steps to allocate in, and the ranks must be ordered.
func TestAdaLoRAArgs(t *testing.T) {
	m := tinyLlamaHF(t)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_val.txt")[:2000]}
	for _, c := range []struct {
		method string
		args   map[string]string
		want   string
	}{
		{MethodAdaLoRA, map[string]string{"tinit": "3", "tfinal": "2"}, "tinit < steps − tfinal"},
		{MethodAdaLoRA, map[string]string{"target_r": "9"}, "only prunes"},
		{MethodAdaLoRA, map[string]string{"beta1": "1"}, "beta1"},
		{MethodIncreLoRA, map[string]string{"target_r": "9"}, "≤ --rank"},
		{MethodIncreLoRA, map[string]string{"top_h": "x"}, "top_h"},
	} {
		opts := TrainOptions{Method: c.method, MethodArgs: c.args, Rank: 8, Steps: 5, Batch: 1, Ctx: 16}
		if _, _, err := Train(m, data, opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %v: error %v, want one saying %q", c.method, c.args, err, c.want)
		}
	}
}
