package quant

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/tensor"
)

// This file is llama-quantize's choice of a type for every tensor of a model (llama.cpp src/llama-quant.cpp:
// tensor_allows_quantization, llama_tensor_get_type, llama_tensor_get_type_impl, tensor_type_fallback,
// tensor_requires_imatrix; ../shared/reference/formats-quant.md §3.2–3.4). It works on names, shapes and a few
// hyper-parameters only; reading and writing the model is package convert's job.

// FileType is llama.h's llama_ftype, the recipe a whole model is quantized with. The numbering is llama.h's, the
// same as gguf.FileType's, so the two convert with a plain type conversion; the names ("Q4_K_M") live in package
// gguf only.
type FileType uint32

// The llama_ftype values that llama-quantize accepts (tools/quantize/quantize.cpp QUANT_OPTIONS).
const (
	AllF32          FileType = 0
	MostlyF16       FileType = 1
	MostlyQ4_0      FileType = 2
	MostlyQ4_1      FileType = 3
	MostlyQ8_0      FileType = 7
	MostlyQ5_0      FileType = 8
	MostlyQ5_1      FileType = 9
	MostlyQ2_K      FileType = 10
	MostlyQ3_K_S    FileType = 11
	MostlyQ3_K_M    FileType = 12
	MostlyQ3_K_L    FileType = 13
	MostlyQ4_K_S    FileType = 14
	MostlyQ4_K_M    FileType = 15
	MostlyQ5_K_S    FileType = 16
	MostlyQ5_K_M    FileType = 17
	MostlyQ6_K      FileType = 18
	MostlyIQ2_XXS   FileType = 19
	MostlyIQ2_XS    FileType = 20
	MostlyQ2_K_S    FileType = 21
	MostlyIQ3_XS    FileType = 22
	MostlyIQ3_XXS   FileType = 23
	MostlyIQ1_S     FileType = 24
	MostlyIQ4_NL    FileType = 25
	MostlyIQ3_S     FileType = 26
	MostlyIQ3_M     FileType = 27
	MostlyIQ2_S     FileType = 28
	MostlyIQ2_M     FileType = 29
	MostlyIQ4_XS    FileType = 30
	MostlyIQ1_M     FileType = 31
	MostlyBF16      FileType = 32
	MostlyTQ1_0     FileType = 36
	MostlyTQ2_0     FileType = 37
	MostlyMXFP4_MOE FileType = 38
	MostlyQ1_0      FileType = 40
	MostlyQ2_0      FileType = 41
)

// defaultTypes is llama_ftype_get_default_type: the type of every quantizable tensor before the mixture rules.
// LLAMA_FTYPE_MOSTLY_NVFP4 (39) is absent because llama-quantize has no recipe for it either.
var defaultTypes = map[FileType]tensor.DType{
	AllF32: tensor.F32, MostlyF16: tensor.F16, MostlyBF16: tensor.BF16,
	MostlyQ4_0: tensor.Q4_0, MostlyQ4_1: tensor.Q4_1, MostlyQ5_0: tensor.Q5_0, MostlyQ5_1: tensor.Q5_1,
	MostlyQ8_0: tensor.Q8_0, MostlyQ1_0: tensor.Q1_0, MostlyQ2_0: tensor.Q2_0, MostlyMXFP4_MOE: tensor.MXFP4,
	MostlyQ2_K: tensor.Q2_K, MostlyQ2_K_S: tensor.Q2_K,
	MostlyQ3_K_S: tensor.Q3_K, MostlyQ3_K_M: tensor.Q3_K, MostlyQ3_K_L: tensor.Q3_K,
	MostlyQ4_K_S: tensor.Q4_K, MostlyQ4_K_M: tensor.Q4_K,
	MostlyQ5_K_S: tensor.Q5_K, MostlyQ5_K_M: tensor.Q5_K,
	MostlyQ6_K:  tensor.Q6_K,
	MostlyTQ1_0: tensor.TQ1_0, MostlyTQ2_0: tensor.TQ2_0,
	MostlyIQ2_XXS: tensor.IQ2_XXS, MostlyIQ2_XS: tensor.IQ2_XS, MostlyIQ2_S: tensor.IQ2_XS, MostlyIQ2_M: tensor.IQ2_S,
	MostlyIQ3_XXS: tensor.IQ3_XXS, MostlyIQ3_XS: tensor.IQ3_S, MostlyIQ3_S: tensor.IQ3_S, MostlyIQ3_M: tensor.IQ3_S,
	MostlyIQ1_S: tensor.IQ1_S, MostlyIQ1_M: tensor.IQ1_M,
	MostlyIQ4_NL: tensor.IQ4_NL, MostlyIQ4_XS: tensor.IQ4_XS,
}

