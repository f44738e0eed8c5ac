package convert

import (
	"cmp"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/parallel"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/tensor"
)

// This file chooses one ggml type per tensor from measured error under a size budget (issue 5, item 2), where
// llama-quantize's recipes choose by fixed name rules (../shared/reference/formats-quant.md §3.4).
//
// Method. Every quantizable tensor (the recipe's: a tensor the recipe converts) gets a list of options, one per
// candidate type after tensor_type_fallback, plus the recipe's own type; each option has its size in bytes and its
// reconstruction error Σ w_j (x − dequant(quant(x)))², summed over the tensor, where w_j is the importance-matrix
// weight of column j (the mean squared activation it multiplies, so the sum estimates the energy of the output
// error) or 1 without an importance matrix. The choice is then a multiple-choice knapsack: minimise Σ error
// subject to Σ bytes ≤ budget. It is solved exactly by dynamic programming over a grid: the budget left after
// every tensor's smallest option is cut into budgetGrid units, each option costs its extra bytes rounded up to
// whole units (so the plan never exceeds the budget), and best[c] (least error with cost ≤ c) is built tensor by
// tensor. Rounding loses at most one unit per tensor, 1/budgetGrid of the spare bytes each.
// Per-group datatypes (BudgetOptions.BitMoD, docs/bitmod.md) join the options of the tensors they apply to, with
// their packed size; Lower maps a plan that chose them back to ggml types.

// DefaultBudgetTypes are the candidate types of a budgeted plan: the k-quants, Q8_0, and the 32-element types
// that llama.cpp's CPU kernels handle well.
var DefaultBudgetTypes = []tensor.DType{tensor.Q2_K, tensor.Q3_K, tensor.Q4_K, tensor.Q5_K, tensor.Q6_K,
	tensor.Q8_0, tensor.Q4_0, tensor.Q5_0, tensor.IQ4_XS}

// budgetGrid is the number of cost units of the knapsack: a 7B model's ~300 tensors lose at most 0.5 % of the
// spare bytes to rounding, for a table of 300 × 65537 bytes.
const budgetGrid = 1 << 16

// BudgetOptions configures MeasureBudget.
type BudgetOptions struct {
	// Quantize is the recipe the plan replaces: it decides which tensors are quantizable and the types of the
	// others, is the reference the plan is compared with, and gives the importance matrix.
	Quantize QuantizeOptions
	// Types are the candidate types; nil means DefaultBudgetTypes.
	Types []tensor.DType
	// BitMoD are per-group datatype candidates, offered to the tensors they apply to (bitmodQuantizable). A plan
	// that chooses one is for packed safetensors or for Lower; Apply takes only ggml types.
	BitMoD   []BitMoDCandidate
	Progress func(done, total int)
}

// BudgetOption is one type a tensor may take, its size and its error.
type BudgetOption struct {
	Type tensor.DType `json:"type"`
	// BitMoD names the per-group datatype candidate this option is (Type is then Invalid).
	BitMoD string  `json:"bitmod,omitempty"`
	Bytes  int64   `json:"bytes"`
	Error  float64 `json:"error"`
}

// Name is the option's type or per-group candidate.
func (o BudgetOption) Name() string {
	if o.BitMoD != "" {
		return o.BitMoD
	}
	return o.Type.String()
}

// BudgetTensor is one tensor of a Budget. Options are sorted by size; a tensor the recipe leaves as it is has one
// option of error 0.
type BudgetTensor struct {
	Name     string         `json:"name"`
	Shape    tensor.Shape   `json:"shape"`
	From     tensor.DType   `json:"from"`
	Elements int64          `json:"elements"`
	Options  []BudgetOption `json:"options"`
	Recipe   int            `json:"recipe"` // index in Options of the recipe's type
	Chosen   int            `json:"chosen"` // index in Options of the budgeted plan's type
}

// Budget is every tensor's measured options, in output order, and the plan chosen among them by Allocate.
type Budget struct {
	Tensors []BudgetTensor `json:"tensors"`
	// Weighted says errors are weighted by an importance matrix.
	Weighted bool  `json:"weighted"`
	Elements int64 `json:"elements"`
	// Target is the size Allocate was given, in bytes of tensor data (as QuantPlan.OutputBytes).
	Target int64 `json:"target_bytes"`
}

