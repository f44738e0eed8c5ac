package sparsity

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/prune"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// Suffixes of the tensors compressed-tensors' sparse-bitmask format stores for a weight W, beside W.bitmask and
// W.shape (BitmaskTensor.dict: the non-zero values, and where each row's values start).
const (
	compressedSuffix = ".compressed"
	rowOffsetsSuffix = ".row_offsets"
)

// ExportSparseBitmask writes the safetensors model m pruned with masks in compressed-tensors' sparse-bitmask layout
// (bitmask_compress; spectral-prune-merge.md §4.5), for vLLM-era loaders: every masked weight W is replaced by
//
//	W.compressed   the weight's type, [nnz]    its non-zero entries, row-major
//	W.bitmask      U8  [rows, ⌈cols/8⌉]        where they are, numpy.packbits(W != 0, axis=-1, bitorder="little")
//	W.shape        I64 [2]                     the weight's shape
//	W.row_offsets  I64 [rows]                  index in W.compressed of each row's first value
//
// and the other tensors and the metadata are copied. As in bitmask_compress, the bitmask marks the non-zero
// entries of the pruned weight, so a kept entry that is itself zero (or −0) is not stored; decompression restores
// the same dense tensor. Values are copied bit for bit. The report's SparsityConfig is the block config.json needs.
// Recent vLLM releases have dropped sparse checkpoints; compressed-tensors still decompresses them.
func ExportSparseBitmask(w io.Writer, m *modelfile.Model, masks *MaskSet, opts WriteOptions) (*PruneReport, error) {
	if m.Safetensors == nil {
		return nil, fmt.Errorf("%s is %s; the sparse-bitmask layout is written from safetensors models", m.Path, m.Format)
	}
	planned, err := plan(m, masks, opts)
	if err != nil {
		return nil, err
	}
	var names []string
	for name, p := range planned {
		if !rawMaskable(p.info.DType) || len(p.info.Shape) != 2 {
			return nil, fmt.Errorf("%s: tensor %q %s %v: the sparse-bitmask layout stores matrices of byte-sized floats",
				m.Path, name, p.info.DType, p.info.Shape)
		}
		names = append(names, name)
	}
	slices.Sort(names)

	// First pass: the non-zero entries of every pruned weight, which the header must count.
	nonzero := map[string]*prune.Mask{}
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
		return pruneTensor(v, planned[names[i]])
	}, func(i int, r pruned) error {
		rp.add(r.t, r.sums)
		p := planned[names[i]]
		nonzero[names[i]] = nonzeroMask(r.data, p.mask.Rows, p.mask.Cols, int(p.info.DType.Bits())/8)
		return nil
	})
	if err != nil {
		return nil, err
	}

	var decls []safetensors.TensorInfo
	for _, t := range m.Safetensors.Tensors() {
		p := planned[t.Name]
		if p == nil {
			decls = append(decls, safetensors.TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape})
			continue
		}
		nz := nonzero[t.Name]
		decls = append(decls,
			safetensors.TensorInfo{Name: t.Name + compressedSuffix, DType: t.DType, Shape: tensor.Shape{nz.Kept()}},
			safetensors.TensorInfo{Name: t.Name + bitmaskSuffix, DType: tensor.U8, Shape: tensor.Shape{int64(nz.Rows), int64(nz.Stride())}},
			safetensors.TensorInfo{Name: t.Name + shapeSuffix, DType: tensor.I64, Shape: tensor.Shape{2}},
			safetensors.TensorInfo{Name: t.Name + rowOffsetsSuffix, DType: tensor.I64, Shape: tensor.Shape{int64(nz.Rows)}})
	}
	sw, err := safetensors.NewWriter(w, decls, m.Safetensors.Metadata())
	if err != nil {
		return nil, err
	}
	layout := sw.Tensors()
	order = make([]int, len(layout))
	for i := range order {
		order[i] = i
	}
	err = inOrder(order, opts.Workers, 0, func(i int) ([]byte, error) {
		return exportPart(m, planned, nonzero, layout[i].Name)
	}, func(i int, data []byte) error {
		if opts.Progress != nil {
			opts.Progress(i+1, len(layout))
		}
		return sw.WriteTensor(layout[i].Name, data)
	})
	if err != nil {
		return nil, err
	}
	if err := sw.Close(); err != nil {
		return nil, err
	}
	r := rp.finish(m)
	structure := masks.Metadata["structure"]
	if structure == "" {
		structure = "unstructured"
	}
	targets := make([]string, len(names))
	for i, n := range names {
		targets[i] = strings.TrimSuffix(n, ".weight")
	}
	r.SparsityConfig = map[string]any{
		"format":                     "sparse-bitmask",
		"global_sparsity":            r.ModelSparsity,
		"sparsity_structure":         structure,
		"targets":                    targets,
		"ignore":                     []string{},
		"registry_requires_subclass": false,
	}
	return r, nil
}

