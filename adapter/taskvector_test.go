package adapter

import (
	"cmp"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// fixedSource replays Uint64 values, so that rand.Float64 yields a chosen mask: 0 → 0.0 (kept for any density),
// 1<<52 → 0.5 (dropped at density 0.5; rand.Float64 keeps the low 53 bits).
type fixedSource []uint64

func (s *fixedSource) Uint64() uint64 {
	v := (*s)[0]
	*s = (*s)[1:]
	return v
}

func closeTo(t *testing.T, what string, got []float32, want ...float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %v, want %v", what, got, want)
	}
	for i := range got {
		if math.Abs(float64(got[i])-want[i]) > 1e-6*max(1, math.Abs(want[i])) {
			t.Errorf("%s: %v, want %v", what, got, want)
			return
		}
	}
}

// TestTaskVectorOracles runs the merge oracles of spectral-prune-merge.md §8.7 through LookupTaskMethod under both
// semantics.
func TestTaskVectorOracles(t *testing.T) {
	for _, c := range []struct {
		name, method string
		sem          Semantics
		tvs          [][]float32
		w, density   []float64
		want         []float64
	}{
		{"TIES no trim peft", "ties", SemanticsPEFT, [][]float32{{1, -2, 3, 0.5}, {-1, -1, 2, 1}}, []float64{1, 1}, []float64{1, 1},
			[]float64{1, -1.5, 2.5, 0.75}},
		{"TIES no trim mergekit", "ties", SemanticsMergekit, [][]float32{{1, -2, 3, 0.5}, {-1, -1, 2, 1}}, []float64{1, 1}, []float64{1, 1},
			[]float64{1, -1.5, 2.5, 0.75}},
		{"TIES trimmed peft", "ties", SemanticsPEFT, [][]float32{{1, -2, 3, 0.5}, {-1, -1.5, 2, 1.2}}, []float64{1, 1}, []float64{0.5, 0.5},
			[]float64{0, -1.75, 2.5, 0}},
		{"TIES trimmed mergekit", "ties", SemanticsMergekit, [][]float32{{1, -2, 3, 0.5}, {-1, -1.5, 2, 1.2}}, []float64{1, 1}, []float64{0.5, 0.5},
			[]float64{0, -1.75, 2.5, 0}},
		{"TIES sign divergence peft", "ties", SemanticsPEFT, [][]float32{{1}, {-1.5}}, []float64{1, 0.5}, []float64{1, 1},
			[]float64{-0.75}},
		{"TIES sign divergence mergekit", "ties", SemanticsMergekit, [][]float32{{1}, {-1.5}}, []float64{1, 0.5}, []float64{1, 1},
			[]float64{1}},
		// task_arithmetic: base [1,1] + 0.5·[1,0] + 0.5·[0,2] = [1.5, 2]; the base is added back below.
		{"task arithmetic", "task_arithmetic", SemanticsMergekit, [][]float32{{1, 0}, {0, 2}}, []float64{0.5, 0.5}, []float64{1, 1},
			[]float64{0.5, 1}},
		{"magnitude_prune peft", "magnitude_prune", SemanticsPEFT, [][]float32{{1, -2, 3, 0.5}, {-1, -1.5, 2, 1.2}}, []float64{2, 1}, []float64{0.5, 0.5},
			[]float64{0, -5.5, 8, 0}},
	} {
		m, err := LookupTaskMethod(c.method, c.sem)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]float32, len(c.want))
		if err := m.Merge(got, c.tvs, c.w, c.density, 1, "t"); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		closeTo(t, c.name, got, c.want...)
	}
}

