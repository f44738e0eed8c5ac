package train

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/internal/linalg"
)

// TestMethodEVA: an EVA run lowers the loss, its adapter (with rank_pattern, without the modules left at rank 0)
// computes in the runtime what the trainer computed and resumes bit for bit; the ranks add up to the budget
// r·modules, each at most round(rho·r), the trainable count is Σ rᵢ·(rows+cols), and the windows trained on are
// those of a LoRA run with the same seed.
func TestMethodEVA(t *testing.T) {
	const r = 2
	opts := TrainOptions{Method: MethodEVA, MethodArgs: map[string]string{"eva_batches": "2", "rho": "4"}, Rank: r,
		Alpha: 4, Steps: 6, LR: 3e-3, Batch: 2, Ctx: 32, Seed: 3, Targets: []string{"q_proj", "o_proj", "down_proj"}}
	run := checkMethod(t, opts, false)
	e := run.l.method.(*evaMethod)
	ranks, params, sum := map[int]int{}, 0, 0
	for _, p := range e.projs {
		ri := p.lin.rank
		ranks[ri]++
		sum += ri
		params += ri * (p.lin.w.rows + p.lin.w.cols)
		if ri > 4*r {
			t.Errorf("%s has rank %d, above round(rho·r) = %d", p.lin.w.name, ri, 4*r)
		}
	}
	t.Logf("ranks: %v (rank: modules)", ranks)
	if want := r * len(e.projs); sum != want {
		t.Errorf("the ranks add up to %d, want the budget r·modules = %d", sum, want)
	}
	if run.trainable != params {
		t.Errorf("%d trainable values, want Σ rᵢ·(rows+cols) = %d", run.trainable, params)
	}
	if ranks[0] == 0 || ranks[r] == len(e.projs) {
		t.Errorf("ranks %v: the test wants modules that lose their rank, whose absence the adapter must show", ranks)
	}
	a, err := adapter.Open(run.written)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if len(a.Modules) != len(e.projs)-ranks[0] {
		t.Errorf("the adapter has %d modules, want the %d of positive rank", len(a.Modules), len(e.projs)-ranks[0])
	}
	for _, mod := range a.Modules {
		if mod.Scale != 1 || mod.Rank < 1 {
			t.Errorf("adapter module %s: rank %d, scale %v; want a positive rank and the scale folded in", mod.Name,
				mod.Rank, mod.Scale)
		}
	}

	lora := opts
	lora.Method, lora.MethodArgs, lora.Steps = MethodLoRA, nil, 2
	_, logs, err := Train(run.l.m, &Stream{Tokens: shakespeare(t, run.l.m, "shakespeare_train.txt")}, lora)
	if err != nil {
		t.Fatal(err)
	}
	// Both start from the base model (B = 0), so the first step's loss is the base model's on its windows.
	if logs[0].Loss != run.logs[0].Loss || logs[1].Loss == run.logs[1].Loss {
		t.Errorf("first steps' losses: EVA %v %v, LoRA %v %v; want the same first windows and then different "+
			"parameters", run.logs[0].Loss, run.logs[1].Loss, logs[0].Loss, logs[1].Loss)
	}
}

// TestEVAInit: before training, every A holds orthonormal rows equal (up to sign) to the top right-singular vectors
// of the centred inputs its projection saw in the EVA batches — the same windows drawn again, the inputs taken from
// a plain LoRA pass, the SVD LAPACK's in float64 — B is zero, the scale is alpha/r, and the ranks are those PEFT's
// rule gives from that SVD's explained-variance ratios.
func TestEVAInit(t *testing.T) {
	m := tinyLlamaHF(t)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_train.txt")}
	const r, rho, batches = 4, 2.0, 3
	opts := TrainOptions{Method: MethodEVA, MethodArgs: map[string]string{"eva_batches": "3", "tau": "0.9"},
		Rank: r, Alpha: 8, Steps: 1, Batch: 2, Ctx: 32, Seed: 3, Targets: []string{"k_proj", "o_proj", "up_proj",
			"down_proj"}}
	opts.defaults()
	tr, err := newTrainer(m, data, opts)
	if err != nil {
		t.Fatal(err)
	}
	e := tr.lora.method.(*evaMethod)

	// The inputs of every batch, from a plain LoRA (B = 0: the base model's activations).
	plain, err := NewLoRA(m, 1, 1, opts.Batch, opts.Ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(opts.Seed, evaStream))
	inputs := map[[2]int][][]float32{} // (layer, input) → per batch
	for range batches {
		windows, _, err := data.Windows(rng, opts.Batch, opts.Ctx)
		if err != nil {
			t.Fatal(err)
		}
		plain.forward(windows, nil, opts.Batch, opts.Ctx)
		for li, a := range plain.acts {
			for in, act := range [][]float32{a.xn1, a.att, a.xn2, a.h} {
				key := [2]int{li, in}
				inputs[key] = append(inputs[key], slices.Clone(act))
			}
		}
	}
	type offer struct {
		ratio  float64
		module int
	}
	var offers []offer
	worst := 0.0
	used := map[int]int{}
	cosines, lowest := 0, 1.0
	for i, p := range e.projs {
		g := p.group
		if g.batches < 1 || g.batches > batches {
			t.Fatalf("%s: group used %d batches of %d", p.lin.w.name, g.batches, batches)
		}
		used[g.batches]++
		var x []float64
		for _, act := range inputs[[2]int{g.layer, g.input}][:g.batches] {
			x = append(x, widen(act)...)
		}
		cols := g.cols
		s, vt, total := pca64(t, x, cols)
		for k := range int(r * rho) {
			offers = append(offers, offer{s[k] * s[k] / total, i})
		}
		ri := p.lin.rank
		for k := range ri {
			row := widen(p.lin.a[k*cols : (k+1)*cols])
			for k2 := range ri {
				want := 0.0
				if k == k2 {
					want = 1
				}
				worst = max(worst, math.Abs(dot64(p.lin.a[k2*cols:(k2+1)*cols], row)-want))
			}
			// The k-th singular vector is defined up to sign, and only where it is apart from its neighbours.
			gap := s[k] - s[k+1]
			if k > 0 {
				gap = min(gap, s[k-1]-s[k])
			}
			if gap < 1e-3*s[0] {
				continue
			}
			c := math.Abs(dot64(p.lin.a[k*cols:(k+1)*cols], vt[k*cols:(k+1)*cols]))
			if c < 1-1e-4 {
				t.Errorf("%s: A row %d has cosine %.6f with singular vector %d", p.lin.w.name, k, c, k)
			}
			cosines, lowest = cosines+1, min(lowest, c)
		}
		if ri > 0 && (slices.ContainsFunc(p.lin.b, func(v float32) bool { return v != 0 }) || p.lin.scale != 2) {
			t.Errorf("%s: B not zero or scale %v, want 8/4 = 2", p.lin.w.name, p.lin.scale)
		}
	}
	if worst > 1e-5 {
		t.Errorf("A·Aᵀ differs from the identity by %.2g", worst)
	}
	// PEFT's rule on the oracle's ratios.
	slices.SortStableFunc(offers, func(a, b offer) int { return cmp.Compare(b.ratio, a.ratio) })
	want := make([]int, len(e.projs))
	for _, o := range offers[:r*len(e.projs)] {
		want[o.module]++
	}
	got := make([]int, len(e.projs))
	for i, p := range e.projs {
		got[i] = p.lin.rank
	}
	t.Logf("ranks %v; A·Aᵀ − I up to %.2g; %d rows of A against singular vectors, |cos| ≥ %.9f; batches taken: "+
		"%v (batches: modules)", got, worst, cosines, lowest, used)
	if !slices.Equal(got, want) {
		t.Errorf("ranks %v, want %v from the SVD's explained variance", got, want)
	}
}

