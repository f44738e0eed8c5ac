package safetensors

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/lathe-ml/lathe/tensor"
)

// views makes one small tensor per entry, with distinct bytes so that a misplaced tensor is noticed.
func views(decls ...TensorInfo) []tensor.View {
	out := make([]tensor.View, len(decls))
	for i, d := range decls {
		size, err := d.Shape.Bytes(d.DType)
		if err != nil {
			panic(err)
		}
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(i*31 + j)
		}
		out[i] = tensor.View{Name: d.Name, DType: d.DType, Shape: d.Shape, Data: data}
	}
	return out
}

func decl(name string, t tensor.DType, shape ...int64) TensorInfo {
	return TensorInfo{Name: name, DType: t, Shape: shape}
}

func names(infos []TensorInfo) []string {
	var out []string
	for _, t := range infos {
		out = append(out, t.Name)
	}
	return out
}

// mixed declares one tensor of every type the format has, in no particular order.
var mixed = []TensorInfo{
	decl("bool", tensor.BOOL, 3), decl("f4", tensor.F4, 2, 3), decl("u8", tensor.U8, 5), decl("f16", tensor.F16, 2),
	decl("z32", tensor.F32, 2), decl("a32", tensor.F32, 1), decl("i64", tensor.I64, 1), decl("f64", tensor.F64, 1),
	decl("u64", tensor.U64), decl("c64", tensor.C64, 1), decl("i8", tensor.I8, 1), decl("e4m3", tensor.F8_E4M3, 3),
	decl("e5m2", tensor.F8_E5M2, 1), decl("e8m0", tensor.F8_E8M0, 1), decl("i16", tensor.I16, 1), decl("u16", tensor.U16, 1),
	decl("i32", tensor.I32, 1), decl("u32", tensor.U32, 0), decl("bf16", tensor.BF16, 1), decl("f6a", tensor.F6_E2M3, 4),
	decl("f6b", tensor.F6_E3M2, 8),
}

