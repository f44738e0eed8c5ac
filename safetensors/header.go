package safetensors

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"unicode/utf8"

	"github.com/lathe-ml/lathe/tensor"
)

// MaxHeaderSize is the largest JSON header accepted, the reference's MAX_HEADER_SIZE (100,000,000 bytes).
const MaxHeaderSize = 100_000_000

// prefixSize is the u64 little-endian header length that starts every file (the reference's N_LEN).
const prefixSize = 8

// TensorInfo describes one tensor of a file.
type TensorInfo struct {
	Name   string
	DType  tensor.DType
	Shape  tensor.Shape
	Offset int64 // absolute byte offset of the tensor's data in its file
	Size   int64 // bytes of data
}

// header is a parsed and validated JSON header.
type header struct {
	tensors  []TensorInfo      // in data_offsets order, Offset relative to the data section until located
	index    map[string]int    // name → position of the entry in the header
	order    []int             // position in the header → index in tensors
	metadata map[string]string // nil when the header has no __metadata__ or it is null
	dataLen  uint64            // end of the last tensor: the size the data section must have
}

// entry is a tensor as declared, before validation.
type entry struct {
	info       TensorInfo
	begin, end uint64
	pos        int    // offset of the entry's name in the header
	bits       uint64 // bits per element of the dtype
	seq        int    // position among the header's entries
}

const metadataKey = "__metadata__"

// headerLength checks the 8-byte prefix of a file of the given size (-1: unknown, for streams) and returns N.
func headerLength(prefix []byte, size int64) (int64, error) {
	if len(prefix) < prefixSize {
		return 0, &FormatError{Rule: fmt.Sprintf("file has %d bytes, fewer than the %d-byte header length", len(prefix), prefixSize)}
	}
	n := binary.LittleEndian.Uint64(prefix)
	if n > MaxHeaderSize {
		return 0, &FormatError{Rule: fmt.Sprintf("header length %d exceeds the limit of %d bytes", n, MaxHeaderSize)}
	}
	if size >= 0 && int64(n) > size-prefixSize {
		return 0, &FormatError{Rule: fmt.Sprintf("header length %d runs past the end of the %d-byte file", n, size)}
	}
	return int64(n), nil
}

// parseHeader parses and validates the N header bytes. It applies every rule of the reference reader except the
// final one, that the data section ends exactly at the end of the file, which locate checks.
func parseHeader(b []byte) (*header, error) {
	if !utf8.Valid(b) {
		pos := 0
		for pos < len(b) {
			r, size := utf8.DecodeRune(b[pos:])
			if r == utf8.RuneError && size <= 1 {
				break
			}
			pos += size
		}
		return nil, &FormatError{Offset: prefixSize + int64(pos), Rule: "header is not valid UTF-8"}
	}
	s := &scanner{b: b, base: prefixSize}
	// The README says the header "MUST begin with {", but the reference reader deliberately accepts leading JSON
	// whitespace since safetensors PR #686 (so that writers can align the data): whitespace may come first, nothing
	// else may.
	if s.peek() != '{' {
		return nil, s.errorf("header must begin with '{', found %s", s.found())
	}
	s.pos++
	// A tensor entry takes at least ~45 bytes of JSON, so len/64 is a count that a real header rarely exceeds
	// (saving the rehashing of a growing map) and that costs under half the header's size in memory.
	h := &header{index: make(map[string]int, len(b)/64)}
	var entries []entry
	seenMetadata := false
	if s.peek() == '}' {
		s.pos++
	} else {
		for {
			pos := s.pos
			key, err := s.str()
			if err != nil {
				return nil, err
			}
			if key == metadataKey && seenMetadata {
				return nil, s.errorAt(pos, "duplicate key %q", key)
			}
			if err := s.expect(':', "':'"); err != nil {
				return nil, err
			}
			if key == metadataKey {
				seenMetadata = true
				if h.metadata, err = s.metadata(); err != nil {
					return nil, err
				}
			} else {
				e, err := s.entry(key, pos)
				if err != nil {
					return nil, err
				}
				e.seq = len(entries)
				// One map operation both records the name and detects a duplicate, which leaves the length unchanged;
				// with a million tensors the map is the main cost of parsing.
				if h.index[key] = len(entries); len(h.index) == len(entries) {
					return nil, s.errorAt(pos, "duplicate key %q", key)
				}
				if len(entries) == cap(entries) {
					// Doubling keeps the garbage of growth to the final size; append's 1.25x growth of large
					// slices would allocate about five times it.
					entries = slices.Grow(entries, max(len(entries), 16))
				}
				entries = append(entries, e)
			}
			more, err := s.more('}')
			if err != nil {
				return nil, err
			}
			if !more {
				break
			}
		}
	}
	s.ws()
	if s.pos != len(s.b) {
		return nil, s.errorf("unexpected %s after the header object (only whitespace may pad the header)", s.found())
	}
	if err := h.validate(entries); err != nil {
		return nil, err
	}
	return h, nil
}

