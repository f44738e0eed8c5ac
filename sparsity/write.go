package sparsity

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/prune"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// WriteOptions tune Prune and ExportSparseBitmask.
type WriteOptions struct {
	// Imatrix gives the importance weights used to re-encode quantized GGUF tensors, as llama-quantize would; the
	// i-quants cannot be encoded without it.
	Imatrix *convert.Imatrix
	// Workers is the number of tensors prepared at once; 0 means GOMAXPROCS.
	Workers  int
	Progress func(done, total int)
}

// TensorPruned is what pruning did to one tensor (or, for the total, to all pruned tensors).
type TensorPruned struct {
	TensorSparsity              // of the mask
	DType          tensor.DType `json:"dtype,omitzero"`
	// Zeros counts the entries that are exactly zero in the output. Re-encoding a ggml type with a per-block
	// minimum (Q4_K, Q5_K, Q4_1, ...) cannot always represent 0, so it may fall short of the pruned count.
	Zeros int64 `json:"zeros"`
	// RelError is ‖W − W_pruned‖_F / ‖W‖_F, both as the files decode them to float32.
	RelError float64 `json:"rel_frobenius_error"`
}

// MarshalJSON writes a non-finite error (a weight holding NaN or Inf) as null.
func (t TensorPruned) MarshalJSON() ([]byte, error) {
	type plain TensorPruned
	var e *float64
	if !math.IsNaN(t.RelError) && !math.IsInf(t.RelError, 0) {
		e = &t.RelError
	}
	return json.Marshal(struct {
		plain
		RelError *float64 `json:"rel_frobenius_error"`
	}{plain(t), e})
}

// PruneReport is the outcome of Prune or ExportSparseBitmask.
type PruneReport struct {
	Tensors []TensorPruned `json:"tensors"` // in name order
	Total   TensorPruned   `json:"total"`   // over the pruned tensors
	// ModelElements counts every parameter of the model; ModelSparsity is the share of them pruned.
	ModelElements int64   `json:"model_elements"`
	ModelSparsity float64 `json:"model_sparsity"`
	// SparsityConfig is, for the sparse-bitmask layout, the quantization_config.sparsity_config block that a
	// config.json beside the weights needs for compressed-tensors to decompress them.
	SparsityConfig map[string]any `json:"sparsity_config,omitempty"`
}

// errorSums accumulates the squared norms the relative error is made of.
type errorSums struct{ ww, dd float64 }

func (s *errorSums) add(orig, out []float32) {
	for i, x := range orig {
		d := float64(x) - float64(out[i])
		s.ww += float64(x) * float64(x)
		s.dd += d * d
	}
}

func (s errorSums) rel() float64 {
	if s.dd == 0 {
		return 0
	}
	return math.Sqrt(s.dd / s.ww)
}

// plannedTensor is a masked tensor of the model with what writing it needs.
type plannedTensor struct {
	info modelfile.Tensor
	mask *prune.Mask
	imp  []float32 // importance for re-encoding, if any
}

// plan matches the masks with m's tensors: each mask must name a tensor of the same shape that can be decoded,
// and, for a type that is re-encoded, encoded.
func plan(m *modelfile.Model, masks *MaskSet, opts WriteOptions) (map[string]*plannedTensor, error) {
	out := map[string]*plannedTensor{}
	for _, tm := range masks.Tensors {
		t, ok := m.Lookup(tm.Name)
		if !ok {
			return nil, fmt.Errorf("%s: the mask of %q matches no tensor of the model", m.Path, tm.Name)
		}
		if !t.Shape.Equal(tm.Shape) {
			return nil, fmt.Errorf("%s: tensor %q has shape %v, its mask %v", m.Path, t.Name, t.Shape, tm.Shape)
		}
		if err := checkDecodable(t.DType); err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", m.Path, t.Name, err)
		}
		p := &plannedTensor{info: t, mask: tm.Mask}
		if !rawMaskable(t.DType) {
			if !quant.CanEncode(t.DType) && !t.DType.IsFloat() {
				return nil, fmt.Errorf("%s: tensor %q: lathe cannot re-encode %s", m.Path, t.Name, t.DType)
			}
			if e, ok := opts.Imatrix.Lookup(t.Name); ok && int64(len(e)) == t.Shape[len(t.Shape)-1] {
				p.imp = e
			}
			if t.DType.IsQuantized() && p.imp == nil && quant.RequiresImatrix(t.DType) {
				return nil, fmt.Errorf("%s: tensor %q: re-encoding %s needs an importance matrix", m.Path, t.Name, t.DType)
			}
		}
		out[t.Name] = p
	}
	return out, nil
}

// rawMaskable reports a float type whose elements are whole bytes with 0 encoded as all-zero bits: pruning then
// zeroes the bytes of removed entries and leaves kept ones bit for bit, with no decoding (F64 would not survive a
// trip through float32).
func rawMaskable(t tensor.DType) bool {
	return t.IsFloat() && int(t.Bits())%8 == 0 && t != tensor.F8_E8M0
}

// pruned is one tensor as written, with its report entry and error sums when it was pruned.
type pruned struct {
	data []byte
	t    TensorPruned
	sums errorSums
}

