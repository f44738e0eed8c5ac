package prune

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

type entry struct{ i, j int }

// kept lists the kept entries of a mask in row-major order.
func kept(m *Mask) []entry {
	var e []entry
	for i := range m.Rows {
		for j := range m.Cols {
			if m.Get(i, j) {
				e = append(e, entry{i, j})
			}
		}
	}
	return e
}

func dropped(m *Mask) []entry {
	var e []entry
	for i := range m.Rows {
		for j := range m.Cols {
			if !m.Get(i, j) {
				e = append(e, entry{i, j})
			}
		}
	}
	return e
}

func mustSelect(t *testing.T, rows, cols int, w []float32, so ScoreOptions, sel Selection) *Mask {
	t.Helper()
	s, err := Score(rows, cols, w, so)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Select(rows, cols, s, sel)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestLIFTOracle is spectral-prune-merge.md §8.5: W = 5·u₁v₁ᵀ + 4·u₂v₂ᵀ, k = 2. Magnitude keeps the two largest
// |W|, LIFT (rank 1, largest) the two largest entries of the rank-1 approximation, and the released code's
// lift_sparse (largest=False) the two smallest — the columns the rank-1 approximation zeroes.
func TestLIFTOracle(t *testing.T) {
	w := []float32{0.84, 2.88, -3.2, 1.12, 3.84, 2.4}
	two := Selection{Budget: Budget{Kind: Count, Value: 2}}
	for _, c := range []struct {
		name string
		so   ScoreOptions
		sel  Selection
		want []entry
	}{
		{"magnitude", ScoreOptions{Method: Magnitude}, two, []entry{{0, 2}, {1, 1}}},
		{"lift largest", ScoreOptions{Method: Principal, Rank: 1, SVD: SVDFull}, two, []entry{{0, 1}, {1, 1}}},
		{"lift_sparse smallest", ScoreOptions{Method: Principal, Rank: 1, SVD: SVDFull},
			Selection{Budget: two.Budget, Smallest: true}, []entry{{0, 2}, {1, 2}}},
		{"lift largest randomized", ScoreOptions{Method: Principal, Rank: 1, SVD: SVDRandomized}, two,
			[]entry{{0, 1}, {1, 1}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := kept(mustSelect(t, 2, 3, w, c.so, c.sel)); !slices.Equal(got, c.want) {
				t.Errorf("kept %v, want %v", got, c.want)
			}
		})
	}
	// The rank-1 approximation itself: [[0.84, 2.88, 0], [1.12, 3.84, 0]].
	s, err := Score(2, 3, w, ScoreOptions{Method: Principal, Rank: 1, SVD: SVDFull})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []float64{0.84, 2.88, 0, 1.12, 3.84, 0} {
		if math.Abs(float64(s[i])-want) > 1e-6 {
			t.Errorf("rank-1 score %d = %v, want %v", i, s[i], want)
		}
	}
}

// TestLoRABudgetOracle is the budget table of §8.5.
func TestLoRABudgetOracle(t *testing.T) {
	for _, c := range []struct {
		m, n, r int
		k       int64
		pct     float64
	}{
		{4096, 4096, 128, 1048576, 6.250},
		{11008, 4096, 128, 1933312, 4.288},
		{4096, 14336, 128, 2359296, 4.018},
		{1024, 4096, 128, 655360, 15.625},
		{8, 8, 128, 64, 100},
	} {
		k := LoRABudget(c.m, c.n, c.r)
		pct := 100 * float64(k) / float64(c.m*c.n)
		if k != c.k || math.Abs(pct-c.pct) > 5e-4 {
			t.Errorf("%d×%d r=%d: k = %d (%.3f%%), want %d (%.3f%%)", c.m, c.n, c.r, k, pct, c.k, c.pct)
		}
		sel := Selection{Budget: Budget{Kind: LoRA, Value: float64(c.r)}}
		if got := sel.Kept(c.m, c.n); got != c.k {
			t.Errorf("%d×%d: Selection.Kept = %d, want %d", c.m, c.n, got, c.k)
		}
	}
}

// TestPruningOracles is §8.6: magnitude prunes exactly ⌊6·⅓⌋ = 2 entries layer-wise (wanda's prune_magnitude would
// prune a third, the entry at the threshold); Wanda with ‖X‖ = [1, 2, 0.1] prunes the lowest third of each row.
func TestPruningOracles(t *testing.T) {
	w := []float32{1, -2, 3, 4, 0.5, -1.5}
	third := Budget{Kind: Fraction, Value: 1.0 / 3, Drop: true}
	m := mustSelect(t, 2, 3, w, ScoreOptions{Method: Magnitude}, Selection{Budget: third})
	if got, want := dropped(m), []entry{{0, 0}, {1, 1}}; !slices.Equal(got, want) {
		t.Errorf("magnitude dropped %v, want %v", got, want)
	}
	norms := []float32{1, 2, 0.1}
	s, err := Score(2, 3, w, ScoreOptions{Method: Wanda, Norms: norms})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []float32{1, 4, 0.3, 4, 1, 0.15} {
		if math.Abs(float64(s[i]-want)) > 1e-6 {
			t.Errorf("wanda score %d = %v, want %v", i, s[i], want)
		}
	}
	m = mustSelect(t, 2, 3, w, ScoreOptions{Method: Wanda, Norms: norms}, Selection{Budget: third, Group: PerRow})
	if got, want := dropped(m), []entry{{0, 2}, {1, 2}}; !slices.Equal(got, want) {
		t.Errorf("wanda per row dropped %v, want %v", got, want)
	}
	// The same scores ranked over the whole matrix drop (0,2) and (1,2) too, but a matrix-wide third of a 2×6 Wanda
	// score differs from the per-row choice: that is the point of Wanda's grouping.
	w2 := []float32{9, 8, 7, 6, 5, 4, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6}
	ones := []float32{1, 1, 1, 1, 1, 1}
	half := Budget{Kind: Fraction, Value: 0.5}
	row := mustSelect(t, 2, 6, w2, ScoreOptions{Method: Wanda, Norms: ones}, Selection{Budget: half, Group: PerRow})
	mat := mustSelect(t, 2, 6, w2, ScoreOptions{Method: Wanda, Norms: ones}, Selection{Budget: half})
	if row.RowKept(0) != 3 || row.RowKept(1) != 3 || mat.RowKept(0) != 6 || mat.RowKept(1) != 0 {
		t.Errorf("per-row kept %d+%d, per-matrix kept %d+%d; want 3+3 and 6+0",
			row.RowKept(0), row.RowKept(1), mat.RowKept(0), mat.RowKept(1))
	}
}

// Test2of4Oracle is §8.6: 2:4 on [0.1, −3, 2, 0.5, 4, −0.2, 0.3, 1] keeps indices {1, 2, 4, 7}.
func Test2of4Oracle(t *testing.T) {
	w := []float32{0.1, -3, 2, 0.5, 4, -0.2, 0.3, 1}
	m := mustSelect(t, 1, 8, w, ScoreOptions{Method: Magnitude}, Selection{Structure: Structure{2, 4}})
	if got, want := kept(m), []entry{{0, 1}, {0, 2}, {0, 4}, {0, 7}}; !slices.Equal(got, want) {
		t.Errorf("kept %v, want %v", got, want)
	}
	x := slices.Clone(w)
	m.Apply(x)
	if want := []float32{0, -3, 2, 0, 4, 0, 0, 1}; !slices.Equal(x, want) {
		t.Errorf("applied: %v, want %v", x, want)
	}
	// Every group of a random matrix keeps exactly N, and they are the largest of the group.
	rng := rand.New(rand.NewPCG(1, 2))
	const rows, cols = 16, 64
	r := make([]float32, rows*cols)
	for i := range r {
		r[i] = float32(rng.NormFloat64())
	}
	for _, st := range []Structure{{2, 4}, {4, 8}, {1, 4}} {
		m := mustSelect(t, rows, cols, r, ScoreOptions{Method: Magnitude}, Selection{Structure: st})
		for i := range rows {
			for g := 0; g < cols; g += st.M {
				var in, out []float64
				for j := g; j < g+st.M; j++ {
					if m.Get(i, j) {
						in = append(in, math.Abs(float64(r[i*cols+j])))
					} else {
						out = append(out, math.Abs(float64(r[i*cols+j])))
					}
				}
				if len(in) != st.N || len(out) > 0 && slices.Min(in) < slices.Max(out) {
					t.Fatalf("%v row %d group %d: kept %v, dropped %v", st, i, g, in, out)
				}
			}
		}
	}
	if _, err := Select(1, 6, make([]float32, 6), Selection{Structure: Structure{2, 4}}); err == nil {
		t.Error("2:4 on 6 columns: no error")
	}
}

// TestSelectAgainstSort checks the radix selection against a full sort on matrices with many ties, negative and
// zero scores, for both directions and both groups.
func TestSelectAgainstSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := range 40 {
		rows, cols := 1+rng.IntN(9), 1+rng.IntN(40)
		s := make([]float32, rows*cols)
		for i := range s {
			switch rng.IntN(4) {
			case 0:
				s[i] = float32(rng.IntN(3)) // ties
			case 1:
				s[i] = -float32(rng.NormFloat64())
			default:
				s[i] = float32(rng.NormFloat64())
			}
		}
		b := Budget{Kind: Fraction, Value: rng.Float64()}
		for _, smallest := range []bool{false, true} {
			for _, g := range []Group{PerMatrix, PerRow} {
				m, err := Select(rows, cols, s, Selection{Budget: b, Group: g, Smallest: smallest})
				if err != nil {
					t.Fatal(err)
				}
				groups := [][2]int{{0, rows * cols}}
				if g == PerRow {
					groups = groups[:0]
					for i := range rows {
						groups = append(groups, [2]int{i * cols, (i + 1) * cols})
					}
				}
				for _, gr := range groups {
					idx := make([]int, 0, gr[1]-gr[0])
					for x := gr[0]; x < gr[1]; x++ {
						idx = append(idx, x)
					}
					slices.SortStableFunc(idx, func(a, c int) int {
						sa, sc := s[a], s[c]
						if smallest {
							sa, sc = -sa, -sc
						}
						switch {
						case sa > sc:
							return -1
						case sa < sc:
							return 1
						}
						return 0
					})
					k := int(b.kept(int64(len(idx)), rows, cols))
					for r, x := range idx {
						if got := m.Get(x/cols, x%cols); got != (r < k) {
							t.Fatalf("trial %d smallest=%v group=%v: entry %d (rank %d of %d, k=%d) kept=%v",
								trial, smallest, g, x, r, len(idx), k, got)
						}
					}
				}
			}
		}
	}
}

