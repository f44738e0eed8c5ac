package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/tensor"
)

// headerServer serves dir on 127.0.0.1, counting bytes sent and keeping the request headers.
type headerServer struct {
	*httptest.Server
	served  atomic.Int64
	mu      sync.Mutex
	headers []http.Header
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

func serveDir(t *testing.T, dir string) *headerServer {
	s := &headerServer{}
	files := http.FileServer(http.Dir(dir))
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.headers = append(s.headers, r.Header.Clone())
		s.mu.Unlock()
		files.ServeHTTP(countingWriter{w, &s.served}, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// The acceptance check of the issue: inspecting a large GGUF file by URL fetches its header only.
func TestInspectURLFetchesOnlyTheHeader(t *testing.T) {
	dir := t.TempDir()
	big := tensor.View{Name: "big", DType: tensor.F32, Shape: tensor.Shape{4096, 4096}, Data: make([]byte, 64<<20)}
	writeGGUFModel(t, filepath.Join(dir, "model.gguf"), f32View("norm", tensor.Shape{2}, 1, 2), big)
	s := serveDir(t, dir)
	t.Setenv("LATHE_HTTP_TOKEN", "tok")
	out, code := run(t, "inspect", s.URL+"/model.gguf", "--json", "--header", "X-Trace: a, b", "--header", "x-other:c")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	var r modelfile.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.FileBytes < 64<<20 || r.TensorCount != 2 || r.Format != modelfile.GGUF {
		t.Errorf("report %+v", r)
	}
	if s.served.Load() > 16<<10 {
		t.Errorf("%d bytes served to inspect a %d-byte file", s.served.Load(), r.FileBytes)
	}
	h := s.headers[0]
	if h.Get("X-Trace") != "a, b" || h.Get("X-Other") != "c" || h.Get("Authorization") != "Bearer tok" {
		t.Errorf("request headers %v", h)
	}
	if out, code := run(t, "inspect", s.URL+"/absent.gguf"); code != 2 {
		t.Errorf("404: exit %d\n%s", code, out)
	}
	if out, code := run(t, "inspect", s.URL+"/model.gguf", "--header", "no colon"); code != 2 {
		t.Errorf("bad --header: exit %d\n%s", code, out)
	}
}

func TestEnvToken(t *testing.T) {
	env := func(vars map[string]string) func(string) string { return func(k string) string { return vars[k] } }
	both := env(map[string]string{"LATHE_HTTP_TOKEN": "lathe", "HF_TOKEN": "hf"})
	hfOnly := env(map[string]string{"HF_TOKEN": "hf"})
	for _, tc := range []struct {
		url    string
		getenv func(string) string
		want   string
	}{
		{"https://example.com/m.gguf", both, "lathe"},
		{"https://huggingface.co/org/repo/resolve/main/m.gguf", both, "lathe"},
		{"https://huggingface.co/org/repo/resolve/main/m.gguf", hfOnly, "hf"},
		{"https://cdn-lfs.huggingface.co/x", hfOnly, "hf"},
		{"https://hf.co/org/repo/resolve/main/m.gguf", hfOnly, "hf"},
		{"https://example.com/m.gguf", hfOnly, ""},
		{"https://nothuggingface.co/m.gguf", hfOnly, ""},
		{"https://huggingface.co.evil.example/m.gguf", hfOnly, ""},
	} {
		if got := envToken(tc.url, tc.getenv); got != tc.want {
			t.Errorf("%s: token %q, want %q", tc.url, got, tc.want)
		}
	}
}
