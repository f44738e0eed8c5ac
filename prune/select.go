package prune

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// BudgetKind says how a Budget counts entries.
type BudgetKind uint8

const (
	// NoBudget is the zero Budget: no count given (valid only with an N:M structure, which fixes the count).
	NoBudget BudgetKind = iota
	// Fraction is a share of each group's entries.
	Fraction
	// Count is a number of entries per group.
	Count
	// LoRA is the parameter budget of a rank-r LoRA on the matrix, k = min((m+n)·r, m·n): LIFT's per-matrix
	// budget (spectral-prune-merge.md §3.1 step 3). Value is r.
	LoRA
)

// Budget is how many entries of each group a selection keeps, or with Drop set how many it removes.
//
// Fractions are turned into counts the way Wanda does (lib/prune.py: int(numel·sparsity) entries are pruned),
// without magnitude pruning's extra entry at the threshold (§4.1): dropping a fraction s of g entries removes exactly
// ⌊g·s⌋, and keeping a fraction f keeps exactly g − ⌊g·(1−f)⌋ = ⌈g·f⌉. A relative slack of 1e-12 absorbs the
// binary representation of decimal fractions (10·0.7 is 7.000000000000001).
type Budget struct {
	Kind  BudgetKind
	Value float64 // the fraction in [0, 1], the count, or the LoRA rank
	Drop  bool    // Value counts removed entries (Fraction and Count only)
}

// ParseBudget reads a budget: "0.05" or "5%" (a fraction), "count:N" (N entries per group) or "lora:R" (the
// parameter count of a rank-R LoRA, per matrix). drop marks the budget as the entries removed.
func ParseBudget(s string, drop bool) (Budget, error) {
	b := Budget{Drop: drop}
	kind, val, found := strings.Cut(s, ":")
	switch {
	case !found:
		b.Kind = Fraction
		num, pct := strings.CutSuffix(s, "%")
		f, err := strconv.ParseFloat(num, 64)
		if err != nil {
			return b, fmt.Errorf("budget %q: want a fraction (0.5), a percentage (50%%), count:N or lora:R", s)
		}
		if pct {
			f /= 100
		}
		b.Value = f
	case kind == "count" || kind == "lora":
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			return b, fmt.Errorf("budget %q: %s needs a whole number", s, kind)
		}
		b.Kind, b.Value = Count, float64(n)
		if kind == "lora" {
			b.Kind = LoRA
		}
	default:
		return b, fmt.Errorf("budget %q: unknown kind %q; want count:N or lora:R", s, kind)
	}
	return b, b.check()
}

func (b Budget) check() error {
	switch b.Kind {
	case NoBudget:
	case Fraction:
		if !(b.Value >= 0 && b.Value <= 1) {
			return fmt.Errorf("budget: fraction %v is outside [0, 1]", b.Value)
		}
	case Count, LoRA:
		if !(b.Value >= 0 && b.Value <= 1<<53) || b.Value != math.Trunc(b.Value) {
			return fmt.Errorf("budget: %v is not a count", b.Value)
		}
		if b.Kind == LoRA && b.Drop {
			return errors.New("budget: a LoRA budget counts kept entries; it cannot be dropped")
		}
	default:
		return fmt.Errorf("budget: unknown kind %d", b.Kind)
	}
	return nil
}

// String formats the budget as ParseBudget reads it (without the drop flag).
func (b Budget) String() string {
	switch b.Kind {
	case Fraction:
		return strconv.FormatFloat(b.Value, 'g', -1, 64)
	case Count:
		return "count:" + strconv.FormatFloat(b.Value, 'f', 0, 64)
	case LoRA:
		return "lora:" + strconv.FormatFloat(b.Value, 'f', 0, 64)
	}
	return ""
}

// LoRABudget is k = min((m+n)·r, m·n), the number of parameters of a rank-r LoRA on an m×n matrix.
func LoRABudget(rows, cols, r int) int64 {
	return min((int64(rows)+int64(cols))*int64(r), int64(rows)*int64(cols))
}

