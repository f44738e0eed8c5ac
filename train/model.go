// Package train runs and (later) trains Llama-family language models: the forward pass with a KV cache,
// perplexity as llama-perplexity computes it, and text generation.
//
// Weights stay in the type they are stored in — F32, F16, BF16 or any ggml block type — in the memory map of their
// file. A matrix product decodes a block of rows to float32 into a small buffer and multiplies it with the float32
// activations (internal/kernels.Sgemm), so a Q4_K model runs in about a quarter of the memory of its F32 original.
// All arithmetic is float32, as in llama.cpp's CPU backend.
package train

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"unsafe"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/kernels"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/tensor"
	"github.com/lathe-ml/lathe/tokenizer"
)

// Config holds the hyper-parameters of a Llama-family model, read from the GGUF llama.* keys (for a Hugging Face
// checkpoint, from the keys its GGUF conversion would have).
type Config struct {
	Layers   int     // block_count
	Embd     int     // embedding_length
	FF       int     // feed_forward_length
	Heads    int     // attention.head_count
	HeadsKV  int     // attention.head_count_kv
	HeadDim  int     // attention.key_length (= value_length)
	Vocab    int     // rows of token_embd
	CtxTrain int     // context_length
	NormEps  float32 // attention.layer_norm_rms_epsilon
	// Rotary embedding: frequencies base^(-2i/RopeDims) for the first RopeDims dimensions of each head, positions
	// multiplied by RopeScale (1/factor of linear scaling).
	RopeBase  float64
	RopeDims  int
	RopeScale float64
	// RopeNeoX rotates dimension pairs (i, i+RopeDims/2), as Hugging Face's rotate_half does. GGUF files store the
	// q and k rows permuted (convert_hf_to_gguf's LlamaModel.permute) so that ggml's "normal" rope, which rotates
	// adjacent pairs (2i, 2i+1), gives the same result; RopeNeoX is false for them.
	RopeNeoX bool
}

// Model is an open Llama-family model. Its weights are views of the files, valid until Close. Forward and the
// functions built on it may be called from several goroutines; calls run one at a time.
type Model struct {
	Config    Config
	Tokenizer *tokenizer.Tokenizer
	Path      string
	// ChatTemplate is the Jinja chat template (GGUF tokenizer.chat_template, which a Hugging Face checkpoint's
	// tokenizer_config.json chat_template becomes in convert's plan), or "". LoadStream recognises known ones.
	ChatTemplate string
	// CacheType is the precision of the keys and values new KV caches keep (see SetCacheType); F16 by default.
	CacheType tensor.DType

	embd      matrix
	layers    []layer
	outNorm   []float32
	output    *matrix // token_embd when the output is tied
	ropeFreqs []float32

	closer io.Closer
	mu     sync.Mutex
	ws     workspace
	stats  *ActivationStats // set by CollectActivations
}

type layer struct {
	attnNorm, ffnNorm          []float32
	q, k, v, o, gate, up, down matrix
}

// Open opens a GGUF model file (the first file of a split set opens the set) or a Hugging Face model directory.
func Open(path string) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return openHF(path)
	}
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	lookup := func(name string) (tensor.View, error) {
		if _, ok := f.Info(name); !ok {
			return tensor.View{}, errNoTensor
		}
		return f.Tensor(name)
	}
	m, err := build(path, f.Metadata, lookup, false)
	if err != nil {
		f.Close()
		return nil, err
	}
	m.closer = f
	return m, nil
}

