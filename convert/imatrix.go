package convert

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/tensor"
)

// Imatrix is an importance matrix as llama-quantize uses it (tools/quantize/quantize.cpp, load_imatrix and
// load_legacy_imatrix; ../shared/reference/formats-quant.md §2.3): for each tensor, the mean squared activation of
// every input column, ne[0] values per expert, expert after expert for 3-D MoE tensors.
type Imatrix struct {
	// Name is the file as given to OpenImatrix; llama-quantize records it in quantize.imatrix.file.
	Name     string
	Entries  map[string][]float32
	Datasets []string
	// Chunks is the number of chunks the matrix was computed on; 0 when a legacy file does not say.
	Chunks int
}

// ImatrixError reports a malformed importance matrix file.
type ImatrixError struct {
	File   string
	Offset int64 // of the offending field; -1 when the problem is not at one place
	Msg    string
}

func (e *ImatrixError) Error() string {
	if e.Offset < 0 {
		return fmt.Sprintf("%s: imatrix: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s: imatrix: offset %d: %s", e.File, e.Offset, e.Msg)
}

// Keys of the GGUF imatrix format (tools/imatrix/imatrix.cpp).
const (
	keyImatrixDatasets   = "imatrix.datasets"
	keyImatrixChunkCount = "imatrix.chunk_count"
	keyImatrixChunkSize  = "imatrix.chunk_size"
)

// OpenImatrix reads an importance matrix file made by llama-imatrix: the GGUF format (tensors <name>.in_sum2 and
// <name>.counts) or the legacy binary .dat format.
func OpenImatrix(path string) (*Imatrix, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return ReadImatrix(f, st.Size(), path)
}

// ReadImatrix reads an importance matrix of size bytes from r; name labels errors and becomes Imatrix.Name.
// A file starting with "GGUF" is read as GGUF, anything else as the legacy format (whose first field, an entry
// count, would have to be about 1.18e9 to spell "GGUF").
func ReadImatrix(r io.ReaderAt, size int64, name string) (*Imatrix, error) {
	var magic [4]byte
	if n, _ := r.ReadAt(magic[:], 0); n == 4 && string(magic[:]) == "GGUF" {
		return readGGUFImatrix(r, size, name)
	}
	return readLegacyImatrix(io.NewSectionReader(r, 0, size), size, name)
}

// readGGUFImatrix is load_imatrix: every in_sum2 row is divided by its count, and a row that never saw input
// (count <= 0) becomes all ones.
func readGGUFImatrix(r io.ReaderAt, size int64, name string) (*Imatrix, error) {
	f, err := gguf.NewReader(r, size)
	if err != nil {
		return nil, err
	}
	fail := func(format string, args ...any) error {
		return &ImatrixError{File: name, Offset: -1, Msg: fmt.Sprintf(format, args...)}
	}
	md := f.Metadata
	for _, k := range []string{keyImatrixDatasets, keyImatrixChunkCount, keyImatrixChunkSize} {
		if _, ok := md.Get(k); !ok {
			return nil, fail("missing key %s; not an imatrix file made by llama-imatrix", k)
		}
	}
	im := &Imatrix{Name: name, Entries: map[string][]float32{}}
	if im.Datasets, err = md.Strings(keyImatrixDatasets); err != nil {
		return nil, fail("%v", err)
	}
	chunks, err := md.Uint32(keyImatrixChunkCount)
	if err != nil {
		return nil, fail("%v", err)
	}
	im.Chunks = int(chunks)

	type pair struct{ sums, counts *gguf.TensorInfo }
	pairs := map[string]*pair{}
	tensors := f.Tensors()
	for i := range tensors {
		t := &tensors[i]
		base, isSums := strings.CutSuffix(t.Name, ".in_sum2")
		if !isSums {
			var isCounts bool
			if base, isCounts = strings.CutSuffix(t.Name, ".counts"); !isCounts {
				continue // llama-quantize ignores other tensors
			}
		}
		p := pairs[base]
		if p == nil {
			p = &pair{}
			pairs[base] = p
		}
		if isSums {
			p.sums = t
		} else {
			p.counts = t
		}
	}
	if len(pairs) == 0 {
		return nil, fail("no <tensor>.in_sum2 / <tensor>.counts pairs")
	}
	names := make([]string, 0, len(pairs))
	for n := range pairs {
		names = append(names, n)
	}
	sort.Strings(names) // errors name the same entry on every run
	for _, n := range names {
		p := pairs[n]
		if p.sums == nil || p.counts == nil {
			return nil, fail("entry %q has only one of in_sum2 and counts", n)
		}
		for _, t := range []*gguf.TensorInfo{p.sums, p.counts} {
			if t.DType != tensor.F32 {
				return nil, &ImatrixError{File: name, Offset: t.Offset, Msg: fmt.Sprintf("tensor %q is %s, want F32",
					t.Name, t.DType)}
			}
		}
		if len(p.sums.Dims) == 0 || len(p.sums.Dims) > 2 { // a GGUF tensor may have no dimensions: a scalar
			return nil, fail("tensor %q has %d dimensions, want [columns, experts]", p.sums.Name, len(p.sums.Dims))
		}
		ne0 := p.sums.Dims[0]
		ne1 := uint64(1)
		if len(p.sums.Dims) == 2 {
			ne1 = p.sums.Dims[1]
		}
		sums, err := readF32(f, p.sums.Name)
		if err != nil {
			return nil, err
		}
		counts, err := readF32(f, p.counts.Name)
		if err != nil {
			return nil, err
		}
		if uint64(len(counts)) != ne1 {
			return nil, &ImatrixError{File: name, Offset: p.counts.Offset, Msg: fmt.Sprintf(
				"tensor %q has %d counts for %d experts of %q", p.counts.Name, len(counts), ne1, p.sums.Name)}
		}
		e := make([]float32, len(sums))
		for j, c := range counts {
			row := e[uint64(j)*ne0 : uint64(j+1)*ne0]
			if c > 0 {
				for i := range row {
					row[i] = sums[uint64(j)*ne0+uint64(i)] / c
				}
			} else {
				for i := range row {
					row[i] = 1
				}
			}
		}
		im.Entries[n] = e
	}
	return im, nil
}

func readF32(f *gguf.File, name string) ([]float32, error) {
	v, err := f.Tensor(name)
	if err != nil {
		return nil, err
	}
	return v.Float32s()
}

// legacyReader walks a legacy imatrix file, checking every length against what is left of the file.
type legacyReader struct {
	r    io.Reader
	name string
	off  int64
	size int64
}

func (l *legacyReader) fail(off int64, format string, args ...any) error {
	return &ImatrixError{File: l.name, Offset: off, Msg: fmt.Sprintf(format, args...)}
}

func (l *legacyReader) read(n int64, what string) ([]byte, error) {
	if n > l.size-l.off {
		return nil, l.fail(l.off, "%s needs %d bytes, %d are left", what, n, l.size-l.off)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(l.r, b); err != nil {
		return nil, l.fail(l.off, "reading %s: %v", what, err)
	}
	l.off += n
	return b, nil
}

func (l *legacyReader) i32(what string) (int32, int64, error) {
	off := l.off
	b, err := l.read(4, what)
	if err != nil {
		return 0, off, err
	}
	return int32(binary.LittleEndian.Uint32(b)), off, nil
}

// readLegacyImatrix is load_legacy_imatrix. The file is an int32 entry count, then per entry an int32 name length,
// the name, int32 ncall, int32 nval and nval float32s holding (sum/count)·ncall, which ncall divides back out;
// optionally followed by an int32 chunk count, an int32 length and the dataset name.
func readLegacyImatrix(r io.Reader, size int64, name string) (*Imatrix, error) {
	l := &legacyReader{r: r, name: name, size: size}
	n, off, err := l.i32("entry count")
	if err != nil {
		return nil, err
	}
	if n < 1 {
		return nil, l.fail(off, "entry count %d; the file holds no data", n)
	}
	im := &Imatrix{Name: name, Entries: map[string][]float32{}}
	for i := range int(n) {
		nameLen, off, err := l.i32("name length")
		if err != nil {
			return nil, err
		}
		if nameLen <= 0 {
			return nil, l.fail(off, "entry %d: name length %d", i+1, nameLen)
		}
		raw, err := l.read(int64(nameLen), "entry name")
		if err != nil {
			return nil, err
		}
		// The reader builds a C string from the bytes, so a NUL ends the name.
		if k := bytes.IndexByte(raw, 0); k >= 0 {
			raw = raw[:k]
		}
		key := string(raw)
		if _, dup := im.Entries[key]; dup {
			return nil, l.fail(off, "entry %d: %q appears twice", i+1, key)
		}
		ncall, _, err := l.i32("call count")
		if err != nil {
			return nil, err
		}
		nval, off, err := l.i32("value count")
		if err != nil {
			return nil, err
		}
		if nval < 1 {
			return nil, l.fail(off, "entry %q: value count %d", key, nval)
		}
		b, err := l.read(4*int64(nval), "values of "+key)
		if err != nil {
			return nil, err
		}
		e := make([]float32, nval)
		for j := range e {
			e[j] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*j:]))
			if ncall > 0 {
				e[j] /= float32(ncall)
			}
		}
		im.Entries[key] = e
	}
	if l.off == size {
		return im, nil
	}
	chunks, _, err := l.i32("chunk count")
	if err != nil {
		return nil, err
	}
	dsLen, off, err := l.i32("dataset name length")
	if err != nil {
		return nil, err
	}
	if dsLen < 0 {
		return nil, l.fail(off, "dataset name length %d", dsLen)
	}
	ds, err := l.read(int64(dsLen), "dataset name")
	if err != nil {
		return nil, err
	}
	if l.off != size {
		return nil, l.fail(l.off, "%d bytes after the dataset name", size-l.off)
	}
	im.Chunks = int(chunks)
	im.Datasets = []string{string(ds)}
	return im, nil
}

// errImatrixValue is wrapped by the error for a non-finite importance, which llama-quantize refuses.
var errImatrixValue = errors.New("non-finite importance value")

// check rejects non-finite values, as llama_model_quantize_impl does before quantizing anything.
func (im *Imatrix) check() error {
	names := make([]string, 0, len(im.Entries))
	for n := range im.Entries {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		for i, v := range im.Entries[name] {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("%s: entry %q, value %d is %v: %w", im.Name, name, i, v, errImatrixValue)
			}
		}
	}
	return nil
}

// entry returns a tensor's importance weights; a nil matrix has none.
func (im *Imatrix) entry(name string) ([]float32, bool) {
	if im == nil {
		return nil, false
	}
	e, ok := im.Entries[name]
	return e, ok
}