// TestDAREFixedMask is §8.7's DARE oracle: mask [1,0,1,0] on δ = [2,4,6,8] at density 0.5 rescales to [4,0,12,0]
// in PEFT (÷ density) and to [5,0,15,0] in mergekit (L1 match, 20/8).
func TestDAREFixedMask(t *testing.T) {
	for _, c := range []struct {
		sem  Semantics
		want []float64
	}{{SemanticsPEFT, []float64{4, 0, 12, 0}}, {SemanticsMergekit, []float64{5, 0, 15, 0}}} {
		m, err := LookupTaskMethod("dare_linear", c.sem)
		if err != nil {
			t.Fatal(err)
		}
		src := fixedSource{0, 1 << 52, 0, 1 << 52}
		tv := []float32{2, 4, 6, 8}
		if err := m.Sparsifier.Apply(tv, 0.5, rand.New(&src)); err != nil {
			t.Fatal(err)
		}
		closeTo(t, c.sem.String(), tv, c.want...)
	}
}

// TestBreadcrumbs is §8.7's edge case: 100 entries at density 0.9, gamma 0.01 drop the largest and the 9
// smallest; 10 entries keep 9 (mergekit's -0 slice would keep none).
func TestBreadcrumbs(t *testing.T) {
	s := TaskSparsifier{Method: SparsifyBreadcrumbs, Gamma: 0.01}
	for _, n := range []int{100, 10} {
		tv := make([]float32, n)
		perm := rand.New(rand.NewPCG(1, 2)).Perm(n)
		for i, p := range perm {
			tv[i] = float32(p+1) * float32(1-2*(i%2)) // magnitudes 1..n, mixed signs, shuffled
		}
		if err := s.Apply(tv, 0.9, nil); err != nil {
			t.Fatal(err)
		}
		var kept []int
		for _, v := range tv {
			if v != 0 {
				kept = append(kept, int(math.Abs(float64(v))))
			}
		}
		slices.Sort(kept)
		lo, hi := 10, 99 // n = 100: drop 1..9 and 100
		if n == 10 {
			lo, hi = 2, 10
		}
		if len(kept) != hi-lo+1 || kept[0] != lo || kept[len(kept)-1] != hi {
			t.Errorf("n %d: kept %v, want magnitudes %d..%d", n, kept, lo, hi)
		}
	}
}

// TestMagnitudeSelection checks the radix selection against a sort, including ties (broken by lower index),
// zeros, negative values and the k = 0 and k = n ends.
func TestMagnitudeSelection(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for trial := range 200 {
		n := 1 + r.IntN(300)
		tv := make([]float32, n)
		for i := range tv {
			switch trial % 3 {
			case 0:
				tv[i] = float32(r.NormFloat64())
			case 1:
				tv[i] = float32(r.IntN(5) - 2) // many ties and zeros
			default:
				tv[i] = float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(60)-30)))
			}
		}
		lo := r.IntN(n + 1)
		hi := lo + r.IntN(n-lo+1)
		order := make([]int, n)
		for i := range order {
			order[i] = i
		}
		slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(math.Abs(float64(tv[b])), math.Abs(float64(tv[a]))) })
		want := make([]float32, n)
		for _, i := range order[lo:hi] {
			want[i] = tv[i]
		}
		got := slices.Clone(tv)
		keepRanks(got, lo, hi)
		if !slices.Equal(got, want) {
			t.Fatalf("trial %d: ranks [%d,%d) of %v: got %v, want %v", trial, lo, hi, tv, got, want)
		}
	}
}

// TestTaskRandStream pins the documented stream (PCG seeded with seed and FNV-1a-64 of name + index) and that
// DARE masks depend only on (seed, tensor, task).
func TestTaskRandStream(t *testing.T) {
	h := fnv.New64a()
	h.Write([]byte("layers.0.q"))
	h.Write(binary.LittleEndian.AppendUint64(nil, 3))
	want := rand.New(rand.NewPCG(42, h.Sum64())).Uint64()
	if got := TaskRand(42, "layers.0.q", 3).Uint64(); got != want {
		t.Errorf("TaskRand first value %d, want %d", got, want)
	}
	m, _ := LookupTaskMethod("dare_ties", SemanticsPEFT)
	mk := func(seed uint64, task int) []float32 {
		tv := make([]float32, 10000)
		for i := range tv {
			tv[i] = 1
		}
		if err := m.Sparsifier.Apply(tv, 0.3, TaskRand(seed, "x", task)); err != nil {
			t.Fatal(err)
		}
		return tv
	}
	a, b, c := mk(7, 0), mk(7, 0), mk(7, 1)
	if !slices.Equal(a, b) {
		t.Error("same seed, tensor and task: different masks")
	}
	if slices.Equal(a, c) {
		t.Error("tasks 0 and 1 share a mask")
	}
	kept := 0
	for _, v := range a {
		if v != 0 {
			kept++
			if math.Abs(float64(v)-1/0.3) > 1e-6 {
				t.Fatalf("kept entry %g, want 1/0.3", v)
			}
		}
	}
	// Binomial(10000, 0.3): σ ≈ 46; 5σ bounds.
	if kept < 2770 || kept > 3230 {
		t.Errorf("kept %d of 10000 at density 0.3", kept)
	}
}

