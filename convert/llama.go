package convert

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/lathe-ml/lathe/gguf"
)

// The Llama family: the model classes llama.cpp's convert_hf_to_gguf.py converts with LlamaModel (MODEL_ARCH.LLAMA)
// and that lathe supports. MixtralForCausalLM (same class upstream) needs its experts stacked into 3-D tensors and
// is not supported.
var llamaClasses = []string{"LlamaForCausalLM", "LLaMAForCausalLM", "MistralForCausalLM"}

const llamaArch = "llama"

// maxVocab bounds vocab_size, which sizes the token arrays built from config.json alone.
const maxVocab = 1 << 24

// llamaParams are the hyper-parameters conversion needs, read from config.json with the defaults transformers'
// LlamaConfig would fill in (llama.cpp reads config.json through AutoConfig, so absent keys get those defaults).
type llamaParams struct {
	cfg        jsonObject // config.json plus defaults: what AutoConfig.to_dict() would give
	blocks     int64
	heads      int64
	headsKV    int64
	headDim    int64
	hidden     int64
	vocab      int64
	rope       jsonObject // rope_parameters / rope_scaling, with rope_theta and rope_type mirrored in
	ropeLlama3 bool
}

// requiredInt reads an integer hyper-parameter that has no sensible default.
func requiredInt(cfg jsonObject, key string) (int64, error) {
	v, ok := cfg.int(key)
	if !ok {
		return 0, fmt.Errorf("config.json: %q is %s, want an integer", key, describe(cfg, key))
	}
	if v <= 0 {
		return 0, fmt.Errorf("config.json: %q is %d, want a positive integer", key, v)
	}
	return v, nil
}

func describe(o jsonObject, key string) string {
	if !o.has(key) {
		return "missing"
	}
	return jsonKind(o[key])
}

func newLlamaParams(config jsonObject) (*llamaParams, error) {
	cfg := clone(config)
	if tc := cfg.object("text_config"); tc != nil {
		for k, v := range tc {
			cfg[k] = v
		}
	}
	p := &llamaParams{cfg: cfg}
	var err error
	if p.hidden, err = requiredInt(cfg, "hidden_size"); err != nil {
		return nil, err
	}
	if p.heads, err = requiredInt(cfg, "num_attention_heads"); err != nil {
		return nil, err
	}
	for _, k := range []string{"num_hidden_layers", "intermediate_size", "vocab_size"} {
		if _, err := requiredInt(cfg, k); err != nil {
			return nil, err
		}
	}
	p.blocks, _ = cfg.int("num_hidden_layers")
	p.vocab, _ = cfg.int("vocab_size")
	// The vocabulary is built in memory at this size; the largest real vocabularies are a few hundred thousand.
	if p.vocab > maxVocab {
		return nil, fmt.Errorf("config.json: vocab_size %d is implausible (lathe accepts up to %d)", p.vocab, maxVocab)
	}
	// LlamaConfig.__init__: num_key_value_heads None → num_attention_heads; head_dim None → hidden // heads.
	if v, ok := cfg.int("num_key_value_heads"); ok {
		p.headsKV = v
	} else {
		p.headsKV = p.heads
		cfg["num_key_value_heads"] = jsonInt(p.heads)
	}
	if v, ok := cfg.int("head_dim"); ok {
		p.headDim = v
	} else {
		p.headDim = p.hidden / p.heads
		cfg["head_dim"] = jsonInt(p.headDim)
	}
	if p.headsKV <= 0 || p.heads%p.headsKV != 0 {
		return nil, fmt.Errorf("config.json: num_key_value_heads %d does not divide num_attention_heads %d",
			p.headsKV, p.heads)
	}
	if p.headDim <= 0 || p.headDim%2 != 0 {
		return nil, fmt.Errorf("config.json: head_dim %d must be a positive even number for rotary embeddings", p.headDim)
	}
	// Remaining LlamaConfig (MistralConfig) defaults that llama.cpp writes.
	maxPos := int64(2048)
	if t, _ := cfg.string("model_type"); t == "mistral" {
		maxPos = 4096 * 32
	}
	for k, v := range map[string]any{"max_position_embeddings": jsonInt(maxPos), "rms_norm_eps": jsonFloat(1e-6),
		"rope_theta": jsonFloat(10000)} {
		if !cfg.has(k) {
			cfg[k] = v
		}
	}
	// TextModel.__init__: rope_parameters (transformers ≥ 5) or rope_scaling, with rope_theta and rope_type mirrored.
	src := cfg.object("rope_parameters")
	if src == nil && !cfg.has("rope_parameters") {
		src = cfg.object("rope_scaling")
	}
	rope := clone(src)
	if !rope.has("full_attention") && !rope.has("sliding_attention") {
		if k, ok := cfg.first("global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta",
			"rotary_emb_base"); ok && !rope.has("rope_theta") && cfg[k] != nil {
			rope["rope_theta"] = cfg[k]
		}
		if t, ok := rope["type"]; ok && !rope.has("rope_type") && t != nil {
			rope["rope_type"] = t
		}
	}
	if full := rope.object("full_attention"); full != nil {
		rope = full
	}
	p.rope = rope
	if t, _ := rope.string("rope_type"); strings.EqualFold(t, "llama3") {
		p.ropeLlama3 = true
	}
	if k, _ := cfg.first("num_local_experts", "num_experts"); k != "" && cfg[k] != nil {
		return nil, fmt.Errorf("config.json: %q is set: mixture-of-experts models are not supported", k)
	}
	return p, nil
}

