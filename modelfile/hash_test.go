package modelfile

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/internal/xxh64"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

func hashOf(t *testing.T, path string, alg HashAlgorithm) *HashReport {
	t.Helper()
	r, err := Hash(open(t, path), HashOptions{Algorithm: alg})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func tinyViews() []tensor.View {
	return []tensor.View{
		f32("w", tensor.Shape{2}, 1, 2),
		{Name: "b", DType: tensor.I32, Shape: tensor.Shape{1, 1}, Data: []byte{0xf9, 0xff, 0xff, 0xff}}, // -7
	}
}

// The digests were computed by an independent implementation of the documented record (Python's hashlib and
// struct over the same tensors), so that the definition, not only the code, is pinned.
func TestHashGolden(t *testing.T) {
	r := hashOf(t, writeSafetensors(t, t.TempDir(), "m.safetensors", tinyViews()...), SHA256)
	want := &HashReport{Algorithm: SHA256, Model: "430e8151e061f95c71a5bef8d8bba0442cced3bf832a27929318fce0be5f68ac",
		Tensors: []TensorHash{
			{Name: "b", DType: "I32", Shape: []int64{1, 1}, Hash: "499d7177505f11ea7962fdd7086767da08c0f0dbc406940e722dd494d89bbae7"},
			{Name: "w", DType: "F32", Shape: []int64{2}, Hash: "bdc0e83b4b21b7b33106af2802dd0743faf2a5d8c4b7e0b84fbbc1a648078dae"},
		}}
	r.Path = ""
	if !reflect.DeepEqual(r, want) {
		t.Errorf("got %+v\nwant %+v", r, want)
	}
}

func TestHashGoldenRealCheckpoint(t *testing.T) {
	path := testshared.Path(t, "models", "tiny-llama-a", "hf", "model.safetensors")
	r := hashOf(t, path, SHA256)
	if len(r.Tensors) != 57 || r.Tensors[0].Name != "lm_head.weight" ||
		r.Tensors[0].Hash != "d6eb3e54f1e538ddd5e8b805b2350637d779184e9d68ff927e45c4fa008004cf" ||
		r.Model != "c0323f8f67ad4af1ab65743a8662b3986bf3602f93c310860d6213d66e75cd4c" {
		t.Errorf("%d tensors, first %+v, model %s", len(r.Tensors), r.Tensors[0], r.Model)
	}
}

// The same tensors in a safetensors file, a GGUF file (in another order, with metadata and alignment padding) and a
// sharded checkpoint hash the same; changing one tensor's data, dtype, shape or name changes that tensor's hash
// and the model's, and no other.
func TestHashIgnoresTheFileLayout(t *testing.T) {
	dir := t.TempDir()
	views := []tensor.View{
		f32("a", tensor.Shape{3, 4}, randomF32(1, 12)...),
		f32("b", tensor.Shape{5}, randomF32(2, 5)...),
		f32("c", tensor.Shape{2, 2, 2}, randomF32(3, 8)...),
	}
	reversed := []tensor.View{views[2], views[1], views[0]}
	shards := filepath.Join(dir, "shards")
	if err := os.Mkdir(shards, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := safetensors.WriteShards(shards, views, map[string]string{"format": "pt"}, 40); err != nil {
		t.Fatal(err)
	}
	for _, alg := range []HashAlgorithm{SHA256, XXH64} {
		st := hashOf(t, writeSafetensors(t, dir, "m.safetensors", views...), alg)
		for _, other := range []string{writeGGUF(t, dir, "m.gguf", reversed...), shards} {
			o := hashOf(t, other, alg)
			if o.Model != st.Model || !reflect.DeepEqual(o.Tensors, st.Tensors) {
				t.Errorf("%s: %s hashes differently from the safetensors file:\n%+v\n%+v", alg, other, o, st)
			}
		}

		changed := map[string]tensor.View{
			"data":  f32("b", tensor.Shape{5}, append(randomF32(2, 4), 0.5)...),
			"shape": f32("b", tensor.Shape{1, 5}, randomF32(2, 5)...),
			"dtype": {Name: "b", DType: tensor.I32, Shape: tensor.Shape{5}, Data: views[1].Data},
			"name":  f32("b2", tensor.Shape{5}, randomF32(2, 5)...),
		}
		for what, v := range changed {
			c := hashOf(t, writeSafetensors(t, dir, what+".safetensors", views[0], v, views[2]), alg)
			if c.Model == st.Model || !reflect.DeepEqual(c.Tensors[0], st.Tensors[0]) || !reflect.DeepEqual(c.Tensors[2], st.Tensors[2]) ||
				c.Tensors[1].Hash == st.Tensors[1].Hash {
				t.Errorf("%s: changing the %s of b: %+v", alg, what, c)
			}
		}
	}
}

// The fast hash is XXH64 of the same record, and the model's is XXH64 of the big-endian tensor hashes.
func TestHashXXH64Definition(t *testing.T) {
	r := hashOf(t, writeGGUF(t, t.TempDir(), "m.gguf", tinyViews()...), XXH64)
	record := func(name, dtype string, shape []int64, data []byte) []byte {
		var b []byte
		b = binary.LittleEndian.AppendUint64(b, uint64(len(name)))
		b = append(b, name...)
		b = binary.LittleEndian.AppendUint64(b, uint64(len(dtype)))
		b = append(b, dtype...)
		b = binary.LittleEndian.AppendUint64(b, uint64(len(shape)))
		for _, d := range shape {
			b = binary.LittleEndian.AppendUint64(b, uint64(d))
		}
		return append(b, data...)
	}
	hb := xxh64.Sum64(record("b", "I32", []int64{1, 1}, []byte{0xf9, 0xff, 0xff, 0xff}))
	hw := xxh64.Sum64(record("w", "F32", []int64{2}, []byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0x40}))
	model := xxh64.Sum64(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, hb), hw))
	if r.Tensors[0].Hash != fmt.Sprintf("%016x", hb) || r.Tensors[1].Hash != fmt.Sprintf("%016x", hw) ||
		r.Model != fmt.Sprintf("%016x", model) || r.Algorithm != XXH64 {
		t.Errorf("%+v", r)
	}
	if _, err := Hash(open(t, writeGGUF(t, t.TempDir(), "x.gguf", tinyViews()...)), HashOptions{Algorithm: "md5"}); err == nil {
		t.Error("unknown algorithm accepted")
	}
}