// kept is the number of entries kept in a group of g entries of a rows×cols matrix.
func (b Budget) kept(g int64, rows, cols int) int64 {
	var k int64
	switch b.Kind {
	case Fraction:
		slack := 1e-12 * float64(g)
		if b.Drop {
			k = g - int64(math.Floor(float64(g)*b.Value+slack))
		} else {
			k = int64(math.Ceil(float64(g)*b.Value - slack))
		}
	case Count:
		k = int64(b.Value)
		if b.Drop {
			k = g - k
		}
	case LoRA:
		k = LoRABudget(rows, cols, int(b.Value))
	}
	return min(max(k, 0), g)
}

// Structure is an N:M pattern: in every run of M consecutive entries of a row (along the input dimension of an
// [out, in] weight), N are kept. 2:4 is the pattern of NVIDIA's sparse tensor cores (§4.4). The zero Structure is
// unstructured.
//
// Wanda's prune_n:prune_m zeroes N of every M; for 2:4 and 4:8, the patterns in use, both readings agree.
type Structure struct{ N, M int }

// ParseStructure reads "N:M", or "unstructured" (and "") for none.
func ParseStructure(s string) (Structure, error) {
	if s == "" || s == "unstructured" {
		return Structure{}, nil
	}
	ns, ms, ok := strings.Cut(s, ":")
	n, err1 := strconv.Atoi(ns)
	m, err2 := strconv.Atoi(ms)
	st := Structure{N: n, M: m}
	if !ok || err1 != nil || err2 != nil {
		return st, fmt.Errorf("structure %q: want N:M (2:4) or unstructured", s)
	}
	return st, st.check()
}

func (s Structure) check() error {
	if s == (Structure{}) {
		return nil
	}
	if s.M < 1 || s.M > 256 || s.N < 0 || s.N > s.M {
		return fmt.Errorf("structure %d:%d: want 0 ≤ N ≤ M ≤ 256", s.N, s.M)
	}
	return nil
}

// IsZero reports an unstructured selection.
func (s Structure) IsZero() bool { return s == Structure{} }

// String formats the structure as ParseStructure reads it.
func (s Structure) String() string {
	if s.IsZero() {
		return "unstructured"
	}
	return fmt.Sprintf("%d:%d", s.N, s.M)
}

// Group is the set of entries a budget is counted over.
type Group uint8

const (
	// PerMatrix ranks all entries of the matrix together (magnitude pruning, LIFT).
	PerMatrix Group = iota
	// PerRow ranks each output row separately: Wanda's comparison group (§4.2).
	PerRow
)

// ParseGroup reads "matrix" or "row".
func ParseGroup(s string) (Group, error) {
	switch s {
	case "matrix":
		return PerMatrix, nil
	case "row":
		return PerRow, nil
	}
	return 0, fmt.Errorf("group %q: want matrix or row", s)
}

func (g Group) String() string {
	if g == PerRow {
		return "row"
	}
	return "matrix"
}

// Selection turns scores into a mask.
type Selection struct {
	Budget    Budget
	Group     Group
	Structure Structure // when set, fixes the count: Budget must be NoBudget and Group is ignored
	// Smallest keeps the lowest scores instead of the highest. The LIFT paper selects the largest entries of the
	// low-rank approximation; its released configurations (mask_type lift_sparse) pass largest=False to
	// torch.topk and so select the smallest (§3.1). Pruning always keeps the largest.
	Smallest bool
}

// Check validates the selection on its own, before any matrix is seen.
func (s Selection) Check() error {
	if err := s.Budget.check(); err != nil {
		return err
	}
	if err := s.Structure.check(); err != nil {
		return err
	}
	switch {
	case !s.Structure.IsZero() && s.Budget.Kind != NoBudget:
		return fmt.Errorf("selection: the %s structure fixes the count; give no budget with it", s.Structure)
	case s.Structure.IsZero() && s.Budget.Kind == NoBudget:
		return errors.New("selection: no budget: give a fraction, a count or a LoRA rank, or an N:M structure")
	case s.Budget.Kind == LoRA && s.Group != PerMatrix:
		return errors.New("selection: a LoRA budget is per matrix, not per row")
	case s.Group > PerRow:
		return fmt.Errorf("selection: unknown group %d", s.Group)
	}
	return nil
}

// Kept is the number of entries the selection keeps in a rows×cols matrix.
func (s Selection) Kept(rows, cols int) int64 {
	switch {
	case !s.Structure.IsZero():
		return int64(rows) * int64(cols/s.Structure.M*s.Structure.N)
	case s.Group == PerRow:
		return int64(rows) * s.Budget.kept(int64(cols), rows, cols)
	}
	return s.Budget.kept(int64(rows)*int64(cols), rows, cols)
}