// openHF runs a checkpoint through convert's plan of its GGUF conversion, so that hyper-parameters, tensor names and
// the tokenizer are read exactly as for the converted file; only the rotary layout of q and k differs.
func openHF(dir string) (*Model, error) {
	hf, err := convert.OpenHF(dir)
	if err != nil {
		return nil, err
	}
	h, err := convert.PlanHeader(hf, convert.GGUFOptions{})
	if err != nil {
		hf.Close()
		return nil, err
	}
	sources := map[string]string{}
	for _, e := range h.Tensors {
		sources[e.Name] = e.Source
	}
	lookup := func(name string) (tensor.View, error) {
		if data, ok := h.Computed[name]; ok {
			return tensor.View{Name: name, DType: tensor.F32, Shape: tensor.Shape{int64(len(data) / 4)}, Data: data}, nil
		}
		src, ok := sources[name]
		if !ok {
			return tensor.View{}, errNoTensor
		}
		v, err := hf.Weights.Tensor(src)
		if err != nil {
			return tensor.View{}, err
		}
		v.Name = src
		return v, nil
	}
	m, err := build(dir, h.Metadata, lookup, true)
	if err != nil {
		hf.Close()
		return nil, err
	}
	m.closer = hf
	return m, nil
}

var errNoTensor = errors.New("no such tensor")

// Close releases the model's files.
func (m *Model) Close() error {
	if m.closer == nil {
		return nil
	}
	return m.closer.Close()
}

// readConfig reads the llama.* hyper-parameters, with llama.cpp's defaults (llm_load_hparams).
func readConfig(md *gguf.Metadata) (Config, error) {
	var c Config
	arch, err := md.String(gguf.KeyArchitecture)
	if err != nil {
		return c, err
	}
	if arch != "llama" {
		return c, fmt.Errorf("train: architecture %q is not supported (lathe runs llama)", arch)
	}
	p := arch + "."
	get := func(key string, dst *int, def int) error {
		v, err := md.Uint32(p + key)
		switch {
		case errors.Is(err, gguf.ErrKeyNotFound) && def >= 0:
			*dst = def
		case err != nil:
			return err
		case v == 0 || v > 1<<24:
			return fmt.Errorf("train: %s%s = %d is out of range", p, key, v)
		default:
			*dst = int(v)
		}
		return nil
	}
	for _, k := range []struct {
		key string
		dst *int
	}{{"block_count", &c.Layers}, {"embedding_length", &c.Embd}, {"feed_forward_length", &c.FF},
		{"attention.head_count", &c.Heads}} {
		if err := get(k.key, k.dst, -1); err != nil {
			return c, err
		}
	}
	if n, err := md.Uint32(p + "expert_count"); err == nil && n > 0 {
		return c, fmt.Errorf("train: %sexpert_count = %d: mixture-of-experts models are not supported", p, n)
	}
	if err := get("attention.head_count_kv", &c.HeadsKV, c.Heads); err != nil {
		return c, err
	}
	if c.Heads%c.HeadsKV != 0 {
		return c, fmt.Errorf("train: %d key/value heads do not divide %d heads", c.HeadsKV, c.Heads)
	}
	if err := get("attention.key_length", &c.HeadDim, c.Embd/c.Heads); err != nil {
		return c, err
	}
	var vdim int
	if err := get("attention.value_length", &vdim, c.HeadDim); err != nil {
		return c, err
	}
	if vdim != c.HeadDim {
		return c, fmt.Errorf("train: key length %d and value length %d differ", c.HeadDim, vdim)
	}
	if err := get("context_length", &c.CtxTrain, 2048); err != nil {
		return c, err
	}
	if err := get("rope.dimension_count", &c.RopeDims, c.HeadDim); err != nil {
		return c, err
	}
	if c.RopeDims > c.HeadDim || c.RopeDims%2 != 0 {
		return c, fmt.Errorf("train: rope dimension count %d does not fit head size %d", c.RopeDims, c.HeadDim)
	}
	c.NormEps = 1e-5
	if v, err := md.Float32(p + "attention.layer_norm_rms_epsilon"); err == nil {
		c.NormEps = v
	}
	c.RopeBase = 10000
	if v, err := md.Float32(p + "rope.freq_base"); err == nil {
		c.RopeBase = float64(v)
	}
	c.RopeScale = 1
	typ, _ := md.String(p + "rope.scaling.type")
	switch typ {
	case "", "none", "linear":
		factor, err := md.Float32(p + "rope.scaling.factor")
		if err != nil {
			factor, err = md.Float32(p + "rope.scale_linear")
		}
		if err == nil && factor > 0 && typ != "none" {
			c.RopeScale = 1 / float64(factor)
		}
	default:
		return c, fmt.Errorf("train: rope scaling %q is not supported (lathe applies linear scaling and llama3 "+
			"frequency factors)", typ)
	}
	return c, nil
}

