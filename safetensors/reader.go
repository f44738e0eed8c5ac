package safetensors

import (
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/lathe-ml/lathe/internal/mmap"
	"github.com/lathe-ml/lathe/tensor"
)

// Set is a collection of named tensors: one file (*File) or a sharded checkpoint (*Model).
type Set interface {
	// Tensors lists every tensor once, in a deterministic order.
	Tensors() []TensorInfo
	// Lookup returns the description of one tensor.
	Lookup(name string) (TensorInfo, bool)
	// Tensor returns a tensor's bytes; the view is only valid until Close.
	Tensor(name string) (tensor.View, error)
	// Section gives streaming access to a tensor's bytes, for tensors too large to hold twice.
	Section(name string) (*io.SectionReader, error)
	// Metadata returns the string→string __metadata__ map, nil if there is none.
	Metadata() map[string]string
	Close() error
}

var (
	_ Set = (*File)(nil)
	_ Set = (*Model)(nil)
)

// File is one safetensors file. Its methods are safe for concurrent use.
type File struct {
	name   string
	r      io.ReaderAt
	data   []byte    // the whole file when it is mapped or was decompressed; nil when read through NewReader
	closer io.Closer // the mapping, if any
	size   int64
	n      int64 // header length
	h      *header
}

// Open opens and validates the file at path. The file is memory-mapped, so Tensor returns views into the mapping
// without copying. A zstd-compressed file (recognised by its magic number, normally named *.zst; no valid
// safetensors file can start with those bytes, as they would declare a header of over 10^18 bytes) is decompressed
// into memory; see the limit on decompressed size at maxDecompressed.
func Open(path string) (*File, error) {
	m, err := mmap.Open(path)
	if err != nil {
		return nil, err
	}
	if isZstd(m.Data) {
		f, err := openZstd(path, m.Data)
		m.Close()
		return f, err
	}
	f, err := newFile(path, m, m.Data, int64(len(m.Data)))
	if err != nil {
		m.Close()
		return nil, err
	}
	f.closer = m
	return f, nil
}

// NewReader reads a safetensors file of the given size from r. Only the header is read now; Tensor reads a
// tensor's bytes into a new slice each time it is called. When r has a Name method (as *os.File and remote files
// do) errors and Name use it; otherwise errors name no file, and callers wrap them to add one.
func NewReader(r io.ReaderAt, size int64) (*File, error) {
	name := ""
	if n, ok := r.(interface{ Name() string }); ok {
		name = n.Name()
	}
	return newFile(name, r, nil, size)
}

func newFile(name string, r io.ReaderAt, data []byte, size int64) (*File, error) {
	f := &File{name: name, r: r, data: data, size: size}
	var prefix []byte
	if data != nil {
		prefix = data[:min(len(data), prefixSize)]
	} else {
		prefix = make([]byte, min(max(size, 0), prefixSize))
		if err := readAt(r, prefix, 0); err != nil {
			return nil, f.ioError(err)
		}
	}
	n, err := headerLength(prefix, size)
	if err != nil {
		return nil, withFile(err, name)
	}
	f.n = n
	// n <= size-8 was checked, so reading the header allocates no more than the file holds.
	var hdr []byte
	if data != nil {
		hdr = data[prefixSize : prefixSize+n]
	} else {
		hdr = make([]byte, n)
		if err := readAt(r, hdr, prefixSize); err != nil {
			return nil, f.ioError(err)
		}
	}
	if f.h, err = parseHeader(hdr); err != nil {
		return nil, withFile(err, name)
	}
	if err := f.h.locate(n, size); err != nil {
		return nil, withFile(err, name)
	}
	return f, nil
}

// readAt fills p, accepting the io.EOF that io.ReaderAt allows alongside a complete read.
func readAt(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (f *File) ioError(err error) error {
	if f.name == "" {
		return fmt.Errorf("safetensors: %w", err)
	}
	return fmt.Errorf("safetensors: %s: %w", f.name, err)
}

// Name returns the path given to Open, or for NewReader the reader's name ("" if it has none).
func (f *File) Name() string { return f.name }

// Size returns the size of the file in bytes (decompressed, for zstd files).
func (f *File) Size() int64 { return f.size }

// HeaderSize returns N, the length of the JSON header including its padding; tensor data starts at 8+N.
func (f *File) HeaderSize() int64 { return f.n }

// Tensors lists the tensors in the order of their data in the file (increasing Offset), which is the order the
// reference reader validates them in. The caller may modify the returned slice but not the Shapes in it.
func (f *File) Tensors() []TensorInfo { return slices.Clone(f.h.tensors) }

// Lookup returns the description of the named tensor.
func (f *File) Lookup(name string) (TensorInfo, bool) {
	i, ok := f.h.index[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.h.tensors[f.h.order[i]], true
}

func (f *File) lookup(name string) (TensorInfo, error) {
	info, ok := f.Lookup(name)
	if !ok {
		if f.name == "" {
			return info, fmt.Errorf("safetensors: tensor %q: %w", name, ErrNotFound)
		}
		return info, fmt.Errorf("safetensors: %s: tensor %q: %w", f.name, name, ErrNotFound)
	}
	return info, nil
}

// Tensor returns the named tensor. For a file from Open the view's Data aliases the mapping (read-only, valid
// until Close); for NewReader it is a fresh copy.
func (f *File) Tensor(name string) (tensor.View, error) {
	info, err := f.lookup(name)
	if err != nil {
		return tensor.View{}, err
	}
	var data []byte
	if f.data != nil {
		end := info.Offset + info.Size
		data = f.data[info.Offset:end:end]
	} else {
		data = make([]byte, info.Size)
		if err := readAt(f.r, data, info.Offset); err != nil {
			return tensor.View{}, f.ioError(fmt.Errorf("tensor %q: %w", name, err))
		}
	}
	return tensor.View{Name: info.Name, DType: info.DType, Shape: info.Shape, Data: data}, nil
}

// Section returns a reader over the named tensor's bytes, to stream tensors without holding them in memory.
func (f *File) Section(name string) (*io.SectionReader, error) {
	info, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	return io.NewSectionReader(f.r, info.Offset, info.Size), nil
}

// Metadata returns a copy of the __metadata__ map: nil when the file has none (or has null), empty for {}.
func (f *File) Metadata() map[string]string { return maps.Clone(f.h.metadata) }

// MetadataKeys returns the metadata keys in sorted order.
func (f *File) MetadataKeys() []string { return slices.Sorted(maps.Keys(f.h.metadata)) }

// Close releases the mapping; views returned by Tensor must not be used afterwards. It does not close the
// io.ReaderAt given to NewReader.
func (f *File) Close() error {
	if f.closer == nil {
		return nil
	}
	err := f.closer.Close()
	f.closer, f.data = nil, nil
	return err
}
