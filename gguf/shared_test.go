package gguf

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"

	"github.com/lathe-ml/lathe/tensor"
)

// sharedDir returns ../shared or skips the test.
func sharedDir(t testing.TB) string { return testshared.Path(t) }

// sharedGGUFs lists every .gguf under the shared directory.
func sharedGGUFs(t testing.TB) []string {
	root := sharedDir(t)
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".gguf") {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Skip("no .gguf files under " + root)
	}
	return paths
}

func tinyLlama(t testing.TB, variant string) string {
	return filepath.Join(sharedDir(t), "models", "tiny-llama-a", "gguf", "tiny-llama-a-"+variant+".gguf")
}

// rewrite writes f back through a Writer with the tensor data taken from f.
func rewrite(t testing.TB, f *File) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, f.Metadata, f.Tensors())
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range f.Tensors() {
		v, err := f.Tensor(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WriteTensor(ti.Name, v.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestSharedFiles reads every GGUF in shared/, checks each tensor view, reads it again as a stream, and writes it
// back: tensor data must be identical, and for these files (made by llama.cpp's gguf-py, llama-quantize and
// convert_lora_to_gguf.py) the whole file too.
func TestSharedFiles(t *testing.T) {
	for _, p := range sharedGGUFs(t) {
		t.Run(filepath.Base(p), func(t *testing.T) {
			orig, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			f, err := Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Version != 3 || f.Alignment != 32 {
				t.Errorf("version %d alignment %d, want 3 and 32", f.Version, f.Alignment)
			}
			sums := map[string][32]byte{}
			for _, ti := range f.Tensors() {
				v, err := f.Tensor(ti.Name)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(v.Data, orig[ti.Offset:ti.Offset+ti.Size]) {
					t.Fatalf("tensor %q: view is not the file's bytes at %d", ti.Name, ti.Offset)
				}
				sums[ti.Name] = sha256.Sum256(v.Data)
			}

			out := rewrite(t, f)
			g, err := NewReader(bytes.NewReader(out), int64(len(out)))
			if err != nil {
				t.Fatalf("rewritten file does not read back: %v", err)
			}
			if len(g.Tensors()) != len(f.Tensors()) {
				t.Fatalf("rewritten file has %d tensors, want %d", len(g.Tensors()), len(f.Tensors()))
			}
			for i, ti := range g.Tensors() {
				want := f.Tensors()[i]
				if ti.Name != want.Name || ti.DType != want.DType || !ti.Shape.Equal(want.Shape) {
					t.Fatalf("tensor %d is %s %s %v, want %s %s %v", i, ti.Name, ti.DType, ti.Shape, want.Name,
						want.DType, want.Shape)
				}
				if sha256.Sum256(out[ti.Offset:ti.Offset+ti.Size]) != sums[ti.Name] {
					t.Fatalf("tensor %q: data differs after rewriting", ti.Name)
				}
			}
			if !bytes.Equal(out, orig) {
				t.Errorf("rewritten file differs from the original (%d vs %d bytes)", len(out), len(orig))
			}

			fh, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			s, err := NewStreamReader(fh)
			if err != nil {
				t.Fatal(err)
			}
			if s.DataOffset != f.DataOffset || s.Metadata.Len() != f.Metadata.Len() {
				t.Fatalf("stream header: data offset %d, %d keys; want %d, %d", s.DataOffset, s.Metadata.Len(),
					f.DataOffset, f.Metadata.Len())
			}
			n := 0
			for {
				ti, r, err := s.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				h := sha256.New()
				if _, err := io.Copy(h, r); err != nil {
					t.Fatal(err)
				}
				if [32]byte(h.Sum(nil)) != sums[ti.Name] {
					t.Fatalf("stream: tensor %q data differs", ti.Name)
				}
				n++
			}
			if n != len(sums) {
				t.Fatalf("stream yielded %d tensors, want %d", n, len(sums))
			}
		})
	}
}

// TestTinyLlamaMetadata checks the accessors against what the model's README and config.json say.
func TestTinyLlamaMetadata(t *testing.T) {
	f, err := Open(tinyLlama(t, "f32"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	md := f.Metadata
	must := func(v any, err error) any {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	checks := []struct {
		got, want any
	}{
		{must(md.String("general.architecture")), "llama"},
		{must(md.Uint32("llama.block_count")), uint32(6)},
		{must(md.Uint64("llama.block_count")), uint64(6)},
		{must(md.Int("llama.block_count")), int64(6)},
		{must(md.Uint32("llama.embedding_length")), uint32(256)},
		{must(md.Uint32("llama.feed_forward_length")), uint32(768)},
		{must(md.Uint32("llama.attention.head_count")), uint32(8)},
		{must(md.Uint32("llama.attention.head_count_kv")), uint32(4)},
		{must(md.Float32("llama.rope.freq_base")), float32(10000)},
		{must(md.Float32("llama.attention.layer_norm_rms_epsilon")), float32(1e-5)},
		{must(md.Bool("tokenizer.ggml.add_bos_token")), true},
		{must(md.Bool("tokenizer.ggml.add_eos_token")), false},
		{must(md.FileType()), FileType(0)},
	}
	for i, c := range checks {
		if c.got != c.want {
			t.Errorf("check %d: got %v (%T), want %v (%T)", i, c.got, c.got, c.want, c.want)
		}
	}
	tokens, err := md.Strings("tokenizer.ggml.tokens")
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) != 1024 || tokens[0] != "<unk>" || tokens[1] != "<s>" || tokens[2] != "</s>" || tokens[3] != "<0x00>" {
		t.Errorf("tokens: %d, first %q", len(tokens), tokens[:4])
	}
	scores, err := Values[float32](md, "tokenizer.ggml.scores")
	if err != nil || len(scores) != 1024 {
		t.Errorf("scores: %d, %v", len(scores), err)
	}
	types, err := Values[int32](md, "tokenizer.ggml.token_type")
	if err != nil || len(types) != 1024 || types[0] != 2 || types[1] != 3 || types[3] != 6 {
		t.Errorf("token types: %v, %v", types[:4], err)
	}

	// Errors name the key and what it actually holds.
	_, err = md.Uint32("general.architecture")
	if err == nil || !strings.Contains(err.Error(), `"general.architecture" is string`) {
		t.Errorf("Uint32 of a string: %v", err)
	}
	_, err = Values[int32](md, "tokenizer.ggml.scores")
	if err == nil || !strings.Contains(err.Error(), "array of f32, want array of i32") {
		t.Errorf("Values[int32] of f32 array: %v", err)
	}
	if _, err = md.Bool("no.such.key"); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("missing key: %v", err)
	}
}

// TestTinyLlamaTensors checks every tensor's type against llama.cpp's own listing (results.json) and the shapes and
// bytes of untouched F32 tensors against the Hugging Face safetensors file they were converted from: that is what
// fixes the outermost-first order of TensorInfo.Shape.
func TestTinyLlamaTensors(t *testing.T) {
	root := filepath.Join(sharedDir(t), "models", "tiny-llama-a")
	var results struct {
		TensorTypes map[string]map[string]string `json:"tensor_types"`
	}
	raw, err := os.ReadFile(filepath.Join(root, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &results); err != nil {
		t.Fatal(err)
	}
	fileTypes := map[string]string{"f32": "F32", "f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0", "q4_k_m": "Q4_K_M",
		"q6_k": "Q6_K"}
	for variant, want := range results.TensorTypes {
		f, err := Open(tinyLlama(t, variant))
		if err != nil {
			t.Fatal(err)
		}
		if len(f.Tensors()) != len(want) {
			t.Errorf("%s: %d tensors, llama.cpp lists %d", variant, len(f.Tensors()), len(want))
		}
		for name, typ := range want {
			ti, ok := f.Info(name)
			if !ok || ti.DType.String() != typ {
				t.Errorf("%s: tensor %s is %v, llama.cpp says %s", variant, name, ti.DType, typ)
			}
		}
		ft, err := f.Metadata.FileType()
		if err != nil || ft.String() != fileTypes[variant] {
			t.Errorf("%s: general.file_type %v (%v), want %s", variant, ft, err, fileTypes[variant])
		}
		f.Close()
	}

	f, err := Open(tinyLlama(t, "f32"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st := readSafetensors(t, filepath.Join(root, "hf", "model.safetensors"))
	// Q and K are permuted by the converter, so only the other projections are byte-identical.
	pairs := map[string]string{
		"token_embd.weight":        "model.embed_tokens.weight",
		"output.weight":            "lm_head.weight",
		"output_norm.weight":       "model.norm.weight",
		"blk.0.attn_norm.weight":   "model.layers.0.input_layernorm.weight",
		"blk.2.attn_v.weight":      "model.layers.2.self_attn.v_proj.weight",
		"blk.3.attn_output.weight": "model.layers.3.self_attn.o_proj.weight",
		"blk.5.ffn_down.weight":    "model.layers.5.mlp.down_proj.weight",
		"blk.1.ffn_gate.weight":    "model.layers.1.mlp.gate_proj.weight",
	}
	for gname, hname := range pairs {
		v, err := f.Tensor(gname)
		if err != nil {
			t.Fatal(err)
		}
		h := st[hname]
		if !v.Shape.Equal(h.Shape) || !bytes.Equal(v.Data, h.Data) {
			t.Errorf("%s %v differs from %s %v", gname, v.Shape, hname, h.Shape)
		}
	}
	if ti, _ := f.Info("blk.0.ffn_down.weight"); !ti.Shape.Equal(tensor.Shape{256, 768}) ||
		len(ti.Dims) != 2 || ti.Dims[0] != 768 || ti.Dims[1] != 256 {
		t.Errorf("ffn_down: shape %v dims %v, want [256, 768] and ne [768 256]", ti.Shape, ti.Dims)
	}
}

// readSafetensors is a minimal reader for the F32 test model, so that this package does not depend on another
// format package.
func readSafetensors(t *testing.T, path string) map[string]tensor.View {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(data)
	var hdr map[string]struct {
		Shape   []int64  `json:"shape"`
		Offsets [2]int64 `json:"data_offsets"`
	}
	if err := json.Unmarshal(data[8:8+n], &hdr); err != nil {
		t.Fatal(err)
	}
	base := 8 + int64(n)
	out := map[string]tensor.View{}
	for name, e := range hdr {
		out[name] = tensor.View{Name: name, Shape: e.Shape, Data: data[base+e.Offsets[0] : base+e.Offsets[1]]}
	}
	return out
}

// TestVocabFiles checks the vocab-only files against their provenance notes (key counts, no tensors, data ending
// at the last key) and against llama.cpp's tokenizer test vectors: "Hello world" is tokens 15043 3186 in
// llama-spm, i.e. "▁Hello" and "▁world".
func TestVocabFiles(t *testing.T) {
	dir := filepath.Join(sharedDir(t), "data", "gguf", "llama.cpp-vocab")
	cases := []struct {
		file   string
		kvs    int
		tokens int
	}{
		{"ggml-vocab-llama-spm.gguf", 22, 32000},
		{"ggml-vocab-phi-3.gguf", 26, 32064},
		{"ggml-vocab-gpt-2.gguf", 16, 50257},
		{"ggml-vocab-bert-bge.gguf", 20, 30522},
		{"ggml-vocab-deepseek-coder.gguf", 25, 32256},
	}
	for _, c := range cases {
		path := filepath.Join(dir, c.file)
		f, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(path)
		tokens, err := f.Metadata.Strings("tokenizer.ggml.tokens")
		if err != nil {
			t.Fatal(err)
		}
		if f.Metadata.Len() != c.kvs || len(f.Tensors()) != 0 || len(tokens) != c.tokens || f.DataOffset != st.Size() {
			t.Errorf("%s: %d keys, %d tensors, %d tokens, data offset %d of %d", c.file, f.Metadata.Len(),
				len(f.Tensors()), len(tokens), f.DataOffset, st.Size())
		}
		if c.file == "ggml-vocab-llama-spm.gguf" {
			out, err := os.ReadFile(path + ".out")
			if err != nil {
				t.Fatal(err)
			}
			ids := vocabTestIDs(t, string(out), "15043 3186")
			if tokens[ids[0]] != "▁Hello" || tokens[ids[1]] != "▁world" {
				t.Errorf("tokens %v are %q %q", ids, tokens[ids[0]], tokens[ids[1]])
			}
		}
		if c.file == "ggml-vocab-gpt-2.gguf" {
			merges, err := f.Metadata.Strings("tokenizer.ggml.merges")
			if err != nil || len(merges) != 50000 {
				t.Errorf("gpt-2 merges: %d, %v", len(merges), err)
			}
		}
		f.Close()
	}
}

// vocabTestIDs finds the expected line in a .out file, so that the test relies on the file rather than the
// constant.
func vocabTestIDs(t *testing.T, out, line string) []int {
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) == line {
			var ids []int
			for _, f := range strings.Fields(l) {
				n, _ := strconv.Atoi(f)
				ids = append(ids, n)
			}
			return ids
		}
	}
	t.Fatalf("line %q not in the test vectors", line)
	return nil
}

// TestLoraAdapter checks the adapter written by convert_lora_to_gguf.py: adapter keys, r=8 and alpha=16 from
// adapter_config.json, and lora_a with ne = [in, r], lora_b with ne = [r, out].
func TestLoraAdapter(t *testing.T) {
	f, err := Open(filepath.Join(sharedDir(t), "models", "tiny-llama-a", "lora-shakespeare-a", "adapter-f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	md := f.Metadata
	if s, _ := md.String("general.type"); s != "adapter" {
		t.Errorf("general.type %q", s)
	}
	if s, _ := md.String("adapter.type"); s != "lora" {
		t.Errorf("adapter.type %q", s)
	}
	if a, err := md.Float32("adapter.lora.alpha"); err != nil || a != 16 {
		t.Errorf("adapter.lora.alpha %v, %v", a, err)
	}
	// 6 layers × 7 projections × (A, B).
	if n := len(f.Tensors()); n != 84 {
		t.Errorf("%d tensors, want 84", n)
	}
	a, _ := f.Info("blk.0.ffn_down.weight.lora_a")
	b, _ := f.Info("blk.0.ffn_down.weight.lora_b")
	if !a.Shape.Equal(tensor.Shape{8, 768}) || !b.Shape.Equal(tensor.Shape{256, 8}) {
		t.Errorf("ffn_down lora_a %v lora_b %v, want [8, 768] and [256, 8]", a.Shape, b.Shape)
	}
}
