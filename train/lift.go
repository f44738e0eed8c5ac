package train

import (
	"fmt"
	"math"
	"slices"

	"github.com/lathe-ml/lathe/internal/kernels"
	"github.com/lathe-ml/lathe/prune"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/sparsity"
	"github.com/lathe-ml/lathe/tensor"
)

// MethodLIFT is LIFT (Liu et al., "LIFT the Veil for the Truth: Principal Weights Emerge after Rank Reduction for
// Reasoning-Focused Supervised Fine-Tuning", ICML 2025, arXiv 2506.00772; spectral-prune-merge.md §3.1): sparse
// fine-tuning of each targeted weight's principal weights, the k = min((m+n)·r, m·n) entries (a rank-r LoRA's
// parameter count, r = --rank) of largest magnitude in the rank-filter_rank approximation of W, with the mask
// recomputed from the current weight every update_interval steps. Only the selected entries are parameters (and
// have Adam moments); the update is written as a merged model, and WriteSparseDelta writes it sparse.
const MethodLIFT = "lift"

func init() {
	registerMethod(MethodLIFT, methodSpec{
		summary: "LIFT: sparse fine-tuning of the principal weights (top entries of a low-rank approximation), mask refreshed",
		args: map[string]string{"filter_rank": "128", "update_interval": "400", "select": "largest",
			"svd": "randomized", "niter": "8"},
		dense: true,
		build: func(cfg LoRAConfig, a methodArgs) (method, error) {
			m := &liftMethod{budget: cfg.Rank, filterRank: a.Int("filter_rank", 1),
				interval: a.Int("update_interval", 1), smallest: a.String("select", "largest", "smallest") == "smallest",
				iters: a.Int("niter", 1)}
			if a.String("svd", "randomized", "full") == "full" {
				m.svd = prune.SVDFull
			}
			return m, nil
		},
	})
}

type liftMethod struct {
	budget, filterRank, interval, iters int
	smallest                            bool
	svd                                 prune.SVDMode
	projs                               []*liftLinear // in Params order: each has one parameter tensor
	opt                                 *AdamW
	// xt and dyt hold a backward pass's input and output gradient transposed, for the sparse gradient; the
	// projections run one at a time and share them.
	xt, dyt []float32
}

// liftLinear is a weight of which k entries train: the pass computes with cur, a float32 copy of the weight whose
// selected entries are rewritten from base + v before each forward pass.
type liftLinear struct {
	m    *liftMethod
	w    *matrix
	seed uint64
	cur  []float32 // rows×cols: W plus the update of the entries selected so far
	// idx are the selected entries (row-major index into cur, ascending), as uint32 bit patterns: a checkpoint's
	// method state is float32 tensors, which it copies bit for bit.
	idx   []float32
	base  []float32 // W at the selected entries
	v, dv []float32 // ΔW at the selected entries (the parameter) and its gradient
}

func (m *liftMethod) project(s site) (projection, error) {
	w := s.w
	k := int(prune.LoRABudget(w.rows, w.cols, m.budget))
	p := &liftLinear{m: m, w: w, seed: s.seed, cur: make([]float32, w.rows*w.cols), idx: make([]float32, k),
		base: make([]float32, k), v: make([]float32, k), dv: make([]float32, k)}
	m.xt, m.dyt = grow(m.xt, max(len(m.xt), s.rows*w.cols)), grow(m.dyt, max(len(m.dyt), s.rows*w.rows))
	if err := w.decodeRows(p.cur, 0, w.rows); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", w.name, err)
	}
	mask, err := p.mask(0)
	if err != nil {
		return nil, err
	}
	i := 0
	for j := range p.cur {
		if mask.Get(j/w.cols, j%w.cols) {
			p.idx[i], p.base[i] = math.Float32frombits(uint32(j)), p.cur[j]
			i++
		}
	}
	m.projs = append(m.projs, p)
	return p, nil
}

