package modelfile

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/remote"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

var fastHTTP = HTTP(remote.Options{Backoff: time.Millisecond})

// largeModel holds 64 MiB of tensor data behind a header of a few hundred bytes.
func largeModel() []tensor.View {
	big := tensor.View{Name: "big", DType: tensor.F32, Shape: tensor.Shape{4096, 4096}, Data: make([]byte, 64<<20)}
	return []tensor.View{f32("norm", tensor.Shape{4}, 1, 2, 3, 4), big, f32("bias", tensor.Shape{2}, -1, 1)}
}

// Describing a large remote file must fetch its header only: a few kilobytes in one or two requests.
func TestInspectURLReadsOnlyTheHeader(t *testing.T) {
	dir := t.TempDir()
	writeSafetensors(t, dir, "model.safetensors", largeModel()...)
	writeGGUF(t, dir, "model.gguf", largeModel()...)
	s := serve(t, dir)
	for _, name := range []string{"model.safetensors", "model.gguf"} {
		s.requests.Store(0)
		s.served.Store(0)
		m := open(t, s.URL+"/"+name, fastHTTP)
		r, err := m.Report(ReportOptions{})
		if err != nil {
			t.Fatal(err)
		}
		local, err := open(t, filepath.Join(dir, name)).Report(ReportOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s (%d bytes, header %d): %d requests, %d bytes served", name, r.FileBytes, r.HeaderBytes,
			s.requests.Load(), s.served.Load())
		if s.served.Load() > 16<<10 || s.requests.Load() > 2 {
			t.Errorf("%s: %d requests, %d bytes served to describe it", name, s.requests.Load(), s.served.Load())
		}
		if r.Path != s.URL+"/"+name || r.Files[0] != r.Path || r.Tensors[0].File != r.Path {
			t.Errorf("%s: paths %s %v %s", name, r.Path, r.Files, r.Tensors[0].File)
		}
		sameReport(t, name, r, local)
	}
}

// sameReport compares what a report says about the tensors, apart from where the files are.
func sameReport(t *testing.T, what string, got, want *Report) {
	t.Helper()
	g, w := *got, *want
	g.Path, w.Path, g.Files, w.Files = "", "", nil, nil
	g.Tensors, w.Tensors = nil, nil
	if g.GGUF != nil && w.GGUF != nil {
		gg, ww := *g.GGUF, *w.GGUF
		g.GGUF, w.GGUF = &gg, &ww
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s: report\n%+v\nwant\n%+v", what, g, w)
	}
	if len(got.Tensors) != len(want.Tensors) {
		t.Fatalf("%s: %d tensors, want %d", what, len(got.Tensors), len(want.Tensors))
	}
	for i := range got.Tensors {
		a, b := got.Tensors[i], want.Tensors[i]
		a.File, b.File = filepath.Base(a.File), filepath.Base(b.File)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: tensor %+v, want %+v", what, a, b)
		}
	}
}

func TestShardedIndexURL(t *testing.T) {
	dir := t.TempDir()
	views := []tensor.View{
		f32("a", tensor.Shape{2, 2}, 1, 2, 3, 4),
		f32("b", tensor.Shape{2, 2}, 5, 6, 7, 8),
		f32("c", tensor.Shape{4}, 9, 10, 11, -12),
	}
	if _, err := safetensors.WriteShards(dir, views, map[string]string{"format": "pt"}, 20); err != nil {
		t.Fatal(err)
	}
	s := serve(t, dir)
	m := open(t, s.URL+"/"+safetensors.IndexName, fastHTTP)
	if len(m.Files) < 2 || !strings.HasPrefix(m.Files[0], s.URL+"/model-0000") {
		t.Fatalf("files %v", m.Files)
	}
	got, err := m.Report(ReportOptions{Stats: true})
	if err != nil {
		t.Fatal(err)
	}
	want, err := open(t, dir).Report(ReportOptions{Stats: true})
	if err != nil {
		t.Fatal(err)
	}
	sameReport(t, "index", got, want)
	// Tensor data fetched over HTTP is the data on disk.
	d, err := Diff(m, open(t, dir), DiffOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Differs || len(d.Tensors) != 3 {
		t.Errorf("remote and local differ: %+v", d)
	}
}

func TestRealGGUFOverHTTP(t *testing.T) {
	path := testshared.Path(t, "models", "tiny-llama-a", "gguf", "tiny-llama-a-q4_k_m.gguf")
	s := serve(t, filepath.Dir(path))
	m := open(t, s.URL+"/"+filepath.Base(path), fastHTTP)
	got, err := m.Report(ReportOptions{Full: true})
	if err != nil {
		t.Fatal(err)
	}
	want, err := open(t, path).Report(ReportOptions{Full: true})
	if err != nil {
		t.Fatal(err)
	}
	sameReport(t, "q4_k_m", got, want)
	t.Logf("%s: header %d bytes, fetched %d bytes in %d requests", filepath.Base(path), got.HeaderBytes,
		s.served.Load(), s.requests.Load())
	if s.served.Load() > 2*got.HeaderBytes+16<<10 {
		t.Errorf("fetched %d bytes for a %d-byte header", s.served.Load(), got.HeaderBytes)
	}
}

func TestURLErrors(t *testing.T) {
	dir := t.TempDir()
	views := []tensor.View{f32("a", tensor.Shape{2}, 1, 2), f32("b", tensor.Shape{2}, 3, 4)}
	md := &gguf.Metadata{}
	md.Set("general.architecture", gguf.ValueOf("test"))
	if _, err := gguf.WriteSplit(filepath.Join(dir, "split"), md, views, gguf.SplitLimits{MaxTensors: 1}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "m.safetensors.zst"), []byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0, 0}, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.safetensors"), []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, '{', '}'}, 0o644); err != nil {
		t.Fatal(err)
	}
	s := serve(t, dir)
	for _, tc := range []struct{ name, want string }{
		{"split-00001-of-00002.gguf", "split GGUF"},
		{"m.safetensors.zst", "zstd-compressed"},
		{"absent.gguf", "404"},
		{"absent/" + safetensors.IndexName, "404"},
		{"bad.safetensors", s.URL + "/bad.safetensors"},
	} {
		_, err := Open(s.URL+"/"+tc.name, fastHTTP)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}
