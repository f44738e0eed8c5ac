package quant_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/tensor"
)

// The expectations below are written out from llama-quantize's rules as ../shared/reference/formats-quant.md
// §3.2–3.4 states them (checked against llama.cpp src/llama-quant.cpp), not computed: layer sets such as
// useMoreBits32 are enumerated by hand.

// useMoreBits32 is use_more_bits(i, 32): i < 4, i >= 28, or (i-4)%3 == 2.
var useMoreBits32 = []int{0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}

// model builds the tensors of a Llama-style model with the given number of layers, in the order convert_hf_to_gguf
// writes them (which is not llama-quantize's order). Shapes are row-major: [rows, row length].
func model(layers int, tied bool) []quant.TensorInfo {
	const embd, ff, kv, vocab = 512, 1024, 128, 1000
	var ts []quant.TensorInfo
	add := func(name string, shape ...int64) {
		ts = append(ts, quant.TensorInfo{Name: name, Shape: shape, DType: tensor.F16})
	}
	if !tied {
		add("output.weight", vocab, embd)
	}
	add("token_embd.weight", vocab, embd)
	for i := range layers {
		p := fmt.Sprintf("blk.%d.", i)
		add(p+"attn_norm.weight", embd)
		add(p+"ffn_down.weight", embd, ff)
		add(p+"ffn_gate.weight", ff, embd)
		add(p+"ffn_up.weight", ff, embd)
		add(p+"ffn_norm.weight", embd)
		add(p+"attn_k.weight", kv, embd)
		add(p+"attn_output.weight", embd, embd)
		add(p+"attn_q.weight", embd, embd)
		add(p+"attn_v.weight", kv, embd)
	}
	add("output_norm.weight", embd)
	return ts
}

// kindOf splits "blk.7.attn_v.weight" into ("attn_v", 7); tensors outside layers get layer -1.
func kindOf(name string) (string, int) {
	name = strings.TrimSuffix(name, ".weight")
	if rest, ok := strings.CutPrefix(name, "blk."); ok {
		num, kind, _ := strings.Cut(rest, ".")
		l, _ := strconv.Atoi(num)
		return kind, l
	}
	return name, -1
}

func typeSet(in []int, yes, no tensor.DType) func(int) tensor.DType {
	return func(l int) tensor.DType {
		if slices.Contains(in, l) {
			return yes
		}
		return no
	}
}

func below(n int, yes, no tensor.DType) func(int) tensor.DType {
	return func(l int) tensor.DType {
		if l < n {
			return yes
		}
		return no
	}
}

func always(t tensor.DType) func(int) tensor.DType { return func(int) tensor.DType { return t } }

// checkPlan compares every choice with want[kind](layer), norms being expected to stay F16 (their input type).
func checkPlan(t *testing.T, got []quant.Choice, want map[string]func(int) tensor.DType) {
	t.Helper()
	for _, c := range got {
		kind, layer := kindOf(c.Name)
		exp := tensor.F16
		if f, ok := want[kind]; ok {
			exp = f(layer)
		} else if !strings.HasSuffix(kind, "norm") {
			t.Fatalf("no expectation for %s", c.Name)
		}
		if c.To != exp {
			t.Errorf("%s: got %s, want %s", c.Name, c.To, exp)
		}
	}
}