// TestEVAIncremental: the batch-by-batch update (PEFT's IncrementalPCA step, untruncated) gives the principal
// directions and explained-variance ratios of the centred stack of every row seen, batches with different means
// included; a batch that repeats one seen leaves the directions where they were, so they count as converged.
func TestEVAIncremental(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	const cols, comps = 6, 3
	scales := []float64{5, 3, 2, 1, 0.5, 0.2}
	g := &evaGroup{cols: cols}
	var all []float64
	var batches [][]float64
	for b := range 3 {
		var x []float64
		for range 10 + b {
			for c := range cols {
				x = append(x, scales[c]*rng.NormFloat64()+float64(b*c)) // the mean moves between batches
			}
		}
		batches = append(batches, x)
		all = append(all, x...)
		if err := g.add(slices.Clone(x), b > 0, comps, 0.99); err != nil {
			t.Fatal(err)
		}
	}
	s, vt, total := pca64(t, all, cols)
	for k := range comps {
		var dot float64
		for c := range cols {
			dot += g.components[k*cols+c] * vt[k*cols+c]
		}
		if math.Abs(math.Abs(dot)-1) > 1e-10 || math.Abs(g.ratios[k]-s[k]*s[k]/total) > 1e-12 {
			t.Errorf("component %d: |cos| %v with the exact one, ratio %v want %v", k, math.Abs(dot), g.ratios[k],
				s[k]*s[k]/total)
		}
	}
	if err := g.add(slices.Clone(batches[2]), true, comps, 0.99); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(g.converged, false) {
		t.Errorf("a repeated batch: converged %v, want all", g.converged)
	}
}

// pca64 is the oracle of EVA's analysis: the singular values and right vectors of the rows x (cols wide) centred on
// their mean, by LAPACK's SVD in float64, and the sum of the squared values (the total variance times the count).
func pca64(t *testing.T, x []float64, cols int) (s, vt []float64, total float64) {
	t.Helper()
	n := len(x) / cols
	for c := range cols {
		var mean float64
		for row := range n {
			mean += x[row*cols+c]
		}
		mean /= float64(n)
		for row := range n {
			x[row*cols+c] -= mean
		}
	}
	_, s, vt, err := linalg.SVD(n, cols, x)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range s {
		total += v * v
	}
	return s, vt, total
}

// TestEVARejects: more directions than a projection has inputs, or than the EVA batches give rows, are refused
// with the numbers; so are malformed arguments.
func TestEVARejects(t *testing.T) {
	m := tinyLlamaHF(t)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_val.txt")[:3000]}
	for _, c := range []struct {
		args map[string]string
		want string
	}{
		{map[string]string{"rho": "100"}, "exceed the 256 inputs"},
		{map[string]string{"eva_batches": "1"}, "fewer than the round(rho·r) = 8"},
		{map[string]string{"rho": "0.5"}, "rho"},
		{map[string]string{"tau": "2"}, "tau"},
	} {
		_, _, err := Train(m, data, TrainOptions{Method: MethodEVA, MethodArgs: c.args, Rank: 4, Steps: 1, Batch: 1,
			Ctx: 4, Targets: []string{"q_proj"}})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("eva %v: error %v, want one saying %q", c.args, err, c.want)
		}
	}
}
