// Command gen writes the tiny model that `lathe demo` embeds, and a LoRA adapter for it: a Llama-architecture checkpoint in Hugging Face
// layout (config.json + model.safetensors, BF16 like most published checkpoints) with deterministic pseudo-random
// weights. It is regenerated with `go generate ./internal/demo`; the same seed gives byte-identical files.
//
// The weights are untrained: the model exists to exercise formats, conversions and numerics end to end, not to
// produce meaningful text. The tokenizer is a character-level SentencePiece BPE model: three control tokens, the
// 256 byte-fallback tokens, then "▁", letters and common punctuation, so that any text encodes.
package main

import (
	"encoding/json"
	"fmt"
	"log"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// config mirrors the fields of a transformers LlamaConfig that converters read.
type config struct {
	Architectures         []string `json:"architectures"`
	ModelType             string   `json:"model_type"`
	VocabSize             int      `json:"vocab_size"`
	HiddenSize            int      `json:"hidden_size"`
	IntermediateSize      int      `json:"intermediate_size"`
	NumHiddenLayers       int      `json:"num_hidden_layers"`
	NumAttentionHeads     int      `json:"num_attention_heads"`
	NumKeyValueHeads      int      `json:"num_key_value_heads"`
	HeadDim               int      `json:"head_dim"`
	MaxPositionEmbeddings int      `json:"max_position_embeddings"`
	RMSNormEps            float64  `json:"rms_norm_eps"`
	RopeTheta             float64  `json:"rope_theta"`
	TieWordEmbeddings     bool     `json:"tie_word_embeddings"`
	TorchDtype            string   `json:"torch_dtype"`
	BOSTokenID            int      `json:"bos_token_id"`
	EOSTokenID            int      `json:"eos_token_id"`
}

func main() {
	out := "tiny"
	if len(os.Args) > 1 {
		out = os.Args[1]
	}
	cfg := config{
		Architectures: []string{"LlamaForCausalLM"}, ModelType: "llama",
		VocabSize: len(vocab()), HiddenSize: 64, IntermediateSize: 256, NumHiddenLayers: 2,
		NumAttentionHeads: 4, NumKeyValueHeads: 2, HeadDim: 16, MaxPositionEmbeddings: 256,
		RMSNormEps: 1e-5, RopeTheta: 10000, TorchDtype: "bfloat16", BOSTokenID: 1, EOSTokenID: 2,
	}
	rng := rand.New(rand.NewPCG(2026, 11))
	var views []tensor.View
	add := func(name string, shape tensor.Shape, std float64, one bool) {
		n, _ := shape.Elements()
		vals := make([]float32, n)
		for i := range vals {
			if one {
				vals[i] = 1 + float32(rng.NormFloat64()*std)
			} else {
				vals[i] = float32(rng.NormFloat64() * std)
			}
		}
		data := make([]byte, 2*n)
		tensor.Float32ToBF16(data, vals)
		views = append(views, tensor.View{Name: name, DType: tensor.BF16, Shape: shape, Data: data})
	}
	h, ff, kv := int64(cfg.HiddenSize), int64(cfg.IntermediateSize), int64(cfg.NumKeyValueHeads*cfg.HeadDim)
	std := 1 / math.Sqrt(float64(h))
	add("model.embed_tokens.weight", tensor.Shape{int64(cfg.VocabSize), h}, 1, false)
	for l := range cfg.NumHiddenLayers {
		p := fmt.Sprintf("model.layers.%d.", l)
		add(p+"input_layernorm.weight", tensor.Shape{h}, 0.05, true)
		add(p+"self_attn.q_proj.weight", tensor.Shape{h, h}, std, false)
		add(p+"self_attn.k_proj.weight", tensor.Shape{kv, h}, std, false)
		add(p+"self_attn.v_proj.weight", tensor.Shape{kv, h}, std, false)
		add(p+"self_attn.o_proj.weight", tensor.Shape{h, h}, std, false)
		add(p+"post_attention_layernorm.weight", tensor.Shape{h}, 0.05, true)
		add(p+"mlp.gate_proj.weight", tensor.Shape{ff, h}, std, false)
		add(p+"mlp.up_proj.weight", tensor.Shape{ff, h}, std, false)
		add(p+"mlp.down_proj.weight", tensor.Shape{h, ff}, 1/math.Sqrt(float64(ff)), false)
	}
	add("model.norm.weight", tensor.Shape{h}, 0.05, true)
	add("lm_head.weight", tensor.Shape{int64(cfg.VocabSize), h}, std, false)

	if err := os.MkdirAll(out, 0o755); err != nil {
		log.Fatal(err)
	}
	js, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "config.json"), append(js, '\n'), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := safetensors.WriteFile(filepath.Join(out, "model.safetensors"), views, map[string]string{"format": "pt"}); err != nil {
		log.Fatal(err)
	}
	sp := &convert.SentencePiece{Pieces: vocab(), ModelType: convert.SPMBPE, VocabSize: int32(len(vocab())),
		ByteFallback: true, UnkID: 0, BOSID: 1, EOSID: 2, PadID: -1, NormalizerName: "identity",
		AddDummyPrefix: true, RemoveExtraWhitespaces: false, EscapeWhitespaces: true}
	if err := os.WriteFile(filepath.Join(out, "tokenizer.model"), sp.Marshal(), 0o644); err != nil {
		log.Fatal(err)
	}
	tc := `{"add_bos_token": true, "add_eos_token": false, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",` +
		` "tokenizer_class": "LlamaTokenizer", "model_max_length": 256}` + "\n"
	if err := os.WriteFile(filepath.Join(out, "tokenizer_config.json"), []byte(tc), 0o644); err != nil {
		log.Fatal(err)
	}
	writeLoRA(filepath.Join(filepath.Dir(filepath.Clean(out)), "tiny-lora"), cfg, rng)
}