// metadata reads the value of __metadata__: a string→string map, or null (the reference's Option<HashMap>).
func (s *scanner) metadata() (map[string]string, error) {
	if s.peek() == 'n' {
		return nil, s.literal("null")
	}
	if err := s.expect('{', "__metadata__ to be an object of strings"); err != nil {
		return nil, err
	}
	m := map[string]string{}
	if s.peek() == '}' {
		s.pos++
		return m, nil
	}
	for {
		pos := s.pos
		k, err := s.str()
		if err != nil {
			return nil, err
		}
		if _, dup := m[k]; dup {
			return nil, s.errorAt(pos, "duplicate __metadata__ key %q", k)
		}
		if err := s.expect(':', "':'"); err != nil {
			return nil, err
		}
		if s.peek() != '"' {
			return nil, s.errorf("__metadata__ value of %q must be a string, found %s", k, s.found())
		}
		if m[k], err = s.str(); err != nil {
			return nil, err
		}
		more, err := s.more('}')
		if err != nil {
			return nil, err
		}
		if !more {
			return m, nil
		}
	}
}

// entry reads {"dtype", "shape", "data_offsets"}. Other fields are skipped because the reference's TensorInfo is a
// plain serde struct, which ignores unknown fields; a rewrite drops them.
func (s *scanner) entry(name string, pos int) (entry, error) {
	e := entry{info: TensorInfo{Name: name}, pos: pos}
	fail := func(err error) (entry, error) {
		if fe, ok := err.(*FormatError); ok {
			fe.Tensor = name
		}
		return entry{}, err
	}
	if s.peek() != '{' {
		return fail(s.errorf(`expected an object {"dtype", "shape", "data_offsets"}, found %s`, s.found()))
	}
	s.pos++
	const hasDType, hasShape, hasOffsets = 1, 2, 4
	seen := 0
	if s.peek() == '}' {
		s.pos++
	} else {
		for {
			fieldPos := s.pos
			field, err := s.strBytes()
			if err != nil {
				return fail(err)
			}
			if err := s.expect(':', "':'"); err != nil {
				return fail(err)
			}
			bit := 0
			switch string(field) {
			case "dtype":
				bit = hasDType
				vpos := s.pos
				v, err := s.strBytes()
				if err != nil {
					return fail(err)
				}
				i, err := parseDType(v)
				if err != nil {
					return fail(s.errorAt(vpos, "%v", err))
				}
				e.info.DType, e.bits = dtypes[i].dtype, dtypes[i].bits
			case "shape":
				bit = hasShape
				if e.info.Shape, err = s.shape(); err != nil {
					return fail(err)
				}
			case "data_offsets":
				bit = hasOffsets
				if e.begin, e.end, err = s.offsets(); err != nil {
					return fail(err)
				}
			default:
				// The entry is nested two levels deep in the header.
				if err := s.skip(maxDepth - 2); err != nil {
					return fail(err)
				}
			}
			if seen&bit != 0 {
				return fail(s.errorAt(fieldPos, "duplicate field %q", field))
			}
			seen |= bit
			more, err := s.more('}')
			if err != nil {
				return fail(err)
			}
			if !more {
				break
			}
		}
	}
	for _, f := range []struct {
		bit  int
		name string
	}{{hasDType, "dtype"}, {hasShape, "shape"}, {hasOffsets, "data_offsets"}} {
		if seen&f.bit == 0 {
			return fail(s.errorAt(pos, "missing field %q", f.name))
		}
	}
	return e, nil
}

// shape reads an array of dimensions. Dimensions are stored as int64 (tensor.Shape), so one above 2^63-1 is refused
// here even where the reference would accept it alongside a zero dimension. The array is read twice, to count and
// then to fill, so that the shape is allocated once at its exact size: a header of a million dimensions costs 8
// bytes per dimension, not the slack of a growing slice.
func (s *scanner) shape() (tensor.Shape, error) {
	if err := s.expect('[', "shape to be an array of integers"); err != nil {
		return nil, err
	}
	start := s.pos
	n, err := s.dims(nil)
	if err != nil {
		return nil, err
	}
	shape := make(tensor.Shape, 0, n)
	s.pos = start
	_, err = s.dims(&shape)
	return shape, err
}

