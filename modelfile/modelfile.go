// Package modelfile opens a model in any format lathe reads — a safetensors file or sharded checkpoint, a GGUF
// file or split set, or either arriving on standard input — and presents its tensors the same way, so that commands
// work on all of them without a branch per format.
package modelfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/remote"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// Format names a file format.
type Format string

const (
	Safetensors Format = "safetensors"
	GGUF        Format = "gguf"
)

// Tensor describes one tensor of a model, wherever it lives.
type Tensor struct {
	Name   string
	DType  tensor.DType
	Shape  tensor.Shape
	File   string // the file holding the data (a shard or split), "-" for standard input, or its URL
	Offset int64  // absolute offset of the data in File
	Size   int64
}

// Model is an open model. Views it returns are valid until Close.
type Model struct {
	Path        string // as given: a file, a directory, a URL, or "-"
	Format      Format
	Files       []string // every file the model spans, in order
	FileBytes   int64    // total size of those files
	HeaderBytes int64    // bytes before the first tensor's data, summed over files
	Tensors     []Tensor // in file order

	Safetensors safetensors.Set // set when Format is Safetensors
	GGUF        *gguf.File      // set when Format is GGUF

	index map[string]int
}

var ggufMagic = []byte("GGUF")

// Option configures Open.
type Option func(*options)

type options struct {
	http remote.Options
}

// HTTP sets how URLs are fetched: headers, bearer token, timeout, retries.
func HTTP(o remote.Options) Option { return func(opts *options) { opts.http = o } }

// Open opens path: a .gguf file (the first of a split set opens the whole set), a safetensors file (optionally
// zstd-compressed), a directory holding safetensors shards, "-" for standard input, whose format is told
// from its first bytes, or an http(s) URL of a GGUF or safetensors file or of a sharded checkpoint's
// *.safetensors.index.json, read with range requests so that only the bytes asked for travel (see HTTP).
func Open(path string, opts ...Option) (*Model, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if remote.IsURL(path) {
		return openURL(path, o.http)
	}
	if path == "-" {
		data, err := io.ReadAll(os.Stdin)
		if err != nil {
			return nil, fmt.Errorf("reading standard input: %w", err)
		}
		return FromBytes("-", data)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		m, err := safetensors.OpenDir(path)
		if err != nil {
			return nil, err
		}
		return fromSafetensors(path, m, m.Shards())
	}
	magic, err := readMagic(path)
	if err != nil {
		return nil, err
	}
	if bytes.Equal(magic, ggufMagic) {
		f, err := gguf.Open(path)
		if err != nil {
			return nil, err
		}
		return fromGGUF(path, f)
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	return fromSafetensors(path, f, []*safetensors.File{f})
}

// FromBytes opens a model held in memory; name is used in messages, and as the name of the model's one file.
func FromBytes(name string, data []byte) (*Model, error) {
	r := bytes.NewReader(data)
	var m *Model
	if bytes.HasPrefix(data, ggufMagic) {
		f, err := gguf.NewReader(r, int64(len(data)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		f.Name = name
		if m, err = fromGGUF(name, f); err != nil {
			return nil, err
		}
	} else {
		f, err := safetensors.NewReader(r, int64(len(data)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if m, err = fromSafetensors(name, f, []*safetensors.File{f}); err != nil {
			return nil, err
		}
	}
	// Neither reader has a file name for bytes in memory: the model is the one input, of len(data) bytes.
	m.Files, m.FileBytes = []string{name}, int64(len(data))
	for i := range m.Tensors {
		m.Tensors[i].File = name
	}
	return m, nil
}

func readMagic(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	magic := make([]byte, 4)
	n, err := io.ReadFull(f, magic)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return magic[:n], nil
}

func fromSafetensors(path string, set safetensors.Set, shards []*safetensors.File) (*Model, error) {
	m := &Model{Path: path, Format: Safetensors, Safetensors: set}
	owner := map[string]string{}
	for _, sh := range shards {
		m.Files = append(m.Files, sh.Name())
		m.FileBytes += sh.Size()
		m.HeaderBytes += 8 + sh.HeaderSize()
		for _, t := range sh.Tensors() {
			owner[t.Name] = sh.Name()
		}
	}
	for _, t := range set.Tensors() {
		m.Tensors = append(m.Tensors, Tensor{Name: t.Name, DType: t.DType, Shape: t.Shape, File: owner[t.Name],
			Offset: t.Offset, Size: t.Size})
	}
	if err := m.decodeBitMoD(); err != nil {
		return nil, err
	}
	m.buildIndex()
	return m, nil
}

func fromGGUF(path string, f *gguf.File) (*Model, error) {
	m := &Model{Path: path, Format: GGUF, GGUF: f}
	m.Files = f.Splits()
	if len(m.Files) == 0 {
		m.Files = []string{f.Name}
	}
	for _, name := range m.Files {
		if st, err := os.Stat(name); err == nil {
			m.FileBytes += st.Size()
		}
	}
	m.HeaderBytes = f.DataOffset
	for _, t := range f.Tensors() {
		m.Tensors = append(m.Tensors, Tensor{Name: t.Name, DType: t.DType, Shape: t.Shape, File: m.Files[t.Split],
			Offset: t.Offset, Size: t.Size})
	}
	m.buildIndex()
	return m, nil
}

func (m *Model) buildIndex() {
	m.index = make(map[string]int, len(m.Tensors))
	for i, t := range m.Tensors {
		m.index[t.Name] = i
	}
}

// Lookup finds a tensor by name.
func (m *Model) Lookup(name string) (Tensor, bool) {
	i, ok := m.index[name]
	if !ok {
		return Tensor{}, false
	}
	return m.Tensors[i], true
}

// View returns a tensor's bytes: zero-copy for memory-mapped files.
func (m *Model) View(name string) (tensor.View, error) {
	if m.GGUF != nil {
		return m.GGUF.Tensor(name)
	}
	return m.Safetensors.Tensor(name)
}

// Close releases the files.
func (m *Model) Close() error {
	if m.GGUF != nil {
		return m.GGUF.Close()
	}
	return m.Safetensors.Close()
}