// pruneTensor prunes a masked tensor.
func pruneTensor(v tensor.View, p *plannedTensor) (pruned, error) {
	x, err := decode(v)
	if err != nil {
		return pruned{}, err
	}
	mask := p.mask
	y := slices.Clone(x)
	mask.Apply(y)
	var out []byte
	if rawMaskable(v.DType) {
		out = maskBytes(v.Data, mask, int(v.DType.Bits())/8)
	} else {
		size, _ := v.DType.Bytes(int64(len(y)))
		out = make([]byte, size)
		if v.DType.IsQuantized() {
			err = quant.Encode(v.DType, out, y, mask.Cols, p.imp)
		} else {
			err = tensor.FromFloat32(out, y, v.DType)
		}
		if err == nil {
			y, err = decode(tensor.View{Name: v.Name, DType: v.DType, Shape: v.Shape, Data: out})
		}
		if err != nil {
			return pruned{}, fmt.Errorf("tensor %q: %w", v.Name, err)
		}
	}
	var s errorSums
	s.add(x, y)
	var zeros int64
	for _, z := range y {
		if z == 0 {
			zeros++
		}
	}
	r := TensorPruned{TensorSparsity: newSparsity(v.Name, v.Shape, mask.Elements(), mask.Kept()), DType: v.DType,
		Zeros: zeros, RelError: s.rel()}
	return pruned{out, r, s}, nil
}

// maskBytes copies data, elements of size bytes, with the elements the mask removes set to zero bytes.
func maskBytes(data []byte, mask *prune.Mask, size int) []byte {
	out := slices.Clone(data)
	for i := range mask.Rows {
		row := out[i*mask.Cols*size : (i+1)*mask.Cols*size]
		for j := range mask.Cols {
			if !mask.Get(i, j) {
				clear(row[j*size : (j+1)*size])
			}
		}
	}
	return out
}

// report gathers the per-tensor entries into a PruneReport; the total error comes from the summed squared norms,
// not from the per-tensor ratios.
type report struct {
	r    PruneReport
	sums errorSums
}

func (rp *report) add(t TensorPruned, x errorSums) {
	rp.r.Tensors = append(rp.r.Tensors, t)
	rp.r.Total.Elements += t.Elements
	rp.r.Total.Kept += t.Kept
	rp.r.Total.Zeros += t.Zeros
	rp.sums.ww += x.ww
	rp.sums.dd += x.dd
}

func (rp *report) finish(m *modelfile.Model) *PruneReport {
	r := &rp.r
	slices.SortFunc(r.Tensors, func(a, b TensorPruned) int { return strings.Compare(a.Name, b.Name) })
	r.Total.TensorSparsity = newSparsity("total", nil, r.Total.Elements, r.Total.Kept)
	r.Total.RelError = rp.sums.rel()
	for _, t := range m.Tensors {
		n, _ := t.Shape.Elements()
		r.ModelElements += n
	}
	if r.ModelElements > 0 {
		r.ModelSparsity = float64(r.Total.Elements-r.Total.Kept) / float64(r.ModelElements)
	}
	return r
}

// Prune writes m to w in its own format, with its metadata, tensor order and types, and every tensor that masks
// cover zeroed where its mask removes entries. Float tensors keep their kept entries bit for bit; quantized GGUF
// tensors are decoded, pruned and re-encoded to their type (which re-rounds their blocks). A split GGUF or a
// sharded checkpoint is written as one file. Tensors are prepared in parallel and written in order as they
// complete, so memory holds a few tensors, never the model.
func Prune(w io.Writer, m *modelfile.Model, masks *MaskSet, opts WriteOptions) (*PruneReport, error) {
	planned, err := plan(m, masks, opts)
	if err != nil {
		return nil, err
	}
	var names []string
	var write func(name string, data []byte) error
	var finish func() error
	switch {
	case m.GGUF != nil:
		md := m.GGUF.Metadata.Clone()
		for _, k := range []string{gguf.KeySplitNo, gguf.KeySplitCount, gguf.KeySplitTensorsCount} {
			md.Delete(k)
		}
		var decls []gguf.TensorInfo
		for _, t := range m.GGUF.Tensors() {
			decls = append(decls, gguf.TensorInfo{Name: t.Name, DType: t.DType, Dims: t.Dims})
			names = append(names, t.Name)
		}
		gw, err := gguf.NewWriter(w, md, decls)
		if err != nil {
			return nil, err
		}
		write, finish = gw.WriteTensor, gw.Close
	default:
		set := m.Safetensors
		var decls []safetensors.TensorInfo
		for _, t := range set.Tensors() {
			decls = append(decls, safetensors.TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape})
		}
		sw, err := safetensors.NewWriter(w, decls, set.Metadata())
		if err != nil {
			return nil, err
		}
		for _, t := range sw.Tensors() {
			names = append(names, t.Name)
		}
		write, finish = sw.WriteTensor, sw.Close
	}
	var rp report
	order := make([]int, len(names))
	for i := range order {
		order[i] = i
	}
	err = inOrder(order, opts.Workers, 0, func(i int) (pruned, error) {
		v, err := m.View(names[i])
		if err != nil {
			return pruned{}, err
		}
		p := planned[names[i]]
		if p == nil {
			return pruned{data: v.Data}, nil
		}
		return pruneTensor(v, p)
	}, func(i int, r pruned) error {
		if planned[names[i]] != nil {
			rp.add(r.t, r.sums)
		}
		if opts.Progress != nil {
			opts.Progress(i+1, len(names))
		}
		return write(names[i], r.data)
	})
	if err != nil {
		return nil, err
	}
	if err := finish(); err != nil {
		return nil, err
	}
	return rp.finish(m), nil
}