// Totals returns the size and error of the budgeted plan and of the recipe.
func (b *Budget) Totals() (bytes int64, errSum float64, recipeBytes int64, recipeErr float64) {
	for _, t := range b.Tensors {
		c, r := t.Options[t.Chosen], t.Options[t.Recipe]
		bytes += c.Bytes
		errSum += c.Error
		recipeBytes += r.Bytes
		recipeErr += r.Error
	}
	return
}

// BPWBytes is the budget in bytes of tensor data for bpw bits per weight over all of the model's elements.
func (b *Budget) BPWBytes(bpw float64) int64 {
	return int64(math.Floor(bpw * float64(b.Elements) / 8))
}

// MeasureBudget measures, for every quantizable tensor of in, the size and error of every candidate type, and sets
// the plan to the recipe's. Tensors are read one chunk of rows at a time and each chunk is quantized with every
// candidate (rows in parallel), so memory holds one chunk and its encodings, and each tensor is read once.
func MeasureBudget(in *gguf.File, opts BudgetOptions) (*Budget, error) {
	src := ggufSource(in)
	qo := opts.Quantize
	def, err := quant.FileType(qo.Type).DefaultType()
	if err != nil {
		return nil, err
	}
	if !def.IsQuantized() {
		return nil, fmt.Errorf("budget: recipe %s does not quantize; give a quantized one (Q4_K_M, ...)", qo.Type)
	}
	plan, err := planSource(src, qo)
	if err != nil {
		return nil, err
	}
	work, err := prepare(src, plan, qo)
	if err != nil {
		return nil, err
	}
	types := opts.Types
	if types == nil {
		types = DefaultBudgetTypes
	}
	b := &Budget{Tensors: make([]BudgetTensor, len(plan.Tensors)), Elements: plan.Elements}
	for i, t := range plan.Tensors {
		bt := BudgetTensor{Name: t.Name, Shape: t.Shape, From: t.From, Elements: t.Elements}
		if t.From == t.To {
			bt.Options = []BudgetOption{{Type: t.To, Bytes: t.Bytes}}
			b.Tensors[i] = bt
			continue
		}
		info := quant.TensorInfo{Name: t.Name, Shape: t.Shape, DType: t.From}
		for _, typ := range append(slices.Clone(types), t.To) {
			if typ, err = quant.Fallback(info, typ); err != nil {
				return nil, fmt.Errorf("budget: tensor %q: %w", t.Name, err)
			}
			if !quant.CanEncode(typ) || (quant.RequiresImatrix(typ) && work[i].importance == nil) ||
				slices.ContainsFunc(bt.Options, func(o BudgetOption) bool { return o.Type == typ }) {
				continue
			}
			n, err := t.Shape.Bytes(typ)
			if err != nil {
				return nil, fmt.Errorf("budget: tensor %q: %w", t.Name, err)
			}
			bt.Options = append(bt.Options, BudgetOption{Type: typ, Bytes: n})
		}
		for _, c := range opts.BitMoD {
			l := c.layout()
			if len(t.Shape) == 2 && bitmodQuantizable(t.Name, t.Shape, t.From, l.group) && work[i].ne0 == int(t.Shape[1]) {
				bt.Options = append(bt.Options, BudgetOption{Type: tensor.Invalid, BitMoD: c.Name, Bytes: l.bytes(t.Shape[0], t.Shape[1])})
			}
		}
		// Sorting by size, then type, makes the knapsack's tie-breaking independent of the candidate order.
		slices.SortStableFunc(bt.Options, func(x, y BudgetOption) int {
			if x.Bytes != y.Bytes {
				return compareInt64(x.Bytes, y.Bytes)
			}
			return cmp.Or(int(x.Type)-int(y.Type), strings.Compare(x.BitMoD, y.BitMoD))
		})
		b.Weighted = b.Weighted || work[i].importance != nil
		b.Tensors[i] = bt
	}
	// Tensors are measured in parallel, each by one worker a chunk at a time, so memory holds one chunk per worker;
	// the row-parallel encoders alone leave decoding and error sums on one core. Each tensor's errors are its own,
	// so the result does not depend on the schedule.
	err = parallel.ForEach(len(plan.Tensors), parallel.Workers(0), opts.Progress, func(_, i int) error {
		t, bt := plan.Tensors[i], &b.Tensors[i]
		bt.Recipe = slices.IndexFunc(bt.Options, func(o BudgetOption) bool { return o.Type == t.To && o.BitMoD == "" })
		bt.Chosen = bt.Recipe
		if t.From == t.To {
			return nil
		}
		return measureTensor(src, t, work[i], bt.Options, opts.BitMoD)
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

func compareInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// measureTensor adds to every option's Error the weighted squared error of quantizing the tensor to its type, in
// the chunks of whole rows (never straddling two importance slices) that Quantize converts.
func measureTensor(src *quantSource, t PlannedTensor, wk tensorWork, options []BudgetOption, bitmod []BitMoDCandidate) error {
	data, have, err := src.data(t.Name)
	if err != nil {
		return err
	}
	inRow, err := have.Bytes(int64(wk.ne0))
	if err != nil {
		return fmt.Errorf("budget: tensor %q: %w", t.Name, err)
	}
	step := max(1, castChunk/wk.ne0)
	x := make([]float32, step*wk.ne0)
	y := make([]float32, step*wk.ne0)
	var enc []byte
	for s := range wk.slices {
		var imp []float32
		if wk.importance != nil {
			imp = wk.importance[s*wk.ne0 : (s+1)*wk.ne0]
		}
		for r := 0; r < wk.rows; r += step {
			first, n := int64(s*wk.rows+r), int64(min(step, wk.rows-r))
			rows := data[first*inRow : (first+n)*inRow]
			xs, ys := x[:int(n)*wk.ne0], y[:int(n)*wk.ne0]
			if quant.CanDecode(have) {
				err = quant.Decode(have, xs, rows)
			} else {
				err = tensor.ToFloat32(xs, rows, have)
			}
			if err != nil {
				return fmt.Errorf("budget: tensor %q: %w", t.Name, err)
			}
			for k := range options {
				o := &options[k]
				if o.BitMoD != "" {
					c := bitmod[slices.IndexFunc(bitmod, func(c BitMoDCandidate) bool { return c.Name == o.BitMoD })]
					g, err := quant.QuantizeGroups(xs, wk.ne0, c.Types, quant.GroupOptions{Group: c.Group,
						Importance: imp, ScaleSearch: c.ScaleSearch, IDInScale: c.IDInScale})
					if err == nil {
						err = g.Dequantize(ys)
					}
					if err != nil {
						return fmt.Errorf("budget: tensor %q: %w", t.Name, err)
					}
					o.Error += weightedSSE(xs, ys, imp)
					continue
				}
				size, _ := o.Type.Bytes(int64(len(xs)))
				if int64(cap(enc)) < size {
					enc = make([]byte, size)
				}
				enc = enc[:size]
				if err := quant.Encode(o.Type, enc, xs, wk.ne0, imp); err != nil {
					return fmt.Errorf("budget: tensor %q: %w", t.Name, err)
				}
				if err := quant.Decode(o.Type, ys, enc); err != nil {
					return fmt.Errorf("budget: tensor %q: %w", t.Name, err)
				}
				o.Error += weightedSSE(xs, ys, imp)
			}
		}
	}
	return nil
}

// weightedSSE is Σ w_(j mod len(w)) (x_j − y_j)² in float64, with w = 1 when nil.
func weightedSSE(x, y, w []float32) float64 {
	var sum float64
	for j, xv := range x {
		d := float64(y[j]) - float64(xv)
		if w != nil {
			d *= math.Sqrt(float64(w[j%len(w)]))
		}
		sum += d * d
	}
	return sum
}

// Allocate chooses one option per tensor minimising the total error with at most target bytes of tensor data,
// by the knapsack described at the top of this file.
func (b *Budget) Allocate(target int64) error {
	var floor int64
	for _, t := range b.Tensors {
		floor += t.Options[0].Bytes
	}
	if target < floor {
		return fmt.Errorf("budget: %d bytes is less than the smallest plan, %d bytes", target, floor)
	}
	b.Target = target
	spare := target - floor
	unit := max(1, (spare+budgetGrid-1)/budgetGrid)
	grid := int(spare / unit)
	best := make([]float64, grid+1)
	next := make([]float64, grid+1)
	// pick[i][c] is tensor i's option in the best plan of tensors 0..i with cost ≤ c.
	pick := make([][]uint8, len(b.Tensors))
	for i, t := range b.Tensors {
		if len(t.Options) > math.MaxUint8 {
			return fmt.Errorf("budget: tensor %q has %d options, at most %d are supported", t.Name, len(t.Options), math.MaxUint8)
		}
		pick[i] = make([]uint8, grid+1)
		for c := range next {
			next[c] = math.Inf(1)
			for k, o := range t.Options {
				cost := int((o.Bytes - t.Options[0].Bytes + unit - 1) / unit)
				if cost > c {
					break // options are sorted by size
				}
				if e := best[c-cost] + o.Error; e < next[c] {
					next[c], pick[i][c] = e, uint8(k)
				}
			}
		}
		best, next = next, best
	}
	c := grid
	for i := len(b.Tensors) - 1; i >= 0; i-- {
		t := &b.Tensors[i]
		t.Chosen = int(pick[i][c])
		c -= int((t.Options[t.Chosen].Bytes - t.Options[0].Bytes + unit - 1) / unit)
	}
	return nil
}

// Apply returns opts with the budgeted plan as --tensor-type rules that match one tensor name each, ahead of any
// others, so that Quantize writes an ordinary GGUF with the plan's types. The output and token-embedding types
// are left to the rules, since the plan chose them too.
func (b *Budget) Apply(opts QuantizeOptions) (QuantizeOptions, error) {
	var rules []quant.TensorTypeRule
	for _, t := range b.Tensors {
		if o := t.Options[t.Chosen]; o.BitMoD != "" {
			return opts, fmt.Errorf("budget: tensor %q is planned as %s, which GGUF cannot hold; lower the plan first", t.Name, o.BitMoD)
		}
		if len(t.Options) > 1 || t.Options[0].Type != t.From {
			rules = append(rules, quant.TensorTypeRule{
				Pattern: regexp.MustCompile("^" + regexp.QuoteMeta(t.Name) + "$"),
				Type:    t.Options[t.Chosen].Type,
			})
		}
	}
	opts.TensorTypes = append(rules, opts.TensorTypes...)
	opts.OutputType, opts.TokenEmbeddingType = tensor.Invalid, tensor.Invalid
	return opts, nil
}

// Lower replaces every per-group datatype in the plan by the ggml type, among the tensor's options of no more
// bytes, whose error is nearest to it (the lower error on a tie), so that Apply can write the plan as a GGUF that
// llama.cpp loads; it returns how many tensors it changed. A tensor whose options are all larger keeps its
// smallest ggml option.
func (b *Budget) Lower() int {
	n := 0
	for i := range b.Tensors {
		t := &b.Tensors[i]
		c := t.Options[t.Chosen]
		if c.BitMoD == "" {
			continue
		}
		best := -1
		for k, o := range t.Options {
			if o.BitMoD != "" || (o.Bytes > c.Bytes && best >= 0) {
				continue
			}
			if best < 0 || (o.Bytes <= c.Bytes && nearer(o.Error, t.Options[best].Error, c.Error)) {
				best = k
			}
		}
		t.Chosen = best
		n++
	}
	return n
}

// nearer says whether a is nearer to target than b, or as near and lower.
func nearer(a, b, target float64) bool {
	da, db := math.Abs(a-target), math.Abs(b-target)
	return da < db || (da == db && a < b)
}

// ChooseBitMoD sets the plan of every tensor that has the named per-group candidate to it, and of the others to
// the recipe's type.
func (b *Budget) ChooseBitMoD(name string) {
	for i := range b.Tensors {
		t := &b.Tensors[i]
		t.Chosen = t.Recipe
		if k := slices.IndexFunc(t.Options, func(o BudgetOption) bool { return o.BitMoD == name }); k >= 0 {
			t.Chosen = k
		}
	}
}