func TestRecipeMixtures(t *testing.T) {
	gqa4 := quant.ModelInfo{Arch: "llama", Layers: 32, Heads: 32, HeadsKV: 8}
	mha := quant.ModelInfo{Arch: "llama", Layers: 32, Heads: 32, HeadsKV: 32}
	cases := []struct {
		name    string
		recipe  quant.Recipe
		info    quant.ModelInfo
		layers  int
		tied    bool
		want    map[string]func(int) tensor.DType
		imatrix func(kind string, layer int) bool // which tensors RequiresImatrix; nil: none
	}{
		{
			// §3.4 Q4_K_M: attn_v and ffn_down → Q6_K where use_more_bits; output → Q6_K.
			name: "Q4_K_M", recipe: quant.Recipe{FileType: quant.MostlyQ4_K_M}, info: gqa4, layers: 32,
			want: map[string]func(int) tensor.DType{
				"output": always(tensor.Q6_K), "token_embd": always(tensor.Q4_K),
				"attn_v": typeSet(useMoreBits32, tensor.Q6_K, tensor.Q4_K), "ffn_down": typeSet(useMoreBits32, tensor.Q6_K, tensor.Q4_K),
				"attn_q": always(tensor.Q4_K), "attn_k": always(tensor.Q4_K), "attn_output": always(tensor.Q4_K),
				"ffn_gate": always(tensor.Q4_K), "ffn_up": always(tensor.Q4_K),
			},
		},
		{
			// Q3_K_M: attn_v first 2 → Q5_K else Q4_K; ffn_down i < n/16 → Q5_K else Q4_K; attn_output → Q4_K.
			name: "Q3_K_M", recipe: quant.Recipe{FileType: quant.MostlyQ3_K_M}, info: gqa4, layers: 32,
			want: map[string]func(int) tensor.DType{
				"output": always(tensor.Q6_K), "token_embd": always(tensor.Q3_K),
				"attn_v": below(2, tensor.Q5_K, tensor.Q4_K), "ffn_down": below(2, tensor.Q5_K, tensor.Q4_K),
				"attn_output": always(tensor.Q4_K),
				"attn_q":      always(tensor.Q3_K), "attn_k": always(tensor.Q3_K), "ffn_gate": always(tensor.Q3_K), "ffn_up": always(tensor.Q3_K),
			},
		},
		{
			// Q2_K: attn_v → Q4_K with gqa >= 4; ffn_down and attn_output → Q3_K.
			name: "Q2_K GQA", recipe: quant.Recipe{FileType: quant.MostlyQ2_K}, info: gqa4, layers: 32,
			want: map[string]func(int) tensor.DType{
				"output": always(tensor.Q6_K), "token_embd": always(tensor.Q2_K),
				"attn_v": always(tensor.Q4_K), "ffn_down": always(tensor.Q3_K), "attn_output": always(tensor.Q3_K),
				"attn_q": always(tensor.Q2_K), "attn_k": always(tensor.Q2_K), "ffn_gate": always(tensor.Q2_K), "ffn_up": always(tensor.Q2_K),
			},
		},
		{
			name: "Q2_K MHA", recipe: quant.Recipe{FileType: quant.MostlyQ2_K}, info: mha, layers: 32,
			want: map[string]func(int) tensor.DType{
				"output": always(tensor.Q6_K), "token_embd": always(tensor.Q2_K),
				"attn_v": always(tensor.Q3_K), "ffn_down": always(tensor.Q3_K), "attn_output": always(tensor.Q3_K),
				"attn_q": always(tensor.Q2_K), "attn_k": always(tensor.Q2_K), "ffn_gate": always(tensor.Q2_K), "ffn_up": always(tensor.Q2_K),
			},
		},
		{
			// IQ2_XXS: attn_v → Q4_K (gqa >= 4); ffn_down i < n/8 → Q2_K; token_embd → Q2_K; output → Q5_K.
			name: "IQ2_XXS", recipe: quant.Recipe{FileType: quant.MostlyIQ2_XXS, HasImatrix: true}, info: gqa4, layers: 32,
			want: map[string]func(int) tensor.DType{
				"output": always(tensor.Q5_K), "token_embd": always(tensor.Q2_K),
				"attn_v": always(tensor.Q4_K), "ffn_down": below(4, tensor.Q2_K, tensor.IQ2_XXS),
				"attn_output": always(tensor.IQ2_XXS), "attn_q": always(tensor.IQ2_XXS), "attn_k": always(tensor.IQ2_XXS),
				"ffn_gate": always(tensor.IQ2_XXS), "ffn_up": always(tensor.IQ2_XXS),
			},
			// IQ2_XXS needs one; Q2_K and Q4_K do not (§2.3 tensor_requires_imatrix), token_embd/output never.
			imatrix: func(k string, l int) bool {
				return !(k == "attn_v" || k == "ffn_down" && l < 4 || k == "token_embd" || k == "output")
			},
		},
		{
			// IQ3_XXS without imatrix: attn_v → IQ3_S (gqa < 4); attn_q/k → IQ2_S; ffn_down Q4_K (i < n/8) else
			// Q3_K; attn_output and token_embd → IQ3_S; output → Q5_K.
			name: "IQ3_XXS no imatrix", recipe: quant.Recipe{FileType: quant.MostlyIQ3_XXS}, info: mha, layers: 32,
			want: map[string]func(int) tensor.DType{
				"output": always(tensor.Q5_K), "token_embd": always(tensor.IQ3_S),
				"attn_v": always(tensor.IQ3_S), "ffn_down": below(4, tensor.Q4_K, tensor.Q3_K),
				"attn_output": always(tensor.IQ3_S), "attn_q": always(tensor.IQ2_S), "attn_k": always(tensor.IQ2_S),
				"ffn_gate": always(tensor.IQ3_XXS), "ffn_up": always(tensor.IQ3_XXS),
			},
			imatrix: func(k string, _ int) bool {
				return slices.Contains([]string{"attn_q", "attn_k", "ffn_gate", "ffn_up"}, k)
			},
		},
		{
			name: "IQ3_XXS imatrix", recipe: quant.Recipe{FileType: quant.MostlyIQ3_XXS, HasImatrix: true}, info: mha, layers: 32,
			want: map[string]func(int) tensor.DType{
				"output": always(tensor.Q5_K), "token_embd": always(tensor.IQ3_S),
				"attn_v": always(tensor.IQ3_XXS), "ffn_down": always(tensor.IQ3_XXS),
				"attn_output": always(tensor.IQ3_S), "attn_q": always(tensor.IQ2_S), "attn_k": always(tensor.IQ2_S),
				"ffn_gate": always(tensor.IQ3_XXS), "ffn_up": always(tensor.IQ3_XXS),
			},
			imatrix: func(k string, _ int) bool { return !(k == "attn_output" || k == "token_embd" || k == "output") },
		},
		{
			// IQ3_XS (default IQ3_S): attn_q/k → IQ3_XXS; ffn_gate/up for n/8 <= i < 7n/8 → IQ3_XXS.
			name: "IQ3_XS", recipe: quant.Recipe{FileType: quant.MostlyIQ3_XS}, info: gqa4, layers: 32,
			want: map[string]func(int) tensor.DType{
				"output": always(tensor.Q6_K), "token_embd": always(tensor.IQ3_S),
				"attn_v": always(tensor.Q4_K), "ffn_down": always(tensor.IQ3_S), "attn_output": always(tensor.IQ3_S),
				"attn_q": always(tensor.IQ3_XXS), "attn_k": always(tensor.IQ3_XXS),
				"ffn_gate": func(l int) tensor.DType {
					if l >= 4 && l < 28 {
						return tensor.IQ3_XXS
					}
					return tensor.IQ3_S
				},
				"ffn_up": func(l int) tensor.DType {
					if l >= 4 && l < 28 {
						return tensor.IQ3_XXS
					}
					return tensor.IQ3_S
				},
			},
			imatrix: func(k string, l int) bool {
				return k == "attn_q" || k == "attn_k" || (k == "ffn_gate" || k == "ffn_up") && l >= 4 && l < 28
			},
		},
		{
			// Q2_K_S: attn_v → Q4_K with gqa >= 4, ffn_down i < n/8 → Q4_K; its Q2_K tensors need an imatrix.
			name: "Q2_K_S", recipe: quant.Recipe{FileType: quant.MostlyQ2_K_S, HasImatrix: true}, info: gqa4, layers: 32,
			want: map[string]func(int) tensor.DType{
				"output": always(tensor.Q6_K), "token_embd": always(tensor.Q2_K),
				"attn_v": always(tensor.Q4_K), "ffn_down": below(4, tensor.Q4_K, tensor.Q2_K),
				"attn_output": always(tensor.Q2_K), "attn_q": always(tensor.Q2_K), "attn_k": always(tensor.Q2_K),
				"ffn_gate": always(tensor.Q2_K), "ffn_up": always(tensor.Q2_K),
			},
			// Q2_K inside Q2_K_S is the one k-quant that needs an imatrix.
			imatrix: func(k string, l int) bool {
				return !(k == "attn_v" || k == "ffn_down" && l < 4 || k == "token_embd" || k == "output")
			},
		},
		{
			// Q4_0 with imatrix: ffn_down i < n/8 → Q4_1. Without, everything is Q4_0 and output Q6_K.
			name: "Q4_0 imatrix", recipe: quant.Recipe{FileType: quant.MostlyQ4_0, HasImatrix: true}, info: gqa4, layers: 32,
			want: map[string]func(int) tensor.DType{
				"output": always(tensor.Q6_K), "token_embd": always(tensor.Q4_0),
				"attn_v": always(tensor.Q4_0), "ffn_down": below(4, tensor.Q4_1, tensor.Q4_0),
				"attn_output": always(tensor.Q4_0), "attn_q": always(tensor.Q4_0), "attn_k": always(tensor.Q4_0),
				"ffn_gate": always(tensor.Q4_0), "ffn_up": always(tensor.Q4_0),
			},
		},
		{
			// Tied embeddings: token_embd is treated as the output (→ Q6_K); Q8_0 keeps it Q8_0.
			name: "Q4_K_S tied", recipe: quant.Recipe{FileType: quant.MostlyQ4_K_S}, info: gqa4, layers: 32, tied: true,
			want: map[string]func(int) tensor.DType{
				"token_embd": always(tensor.Q6_K),
				"attn_v":     below(4, tensor.Q5_K, tensor.Q4_K), "ffn_down": below(4, tensor.Q5_K, tensor.Q4_K),
				"attn_output": always(tensor.Q4_K), "attn_q": always(tensor.Q4_K), "attn_k": always(tensor.Q4_K),
				"ffn_gate": always(tensor.Q4_K), "ffn_up": always(tensor.Q4_K),
			},
		},
		{
			name: "Q8_0 tied", recipe: quant.Recipe{FileType: quant.MostlyQ8_0}, info: gqa4, layers: 4, tied: true,
			want: map[string]func(int) tensor.DType{
				"token_embd": always(tensor.Q8_0), "attn_v": always(tensor.Q8_0), "ffn_down": always(tensor.Q8_0),
				"attn_output": always(tensor.Q8_0), "attn_q": always(tensor.Q8_0), "attn_k": always(tensor.Q8_0),
				"ffn_gate": always(tensor.Q8_0), "ffn_up": always(tensor.Q8_0),
			},
		},
		{
			// The 70B rule (llama, 80 layers, GQA): attn_v Q3_K/Q4_K → Q5_K. use_more_bits(i, 80): i < 10, i >= 70,
			// (i-10)%3 == 2.
			name: "Q4_K_M 70B", recipe: quant.Recipe{FileType: quant.MostlyQ4_K_M},
			info: quant.ModelInfo{Arch: "llama", Layers: 80, Heads: 64, HeadsKV: 8}, layers: 80,
			want: map[string]func(int) tensor.DType{
				"output": always(tensor.Q6_K), "token_embd": always(tensor.Q4_K),
				"attn_v": func(l int) tensor.DType {
					if l < 10 || l >= 70 || (l-10)%3 == 2 {
						return tensor.Q6_K
					}
					return tensor.Q5_K
				},
				"ffn_down": func(l int) tensor.DType {
					if l < 10 || l >= 70 || (l-10)%3 == 2 {
						return tensor.Q6_K
					}
					return tensor.Q4_K
				},
				"attn_output": always(tensor.Q4_K), "attn_q": always(tensor.Q4_K), "attn_k": always(tensor.Q4_K),
				"ffn_gate": always(tensor.Q4_K), "ffn_up": always(tensor.Q4_K),
			},
		},
		{
			// Falcon: output → Q8_0; Q4_K_M ffn_down Q6_K for i < n/16, Q5_K where use_more_bits, else Q4_K.
			name: "Q4_K_M falcon", recipe: quant.Recipe{FileType: quant.MostlyQ4_K_M},
			info: quant.ModelInfo{Arch: "falcon", Layers: 32, Heads: 32, HeadsKV: 8}, layers: 32,
			want: map[string]func(int) tensor.DType{
				"output": always(tensor.Q8_0), "token_embd": always(tensor.Q4_K),
				"attn_v": typeSet(useMoreBits32, tensor.Q6_K, tensor.Q4_K),
				"ffn_down": func(l int) tensor.DType {
					switch {
					case l < 2:
						return tensor.Q6_K
					case slices.Contains(useMoreBits32, l):
						return tensor.Q5_K
					}
					return tensor.Q4_K
				},
				"attn_output": always(tensor.Q4_K), "attn_q": always(tensor.Q4_K), "attn_k": always(tensor.Q4_K),
				"ffn_gate": always(tensor.Q4_K), "ffn_up": always(tensor.Q4_K),
			},
		},
		{
			// --pure: every quantizable tensor gets the default type, output included.
			name: "Q4_K_M pure", recipe: quant.Recipe{FileType: quant.MostlyQ4_K_M, Pure: true}, info: gqa4, layers: 8,
			want: map[string]func(int) tensor.DType{
				"output": always(tensor.Q4_K), "token_embd": always(tensor.Q4_K), "attn_v": always(tensor.Q4_K),
				"ffn_down": always(tensor.Q4_K), "attn_output": always(tensor.Q4_K), "attn_q": always(tensor.Q4_K),
				"attn_k": always(tensor.Q4_K), "ffn_gate": always(tensor.Q4_K), "ffn_up": always(tensor.Q4_K),
			},
		},
		{
			// A float file type has no mixture: every quantizable tensor becomes F32, norms keep their type.
			name: "F32", recipe: quant.Recipe{FileType: quant.AllF32}, info: gqa4, layers: 2,
			want: map[string]func(int) tensor.DType{
				"output": always(tensor.F32), "token_embd": always(tensor.F32), "attn_v": always(tensor.F32),
				"ffn_down": always(tensor.F32), "attn_output": always(tensor.F32), "attn_q": always(tensor.F32),
				"attn_k": always(tensor.F32), "ffn_gate": always(tensor.F32), "ffn_up": always(tensor.F32),
			},
		},
		{
			// --output-tensor-type and --token-embedding-type win over the recipe; --leave-output-tensor would
			// not apply here since the type option is checked after quantizability.
			name: "Q5_K_M options", recipe: quant.Recipe{FileType: quant.MostlyQ5_K_M, OutputType: tensor.Q8_0,
				TokenEmbeddingType: tensor.F16}, info: gqa4, layers: 32,
			want: map[string]func(int) tensor.DType{
				"output": always(tensor.Q8_0), "token_embd": always(tensor.F16),
				"attn_v": typeSet(useMoreBits32, tensor.Q6_K, tensor.Q5_K), "ffn_down": typeSet(useMoreBits32, tensor.Q6_K, tensor.Q5_K),
				"attn_output": always(tensor.Q5_K), "attn_q": always(tensor.Q5_K), "attn_k": always(tensor.Q5_K),
				"ffn_gate": always(tensor.Q5_K), "ffn_up": always(tensor.Q5_K),
			},
		},
		{
			name: "Q6_K leave output", recipe: quant.Recipe{FileType: quant.MostlyQ6_K, LeaveOutput: true}, info: gqa4, layers: 2,
			want: map[string]func(int) tensor.DType{
				"output": always(tensor.F16), "token_embd": always(tensor.Q6_K), "attn_v": always(tensor.Q6_K),
				"ffn_down": always(tensor.Q6_K), "attn_output": always(tensor.Q6_K), "attn_q": always(tensor.Q6_K),
				"attn_k": always(tensor.Q6_K), "ffn_gate": always(tensor.Q6_K), "ffn_up": always(tensor.Q6_K),
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.recipe.Plan(tc.info, model(tc.layers, tc.tied))
			if err != nil {
				t.Fatal(err)
			}
			if n := len(model(tc.layers, tc.tied)); len(got) != n {
				t.Fatalf("%d choices for %d tensors", len(got), n)
			}
			checkPlan(t, got, tc.want)
			for _, c := range got {
				kind, layer := kindOf(c.Name)
				want := tc.imatrix != nil && !strings.HasSuffix(kind, "norm") && tc.imatrix(kind, layer)
				if want != c.RequiresImatrix {
					t.Errorf("%s (%s): RequiresImatrix %v, want %v", c.Name, c.To, c.RequiresImatrix, want)
				}
			}
		})
	}
}

