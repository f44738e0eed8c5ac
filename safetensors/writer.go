package safetensors

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"
	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/tensor"
)

// Option changes how a file is written.
type Option func(*options)

type options struct {
	keepOrder bool
	zstd      bool
}

// KeepOrder lays tensors out in the order they were declared instead of the reference writer's order.
func KeepOrder() Option { return func(o *options) { o.keepOrder = true } }

// Zstd compresses the whole output as one zstd stream; Open recognises and decompresses such files.
func Zstd() Option { return func(o *options) { o.zstd = true } }

func collect(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Writer streams a safetensors file: NewWriter writes the header, then each tensor's bytes follow in the order of
// Tensors, and Close checks that all were written. It never seeks, so the output can be a pipe.
type Writer struct {
	out    io.Writer     // the destination, or enc
	enc    *zstd.Encoder // set by the Zstd option
	layout []TensorInfo  // in write order, Offset absolute
	next   int           // index in layout of the next tensor to start
	left   int64         // bytes still owed to layout[next-1]
	err    error         // first write error; every later call returns it
	closed bool
}

// NewWriter lays out the declared tensors and writes the header to w. Only Name, DType and Shape of each
// declaration are used; Offset and Size are computed (see Tensors).
//
// Layout: by default the reference writer's order (safetensors/src/tensor.rs, prepare): dtype alignment descending
// (F64/I64/U64 first, then 32-bit, 16-bit, 8-bit, sub-byte, BOOL last), then name in byte order; with KeepOrder, the
// declared order. Tensors are packed back to back. The header JSON is written the way serde_json writes the
// reference's Metadata: "__metadata__" first with its keys sorted (the reference's HashMap order is arbitrary), then
// one {"dtype","shape","data_offsets"} object per tensor, no whitespace, and spaces to pad it to a multiple of 8.
// A nil metadata map writes no "__metadata__"; an empty one writes "__metadata__":{}.
func NewWriter(w io.Writer, tensors []TensorInfo, metadata map[string]string, opts ...Option) (*Writer, error) {
	o := collect(opts)
	layout, hdr, err := prepare(tensors, metadata, o.keepOrder)
	if err != nil {
		return nil, err
	}
	sw := &Writer{out: w, layout: layout}
	if o.zstd {
		if sw.enc, err = zstd.NewWriter(w); err != nil {
			return nil, err
		}
		sw.out = sw.enc
	}
	if _, err := sw.out.Write(hdr); err != nil {
		return nil, fmt.Errorf("safetensors: writing header: %w", err)
	}
	return sw, nil
}

// prepare validates the declarations and returns the layout and the prefix+header bytes.
func prepare(decls []TensorInfo, metadata map[string]string, keepOrder bool) ([]TensorInfo, []byte, error) {
	type item struct {
		info TensorInfo
		rank int
	}
	items := make([]item, len(decls))
	seen := make(map[string]bool, len(decls))
	for i, d := range decls {
		if d.Name == metadataKey || seen[d.Name] {
			return nil, nil, fmt.Errorf("safetensors: tensor name %q is used twice or reserved", d.Name)
		}
		if !utf8.ValidString(d.Name) {
			return nil, nil, fmt.Errorf("safetensors: tensor name %q is not valid UTF-8", d.Name)
		}
		seen[d.Name] = true
		r, ok := rank(d.DType)
		if !ok {
			return nil, nil, fmt.Errorf("safetensors: tensor %q: dtype %s cannot be stored in safetensors", d.Name, d.DType)
		}
		size, err := d.Shape.Bytes(d.DType)
		if err != nil {
			return nil, nil, fmt.Errorf("safetensors: tensor %q: %w", d.Name, err)
		}
		items[i] = item{TensorInfo{Name: d.Name, DType: d.DType, Shape: d.Shape, Size: size}, r}
	}
	for k, v := range metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, nil, fmt.Errorf("safetensors: metadata %q: keys and values must be valid UTF-8", k)
		}
	}
	if !keepOrder {
		slices.SortStableFunc(items, func(a, b item) int {
			return cmp.Or(cmp.Compare(b.rank, a.rank), strings.Compare(a.info.Name, b.info.Name))
		})
	}
	hdr := make([]byte, prefixSize, 64+64*len(items))
	hdr = append(hdr, '{')
	if metadata != nil {
		hdr = append(hdr, `"__metadata__":{`...)
		for i, k := range slices.Sorted(maps.Keys(metadata)) {
			if i > 0 {
				hdr = append(hdr, ',')
			}
			hdr = appendString(hdr, k)
			hdr = append(hdr, ':')
			hdr = appendString(hdr, metadata[k])
		}
		hdr = append(hdr, '}')
	}
	layout := make([]TensorInfo, len(items))
	var offset int64
	for i, it := range items {
		if metadata != nil || i > 0 {
			hdr = append(hdr, ',')
		}
		hdr = appendString(hdr, it.info.Name)
		hdr = append(hdr, `:{"dtype":"`...)
		hdr = append(hdr, it.info.DType.String()...)
		hdr = append(hdr, `","shape":[`...)
		for j, d := range it.info.Shape {
			if j > 0 {
				hdr = append(hdr, ',')
			}
			hdr = strconv.AppendInt(hdr, d, 10)
		}
		hdr = append(hdr, `],"data_offsets":[`...)
		hdr = strconv.AppendInt(hdr, offset, 10)
		hdr = append(hdr, ',')
		if it.info.Size > maxInt64-offset {
			return nil, nil, errors.New("safetensors: total tensor size overflows 64 bits")
		}
		layout[i] = it.info
		layout[i].Offset = offset
		offset += it.info.Size
		hdr = strconv.AppendInt(hdr, offset, 10)
		hdr = append(hdr, "]}"...)
	}
	hdr = append(hdr, '}')
	for len(hdr)%8 != 0 {
		hdr = append(hdr, ' ')
	}
	n := int64(len(hdr) - prefixSize)
	if n > MaxHeaderSize {
		return nil, nil, fmt.Errorf("safetensors: header of %d bytes exceeds the limit of %d", n, MaxHeaderSize)
	}
	binary.LittleEndian.PutUint64(hdr, uint64(n))
	for i := range layout {
		layout[i].Offset += prefixSize + n
	}
	return layout, hdr, nil
}