// start keeps the optimizer, whose moments a refresh moves with the entries.
func (m *liftMethod) start(t *trainer) error {
	m.opt = t.opt
	return nil
}

// afterUpdate refreshes the masks as LIFT's sparse Adam does: after the step t with (t+1) % update_interval = 0
// (the first refresh after update_interval−1 steps).
func (m *liftMethod) afterUpdate(step int) error {
	if (step+1)%m.interval != 0 {
		return nil
	}
	for slot, p := range m.projs {
		if err := p.refresh(step, slot); err != nil {
			return fmt.Errorf("train: lift: refreshing the mask of %s: %w", p.w.name, err)
		}
	}
	return nil
}

// state is each weight's current copy, selected entries and their base values.
func (m *liftMethod) state() []namedFloats {
	var out []namedFloats
	for _, p := range m.projs {
		out = append(out, namedFloats{p.w.name + ".lift_weight", p.cur}, namedFloats{p.w.name + ".lift_index", p.idx},
			namedFloats{p.w.name + ".lift_base", p.base})
	}
	return out
}

// mask selects the principal weights of cur (prune's Principal score and LoRA budget); the randomized SVD draws
// from the projection's seed and the step.
func (p *liftLinear) mask(step int) (*prune.Mask, error) {
	m, rows, cols := p.m, p.w.rows, p.w.cols
	scores, err := prune.Score(rows, cols, p.cur, prune.ScoreOptions{Method: prune.Principal, Rank: m.filterRank,
		SVD: m.svd, PowerIters: m.iters, Seed: p.seed + uint64(step)})
	if err != nil {
		return nil, err
	}
	return prune.Select(rows, cols, scores, prune.Selection{Budget: prune.Budget{Kind: prune.LoRA,
		Value: float64(m.budget)}, Smallest: m.smallest})
}

func (p *liftLinear) entry(i int) int { return int(math.Float32bits(p.idx[i])) }

// sync writes the selected entries of cur from their base and update.
func (p *liftLinear) sync() {
	for i := range p.idx {
		p.cur[p.entry(i)] = p.base[i] + p.v[i]
	}
}

// refresh recomputes the mask from the current weight. Entries that stay keep their update and Adam moments in
// their new slot; entries that leave keep their update in cur and train no more; entries that enter start with
// zero moments and, if they had left before, their update so far (LIFT's scatter of the old moments with the old
// mask and gather with the new one; Adam's step count is not reset).
func (p *liftLinear) refresh(step, slot int) error {
	p.sync()
	mask, err := p.mask(step)
	if err != nil {
		return err
	}
	rows, cols := p.w.rows, p.w.cols
	w0 := make([]float32, rows*cols)
	if err := p.w.decodeRows(w0, 0, rows); err != nil {
		return err
	}
	var mom, vel []float32
	if o := p.m.opt; o != nil && o.m != nil {
		mom, vel = o.m[slot], o.v[slot]
	}
	k := len(p.idx)
	idx, base, v := make([]float32, 0, k), make([]float32, 0, k), make([]float32, 0, k)
	var nm, nv []float32
	if mom != nil {
		nm, nv = make([]float32, 0, k), make([]float32, 0, k)
	}
	old := 0 // the slot of the first old entry not below j: both lists ascend
	for j := range p.cur {
		if !mask.Get(j/cols, j%cols) {
			continue
		}
		for old < k && p.entry(old) < j {
			old++
		}
		idx = append(idx, math.Float32frombits(uint32(j)))
		if old < k && p.entry(old) == j {
			base, v = append(base, p.base[old]), append(v, p.v[old])
			if mom != nil {
				nm, nv = append(nm, mom[old]), append(nv, vel[old])
			}
			continue
		}
		base, v = append(base, w0[j]), append(v, p.cur[j]-w0[j])
		if mom != nil {
			nm, nv = append(nm, 0), append(nv, 0)
		}
	}
	if len(idx) != k {
		return fmt.Errorf("the mask keeps %d entries, want %d", len(idx), k)
	}
	copy(p.idx, idx)
	copy(p.base, base)
	copy(p.v, v)
	if mom != nil {
		copy(mom, nm)
		copy(vel, nv)
	}
	return nil
}

