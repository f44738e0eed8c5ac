package adapter

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/tensor"
)

// mergekitSeeds are configurations in the shapes of mergekit's docs/examples; they seed the fuzzer too.
var mergekitSeeds = []string{`
slices:
  - sources:
      - model: psmathur/orca_mini_v3_13b
        layer_range: [0, 40]
      - model: garage-bAInd/Platypus2-13B
        layer_range: [0, 40]
merge_method: slerp
base_model: psmathur/orca_mini_v3_13b
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5 # fallback for rest of tensors
dtype: float16
`, `
models:
  - model: psmathur/orca_mini_v3_13b
    parameters:
      density: [1, 0.7, 0.1] # density gradient
      weight: 1.0
  - model: garage-bAInd/Platypus2-13B
    parameters:
      density: 0.5
      weight: [0, 0.3, 0.7, 1] # weight gradient
  - model: WizardLM/WizardMath-13B-V1.0
    parameters:
      density: 0.33
      weight:
        - filter: mlp
          value: 0.5
        - value: 0
merge_method: ties
base_model: TheBloke/Llama-2-13B-fp16
parameters:
  normalize: true
  int8_mask: true
dtype: float16
`, `
models:
  - model: a
    parameters: {weight: 0.5}
  - model: b
    parameters: {weight: 0.5}
merge_method: linear
dtype: bfloat16
out_dtype: float32
tokenizer_source: base
`, `
merge_method: dare_ties
base_model: base
models: [{model: a, parameters: {weight: 0.6, density: 0.4}}, {model: b, parameters: {weight: 0.4, density: 0.4}}]
parameters: {lambda: 1.2, rescale: false}
`, `
merge_method: breadcrumbs_ties
base_model: base
models: [{model: a, parameters: {weight: 1, density: 0.9, gamma: 0.01}}]
`, `
merge_method: model_stock
base_model: base
models: [{model: a}, {model: b}]
parameters: {filter_wise: [true, false]}
`}

func TestParseMergekitConfig(t *testing.T) {
	c, err := ParseMergekitConfig("ties.yaml", []byte(mergekitSeeds[1]))
	if err != nil {
		t.Fatal(err)
	}
	if c.Method != "ties" || c.BaseModel != "TheBloke/Llama-2-13B-fp16" || len(c.Models) != 3 || c.DType != tensor.F16 {
		t.Fatalf("parsed %+v", c)
	}
	if len(c.Notes) != 1 || !strings.Contains(c.Notes[0], "int8_mask") {
		t.Errorf("notes %q, want one about int8_mask", c.Notes)
	}
	eval := func(s *Setting, name string, tt float64) float64 {
		v, ok := s.Eval(name, tt)
		if !ok {
			t.Fatalf("no value for %s", name)
		}
		return v
	}
	if v := eval(c.Models[0].Parameters["density"], "x", 0.75); math.Abs(v-0.4) > 1e-15 {
		t.Errorf("density gradient at 0.75 = %v, want 0.4", v)
	}
	if v := eval(c.Models[1].Parameters["weight"], "x", 0.5); v != 0.5 {
		t.Errorf("weight gradient at 0.5 = %v, want 0.5", v)
	}
	w := c.Models[2].Parameters["weight"]
	if v := eval(w, "model.layers.3.mlp.up_proj.weight", 0); v != 0.5 {
		t.Errorf("filtered weight on mlp = %v, want 0.5", v)
	}
	if v := eval(w, "model.layers.3.self_attn.o_proj.weight", 0); v != 0 {
		t.Errorf("filtered weight fallback = %v, want 0", v)
	}
	if v := eval(c.Parameters["normalize"], "x", 0); v != 1 {
		t.Errorf("normalize: true = %v, want 1", v)
	}

	s, err := ParseMergekitConfig("slerp.yaml", []byte(mergekitSeeds[0]))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Slices) != 1 || s.Slices[0].Sources[1].LayerRange != [2]int{0, 40} {
		t.Fatalf("slices %+v", s.Slices)
	}
	// A list of booleans interpolates like numbers, as Python's bool is an int (mergekit's evaluate_setting).
	ms, err := ParseMergekitConfig("ms.yaml", []byte(mergekitSeeds[5]))
	if err != nil {
		t.Fatal(err)
	}
	if v := eval(ms.Parameters["filter_wise"], "x", 0.9); math.Abs(v-0.1) > 1e-15 {
		t.Errorf("boolean list at 0.9 = %v, want 0.1", v)
	}
}