func TestWriterLayout(t *testing.T) {
	// The reference's Dtype enum, largest alignment first, then names in byte order (tensor.rs, prepare).
	reference := []string{"u64", "i64", "f64", "c64", "a32", "z32", "u32", "i32", "bf16", "f16", "u16", "i16",
		"e8m0", "e4m3", "e5m2", "i8", "u8", "f6b", "f6a", "f4", "bool"}
	tests := []struct {
		name string
		opts []Option
		want []string
	}{
		{"reference order", nil, reference},
		{"KeepOrder", []Option{KeepOrder()}, names(mixed)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w, err := NewWriter(&buf, mixed, map[string]string{"format": "pt"}, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			layout := w.Tensors()
			if got := names(layout); !slices.Equal(got, tt.want) {
				t.Fatalf("order %v\nwant  %v", got, tt.want)
			}
			vs := views(mixed...)
			for _, info := range layout {
				i := slices.IndexFunc(vs, func(v tensor.View) bool { return v.Name == info.Name })
				if err := w.WriteTensor(info.Name, vs[i].Data); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			f, err := NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
			if err != nil {
				t.Fatal(err)
			}
			if f.HeaderSize()%8 != 0 {
				t.Fatalf("header of %d bytes is not padded to 8", f.HeaderSize())
			}
			// The reader lists by offset, which must be the layout the writer announced.
			got := f.Tensors()
			for i := range got {
				if got[i].Name != layout[i].Name || got[i].Offset != layout[i].Offset || got[i].Size != layout[i].Size {
					t.Fatalf("tensor %d: read %+v, announced %+v", i, got[i], layout[i])
				}
				v, _ := f.Tensor(got[i].Name)
				j := slices.IndexFunc(vs, func(v tensor.View) bool { return v.Name == got[i].Name })
				if !bytes.Equal(v.Data, vs[j].Data) {
					t.Fatalf("tensor %q: data differs", got[i].Name)
				}
			}
		})
	}
}

// TestWriterHeaderBytes pins the JSON the writer produces, including serde_json's string escapes.
func TestWriterHeaderBytes(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, []TensorInfo{decl("q\"\\\x01\x1f\x7f\n\té/", tensor.U8)}, map[string]string{"b": "2", "a": "\b\f\r"})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensor(w.Tensors()[0].Name, []byte{7}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	want := `{"__metadata__":{"a":"\b\f\r","b":"2"},"q\"\\\u0001\u001f` + "\x7f" + `\n\té/":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}`
	got := buf.String()[8:]
	if strings.TrimRight(got[:len(got)-1], " ") != want {
		t.Fatalf("header %q\nwant   %q", got, want)
	}
	f, err := NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if f.Tensors()[0].Name != "q\"\\\x01\x1f\x7f\n\té/" || f.Metadata()["a"] != "\b\f\r" {
		t.Fatalf("read back %q %q", f.Tensors()[0].Name, f.Metadata())
	}
}

func TestWriterDeclarationErrors(t *testing.T) {
	tests := []struct {
		name     string
		decls    []TensorInfo
		metadata map[string]string
		want     string
	}{
		{"duplicate name", []TensorInfo{decl("a", tensor.U8, 1), decl("a", tensor.U8, 1)}, nil, `"a" is used twice or reserved`},
		{"reserved name", []TensorInfo{decl("__metadata__", tensor.U8, 1)}, nil, "reserved"},
		{"ggml type", []TensorInfo{decl("a", tensor.Q4_K, 256)}, nil, "dtype Q4_K cannot be stored in safetensors"},
		{"invalid type", []TensorInfo{decl("a", tensor.Invalid, 1)}, nil, "cannot be stored"},
		{"negative dimension", []TensorInfo{decl("a", tensor.U8, -1)}, nil, "negative"},
		{"F4 not filling bytes", []TensorInfo{decl("a", tensor.F4, 3)}, nil, "do not fill whole blocks"},
		{"overflow", []TensorInfo{decl("a", tensor.F64, 1<<62)}, nil, "overflow"},
		{"name not UTF-8", []TensorInfo{decl("a\xff", tensor.U8)}, nil, "not valid UTF-8"},
		{"metadata not UTF-8", nil, map[string]string{"k": "\xff"}, "valid UTF-8"},
		{"total size overflow", []TensorInfo{decl("a", tensor.U8, 1<<62), decl("b", tensor.U8, 1<<62)}, nil, "total tensor size overflows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewWriter(io.Discard, tt.decls, tt.metadata)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}

// TestWriterSequenceErrors drives the Writer through misuse; each step must fail with the expected error.
func TestWriterSequenceErrors(t *testing.T) {
	decls := []TensorInfo{decl("a", tensor.F32, 2), decl("b", tensor.F32, 1)}
	tests := []struct {
		name string
		run  func(w *Writer) error
		want string
	}{
		{"out of order", func(w *Writer) error { return w.WriteTensor("b", make([]byte, 4)) }, `tensor "b" written out of order: the next tensor is "a"`},
		{"unknown name", func(w *Writer) error { return w.WriteTensor("zz", nil) }, "out of order"},
		{"short data", func(w *Writer) error { return w.WriteTensor("a", make([]byte, 7)) }, `tensor "a" needs 8 bytes, got 7`},
		{"long data", func(w *Writer) error { return w.WriteTensor("a", make([]byte, 9)) }, "needs 8 bytes, got 9"},
		{"overlong write", func(w *Writer) error {
			tw, _ := w.Create("a")
			tw.Write(make([]byte, 5))
			_, err := tw.Write(make([]byte, 4))
			return err
		}, `tensor "a": writing 4 bytes after 5 of 8`},
		{"next before the previous is complete", func(w *Writer) error {
			tw, _ := w.Create("a")
			tw.Write(make([]byte, 5))
			_, err := w.Create("b")
			return err
		}, `tensor "a": 5 of 8 bytes written`},
		{"close with a tensor missing", func(w *Writer) error {
			w.WriteTensor("a", make([]byte, 8))
			return w.Close()
		}, `1 of 2 tensors not written, the first is "b"`},
		{"close mid-tensor", func(w *Writer) error {
			tw, _ := w.Create("a")
			tw.Write(make([]byte, 1))
			return w.Close()
		}, "1 of 8 bytes written"},
		{"too many tensors", func(w *Writer) error {
			w.WriteTensor("a", make([]byte, 8))
			w.WriteTensor("b", make([]byte, 4))
			return w.WriteTensor("c", nil)
		}, "all 2 tensors are already written"},
		{"write after close", func(w *Writer) error {
			w.WriteTensor("a", make([]byte, 8))
			tw, _ := w.Create("b")
			tw.Write(make([]byte, 4))
			if err := w.Close(); err != nil {
				return err
			}
			_, err := tw.Write([]byte{1})
			return err
		}, "writer is closed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := NewWriter(io.Discard, decls, nil, KeepOrder())
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.run(w); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}

type failingWriter struct{ after int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) > f.after {
		n := f.after
		f.after = 0
		return n, errors.New("disk full")
	}
	f.after -= len(p)
	return len(p), nil
}

func TestWriterSinkError(t *testing.T) {
	decls := []TensorInfo{decl("a", tensor.F32, 4), decl("b", tensor.F32, 1)}
	if _, err := NewWriter(&failingWriter{after: 3}, decls, nil); err == nil || !strings.Contains(err.Error(), "writing header: disk full") {
		t.Fatalf("header: %v", err)
	}
	probe, err := NewWriter(io.Discard, decls, nil, KeepOrder())
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(&failingWriter{after: int(probe.Tensors()[0].Offset) + 4}, decls, nil, KeepOrder())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensor("a", make([]byte, 16)); err == nil || !strings.Contains(err.Error(), `tensor "a": disk full`) {
		t.Fatalf("tensor: %v", err)
	}
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("the error must stick: %v", err)
	}
}

// TestWriterPipe streams a file through an io.Pipe, which cannot seek, and reads it back.
func TestWriterPipe(t *testing.T) {
	vs := views(mixed...)
	pr, pw := io.Pipe()
	go func() {
		w, err := NewWriter(pw, mixed, nil)
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		for _, info := range w.Tensors() {
			i := slices.IndexFunc(vs, func(v tensor.View) bool { return v.Name == info.Name })
			if err := w.WriteTensor(info.Name, vs[i].Data); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(w.Close())
	}()
	data, err := io.ReadAll(pr)
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		got, err := f.Tensor(v.Name)
		if err != nil || !bytes.Equal(got.Data, v.Data) || !got.Shape.Equal(v.Shape) || got.DType != v.DType {
			t.Fatalf("tensor %q: %+v %v", v.Name, got, err)
		}
	}
}

// TestZstdRoundTrip compresses real files: the compressed stream must decompress to exactly the uncompressed
// output, Open must read it back transparently, and two writes must give identical bytes.
func TestZstdRoundTrip(t *testing.T) {
	shared := sharedDir(t)
	dir := t.TempDir()
	for _, rel := range []string{"models/tiny-llama-a/hf/model.safetensors", "golden/quant/q4_k__real__imat.safetensors"} {
		src, err := Open(filepath.Join(shared, rel))
		if err != nil {
			t.Fatal(err)
		}
		plain := rewrite(t, src)
		packed := rewrite(t, src, Zstd())
		dec, err := zstd.NewReader(nil)
		if err != nil {
			t.Fatal(err)
		}
		unpacked, err := dec.DecodeAll(packed, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(unpacked, plain) {
			t.Fatalf("%s: the zstd stream does not hold the uncompressed file", rel)
		}
		var vs []tensor.View
		for _, info := range src.Tensors() {
			v, _ := src.Tensor(info.Name)
			vs = append(vs, v)
		}
		path := filepath.Join(dir, filepath.Base(rel)+".zst")
		for range 2 {
			if err := WriteFile(path, vs, src.Metadata()); err != nil {
				t.Fatal(err)
			}
			onDisk, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(onDisk, packed) {
				t.Fatalf("%s: WriteFile to .zst differs from NewWriter with Zstd", rel)
			}
		}
		back, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if back.Size() != int64(len(plain)) {
			t.Fatalf("%s: size %d, want %d", rel, back.Size(), len(plain))
		}
		sameTensors(t, rel, src, back)
		t.Logf("%s: %d bytes, %d compressed", rel, len(plain), len(packed))
		back.Close()
		src.Close()
	}
}

// TestWriteFileLeavesNoPartialFile: a failed write must not create the target or leave temporary files.
func TestWriteFileLeavesNoPartialFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.safetensors")
	bad := []tensor.View{{Name: "a", DType: tensor.F32, Shape: tensor.Shape{4}, Data: make([]byte, 15)}}
	if err := WriteFile(path, bad, nil); err == nil || !strings.Contains(err.Error(), "needs 16 bytes, got 15") {
		t.Fatalf("got %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Fatalf("left %v behind", entries)
	}
}