// exportPart produces the bytes of one tensor of the sparse-bitmask output.
func exportPart(m *modelfile.Model, planned map[string]*plannedTensor, nonzero map[string]*prune.Mask,
	name string) ([]byte, error) {
	for _, suffix := range []string{compressedSuffix, bitmaskSuffix, shapeSuffix, rowOffsetsSuffix} {
		base, ok := strings.CutSuffix(name, suffix)
		p := planned[base]
		if !ok || p == nil {
			continue
		}
		nz := nonzero[base]
		switch suffix {
		case bitmaskSuffix:
			return nz.Bits, nil
		case shapeSuffix:
			return shapeBytes(nz), nil
		case rowOffsetsSuffix:
			return rowOffsets(nz), nil
		}
		v, err := m.View(base)
		if err != nil {
			return nil, err
		}
		size := int(p.info.DType.Bits()) / 8
		out := make([]byte, 0, nz.Kept()*int64(size))
		for i := range nz.Rows {
			for j := range nz.Cols {
				if nz.Get(i, j) {
					at := (i*nz.Cols + j) * size
					out = append(out, v.Data[at:at+size]...)
				}
			}
		}
		return out, nil
	}
	v, err := m.View(name) // a tensor that is not pruned
	return v.Data, err
}

// shapeBytes is W.shape of the sparse-bitmask layout: rows and columns as two I64.
func shapeBytes(nz *prune.Mask) []byte {
	return binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, uint64(nz.Rows)), uint64(nz.Cols))
}

// rowOffsets is W.row_offsets of the sparse-bitmask layout: the index in W.compressed of each row's first value, I64.
func rowOffsets(nz *prune.Mask) []byte {
	out := make([]byte, 0, 8*nz.Rows)
	var off int64
	for i := range nz.Rows {
		out = binary.LittleEndian.AppendUint64(out, uint64(off))
		off += int64(nz.RowKept(i))
	}
	return out
}

// BitmaskViews are the four tensors of the float32 matrix d (rows×cols, row-major) in compressed-tensors'
// sparse-bitmask layout under the name w, as ExportSparseBitmask writes a pruned weight: W.compressed (F32, the
// non-zero entries), W.bitmask, W.shape and W.row_offsets.
func BitmaskViews(w string, rows, cols int, d []float32) []tensor.View {
	nz := prune.NewMask(rows, cols)
	var values []float32
	for i := range rows {
		for j, x := range d[i*cols : (i+1)*cols] {
			if x != 0 {
				nz.Set(i, j, true)
				values = append(values, x)
			}
		}
	}
	compressed := make([]byte, 4*len(values))
	tensor.FromFloat32(compressed, values, tensor.F32) // sizes match by construction
	return []tensor.View{
		{Name: w + compressedSuffix, DType: tensor.F32, Shape: tensor.Shape{int64(len(values))}, Data: compressed},
		{Name: w + bitmaskSuffix, DType: tensor.U8, Shape: tensor.Shape{int64(rows), int64(nz.Stride())}, Data: nz.Bits},
		{Name: w + shapeSuffix, DType: tensor.I64, Shape: tensor.Shape{2}, Data: shapeBytes(nz)},
		{Name: w + rowOffsetsSuffix, DType: tensor.I64, Shape: tensor.Shape{int64(rows)}, Data: rowOffsets(nz)},
	}
}

// nonzeroMask marks the elements of data (rows×cols little-endian floats of size bytes) that are not ±0: any bit
// set other than the sign, which is the top bit of the last byte.
func nonzeroMask(data []byte, rows, cols, size int) *prune.Mask {
	nz := prune.NewMask(rows, cols)
	for i := range rows {
		for j := range cols {
			e := data[(i*cols+j)*size : (i*cols+j+1)*size]
			if e[size-1]&0x7f != 0 || slices.ContainsFunc(e[:size-1], func(b byte) bool { return b != 0 }) {
				nz.Set(i, j, true)
			}
		}
	}
	return nz
}
