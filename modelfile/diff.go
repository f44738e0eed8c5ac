package modelfile

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/tensor"
)

// Mapping pairs the tensors of two models that name or lay out tensors differently, such as a Hugging Face
// checkpoint and its GGUF conversion.
type Mapping interface {
	// Pair returns the name B gives to A's tensor a, which has rows rows (its outermost dimension), and rowOf:
	// nil when B stores the rows in A's order, else row r of B holds row rowOf[r] of A. A name the mapping does
	// not know is returned unchanged.
	Pair(a string, rows int64) (b string, rowOf []int64)
}

// DiffOptions tune Diff.
type DiffOptions struct {
	Map Mapping // nil: tensors are paired by identical names
	// Tol and RelTol decide when a pair of tensors matches (TensorDiff.Within); zero for both asks for identical
	// values.
	Tol, RelTol float64
	Threads     int // tensors compared at once; 0 for GOMAXPROCS
	Progress    func(done, total int)
}

// DiffReport is what `lathe diff` prints; its JSON form is a stable schema (fields are only ever added).
type DiffReport struct {
	A       string       `json:"a"`
	B       string       `json:"b"`
	Tol     float64      `json:"tol"`
	RelTol  float64      `json:"rel_tol"`
	Differs bool         `json:"differs"`   // a tensor is in one model only, or a pair is not Within
	OnlyInA []string     `json:"only_in_a"` // in A's order
	OnlyInB []string     `json:"only_in_b"` // in B's order
	Tensors []TensorDiff `json:"tensors"`   // every paired tensor, in A's order
}

// TensorDiff compares one tensor of A with its counterpart in B. The values of both are decoded to float32 (block
// types dequantized) and compared in float64. Metrics are over the positions where both values are finite;
// positions where one is NaN or ±Inf and the other is not the same are counted in NonFinite.
type TensorDiff struct {
	Name   string       `json:"name"`             // in A
	NameB  string       `json:"name_b,omitempty"` // when the mapping renamed it
	DTypeA tensor.DType `json:"dtype_a"`
	DTypeB tensor.DType `json:"dtype_b"`
	ShapeA tensor.Shape `json:"shape_a"`
	ShapeB tensor.Shape `json:"shape_b"`
	// Compared is false when the shapes differ; the metrics are then zero.
	Compared bool `json:"compared"`
	// Identical: every element of A equals its counterpart (NaN matching NaN), whatever the two dtypes.
	Identical bool `json:"identical"`
	// Within: compared, no non-finite mismatch, and either MaxAbsDiff ≤ Tol or (when RelTol > 0)
	// RelError ≤ RelTol.
	Within     bool    `json:"within"`
	NonFinite  int64   `json:"nonfinite_mismatches"`
	MaxAbsDiff float64 `json:"max_abs_diff"`
	// RelError is ‖a−b‖/‖a‖ (Frobenius norms); +Inf when ‖a‖ is 0 and b is not (null in JSON).
	// RelError and Cosine stay the last fields: MarshalJSON writes them after the others.
	RelError float64 `json:"rel_error"`
	// Cosine is ⟨a,b⟩/(‖a‖·‖b‖); 1 when both are all zeros, 0 when only one is.
	Cosine float64 `json:"cosine"`
}

// MarshalJSON writes non-finite metrics as null: JSON has no Inf or NaN.
func (d TensorDiff) MarshalJSON() ([]byte, error) {
	type plain TensorDiff
	return json.Marshal(struct {
		plain
		RelError any `json:"rel_error"`
		Cosine   any `json:"cosine"`
	}{plain(d), finiteOrNil(d.RelError), finiteOrNil(d.Cosine)})
}

func finiteOrNil(x float64) any {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	return x
}

// diffChunk is the number of elements decoded at a time per tensor.
const diffChunk = 1 << 16