// TestBudgetCounts pins the fraction-to-count rule, including decimal fractions that are not exact in binary.
func TestBudgetCounts(t *testing.T) {
	for _, c := range []struct {
		s    string
		drop bool
		g    int64
		want int64
	}{
		{"0.5", false, 7, 4}, {"0.5", true, 7, 4}, {"0.7", false, 10, 7}, {"0.3", true, 10, 7},
		{"0.9", true, 10, 1}, {"0.1", false, 10, 1}, {"50%", false, 6, 3}, {"count:4", false, 10, 4},
		{"count:4", true, 10, 6}, {"count:40", false, 10, 10}, {"1", false, 5, 5}, {"0", false, 5, 0},
	} {
		b, err := ParseBudget(c.s, c.drop)
		if err != nil {
			t.Fatal(err)
		}
		if got := b.kept(c.g, 1, int(c.g)); got != c.want {
			t.Errorf("%s drop=%v of %d: kept %d, want %d", c.s, c.drop, c.g, got, c.want)
		}
	}
	for _, bad := range []string{"1.5", "-0.1", "count:-1", "lora:x", "foo:3", "half"} {
		if _, err := ParseBudget(bad, false); err == nil {
			t.Errorf("ParseBudget(%q): no error", bad)
		}
	}
	if _, err := ParseBudget("lora:8", true); err == nil {
		t.Error("dropping a LoRA budget: no error")
	}
}

