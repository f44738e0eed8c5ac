package convert

import (
	"bytes"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/testshared"
)

// TestRuntimeView checks what a runtime reads through PlanHeader, GGUFName and PermuteRotary against llama.cpp's own
// conversion of the reference model: the header's hyper-parameters and tokenizer keys are the GGUF file's, and the
// HF q and k rows permuted are the GGUF rows, byte for byte.
func TestRuntimeView(t *testing.T) {
	dir := testshared.Path(t, "models", "tiny-llama-a")
	hf, err := OpenHF(filepath.Join(dir, "hf"))
	if err != nil {
		t.Fatal(err)
	}
	defer hf.Close()
	g, err := gguf.Open(filepath.Join(dir, "gguf", "tiny-llama-a-f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	h, err := PlanHeader(hf, GGUFOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"llama.block_count", "llama.attention.head_count_kv", "llama.rope.freq_base",
		"tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
		"tokenizer.ggml.bos_token_id", "tokenizer.ggml.add_bos_token"} {
		a, okA := h.Metadata.Get(key)
		b, okB := g.Metadata.Get(key)
		if !okA || !okB || !reflect.DeepEqual(a.Any(), b.Any()) {
			t.Errorf("%s: header %v, llama.cpp's file %v", key, a, b)
		}
	}
	tm, err := TokenizerMetadata(filepath.Join(dir, "hf"))
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := tm.Strings("tokenizer.ggml.tokens"); len(a) != 1024 {
		t.Errorf("TokenizerMetadata: %d tokens, want 1024", len(a))
	}
	for _, e := range h.Tensors {
		name, err := GGUFName(e.Source, 6)
		if err != nil || name != e.Name {
			t.Errorf("GGUFName(%s) = %q, %v; the plan says %s", e.Source, name, err, e.Name)
		}
		if e.PermuteHeads == 0 {
			continue
		}
		src, err := hf.Weights.Tensor(e.Source)
		if err != nil {
			t.Fatal(err)
		}
		want, err := g.Tensor(e.Name)
		if err != nil {
			t.Fatal(err)
		}
		rowBytes := len(src.Data) / int(src.Shape[0])
		got := make([]byte, len(src.Data))
		PermuteRotary(got, src.Data, int(e.PermuteHeads), rowBytes, true)
		if !bytes.Equal(got, want.Data) {
			t.Errorf("%s: permuted rows differ from llama.cpp's", e.Name)
		}
		back := make([]byte, len(got))
		PermuteRotary(back, got, int(e.PermuteHeads), rowBytes, false)
		if !bytes.Equal(back, src.Data) {
			t.Errorf("%s: the inverse permutation does not restore the rows", e.Name)
		}
	}
}