// Diff compares the tensors of a and b: which are only in one of them, and for each pair, dtype and shape and how
// far apart their values are. Tensors are compared in parallel, each streamed chunk by chunk; the result does not
// depend on scheduling.
func Diff(a, b *Model, opts DiffOptions) (*DiffReport, error) {
	r := &DiffReport{A: a.Path, B: b.Path, Tol: opts.Tol, RelTol: opts.RelTol, OnlyInA: []string{}, OnlyInB: []string{},
		Tensors: []TensorDiff{}}
	type job struct {
		ta, tb Tensor
		rowOf  []int64
	}
	var jobs []job
	paired := map[string]bool{}
	for _, ta := range a.Tensors {
		name, rowOf := ta.Name, []int64(nil)
		if opts.Map != nil {
			name, rowOf = opts.Map.Pair(ta.Name, rows(ta.Shape))
		}
		tb, ok := b.Lookup(name)
		if !ok || paired[name] {
			r.OnlyInA = append(r.OnlyInA, ta.Name)
			continue
		}
		paired[name] = true
		d := TensorDiff{Name: ta.Name, DTypeA: ta.DType, DTypeB: tb.DType, ShapeA: ta.Shape, ShapeB: tb.Shape}
		if name != ta.Name {
			d.NameB = name
		}
		r.Tensors = append(r.Tensors, d)
		jobs = append(jobs, job{ta, tb, rowOf})
	}
	for _, tb := range b.Tensors {
		if !paired[tb.Name] {
			r.OnlyInB = append(r.OnlyInB, tb.Name)
		}
	}
	type buffers struct{ a, b []float32 }
	err := forEach(len(jobs), func(i int) int64 { return jobs[i].ta.Size }, opts.Threads, opts.Progress,
		func() *buffers { return &buffers{} },
		func(buf *buffers, i int) error {
			j := jobs[i]
			return compare(&r.Tensors[i], a, b, j.ta, j.tb, j.rowOf, &buf.a, &buf.b)
		})
	if err != nil {
		return nil, err
	}
	r.Differs = len(r.OnlyInA) > 0 || len(r.OnlyInB) > 0
	for i := range r.Tensors {
		d := &r.Tensors[i]
		d.Within = d.Compared && d.NonFinite == 0 &&
			(d.MaxAbsDiff <= opts.Tol || opts.RelTol > 0 && d.RelError <= opts.RelTol)
		r.Differs = r.Differs || !d.Within
	}
	return r, nil
}

// rows is the size of the outermost dimension, 1 for a scalar.
func rows(s tensor.Shape) int64 {
	if len(s) == 0 {
		return 1
	}
	return s[0]
}

// moments accumulates the sums the metrics are made of, in float64.
type moments struct {
	d2, a2, b2, ab, maxAbs float64
	nonFinite              int64
}

func (m *moments) add(a, b []float32) {
	for i, x := range a {
		fa, fb := float64(x), float64(b[i])
		d := fa - fb
		if math.IsNaN(d) || math.IsInf(d, 0) {
			// Non-finite on one side at least: equal only as the same infinity or as two NaNs.
			if !(fa == fb || fa != fa && fb != fb) {
				m.nonFinite++
			}
			continue
		}
		m.d2 += d * d
		m.a2 += fa * fa
		m.b2 += fb * fb
		m.ab += fa * fb
		m.maxAbs = max(m.maxAbs, math.Abs(d))
	}
}

