package modelfile

import (
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

func f32(name string, shape tensor.Shape, vals ...float32) tensor.View {
	data := make([]byte, 4*len(vals))
	if err := tensor.FromFloat32(data, vals, tensor.F32); err != nil {
		panic(err)
	}
	return tensor.View{Name: name, DType: tensor.F32, Shape: shape, Data: data}
}

func randomF32(seed uint64, n int) []float32 {
	r := rand.New(rand.NewPCG(seed, 7))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

func open(t *testing.T, path string, opts ...Option) *Model {
	t.Helper()
	m, err := Open(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func writeSafetensors(t testing.TB, dir, name string, views ...tensor.View) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := safetensors.WriteFile(path, views, nil); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeGGUF(t testing.TB, dir, name string, views ...tensor.View) string {
	t.Helper()
	path := filepath.Join(dir, name)
	md := &gguf.Metadata{}
	md.Set("general.architecture", gguf.ValueOf("test"))
	if err := gguf.WriteFile(path, md, views); err != nil {
		t.Fatal(err)
	}
	return path
}

// fileServer serves dir on 127.0.0.1 (net/http's file server answers range requests) and counts what it sends.
type fileServer struct {
	*httptest.Server
	requests, served atomic.Int64
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

// Write counts before writing: the client may have the bytes, and the test go on, before Write returns.
func (w countingWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	return w.ResponseWriter.Write(p)
}

func serve(t *testing.T, dir string) *fileServer {
	s := &fileServer{}
	files := http.FileServer(http.Dir(dir))
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		files.ServeHTTP(countingWriter{w, &s.served}, r)
	}))
	t.Cleanup(s.Close)
	return s
}