// dims reads dimensions up to and including the closing ']', appending them to shape unless it is nil.
func (s *scanner) dims(shape *tensor.Shape) (int, error) {
	if s.peek() == ']' {
		s.pos++
		return 0, nil
	}
	for n := 1; ; n++ {
		s.ws()
		pos := s.pos
		d, err := s.uint("shape dimension")
		if err != nil {
			return 0, err
		}
		if d > math.MaxInt64 {
			return 0, s.errorAt(pos, "shape dimension %d exceeds 2^63-1", d)
		}
		if shape != nil {
			*shape = append(*shape, int64(d))
		}
		more, err := s.more(']')
		if err != nil || !more {
			return n, err
		}
	}
}

// offsets reads data_offsets, a pair [BEGIN, END] (the reference's (usize, usize) tuple).
func (s *scanner) offsets() (begin, end uint64, err error) {
	if err := s.expect('[', "data_offsets to be [BEGIN, END]"); err != nil {
		return 0, 0, err
	}
	if begin, err = s.uint("data_offsets"); err != nil {
		return 0, 0, err
	}
	if err := s.expect(',', "',' and END in data_offsets [BEGIN, END]"); err != nil {
		return 0, 0, err
	}
	if end, err = s.uint("data_offsets"); err != nil {
		return 0, 0, err
	}
	if err := s.expect(']', "']' closing data_offsets [BEGIN, END]"); err != nil {
		return 0, 0, err
	}
	return begin, end, nil
}

// validate is the reference's Metadata::validate: in data_offsets order, every tensor starts where the previous one
// ended (the first at 0), so the data section is covered without gaps or overlaps, and its byte count is exactly
// what its shape and dtype need, computed with overflow checks in the same order as the reference.
func (h *header) validate(entries []entry) error {
	slices.SortFunc(entries, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.begin, b.begin), cmp.Compare(a.end, b.end), cmp.Compare(a.info.Name, b.info.Name))
	})
	h.tensors = make([]TensorInfo, len(entries))
	h.order = make([]int, len(entries))
	var start uint64
	for i, e := range entries {
		fail := func(format string, args ...any) error {
			return &FormatError{Offset: prefixSize + int64(e.pos), Tensor: e.info.Name, Rule: fmt.Sprintf(format, args...)}
		}
		switch {
		case e.end < e.begin:
			return fail("data_offsets [%d, %d] end before they begin", e.begin, e.end)
		case e.begin > start:
			return fail("data_offsets [%d, %d] leave a gap after byte %d, where the previous tensor ends (the data must be covered without holes)", e.begin, e.end, start)
		case e.begin < start:
			return fail("data_offsets [%d, %d] overlap the previous tensor, which ends at byte %d", e.begin, e.end, start)
		}
		start = e.end
		n := uint64(1)
		for _, d := range e.info.Shape {
			hi, lo := bits.Mul64(n, uint64(d))
			if hi != 0 {
				return fail("shape %v overflows a 64-bit element count", e.info.Shape)
			}
			n = lo
		}
		hi, nbits := bits.Mul64(n, e.bits)
		if hi != 0 {
			return fail("%d elements of %s overflow a 64-bit bit count", n, e.info.DType)
		}
		if nbits%8 != 0 {
			return fail("%d elements of %s take %d bits, not a whole number of bytes (sub-byte tensors must fill whole bytes)", n, e.info.DType, nbits)
		}
		if e.end-e.begin != nbits/8 {
			return fail("data_offsets [%d, %d] hold %d bytes, but %s %v needs %d", e.begin, e.end, e.end-e.begin, e.info.DType, e.info.Shape, nbits/8)
		}
		e.info.Size = int64(nbits / 8) // fits: locate refuses files whose data does not fit in the file
		e.info.Offset = int64(e.begin)
		h.tensors[i] = e.info
		h.order[e.seq] = i
	}
	h.dataLen = start
	return nil
}

// locate checks the reference's last rule, that the data section ends exactly at the end of the file (no trailing
// bytes: the anti-polyglot rule), and turns tensor offsets into absolute file offsets.
func (h *header) locate(n, size int64) error {
	dataStart := prefixSize + n
	if h.dataLen > uint64(size) || uint64(dataStart)+h.dataLen != uint64(size) {
		return &FormatError{Offset: dataStart, Rule: fmt.Sprintf(
			"tensor data ends at byte %d (8 + %d header bytes + %d data bytes), but the file has %d bytes; the tensors must cover the rest of the file exactly",
			uint64(dataStart)+h.dataLen, n, h.dataLen, size)}
	}
	for i := range h.tensors {
		h.tensors[i].Offset += dataStart
	}
	return nil
}