// TestRecipeCountersFollowOverrides: a --tensor-type match skips the mixture rules, so the attn_v counter does not
// advance for it and later layers shift. With blk.0's attn_v overridden, layer l's attn_v is the (l-1)th one the
// rules see: layers 1–4 get use_more_bits(0..3) = Q6_K, layer 5 gets use_more_bits(4) = Q4_K, layer 7 gets
// use_more_bits(6) = Q6_K, layer 27 use_more_bits(26) = Q4_K, layer 28 use_more_bits(27) = Q6_K.
func TestRecipeCountersFollowOverrides(t *testing.T) {
	rule, err := quant.ParseTensorTypeRule(`BLK\.0\.ATTN_V=q8_0`) // pattern lower-cased as llama-quantize does
	if err != nil {
		t.Fatal(err)
	}
	r := quant.Recipe{FileType: quant.MostlyQ4_K_M, TensorTypes: []quant.TensorTypeRule{rule}}
	got, err := r.Plan(quant.ModelInfo{Arch: "llama", Layers: 32, Heads: 32, HeadsKV: 8}, model(32, false))
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]tensor.DType{0: tensor.Q8_0, 1: tensor.Q6_K, 4: tensor.Q6_K, 5: tensor.Q4_K, 6: tensor.Q4_K,
		7: tensor.Q6_K, 27: tensor.Q4_K, 28: tensor.Q6_K, 29: tensor.Q6_K, 31: tensor.Q6_K}
	for _, c := range got {
		if kind, l := kindOf(c.Name); kind == "attn_v" {
			if w, ok := want[l]; ok && c.To != w {
				t.Errorf("%s: got %s, want %s", c.Name, c.To, w)
			}
		}
	}
}