// DefaultType is the tensor type a file type quantizes to before its mixture rules (Q4_K for Q4_K_M).
func (f FileType) DefaultType() (tensor.DType, error) {
	t, ok := defaultTypes[f]
	if !ok {
		return tensor.Invalid, fmt.Errorf("quant: file type %d has no llama-quantize recipe", uint32(f))
	}
	return t, nil
}

// ModelInfo is what the mixture rules read from a model's hyper-parameters (llama_hparams, llama_model::arch).
type ModelInfo struct {
	Arch    string // general.architecture: "llama", "falcon", ...
	Layers  int    // block_count
	Heads   int    // attention.head_count (of layer 0)
	HeadsKV int    // attention.head_count_kv (of layer 0)
	Experts int    // expert_count, 0 for dense models
}

// gqa is hparams.n_gqa(): integer heads per KV head, 0 without KV heads.
func (m ModelInfo) gqa() int {
	if m.HeadsKV <= 0 {
		return 0
	}
	return m.Heads / m.HeadsKV
}

// is70B says whether llama.cpp's load_hparams gives the model type LLM_TYPE_70B, the only size the mixture rules
// look at. The architectures that map a layer count to 70B are llama (80 layers with GQA; an 8-expert llama is
// 8x7B/8x22B instead), deci and qwen2 (80 layers) and jais2 (68 layers).
func (m ModelInfo) is70B() bool {
	switch m.Arch {
	case "llama":
		return m.Experts != 8 && m.Layers == 80 && m.Heads != m.HeadsKV
	case "deci", "qwen2":
		return m.Layers == 80
	case "jais2":
		return m.Layers == 68
	}
	return false
}

// TensorInfo is one tensor of the model to plan. Shape is row-major, outermost dimension first, as everywhere in
// lathe: ggml's ne[0] (the row length that block sizes apply to) is Shape[len(Shape)-1], and ne[2] (the expert
// index of a 3-D MoE tensor) is Shape[len(Shape)-3].
type TensorInfo struct {
	Name  string
	Shape tensor.Shape
	DType tensor.DType
}

// Ne returns ggml's ne[i]: Shape[len(Shape)-1-i], and 1 beyond the tensor's dimensions.
func (t TensorInfo) Ne(i int) int64 {
	if i >= len(t.Shape) {
		return 1
	}
	return t.Shape[len(t.Shape)-1-i]
}

// Dims is ggml_n_dims: the number of dimensions up to the last one larger than 1, at least 1. A [1, 256] tensor
// is 1-D for ggml.
func (t TensorInfo) Dims() int {
	for i := len(t.Shape) - 1; i >= 1; i-- {
		if t.Ne(i) > 1 {
			return i + 1
		}
	}
	return 1
}

// TensorTypeRule is one --tensor-type NAME=TYPE option: tensors whose name the pattern matches anywhere get Type.
type TensorTypeRule struct {
	Pattern *regexp.Regexp
	Type    tensor.DType
}

