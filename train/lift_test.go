package train

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/prune"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// TestMethodLIFT: a LIFT run with two mask refreshes lowers the loss, its merged model computes what the trainer
// computed and it resumes bit for bit (checkMethod); it trains k = min((m+n)·r, m·n) entries per matrix; and the
// sparse delta file decompresses to the dense update the merged model adds.
func TestMethodLIFT(t *testing.T) {
	const r = 4
	opts := TrainOptions{Method: MethodLIFT, MethodArgs: map[string]string{"filter_rank": "32", "update_interval": "3"},
		Rank: r, Steps: 6, LR: 3e-3, Batch: 2, Ctx: 64, Seed: 5, Targets: []string{"q_proj", "down_proj"}}
	for _, fromGGUF := range []bool{false, true} {
		checkLIFT(t, checkMethod(t, opts, fromGGUF), r)
	}
}

// checkLIFT checks the parameter count and the sparse delta file of a LIFT run of rank r on q_proj and down_proj.
func checkLIFT(t *testing.T, run methodRun, r int) {
	c := run.l.m.Config
	d, q := c.Embd, c.Heads*c.HeadDim
	if want := c.Layers * int(prune.LoRABudget(q, d, r)+prune.LoRABudget(d, c.FF, r)); run.trainable != want {
		t.Errorf("%d trainable values, want Σ min((m+n)·r, m·n) = %d", run.trainable, want)
	}

	deltas, err := run.l.Deltas()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "delta.safetensors")
	if err := run.l.WriteSparseDelta(path); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := len(f.Tensors()); got != 4*len(deltas) {
		t.Fatalf("the sparse delta file holds %d tensors, want 4 for each of %d weights", got, len(deltas))
	}
	stored := 0
	for name, want := range deltas {
		view := func(suffix string) tensor.View {
			v, err := f.Tensor(name + suffix)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		shape, bits, offsets, values := view(".shape"), view(".bitmask"), view(".row_offsets"), view(".compressed")
		rows, cols := int(binary.LittleEndian.Uint64(shape.Data)), int(binary.LittleEndian.Uint64(shape.Data[8:]))
		mask, err := prune.MaskFromBits(rows, cols, bits.Data)
		if err != nil || rows*cols != len(want) {
			t.Fatalf("%s: shape %d×%d for %d values, bitmask error %v", name, rows, cols, len(want), err)
		}
		vals := make([]float32, values.Shape[0])
		tensor.ToFloat32(vals, values.Data, tensor.F32)
		got := make([]float32, rows*cols)
		next := 0
		for i := range rows {
			if off := int(binary.LittleEndian.Uint64(offsets.Data[8*i:])); off != next {
				t.Fatalf("%s: row %d starts at %d, want %d", name, i, off, next)
			}
			for j := range cols {
				if mask.Get(i, j) {
					got[i*cols+j] = vals[next]
					next++
				}
			}
		}
		if next != len(vals) || !slices.Equal(got, want) {
			t.Fatalf("%s: the sparse delta does not decompress to the update", name)
		}
		stored += len(vals)
	}
	t.Logf("sparse delta: %d non-zero entries of %d trainable", stored, run.trainable)
}

// TestLIFTMask: without a refresh, the entries that change are those of the principal-weight mask of the original
// weight, as package prune selects it (rank filter_rank, LoRA budget of rank r), and nearly all of them do.
func TestLIFTMask(t *testing.T) {
	m := tinyLlamaHF(t)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_train.txt")}
	const r, seed = 2, 9
	l := mustTrain(t, m, data, TrainOptions{Method: MethodLIFT, MethodArgs: map[string]string{"filter_rank": "16"},
		Rank: r, Steps: 3, LR: 1e-3, Batch: 2, Ctx: 32, Seed: seed, Targets: []string{"v_proj", "up_proj"}})
	deltas, err := l.Deltas()
	if err != nil {
		t.Fatal(err)
	}
	k := 0
	for i := range l.layers {
		for j, lin := range l.layers[i].linears() {
			if !lin.trained() {
				continue
			}
			w := lin.w
			w0 := make([]float32, w.rows*w.cols)
			if err := w.decodeRows(w0, 0, w.rows); err != nil {
				t.Fatal(err)
			}
			scores, err := prune.Score(w.rows, w.cols, w0, prune.ScoreOptions{Method: prune.Principal, Rank: 16,
				Seed: siteSeed(seed, i, targetNames[j])})
			if err != nil {
				t.Fatal(err)
			}
			mask, err := prune.Select(w.rows, w.cols, scores, prune.Selection{Budget: prune.Budget{Kind: prune.LoRA,
				Value: r}})
			if err != nil {
				t.Fatal(err)
			}
			changed := 0
			for e, v := range deltas[l.fileName(i, j, w)] {
				if v == 0 {
					continue
				}
				changed++
				if !mask.Get(e/w.cols, e%w.cols) {
					t.Fatalf("%s: entry (%d, %d) changed outside the principal-weight mask", w.name, e/w.cols,
						e%w.cols)
				}
			}
			if kept := int(mask.Kept()); changed < kept*9/10 || kept != int(prune.LoRABudget(w.rows, w.cols, r)) {
				t.Errorf("%s: %d of the mask's %d entries changed", w.name, changed, kept)
			}
			k += changed
		}
	}
	t.Logf("%d entries changed, all inside the masks", k)
}

// liftSite is a LIFT projection on a random rows×cols F32 weight for n rows of input.
func liftSite(t *testing.T, rng *rand.Rand, rows, cols, n int, m *liftMethod) *liftLinear {
	t.Helper()
	w, _ := testWeight(rng, rows, cols, tensor.F32)
	p, err := m.project(site{w: w, rows: n, seed: 77})
	if err != nil {
		t.Fatal(err)
	}
	return p.(*liftLinear)
}