func TestRecipeTensorTypeRules(t *testing.T) {
	parse := func(s string) quant.TensorTypeRule {
		r, err := quant.ParseTensorTypeRule(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	tensors := []quant.TensorInfo{
		{Name: "blk.0.attn_q.weight", Shape: tensor.Shape{512, 512}, DType: tensor.F32},
		{Name: "blk.0.attn_qkv.weight", Shape: tensor.Shape{1536, 512}, DType: tensor.F32},
		{Name: "blk.0.ffn_up.weight", Shape: tensor.Shape{1024, 512}, DType: tensor.F32},
		{Name: "blk.0.ffn_norm.weight", Shape: tensor.Shape{512}, DType: tensor.F32},
	}
	// attn_q matches attn_qkv too (regex_search is a substring search); the first matching rule wins even when
	// a later one is more specific; --pure still applies the rules; 1-D tensors are never quantized.
	r := quant.Recipe{FileType: quant.MostlyQ4_K_M, Pure: true, TensorTypes: []quant.TensorTypeRule{
		parse("attn_q=q8_0"), parse("attn_qkv=q5_k"), parse("norm=q8_0"), parse(`up\.w.*$=IQ4_NL`)}}
	got, err := r.Plan(quant.ModelInfo{Arch: "llama", Layers: 1, Heads: 8, HeadsKV: 8}, tensors)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]tensor.DType{"blk.0.attn_q.weight": tensor.Q8_0, "blk.0.attn_qkv.weight": tensor.Q8_0,
		"blk.0.ffn_up.weight": tensor.IQ4_NL, "blk.0.ffn_norm.weight": tensor.F32}
	for _, c := range got {
		if c.To != want[c.Name] {
			t.Errorf("%s: got %s, want %s", c.Name, c.To, want[c.Name])
		}
	}
	for _, bad := range []string{"attn_q", "=q8_0", "attn_q=", "attn_q=q9_9", "attn_q=q8_k", "(?=x)=q8_0"} {
		if _, err := quant.ParseTensorTypeRule(bad); err == nil {
			t.Errorf("ParseTensorTypeRule(%q) accepted", bad)
		}
	}
}

// TestRecipeShapes covers the shape rules: tensor_type_fallback, the output row-length rule, ggml_n_dims, the
// never-quantized names and 5-byte names (which count as ending in "weight" in llama.cpp).
func TestRecipeShapes(t *testing.T) {
	tensors := []quant.TensorInfo{
		{Name: "output.weight", Shape: tensor.Shape{1000, 4544}},                // 4544 % 256 != 0: output → Q8_0
		{Name: "blk.0.attn_q.weight", Shape: tensor.Shape{4544, 4544}},          // Q4_K → Q5_0 (4544 % 32 == 0)
		{Name: "blk.0.attn_k.weight", Shape: tensor.Shape{64, 100}},             // Q4_K → Q5_0 → F16
		{Name: "blk.0.ffn_down.weight", Shape: tensor.Shape{4544, 4544}},        // use_more_bits(0, 1): Q6_K → Q8_0
		{Name: "blk.0.ffn_gate_inp.weight", Shape: tensor.Shape{8, 4544}},       // router: never quantized
		{Name: "blk.0.attn_v.weight", Shape: tensor.Shape{1, 1, 256}},           // 1-D for ggml
		{Name: "v.patch_embd.weight", Shape: tensor.Shape{64, 3, 14, 14}},       // multimodal: never quantized
		{Name: "position_embd.weight", Shape: tensor.Shape{2048, 4544}},         // BERT positions: never quantized
		{Name: "blk.0.ffn_up.bias", Shape: tensor.Shape{4, 256}},                // not a weight
		{Name: "abcde", Shape: tensor.Shape{4, 256}},                            // rfind quirk: quantized
		{Name: "blk.0.ffn_down_exps.weight", Shape: tensor.Shape{8, 4544, 256}}, // 3-D experts, ne0 = 256
	}
	for i := range tensors {
		tensors[i].DType = tensor.F32
	}
	r := quant.Recipe{FileType: quant.MostlyQ4_K_M}
	got, err := r.Plan(quant.ModelInfo{Arch: "llama", Layers: 1, Heads: 8, HeadsKV: 8}, tensors)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		typ      tensor.DType
		fallback bool
	}{
		"output.weight":             {tensor.Q8_0, false},
		"blk.0.attn_q.weight":       {tensor.Q5_0, true},
		"blk.0.attn_k.weight":       {tensor.F16, true},
		"blk.0.ffn_down.weight":     {tensor.Q8_0, true},
		"blk.0.ffn_gate_inp.weight": {tensor.F32, false},
		"blk.0.attn_v.weight":       {tensor.F32, false},
		"v.patch_embd.weight":       {tensor.F32, false},
		"position_embd.weight":      {tensor.F32, false},
		"blk.0.ffn_up.bias":         {tensor.F32, false},
		"abcde":                     {tensor.Q4_K, false},
		// Second ffn_down seen: counter 1, n_layer 1: use_more_bits(1, 1) holds (1 >= 7/8).
		"blk.0.ffn_down_exps.weight": {tensor.Q6_K, false},
	}
	for _, c := range got {
		w := want[c.Name]
		if c.To != w.typ || c.Fallback != w.fallback {
			t.Errorf("%s: got %s (fallback %v), want %s (fallback %v)", c.Name, c.To, c.Fallback, w.typ, w.fallback)
		}
	}
	// A type without a defined fallback fails (tensor_type_fallback throws).
	_, err = quant.Recipe{FileType: quant.MostlyQ8_0}.Plan(quant.ModelInfo{}, []quant.TensorInfo{
		{Name: "blk.0.attn_q.weight", Shape: tensor.Shape{64, 100}, DType: tensor.F32}})
	if err == nil || !strings.Contains(err.Error(), "blk.0.attn_q.weight") {
		t.Errorf("Q8_0 of 100-element rows: err = %v, want an error naming the tensor", err)
	}
}

