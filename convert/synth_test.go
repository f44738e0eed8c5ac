package convert

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// synthModel describes a small random Llama checkpoint written by writeSynth, for the cases the reference model
// does not cover (BPE tokenizers, tied embeddings, BF16 weights, rope scaling, errors).
type synthModel struct {
	config  map[string]any
	dtype   tensor.DType
	tied    bool
	files   map[string]string // extra files (tokenizer.json, tokenizer_config.json, ...)
	skipLMH bool
}

func defaultConfig() map[string]any {
	return map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
		"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
		"num_key_value_heads": 2, "vocab_size": 300, "max_position_embeddings": 128, "rms_norm_eps": 1e-5,
		"rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2,
	}
}

// writeSynth writes the model into a new directory named name and returns its path.
func writeSynth(t testing.TB, name string, s synthModel) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := s.config
	if cfg == nil {
		cfg = defaultConfig()
	}
	writeJSON(t, filepath.Join(dir, "config.json"), cfg)
	for name, body := range s.files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	num := func(k string) int64 {
		switch v := cfg[k].(type) {
		case int:
			return int64(v)
		}
		return 0
	}
	hidden, ff, layers := num("hidden_size"), num("intermediate_size"), num("num_hidden_layers")
	heads, kv, vocab := num("num_attention_heads"), num("num_key_value_heads"), num("vocab_size")
	hd := hidden / heads
	dt := s.dtype
	if dt == tensor.Invalid {
		dt = tensor.F32
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var views []tensor.View
	add := func(name string, shape ...int64) {
		n, _ := tensor.Shape(shape).Elements()
		f := make([]float32, n)
		for i := range f {
			f[i] = float32(rng.NormFloat64() * 0.05)
		}
		sz, _ := dt.Bytes(n)
		b := make([]byte, sz)
		if dt.IsFloat() {
			if err := tensor.FromFloat32(b, f, dt); err != nil {
				t.Fatal(err)
			}
		}
		views = append(views, tensor.View{Name: name, DType: dt, Shape: shape, Data: b})
	}
	add("model.embed_tokens.weight", vocab, hidden)
	if !s.tied && !s.skipLMH {
		add("lm_head.weight", vocab, hidden)
	}
	add("model.norm.weight", hidden)
	for l := range layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		add(p+"input_layernorm.weight", hidden)
		add(p+"post_attention_layernorm.weight", hidden)
		add(p+"self_attn.q_proj.weight", heads*hd, hidden)
		add(p+"self_attn.k_proj.weight", kv*hd, hidden)
		add(p+"self_attn.v_proj.weight", kv*hd, hidden)
		add(p+"self_attn.o_proj.weight", hidden, heads*hd)
		add(p+"mlp.gate_proj.weight", ff, hidden)
		add(p+"mlp.up_proj.weight", ff, hidden)
		add(p+"mlp.down_proj.weight", hidden, ff)
	}
	if err := safetensors.WriteFile(filepath.Join(dir, "model.safetensors"), views, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func writeJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// spmModel returns a small SentencePiece BPE model: <unk> <s> </s>, 256 byte pieces, then n normal pieces.
func spmModel(n int) *SentencePiece {
	sp := &SentencePiece{ModelType: SPMBPE, ByteFallback: true, UnkID: 0, BOSID: 1, EOSID: 2, PadID: -1,
		NormalizerName: "identity", AddDummyPrefix: true, EscapeWhitespaces: true}
	sp.Pieces = append(sp.Pieces, Piece{"<unk>", 0, TokenUnknown}, Piece{"<s>", 0, TokenControl},
		Piece{"</s>", 0, TokenControl})
	for b := range 256 {
		sp.Pieces = append(sp.Pieces, Piece{fmt.Sprintf("<0x%02X>", b), 0, TokenByte})
	}
	for i := range n {
		sp.Pieces = append(sp.Pieces, Piece{fmt.Sprintf("\u2581p%d", i), -float32(i), TokenNormal})
	}
	sp.VocabSize = int32(len(sp.Pieces))
	return sp
}

func f32bytes(f []float32) []byte {
	b := make([]byte, 4*len(f))
	for i, v := range f {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}