// build checks and collects the tensors of a llama model. hfRows says the q and k rows are in Hugging Face's
// rotary order.
func build(path string, md *gguf.Metadata, lookup func(string) (tensor.View, error), hfRows bool) (*Model, error) {
	cfg, err := readConfig(md)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	cfg.RopeNeoX = hfRows
	m := &Model{Path: path, CacheType: tensor.F16}
	if m.Tokenizer, err = tokenizer.FromGGUF(md); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.ChatTemplate, _ = md.String("tokenizer.chat_template")
	fail := func(err error) (*Model, error) { return nil, fmt.Errorf("%s: %w", path, err) }
	if m.embd, err = loadMatrix(lookup, "token_embd.weight", -1, cfg.Embd); err != nil {
		return fail(err)
	}
	cfg.Vocab = m.embd.rows
	if m.Tokenizer.Size() > cfg.Vocab {
		return fail(fmt.Errorf("the tokenizer has %d tokens but token_embd.weight only %d rows", m.Tokenizer.Size(),
			cfg.Vocab))
	}
	qDim, kvDim := cfg.Heads*cfg.HeadDim, cfg.HeadsKV*cfg.HeadDim
	m.layers = make([]layer, cfg.Layers)
	for i := range m.layers {
		l := &m.layers[i]
		name := func(s string) string { return fmt.Sprintf("blk.%d.%s.weight", i, s) }
		for _, w := range []struct {
			dst        *matrix
			name       string
			rows, cols int
		}{
			{&l.q, "attn_q", qDim, cfg.Embd}, {&l.k, "attn_k", kvDim, cfg.Embd}, {&l.v, "attn_v", kvDim, cfg.Embd},
			{&l.o, "attn_output", cfg.Embd, qDim}, {&l.gate, "ffn_gate", cfg.FF, cfg.Embd},
			{&l.up, "ffn_up", cfg.FF, cfg.Embd}, {&l.down, "ffn_down", cfg.Embd, cfg.FF},
		} {
			if *w.dst, err = loadMatrix(lookup, name(w.name), w.rows, w.cols); err != nil {
				return fail(err)
			}
		}
		if l.attnNorm, err = loadVector(lookup, name("attn_norm"), cfg.Embd); err != nil {
			return fail(err)
		}
		if l.ffnNorm, err = loadVector(lookup, name("ffn_norm"), cfg.Embd); err != nil {
			return fail(err)
		}
	}
	if m.outNorm, err = loadVector(lookup, "output_norm.weight", cfg.Embd); err != nil {
		return fail(err)
	}
	m.output = &m.embd
	if out, err := loadMatrix(lookup, "output.weight", cfg.Vocab, cfg.Embd); err == nil {
		m.output = &out
	} else if !errors.Is(err, errNoTensor) {
		return fail(err)
	}
	if f, err := loadVector(lookup, "rope_freqs.weight", cfg.RopeDims/2); err == nil {
		m.ropeFreqs = f
	} else if !errors.Is(err, errNoTensor) {
		return fail(err)
	}
	m.Config = cfg
	return m, nil
}

// matrix is a 2-D weight in its stored type, used as the right operand of x·Wᵀ.
type matrix struct {
	name       string
	dtype      tensor.DType
	rows, cols int
	rowBytes   int
	data       []byte
	f32        []float32 // the data itself when it is aligned little-endian F32: no decoding at all
	adapters   []loraFactors
}