func TestMergekitConfigErrors(t *testing.T) {
	cases := []struct {
		yaml string
		line int
		want string
	}{
		{"merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\ndesnity: 0.5", 3, `desnity: unknown key`},
		{"merge_method: frobnicate\nmodels: [{model: a}]", 1, `unknown or unsupported method "frobnicate"`},
		{"models: [{model: a}]", 1, "merge_method: missing"},
		{"merge_method: ties\nbase_model: b\nmodels:\n  - model: a\n    parameters:\n      desnity: 0.5", 6, "desnity: unknown parameter for this method (expected one of density, weight)"},
		{"merge_method: slerp\nbase_model: b\nmodels:\n  - model: a\n    parameters: {t: 0.5}", 5, "t: is a method parameter"},
		{"merge_method: linear\nmodels: [{model: a}]\nslices: [{sources: [{model: a, layer_range: [0, 1]}]}]", 1, "exactly one of models and slices"},
		{"merge_method: linear\nmodels: [{model: a}]\ntokenizer_source: union", 3, `"union" is not supported`},
		{"merge_method: linear\nmodels: [{model: a}]\ndtype: int8", 3, `unsupported dtype "int8"`},
		{"merge_method: linear\nmodels: [{model: a}]\nmodules: {}", 3, "modules: not supported"},
		{"merge_method: ties\nmodels: [{model: a}]", 1, "ties needs a base_model"},
		{"merge_method: linear\nslices:\n  - sources:\n      - {model: a, layer_range: [3, 1]}", 4, "is empty"},
		{"merge_method: linear\nslices:\n  - sources:\n      - {model: a}", 4, "layer_range: missing"},
		{"merge_method: linear\nmodels:\n  - {model: a, layer_range: [0, 1]}", 3, "only allowed in slices"},
		{"merge_method: linear\nmodels: [{model: a, parameters: {weight: .nan}}]", 2, "finite number"},
		{"merge_method: linear\nmodels: [{model: a, parameters: {weight: [{filter: mlp}]}}]", 2, "no value"},
		{"merge_method: linear\nmodels: [{model: a, parameters: {weight: [0.5, [1]]}}]", 2, "expected a number in the gradient"},
		{"merge_method: linear\nx: &a 1\nmodels: [{model: a, parameters: {weight: *a}}]", 2, "x: unknown key"},
		{"merge_method: linear\nmodels: [{model: a, parameters: {weight: *a}}]", 0, "unknown anchor"},
		{"merge_method: linear\nmerge_method: slerp\nmodels: [{model: a}]", 2, "given twice"},
		{"- a\n- b", 1, "expected a mapping"},
		{"merge_method: linear\nmodels: []", 2, "expected a non-empty list"},
	}
	for _, c := range cases {
		_, err := ParseMergekitConfig("m.yaml", []byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one containing %q", c.yaml, err, c.want)
			continue
		}
		var ce *MergekitConfigError
		if c.line > 0 && (!errors.As(err, &ce) || ce.Line != c.line || ce.File != "m.yaml") {
			t.Errorf("%q: error %v, want a MergekitConfigError at m.yaml:%d", c.yaml, err, c.line)
		}
	}
}

func FuzzMergekitConfig(f *testing.F) {
	for _, s := range mergekitSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte("merge_method: linear\nmodels: [{model: a, parameters: {weight: [{filter: x, value: [1, 2]}, {value: 3}]}}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseMergekitConfig("fuzz.yaml", data)
		if err != nil {
			return
		}
		if _, ok := mergekitMethods[c.Method]; !ok {
			t.Fatalf("accepted unknown method %q", c.Method)
		}
		if (c.Models == nil) == (c.Slices == nil) {
			t.Fatal("accepted a configuration without exactly one of models and slices")
		}
		var all []MergekitParameters
		all = append(all, c.Parameters)
		for _, s := range c.Models {
			all = append(all, s.Parameters)
		}
		for _, sl := range c.Slices {
			all = append(all, sl.Parameters)
			for _, s := range sl.Sources {
				all = append(all, s.Parameters)
				if s.LayerRange[1] <= s.LayerRange[0] {
					t.Fatalf("accepted layer_range %v", s.LayerRange)
				}
			}
		}
		for _, ps := range all {
			for _, s := range ps {
				for _, tt := range []float64{0, 0.3, 1} {
					s.Eval("model.layers.1.mlp.up_proj.weight", tt)
				}
			}
		}
	})
}
