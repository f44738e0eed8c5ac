package train

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

// TestLaMDABackward checks the projection's gradients (x, the core S and B) against central finite differences
// of y = x·Wᵀ + s·((x·Aᵀ)·Sᵀ)·Bᵀ in float64.
func TestLaMDABackward(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const n, rows, cols, rank = 3, 7, 10, 3
	wf := randVec(rng, rows*cols, 1)
	m := &lamdaMethod{init: "lora"}
	pr, err := m.project(site{w: f32Matrix("w", rows, cols, wf), rows: n, seed: 9,
		cfg: LoRAConfig{Rank: rank, Alpha: 4.5}})
	if err != nil {
		t.Fatal(err)
	}
	p := pr.(*lamdaLinear)
	copy(p.b, randVec(rng, rows*rank, 1)) // B starts at zero, which would hide terms of dS and dx
	x, r := randVec(rng, n*cols, 1), randVec(rng, n*rows, 1)
	dx := projectionBackward(p, x, r, n, rows, cols)
	w64, a64 := widen(wf), widen(p.a)
	loss := func(x, core, b []float64) float64 {
		y := linear64(x, n, w64, rows, cols)
		delta := linear64(linear64(linear64(x, n, a64, rank, cols), n, core, rank, rank), n, b, rows, rank)
		for i := range y {
			y[i] += 1.5 * delta[i]
		}
		return dot64(r, y)
	}
	x64, s64, b64 := widen(x), widen(p.core), widen(p.b)
	fdError(t, "lamda dx", x, dx, func(x []float64) float64 { return loss(x, s64, b64) })
	fdError(t, "lamda dS", p.core, p.dcore, func(s []float64) float64 { return loss(x64, s, b64) })
	fdError(t, "lamda dB", p.b, p.db, func(b []float64) float64 { return loss(x64, s64, b) })
}

// TestLaMDAFreezing steps a run with the authors' initialisation and freeze_step 4 by hand: A never changes, B's
// leading columns stop changing one group at a time (those the schedule freezes for a step are bit-identical
// before and after it), B stops changing after step 4 while S keeps learning.
func TestLaMDAFreezing(t *testing.T) {
	m := tinyLlamaHF(t)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_train.txt")}
	const rank, freeze, steps = 4, 4, 8
	opts := TrainOptions{Method: MethodLaMDA, MethodArgs: map[string]string{"init": "lora",
		"freeze_step": strconv.Itoa(freeze)}, Rank: rank, Targets: []string{"v_proj", "up_proj"}, Steps: steps,
		LR: 1e-2, WeightDecay: 0.1, Batch: 2, Ctx: 32, Seed: 3}
	opts.defaults()
	tr, err := newTrainer(m, data, opts)
	if err != nil {
		t.Fatal(err)
	}
	lm := tr.lora.method.(*lamdaMethod)
	clone := func() (a, core, b [][]float32) {
		for _, p := range lm.projs {
			a, core, b = append(a, slices.Clone(p.a)), append(core, slices.Clone(p.core)), append(b, slices.Clone(p.b))
		}
		return a, core, b
	}
	a0, _, _ := clone()
	_, core, b := clone()
	for step := 1; step <= steps; step++ {
		if _, err := tr.next(); err != nil {
			t.Fatal(err)
		}
		_, core2, b2 := clone()
		f := lm.frozenColumns(step, rank)
		if want := min(rank, (step-1)*rank/freeze); f != want {
			t.Fatalf("step %d freezes %d columns, want %d", step, f, want)
		}
		for k, p := range lm.projs {
			changed := make([]bool, rank)
			for i := range p.w.rows {
				for j := range rank {
					changed[j] = changed[j] || b2[k][i*rank+j] != b[k][i*rank+j]
				}
			}
			for j, c := range changed {
				if c == (j < f) {
					t.Errorf("step %d, %s: column %d of B changed: %v, but %d columns are frozen", step, p.w.name, j,
						c, f)
				}
			}
			if slices.Equal(core2[k], core[k]) {
				t.Errorf("step %d, %s: the core S did not change", step, p.w.name)
			}
		}
		core, b = core2, b2
	}
	for k, p := range lm.projs {
		if !slices.Equal(p.a, a0[k]) {
			t.Errorf("%s: A changed in training", p.w.name)
		}
	}
}

// TestMethodLaMDA trains LaMDA with its SVD initialisation on k_proj and v_proj: r² + out·r values per
// projection (S, and B until it is frozen), A still the top right singular vectors of each weight after training,
// and the adapter holding s·B·S·A.
func TestMethodLaMDA(t *testing.T) {
	const rank = 4
	run := checkMethod(t, TrainOptions{Method: MethodLaMDA, MethodArgs: map[string]string{"freeze_step": "6"},
		Rank: rank, Alpha: 8, Targets: []string{"k_proj", "v_proj"}, Steps: 12, LR: 5e-3, Batch: 2,
		Ctx: 64, Seed: 11}, false)
	want := 0
	for i := range run.l.layers {
		for _, lin := range run.l.layers[i].adapted() {
			want += rank*rank + lin.w.rows*rank
			p := lin.proj.(*lamdaLinear)
			_, _, _, vt, err := lin.w.svd()
			if err != nil {
				t.Fatal(err)
			}
			for j := range rank * lin.w.cols {
				if p.a[j] != float32(vt[j]) {
					t.Fatalf("%s: A is not the top %d right singular vectors after training", lin.w.name, rank)
				}
			}
		}
	}
	if run.trainable != want {
		t.Errorf("LaMDA trains %d values, want Σ r² + out·r = %d", run.trainable, want)
	}
	checkWrittenDelta(t, run.l, func(pr projection) []float64 {
		p := pr.(*lamdaLinear)
		d := product64(product64(widen(p.b), widen(p.core), p.w.rows, rank, rank), widen(p.a), p.w.rows, rank,
			p.w.cols)
		for i := range d {
			d[i] *= float64(p.scale)
		}
		return d
	})
}
