package gguf

import (
	"fmt"
	"io"
)

// Stream reads a GGUF file front to back without seeking, for pipes: the header first, then each tensor's data in
// file order.
type Stream struct {
	Name       string
	Version    uint32
	Metadata   *Metadata
	Alignment  int64
	DataOffset int64

	d       *decoder
	tensors []TensorInfo
	next    int
	err     error // sticky: after a fault the stream is unusable
}

// NewStreamReader parses the header from r. Nothing is preallocated beyond what has actually been read, since the
// length of a stream is unknown; the checks that need the file size (tensor data within the file) happen as the
// data is read.
func NewStreamReader(r io.Reader) (*Stream, error) {
	name := ""
	if n, ok := r.(interface{ Name() string }); ok {
		name = n.Name()
	}
	d := newDecoder(r, name, -1)
	h, err := readHeader(d)
	if err != nil {
		return nil, err
	}
	return &Stream{
		Name:       name,
		Version:    h.version,
		Metadata:   h.md,
		Alignment:  h.align,
		DataOffset: h.dataOffset,
		d:          d,
		tensors:    h.tensors,
	}, nil
}

// Tensors lists the tensors in file order. The slice is a copy.
func (s *Stream) Tensors() []TensorInfo { return append([]TensorInfo(nil), s.tensors...) }

// Next skips to the next tensor and returns its description and a reader of exactly its data. Unread data of the
// previous tensor and the padding are skipped. After the last tensor Next returns io.EOF.
func (s *Stream) Next() (TensorInfo, io.Reader, error) {
	if s.err != nil {
		return TensorInfo{}, nil, s.err
	}
	if s.next >= len(s.tensors) {
		return TensorInfo{}, nil, io.EOF
	}
	ti := s.tensors[s.next]
	s.next++
	if err := s.d.skip(ti.Offset-s.d.off, RuleDataBounds, fmt.Sprintf("the padding before tensor %q", ti.Name)); err != nil {
		s.err = err
		return TensorInfo{}, nil, err
	}
	return ti, &tensorReader{s: s, ti: ti, left: ti.Size}, nil
}

// tensorReader yields one tensor's bytes and turns a premature end of the stream into a FormatError.
type tensorReader struct {
	s    *Stream
	ti   TensorInfo
	left int64
}

func (t *tensorReader) Read(p []byte) (int, error) {
	if t.s.err != nil {
		return 0, t.s.err
	}
	if t.left == 0 {
		return 0, io.EOF
	}
	// Reading past this tensor would desynchronise the stream; the reader only moves forward.
	if t.s.d.off != t.ti.Offset+t.ti.Size-t.left {
		return 0, fmt.Errorf("gguf: reader for tensor %q used after Next", t.ti.Name)
	}
	if int64(len(p)) > t.left {
		p = p[:t.left]
	}
	n, err := t.s.d.r.Read(p)
	t.s.d.off += int64(n)
	t.left -= int64(n)
	if err == io.EOF && t.left > 0 {
		t.s.err = t.s.d.fail(t.s.d.off, RuleDataBounds, "file ends inside the data of tensor %q (%d of %d bytes "+
			"present)", t.ti.Name, t.ti.Size-t.left, t.ti.Size)
		return n, t.s.err
	}
	if err != nil && err != io.EOF {
		t.s.err = fmt.Errorf("%s: reading tensor %q: %w", t.s.Name, t.ti.Name, err)
		return n, t.s.err
	}
	return n, nil
}
