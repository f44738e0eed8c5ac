package convert

import (
	"fmt"
	"io"

	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/tensor"
)

// Chunked tensor conversion shared by ToGGUF and ToHF: the producer cuts each tensor into chunks that the pipeline
// converts on all cores, and a chunkReader hands them, in order, to the format writer. Quantize (quantize.go) uses
// the chunkReader too.

// submitConversion queues the chunks of one tensor of the given row-major shape, converted from type from to type
// to, with the rotary row permutation over heads heads applied first (undone if inverse). It reports false when the
// pipeline has stopped. A tensor without elements queues nothing.
func submitConversion(p *pipeline, name string, src []byte, shape tensor.Shape, from, to tensor.DType, heads int64,
	inverse bool) bool {
	n, _ := shape.Elements()
	if n == 0 {
		return true
	}
	if from == to && heads == 0 {
		return p.submit(name, src, nil)
	}
	// The permutation moves whole rows within a head and block types code whole rows; anything else is a plain
	// element-wise cast, cut anywhere.
	rows, cols := n, int64(1)
	switch {
	case heads > 0: // rows along the first dimension: a q/k weight [heads·head_dim, hidden] or its 1-D bias
		rows = shape[0]
		cols = n / rows
	case from.IsQuantized() || to.IsQuantized(): // rows of ne0 elements, whole blocks
		cols = shape[len(shape)-1]
		rows = n / cols
	}
	unit := int64(1) // rows that must stay together
	if heads > 0 {
		unit = rows / heads
	}
	step := max(castChunk/cols/unit, 1) * unit
	inRow, _ := from.Bytes(cols)
	outRow, _ := to.Bytes(cols)
	for lo := int64(0); lo < rows; lo += step {
		hi := min(lo+step, rows)
		chunk := src[lo*inRow : hi*inRow]
		if !p.submit(name, nil, func() ([]byte, error) {
			if heads > 0 {
				permuted := make([]byte, len(chunk))
				permuteRows(permuted, chunk, int(unit), int(inRow), inverse)
				chunk = permuted
			}
			if from == to {
				return chunk, nil
			}
			return convertRows(chunk, from, to, int(hi-lo), int(cols), int(outRow))
		}) {
			return false
		}
	}
	return true
}

// convertRows converts rows×cols elements through float32: quant.Decode and quant.Encode (ggml's reference
// codecs) for block types, tensor's element conversions for the others.
func convertRows(src []byte, from, to tensor.DType, rows, cols, outRow int) ([]byte, error) {
	f, direct := []float32(nil), false
	if from == tensor.F32 {
		// The source is already float32: read it in place rather than copy it, a third of the memory traffic.
		f, direct = tensor.Float32s(src[:4*rows*cols])
	}
	if !direct {
		f = make([]float32, rows*cols)
		var err error
		if from.IsQuantized() {
			err = quant.Decode(from, f, src)
		} else {
			err = tensor.ToFloat32(f, src, from)
		}
		if err != nil {
			return nil, err
		}
	}
	dst := make([]byte, rows*outRow)
	if to.IsQuantized() {
		return dst, quant.Encode(to, dst, f, cols, nil)
	}
	return dst, tensor.FromFloat32(dst, f, to)
}

// chunkReader reads the pipeline's chunks of one tensor in order; the writer reading it stops at the tensor's size.
type chunkReader struct {
	p    *pipeline
	name string
	cur  []byte
	err  error // the pipeline's failure, kept so the caller can report it rather than the writer's wrapping
}

func (r *chunkReader) Read(b []byte) (int, error) {
	for len(r.cur) == 0 {
		j, ok := <-r.p.ordered
		if !ok {
			if err := r.p.err(); err != nil {
				r.err = err
				return 0, err
			}
			return 0, io.EOF
		}
		data, err := j.wait()
		if err != nil {
			r.err = fmt.Errorf("convert: tensor %q: %w", j.name, err)
			return 0, r.err
		}
		if j.name != r.name {
			r.err = fmt.Errorf("convert: internal error: chunk of %q while writing %q", j.name, r.name)
			return 0, r.err
		}
		r.cur = data
	}
	n := copy(b, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}