// compare fills d with the metrics of ta (in a) against tb (in b), decoding diffChunk elements at a time. With rowOf
// the chunk is a run of B's rows, and A's rows are gathered one by one in B's order.
func compare(d *TensorDiff, a, b *Model, ta, tb Tensor, rowOf []int64, bufA, bufB *[]float32) error {
	if !ta.Shape.Equal(tb.Shape) {
		return nil
	}
	d.Compared = true
	decA, err := decoder(ta.DType)
	if err != nil {
		return fmt.Errorf("%s: tensor %q: %w", a.Path, ta.Name, err)
	}
	decB, err := decoder(tb.DType)
	if err != nil {
		return fmt.Errorf("%s: tensor %q: %w", b.Path, tb.Name, err)
	}
	va, err := a.View(ta.Name)
	if err != nil {
		return err
	}
	vb, err := b.View(tb.Name)
	if err != nil {
		return err
	}
	n := va.Elements()
	if n == 0 {
		d.Identical, d.Cosine = true, 1
		return nil
	}
	nRows := rows(ta.Shape)
	cols := n / nRows
	bsA, bsB := int64(ta.DType.BlockSize()), int64(tb.DType.BlockSize())
	// The unit a chunk is made of: a whole number of blocks of both types, or whole rows when they are gathered.
	unit := bsA * bsB / gcd(bsA, bsB)
	if rowOf != nil {
		if int64(len(rowOf)) != nRows {
			return fmt.Errorf("tensor %q: the mapping reorders %d rows, the tensor has %d", ta.Name, len(rowOf), nRows)
		}
		if cols%bsA != 0 || cols%bsB != 0 {
			return fmt.Errorf("tensor %q: rows of %d elements cannot be reordered in blocks of %s (%d) and %s (%d)",
				ta.Name, cols, ta.DType, bsA, tb.DType, bsB)
		}
		unit = cols
	}
	chunk := max(diffChunk/unit, 1) * unit
	if int64(cap(*bufA)) < chunk {
		*bufA, *bufB = make([]float32, chunk), make([]float32, chunk)
	}
	var m moments
	rowBytesA, _ := ta.DType.Bytes(cols)
	for lo := int64(0); lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		xa, xb := (*bufA)[:hi-lo], (*bufB)[:hi-lo]
		if err := decodeRange(decB, xb, vb.Data, tb.DType, lo, hi); err != nil {
			return fmt.Errorf("%s: tensor %q: %w", b.Path, tb.Name, err)
		}
		if rowOf == nil {
			err = decodeRange(decA, xa, va.Data, ta.DType, lo, hi)
		} else {
			for r := lo / cols; r < hi/cols && err == nil; r++ {
				src := rowOf[r]
				if src < 0 || src >= nRows {
					return fmt.Errorf("tensor %q: the mapping takes row %d from row %d of %d", ta.Name, r, src, nRows)
				}
				off := (r - lo/cols) * cols
				err = decA(xa[off:off+cols], va.Data[src*rowBytesA:(src+1)*rowBytesA])
			}
		}
		if err != nil {
			return fmt.Errorf("%s: tensor %q: %w", a.Path, ta.Name, err)
		}
		m.add(xa, xb)
	}
	d.NonFinite = m.nonFinite
	d.MaxAbsDiff = m.maxAbs
	d.Identical = m.maxAbs == 0 && m.nonFinite == 0
	na, nb := math.Sqrt(m.a2), math.Sqrt(m.b2)
	switch {
	case m.d2 == 0:
		d.RelError = 0
	case na == 0:
		d.RelError = math.Inf(1)
	default:
		d.RelError = math.Sqrt(m.d2) / na
	}
	switch {
	case na == 0 && nb == 0:
		d.Cosine = 1
	case na == 0 || nb == 0:
		d.Cosine = 0
	default:
		// sqrt(a2·b2) rather than na·nb: for b = a it is exactly a2, so identical tensors get a cosine of exactly 1.
		den := math.Sqrt(m.a2 * m.b2)
		if math.IsInf(den, 0) {
			den = na * nb
		}
		d.Cosine = max(-1, min(1, m.ab/den)) // rounding can step just outside [-1, 1]
	}
	return nil
}

// decodeRange decodes elements [lo, hi) of data, which start and end on block boundaries of dt.
func decodeRange(dec tensor.Decoder, dst []float32, data []byte, dt tensor.DType, lo, hi int64) error {
	bLo, err := dt.Bytes(lo)
	if err != nil {
		return err
	}
	bHi, err := dt.Bytes(hi)
	if err != nil {
		return err
	}
	return dec(dst, data[bLo:bHi])
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// decoder returns the function expanding values of dt to float32: block types through quant, the others through
// tensor.ToFloat32.
func decoder(dt tensor.DType) (tensor.Decoder, error) {
	if dt.IsQuantized() {
		if !quant.CanDecode(dt) {
			return nil, fmt.Errorf("decoding %s is not supported", dt)
		}
		return func(dst []float32, src []byte) error { return quant.Decode(dt, dst, src) }, nil
	}
	if dt == tensor.C64 || !dt.Valid() {
		return nil, fmt.Errorf("%s values have no float32 form", dt)
	}
	return func(dst []float32, src []byte) error { return tensor.ToFloat32(dst, src, dt) }, nil
}