// jsonInt and jsonFloat make json.Number values for defaults.
func jsonInt(v int64) any { return json.Number(strconv.FormatInt(v, 10)) }

func jsonFloat(v float64) any { return json.Number(strconv.FormatFloat(v, 'g', -1, 64)) }

// setHParams writes the llama.* keys and general.file_type in the order of llama.cpp's TextModel and LlamaModel
// set_gguf_parameters, with the same value types.
func (p *llamaParams) setHParams(md *gguf.Metadata, ftype gguf.FileType) error {
	cfg := p.cfg
	prefix := llamaArch + "."
	// u32 sets key from the first present config key, skipping a null value, as find_hparam(optional=True) does.
	u32 := func(key string, names ...string) error {
		k, ok := cfg.first(names...)
		if !ok || cfg[k] == nil {
			return nil
		}
		v, isInt := cfg.int(k)
		if !isInt || v < 0 || v > math.MaxUint32 {
			return fmt.Errorf("config.json: %q is %v, want an integer fitting u32", k, cfg[k])
		}
		md.Set(prefix+key, gguf.ValueOf(uint32(v)))
		return nil
	}
	f32 := func(key string, obj jsonObject, names ...string) error {
		k, ok := obj.first(names...)
		if !ok || obj[k] == nil {
			return nil
		}
		v, isNum := obj.float(k)
		if !isNum {
			return fmt.Errorf("config.json: %q is %s, want a number", k, jsonKind(obj[k]))
		}
		md.Set(prefix+key, gguf.ValueOf(float32(v)))
		return nil
	}
	steps := []func() error{
		func() error { return u32("block_count", "n_layers", "num_hidden_layers", "n_layer", "num_layers") },
		func() error {
			return u32("context_length", "max_position_embeddings", "n_ctx", "n_positions", "max_length",
				"max_sequence_length", "model_max_length")
		},
		func() error { return u32("embedding_length", "hidden_size", "n_embd", "dim") },
		func() error { return u32("feed_forward_length", "intermediate_size", "n_inner", "hidden_dim") },
		func() error { return u32("attention.head_count", "num_attention_heads", "n_head", "n_heads") },
		func() error { return u32("attention.head_count_kv", "num_key_value_heads", "n_kv_heads") },
		func() error {
			if causal, ok := cfg.bool("is_causal"); ok && !causal {
				md.Set(prefix+"attention.causal", gguf.ValueOf(false))
			}
			return nil
		},
		p.setRopeScaling(md),
		func() error { return f32("rope.freq_base", p.rope, "rope_theta") },
		func() error { return f32("attention.layer_norm_rms_epsilon", cfg, "rms_norm_eps", "norm_eps") },
		func() error {
			return f32("attention.layer_norm_epsilon", cfg, "layer_norm_eps", "layer_norm_epsilon", "norm_epsilon")
		},
		func() error {
			if err := u32("attention.key_length", "head_dim"); err != nil {
				return err
			}
			return u32("attention.value_length", "head_dim")
		},
		func() error {
			md.Set(gguf.KeyFileType, gguf.ValueOf(uint32(ftype)))
			return u32("vocab_size", "vocab_size")
		},
		func() error {
			md.Set(prefix+"rope.dimension_count", gguf.ValueOf(uint32(p.headDim)))
			return nil
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// setRopeScaling writes rope.scaling.* for the rope types TextModel.set_gguf_parameters knows. llama3 scaling is
// not a key but the rope_freqs tensor (ropeFreqs).
func (p *llamaParams) setRopeScaling(md *gguf.Metadata) func() error {
	return func() error {
		rope := p.rope
		typ, ok := rope.string("rope_type")
		if !ok {
			return nil
		}
		prefix := llamaArch + ".rope.scaling."
		factor, hasFactor := rope.float("factor")
		optional := func(key string, names ...string) {
			if k, ok := rope.first(names...); ok {
				if v, isNum := rope.float(k); isNum {
					md.Set(prefix+key, gguf.ValueOf(float32(v)))
				}
			}
		}
		switch {
		case typ == "linear" && hasFactor:
			md.Set(prefix+"type", gguf.ValueOf("linear"))
			md.Set(prefix+"factor", gguf.ValueOf(float32(factor)))
		case typ == "yarn" && hasFactor:
			md.Set(prefix+"type", gguf.ValueOf("yarn"))
			md.Set(prefix+"factor", gguf.ValueOf(float32(factor)))
			orig, ok := rope.int("original_max_position_embeddings")
			if !ok || orig < 0 || orig > math.MaxUint32 {
				return fmt.Errorf("config.json: yarn rope scaling needs an integer original_max_position_embeddings")
			}
			md.Set(prefix+"original_context_length", gguf.ValueOf(uint32(orig)))
			optional("yarn_ext_factor", "extrapolation_factor")
			optional("yarn_attn_factor", "attention_factor", "attn_factor")
			optional("yarn_beta_fast", "beta_fast")
			optional("yarn_beta_slow", "beta_slow")
		case typ == "su" || typ == "longrope":
			md.Set(prefix+"type", gguf.ValueOf("longrope"))
		}
		return nil
	}
}

// ropeFreqs computes the rope_freqs.weight tensor of llama3 rope scaling (LlamaModel.generate_extra_tensors):
// per frequency pair, 1 for short wavelengths, factor for long ones and a smooth blend between. Arithmetic is
// float32 in the order torch evaluates it; base^x is rounded once from float64, where torch's powf may differ in
// the last bit.
func ropeFreqs(base float64, dim int64, factor, lowFreq, highFreq float64, oldCtx int64) []float32 {
	lowWavelen := float64(oldCtx) / lowFreq
	highWavelen := float64(oldCtx) / highFreq
	out := make([]float32, 0, dim/2)
	for i := int64(0); i < dim; i += 2 {
		x := float32(i) / float32(dim)
		freq := float32(1) / float32(math.Pow(base, float64(x)))
		wavelen := float32(2*math.Pi) / freq
		switch {
		case float64(wavelen) < highWavelen:
			out = append(out, 1)
		case float64(wavelen) > lowWavelen:
			out = append(out, float32(factor))
		default:
			smooth := (float32(oldCtx)/wavelen - float32(lowFreq)) / float32(highFreq-lowFreq)
			out = append(out, 1/((1-smooth)/float32(factor)+smooth))
		}
	}
	return out
}

// llama3Freqs reads the llama3 rope parameters with LlamaModel.generate_extra_tensors' defaults.
func (p *llamaParams) llama3Freqs() []float32 {
	get := func(o jsonObject, key string, def float64) float64 {
		if v, ok := o.float(key); ok {
			return v
		}
		return def
	}
	base := get(p.rope, "rope_theta", 10000)
	oldCtx := int64(8192)
	if v, ok := p.cfg.int("original_max_position_embeddings"); ok {
		oldCtx = v
	}
	return ropeFreqs(base, p.headDim, get(p.rope, "factor", 8), get(p.rope, "low_freq_factor", 1),
		get(p.rope, "high_freq_factor", 4), oldCtx)
}

// Tensor names (gguf-py tensor_mapping.py for MODEL_ARCH.LLAMA, HF names on the left). Layer tensors are under
// model.layers.N. on the HF side and blk.N. on the GGUF side.
var (
	llamaGlobal = [][2]string{
		{"model.embed_tokens", "token_embd"},
		{"model.norm", "output_norm"},
		{"lm_head", "output"},
	}
	llamaLayer = [][2]string{
		{"input_layernorm", "attn_norm"},
		{"self_attn.q_proj", "attn_q"},
		{"self_attn.k_proj", "attn_k"},
		{"self_attn.v_proj", "attn_v"},
		{"self_attn.o_proj", "attn_output"},
		{"post_attention_layernorm", "ffn_norm"},
		{"mlp.gate_proj", "ffn_gate"},
		{"mlp.up_proj", "ffn_up"},
		{"mlp.down_proj", "ffn_down"},
	}
)

const ropeFreqsName = "rope_freqs.weight"

// skippedHF reports tensors llama.cpp's prepare_tensors drops ("we don't need these").
func skippedHF(name string) bool {
	for _, s := range []string{".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// splitSuffix separates ".weight" or ".bias" from a tensor name.
func splitSuffix(name string) (base, suffix string, ok bool) {
	for _, s := range []string{".weight", ".bias"} {
		if b, found := strings.CutSuffix(name, s); found {
			return b, s, true
		}
	}
	return name, "", false
}

// hfToGGUF maps a Hugging Face tensor name to its GGUF name; layers must be below blocks.
func hfToGGUF(name string, blocks int64) (string, error) {
	base, suffix, ok := splitSuffix(name)
	if ok {
		for _, m := range llamaGlobal {
			if base == m[0] {
				return m[1] + suffix, nil
			}
		}
		if rest, found := strings.CutPrefix(base, "model.layers."); found {
			if n, part, found := strings.Cut(rest, "."); found {
				if bid, err := strconv.ParseInt(n, 10, 64); err == nil && bid >= 0 && bid < blocks &&
					strconv.FormatInt(bid, 10) == n {
					for _, m := range llamaLayer {
						if part == m[0] {
							return "blk." + n + "." + m[1] + suffix, nil
						}
					}
				}
			}
		}
	}
	return "", fmt.Errorf("tensor %q: cannot map it to a GGUF llama tensor", name)
}

// ggufToHF is the inverse of hfToGGUF.
func ggufToHF(name string) (string, error) {
	base, suffix, ok := splitSuffix(name)
	if ok {
		for _, m := range llamaGlobal {
			if base == m[1] {
				return m[0] + suffix, nil
			}
		}
		if rest, found := strings.CutPrefix(base, "blk."); found {
			if n, part, found := strings.Cut(rest, "."); found {
				if bid, err := strconv.ParseUint(n, 10, 32); err == nil && strconv.FormatUint(bid, 10) == n {
					for _, m := range llamaLayer {
						if part == m[1] {
							return "model.layers." + n + "." + m[0] + suffix, nil
						}
					}
				}
			}
		}
	}
	return "", fmt.Errorf("tensor %q: not a llama tensor lathe can map to Hugging Face", name)
}

// permuteHeads returns the head count for the rotary row permutation of a GGUF llama tensor, 0 for none.
// llama.cpp's LlamaModel.permute reorders q_proj rows with n_head and k_proj rows with n_head_kv, because HF
// checkpoints store each head's rotary pairs as two halves while ggml's rope takes adjacent pairs.
func permuteHeads(ggufName string, heads, headsKV int64) int64 {
	base, _, _ := splitSuffix(ggufName)
	switch {
	case strings.HasSuffix(base, ".attn_q"):
		return heads
	case strings.HasSuffix(base, ".attn_k"):
		return headsKV
	}
	return 0
}

// permuteRows applies the rotary permutation to whole heads of row-major data: within each head of 2·half rows,
// HF row j·half+i becomes GGUF row 2i+j (w.reshape(n_head, 2, half, cols).swapaxes(1, 2)); inverse undoes it.
// src and dst hold a whole number of heads of headRows rows of rowBytes bytes.
func permuteRows(dst, src []byte, headRows, rowBytes int, inverse bool) {
	half := headRows / 2
	headBytes := headRows * rowBytes
	for h := 0; h+headBytes <= len(src); h += headBytes {
		for i := range half {
			for j := range 2 {
				hf := h + (j*half+i)*rowBytes
				gg := h + (2*i+j)*rowBytes
				if inverse {
					copy(dst[hf:hf+rowBytes], src[gg:gg+rowBytes])
				} else {
					copy(dst[gg:gg+rowBytes], src[hf:hf+rowBytes])
				}
			}
		}
	}
}
