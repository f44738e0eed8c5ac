package gguf

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"
	"unsafe"

	"github.com/lathe-ml/lathe/tensor"
)

// Limits of ggml's reader (src/gguf.cpp).
const (
	maxStringLength  = 1 << 30 // GGUF_MAX_STRING_LENGTH
	maxArrayElements = 1 << 30 // GGUF_MAX_ARRAY_ELEMENTS
	maxNameLength    = 64      // GGML_MAX_NAME, counting the NUL ggml stores: names are at most 63 bytes
	maxDims          = 4       // GGML_MAX_DIMS
	defaultAlignment = 32      // GGUF_DEFAULT_ALIGNMENT
)

// Without a known size (a pipe), nothing in the header is preallocated beyond this many elements; slices grow as
// bytes actually arrive.
const streamPrealloc = 1024

// Minimum encoded sizes, used to bound preallocation by the bytes left: a KV is a key length, a one-byte key, a
// type and a one-byte value; a tensor info is a name length, n_dims, a type and an offset.
const (
	minKVSize         = 8 + 1 + 4 + 1
	minTensorInfoSize = 8 + 4 + 4 + 8
)

var le = binary.LittleEndian

// decoder reads the header sequentially, tracking the absolute offset so that every error can say where it is.
type decoder struct {
	r     *bufio.Reader
	name  string
	off   int64
	size  int64  // total bytes, or -1 when reading a stream of unknown length
	arena []byte // backing store of the strings read so far (see str)
}

func newDecoder(r io.Reader, name string, size int64) *decoder {
	// Every refill reads this much, needed or not; over HTTP (package remote) that is bytes on the network, so it is
	// kept to a size that holds a small model's whole header. Parsing speed does not depend on it.
	buf := 16 << 10
	if size >= 0 && size < int64(buf) {
		buf = int(size) // bufio raises this to its minimum of 16
	}
	return &decoder{r: bufio.NewReaderSize(r, buf), name: name, size: size}
}

func (d *decoder) fail(off int64, rule Rule, format string, args ...any) error {
	return &FormatError{File: d.name, Offset: off, Rule: rule, Msg: fmt.Sprintf(format, args...)}
}

// remaining is how many bytes can still follow; unbounded for streams.
func (d *decoder) remaining() uint64 {
	if d.size < 0 {
		return math.MaxInt64
	}
	return uint64(d.size - d.off)
}

// prealloc bounds the capacity to reserve for n elements of at least minSize encoded bytes each. Callers have
// checked n*minSize against the bytes remaining, so for files the bound is the file size.
func (d *decoder) prealloc(n uint64, minSize int) int {
	if d.size < 0 {
		return int(min(n, streamPrealloc))
	}
	return int(min(n, d.remaining()/uint64(minSize)))
}

// fixed returns the next n bytes (n at most the buffer size) without copying them; they are valid until the next
// read.
func (d *decoder) fixed(n int, what string) ([]byte, error) {
	p, err := d.r.Peek(n)
	if len(p) < n {
		return nil, d.short(what, len(p), uint64(n), err)
	}
	d.r.Discard(n)
	d.off += int64(n)
	return p, nil
}

// short reports that only got of n bytes of what could be read at the current offset.
func (d *decoder) short(what string, got int, n uint64, err error) error {
	if err == nil || err == io.EOF || err == io.ErrUnexpectedEOF {
		return d.fail(d.off, RuleTruncated, "file ends inside %s (%d of %d bytes present)", what, got, n)
	}
	return fmt.Errorf("%s: reading %s at offset %d: %w", d.name, what, d.off, err)
}

// skip discards n bytes; what names the region for the error when the file is shorter.
func (d *decoder) skip(n int64, rule Rule, what string) error {
	got, err := d.r.Discard(int(n))
	off := d.off
	d.off += int64(got)
	if err == io.EOF {
		return d.fail(off, rule, "file ends inside %s (%d of %d bytes present)", what, got, n)
	}
	if err != nil {
		return fmt.Errorf("%s: reading %s at offset %d: %w", d.name, what, off, err)
	}
	return nil
}