// TestLIFTGradient: the sparse values' gradient is the dense gradient dyᵀ·x at their entries, and the pass computes
// with W + ΔW, both against float64.
func TestLIFTGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const rows, cols, n = 24, 40, 7
	p := liftSite(t, rng, rows, cols, n, &liftMethod{budget: 2, filterRank: 3, interval: 1, iters: 8})
	for i := range p.v {
		p.v[i] = float32(rng.NormFloat64())
	}
	x, dy := randVec(rng, n*cols, 1), randVec(rng, n*rows, 1)
	y, dx := make([]float32, n*rows), make([]float32, n*cols)
	p.forward(y, x, n, nil)
	p.backward(dx, dy, x, n, nil)
	delta := make([]float32, rows*cols)
	p.delta(delta)
	w := widen(p.w.f32)
	for e, d := range delta {
		w[e] += float64(d)
	}
	x64, dy64 := widen(x), widen(dy)
	worst := 0.0
	check := func(got float32, want float64) {
		worst = max(worst, math.Abs(float64(got)-want)/(1+math.Abs(want)))
	}
	for i, want := range linear64(x64, n, w, rows, cols) {
		check(y[i], want)
	}
	for s := range n {
		for c := range cols {
			var want float64
			for r := range rows {
				want += dy64[s*rows+r] * w[r*cols+c]
			}
			check(dx[s*cols+c], want)
		}
	}
	for i := range p.idx {
		e := p.entry(i)
		var want float64 // the dense gradient (dyᵀ·x) at entry e
		for s := range n {
			want += dy64[s*rows+e/cols] * x64[s*cols+e%cols]
		}
		check(p.dv[i], want)
	}
	if worst > 1e-5 {
		t.Errorf("forward, input gradient or sparse gradient off by %.2g (relative) from float64", worst)
	}
	if len(p.idx) != int(prune.LoRABudget(rows, cols, 2)) {
		t.Errorf("%d entries selected, want (m+n)·r = %d", len(p.idx), prune.LoRABudget(rows, cols, 2))
	}
}

// TestLIFTRefresh: a refresh selects the principal weights of the current weight; entries that stay keep their
// update and Adam moments, entries that enter start with zero moments, entries that leave keep their update in the
// weight, so the dense update is unchanged.
func TestLIFTRefresh(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const rows, cols = 20, 32
	lm := &liftMethod{budget: 2, filterRank: 2, interval: 1, iters: 8}
	p := liftSite(t, rng, rows, cols, 1, lm)
	k := len(p.idx)
	for i := range p.v {
		p.v[i] = float32(2 * rng.NormFloat64())
	}
	lm.opt = &AdamW{m: [][]float32{randVec(rng, k, 1)}, v: [][]float32{randVec(rng, k, 1)}}
	type state struct{ v, m, vel float32 }
	before := map[int]state{}
	for i := range p.idx {
		before[p.entry(i)] = state{p.v[i], lm.opt.m[0][i], lm.opt.v[0][i]}
	}
	want := make([]float32, rows*cols)
	p.delta(want)
	weight := slices.Clone(p.cur) // W + ΔW, which the mask is now computed from
	scores, err := prune.Score(rows, cols, weight, prune.ScoreOptions{Method: prune.Principal, Rank: 2, Seed: p.seed + 4})
	if err != nil {
		t.Fatal(err)
	}
	mask, err := prune.Select(rows, cols, scores, prune.Selection{Budget: prune.Budget{Kind: prune.LoRA, Value: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.refresh(4, 0); err != nil {
		t.Fatal(err)
	}
	stayed, entered := 0, 0
	for i := range p.idx {
		e := p.entry(i)
		if !mask.Get(e/cols, e%cols) || i > 0 && p.entry(i-1) >= e {
			t.Fatalf("slot %d holds entry %d, not the next of the current weight's mask", i, e)
		}
		got := state{p.v[i], lm.opt.m[0][i], lm.opt.v[0][i]}
		if old, ok := before[e]; ok {
			stayed++
			if got != old {
				t.Errorf("entry %d stayed selected but its value and moments went from %v to %v", e, old, got)
			}
		} else {
			entered++
			if got != (state{}) {
				t.Errorf("entry %d entered with value and moments %v, want zero", e, got)
			}
		}
	}
	if len(p.idx) != k || entered == 0 || stayed == 0 {
		t.Fatalf("%d entries after the refresh (want %d): %d stayed, %d entered; the test needs both", len(p.idx),
			k, stayed, entered)
	}
	got := make([]float32, rows*cols)
	p.delta(got)
	for e := range got {
		// An entry that left is kept as W + ΔW rounded to float32: ΔW back from it is within W's rounding.
		if math.Abs(float64(got[e]-want[e])) > 1e-6*(1+math.Abs(float64(p.w.f32[e]))) {
			t.Fatalf("entry %d: update %v after the refresh, %v before", e, got[e], want[e])
		}
	}
	t.Logf("refresh: %d entries stayed, %d entered of %d", stayed, entered, k)
}

// TestLIFTRejects: malformed arguments are refused with the key and what it takes.
func TestLIFTRejects(t *testing.T) {
	m := tinyLlamaHF(t)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_val.txt")[:3000]}
	for _, args := range []map[string]string{{"select": "middle"}, {"svd": "exact"}, {"update_interval": "0"},
		{"filter_rank": "x"}} {
		_, _, err := Train(m, data, TrainOptions{Method: MethodLIFT, MethodArgs: args, Steps: 1, Batch: 1, Ctx: 4})
		for k := range args {
			if err == nil || !strings.Contains(err.Error(), k) {
				t.Errorf("lift %v: error %v, want one naming %s", args, err, k)
			}
		}
	}
}
