package modelfile

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/tensor"
)

// FuzzFromBytes feeds arbitrary bytes to FromBytes, the reader of models arriving on standard input, which tells
// the format from the first bytes. A refusal names the input; an accepted model has the format its magic says,
// unique tensor names that Lookup finds, and views that are exactly the bytes at each tensor's offset and size.
func FuzzFromBytes(f *testing.F) {
	dir := f.TempDir()
	views := []tensor.View{f32("a", tensor.Shape{2, 3}, 1, 2, 3, 4, 5, 6), f32("b", tensor.Shape{1}, -1)}
	for _, path := range []string{writeSafetensors(f, dir, "m.safetensors", views...), writeGGUF(f, dir, "m.gguf", views...)} {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("GGUF"))
	f.Add([]byte{})
	if root, ok := testshared.Dir(); ok {
		// Real headers, cut short.
		for _, rel := range []string{"models/tiny-llama-a/gguf/tiny-llama-a-q4_0.gguf", "models/tiny-llama-a/hf/model.safetensors"} {
			if b, err := os.ReadFile(filepath.Join(root, rel)); err == nil {
				f.Add(b[:min(4096, len(b))])
			}
		}
	}
	const name = "stdin"
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := FromBytes(name, data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), name+": ") {
				t.Fatalf("error does not name the input: %v", err)
			}
			return
		}
		defer m.Close()
		if want := map[bool]Format{true: GGUF, false: Safetensors}[bytes.HasPrefix(data, ggufMagic)]; m.Format != want {
			t.Fatalf("format %s, magic says %s", m.Format, want)
		}
		if len(m.Files) != 1 || m.Files[0] != name || m.FileBytes != int64(len(data)) {
			t.Fatalf("files %v of %d bytes, want [%s] of %d", m.Files, m.FileBytes, name, len(data))
		}
		for i, ti := range m.Tensors {
			if j, ok := m.index[ti.Name]; !ok || j != i {
				t.Fatalf("tensor %q is number %d, Lookup gives %d", ti.Name, i, j)
			}
			size, err := ti.Shape.Bytes(ti.DType)
			if err != nil || size != ti.Size || ti.Offset < m.HeaderBytes || ti.Offset+ti.Size > int64(len(data)) || ti.File != name {
				t.Fatalf("tensor %+v: %d bytes by its shape (%v), in a file of %d bytes", ti, size, err, len(data))
			}
			v, err := m.View(ti.Name)
			if err != nil {
				t.Fatalf("tensor %q: %v", ti.Name, err)
			}
			if v.DType != ti.DType || !v.Shape.Equal(ti.Shape) || !bytes.Equal(v.Data, data[ti.Offset:ti.Offset+ti.Size]) {
				t.Fatalf("tensor %q: view %v %v of %d bytes is not the file's bytes at %d", ti.Name, v.DType, v.Shape, len(v.Data), ti.Offset)
			}
		}
	})
}