func (d *decoder) u32(what string) (uint32, error) {
	p, err := d.fixed(4, what)
	if err != nil {
		return 0, err
	}
	return le.Uint32(p), nil
}

func (d *decoder) u64(what string) (uint64, error) {
	p, err := d.fixed(8, what)
	if err != nil {
		return 0, err
	}
	return le.Uint64(p), nil
}

// arenaChunk is the size of the blocks short strings are carved from: token lists hold 10^5 strings, and one
// allocation per string made header parsing allocation-bound.
const arenaChunk = 64 << 10

// str reads a gguf_string: a u64 length and that many bytes (gguf_reader::read(std::string&)).
func (d *decoder) str(what string) (string, error) {
	off := d.off
	n, err := d.u64(what)
	if err != nil {
		return "", err
	}
	if n > maxStringLength {
		return "", d.fail(off, RuleStringLength, "%s of %d bytes exceeds GGUF_MAX_STRING_LENGTH (%d)", what, n,
			maxStringLength)
	}
	if n > d.remaining() {
		return "", d.fail(off, RuleStringLength, "%s of %d bytes exceeds the %d bytes left in the file", what, n,
			d.remaining())
	}
	if n == 0 {
		return "", nil
	}
	if n <= arenaChunk/4 && n <= uint64(d.r.Size()) {
		p, err := d.fixed(int(n), what)
		if err != nil {
			return "", err
		}
		if len(d.arena)+len(p) > cap(d.arena) {
			d.arena = make([]byte, 0, arenaChunk)
		}
		start := len(d.arena)
		d.arena = append(d.arena, p...)
		// The arena is never written again below len, so the string is immutable.
		return unsafe.String(&d.arena[start], len(p)), nil
	}
	// Long strings get their own allocation. A stream cannot vouch for n, so the buffer grows only as bytes
	// arrive; a file has been checked to hold them.
	var buf bytes.Buffer
	if d.size >= 0 {
		buf.Grow(int(n))
	}
	got, err := io.CopyN(&buf, d.r, int64(n))
	d.off += got
	if err != nil {
		return "", d.short(what, int(got), n, err)
	}
	return buf.String(), nil
}

// value reads a value of type t; off is where its type tag started, for errors.
func (d *decoder) value(t ValueType, off int64) (Value, error) {
	switch t {
	case TypeArray:
		return d.array()
	case TypeString:
		s, err := d.str("string value")
		return Value{typ: t, v: s}, err
	}
	if t >= numValueTypes {
		return Value{}, d.fail(off, RuleValueType, "unknown value type %d (valid types are 0 to %d)", uint32(t),
			numValueTypes-1)
	}
	p, err := d.fixed(t.size(), "value")
	if err != nil {
		return Value{}, err
	}
	return Value{typ: t, v: decodeScalar(t, p)}, nil
}

func decodeScalar(t ValueType, p []byte) any {
	switch t {
	case TypeUint8:
		return p[0]
	case TypeInt8:
		return int8(p[0])
	case TypeUint16:
		return le.Uint16(p)
	case TypeInt16:
		return int16(le.Uint16(p))
	case TypeUint32:
		return le.Uint32(p)
	case TypeInt32:
		return int32(le.Uint32(p))
	case TypeFloat32:
		return math.Float32frombits(le.Uint32(p))
	case TypeBool:
		return p[0] != 0 // gguf_reader::read(bool&): any non-zero byte is true
	case TypeUint64:
		return le.Uint64(p)
	case TypeInt64:
		return int64(le.Uint64(p))
	default:
		return math.Float64frombits(le.Uint64(p))
	}
}