// gapMatrix is a rows×cols matrix of rank `rank` with singular values 10..1 over noise of norm ~1e-3: a clear gap
// after the rank-th singular value.
func gapMatrix(rows, cols, rank int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 9))
	w := make([]float64, rows*cols)
	for range rank {
		sv := 1 + 9*rng.Float64()
		u := make([]float64, rows)
		v := make([]float64, cols)
		for i := range u {
			u[i] = rng.NormFloat64() / math.Sqrt(float64(rows))
		}
		for j := range v {
			v[j] = rng.NormFloat64() / math.Sqrt(float64(cols))
		}
		for i := range rows {
			for j := range cols {
				w[i*cols+j] += sv * u[i] * v[j]
			}
		}
	}
	out := make([]float32, len(w))
	for i := range w {
		out[i] = float32(w[i] + 1e-3*rng.NormFloat64()/math.Sqrt(float64(rows+cols)))
	}
	return out
}

// TestRandomizedMatchesFull is the acceptance check: on a matrix whose spectrum has a clear gap after σ_r,
// the principal mask from the randomized SVD equals the one from the full SVD, for LIFT's budget and for 50 %.
func TestRandomizedMatchesFull(t *testing.T) {
	const rows, cols, r = 300, 200, 12
	w := gapMatrix(rows, cols, r, 5)
	for _, sel := range []Selection{
		{Budget: Budget{Kind: LoRA, Value: 4}},
		{Budget: Budget{Kind: Fraction, Value: 0.5}},
		{Budget: Budget{Kind: Fraction, Value: 0.5}, Group: PerRow},
		{Budget: Budget{Kind: LoRA, Value: 4}, Smallest: true},
	} {
		full := mustSelect(t, rows, cols, w, ScoreOptions{Method: Principal, Rank: r, SVD: SVDFull}, sel)
		rnd := mustSelect(t, rows, cols, w, ScoreOptions{Method: Principal, Rank: r, SVD: SVDRandomized}, sel)
		if !full.Equal(rnd) {
			t.Errorf("%+v: masks differ (full kept %d, randomized %d, %d entries differ)", sel, full.Kept(), rnd.Kept(),
				diffCount(full, rnd))
		}
		if full.Kept() != sel.Kept(rows, cols) {
			t.Errorf("%+v: kept %d, want %d", sel, full.Kept(), sel.Kept(rows, cols))
		}
	}
	// The principal mask is not the magnitude mask: sparse outliers, far above the typical entry but below every
	// signal singular value, are kept by magnitude and smoothed away by the rank-r approximation.
	sel := Selection{Budget: Budget{Kind: Fraction, Value: 0.05}}
	w2 := slices.Clone(w)
	for i := 0; i < len(w2); i += 997 {
		w2[i] = 0.5
	}
	p := mustSelect(t, rows, cols, w2, ScoreOptions{Method: Principal, Rank: r, SVD: SVDFull}, sel)
	m2 := mustSelect(t, rows, cols, w2, ScoreOptions{Method: Magnitude}, sel)
	if !m2.Get(0, 0) || p.Get(0, 0) {
		t.Errorf("outlier (0,0): kept by principal %v (want false), by magnitude %v (want true)", p.Get(0, 0), m2.Get(0, 0))
	}
}

