package safetensors

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/lathe-ml/lathe/tensor"
)

// sparseFile writes a valid file of the given number of 1 GiB tensors whose data is a hole, so that a file of many
// gigabytes costs no disk.
func sparseFile(b *testing.B, gib int) string {
	var decls []TensorInfo
	for i := range gib {
		decls = append(decls, decl("t"+strconv.Itoa(i), tensor.U8, 1<<30))
	}
	path := filepath.Join(b.TempDir(), "sparse.safetensors")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w, err := NewWriter(f, decls, nil)
	if err != nil {
		b.Fatal(err)
	}
	last := w.Tensors()[gib-1]
	if err := f.Truncate(last.Offset + last.Size); err != nil {
		b.Fatal(err)
	}
	f.Close()
	return path
}

// BenchmarkOpen measures opening a file, which reads only its header: the time must not grow with the data.
func BenchmarkOpen(b *testing.B) {
	shared := sharedDir(b)
	files := []struct{ name, path string }{
		{"small-17KB", filepath.Join(shared, "golden/quant/q1_0__student_t3__noimat.safetensors")},
		{"tiny-llama-21MB", filepath.Join(shared, "models/tiny-llama-a/hf/model.safetensors")},
		{"sparse-16GiB", sparseFile(b, 16)},
	}
	for _, f := range files {
		b.Run(f.name+"/mmap", func(b *testing.B) {
			for b.Loop() {
				st, err := Open(f.path)
				if err != nil {
					b.Fatal(err)
				}
				st.Close()
			}
		})
		b.Run(f.name+"/ReaderAt", func(b *testing.B) {
			osf, err := os.Open(f.path)
			if err != nil {
				b.Fatal(err)
			}
			defer osf.Close()
			fi, _ := osf.Stat()
			for b.Loop() {
				if _, err := NewReader(osf, fi.Size()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseHeader measures header parsing and validation alone, in header bytes per second.
func BenchmarkParseHeader(b *testing.B) {
	var decls []TensorInfo
	for i := range 100_000 {
		decls = append(decls, decl("model.layers."+strconv.Itoa(i/10)+".mlp.proj_"+strconv.Itoa(i%10)+".weight", tensor.BF16, 0, 4096))
	}
	var buf bytes.Buffer
	if _, err := NewWriter(&buf, decls, map[string]string{"format": "pt"}); err != nil {
		b.Fatal(err)
	}
	hdr := buf.Bytes()[8:]
	b.Run("100k-tensors", func(b *testing.B) {
		b.SetBytes(int64(len(hdr)))
		for b.Loop() {
			if _, err := parseHeader(hdr); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRead measures streaming every tensor of the real tiny-llama checkpoint out of the file.
func BenchmarkRead(b *testing.B) {
	path := filepath.Join(sharedDir(b), "models/tiny-llama-a/hf/model.safetensors")
	mapped, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer mapped.Close()
	osf, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer osf.Close()
	viaReaderAt, err := NewReader(osf, mapped.Size())
	if err != nil {
		b.Fatal(err)
	}
	total := mapped.Size() - 8 - mapped.HeaderSize()
	for _, c := range []struct {
		name string
		f    *File
	}{{"mmap", mapped}, {"ReaderAt", viaReaderAt}} {
		b.Run(c.name+"/Section", func(b *testing.B) {
			b.SetBytes(total)
			buf := make([]byte, 1<<20)
			for b.Loop() {
				for _, info := range c.f.Tensors() {
					sec, _ := c.f.Section(info.Name)
					if _, err := io.CopyBuffer(io.Discard, sec, buf); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		b.Run(c.name+"/Tensor", func(b *testing.B) {
			b.SetBytes(total)
			for b.Loop() {
				for _, info := range c.f.Tensors() {
					if _, err := c.f.Tensor(info.Name); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkWrite measures writing the tiny-llama tensors, plain and zstd-compressed, and opening the compressed file.
func BenchmarkWrite(b *testing.B) {
	src, err := Open(filepath.Join(sharedDir(b), "models/tiny-llama-a/hf/model.safetensors"))
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	vs := allViews(b, src)
	write := func(b *testing.B, dst io.Writer, opts ...Option) {
		w, err := NewWriter(dst, src.Tensors(), src.Metadata(), opts...)
		if err != nil {
			b.Fatal(err)
		}
		for _, info := range w.Tensors() {
			v, _ := src.Tensor(info.Name)
			if err := w.WriteTensor(info.Name, v.Data); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("plain", func(b *testing.B) {
		b.SetBytes(src.Size())
		buf := bytes.NewBuffer(make([]byte, 0, src.Size()))
		for b.Loop() {
			buf.Reset()
			write(b, buf)
		}
	})
	b.Run("zstd", func(b *testing.B) {
		b.SetBytes(src.Size())
		for b.Loop() {
			write(b, io.Discard, Zstd())
		}
	})
	path := filepath.Join(b.TempDir(), "model.safetensors.zst")
	if err := WriteFile(path, vs, src.Metadata()); err != nil {
		b.Fatal(err)
	}
	b.Run("open-zstd", func(b *testing.B) {
		b.SetBytes(src.Size())
		for b.Loop() {
			f, err := Open(path)
			if err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
}