// TestRecipeMoE: 8-expert models (Mixtral) use the layer number in the name for ffn_down, get Q8_0 attn_v and
// attn_k and Q5_K attn_output; MXFP4_MOE sends 3-D expert tensors to MXFP4 and the rest to Q8_0.
func TestRecipeMoE(t *testing.T) {
	var ts []quant.TensorInfo
	add := func(name string, shape ...int64) {
		ts = append(ts, quant.TensorInfo{Name: name, Shape: shape, DType: tensor.BF16})
	}
	add("output.weight", 1000, 512)
	add("token_embd.weight", 1000, 512)
	// Expert tensors of layer 31 come first, as happens in files where they are not consecutive.
	for _, l := range append([]int{31}, func() []int {
		var ls []int
		for l := range 31 {
			ls = append(ls, l)
		}
		return ls
	}()...) {
		p := fmt.Sprintf("blk.%d.", l)
		add(p+"ffn_down_exps.weight", 8, 512, 1024)
		add(p+"ffn_gate_exps.weight", 8, 1024, 512)
		add(p+"ffn_gate_inp.weight", 8, 512)
		add(p+"attn_v.weight", 128, 512)
		add(p+"attn_k.weight", 128, 512)
		add(p+"attn_output.weight", 512, 512)
	}
	info := quant.ModelInfo{Arch: "llama", Layers: 32, Heads: 32, HeadsKV: 8, Experts: 8}
	got, err := quant.Recipe{FileType: quant.MostlyQ4_K_M}.Plan(info, ts)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]func(int) tensor.DType{
		"output": always(tensor.Q6_K), "token_embd": always(tensor.Q4_K), "ffn_gate_inp": always(tensor.BF16),
		"ffn_down_exps": typeSet(useMoreBits32, tensor.Q6_K, tensor.Q4_K), "ffn_gate_exps": always(tensor.Q4_K),
		"attn_v": always(tensor.Q8_0), "attn_k": always(tensor.Q8_0), "attn_output": always(tensor.Q5_K),
	}
	check := func(got []quant.Choice, want map[string]func(int) tensor.DType) {
		t.Helper()
		for _, c := range got {
			kind, l := kindOf(c.Name)
			if w := want[kind](l); c.To != w {
				t.Errorf("%s: got %s, want %s", c.Name, c.To, w)
			}
		}
	}
	check(got, want)

	got, err = quant.Recipe{FileType: quant.MostlyMXFP4_MOE}.Plan(info, ts)
	if err != nil {
		t.Fatal(err)
	}
	check(got, map[string]func(int) tensor.DType{
		"output": always(tensor.Q8_0), "token_embd": always(tensor.Q8_0), "ffn_gate_inp": always(tensor.BF16),
		"ffn_down_exps": always(tensor.MXFP4), "ffn_gate_exps": always(tensor.MXFP4),
		"attn_v": always(tensor.Q8_0), "attn_k": always(tensor.Q8_0), "attn_output": always(tensor.Q8_0),
	})

	// A MoE tensor whose layer is out of range is an error, as in layer_info.
	bad := append(slices.Clone(ts), quant.TensorInfo{Name: "blk.40.ffn_down_exps.weight", Shape: tensor.Shape{8, 512, 1024}})
	if _, err := (quant.Recipe{FileType: quant.MostlyQ4_K_M}).Plan(info, bad); err == nil {
		t.Error("layer 40 of a 32-layer MoE model accepted")
	}
}

