package gguf

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/tensor"
)

// Writer streams a GGUF v3 file: the whole header is computed up front and written by NewWriter, then the tensors'
// data follows in declared order. It never seeks, so it can write to a pipe.
//
// Layout follows ggml's gguf_write_out and gguf-py's GGUFWriter, so that a file they made is reproduced byte for
// byte: keys and tensors in the given order, the data section aligned, and every tensor, the last included,
// padded with zeros to the alignment. The one difference from gguf_write_out is a file without tensors, which gets
// no padding after its header (gguf-py's vocab-only files have none, and readers never look for it).
type Writer struct {
	w       io.Writer
	tensors []TensorInfo // with absolute offsets in the output
	align   int64
	next    int   // index of the next tensor to write
	off     int64 // bytes written so far
	err     error // sticky
	closed  bool

	file *atomicfile.File // set by Create
	buf  *bufio.Writer
}

// NewWriter validates md and the tensor declarations and writes the header to w. Only Name, DType and Shape (or,
// if Shape is empty, Dims) of each declaration are used. The alignment is md's general.alignment, 32 if absent.
func NewWriter(w io.Writer, md *Metadata, tensors []TensorInfo) (*Writer, error) {
	align, err := alignmentOf(md)
	if err != nil {
		return nil, err
	}
	laid, err := layout(tensors, align)
	if err != nil {
		return nil, err
	}
	hdr, err := encodeHeader(md, laid)
	if err != nil {
		return nil, err
	}
	dataOffset := int64(len(hdr))
	if len(laid) > 0 {
		dataOffset = pad(dataOffset, align)
		hdr = append(hdr, make([]byte, dataOffset-int64(len(hdr)))...)
	}
	for i := range laid {
		laid[i].Offset += dataOffset
	}
	wr := &Writer{w: w, tensors: laid, align: align}
	if err := wr.write(hdr); err != nil {
		return nil, err
	}
	return wr, nil
}

