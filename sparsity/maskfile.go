// Package sparsity prunes whole models and keeps their masks: it chooses the weight matrices of a model (as LIFT
// and Wanda do, spectral-prune-merge.md §3.1 and §4), computes a mask for each with package prune, stores masks in
// mask files, and writes the pruned model in the input's own format and types, or in compressed-tensors'
// sparse-bitmask layout.
//
// A mask file is a safetensors file. For every masked weight W it holds two tensors named after it, in the layout
// compressed-tensors uses for its sparse-bitmask format (§4.5):
//
//	W.bitmask  U8  [rows, ⌈cols/8⌉]  numpy.packbits(mask, axis=-1, bitorder="little"), rows zero-padded to bytes
//	W.shape    I64 [ndim]           the weight's shape; rows are all dimensions but the last, cols the last
//
// and __metadata__ records how the masks were made (method, rank, budget, structure, selection, seed). A set bit
// marks an entry that is kept: by pruning, or selected for LIFT's sparse fine-tuning.
package sparsity

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/prune"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// TensorMask is the mask of one weight.
type TensorMask struct {
	Name  string
	Shape tensor.Shape // of the weight
	Mask  *prune.Mask  // rows = all dimensions of Shape but the last, cols = the last
}

// MaskSet is the content of a mask file: masks sorted by name, and metadata.
type MaskSet struct {
	Tensors  []TensorMask
	Metadata map[string]string
}

// Suffixes of the tensors of a mask file (compressed-tensors' BitmaskTensor.dict).
const (
	bitmaskSuffix = ".bitmask"
	shapeSuffix   = ".shape"
)

// Lookup returns the mask of the named weight.
func (s *MaskSet) Lookup(name string) (TensorMask, bool) {
	i, ok := slices.BinarySearchFunc(s.Tensors, name, func(t TensorMask, n string) int { return strings.Compare(t.Name, n) })
	if !ok {
		return TensorMask{}, false
	}
	return s.Tensors[i], true
}

func (s *MaskSet) sort() {
	slices.SortFunc(s.Tensors, func(a, b TensorMask) int { return strings.Compare(a.Name, b.Name) })
}

// MaskError reports a malformed mask file.
type MaskError struct {
	File   string
	Tensor string // the tensor concerned, if any
	Msg    string
}