// ParseTensorTypeRule parses "PATTERN=TYPE" as quantize.cpp's parse_tensor_type does: the pattern is lower-cased
// byte by byte before it is compiled (so `\D` becomes `\d`, exactly as there) and TYPE is a ggml type name in any
// case. The pattern is a Go regular expression; std::regex's ECMAScript syntax agrees with it except for
// back-references and look-arounds, which are rejected here.
func ParseTensorTypeRule(s string) (TensorTypeRule, error) {
	pat, typ, ok := strings.Cut(s, "=")
	switch {
	case !ok:
		return TensorTypeRule{}, fmt.Errorf("quant: tensor type %q: want NAME=TYPE", s)
	case pat == "":
		return TensorTypeRule{}, fmt.Errorf("quant: tensor type %q: missing tensor name", s)
	case typ == "":
		return TensorTypeRule{}, fmt.Errorf("quant: tensor type %q: missing quantization type", s)
	}
	re, err := regexp.Compile(asciiLower(pat))
	if err != nil {
		return TensorTypeRule{}, fmt.Errorf("quant: tensor type %q: %w", s, err)
	}
	t, err := parseTargetType(typ)
	if err != nil {
		return TensorTypeRule{}, fmt.Errorf("quant: tensor type %q: %w", s, err)
	}
	return TensorTypeRule{Pattern: re, Type: t}, nil
}

// ParseTargetType parses a ggml type name for --output-tensor-type and --token-embedding-type: a type a tensor
// can be quantized or converted to.
func ParseTargetType(name string) (tensor.DType, error) {
	t, err := parseTargetType(name)
	if err != nil {
		return tensor.Invalid, fmt.Errorf("quant: %w", err)
	}
	return t, nil
}

func parseTargetType(name string) (tensor.DType, error) {
	t, err := tensor.ParseDType(name)
	if err != nil {
		return tensor.Invalid, err
	}
	if !canTarget(t) {
		return tensor.Invalid, fmt.Errorf("%s is not a type tensors can be quantized to", t)
	}
	return t, nil
}

// canTarget: ggml_quantize_chunk handles F32 by copying, everything else through a registered encoder.
func canTarget(t tensor.DType) bool { return t == tensor.F32 || CanEncode(t) }

// asciiLower is std::transform(..., tolower) in the C locale: only A–Z change.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Recipe is a llama-quantize invocation's type choices: the file type and the options that change per-tensor
// types. Invalid (zero) OutputType and TokenEmbeddingType leave the choice to the recipe.
type Recipe struct {
	FileType           FileType
	OutputType         tensor.DType     // --output-tensor-type
	TokenEmbeddingType tensor.DType     // --token-embedding-type
	TensorTypes        []TensorTypeRule // --tensor-type, first match wins
	Pure               bool             // --pure: no mixture rules
	LeaveOutput        bool             // --leave-output-tensor: output.weight keeps its type
	HasImatrix         bool             // an importance matrix will be given; some rules depend on it
}

// Choice is the recipe's decision for one tensor.
type Choice struct {
	Name  string
	Shape tensor.Shape
	From  tensor.DType // the tensor's type now
	To    tensor.DType // its type in the output; From when it is not quantized
	// RequiresImatrix is tensor_requires_imatrix: llama-quantize refuses to make this tensor without one.
	RequiresImatrix bool
	// Fallback says the chosen type did not fit the row length and tensor_type_fallback replaced it.
	Fallback bool
}

