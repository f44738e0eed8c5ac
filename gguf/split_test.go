package gguf

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/tensor"
)

func TestSplitNames(t *testing.T) {
	if got := SplitName("/m/model", 1, 3); got != "/m/model-00002-of-00003.gguf" {
		t.Errorf("SplitName = %q", got)
	}
	prefix, no, count, ok := ParseSplitName("/m/model-00002-of-00003.gguf")
	if !ok || prefix != "/m/model" || no != 1 || count != 3 {
		t.Errorf("ParseSplitName = %q %d %d %v", prefix, no, count, ok)
	}
	for _, bad := range []string{"model.gguf", "m-00000-of-00003.gguf", "m-00004-of-00003.gguf", "m-1-of-3.gguf"} {
		if _, _, _, ok := ParseSplitName(bad); ok {
			t.Errorf("ParseSplitName(%q) accepted", bad)
		}
	}
}

// TestSplitRoundTrip splits a llama.cpp model by tensor count and by size and opens the set as one model.
func TestSplitRoundTrip(t *testing.T) {
	src, err := Open(tinyLlama(t, "q4_k_m"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var views []tensor.View
	for _, ti := range src.Tensors() {
		v, err := src.Tensor(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		views = append(views, v)
	}
	const maxBytes = 1_000_000
	cases := []struct {
		lim   SplitLimits
		files int
	}{
		{SplitLimits{MaxTensors: 20}, 3}, // 57 tensors: 20 + 20 + 17
		{SplitLimits{MaxBytes: maxBytes}, 4},
	}
	for _, c := range cases {
		prefix := filepath.Join(t.TempDir(), "tiny")
		paths, err := WriteSplit(prefix, src.Metadata, views, c.lim)
		if err != nil {
			t.Fatal(err)
		}
		if len(paths) != c.files || filepath.Base(paths[0]) != "tiny-00001-of-0000"+string(rune('0'+c.files))+".gguf" {
			t.Fatalf("%+v: wrote %v", c.lim, paths)
		}

		f, err := Open(paths[0])
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(f.Splits(), paths) {
			t.Errorf("Splits() = %v", f.Splits())
		}
		got := f.Tensors()
		if len(got) != len(views) {
			t.Fatalf("%d tensors, want %d", len(got), len(views))
		}
		for i, ti := range got {
			v, err := f.Tensor(ti.Name)
			if err != nil {
				t.Fatal(err)
			}
			w := views[i]
			if v.Name != w.Name || v.DType != w.DType || !v.Shape.Equal(w.Shape) || !bytes.Equal(v.Data, w.Data) {
				t.Fatalf("tensor %d: %s differs from %s", i, v.Name, w.Name)
			}
		}

		// The first file has every key of the source followed by the split keys, with gguf-split's types.
		want := src.Metadata.Clone()
		want.Set(KeySplitNo, ValueOf(uint16(0)))
		want.Set(KeySplitCount, ValueOf(uint16(c.files)))
		want.Set(KeySplitTensorsCount, ValueOf(int32(len(views))))
		if !reflect.DeepEqual(f.Metadata.KVs(), want.KVs()) {
			t.Errorf("first split metadata differs")
		}
		f.Close()

		for i, p := range paths[1:] {
			g := openSingle(t, p)
			kvs := g.Metadata.KVs()
			wantKVs := []KV{
				{KeySplitNo, ValueOf(uint16(i + 1))},
				{KeySplitCount, ValueOf(uint16(c.files))},
				{KeySplitTensorsCount, ValueOf(int32(len(views)))},
			}
			if !reflect.DeepEqual(kvs, wantKVs) {
				t.Errorf("%s: keys %v, want only the split keys", p, kvs)
			}
			if c.lim.MaxBytes > 0 && len(g.Tensors()) > 1 {
				last := g.Tensors()[len(g.Tensors())-1]
				if data := pad(last.Offset+last.Size, 32) - g.DataOffset; data > maxBytes {
					t.Errorf("%s: %d bytes of tensor data, limit %d", p, data, maxBytes)
				}
			}
		}

		_, err = Open(paths[1])
		var fe *FormatError
		if !errors.As(err, &fe) || fe.Rule != RuleSplit || !strings.Contains(err.Error(), "open "+paths[0]) {
			t.Errorf("opening split 2: %v", err)
		}
	}
}

// openSingle reads one file of a set on its own.
func openSingle(t *testing.T, path string) *File {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fh.Close() })
	st, _ := fh.Stat()
	f, err := NewReader(fh, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestSplitFaults builds broken two-file sets by hand.
func TestSplitFaults(t *testing.T) {
	one := func(name string) tensor.View {
		return tensor.View{Name: name, DType: tensor.F32, Shape: tensor.Shape{1}, Data: make([]byte, 4)}
	}
	splitMD := func(no, count uint16, total int32) *Metadata {
		var md Metadata
		md.Set(KeySplitNo, ValueOf(no))
		md.Set(KeySplitCount, ValueOf(count))
		md.Set(KeySplitTensorsCount, ValueOf(total))
		return &md
	}
	cases := []struct {
		name       string
		first      *Metadata
		second     *Metadata
		secondName string
		rule       Rule
	}{
		{"wrong split.no", splitMD(0, 2, 2), splitMD(0, 2, 2), "b", RuleSplit},
		{"wrong tensor total", splitMD(0, 2, 3), splitMD(1, 2, 3), "b", RuleSplit},
		{"tensor in both", splitMD(0, 2, 2), splitMD(1, 2, 2), "a", RuleDuplicateTensor},
		{"split.no missing", splitMD(0, 2, 2), &Metadata{}, "b", RuleSplit},
	}
	for _, c := range cases {
		prefix := filepath.Join(t.TempDir(), "m")
		if err := WriteFile(SplitName(prefix, 0, 2), c.first, []tensor.View{one("a")}); err != nil {
			t.Fatal(err)
		}
		if err := WriteFile(SplitName(prefix, 1, 2), c.second, []tensor.View{one(c.secondName)}); err != nil {
			t.Fatal(err)
		}
		_, err := Open(SplitName(prefix, 0, 2))
		var fe *FormatError
		if !errors.As(err, &fe) || fe.Rule != c.rule {
			t.Errorf("%s: got %v, want rule %q", c.name, err, c.rule)
		}
	}

	// A first split whose name does not say where the others are.
	path := filepath.Join(t.TempDir(), "renamed.gguf")
	if err := WriteFile(path, splitMD(0, 2, 2), []tensor.View{one("a")}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "PREFIX-00001-of-00002.gguf") {
		t.Errorf("unnamed split: %v", err)
	}
	// A missing file.
	prefix := filepath.Join(t.TempDir(), "m")
	if err := WriteFile(SplitName(prefix, 0, 2), splitMD(0, 2, 2), []tensor.View{one("a")}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(SplitName(prefix, 0, 2)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing split: %v", err)
	}
}