func (p *liftLinear) forward(y, x []float32, n int, _ *[]float32) {
	p.sync()
	kernels.Sgemm(false, true, n, p.w.rows, p.w.cols, 1, x, p.w.cols, p.cur, p.w.cols, 0, y, p.w.rows)
}

// backward: dx += dy·W', and the gradient of each selected entry (r, c) is Σₙ dy[n,r]·x[n,c], the dense gradient
// dyᵀ·x at that entry: a dot product of a row of dyᵀ and one of xᵀ.
func (p *liftLinear) backward(dx, dy, x []float32, n int, _ *[]float32) {
	rows, cols := p.w.rows, p.w.cols
	kernels.Sgemm(false, false, n, cols, rows, 1, dy, rows, p.cur, cols, 1, dx, cols)
	xt, dyt := p.m.xt, p.m.dyt
	transposeTo(xt, x, n, cols)
	transposeTo(dyt, dy, n, rows)
	parallel(len(p.idx), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			j := p.entry(i)
			r, c := j/cols, j%cols
			p.dv[i] += kernels.Dot(dyt[r*n:(r+1)*n], xt[c*n:(c+1)*n])
		}
	})
}

// transposeTo sets dst (cols×n) to src (n×cols) transposed.
func transposeTo(dst, src []float32, n, cols int) {
	parallel(cols, func(lo, hi int) {
		for c := lo; c < hi; c++ {
			d := dst[c*n : (c+1)*n]
			for r := range d {
				d[r] = src[r*cols+c]
			}
		}
	})
}

func (p *liftLinear) params() ([][]float32, [][]float32) { return [][]float32{p.v}, [][]float32{p.dv} }

// delta is the weight's update: v at the selected entries, cur − W at the ones that left (zero where none ever
// was selected).
func (p *liftLinear) delta(dst []float32) {
	_ = p.w.decodeRows(dst, 0, p.w.rows) // decoded once already in project
	p.sync()
	for j, c := range p.cur {
		dst[j] = c - dst[j]
	}
	for i, v := range p.v {
		dst[p.entry(i)] = v
	}
}

// WriteSparseDelta writes the trained update ΔW of every trained projection to a safetensors file at path in
// compressed-tensors' sparse-bitmask layout: for each weight W (named as Deltas names it, rows in the model file's
// order)
//
//	W.compressed   F32 [nnz]               the non-zero entries of ΔW, row-major
//	W.bitmask      U8  [rows, ⌈cols/8⌉]    where they are: numpy.packbits(ΔW != 0, axis=-1, bitorder="little")
//	W.shape        I64 [2]                 rows, cols
//	W.row_offsets  I64 [rows]              index in W.compressed of each row's first entry
//
// with metadata lathe.delta = "sparse" and lathe.method. compressed-tensors' decompression gives the dense ΔW, which
// added to the base weight gives the merged model's. It suits LIFT, whose update touches the entries selected at
// some point of the run (up to k per matrix per mask refresh); for dense methods the file is larger than ΔW.
func (l *LoRA) WriteSparseDelta(path string) error {
	deltas, err := l.Deltas()
	if err != nil {
		return err
	}
	var views []tensor.View
	for i := range l.layers {
		for j, lin := range l.layers[i].linears() {
			if !lin.trained() {
				continue
			}
			name := l.fileName(i, j, lin.w)
			views = append(views, sparsity.BitmaskViews(name, lin.w.rows, lin.w.cols, deltas[name])...)
		}
	}
	slices.SortFunc(views, func(a, b tensor.View) int {
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
	return safetensors.WriteFile(path, views, map[string]string{"format": "pt", "lathe.delta": "sparse",
		"lathe.method": l.Method})
}
