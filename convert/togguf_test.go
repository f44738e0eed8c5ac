package convert

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/tensor"
)

// tinyLlama returns the reference model's directory (skipping when ../shared is absent).
func tinyLlama(t testing.TB) string {
	t.Helper()
	dir := testshared.Path(t, "models", "tiny-llama-a")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("reference model absent: %v", err)
	}
	return dir
}

func openTinyHF(t testing.TB) *HFModel {
	t.Helper()
	m, err := OpenHF(filepath.Join(tinyLlama(t), "hf"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// The reference GGUFs were made by llama.cpp's convert_hf_to_gguf.py from a folder named tiny-llama-a; the
// name is the only input that depends on where the model sits.
const tinyName = "Tiny Llama A"

func toGGUFBytes(t testing.TB, m *HFModel, opts GGUFOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := ToGGUF(&buf, m, opts); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readGGUF(t testing.TB, b []byte) *gguf.File {
	t.Helper()
	f, err := gguf.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// diffGGUF reports every difference between two GGUF files: keys (name, order, type, value), tensor infos and
// tensor bytes.
func diffGGUF(t *testing.T, got, want *gguf.File) {
	t.Helper()
	gk, wk := got.Metadata.KVs(), want.Metadata.KVs()
	for i := 0; i < max(len(gk), len(wk)); i++ {
		switch {
		case i >= len(gk):
			t.Errorf("key %d: missing %q", i, wk[i].Key)
		case i >= len(wk):
			t.Errorf("key %d: extra %q = %v", i, gk[i].Key, gk[i].Value)
		case gk[i].Key != wk[i].Key:
			t.Errorf("key %d: %q, want %q", i, gk[i].Key, wk[i].Key)
		case gk[i].Value.Type() != wk[i].Value.Type() || gk[i].Value.ElemType() != wk[i].Value.ElemType() ||
			!reflect.DeepEqual(gk[i].Value.Any(), wk[i].Value.Any()):
			t.Errorf("key %q: %s %v, want %s %v", gk[i].Key, gk[i].Value.Type(), gk[i].Value, wk[i].Value.Type(),
				wk[i].Value)
		}
	}
	gt, wt := got.Tensors(), want.Tensors()
	if len(gt) != len(wt) {
		t.Fatalf("%d tensors, want %d", len(gt), len(wt))
	}
	for i := range gt {
		g, w := gt[i], wt[i]
		if g.Name != w.Name || g.DType != w.DType || !g.Shape.Equal(w.Shape) {
			t.Errorf("tensor %d: %s %s %v, want %s %s %v", i, g.Name, g.DType, g.Shape, w.Name, w.DType, w.Shape)
			continue
		}
		gv, err := got.Tensor(g.Name)
		if err != nil {
			t.Fatal(err)
		}
		wv, err := want.Tensor(w.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(gv.Data, wv.Data) {
			t.Errorf("tensor %s: data differs (%s)", g.Name, firstDiff(gv.Data, wv.Data))
		}
	}
}

func firstDiff(a, b []byte) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("first at byte %d", i)
		}
	}
	return fmt.Sprintf("lengths %d and %d", len(a), len(b))
}

// TestToGGUFMatchesLlamaCpp converts the reference model and compares with convert_hf_to_gguf.py's own output: the
// whole file, byte for byte, and on failure every key and tensor.
func TestToGGUFMatchesLlamaCpp(t *testing.T) {
	m := openTinyHF(t)
	for _, tc := range []struct {
		file string
		typ  tensor.DType
	}{
		{"tiny-llama-a-f32.gguf", tensor.F32},
		{"tiny-llama-a-f16.gguf", tensor.F16},
		{"tiny-llama-a-f16.gguf", tensor.Invalid}, // auto: F32 weights give F16, as upstream
	} {
		t.Run(fmt.Sprintf("%s/%v", tc.file, tc.typ), func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(tinyLlama(t), "gguf", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			got := toGGUFBytes(t, m, GGUFOptions{Type: tc.typ, Name: tinyName})
			if bytes.Equal(got, want) {
				return
			}
			t.Errorf("output differs from %s (%d bytes, want %d)", tc.file, len(got), len(want))
			diffGGUF(t, readGGUF(t, got), readGGUF(t, want))
		})
	}
}

// failAfter accepts n bytes, then fails every write.
type failAfter struct{ n int }

var errDiskFull = errors.New("disk full")

func (w *failAfter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		k := w.n
		w.n = 0
		return k, errDiskFull
	}
	w.n -= len(p)
	return len(p), nil
}

// TestToGGUFWriteError: a failing output stops the conversion with the writer's error, in the header or in the
// middle of the tensors, without leaving the pipeline blocked.
func TestToGGUFWriteError(t *testing.T) {
	m := openTinyHF(t)
	for _, n := range []int{100, 5 << 20} {
		err := ToGGUF(&failAfter{n: n}, m, GGUFOptions{Type: tensor.F16})
		if !errors.Is(err, errDiskFull) {
			t.Errorf("after %d bytes: %v, want the write error", n, err)
		}
	}
}