func (e *MaskError) Error() string {
	if e.Tensor == "" {
		return fmt.Sprintf("%s: mask file: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s: mask file: tensor %q: %s", e.File, e.Tensor, e.Msg)
}

// matrixSize is the rows and cols of a weight of the given shape, as masks see it.
func matrixSize(shape tensor.Shape) (rows, cols int, err error) {
	n, err := shape.Elements()
	if err != nil {
		return 0, 0, err
	}
	if len(shape) < 2 {
		return 0, 0, fmt.Errorf("shape %v: a mask needs at least two dimensions", shape)
	}
	c := shape[len(shape)-1]
	if n > 1<<40 || c > 1<<31 {
		return 0, 0, fmt.Errorf("shape %v: too large for a mask", shape)
	}
	if c == 0 {
		return 0, 0, fmt.Errorf("shape %v: no columns", shape)
	}
	return int(n / c), int(c), nil
}

// WriteMasks writes s as a mask file to w.
func WriteMasks(w io.Writer, s *MaskSet) error {
	views := make([]tensor.View, 0, 2*len(s.Tensors))
	for _, t := range s.Tensors {
		rows, cols, err := matrixSize(t.Shape)
		if err != nil {
			return fmt.Errorf("mask %q: %w", t.Name, err)
		}
		if t.Mask.Rows != rows || t.Mask.Cols != cols {
			return fmt.Errorf("mask %q: %d×%d mask for shape %v", t.Name, t.Mask.Rows, t.Mask.Cols, t.Shape)
		}
		shape := make([]byte, 0, 8*len(t.Shape))
		for _, d := range t.Shape {
			shape = binary.LittleEndian.AppendUint64(shape, uint64(d))
		}
		views = append(views,
			tensor.View{Name: t.Name + bitmaskSuffix, DType: tensor.U8, Shape: tensor.Shape{int64(rows), int64(t.Mask.Stride())},
				Data: t.Mask.Bits},
			tensor.View{Name: t.Name + shapeSuffix, DType: tensor.I64, Shape: tensor.Shape{int64(len(t.Shape))}, Data: shape})
	}
	md := s.Metadata
	if md == nil {
		md = map[string]string{}
	}
	return safetensors.Write(w, views, md)
}

// WriteMaskFile writes s to path, replacing it only once the whole file is written.
func WriteMaskFile(path string, s *MaskSet) error {
	f, err := atomicfile.Create(path)
	if err != nil {
		return err
	}
	defer f.Abort()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := WriteMasks(bw, s); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Commit()
}

// OpenMasks reads the mask file at path.
func OpenMasks(path string) (*MaskSet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return ReadMasks(f, st.Size(), path)
}

// ReadMasks reads a mask file of size bytes from r; name labels errors. Every tensor must belong to a complete
// bitmask/shape pair whose sizes agree, and padding bits must be zero.
func ReadMasks(r io.ReaderAt, size int64, name string) (*MaskSet, error) {
	f, err := safetensors.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	fail := func(tensor, format string, args ...any) error {
		return &MaskError{File: name, Tensor: tensor, Msg: fmt.Sprintf(format, args...)}
	}
	infos := f.Tensors()
	have := map[string]safetensors.TensorInfo{}
	for _, t := range infos {
		have[t.Name] = t
	}
	s := &MaskSet{Metadata: f.Metadata()}
	for _, t := range infos {
		base, isShape := strings.CutSuffix(t.Name, shapeSuffix)
		if !isShape {
			b, isBits := strings.CutSuffix(t.Name, bitmaskSuffix)
			if !isBits {
				return nil, fail(t.Name, "not a mask tensor: names end in %s or %s", bitmaskSuffix, shapeSuffix)
			}
			if _, ok := have[b+shapeSuffix]; !ok {
				return nil, fail(t.Name, "no %s tensor beside it", b+shapeSuffix)
			}
			continue
		}
		bits, ok := have[base+bitmaskSuffix]
		if !ok {
			return nil, fail(t.Name, "no %s tensor beside it", base+bitmaskSuffix)
		}
		if t.DType != tensor.I64 || len(t.Shape) != 1 || t.Shape[0] < 2 || t.Shape[0] > 8 {
			return nil, fail(t.Name, "%s %v; want I64 with 2 to 8 dimensions", t.DType, t.Shape)
		}
		v, err := f.Tensor(t.Name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		shape := make(tensor.Shape, t.Shape[0])
		for i := range shape {
			if shape[i] = int64(binary.LittleEndian.Uint64(v.Data[8*i:])); shape[i] < 0 {
				return nil, fail(t.Name, "dimension %d is %d", i, shape[i])
			}
		}
		rows, cols, err := matrixSize(shape)
		if err != nil {
			return nil, fail(t.Name, "%v", err)
		}
		stride := (int64(cols) + 7) / 8
		if bits.DType != tensor.U8 || len(bits.Shape) != 2 || bits.Shape[0] != int64(rows) || bits.Shape[1] != stride {
			return nil, fail(bits.Name, "%s %v; a mask of shape %v needs U8 [%d %d]", bits.DType, bits.Shape, shape,
				rows, stride)
		}
		bv, err := f.Tensor(bits.Name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		m, err := prune.MaskFromBits(rows, cols, slices.Clone(bv.Data))
		if err != nil {
			return nil, fail(bits.Name, "%v", err)
		}
		s.Tensors = append(s.Tensors, TensorMask{Name: base, Shape: shape, Mask: m})
	}
	s.sort()
	return s, nil
}

// CombineOp is how Combine merges masks.
type CombineOp string

const (
	And CombineOp = "and" // kept by every mask
	Or  CombineOp = "or"  // kept by any mask
)

// Combine merges mask sets entry by entry. The sets must cover the same weights with the same shapes. The
// result's metadata records the operation and, under "input<i>.", each input's metadata.
func Combine(op CombineOp, sets ...*MaskSet) (*MaskSet, error) {
	if op != And && op != Or {
		return nil, fmt.Errorf("combine: operation %q: want and or or", op)
	}
	if len(sets) < 2 {
		return nil, fmt.Errorf("combine: %d mask sets; want two or more", len(sets))
	}
	out := &MaskSet{Metadata: map[string]string{"combine": string(op)}}
	for i, s := range sets {
		for _, k := range slices.Sorted(maps.Keys(s.Metadata)) {
			out.Metadata["input"+strconv.Itoa(i)+"."+k] = s.Metadata[k]
		}
	}
	first := sets[0]
	for _, s := range sets[1:] {
		if len(s.Tensors) != len(first.Tensors) {
			return nil, fmt.Errorf("combine: the mask sets cover %d and %d weights", len(first.Tensors), len(s.Tensors))
		}
	}
	for _, t := range first.Tensors {
		m := t.Mask
		for _, s := range sets[1:] {
			o, ok := s.Lookup(t.Name)
			if !ok {
				return nil, fmt.Errorf("combine: %q is in the first mask set only", t.Name)
			}
			if !o.Shape.Equal(t.Shape) {
				return nil, fmt.Errorf("combine: %q has shape %v in one set and %v in another", t.Name, t.Shape, o.Shape)
			}
			var err error
			if op == And {
				m, err = m.And(o.Mask)
			} else {
				m, err = m.Or(o.Mask)
			}
			if err != nil {
				return nil, fmt.Errorf("combine: %q: %w", t.Name, err)
			}
		}
		out.Tensors = append(out.Tensors, TensorMask{Name: t.Name, Shape: t.Shape, Mask: m})
	}
	return out, nil
}

// TensorSparsity is how much of one tensor (or of several, for a total) a mask removes.
type TensorSparsity struct {
	Name     string       `json:"name"`
	Shape    tensor.Shape `json:"shape,omitempty"`
	Elements int64        `json:"elements"`
	Kept     int64        `json:"kept"`
	Sparsity float64      `json:"sparsity"` // removed / elements
}

func newSparsity(name string, shape tensor.Shape, elements, kept int64) TensorSparsity {
	s := TensorSparsity{Name: name, Shape: shape, Elements: elements, Kept: kept}
	if elements > 0 {
		s.Sparsity = float64(elements-kept) / float64(elements)
	}
	return s
}

// MaskReport describes a mask set.
type MaskReport struct {
	Metadata map[string]string `json:"metadata,omitempty"`
	Tensors  []TensorSparsity  `json:"tensors"`
	Total    TensorSparsity    `json:"total"`
}

// Report counts what every mask keeps.
func (s *MaskSet) Report() MaskReport {
	r := MaskReport{Metadata: s.Metadata, Tensors: []TensorSparsity{}}
	var n, k int64
	for _, t := range s.Tensors {
		e, kept := t.Mask.Elements(), t.Mask.Kept()
		r.Tensors = append(r.Tensors, newSparsity(t.Name, t.Shape, e, kept))
		n += e
		k += kept
	}
	r.Total = newSparsity("total", nil, n, k)
	return r
}