// Create writes a GGUF file at path through a temporary file that replaces path only when Close succeeds.
func Create(path string, md *Metadata, tensors []TensorInfo) (*Writer, error) {
	f, err := atomicfile.Create(path)
	if err != nil {
		return nil, err
	}
	buf := bufio.NewWriterSize(f, 1<<20)
	w, err := NewWriter(buf, md, tensors)
	if err != nil {
		f.Abort()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	w.file, w.buf = f, buf
	return w, nil
}

// WriteFile writes md and the views, in order, to path.
func WriteFile(path string, md *Metadata, views []tensor.View) error {
	decl := make([]TensorInfo, len(views))
	for i, v := range views {
		decl[i] = TensorInfo{Name: v.Name, DType: v.DType, Shape: v.Shape}
	}
	w, err := Create(path, md, decl)
	if err != nil {
		return err
	}
	defer w.Abort()
	for _, v := range views {
		if err := w.WriteTensor(v.Name, v.Data); err != nil {
			return err
		}
	}
	return w.Close()
}

// Tensors returns the layout being written: each declaration with its Dims, Size and absolute Offset.
func (w *Writer) Tensors() []TensorInfo { return append([]TensorInfo(nil), w.tensors...) }

// WriteTensor writes the data of the next declared tensor; name must match it and data must have its exact size.
func (w *Writer) WriteTensor(name string, data []byte) error {
	if _, err := w.begin(name, int64(len(data))); err != nil {
		return err
	}
	if err := w.write(data); err != nil {
		return err
	}
	return w.end()
}

// CopyTensor writes the next declared tensor from r, which must yield exactly its size.
func (w *Writer) CopyTensor(name string, r io.Reader) error {
	ti, err := w.begin(name, -1)
	if err != nil {
		return err
	}
	n, err := io.Copy(w.w, io.LimitReader(r, ti.Size))
	w.off += n
	if err == nil && n < ti.Size {
		err = fmt.Errorf("tensor %q: source ended after %d of %d bytes", name, n, ti.Size)
	}
	if err != nil {
		w.err = fmt.Errorf("gguf: %w", err)
		return w.err
	}
	return w.end()
}

// begin checks that name is the next tensor and, if size >= 0, that the data has its size.
func (w *Writer) begin(name string, size int64) (TensorInfo, error) {
	if w.err != nil {
		return TensorInfo{}, w.err
	}
	if w.closed {
		return TensorInfo{}, errors.New("gguf: write after Close")
	}
	if w.next >= len(w.tensors) {
		return TensorInfo{}, fmt.Errorf("gguf: tensor %q: all %d declared tensors are written", name, len(w.tensors))
	}
	ti := w.tensors[w.next]
	if ti.Name != name {
		return TensorInfo{}, fmt.Errorf("gguf: tensor %q written out of order: %q is next", name, ti.Name)
	}
	if size >= 0 && size != ti.Size {
		return TensorInfo{}, fmt.Errorf("gguf: tensor %q: %s %v needs %d bytes, got %d", name, ti.DType, ti.Shape,
			ti.Size, size)
	}
	return ti, nil
}

// end pads the tensor just written to the alignment.
func (w *Writer) end() error {
	w.next++
	return w.zeros(pad(w.off, w.align) - w.off)
}

var zeroPage [4096]byte

func (w *Writer) zeros(n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeroPage)))
		if err := w.write(zeroPage[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func (w *Writer) write(p []byte) error {
	if w.err != nil {
		return w.err
	}
	n, err := w.w.Write(p)
	w.off += int64(n)
	if err != nil {
		w.err = fmt.Errorf("gguf: writing at offset %d: %w", w.off, err)
	}
	return w.err
}

// Close checks that every declared tensor was written. For a Writer from Create it then commits the file; if
// anything failed the file is discarded and the target left as it was.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.err == nil && w.next < len(w.tensors) {
		w.err = fmt.Errorf("gguf: closed after %d of %d tensors; %q is missing", w.next, len(w.tensors),
			w.tensors[w.next].Name)
	}
	if w.file == nil {
		return w.err
	}
	if w.err == nil {
		if err := w.buf.Flush(); err != nil {
			w.err = fmt.Errorf("%s: %w", w.file.Name(), err)
		}
	}
	if w.err != nil {
		w.file.Abort()
		return w.err
	}
	if err := w.file.Commit(); err != nil {
		w.err = err
	}
	return w.err
}

// Abort discards a file from Create unless Close committed it; safe to defer.
func (w *Writer) Abort() {
	w.closed = true
	if w.file != nil {
		w.file.Abort()
	}
}

// alignmentOf reads general.alignment with the reader's rules, so a written file always reads back.
func alignmentOf(md *Metadata) (int64, error) {
	v, ok := md.Get(KeyAlignment)
	if !ok {
		return defaultAlignment, nil
	}
	a, isU32 := v.v.(uint32)
	if !isU32 {
		return 0, fmt.Errorf("gguf: %s must be a u32, is %s", KeyAlignment, v.describe())
	}
	if a == 0 || a&(a-1) != 0 {
		return 0, fmt.Errorf("gguf: %s %d is not a power of two", KeyAlignment, a)
	}
	return int64(a), nil
}

