// Package gguf reads and writes GGUF, the model format of ggml and llama.cpp (versions 2 and 3, little-endian).
//
// The reader applies every check of ggml's own reader (src/gguf.cpp, gguf_init_from_reader) and reports a
// violation as a *FormatError naming the file, the byte offset and the Rule. It never allocates more than the
// file's size could justify, whatever the count fields claim.
//
// Shapes: GGUF stores a tensor's dimensions innermost first (ggml's ne[0] is the contiguous row length), the
// reverse of PyTorch and safetensors. TensorInfo.Shape is row-major, outermost first, like every tensor.Shape in
// lathe: a GGUF token_embd.weight with ne = [256, 1024] has Shape [1024, 256], the same as the Hugging Face
// embedding it came from. TensorInfo.Dims keeps ne as stored.
package gguf

import (
	"errors"
	"fmt"
	"io"

	"github.com/lathe-ml/lathe/internal/mmap"
	"github.com/lathe-ml/lathe/tensor"
)

// TensorInfo describes one tensor: both as read from a file and as declared to a Writer.
type TensorInfo struct {
	Name  string
	DType tensor.DType
	// Shape is row-major, outermost dimension first: GGUF's ne reversed.
	Shape tensor.Shape
	// Dims is ggml's ne, innermost first, with as many entries as the file's n_dims.
	Dims []uint64
	// Offset is the absolute byte offset of the data in its file, Size its length in bytes.
	Offset int64
	Size   int64
	// Split is the index of the file holding the data in a split model, 0 otherwise.
	Split int
}

// File is an open GGUF model: one file, or every file of a split set (see Open).
type File struct {
	Name       string // path of the file, or of the first split
	Version    uint32
	Metadata   *Metadata // of the file, or of the first split, which holds all keys of a split model
	Alignment  int64
	DataOffset int64 // start of the data section of the (first) file

	parts   []part
	tensors []TensorInfo
	index   map[string]int
	keyOff  map[string]int64 // where each key's value starts in the (first) file
}

var errClosed = errors.New("gguf: file is closed")

// part is one file of the model.
type part struct {
	name   string
	r      io.ReaderAt
	data   []byte // the whole file when memory-mapped, so that views need no copy
	closer io.Closer
}