// array reads an element type, a count and the elements (gguf_reader::read(std::vector<T>&, n)).
func (d *decoder) array() (Value, error) {
	off := d.off
	u, err := d.u32("array element type")
	if err != nil {
		return Value{}, err
	}
	et := ValueType(u)
	if et == TypeArray {
		return Value{}, d.fail(off, RuleNestedArray, "array of arrays (ggml does not read nested arrays)")
	}
	if et >= numValueTypes {
		return Value{}, d.fail(off, RuleValueType, "unknown array element type %d (valid types are 0 to %d)", u,
			numValueTypes-1)
	}
	off = d.off
	n, err := d.u64("array length")
	if err != nil {
		return Value{}, err
	}
	if n > maxArrayElements {
		return Value{}, d.fail(off, RuleArrayLength, "array of %d elements exceeds GGUF_MAX_ARRAY_ELEMENTS (%d)", n,
			maxArrayElements)
	}
	size := et.size()
	if et == TypeString {
		size = 8 // each string has at least its length
	}
	if n*uint64(size) > d.remaining() {
		return Value{}, d.fail(off, RuleArrayLength, "array of %d %s needs at least %d bytes, %d are left in the file",
			n, et, n*uint64(size), d.remaining())
	}
	v := Value{typ: TypeArray, elem: et}
	switch et {
	case TypeString:
		s := make([]string, 0, d.prealloc(n, size))
		for range n {
			x, err := d.str("string element")
			if err != nil {
				return Value{}, err
			}
			s = append(s, x)
		}
		v.v = s
	case TypeUint8:
		v.v, err = readArray(d, n, size, func(p []byte) uint8 { return p[0] })
	case TypeInt8:
		v.v, err = readArray(d, n, size, func(p []byte) int8 { return int8(p[0]) })
	case TypeBool:
		v.v, err = readArray(d, n, size, func(p []byte) bool { return p[0] != 0 })
	case TypeUint16:
		v.v, err = readArray(d, n, size, le.Uint16)
	case TypeInt16:
		v.v, err = readArray(d, n, size, func(p []byte) int16 { return int16(le.Uint16(p)) })
	case TypeUint32:
		v.v, err = readArray(d, n, size, le.Uint32)
	case TypeInt32:
		v.v, err = readArray(d, n, size, func(p []byte) int32 { return int32(le.Uint32(p)) })
	case TypeFloat32:
		v.v, err = readArray(d, n, size, func(p []byte) float32 { return math.Float32frombits(le.Uint32(p)) })
	case TypeUint64:
		v.v, err = readArray(d, n, size, le.Uint64)
	case TypeInt64:
		v.v, err = readArray(d, n, size, func(p []byte) int64 { return int64(le.Uint64(p)) })
	case TypeFloat64:
		v.v, err = readArray(d, n, size, func(p []byte) float64 { return math.Float64frombits(le.Uint64(p)) })
	}
	if err != nil {
		return Value{}, err
	}
	return v, nil
}

// readArray reads n fixed-size elements, a buffer at a time.
func readArray[T any](d *decoder, n uint64, size int, conv func([]byte) T) ([]T, error) {
	out := make([]T, 0, d.prealloc(n, size))
	per := uint64(d.r.Size() / size)
	for n > 0 {
		k := min(n, per)
		p, err := d.fixed(int(k)*size, "array elements")
		if err != nil {
			return nil, err
		}
		for i := 0; i < len(p); i += size {
			out = append(out, conv(p[i:i+size]))
		}
		n -= k
	}
	return out, nil
}

// header is everything before the tensor data.
type header struct {
	version    uint32
	md         *Metadata
	valueOff   map[string]int64 // where each key's value starts, for errors found after parsing
	align      int64
	dataOffset int64
	tensors    []TensorInfo // Offset is absolute
	infoOff    []int64      // where each tensor info's offset field is
}