// layout checks the declarations against the reader's rules and computes Dims, Size and the offset relative to
// the data section of each tensor.
func layout(decl []TensorInfo, align int64) ([]TensorInfo, error) {
	out := make([]TensorInfo, len(decl))
	seen := make(map[string]struct{}, len(decl))
	var off int64
	for i, d := range decl {
		ti := TensorInfo{Name: d.Name, DType: d.DType, Shape: d.Shape}
		if len(ti.Name) >= maxNameLength {
			return nil, fmt.Errorf("gguf: tensor name %q is %d bytes; ggml allows at most %d", ti.Name, len(ti.Name),
				maxNameLength-1)
		}
		if _, dup := seen[ti.Name]; dup {
			return nil, fmt.Errorf("gguf: tensor %q declared twice", ti.Name)
		}
		seen[ti.Name] = struct{}{}
		if len(ti.Shape) == 0 && len(d.Dims) > 0 {
			for _, n := range d.Dims {
				if n > math.MaxInt64 {
					return nil, fmt.Errorf("gguf: tensor %q: dimension %d does not fit an int64", ti.Name, n)
				}
			}
			ti.Shape = shapeOf(d.Dims)
		}
		if len(ti.Shape) > maxDims {
			return nil, fmt.Errorf("gguf: tensor %q has %d dimensions; ggml allows at most %d", ti.Name,
				len(ti.Shape), maxDims)
		}
		ti.Dims = make([]uint64, len(ti.Shape))
		for j, n := range ti.Shape {
			if n < 0 {
				return nil, fmt.Errorf("gguf: tensor %q: negative dimension in shape %v", ti.Name, ti.Shape)
			}
			ti.Dims[len(ti.Shape)-1-j] = uint64(n)
		}
		if _, err := GGMLType(ti.DType); err != nil {
			return nil, fmt.Errorf("gguf: tensor %q: %w", ti.Name, err)
		}
		ne0 := int64(1)
		if len(ti.Shape) > 0 {
			ne0 = ti.Shape[len(ti.Shape)-1]
		}
		if bs := int64(ti.DType.BlockSize()); ne0%bs != 0 {
			return nil, fmt.Errorf("gguf: tensor %q: rows of %d elements are not whole %s blocks of %d", ti.Name, ne0,
				ti.DType, bs)
		}
		size, err := ti.Shape.Bytes(ti.DType)
		if err != nil {
			return nil, fmt.Errorf("gguf: tensor %q: %w", ti.Name, err)
		}
		ti.Size, ti.Offset = size, off
		next, ok := padAdd(off, size, align)
		if !ok {
			return nil, fmt.Errorf("gguf: tensor %q: data section size overflows", ti.Name)
		}
		off = next
		out[i] = ti
	}
	return out, nil
}

// encodeHeader serialises everything before the data-section padding (gguf_write_out).
func encodeHeader(md *Metadata, tensors []TensorInfo) ([]byte, error) {
	// Sizing the buffer first saves the repeated growth of a multi-megabyte token list.
	n := 24
	for _, kv := range md.KVs() {
		n += 8 + len(kv.Key) + encodedLen(kv.Value)
	}
	for _, ti := range tensors {
		n += 8 + len(ti.Name) + 4 + 8*len(ti.Dims) + 4 + 8
	}
	b := make([]byte, 0, n)
	b = append(b, "GGUF"...)
	b = le.AppendUint32(b, 3)
	b = le.AppendUint64(b, uint64(len(tensors)))
	b = le.AppendUint64(b, uint64(md.Len()))
	for _, kv := range md.KVs() {
		if kv.Key == "" {
			return nil, errors.New("gguf: empty metadata key")
		}
		var err error
		b = appendString(b, kv.Key)
		if b, err = appendValue(b, kv.Value); err != nil {
			return nil, fmt.Errorf("gguf: metadata key %q: %w", kv.Key, err)
		}
	}
	for _, ti := range tensors {
		b = appendString(b, ti.Name)
		b = le.AppendUint32(b, uint32(len(ti.Dims)))
		for _, n := range ti.Dims {
			b = le.AppendUint64(b, n)
		}
		id, _ := GGMLType(ti.DType) // checked by layout
		b = le.AppendUint32(b, id)
		b = le.AppendUint64(b, uint64(ti.Offset))
	}
	return b, nil
}

// encodedLen is the size of a value with its type tag.
func encodedLen(v Value) int {
	n := 4
	if v.typ == TypeArray {
		n += 4 + 8
	}
	switch x := v.v.(type) {
	case string:
		return n + 8 + len(x)
	case []string:
		for _, s := range x {
			n += 8 + len(s)
		}
		return n
	}
	if v.typ == TypeArray {
		return n + v.Len()*v.elem.size()
	}
	return n + v.typ.size()
}