// Plan chooses a type for every tensor. The result is in llama-quantize's processing order, which is also the
// order of tensors in its output file (SortTensors); the attn_v and ffn_down counters of the mixture rules run in
// that order.
func (r Recipe) Plan(m ModelInfo, tensors []TensorInfo) ([]Choice, error) {
	def, err := r.FileType.DefaultType()
	if err != nil {
		return nil, err
	}
	for _, t := range []tensor.DType{r.OutputType, r.TokenEmbeddingType} {
		if t != tensor.Invalid && !canTarget(t) {
			return nil, fmt.Errorf("quant: %s is not a type tensors can be quantized to", t)
		}
	}
	for _, rule := range r.TensorTypes {
		if rule.Pattern == nil || !canTarget(rule.Type) {
			return nil, fmt.Errorf("quant: invalid tensor type rule %v=%s", rule.Pattern, rule.Type)
		}
	}
	sorted := SortTensors(tensors)
	s := &mixState{r: &r, m: m, gqa: m.gqa(), is70B: m.is70B(), tied: true, nFFN: m.Layers}
	for _, t := range sorted {
		switch categorize(t.Name) {
		case catAttnV, catAttnQKV, catAttnKVB:
			s.nAttnV++
		case catOutput:
			s.tied = false
		}
	}
	out := make([]Choice, len(sorted))
	for i, t := range sorted {
		c := Choice{Name: t.Name, Shape: t.Shape, From: t.DType, To: t.DType}
		if r.allowsQuantization(t) {
			if c.To, c.Fallback, err = s.tensorType(t, def); err != nil {
				return nil, fmt.Errorf("quant: tensor %q: %w", t.Name, err)
			}
			c.RequiresImatrix = requiresImatrix(t.Name, c.To, r.FileType)
		}
		out[i] = c
	}
	return out, nil
}

// SortTensors returns the tensors in the order of llama_model_loader's weights_map (weight_name_comparer): tensors
// outside the blk.N. layers first, then layer by layer, names byte-wise ascending within a layer.
func SortTensors(tensors []TensorInfo) []TensorInfo {
	out := slices.Clone(tensors)
	slices.SortStableFunc(out, func(a, b TensorInfo) int { return CompareNames(a.Name, b.Name) })
	return out
}