func diffCount(a, b *Mask) int {
	n := 0
	for i := range a.Rows {
		for j := range a.Cols {
			if a.Get(i, j) != b.Get(i, j) {
				n++
			}
		}
	}
	return n
}

// TestFullRankIsMagnitude: at r = min(m, n) the approximation is W, so the principal score is |W| exactly.
func TestFullRankIsMagnitude(t *testing.T) {
	w := gapMatrix(20, 8, 3, 1)
	p, err := Score(20, 8, w, ScoreOptions{Method: Principal, Rank: 500})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := Score(20, 8, w, ScoreOptions{Method: Magnitude})
	if !slices.Equal(p, m) {
		t.Error("full-rank principal score differs from |W|")
	}
}

// TestDeterminism: equal inputs and seeds give equal masks; different seeds give different random masks.
func TestDeterminism(t *testing.T) {
	w := gapMatrix(128, 96, 4, 2)
	sel := Selection{Budget: Budget{Kind: Fraction, Value: 0.3}}
	for _, so := range []ScoreOptions{
		{Method: Principal, Rank: 8, SVD: SVDRandomized, Seed: 7},
		{Method: Random, Seed: 7},
	} {
		a := mustSelect(t, 128, 96, w, so, sel)
		b := mustSelect(t, 128, 96, w, so, sel)
		if !a.Equal(b) {
			t.Errorf("%v: two runs differ", so.Method)
		}
	}
	a := mustSelect(t, 128, 96, w, ScoreOptions{Method: Random, Seed: 1}, sel)
	b := mustSelect(t, 128, 96, w, ScoreOptions{Method: Random, Seed: 2}, sel)
	if a.Equal(b) || a.Kept() != b.Kept() {
		t.Errorf("random masks of seeds 1 and 2: equal=%v, kept %d and %d", a.Equal(b), a.Kept(), b.Kept())
	}
}

