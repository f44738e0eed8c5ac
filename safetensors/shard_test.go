package safetensors

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/tensor"
)

// allViews returns every tensor of s.
func allViews(t testing.TB, s Set) []tensor.View {
	t.Helper()
	var out []tensor.View
	for _, info := range s.Tensors() {
		v, err := s.Tensor(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// TestShards splits the real tiny-llama checkpoint (21 MB, 1 MB per embedding) into shards of at most 4 MB,
// checks the files and the index, and reads the shards back as one model equal to the original.
func TestShards(t *testing.T) {
	src, err := Open(filepath.Join(sharedDir(t), "models/tiny-llama-a/hf/model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for _, opts := range [][]Option{nil, {Zstd()}} {
		dir := t.TempDir()
		const maxShard = 4 << 20
		files, err := WriteShards(dir, allViews(t, src), src.Metadata(), maxShard, opts...)
		if err != nil {
			t.Fatal(err)
		}
		k := len(files) - 1
		if k < 5 || files[k] != IndexName {
			t.Fatalf("files %v", files)
		}
		for i, name := range files[:k] {
			want := "model-0000" + string(rune('1'+i)) + "-of-0000" + string(rune('0'+k)) + ".safetensors"
			if len(opts) > 0 {
				want += ".zst"
			}
			if name != want {
				t.Fatalf("shard %d named %s, want %s", i, name, want)
			}
		}
		raw, err := os.ReadFile(filepath.Join(dir, IndexName))
		if err != nil {
			t.Fatal(err)
		}
		var index struct {
			Metadata  map[string]int64  `json:"metadata"`
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(raw, &index); err != nil {
			t.Fatal(err)
		}
		var total int64
		for _, info := range src.Tensors() {
			total += info.Size
			if !slices.Contains(files, index.WeightMap[info.Name]) {
				t.Fatalf("weight_map[%q] = %q", info.Name, index.WeightMap[info.Name])
			}
		}
		if index.Metadata["total_size"] != total || len(index.WeightMap) != len(src.Tensors()) {
			t.Fatalf("index metadata %v, %d entries", index.Metadata, len(index.WeightMap))
		}
		// Keys in sorted order, two-space indent, as transformers writes it.
		if !strings.HasPrefix(string(raw), "{\n  \"metadata\": {\n    \"total_size\": ") || !strings.HasSuffix(string(raw), "}\n") {
			t.Fatalf("index layout:\n%.200s", raw)
		}
		var keys []string
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, `    "`) && !strings.Contains(line, "total_size") {
				keys = append(keys, line)
			}
		}
		if len(keys) != len(index.WeightMap) || !slices.IsSorted(keys) {
			t.Fatalf("weight_map keys are not sorted")
		}

		m, err := OpenDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Shards()) != k {
			t.Fatalf("%d shards opened, want %d", len(m.Shards()), k)
		}
		for _, shard := range m.Shards() {
			var size int64
			for _, info := range shard.Tensors() {
				size += info.Size
			}
			if size > maxShard && len(shard.Tensors()) > 1 {
				t.Fatalf("%s holds %d bytes of tensors", shard.Name(), size)
			}
		}
		for _, info := range m.Tensors() {
			f, err := m.Shard(info.Name)
			if err != nil || filepath.Base(f.Name()) != index.WeightMap[info.Name] {
				t.Fatalf("tensor %q in %v, index says %s", info.Name, f, index.WeightMap[info.Name])
			}
		}
		sameTensors(t, "sharded", src, m)
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTwoShards builds a two-shard checkpoint by hand-sized tensors and checks the split point.
func TestTwoShards(t *testing.T) {
	dir := t.TempDir()
	vs := views(decl("a", tensor.F32, 4), decl("b", tensor.F32, 4), decl("c", tensor.F32, 2), decl("d", tensor.U8, 3))
	files, err := WriteShards(dir, vs, map[string]string{"format": "pt"}, 32)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", IndexName}
	if !slices.Equal(files, want) {
		t.Fatalf("files %v", files)
	}
	m, err := OpenIndex(filepath.Join(dir, IndexName))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// Reference order a, b, c (F32) then d (U8); a+b fill 32 bytes, so c starts the second shard.
	if got := names(m.Shards()[0].Tensors()); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("first shard %v", got)
	}
	if got := names(m.Shards()[1].Tensors()); !slices.Equal(got, []string{"c", "d"}) {
		t.Fatalf("second shard %v", got)
	}
	if got := names(m.Tensors()); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Fatalf("model lists %v", got)
	}
	if m.Metadata()["format"] != "pt" || !slices.Equal(m.MetadataKeys(), []string{"format"}) {
		t.Fatalf("metadata %v", m.Metadata())
	}
	for _, v := range vs {
		got, err := m.Tensor(v.Name)
		if err != nil || string(got.Data) != string(v.Data) {
			t.Fatalf("tensor %q: %v", v.Name, err)
		}
		sec, err := m.Section(v.Name)
		if err != nil || sec.Size() != int64(len(v.Data)) {
			t.Fatalf("section %q: %v", v.Name, err)
		}
	}
	if _, err := m.Tensor("e"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing tensor: %v", err)
	}

	// Everything in one shard: model.safetensors and no index, as transformers does.
	one := t.TempDir()
	files, err = WriteShards(one, vs, map[string]string{"format": "pt"}, 1<<20)
	if err != nil || !slices.Equal(files, []string{"model.safetensors"}) {
		t.Fatalf("single shard: %v %v", files, err)
	}
	m1, err := OpenDir(one)
	if err != nil {
		t.Fatal(err)
	}
	sameTensors(t, "single shard", m, m1)
	m1.Close()
}

func TestIndexErrors(t *testing.T) {
	vs := views(decl("a", tensor.F32, 4), decl("b", tensor.F32, 4))
	shard1, shard2 := "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
	tests := []struct {
		name  string
		index string
		extra []tensor.View // written as extra.safetensors
		want  string
	}{
		{"tensors in the wrong shards", `{"weight_map":{"a":"` + shard2 + `","b":"` + shard1 + `"}}`, nil,
			`weight_map puts tensor "a" in model-00002-of-00002.safetensors, but it is in model-00001-of-00002.safetensors`},
		{"tensor not listed", `{"weight_map":{"a":"` + shard1 + `","c":"` + shard2 + `"}}`, nil,
			`tensor "b" of shard model-00002-of-00002.safetensors is not in the weight_map`},
		{"tensor listed but absent", `{"weight_map":{"a":"` + shard1 + `","b":"` + shard2 + `","c":"` + shard2 + `"}}`, nil,
			`weight_map puts tensor "c" in model-00002-of-00002.safetensors, which does not contain it`},
		{"tensor listed twice", `{"weight_map":{"a":"` + shard1 + `","a":"` + shard1 + `"}}`, nil, `tensor "a" is listed twice in weight_map`},
		{"tensor in two shards", `{"weight_map":{"a":"` + shard1 + `","b":"` + shard2 + `","c":"extra.safetensors"}}`,
			views(decl("a", tensor.F32, 4), decl("c", tensor.U8, 1)), `tensor "a" is stored in both`},
		{"path outside the directory", `{"weight_map":{"a":"../x.safetensors"}}`, nil, `shard "../x.safetensors" is not a plain file name`},
		{"absolute path", `{"weight_map":{"a":"/etc/passwd"}}`, nil, "not a plain file name"},
		{"missing shard", `{"weight_map":{"a":"nope.safetensors"}}`, nil, "no such file"},
		{"no weight_map", `{"metadata":{"total_size":32}}`, nil, "index has no weight_map"},
		{"weight_map twice", `{"weight_map":{},"weight_map":{}}`, nil, `duplicate key "weight_map"`},
		{"shard name not a string", `{"weight_map":{"a":1}}`, nil, "expected a string, found '1'"},
		{"not JSON", `{"weight_map":`, nil, "expected weight_map to be an object"},
		{"trailing data", `{"weight_map":{}} x`, nil, "unexpected 'x' after the index object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := WriteShards(dir, vs, nil, 16); err != nil {
				t.Fatal(err)
			}
			if tt.extra != nil {
				if err := WriteFile(filepath.Join(dir, "extra.safetensors"), tt.extra, nil); err != nil {
					t.Fatal(err)
				}
			}
			index := filepath.Join(dir, IndexName)
			if err := os.WriteFile(index, []byte(tt.index), 0o644); err != nil {
				t.Fatal(err)
			}
			m, err := OpenDir(dir)
			if err == nil {
				m.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}

func TestOpenDirWithoutIndex(t *testing.T) {
	dir := t.TempDir()
	if err := WriteFile(filepath.Join(dir, "b.safetensors"), views(decl("y", tensor.F16, 2)), map[string]string{"k": "b"}); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(filepath.Join(dir, "a.safetensors.zst"), views(decl("x", tensor.BF16, 3)), map[string]string{"k": "a", "only": "a"}); err != nil {
		t.Fatal(err)
	}
	m, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(m.Tensors()); !slices.Equal(got, []string{"x", "y"}) {
		t.Fatalf("tensors %v", got)
	}
	if md := m.Metadata(); md["k"] != "a" || md["only"] != "a" {
		t.Fatalf("metadata %v: the first shard in name order must win", md)
	}
	m.Close()

	if err := WriteFile(filepath.Join(dir, "c.safetensors"), views(decl("y", tensor.F16, 2)), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDir(dir); err == nil || !strings.Contains(err.Error(), `tensor "y" is stored in both`) {
		t.Fatalf("duplicate across files: %v", err)
	}
	if _, err := OpenDir(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no .safetensors files") {
		t.Fatalf("empty directory: %v", err)
	}
}