var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// loadMatrix finds a rows×cols weight (rows < 0: any). Block types need whole blocks per row.
func loadMatrix(lookup func(string) (tensor.View, error), name string, rows, cols int) (matrix, error) {
	v, err := lookup(name)
	if err != nil {
		return matrix{}, fmt.Errorf("tensor %s: %w", name, err)
	}
	if len(v.Shape) != 2 || (rows >= 0 && v.Shape[0] != int64(rows)) || v.Shape[1] != int64(cols) {
		want := fmt.Sprintf("[%d %d]", rows, cols)
		if rows < 0 {
			want = fmt.Sprintf("[n %d]", cols)
		}
		return matrix{}, fmt.Errorf("tensor %s (%s) has shape %v, want %s", name, v.Name, v.Shape, want)
	}
	w := matrix{name: name, dtype: v.DType, rows: int(v.Shape[0]), cols: cols, data: v.Data}
	rb, err := v.DType.Bytes(int64(cols))
	if err != nil {
		return matrix{}, fmt.Errorf("tensor %s: rows of %d %s values: %w", name, cols, v.DType, err)
	}
	w.rowBytes = int(rb)
	if int64(len(v.Data)) != int64(w.rows)*rb {
		return matrix{}, fmt.Errorf("tensor %s: %d bytes of data, want %d", name, len(v.Data), int64(w.rows)*rb)
	}
	if v.DType == tensor.F32 && littleEndian && len(v.Data) > 0 && uintptr(unsafe.Pointer(&v.Data[0]))%4 == 0 {
		// The memory map is only read: the GEMM takes its right operand as read-only input.
		w.f32 = unsafe.Slice((*float32)(unsafe.Pointer(&v.Data[0])), w.rows*cols)
	}
	probe := make([]float32, cols)
	if err := w.decodeRows(probe, 0, 1); err != nil {
		return matrix{}, fmt.Errorf("tensor %s: %w", name, err)
	}
	return w, nil
}

// loadVector reads a 1-D weight of n values as float32.
func loadVector(lookup func(string) (tensor.View, error), name string, n int) ([]float32, error) {
	v, err := lookup(name)
	if err != nil {
		return nil, fmt.Errorf("tensor %s: %w", name, err)
	}
	if len(v.Shape) != 1 || v.Shape[0] != int64(n) {
		return nil, fmt.Errorf("tensor %s (%s) has shape %v, want [%d]", name, v.Name, v.Shape, n)
	}
	out := make([]float32, n)
	if err := decode(v.DType, out, v.Data); err != nil {
		return nil, fmt.Errorf("tensor %s: %w", name, err)
	}
	return out, nil
}

// decode widens len(dst) values of type t.
func decode(t tensor.DType, dst []float32, src []byte) error {
	switch {
	case t == tensor.F16:
		kernels.F16ToF32Row(dst, src)
	case t == tensor.BF16:
		kernels.BF16ToF32Row(dst, src)
	case t.IsQuantized():
		return quant.Decode(t, dst, src)
	default:
		return tensor.ToFloat32(dst, src, t)
	}
	return nil
}

// decodeRows writes rows [r0, r0+n) as float32 into dst (n·cols values).
func (w *matrix) decodeRows(dst []float32, r0, n int) error {
	if w.f32 != nil {
		copy(dst[:n*w.cols], w.f32[r0*w.cols:])
		return nil
	}
	return decode(w.dtype, dst[:n*w.cols], w.data[r0*w.rowBytes:(r0+n)*w.rowBytes])
}

// row decodes one row; the embedding lookup.
func (w *matrix) row(dst []float32, r int) {
	// The type was checked by loadMatrix, so decoding cannot fail.
	_ = w.decodeRows(dst, r, 1)
}

// Bytes is the size of the projection and embedding weights as they are stored and used: the memory the model
// needs beyond its activations and KV cache (they are not copied out of the file's memory map).
func (m *Model) Bytes() int64 {
	n := int64(len(m.embd.data))
	if m.output != &m.embd {
		n += int64(len(m.output.data))
	}
	for _, l := range m.layers {
		for _, w := range []*matrix{&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down} {
			n += int64(len(w.data))
		}
	}
	return n
}