func TestTaskVectorErrors(t *testing.T) {
	s := TaskSparsifier{Method: SparsifyMagnitude}
	for _, d := range []float64{0, -0.1, 1.5, math.NaN()} {
		if err := s.Apply([]float32{1}, d, nil); !errors.Is(err, ErrDensity) {
			t.Errorf("density %g: %v, want ErrDensity", d, err)
		}
	}
	if err := (TaskSparsifier{Method: SparsifyRandom}).Apply([]float32{1, 2}, 0.5, nil); err == nil {
		t.Error("random sparsification without a source: no error")
	}
	if _, err := LookupTaskMethod("breadcrumbs", SemanticsPEFT); err == nil {
		t.Error("PEFT breadcrumbs: no error")
	}
	if _, err := LookupTaskMethod("della", SemanticsMergekit); err == nil {
		t.Error("unknown method: no error")
	}
	if err := (TaskCombiner{}).Combine(make([]float32, 2), [][]float32{{1, 2}, {1}}, []float64{1, 1}); err == nil {
		t.Error("task vectors of different lengths: no error")
	}
	// Density 1 leaves the vector as it is, rescaling included (PEFT and mergekit both return early).
	tv := []float32{1, 2}
	if err := (TaskSparsifier{Method: SparsifyRandom, Rescale: RescaleDensity}).Apply(tv, 1, nil); err != nil || tv[0] != 1 || tv[1] != 2 {
		t.Errorf("density 1: %v %v", tv, err)
	}
}

// TestConsensusCount: "frequency"/"count" elects by the number of signs, not their sizes; mergekit counts the
// signs of weighted entries (a negative weight flips one), and normalize divides by the agreeing weights.
func TestConsensusCount(t *testing.T) {
	tvs := [][]float32{{3}, {-1}, {-1}}
	peft := TaskCombiner{Semantics: SemanticsPEFT, Consensus: ConsensusCount, Lambda: 1}
	got := make([]float32, 1)
	if err := peft.Combine(got, tvs, []float64{1, 1, 1}); err != nil {
		t.Fatal(err)
	}
	closeTo(t, "peft frequency", got, -1)
	mk := TaskCombiner{Semantics: SemanticsMergekit, Consensus: ConsensusCount, Normalize: true, Lambda: 1}
	if err := mk.Combine(got, tvs, []float64{1, -1, 2}); err != nil {
		t.Fatal(err)
	}
	// Weighted: [3, 1, -2] → two positive: (3 + 1) / (1 − 1) → divisor 0 counts as 1.
	closeTo(t, "mergekit count", got, 4)
}

func BenchmarkTaskSparsifyMagnitude(b *testing.B) {
	tv := make([]float32, 1<<22)
	r := rand.New(rand.NewPCG(1, 1))
	for i := range tv {
		tv[i] = float32(r.NormFloat64())
	}
	work := make([]float32, len(tv))
	s := TaskSparsifier{Method: SparsifyMagnitude}
	b.SetBytes(int64(4 * len(tv)))
	for b.Loop() {
		copy(work, tv)
		if err := s.Apply(work, 0.2, nil); err != nil {
			b.Fatal(err)
		}
	}
}