// Open maps a GGUF file. When it is the first file of a set written by gguf-split (split.count > 1), the other
// files are opened too and the result is the whole model; opening another member of a set is an error, as in
// llama.cpp.
func Open(path string) (*File, error) {
	f, err := openPart(path)
	if err != nil {
		return nil, err
	}
	if err := f.openSplits(); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func openPart(path string) (*File, error) {
	m, err := mmap.Open(path)
	if err != nil {
		return nil, err
	}
	f, err := newFile(m, int64(len(m.Data)), path)
	if err != nil {
		m.Close()
		return nil, err
	}
	f.parts[0].data = m.Data
	f.parts[0].closer = m
	return f, nil
}

// NewReader reads a GGUF file of size bytes from r. Split sets are not followed: r is one file. Tensor data is read
// through r when asked for.
func NewReader(r io.ReaderAt, size int64) (*File, error) {
	name := ""
	if n, ok := r.(interface{ Name() string }); ok {
		name = n.Name()
	}
	return newFile(r, size, name)
}

func newFile(r io.ReaderAt, size int64, name string) (*File, error) {
	if size < 0 {
		return nil, fmt.Errorf("%s: negative size %d", name, size)
	}
	d := newDecoder(io.NewSectionReader(r, 0, size), name, size)
	h, err := readHeader(d)
	if err != nil {
		return nil, err
	}
	f := &File{
		Name:       name,
		Version:    h.version,
		Metadata:   h.md,
		Alignment:  h.align,
		DataOffset: h.dataOffset,
		parts:      []part{{name: name, r: r}},
		tensors:    h.tensors,
		index:      make(map[string]int, len(h.tensors)),
		keyOff:     h.valueOff,
	}
	for i, t := range h.tensors {
		f.index[t.Name] = i
	}
	return f, nil
}

// Tensors lists the tensors in file order (split by split). The slice is a copy.
func (f *File) Tensors() []TensorInfo { return append([]TensorInfo(nil), f.tensors...) }

// Info returns the description of a tensor.
func (f *File) Info(name string) (TensorInfo, bool) {
	i, ok := f.index[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.tensors[i], true
}

// Tensor returns a view of a tensor. For a file from Open the data is the read-only memory map itself (writing to
// it faults, and it is valid until Close); from NewReader it is read into a new buffer.
func (f *File) Tensor(name string) (tensor.View, error) {
	ti, ok := f.Info(name)
	if !ok {
		return tensor.View{}, fmt.Errorf("%s: no tensor %q", f.Name, name)
	}
	p := f.parts[ti.Split]
	var data []byte
	switch {
	case p.data != nil:
		data = p.data[ti.Offset : ti.Offset+ti.Size : ti.Offset+ti.Size]
	case p.r != nil:
		data = make([]byte, ti.Size)
		// ReaderAt may report io.EOF along with a full read at the end of the file; bytes.Reader even does so
		// for an empty read there.
		if n, err := p.r.ReadAt(data, ti.Offset); n < len(data) {
			return tensor.View{}, fmt.Errorf("%s: tensor %q: %w", p.name, name, err)
		}
	default:
		return tensor.View{}, errClosed
	}
	return tensor.NewView(ti.Name, ti.DType, ti.Shape, data)
}

// Splits lists the paths of the files making up the model: one entry unless it is a split set.
func (f *File) Splits() []string {
	names := make([]string, len(f.parts))
	for i, p := range f.parts {
		names[i] = p.name
	}
	return names
}

// Close releases the memory maps; views from Tensor must not be used afterwards.
func (f *File) Close() error {
	var err error
	for i := range f.parts {
		p := &f.parts[i]
		if p.closer != nil {
			if cerr := p.closer.Close(); err == nil {
				err = cerr
			}
		}
		*p = part{name: p.name}
	}
	return err
}

// openSplits follows split.count, with the checks of llama_model_loader: each file's split.no is its index, tensor
// names are unique across files, and their total is split.tensors.count.
func (f *File) openSplits() error {
	md := f.Metadata
	if _, ok := md.Get(KeySplitCount); !ok {
		return nil
	}
	// Errors point at the value of the split key that is wrong.
	fail := func(g *File, key string, format string, args ...any) error {
		return &FormatError{File: g.Name, Offset: g.keyOff[key], Rule: RuleSplit, Msg: fmt.Sprintf(format, args...)}
	}
	count, err := md.Uint32(KeySplitCount)
	if err != nil {
		return fail(f, KeySplitCount, "%v", err)
	}
	if count <= 1 {
		return nil
	}
	no, err := md.Uint32(KeySplitNo)
	if err != nil {
		return fail(f, KeySplitNo, "%v", err)
	}
	prefix, pathNo, pathCount, ok := ParseSplitName(f.Name)
	if no != 0 {
		first := "the first split"
		if ok {
			first = SplitName(prefix, 0, pathCount)
		}
		return fail(f, KeySplitNo, "this is split %d of %d; open %s instead", no+1, count, first)
	}
	if !ok || pathNo != 0 || pathCount != int(count) {
		return fail(f, KeySplitCount, "split %d of %d must be named PREFIX-00001-of-%05d.gguf to find the "+
			"others", no+1, count, count)
	}
	total, err := md.Int(KeySplitTensorsCount)
	if err != nil {
		return fail(f, KeySplitTensorsCount, "%v", err)
	}
	for i := 1; i < int(count); i++ {
		path := SplitName(prefix, i, int(count))
		g, err := openPart(path)
		if err != nil {
			return err
		}
		f.parts = append(f.parts, g.parts[0])
		if n, err := g.Metadata.Uint32(KeySplitNo); err != nil || n != uint32(i) {
			return fail(g, KeySplitNo, "%s must be %d in split %d of %d (%v)", KeySplitNo, i, i+1, count,
				describeKey(g.Metadata, KeySplitNo))
		}
		for _, t := range g.tensors {
			if _, dup := f.index[t.Name]; dup {
				return &FormatError{File: path, Offset: t.Offset, Rule: RuleDuplicateTensor,
					Msg: fmt.Sprintf("tensor %q is also in an earlier split", t.Name)}
			}
			t.Split = i
			f.index[t.Name] = len(f.tensors)
			f.tensors = append(f.tensors, t)
		}
	}
	if int64(len(f.tensors)) != total {
		return fail(f, KeySplitTensorsCount, "%s is %d but the %d splits hold %d tensors", KeySplitTensorsCount,
			total, count, len(f.tensors))
	}
	return nil
}

func describeKey(md *Metadata, key string) string {
	v, ok := md.Get(key)
	if !ok {
		return "missing"
	}
	return v.describe() + " " + v.String()
}