// Select keeps, in each group, the entries with the highest scores (the lowest with Smallest); among equal scores
// the one with the lower index (row-major) wins, so the result never depends on sort stability. scores is a
// row-major rows×cols matrix and must not hold NaN. An N:M structure needs cols to be a multiple of M.
func Select(rows, cols int, scores []float32, sel Selection) (*Mask, error) {
	if err := sel.Check(); err != nil {
		return nil, err
	}
	if rows < 0 || cols < 0 || len(scores) != rows*cols {
		return nil, fmt.Errorf("prune: %d scores for a %d×%d matrix", len(scores), rows, cols)
	}
	if !sel.Structure.IsZero() && cols%sel.Structure.M != 0 {
		return nil, fmt.Errorf("prune: %s structure needs the %d columns to be a multiple of %d", sel.Structure, cols,
			sel.Structure.M)
	}
	keys := make([]uint32, len(scores))
	for i, f := range scores {
		if f != f {
			return nil, fmt.Errorf("prune: score of entry (%d, %d) is NaN", i/max(cols, 1), i%max(cols, 1))
		}
		keys[i] = sortKey(f, sel.Smallest)
	}
	m := NewMask(rows, cols)
	switch {
	case !sel.Structure.IsZero():
		n, g := sel.Structure.N, sel.Structure.M
		for i := range rows {
			for j := 0; j < cols; j += g {
				keepNofM(m, i, j, keys[i*cols+j:i*cols+j+g], n)
			}
		}
	case sel.Group == PerRow:
		k := sel.Budget.kept(int64(cols), rows, cols)
		var h histogram
		for i := range rows {
			markTop(m, i*cols, keys[i*cols:(i+1)*cols], int(k), &h)
		}
	default:
		var h histogram
		markTop(m, 0, keys, int(sel.Budget.kept(int64(len(keys)), rows, cols)), &h)
	}
	return m, nil
}

// sortKey maps a score to an unsigned integer in the same order (the IEEE-754 total order, with −0 below +0),
// complemented when the smallest scores are wanted, so that selection always takes the largest keys.
func sortKey(f float32, smallest bool) uint32 {
	b := math.Float32bits(f)
	if b&0x80000000 != 0 {
		b = ^b
	} else {
		b |= 0x80000000
	}
	if smallest {
		b = ^b
	}
	return b
}

type histogram [256]int

// markTop sets, in m, the k entries with the largest keys; keys[x] is entry base+x of the row-major mask. The k-th
// largest key is found by a radix select, most significant byte first (four counting passes, no sort), then
// entries above it are kept, and entries equal to it in index order until k are kept.
func markTop(m *Mask, base int, keys []uint32, k int, h *histogram) {
	if k <= 0 {
		return
	}
	var thr uint32
	need := min(k, len(keys)) // entries still to take among those matching the prefix found so far
	for shift := 24; shift >= 0; shift -= 8 {
		*h = histogram{}
		hi := uint64(thr) >> (shift + 8) // the prefix above this digit
		for _, key := range keys {
			if uint64(key)>>(shift+8) == hi {
				h[key>>shift&0xff]++
			}
		}
		d := 255
		for ; d > 0 && h[d] < need; d-- {
			need -= h[d]
		}
		thr |= uint32(d) << shift
	}
	// need is now how many entries equal to thr are kept.
	for x, key := range keys {
		if key > thr || key == thr && need > 0 {
			if key == thr {
				need--
			}
			i := base + x
			m.Set(i/m.Cols, i%m.Cols, true)
		}
	}
}

// keepNofM keeps the n largest of the g keys of row i starting at column j, ties to the lower column.
func keepNofM(m *Mask, i, j int, keys []uint32, n int) {
	var taken [4]uint64 // one bit per key of the group, M ≤ 256
	for range n {
		best := -1
		for x, key := range keys {
			if taken[x/64]>>(x%64)&1 == 0 && (best < 0 || key > keys[best]) {
				best = x
			}
		}
		taken[best/64] |= 1 << (best % 64)
		m.Set(i, j+best, true)
	}
}