// CompareNames is weight_name_comparer as a three-way comparison.
func CompareNames(a, b string) int {
	la, lb := layerOrNone(a), layerOrNone(b)
	if la != lb {
		if la < lb {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}

// layerOrNone is the layer of a tensor as the comparer sees it: -1 outside the blk.N. layers.
func layerOrNone(name string) int32 {
	if l, ok := blockNumber(name); ok {
		return l
	}
	return -1
}

// blockNumber is sscanf(name, "blk.%d.", &layer) == 1. As with sscanf the number counts even when the dot after
// it is missing, leading white space and a sign are accepted, and glibc's conversion saturates to a long and then
// keeps the low 32 bits for the int.
func blockNumber(name string) (int32, bool) {
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok {
		return 0, false
	}
	rest = strings.TrimLeft(rest, " \t\n\v\f\r")
	neg := false
	if rest != "" && (rest[0] == '+' || rest[0] == '-') {
		neg = rest[0] == '-'
		rest = rest[1:]
	}
	var v uint64
	digits := 0
	for ; digits < len(rest) && '0' <= rest[digits] && rest[digits] <= '9'; digits++ {
		if v <= math.MaxInt64 {
			v = v*10 + uint64(rest[digits]-'0')
		}
	}
	if digits == 0 {
		return 0, false
	}
	var l int64
	switch {
	case v > math.MaxInt64 && neg:
		l = math.MinInt64
	case v > math.MaxInt64:
		l = math.MaxInt64
	case neg:
		l = -int64(v)
	default:
		l = int64(v)
	}
	return int32(l), true
}

// category is llama-quant.cpp's tensor_category: broad roles found by name substrings, tested in this order.
type category uint8

const (
	catOther category = iota
	catTokenEmbd
	catAttnQ
	catAttnV
	catAttnK
	catAttnQKV
	catAttnKVB
	catAttnOutput
	catFFNUp
	catFFNGate
	catFFNDown
	catOutput
)

// categorize is tensor_get_category.
func categorize(name string) category {
	switch {
	case name == "output.weight":
		return catOutput
	case isTokenEmbd(name):
		return catTokenEmbd
	case strings.Contains(name, "attn_qkv.weight"):
		return catAttnQKV
	case strings.Contains(name, "attn_kv_b.weight"):
		return catAttnKVB
	case strings.Contains(name, "attn_v.weight"):
		return catAttnV
	case strings.Contains(name, "attn_k.weight"):
		return catAttnK
	case strings.Contains(name, "attn_q.weight"):
		return catAttnQ
	case strings.Contains(name, "attn_output.weight"):
		return catAttnOutput
	case strings.Contains(name, "ffn_up"):
		return catFFNUp
	case strings.Contains(name, "ffn_gate"):
		return catFFNGate
	case strings.Contains(name, "ffn_down"):
		return catFFNDown
	}
	return catOther
}

func isTokenEmbd(name string) bool {
	return name == "token_embd.weight" || name == "per_layer_token_embd.weight"
}

// neverQuantized lists the name substrings of tensor_allows_quantization: router, small, positional and
// multimodal tensors that stay in their type.
var neverQuantized = []string{
	"_norm.weight",
	"ffn_gate_inp.weight", "ffn_gate_tid2eid.weight",
	"altup", "laurel", "per_layer_model_proj",
	"ssm_conv1d", "shortconv.conv.weight",
	"indexer.k_proj.weight", "indexer.q_proj.weight",
	"time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
	"time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight", "time_mix_a1.weight",
	"time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight", "time_mix_decay_w1.weight",
	"time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
	"attn_rel_b.weight",
	".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger",
	"a.rvq.codebook", "mm.a.code_embd",
}

// allowsQuantization is tensor_allows_quantization.
func (r *Recipe) allowsQuantization(t TensorInfo) bool {
	if t.Dims() < 2 {
		return false
	}
	n := t.Name
	// `name.rfind("weight") == name.size() - 6` also holds for every 5-byte name: both sides are npos then.
	if !strings.HasSuffix(n, "weight") && len(n) != 5 {
		return false
	}
	if r.LeaveOutput && n == "output.weight" {
		return false
	}
	// LLM_TN(arch)(LLM_TENSOR_POS_EMBD / LLM_TENSOR_TOKEN_TYPES, "weight") name these for every architecture.
	if n == "position_embd.weight" || n == "token_types.weight" {
		return false
	}
	for _, s := range neverQuantized {
		if strings.Contains(n, s) {
			return false
		}
	}
	return true
}

// requiresImatrix is tensor_requires_imatrix.
func requiresImatrix(name string, t tensor.DType, f FileType) bool {
	if isTokenEmbd(name) || name == "output.weight" {
		return false
	}
	switch t {
	case tensor.IQ3_XXS, tensor.IQ2_XXS, tensor.IQ2_XS, tensor.IQ2_S, tensor.IQ1_M, tensor.IQ1_S:
		return true
	case tensor.Q2_K:
		return f == MostlyQ2_K_S
	}
	return false
}

// mixState is quantize_state_impl: the counters the mixture rules advance as tensors are visited.
type mixState struct {
	r     *Recipe
	m     ModelInfo
	gqa   int
	is70B bool
	tied  bool // no output.weight: token_embd doubles as the output

	nAttnV, iAttnV             int
	nFFN                       int // n_ffn_down = n_ffn_gate = n_ffn_up = n_layer
	iFFNDown, iFFNGate, iFFNUp int
}

// tensorType is llama_tensor_get_type for a quantizable tensor.
func (s *mixState) tensorType(t TensorInfo, def tensor.DType) (tensor.DType, bool, error) {
	cat := categorize(t.Name)
	if s.r.TokenEmbeddingType != tensor.Invalid && cat == catTokenEmbd {
		return s.r.TokenEmbeddingType, false, nil
	}
	if s.r.OutputType != tensor.Invalid && cat == catOutput {
		return s.r.OutputType, false, nil
	}
	if !def.IsQuantized() {
		return def, false, nil
	}
	typ, manual := def, false
	for _, rule := range s.r.TensorTypes {
		if rule.Pattern.MatchString(t.Name) {
			typ, manual = rule.Type, true
			break
		}
	}
	if !manual && !s.r.Pure {
		var err error
		if typ, err = s.mixture(t, cat, typ); err != nil {
			return tensor.Invalid, false, err
		}
	}
	return fallback(t, typ)
}

// errNoFallback is tensor_type_fallback's failure: a row length the type cannot hold and no replacement defined.
var errNoFallback = errors.New("no fallback type")

// fallback is tensor_type_fallback: a type whose blocks do not divide the row length is replaced by a type with
// 32-element blocks, and by F16 when even that does not fit.
func fallback(t TensorInfo, typ tensor.DType) (tensor.DType, bool, error) {
	ncols := t.Ne(0)
	if ncols%int64(typ.BlockSize()) == 0 {
		return typ, false, nil
	}
	var alt tensor.DType
	switch typ {
	case tensor.IQ1_S, tensor.IQ1_M, tensor.IQ2_XXS, tensor.IQ2_XS, tensor.IQ2_S, tensor.IQ3_XXS, tensor.IQ3_S,
		tensor.IQ4_XS:
		alt = tensor.IQ4_NL
	case tensor.Q2_0, tensor.Q2_K, tensor.Q3_K, tensor.TQ1_0, tensor.TQ2_0:
		alt = tensor.Q4_0
	case tensor.Q4_K:
		alt = tensor.Q5_0
	case tensor.Q5_K:
		alt = tensor.Q5_1
	case tensor.Q6_K:
		alt = tensor.Q8_0
	default:
		return tensor.Invalid, false, fmt.Errorf("%w for %s: rows of %d elements are not whole blocks of %d",
			errNoFallback, typ, ncols, typ.BlockSize())
	}
	if ncols%int64(alt.BlockSize()) != 0 {
		alt = tensor.F16
	}
	return alt, true, nil
}

// layer is layer_info: for a dense model the counter of tensors of the kind seen so far, for a MoE model (whose
// expert tensors need not be consecutive) the layer number in the name.
func (s *mixState) layer(counter int, name string) (int, error) {
	if max(1, s.m.Experts) == 1 {
		return counter, nil
	}
	l32, ok := blockNumber(name)
	if !ok {
		return 0, fmt.Errorf("failed to determine the layer of a tensor of a %d-expert model", s.m.Experts)
	}
	if l := int(l32); l < 0 || l >= s.nFFN {
		return 0, fmt.Errorf("bad layer %d; must be in [0, %d)", l, s.nFFN)
	}
	return int(l32), nil
}

// useMoreBits picks the first and last eighth of the layers and every third one in between.
func useMoreBits(i, n int) bool {
	return i < n/8 || i >= 7*n/8 || (i-n/8)%3 == 2
}

// mixture is llama_tensor_get_type_impl: the per-file-type rules that give sensitive tensors more bits.
func (s *mixState) mixture(t TensorInfo, cat category, typ tensor.DType) (tensor.DType, error) {
	f, m := s.r.FileType, s.m
	falcon := m.Arch == "falcon"
	is := func(fs ...FileType) bool { return slices.Contains(fs, f) }
	iq12 := is(MostlyIQ2_XXS, MostlyIQ2_XS, MostlyIQ1_S, MostlyIQ2_S, MostlyIQ2_M, MostlyIQ1_M)
	attnV := cat == catAttnV || cat == catAttnQKV || cat == catAttnKVB
	switch {
	case cat == catOutput || s.tied && cat == catTokenEmbd:
		switch {
		case s.r.OutputType != tensor.Invalid:
			typ = s.r.OutputType
		case f == MostlyMXFP4_MOE:
			typ = tensor.Q8_0
		case falcon || t.Ne(0)%int64(typ.BlockSize()) != 0:
			typ = tensor.Q8_0
		case is(MostlyIQ2_XXS, MostlyIQ2_XS, MostlyIQ3_XXS, MostlyIQ1_S, MostlyIQ2_S, MostlyIQ2_M, MostlyIQ1_M):
			typ = tensor.Q5_K
		case typ != tensor.Q8_0:
			typ = tensor.Q6_K
		}
	case f == MostlyMXFP4_MOE:
		if t.Ne(2) > 1 {
			typ = tensor.MXFP4
		} else {
			typ = tensor.Q8_0
		}
	case cat == catTokenEmbd:
		switch {
		case s.r.TokenEmbeddingType != tensor.Invalid:
			typ = s.r.TokenEmbeddingType
		case is(MostlyIQ2_XXS, MostlyIQ2_XS, MostlyIQ1_S, MostlyIQ1_M):
			typ = tensor.Q2_K
		case is(MostlyIQ2_S, MostlyIQ2_M, MostlyIQ3_XXS):
			typ = tensor.IQ3_S
		case is(MostlyTQ1_0, MostlyTQ2_0, MostlyQ2_0):
			typ = tensor.Q4_K
		}
	case iq12:
		iq2sm := is(MostlyIQ2_S, MostlyIQ2_M)
		switch {
		case attnV:
			switch {
			case s.gqa >= 4 || m.Experts >= 4:
				typ = tensor.Q4_K
			case iq2sm:
				typ = tensor.IQ3_S
			default:
				typ = tensor.Q2_K
			}
			s.iAttnV++
		case m.Experts == 8 && cat == catAttnK:
			typ = tensor.Q4_K
		case cat == catFFNDown:
			// This branch compares the raw counter even for MoE models, unlike the one below.
			if s.iFFNDown < s.nFFN/8 {
				if iq2sm {
					typ = tensor.IQ3_S
				} else {
					typ = tensor.Q2_K
				}
			}
			s.iFFNDown++
		case cat == catAttnOutput:
			switch {
			case m.Experts == 8:
				typ = tensor.Q5_K
			case is(MostlyIQ1_S, MostlyIQ1_M):
				typ = tensor.IQ2_XXS
			case iq2sm:
				typ = tensor.IQ3_S
			}
		}
	case attnV:
		switch {
		case f == MostlyQ2_K:
			typ = tensor.Q3_K
			if s.gqa >= 4 {
				typ = tensor.Q4_K
			}
		case f == MostlyQ2_K_S && s.gqa >= 4:
			typ = tensor.Q4_K
		case f == MostlyIQ3_XXS:
			switch {
			case s.gqa >= 4:
				typ = tensor.Q4_K
			case !s.r.HasImatrix:
				typ = tensor.IQ3_S
			default:
				typ = tensor.IQ3_XXS
			}
		case is(MostlyIQ3_XS, MostlyIQ3_S) && s.gqa >= 4:
			typ = tensor.Q4_K
		case f == MostlyIQ3_M:
			typ = tensor.Q4_K
		case f == MostlyQ3_K_M:
			typ = tensor.Q4_K
			if s.iAttnV < 2 {
				typ = tensor.Q5_K
			}
		case f == MostlyQ3_K_L:
			typ = tensor.Q5_K
		case is(MostlyIQ4_NL, MostlyIQ4_XS) && s.gqa >= 4:
			typ = tensor.Q5_K
		case is(MostlyQ4_K_M, MostlyQ5_K_M) && useMoreBits(s.iAttnV, s.nAttnV):
			typ = tensor.Q6_K
		case f == MostlyQ4_K_S && s.iAttnV < 4:
			typ = tensor.Q5_K
		}
		// 70B models share each attn_v among 8 heads, so it is 8× smaller than attn_q and cheap to widen.
		if s.is70B && (typ == tensor.Q3_K || typ == tensor.Q4_K) {
			typ = tensor.Q5_K
		}
		if m.Experts == 8 {
			typ = tensor.Q8_0
		}
		s.iAttnV++
	case cat == catAttnK:
		switch {
		case m.Experts == 8:
			typ = tensor.Q8_0
		case f == MostlyIQ3_XS:
			typ = tensor.IQ3_XXS
		case f == MostlyIQ3_XXS:
			typ = tensor.IQ2_S
		}
	case cat == catAttnQ:
		switch f {
		case MostlyIQ3_XS:
			typ = tensor.IQ3_XXS
		case MostlyIQ3_XXS:
			typ = tensor.IQ2_S
		}
	case cat == catFFNDown:
		i, err := s.layer(s.iFFNDown, t.Name)
		if err != nil {
			return tensor.Invalid, err
		}
		n := s.nFFN
		switch {
		case f == MostlyQ2_K:
			typ = tensor.Q3_K
		case f == MostlyQ2_K_S:
			if i < n/8 {
				typ = tensor.Q4_K
			}
		case f == MostlyIQ3_XXS && !s.r.HasImatrix:
			typ = tensor.Q3_K
			if i < n/8 {
				typ = tensor.Q4_K
			}
		case f == MostlyQ3_K_M:
			switch {
			case i < n/16:
				typ = tensor.Q5_K
			case !falcon || useMoreBits(i, n):
				typ = tensor.Q4_K
			default:
				typ = tensor.Q3_K
			}
		case f == MostlyIQ3_M && (i < n/8 || m.Experts == 8 && useMoreBits(i, n)):
			typ = tensor.Q4_K
		case f == MostlyQ3_K_L:
			typ = tensor.Q5_K
			if falcon {
				typ = tensor.Q4_K
			}
		case f == MostlyQ4_K_M:
			switch {
			case !falcon:
				if useMoreBits(i, n) {
					typ = tensor.Q6_K
				}
			case i < n/16:
				typ = tensor.Q6_K
			case useMoreBits(i, n):
				typ = tensor.Q5_K
			default:
				typ = tensor.Q4_K
			}
		case i < n/8 && is(MostlyIQ4_NL, MostlyIQ4_XS) && !s.r.HasImatrix:
			typ = tensor.Q5_K
		case f == MostlyQ5_K_M && useMoreBits(i, n):
			typ = tensor.Q6_K
		case f == MostlyQ4_K_S && !falcon && i < n/8:
			typ = tensor.Q5_K
		case is(MostlyQ4_0, MostlyQ5_0) && s.r.HasImatrix && i < n/8:
			// Guards the first ffn_down layers, which misbehave even with an imatrix; only then, so that a run
			// without one reproduces the old result.
			typ = tensor.Q5_1
			if f == MostlyQ4_0 {
				typ = tensor.Q4_1
			}
		}
		s.iFFNDown++
	case cat == catAttnOutput:
		switch {
		case falcon:
			if f == MostlyQ3_K_L {
				typ = tensor.Q4_K
			}
		case m.Experts == 8:
			if is(MostlyQ2_K, MostlyIQ3_XS, MostlyIQ3_XXS, MostlyQ3_K_S, MostlyQ3_K_M, MostlyIQ4_NL, MostlyQ4_K_S,
				MostlyQ4_K_M, MostlyIQ3_S, MostlyIQ3_M, MostlyIQ4_XS) {
				typ = tensor.Q5_K
			}
		case f == MostlyQ2_K:
			typ = tensor.Q3_K
		case f == MostlyIQ3_XXS:
			typ = tensor.IQ3_S
		case f == MostlyQ3_K_M, f == MostlyIQ3_M:
			typ = tensor.Q4_K
		case f == MostlyQ3_K_L:
			typ = tensor.Q5_K
		}
	// llama_tensor_get_type_impl's ATTENTION_QKV branch is unreachable: attn_qkv is attn_v-like above.
	case cat == catFFNGate || cat == catFFNUp:
		counter := &s.iFFNGate
		if cat == catFFNUp {
			counter = &s.iFFNUp
		}
		i, err := s.layer(*counter, t.Name)
		if err != nil {
			return tensor.Invalid, err
		}
		if f == MostlyIQ3_XS && i >= s.nFFN/8 && i < 7*s.nFFN/8 {
			typ = tensor.IQ3_XXS
		}
		*counter++
	}
	return typ, nil
}