// TestSortTensors checks weight_name_comparer order, including sscanf's reading of odd layer numbers.
func TestSortTensors(t *testing.T) {
	names := []string{"blk.10.a.weight", "token_embd.weight", "blk.2.z.weight", "blk.2.a.weight", "output.weight",
		"blk.-1.x.weight", "blk. 3.weight", "blk.3x.weight", "blkx.0.weight", "blk.99999999999.weight"}
	var ts []quant.TensorInfo
	for _, n := range names {
		ts = append(ts, quant.TensorInfo{Name: n})
	}
	var got []string
	for _, s := range quant.SortTensors(ts) {
		got = append(got, s.Name)
	}
	// Layer -1 (no blk.N, or blk.-1) byte-wise, then layers 2, 3 (" 3" and "3x" both read as 3), 10, and
	// 99999999999 truncated to int32 (1215752191).
	want := []string{"blk.-1.x.weight", "blkx.0.weight", "output.weight", "token_embd.weight", "blk.2.a.weight",
		"blk.2.z.weight", "blk. 3.weight", "blk.3x.weight", "blk.10.a.weight", "blk.99999999999.weight"}
	if !slices.Equal(got, want) {
		t.Errorf("order:\n got  %q\n want %q", got, want)
	}
}

func TestFileTypeDefaults(t *testing.T) {
	if _, err := quant.FileType(39).DefaultType(); err == nil {
		t.Error("NVFP4 (39) has a default type; llama-quantize has no recipe for it")
	}
	for ft, want := range map[quant.FileType]tensor.DType{quant.MostlyIQ2_S: tensor.IQ2_XS,
		quant.MostlyIQ2_M: tensor.IQ2_S, quant.MostlyIQ3_XS: tensor.IQ3_S, quant.MostlyIQ3_M: tensor.IQ3_S,
		quant.MostlyMXFP4_MOE: tensor.MXFP4, quant.MostlyQ2_K_S: tensor.Q2_K} {
		if got, err := ft.DefaultType(); err != nil || got != want {
			t.Errorf("file type %d: default %s (%v), want %s", ft, got, err, want)
		}
	}
}