// writeLoRA writes a PEFT LoRA adapter for the model (r = 4 on q_proj and v_proj, both factors random, as after some
// training), so that the adapter tools have something to check, analyse and merge.
func writeLoRA(dir string, cfg config, rng *rand.Rand) {
	const r, alpha = 4, 8
	var views []tensor.View
	add := func(name string, shape tensor.Shape, std float64) {
		n, _ := shape.Elements()
		vals := make([]float32, n)
		for i := range vals {
			vals[i] = float32(rng.NormFloat64() * std)
		}
		data := make([]byte, 4*n)
		if err := tensor.FromFloat32(data, vals, tensor.F32); err != nil {
			log.Fatal(err)
		}
		views = append(views, tensor.View{Name: name, DType: tensor.F32, Shape: shape, Data: data})
	}
	h, kv := int64(cfg.HiddenSize), int64(cfg.NumKeyValueHeads*cfg.HeadDim)
	for l := range cfg.NumHiddenLayers {
		for _, m := range []struct {
			name string
			out  int64
		}{{"q_proj", h}, {"v_proj", kv}} {
			p := fmt.Sprintf("base_model.model.model.layers.%d.self_attn.%s.", l, m.name)
			add(p+"lora_A.weight", tensor.Shape{r, h}, 1/math.Sqrt(float64(h)))
			add(p+"lora_B.weight", tensor.Shape{m.out, r}, 0.01)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Fatal(err)
	}
	config := fmt.Sprintf(`{"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "tiny-llama", `+
		`"r": %d, "lora_alpha": %d, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "bias": "none", `+
		`"fan_in_fan_out": false, "use_rslora": false, "use_dora": false}`+"\n", r, alpha)
	if err := os.WriteFile(filepath.Join(dir, "adapter_config.json"), []byte(config), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := safetensors.WriteFile(filepath.Join(dir, "adapter_model.safetensors"), views, map[string]string{"format": "pt"}); err != nil {
		log.Fatal(err)
	}
}

// vocab lists the tokenizer's pieces; BPE scores decrease with the id, as sentencepiece's trainer assigns them.
func vocab() []convert.Piece {
	pieces := []convert.Piece{{Text: "<unk>", Type: convert.TokenUnknown}, {Text: "<s>", Type: convert.TokenControl},
		{Text: "</s>", Type: convert.TokenControl}}
	for b := range 256 {
		pieces = append(pieces, convert.Piece{Text: fmt.Sprintf("<0x%02X>", b), Type: convert.TokenByte})
	}
	chars := "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,!?'\"-:"
	for i, r := range []rune(chars) {
		pieces = append(pieces, convert.Piece{Text: string(r), Score: -float32(i), Type: convert.TokenNormal})
	}
	return pieces
}
