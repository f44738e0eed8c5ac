package convert

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// HFOptions tunes ToHF and PlanHF.
type HFOptions struct {
	// Type is the type of every output tensor: F32, F16 or BF16. tensor.Invalid ("auto") keeps F32, F16 and BF16
	// tensors as they are, so that converting back gives the same GGUF, and decodes block types to F32, which
	// holds their values exactly.
	Type tensor.DType
	// MaxShardSize > 0 cuts the weights into model-0000i-of-0000n.safetensors files holding at most that many
	// bytes of tensor data each, with model.safetensors.index.json, as transformers' save_pretrained does.
	MaxShardSize int64
	// Progress, if set, is called after each tensor with the number written and the total.
	Progress func(done, total int)
}

// ggufLlama holds a llama GGUF's hyper-parameters.
type ggufLlama struct {
	md       *gguf.Metadata
	blocks   uint32
	embd     uint32
	ff       uint32
	heads    uint32
	headsKV  uint32
	headDim  uint32
	vocab    uint32
	tied     bool
	biasAttn bool
	biasMLP  bool
	freqs    []float32 // rope_freqs.weight, if present
}

func readGGUFLlama(f *gguf.File) (*ggufLlama, error) {
	md := f.Metadata
	arch, err := md.String(gguf.KeyArchitecture)
	if err != nil {
		return nil, fmt.Errorf("convert: %s: %w", f.Name, err)
	}
	if arch != llamaArch {
		return nil, fmt.Errorf("convert: %s: architecture %q is not supported; lathe converts %q to Hugging Face",
			f.Name, arch, llamaArch)
	}
	h := &ggufLlama{md: md, tied: true}
	req := func(dst *uint32, key string) error {
		v, err := md.Uint32(llamaArch + "." + key)
		if err != nil {
			return fmt.Errorf("convert: %s: %w", f.Name, err)
		}
		if v == 0 {
			return fmt.Errorf("convert: %s: %s.%s is 0", f.Name, llamaArch, key)
		}
		*dst = v
		return nil
	}
	for _, r := range []struct {
		dst *uint32
		key string
	}{{&h.blocks, "block_count"}, {&h.embd, "embedding_length"}, {&h.ff, "feed_forward_length"},
		{&h.heads, "attention.head_count"}} {
		if err := req(r.dst, r.key); err != nil {
			return nil, err
		}
	}
	h.headsKV = optUint32(md, llamaArch+".attention.head_count_kv", h.heads)
	h.headDim = optUint32(md, llamaArch+".attention.key_length", h.embd/h.heads)
	if h.headsKV == 0 || h.heads%h.headsKV != 0 || h.headDim == 0 {
		return nil, fmt.Errorf("convert: %s: head counts %d/%d and head size %d do not fit", f.Name, h.heads,
			h.headsKV, h.headDim)
	}
	h.vocab = optUint32(md, llamaArch+".vocab_size", 0)
	if h.vocab == 0 {
		if toks, err := md.Strings(keyTokens); err == nil {
			h.vocab = uint32(len(toks))
		} else if t, ok := f.Info("token_embd.weight"); ok && len(t.Shape) == 2 {
			h.vocab = uint32(t.Shape[0])
		}
	}
	for _, t := range f.Tensors() {
		switch {
		case t.Name == "output.weight":
			h.tied = false
		case strings.HasSuffix(t.Name, ".attn_q.bias"), strings.HasSuffix(t.Name, ".attn_output.bias"):
			h.biasAttn = true
		case strings.HasSuffix(t.Name, ".ffn_up.bias"), strings.HasSuffix(t.Name, ".ffn_down.bias"):
			h.biasMLP = true
		case t.Name == ropeFreqsName:
			v, err := f.Tensor(t.Name)
			if err != nil {
				return nil, err
			}
			if h.freqs, err = v.Float32s(); err != nil {
				return nil, err
			}
		}
	}
	return h, nil
}

func optUint32(md *gguf.Metadata, key string, def uint32) uint32 {
	if v, err := md.Uint32(key); err == nil {
		return v
	}
	return def
}

// PlanHF lists the safetensors tensors ToHF would write (in GGUF order) without converting anything.
func PlanHF(f *gguf.File, opts HFOptions) ([]PlanEntry, error) {
	h, err := readGGUFLlama(f)
	if err != nil {
		return nil, err
	}
	return planHF(f, h, opts.Type)
}