// TestMaskBits is the bitmask oracle of §8.6: row [1,0,1,1,0,0,0,0,1] packs little-endian to [13, 1].
func TestMaskBits(t *testing.T) {
	m := NewMask(3, 9)
	for _, j := range []int{0, 2, 3, 8} {
		m.Set(0, j, true)
	}
	m.Set(2, 4, true)
	m.Set(2, 5, true)
	if got := m.Row(0); !slices.Equal(got, []byte{13, 1}) {
		t.Errorf("row bytes %v, want [13 1]", got)
	}
	if m.RowKept(0) != 4 || m.Kept() != 6 || math.Abs(m.Sparsity()-21.0/27) > 1e-15 {
		t.Errorf("kept %d, sparsity %v", m.Kept(), m.Sparsity())
	}
	if _, err := MaskFromBits(3, 9, m.Bits); err != nil {
		t.Error(err)
	}
	bad := slices.Clone(m.Bits)
	bad[1] |= 2 // column 9 of a 9-column row
	if _, err := MaskFromBits(3, 9, bad); err == nil {
		t.Error("padding bit set: no error")
	}
	if _, err := MaskFromBits(3, 9, m.Bits[:5]); err == nil {
		t.Error("short bits: no error")
	}
	o := NewMask(3, 9)
	o.Set(0, 0, true)
	o.Set(1, 1, true)
	and, _ := m.And(o)
	or, _ := m.Or(o)
	if and.Kept() != 1 || !and.Get(0, 0) || or.Kept() != 7 || !or.Get(1, 1) {
		t.Errorf("and kept %d, or kept %d", and.Kept(), or.Kept())
	}
	if _, err := m.And(NewMask(3, 8)); err == nil {
		t.Error("and of different sizes: no error")
	}
}

func TestScoreErrors(t *testing.T) {
	w := []float32{1, 2, 3, 4}
	if _, err := Score(2, 2, w, ScoreOptions{Method: Wanda}); err != ErrNoNorms {
		t.Errorf("wanda without norms: %v", err)
	}
	if _, err := Score(2, 2, w, ScoreOptions{Method: Wanda, Norms: []float32{1}}); err == nil {
		t.Error("wanda with 1 norm for 2 columns: no error")
	}
	if _, err := Score(2, 2, []float32{1, float32(math.NaN()), 3, 4}, ScoreOptions{Method: Principal, Rank: 1}); err == nil {
		t.Error("principal score of a NaN matrix: no error")
	}
	if _, err := Select(2, 2, []float32{1, float32(math.NaN()), 3, 4}, Selection{Budget: Budget{Kind: Count, Value: 1}}); err == nil {
		t.Error("selecting NaN scores: no error")
	}
	if _, err := Select(2, 2, w, Selection{}); err == nil {
		t.Error("no budget: no error")
	}
	if _, err := Select(2, 2, w, Selection{Budget: Budget{Kind: LoRA, Value: 1}, Group: PerRow}); err == nil {
		t.Error("LoRA budget per row: no error")
	}
}