// llama.cpp's F16 GGUF of the reference model (F16 matrices, F32 norms), rewritten as safetensors with its own names, hashes the same.
func TestHashRealGGUFAgainstSafetensorsCopy(t *testing.T) {
	path := testshared.Path(t, "models", "tiny-llama-a", "gguf", "tiny-llama-a-f16.gguf")
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var views []tensor.View
	for _, ti := range f.Tensors() {
		v, err := f.Tensor(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		views = append(views, v)
	}
	copyPath := writeSafetensors(t, t.TempDir(), "copy.safetensors", views...)
	g, s := hashOf(t, path, SHA256), hashOf(t, copyPath, SHA256)
	if g.Model != s.Model || !reflect.DeepEqual(g.Tensors, s.Tensors) {
		t.Errorf("GGUF %s, safetensors copy %s", g.Model, s.Model)
	}
}

func BenchmarkHash(b *testing.B) {
	dir := b.TempDir()
	var views []tensor.View
	for i := range 8 {
		views = append(views, tensor.View{Name: fmt.Sprint(i), DType: tensor.U8, Shape: tensor.Shape{8 << 20}, Data: make([]byte, 8<<20)})
	}
	m, err := Open(writeSafetensors(b, dir, "m.safetensors", views...))
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	for _, alg := range []HashAlgorithm{SHA256, XXH64} {
		b.Run(string(alg), func(b *testing.B) {
			b.SetBytes(64 << 20)
			for b.Loop() {
				if _, err := Hash(m, HashOptions{Algorithm: alg}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