// readHeader parses and validates the header with the checks of gguf_init_from_reader, in its order.
func readHeader(d *decoder) (*header, error) {
	magic, err := d.fixed(4, "magic")
	if err != nil {
		return nil, err
	}
	if string(magic) != "GGUF" {
		return nil, d.fail(0, RuleMagic, "magic %q, want \"GGUF\"", magic)
	}
	h := &header{md: &Metadata{}, valueOff: map[string]int64{}, align: defaultAlignment}
	if h.version, err = d.u32("version"); err != nil {
		return nil, err
	}
	switch v := h.version; {
	case v == 0:
		return nil, d.fail(4, RuleVersion, "version 0 is invalid")
	case v&0xFFFF == 0:
		return nil, d.fail(4, RuleVersion, "version 0x%08x looks byte-swapped: a big-endian file? only little-endian GGUF is read", v)
	case v == 1:
		return nil, d.fail(4, RuleVersion, "GGUF version 1 is no longer supported by ggml; convert the model again")
	case v > 3:
		return nil, d.fail(4, RuleVersion, "version %d is newer than 3, the latest this reader knows", v)
	}
	nTensors, err := d.u64("tensor count")
	if err != nil {
		return nil, err
	}
	if nTensors > math.MaxInt64 {
		return nil, d.fail(8, RuleCount, "tensor count %d does not fit an int64", nTensors)
	}
	nKV, err := d.u64("key-value count")
	if err != nil {
		return nil, err
	}
	if nKV > math.MaxInt64 {
		return nil, d.fail(16, RuleCount, "key-value count %d does not fit an int64", nKV)
	}
	if err := readKVs(d, h, nKV); err != nil {
		return nil, err
	}
	if err := readTensorInfos(d, h, nTensors); err != nil {
		return nil, err
	}
	return h, nil
}

func readKVs(d *decoder, h *header, n uint64) error {
	c := d.prealloc(n, minKVSize)
	h.md.kvs = make([]KV, 0, c)
	h.md.index = make(map[string]int, c)
	for range n {
		off := d.off
		key, err := d.str("key")
		if err != nil {
			return err
		}
		if key == "" {
			return d.fail(off, RuleKey, "empty key")
		}
		if _, dup := h.md.index[key]; dup {
			return d.fail(off, RuleDuplicateKey, "key %q appears twice", key)
		}
		off = d.off
		t, err := d.u32("value type")
		if err != nil {
			return err
		}
		v, err := d.value(ValueType(t), off)
		if err != nil {
			return err
		}
		h.valueOff[key] = off
		h.md.Set(key, v)
	}
	// The alignment is checked once all keys are read, as ggml does.
	if v, ok := h.md.Get(KeyAlignment); ok {
		off := h.valueOff[KeyAlignment]
		a, isU32 := v.v.(uint32)
		if !isU32 {
			return d.fail(off, RuleAlignment, "%s must be a u32, is %s", KeyAlignment, v.describe())
		}
		if a == 0 || a&(a-1) != 0 {
			return d.fail(off, RuleAlignment, "%s %d is not a power of two", KeyAlignment, a)
		}
		h.align = int64(a)
	}
	return nil
}

func readTensorInfos(d *decoder, h *header, n uint64) error {
	c := d.prealloc(n, minTensorInfoSize)
	h.tensors = make([]TensorInfo, 0, c)
	h.infoOff = make([]int64, 0, c)
	names := make(map[string]struct{}, c)
	var rel int64 // running padded size: where the next tensor must start (gguf_init_from_reader)
	for range n {
		var ti TensorInfo
		off := d.off
		var err error
		if ti.Name, err = d.str("tensor name"); err != nil {
			return err
		}
		if len(ti.Name) >= maxNameLength {
			return d.fail(off, RuleTensorName, "tensor name of %d bytes is too long (GGML_MAX_NAME %d includes the NUL)",
				len(ti.Name), maxNameLength)
		}
		if _, dup := names[ti.Name]; dup {
			return d.fail(off, RuleDuplicateTensor, "tensor %q appears twice", ti.Name)
		}
		names[ti.Name] = struct{}{}
		if err := readShape(d, &ti); err != nil {
			return err
		}
		off = d.off
		if ti.Offset, err = readOffset(d, &ti); err != nil {
			return err
		}
		if ti.Offset != rel {
			return d.fail(off, RuleOffset, "tensor %q has offset %d, expected %d (tensors must follow each other "+
				"in info order, each padded to %d bytes)", ti.Name, ti.Offset, rel, h.align)
		}
		padded, ok := padAdd(rel, ti.Size, h.align)
		if !ok {
			return d.fail(off, RuleDimSize, "tensor %q: data section size overflows", ti.Name)
		}
		rel = padded
		h.tensors = append(h.tensors, ti)
		h.infoOff = append(h.infoOff, off)
	}
	h.dataOffset = d.off
	if n > 0 {
		// The data section starts aligned; ggml seeks there only when there are tensors, so vocab-only files may
		// end right after their infos.
		h.dataOffset = pad(d.off, h.align)
		if d.size >= 0 && h.dataOffset > d.size {
			return d.fail(d.off, RuleDataBounds, "data section starts at %d, past the end of the %d-byte file",
				h.dataOffset, d.size)
		}
	}
	for i := range h.tensors {
		ti := &h.tensors[i]
		ti.Offset += h.dataOffset
		if d.size >= 0 && ti.Size > d.size-ti.Offset {
			return d.fail(h.infoOff[i], RuleDataBounds, "tensor %q data [%d, %d) extends past the end of the %d-byte "+
				"file", ti.Name, ti.Offset, ti.Offset+ti.Size, d.size)
		}
	}
	return nil
}