const maxInt64 = 1<<63 - 1

// appendString writes s as serde_json does: only '"', '\\' and control characters are escaped, the latter as
// \b \t \n \f \r or \u00xx with lowercase hex (serde_json ser.rs, ESCAPE table); everything else is copied.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\t':
			b = append(b, '\\', 't')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// Tensors returns the layout: the tensors in the order they must be written, with their absolute offsets in the
// (uncompressed) file and their sizes.
func (w *Writer) Tensors() []TensorInfo { return slices.Clone(w.layout) }

// Create starts the named tensor, which must be the next one in Tensors and follow a complete previous tensor, and
// returns a writer for exactly its Size bytes.
func (w *Writer) Create(name string) (io.Writer, error) {
	if err := w.ready(); err != nil {
		return nil, err
	}
	if w.next == len(w.layout) {
		return nil, fmt.Errorf("safetensors: tensor %q: all %d tensors are already written", name, len(w.layout))
	}
	if want := w.layout[w.next].Name; name != want {
		return nil, fmt.Errorf("safetensors: tensor %q written out of order: the next tensor is %q", name, want)
	}
	w.left = w.layout[w.next].Size
	w.next++
	return tensorWriter{w}, nil
}

// ready checks that no tensor is half written.
func (w *Writer) ready() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errors.New("safetensors: writer is closed")
	}
	if w.left > 0 {
		t := w.layout[w.next-1]
		return fmt.Errorf("safetensors: tensor %q: %d of %d bytes written", t.Name, t.Size-w.left, t.Size)
	}
	return nil
}

type tensorWriter struct{ w *Writer }

func (t tensorWriter) Write(p []byte) (int, error) {
	w := t.w
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, errors.New("safetensors: writer is closed")
	}
	if int64(len(p)) > w.left {
		info := w.layout[w.next-1]
		return 0, fmt.Errorf("safetensors: tensor %q: writing %d bytes after %d of %d", info.Name, len(p), info.Size-w.left, info.Size)
	}
	n, err := w.out.Write(p)
	w.left -= int64(n)
	if err != nil {
		w.err = fmt.Errorf("safetensors: tensor %q: %w", w.layout[w.next-1].Name, err)
	}
	return n, w.err
}

// WriteTensor writes the whole of the named tensor, which must be the next one and exactly its size.
func (w *Writer) WriteTensor(name string, data []byte) error {
	if err := w.ready(); err != nil {
		return err
	}
	if w.next < len(w.layout) && w.layout[w.next].Name == name && int64(len(data)) != w.layout[w.next].Size {
		return fmt.Errorf("safetensors: tensor %q needs %d bytes, got %d", name, w.layout[w.next].Size, len(data))
	}
	tw, err := w.Create(name)
	if err != nil {
		return err
	}
	_, err = tw.Write(data)
	return err
}

// Close checks that every tensor was written in full and ends the zstd stream, if any. It does not close the
// underlying writer.
func (w *Writer) Close() error {
	if err := w.ready(); err != nil {
		return err
	}
	w.closed = true
	if w.next < len(w.layout) {
		return fmt.Errorf("safetensors: %d of %d tensors not written, the first is %q", len(w.layout)-w.next, len(w.layout), w.layout[w.next].Name)
	}
	if w.enc != nil {
		if err := w.enc.Close(); err != nil {
			return fmt.Errorf("safetensors: zstd: %w", err)
		}
	}
	return nil
}

// WriteFile writes the views to path, replacing it atomically only once the whole file is written. The output is
// zstd-compressed when opts include Zstd or path ends in ".zst".
func WriteFile(path string, views []tensor.View, metadata map[string]string, opts ...Option) error {
	if strings.HasSuffix(path, ".zst") {
		opts = append(opts, Zstd())
	}
	f, err := atomicfile.Create(path)
	if err != nil {
		return err
	}
	defer f.Abort()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := Write(bw, views, metadata, opts...); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Commit()
}

// Write writes a safetensors file holding the views to w (in the writer's layout order, or theirs with KeepOrder).
func Write(w io.Writer, views []tensor.View, metadata map[string]string, opts ...Option) error {
	decls := make([]TensorInfo, len(views))
	byName := make(map[string]tensor.View, len(views))
	for i, v := range views {
		decls[i] = TensorInfo{Name: v.Name, DType: v.DType, Shape: v.Shape}
		byName[v.Name] = v
	}
	sw, err := NewWriter(w, decls, metadata, opts...)
	if err != nil {
		return err
	}
	for _, t := range sw.layout {
		if err := sw.WriteTensor(t.Name, byName[t.Name].Data); err != nil {
			return err
		}
	}
	return sw.Close()
}