func appendString(b []byte, s string) []byte {
	b = le.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

func appendValue(b []byte, v Value) ([]byte, error) {
	if v.v == nil {
		return nil, errors.New("invalid (zero) value")
	}
	if err := checkStrings(v.v); err != nil {
		return nil, err
	}
	b = le.AppendUint32(b, uint32(v.typ))
	if v.typ == TypeArray {
		n := v.Len()
		if n > maxArrayElements {
			return nil, fmt.Errorf("array of %d elements exceeds GGUF_MAX_ARRAY_ELEMENTS", n)
		}
		b = le.AppendUint32(b, uint32(v.elem))
		b = le.AppendUint64(b, uint64(n))
	}
	switch x := v.v.(type) {
	case uint8:
		return append(b, x), nil
	case int8:
		return putI8(b, x), nil
	case bool:
		return putBool(b, x), nil
	case uint16:
		return le.AppendUint16(b, x), nil
	case int16:
		return putI16(b, x), nil
	case uint32:
		return le.AppendUint32(b, x), nil
	case int32:
		return putI32(b, x), nil
	case float32:
		return putF32(b, x), nil
	case uint64:
		return le.AppendUint64(b, x), nil
	case int64:
		return putI64(b, x), nil
	case float64:
		return putF64(b, x), nil
	case string:
		return appendString(b, x), nil
	case []uint8:
		return append(b, x...), nil
	case []int8:
		return appendEach(b, x, putI8), nil
	case []bool:
		return appendEach(b, x, putBool), nil
	case []uint16:
		return appendEach(b, x, le.AppendUint16), nil
	case []int16:
		return appendEach(b, x, putI16), nil
	case []uint32:
		return appendEach(b, x, le.AppendUint32), nil
	case []int32:
		return appendEach(b, x, putI32), nil
	case []float32:
		return appendEach(b, x, putF32), nil
	case []uint64:
		return appendEach(b, x, le.AppendUint64), nil
	case []int64:
		return appendEach(b, x, putI64), nil
	case []float64:
		return appendEach(b, x, putF64), nil
	case []string:
		return appendEach(b, x, appendString), nil
	}
	return nil, fmt.Errorf("value of Go type %T", v.v)
}

func checkStrings(x any) error {
	switch x := x.(type) {
	case string:
		if len(x) > maxStringLength {
			return fmt.Errorf("string of %d bytes exceeds GGUF_MAX_STRING_LENGTH", len(x))
		}
	case []string:
		for i, s := range x {
			if len(s) > maxStringLength {
				return fmt.Errorf("element %d: string of %d bytes exceeds GGUF_MAX_STRING_LENGTH", i, len(s))
			}
		}
	}
	return nil
}

func appendEach[T any](b []byte, xs []T, put func([]byte, T) []byte) []byte {
	for _, x := range xs {
		b = put(b, x)
	}
	return b
}

func putI8(b []byte, x int8) []byte   { return append(b, byte(x)) }
func putI16(b []byte, x int16) []byte { return le.AppendUint16(b, uint16(x)) }
func putI32(b []byte, x int32) []byte { return le.AppendUint32(b, uint32(x)) }
func putI64(b []byte, x int64) []byte { return le.AppendUint64(b, uint64(x)) }

func putF32(b []byte, x float32) []byte { return le.AppendUint32(b, math.Float32bits(x)) }
func putF64(b []byte, x float64) []byte { return le.AppendUint64(b, math.Float64bits(x)) }

// putBool writes 0 or 1, the only values the spec allows (gguf_writer_base::write(const bool&)).
func putBool(b []byte, x bool) []byte {
	if x {
		return append(b, 1)
	}
	return append(b, 0)
}