// readShape reads n_dims, ne[] and the type, and sizes the tensor.
func readShape(d *decoder, ti *TensorInfo) error {
	off := d.off
	nd, err := d.u32("dimension count")
	if err != nil {
		return err
	}
	if nd > maxDims {
		return d.fail(off, RuleDims, "tensor %q has %d dimensions, at most %d allowed", ti.Name, nd, maxDims)
	}
	ti.Dims = make([]uint64, nd)
	ne0Off := d.off // where ne[0] is, or n_dims when there is none
	if nd == 0 {
		ne0Off = off
	}
	for j := range ti.Dims {
		off := d.off
		if ti.Dims[j], err = d.u64("dimension"); err != nil {
			return err
		}
		if ti.Dims[j] > math.MaxInt64 {
			return d.fail(off, RuleDimSize, "tensor %q dimension %d is negative (%d)", ti.Name, j, int64(ti.Dims[j]))
		}
	}
	ti.Shape = shapeOf(ti.Dims)
	elems, err := ti.Shape.Elements()
	if err != nil {
		return d.fail(ne0Off, RuleDimSize, "tensor %q: %v", ti.Name, err)
	}
	off = d.off
	id, err := d.u32("tensor type")
	if err != nil {
		return err
	}
	if ti.DType, err = TypeFromGGML(id); err != nil {
		return d.fail(off, RuleTensorType, "tensor %q: %v", ti.Name, err)
	}
	ne0 := uint64(1) // ggml fills missing dimensions with 1
	if len(ti.Dims) > 0 {
		ne0 = ti.Dims[0]
	}
	if bs := uint64(ti.DType.BlockSize()); ne0%bs != 0 {
		return d.fail(ne0Off, RuleBlockSize, "tensor %q of type %s has %d elements per row, not a multiple of the "+
			"block size %d", ti.Name, ti.DType, ne0, bs)
	}
	if ti.Size, err = ti.DType.Bytes(elems); err != nil {
		return d.fail(ne0Off, RuleDimSize, "tensor %q: %v", ti.Name, err)
	}
	return nil
}

func readOffset(d *decoder, ti *TensorInfo) (int64, error) {
	off := d.off
	o, err := d.u64("tensor offset")
	if err != nil {
		return 0, err
	}
	if o > math.MaxInt64 {
		return 0, d.fail(off, RuleOffset, "tensor %q offset %d does not fit an int64", ti.Name, o)
	}
	return int64(o), nil
}

// shapeOf turns ggml's ne (innermost first) into a row-major shape (outermost first).
func shapeOf(dims []uint64) tensor.Shape {
	s := make(tensor.Shape, len(dims))
	for i, d := range dims {
		s[len(dims)-1-i] = int64(d)
	}
	return s
}

// pad rounds o up to a multiple of align, a power of two (GGML_PAD).
func pad(o, align int64) int64 { return (o + align - 1) &^ (align - 1) }

// padAdd returns base + GGML_PAD(size, align), reporting overflow.
func padAdd(base, size, align int64) (int64, bool) {
	if size > math.MaxInt64-align {
		return 0, false
	}
	sum, carry := bits.Add64(uint64(base), uint64(pad(size, align)), 0)
	if carry != 0 || sum > math.MaxInt64 {
		return 0, false
	}
	return int64(sum), true
}