func planHF(f *gguf.File, h *ggufLlama, want tensor.DType) ([]PlanEntry, error) {
	switch want {
	case tensor.Invalid, tensor.F32, tensor.F16, tensor.BF16:
	default:
		return nil, fmt.Errorf("convert: output type %s is not supported; use f32, f16, bf16 or auto", want)
	}
	var entries []PlanEntry
	for _, t := range f.Tensors() {
		if t.Name == ropeFreqsName {
			continue // rebuilt from rope_scaling when the model is loaded
		}
		name, err := ggufToHF(t.Name)
		if err != nil {
			return nil, fmt.Errorf("convert: %s: %w", f.Name, err)
		}
		to := want
		switch {
		case t.DType.IsQuantized():
			if !quant.CanDecode(t.DType) {
				return nil, fmt.Errorf("convert: %s: tensor %q: decoding %s is not supported", f.Name, t.Name, t.DType)
			}
			if to == tensor.Invalid {
				to = tensor.F32
			}
		case t.DType == tensor.F32 || t.DType == tensor.F16 || t.DType == tensor.BF16 || t.DType == tensor.F64:
			if to == tensor.Invalid {
				to = t.DType
			}
		default:
			return nil, fmt.Errorf("convert: %s: tensor %q is %s, not a weight type lathe converts", f.Name, t.Name,
				t.DType)
		}
		e := PlanEntry{Name: name, Source: t.Name, Shape: t.Shape, From: t.DType, To: to,
			PermuteHeads: permuteHeads(t.Name, int64(h.heads), int64(h.headsKV))}
		if e.PermuteHeads > 0 && (len(e.Shape) == 0 || e.Shape[0]%(2*e.PermuteHeads) != 0) {
			return nil, fmt.Errorf("convert: %s: tensor %q has shape %v; its %d heads need an even number of rows "+
				"each", f.Name, t.Name, e.Shape, e.PermuteHeads)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// ToHF writes the GGUF model f as a Hugging Face model directory: safetensors weights (with the rotary permutation
// of q and k undone and block types decoded), config.json, generation_config.json and the tokenizer
// (tokenizer.model for a SentencePiece vocabulary, tokenizer.json for a byte-level BPE one, with
// tokenizer_config.json and special_tokens_map.json). dir is created if needed; every file is written through a
// temporary file and renamed into place when complete. Tensors are streamed, a few chunks per core at a time.
func ToHF(dir string, f *gguf.File, opts HFOptions) error {
	h, err := readGGUFLlama(f)
	if err != nil {
		return err
	}
	entries, err := planHF(f, h, opts.Type)
	if err != nil {
		return err
	}
	config, err := h.hfConfig(entries)
	if err != nil {
		return fmt.Errorf("convert: %s: %w", f.Name, err)
	}
	// Everything that can be refused is checked before the first file is written.
	files := map[string]any{"config.json": config, "generation_config.json": h.generationConfig()}
	raw := map[string][]byte{}
	if err := h.tokenizerFiles(files, raw); err != nil {
		return err
	}
	for name, v := range files {
		var buf bytes.Buffer
		if err := encodeJSON(&buf, v); err != nil {
			return fmt.Errorf("convert: %s: %w", name, err)
		}
		raw[name] = buf.Bytes()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeWeights(dir, f, entries, opts); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		if err := atomicfile.WriteFile(filepath.Join(dir, name), raw[name]); err != nil {
			return err
		}
	}
	return nil
}

// writeWeights streams the tensors into one safetensors file, or into the shards safetensors.PlanShards cuts.
func writeWeights(dir string, f *gguf.File, entries []PlanEntry, opts HFOptions) error {
	decls := make([]safetensors.TensorInfo, len(entries))
	byName := map[string]PlanEntry{}
	for i, e := range entries {
		decls[i] = safetensors.TensorInfo{Name: e.Name, DType: e.To, Shape: e.Shape}
		byName[e.Name] = e
	}
	meta := map[string]string{"format": "pt"} // what transformers' save_pretrained writes
	shards, err := safetensors.PlanShards(decls, meta, opts.MaxShardSize)
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	p := newPipeline(runtime.GOMAXPROCS(0))
	go func() {
		defer p.finish()
		for _, shard := range shards {
			for _, t := range shard.Tensors {
				e := byName[t.Name]
				v, err := f.Tensor(e.Source)
				if err != nil {
					p.fail(err)
					return
				}
				if !submitConversion(p, e.Name, v.Data, e.Shape, e.From, e.To, e.PermuteHeads, true) {
					return
				}
			}
		}
	}()
	done := 0
	for _, shard := range shards {
		if err := writeShard(filepath.Join(dir, shard.Name), p, shard.Tensors, meta, func() {
			done++
			if opts.Progress != nil {
				opts.Progress(done, len(entries))
			}
		}); err != nil {
			p.abort()
			return err
		}
	}
	if err := p.err(); err != nil {
		return err
	}
	_, err = safetensors.WriteIndex(dir, shards)
	return err
}

// writeShard writes one safetensors file from the pipeline's chunks.
func writeShard(path string, p *pipeline, shard []safetensors.TensorInfo, meta map[string]string, tick func()) error {
	out, err := atomicfile.Create(path)
	if err != nil {
		return err
	}
	defer out.Abort()
	bw := bufio.NewWriterSize(out, 1<<20)
	sw, err := safetensors.NewWriter(bw, shard, meta)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, t := range sw.Tensors() {
		tw, err := sw.Create(t.Name)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		r := &chunkReader{p: p, name: t.Name}
		if _, err := io.Copy(tw, io.LimitReader(r, t.Size)); err != nil {
			if r.err != nil {
				return r.err
			}
			return fmt.Errorf("%s: %w", path, err)
		}
		tick()
	}
	if err := sw.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return out.Commit()
}

// hfConfig rebuilds config.json for LlamaForCausalLM from the GGUF keys.
func (h *ggufLlama) hfConfig(entries []PlanEntry) (map[string]any, error) {
	md := h.md
	c := map[string]any{
		"architectures":       []string{"LlamaForCausalLM"},
		"model_type":          "llama",
		"hidden_size":         h.embd,
		"intermediate_size":   h.ff,
		"num_hidden_layers":   h.blocks,
		"num_attention_heads": h.heads,
		"num_key_value_heads": h.headsKV,
		"head_dim":            h.headDim,
		"vocab_size":          h.vocab,
		"hidden_act":          "silu",
		"tie_word_embeddings": h.tied,
		"attention_bias":      h.biasAttn,
		"mlp_bias":            h.biasMLP,
		"rope_scaling":        nil,
		"rope_theta":          pyFloat(10000),
	}
	if v, err := md.Uint32(llamaArch + ".context_length"); err == nil {
		c["max_position_embeddings"] = v
	}
	if v, err := md.Float32(llamaArch + ".attention.layer_norm_rms_epsilon"); err == nil {
		c["rms_norm_eps"] = pyFloat(v)
	}
	if v, err := md.Float32(llamaArch + ".rope.freq_base"); err == nil {
		c["rope_theta"] = pyFloat(v)
	}
	for typ, key := range specialIDKeys {
		if slices.Contains(specialTypes, typ) {
			if v, err := md.Uint32(key); err == nil {
				c[typ+"_token_id"] = v
			}
		}
	}
	dtype := tensor.Invalid
	for _, e := range entries {
		if len(e.Shape) >= 2 {
			dtype = e.To
			break
		}
	}
	if name, ok := map[tensor.DType]string{tensor.F32: "float32", tensor.F16: "float16", tensor.BF16: "bfloat16",
		tensor.F64: "float64"}[dtype]; ok {
		c["torch_dtype"] = name
	}
	rope, err := h.ropeScaling()
	if err != nil {
		return nil, err
	}
	if rope != nil {
		c["rope_scaling"] = rope
	}
	return c, nil
}

// ropeScaling rebuilds rope_scaling from rope.scaling.* or, for llama3 scaling, from the rope_freqs tensor: the
// usual parameters (low 1, high 4, original context 8192, factor = the largest entry) are accepted if they
// reproduce it.
func (h *ggufLlama) ropeScaling() (map[string]any, error) {
	md := h.md
	prefix := llamaArch + ".rope.scaling."
	if h.freqs != nil {
		factor := float32(1)
		for _, f := range h.freqs {
			factor = max(factor, f)
		}
		base, err := md.Float32(llamaArch + ".rope.freq_base")
		if err != nil {
			base = 10000
		}
		if int(h.headDim/2) != len(h.freqs) {
			return nil, fmt.Errorf("rope_freqs.weight has %d entries, head size %d needs %d", len(h.freqs),
				h.headDim, h.headDim/2)
		}
		want := ropeFreqs(float64(base), int64(h.headDim), float64(factor), 1, 4, 8192)
		for i := range want {
			if math.Abs(float64(want[i]-h.freqs[i])) > 1e-6*math.Abs(float64(want[i])) {
				return nil, errors.New("rope_freqs.weight is not llama3 rope scaling with the usual parameters " +
					"(low_freq_factor 1, high_freq_factor 4, original context 8192); cannot rebuild rope_scaling")
			}
		}
		return map[string]any{"rope_type": "llama3", "factor": pyFloat(factor), "low_freq_factor": pyFloat(1),
			"high_freq_factor": pyFloat(4), "original_max_position_embeddings": 8192}, nil
	}
	typ, err := md.String(prefix + "type")
	if err != nil {
		return nil, nil
	}
	factor, err := md.Float32(prefix + "factor")
	switch typ {
	case "none":
		return nil, nil
	case "linear", "yarn":
		if err != nil {
			return nil, fmt.Errorf("%s rope scaling without %sfactor", typ, prefix)
		}
	default:
		return nil, fmt.Errorf("rope scaling %q cannot be rebuilt for Hugging Face", typ)
	}
	r := map[string]any{"rope_type": typ, "factor": pyFloat(factor)}
	if typ == "yarn" {
		orig, err := md.Uint32(prefix + "original_context_length")
		if err != nil {
			return nil, fmt.Errorf("yarn rope scaling: %w", err)
		}
		r["original_max_position_embeddings"] = orig
		for key, hf := range map[string]string{"yarn_ext_factor": "extrapolation_factor",
			"yarn_attn_factor": "attention_factor", "yarn_beta_fast": "beta_fast", "yarn_beta_slow": "beta_slow"} {
			if v, err := md.Float32(prefix + key); err == nil {
				r[hf] = pyFloat(v)
			}
		}
	}
	return r, nil
}

// generationConfig rebuilds generation_config.json: special ids and the recommended sampling parameters.
func (h *ggufLlama) generationConfig() map[string]any {
	g := map[string]any{}
	for _, typ := range []string{"bos", "eos", "pad"} {
		if v, err := h.md.Uint32(specialIDKeys[typ]); err == nil {
			g[typ+"_token_id"] = v
		}
	}
	for key, hf := range map[string]string{"top_k": "top_k", "penalty_last_n": "penalty_last_n",
		"mirostat": "mirostat"} {
		if v, err := h.md.Int("general.sampling." + key); err == nil {
			g[hf] = v
		}
	}
	for key, hf := range map[string]string{"top_p": "top_p", "min_p": "min_p", "temp": "temperature",
		"xtc_probability": "xtc_probability", "xtc_threshold": "xtc_threshold", "penalty_repeat": "penalty_repeat",
		"mirostat_tau": "mirostat_tau", "mirostat_eta": "mirostat_eta"} {
		if v, err := h.md.Float32("general.sampling." + key); err == nil {
			g[hf] = pyFloat(v)
		}
	}
	if s, err := h.md.String("general.sampling.sequence"); err == nil {
		g["sequence"] = s
	}
	return g
}

// encodeJSON writes v as transformers writes its JSON files: keys sorted, two-space indent, a final newline,
// non-ASCII and HTML characters unescaped.
func encodeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// pyFloat formats a float32 as Python's repr does for the shortest decimal that reads back as the same float32:
// "1e-05", "10000.0", "0.5". JSON has no infinities or NaN: encoding one fails.
func pyFloat(f float32) json.Number {
	s := strconv.FormatFloat(float64(f), 'e', -1, 32) // d.ddde±XX
	mant, expStr, _ := strings.Cut(s, "e")
	exp, _ := strconv.Atoi(expStr)
	neg := strings.HasPrefix(mant, "-")
	digits := strings.ReplaceAll(strings.TrimPrefix(mant, "-"), ".", "")
	var out string
	switch {
	case exp < -4 || exp >= 16:
		out = digits[:1]
		if len(digits) > 1 {
			out += "." + digits[1:]
		}
		sign := "+"
		if exp < 0 {
			sign, exp = "-", -exp
		}
		out += fmt.Sprintf("e%s%02d", sign, exp)
	case exp < 0:
		out = "0." + strings.Repeat("0", -exp-1) + digits
	default:
		if len(digits) <= exp+1 {
			out = digits + strings.Repeat("0", exp+1-len(digits)) + ".0"
		} else {
			out = digits[:exp+1] + "." + digits[exp+1:]
		}
	}
	if neg {
		out = "-" + out
	}
	return json.Number(out)
}
