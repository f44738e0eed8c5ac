package adapter

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// memModels holds safetensors models built in a test, opened by name in place of paths.
type memModels map[string][]byte

func (mm memModels) open(path string) (*modelfile.Model, error) {
	data, ok := mm[path]
	if !ok {
		return nil, fmt.Errorf("no test model %q", path)
	}
	return modelfile.FromBytes(path, data)
}

// add stores a model of one-dimensional F32 tensors, written in name order.
func (mm memModels) add(t testing.TB, name string, tensors map[string][]float32) {
	t.Helper()
	var views []tensor.View
	for _, n := range slices.Sorted(func(yield func(string) bool) {
		for k := range tensors {
			if !yield(k) {
				return
			}
		}
	}) {
		views = append(views, f32View(n, tensor.Shape{int64(len(tensors[n]))}, tensors[n]))
	}
	var buf bytes.Buffer
	sw, err := safetensors.NewWriter(&buf, infosOf(views), map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range sw.Tensors() {
		for _, w := range views {
			if w.Name == v.Name {
				if err := sw.WriteTensor(v.Name, w.Data); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	mm[name] = buf.Bytes()
}

func infosOf(views []tensor.View) []safetensors.TensorInfo {
	infos := make([]safetensors.TensorInfo, len(views))
	for i, v := range views {
		infos[i] = safetensors.TensorInfo{Name: v.Name, DType: v.DType, Shape: v.Shape}
	}
	return infos
}

// runMergekit parses yaml, merges the models and returns the output's tensors as float32s.
func runMergekit(t *testing.T, yaml string, mm memModels, seed uint64) (map[string][]float32, error) {
	t.Helper()
	cfg, err := ParseMergekitConfig("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	m, err := OpenModelMerge(cfg, mm.open)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	var buf bytes.Buffer
	if err := m.Write(&buf, ModelMergeOptions{Seed: seed, Workers: 2}); err != nil {
		return nil, err
	}
	out, err := modelfile.FromBytes("out", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	res := map[string][]float32{}
	for _, ti := range out.Tensors {
		v, err := out.View(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := v.Shape.Elements()
		f := make([]float32, n)
		if err := tensor.ToFloat32(f, v.Data, v.DType); err != nil {
			t.Fatal(err)
		}
		res[ti.Name] = f
	}
	return res, nil
}

func near(t *testing.T, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d values %v, want %v", what, len(got), got, want)
	}
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > tol {
			t.Fatalf("%s: got %v, want %v", what, got, want)
		}
	}
}

// TestMergekitOracles runs the merge oracles of ../shared/reference/spectral-prune-merge.md §8.7 through whole
// merges of one-tensor models: base "b" and fine-tuned "m1", "m2" (base + δᵢ).
func TestMergekitOracles(t *testing.T) {
	const x = "w"
	add := func(base, d []float64) []float32 {
		r := make([]float32, len(base))
		for i := range r {
			r[i] = float32(base[i] + d[i])
		}
		return r
	}
	zeros := func(n int) []float64 { return make([]float64, n) }
	type models struct{ base, d1, d2, d3 []float64 }
	cases := []struct {
		name   string
		models models
		yaml   string
		want   []float64
	}{
		{"task_arithmetic", models{[]float64{1, 1}, []float64{1, 0}, []float64{0, 2}, nil}, `
merge_method: task_arithmetic
base_model: b
models: [{model: m1, parameters: {weight: 0.5}}, {model: m2, parameters: {weight: 0.5}}]
parameters: {lambda: 1}`, []float64{1.5, 2.0}},
		{"task_arithmetic lambda 0", models{[]float64{1, 1}, []float64{1, 0}, []float64{0, 2}, nil}, `
merge_method: task_arithmetic
base_model: b
models: [{model: m1, parameters: {weight: 0.5}}, {model: m2, parameters: {weight: 0.5}}]
parameters: {lambda: 0}`, []float64{1, 1}},
		{"ties untrimmed", models{zeros(4), []float64{1, -2, 3, 0.5}, []float64{-1, -1, 2, 1}, nil}, `
merge_method: ties
base_model: b
models: [{model: m1}, {model: m2}]
parameters: {weight: 1}`, []float64{1, -1.5, 2.5, 0.75}},
		{"ties trimmed", models{zeros(4), []float64{1, -2, 3, 0.5}, []float64{-1, -1.5, 2, 1.2}, nil}, `
merge_method: ties
base_model: b
models: [{model: m1}, {model: m2}]
parameters: {weight: 1, density: 0.5}`, []float64{0, -1.75, 2.5, 0}},
		{"ties weighted sign (mergekit)", models{zeros(1), []float64{1}, []float64{-1.5}, nil}, `
merge_method: ties
base_model: b
models: [{model: m1, parameters: {weight: 1}}, {model: m2, parameters: {weight: 0.5}}]`, []float64{1.0}},
		{"breadcrumbs keeps 9 of 10", models{zeros(10), []float64{3, -1, 4, 1.5, -5, 9, 2, -6, 5.5, 3.5}, nil, nil}, `
merge_method: breadcrumbs
base_model: b
models: [{model: m1, parameters: {weight: 1, density: 0.9, gamma: 0.01}}]`,
			// n_top = int(0.1) = 0: mergekit's slice keeps nothing; the smallest |δ| (−1) is dropped, the rest kept.
			[]float64{3, 0, 4, 1.5, -5, 9, 2, -6, 5.5, 3.5}},
		{"model_stock", models{[]float64{0, 0}, []float64{1, 0}, []float64{1, 1}, nil}, `
merge_method: model_stock
base_model: b
models: [{model: m1}, {model: m2}]`, []float64{0.8284271247461901, 0.41421356237309503}},
		{"model_stock orthogonal", models{[]float64{1, 2}, []float64{1, 0}, []float64{0, 1}, nil}, `
merge_method: model_stock
base_model: b
models: [{model: m1}, {model: m2}]`, []float64{1, 2}},
		{"slerp t=0.5", models{[]float64{1, 0}, []float64{-1, 1}, nil, nil}, `
merge_method: slerp
base_model: b
models: [{model: b}, {model: m1}]
parameters: {t: 0.5}`, []float64{0.7071067811865475, 0.7071067811865475}},
		{"slerp unnormalized", models{[]float64{2, 0}, []float64{-2, 1}, nil, nil}, `
merge_method: slerp
base_model: b
models: [{model: m1}]
parameters: {t: 0.5}`, []float64{1.414213562373095, 0.7071067811865475}},
		{"slerp t=0.25", models{[]float64{1, 0}, []float64{-1, 1}, nil, nil}, `
merge_method: slerp
base_model: b
models: [{model: m1}]
parameters: {t: 0.25}`, []float64{0.9238795325112867, 0.3826834323650898}},
		{"slerp colinear fallback", models{[]float64{1, 0}, []float64{-2, 0.001}, nil, nil}, `
merge_method: slerp
base_model: b
models: [{model: m1}]
parameters: {t: 0.5}`, []float64{0, 0.0005}},
		{"linear normalized", models{[]float64{1, 2}, []float64{2, 2}, nil, nil}, `
merge_method: linear
models: [{model: b, parameters: {weight: 1}}, {model: m1, parameters: {weight: 3}}]`, []float64{2.5, 3.5}},
		{"linear unnormalized", models{[]float64{1, 2}, []float64{2, 2}, nil, nil}, `
merge_method: linear
models: [{model: b, parameters: {weight: 1}}, {model: m1, parameters: {weight: 3}}]
parameters: {normalize: false}`, []float64{10, 14}},
		{"dtype rounds the inputs", models{[]float64{1.001, 2}, []float64{2, 1}, nil, nil}, `
merge_method: linear
models: [{model: b, parameters: {weight: 1}}, {model: m1, parameters: {weight: 1}}]
dtype: bfloat16
out_dtype: float32`,
			// bfloat16 holds 1.001 as 1 and 3.001 as 3, so the first mean is (1 + 3)/2, not 2.001.
			[]float64{2, 2.5}},
		{"dare_ties density 1 is ties without normalizing", models{zeros(4), []float64{1, -2, 3, 0.5}, []float64{-1, -1, 2, 1}, nil}, `
merge_method: dare_ties
base_model: b
models: [{model: m1}, {model: m2}]
parameters: {weight: 1}`, []float64{1, -3, 5, 1.5}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mm := memModels{}
			mm.add(t, "b", map[string][]float32{x: add(c.models.base, zeros(len(c.models.base)))})
			for i, d := range [][]float64{c.models.d1, c.models.d2, c.models.d3} {
				if d != nil {
					mm.add(t, fmt.Sprintf("m%d", i+1), map[string][]float32{x: add(c.models.base, d)})
				}
			}
			got, err := runMergekit(t, c.yaml, mm, 0)
			if err != nil {
				t.Fatal(err)
			}
			near(t, c.name, got[x], c.want, 2e-7)
		})
	}
}

// TestSlerpOracles checks slerp itself on §8.7's vectors and its end points.
func TestSlerpOracles(t *testing.T) {
	near(t, "t=0.5", slerp(0.5, []float32{1, 0}, []float32{0, 1}), []float64{0.7071067811865475, 0.7071067811865475}, 1e-7)
	near(t, "t=0.25", slerp(0.25, []float32{1, 0}, []float32{0, 1}), []float64{0.9238795325112867, 0.3826834323650898}, 1e-7)
	near(t, "antiparallel", slerp(0.5, []float32{1, 0}, []float32{-1, 0.001}), []float64{0, 0.0005}, 1e-9)
	a, b := []float32{0.3, -1.7, 2.5}, []float32{1.1, 0.4, -0.2}
	if got := slerp(0, a, b); !slices.Equal(got, a) {
		t.Errorf("t=0 gives %v, want the base %v", got, a)
	}
	near(t, "t=1", slerp(1, a, b), []float64{1.1, 0.4, -0.2}, 1e-6)
}

// TestDAREMergekit checks dare_linear on a full tensor: each kept entry is δ scaled so that the L1 norm of δ is
// kept (mergekit's rescale, §8.7: mask [1,0,1,0] on [2,4,6,8] gives factor 20/8), about density of the entries
// survive, and the seed alone decides the mask.
func TestDAREMergekit(t *testing.T) {
	const n = 4096
	base, delta, fine := make([]float32, n), make([]float32, n), make([]float32, n)
	l1 := 0.0
	for i := range n {
		base[i] = float32(i%7) - 3
		delta[i] = float32(2 * (i%4 + 1))
		fine[i] = base[i] + delta[i]
		l1 += float64(delta[i])
	}
	mm := memModels{}
	mm.add(t, "b", map[string][]float32{"w": base})
	mm.add(t, "m1", map[string][]float32{"w": fine})
	const yaml = `
merge_method: dare_linear
base_model: b
models: [{model: m1, parameters: {weight: 1, density: 0.5}}]`
	run := func(seed uint64) []float32 {
		got, err := runMergekit(t, yaml, mm, seed)
		if err != nil {
			t.Fatal(err)
		}
		return got["w"]
	}
	got := run(7)
	kept, keptL1 := 0, 0.0
	for i, v := range got {
		if d := v - base[i]; d != 0 {
			kept++
			keptL1 += float64(delta[i])
		}
	}
	if kept < n*45/100 || kept > n*55/100 {
		t.Fatalf("kept %d of %d entries at density 0.5", kept, n)
	}
	factor := l1 / keptL1
	for i, v := range got {
		want := float64(base[i])
		if v != base[i] {
			want += float64(delta[i]) * factor
		}
		if math.Abs(float64(v)-want) > 1e-5 {
			t.Fatalf("entry %d: %v, want %v (L1 factor %v)", i, v, want, factor)
		}
	}
	if again := run(7); !slices.Equal(got, again) {
		t.Error("the same seed gave another mask")
	}
	if other := run(8); slices.Equal(got, other) {
		t.Error("another seed gave the same mask")
	}
}

// TestBreadcrumbsHundred checks §8.7's 100-entry case: n_top 1, n_bot 9, 90 kept.
func TestBreadcrumbsHundred(t *testing.T) {
	base, fine := make([]float32, 100), make([]float32, 100)
	for i := range fine {
		fine[i] = float32(i + 1)
	}
	mm := memModels{}
	mm.add(t, "b", map[string][]float32{"w": base})
	mm.add(t, "m", map[string][]float32{"w": fine})
	got, err := runMergekit(t, `
merge_method: breadcrumbs
base_model: b
models: [{model: m, parameters: {weight: 1, density: 0.9}}]`, mm, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range got["w"] {
		want := fine[i]
		if i < 9 || i == 99 {
			want = 0
		}
		if v != want {
			t.Fatalf("entry %d = %v, want %v", i, v, want)
		}
	}
}

// layered builds a model of three layers with self_attn and mlp tensors and a norm, every value v.
func layered(t *testing.T, mm memModels, name string, layers int, v func(layer int) float32) {
	ts := map[string][]float32{"model.embed_tokens.weight": {v(-1), v(-1)}, "model.norm.weight": {v(-2), v(-2)}}
	for l := range layers {
		for _, m := range []string{"self_attn.q_proj", "mlp.up_proj"} {
			ts[fmt.Sprintf("model.layers.%d.%s.weight", l, m)] = []float32{v(l), v(l)}
		}
	}
	mm.add(t, name, ts)
}

// TestMergekitGradients checks layer gradients and filters: mergekit's canonical slerp config with t per filter,
// on colinear inputs 1 and 2 (so slerp is a lerp and every value is 1 + t), and gradient positions l/(n−1).
func TestMergekitGradients(t *testing.T) {
	mm := memModels{}
	layered(t, mm, "a", 3, func(int) float32 { return 1 })
	layered(t, mm, "b", 3, func(int) float32 { return 2 })
	got, err := runMergekit(t, `
slices:
  - sources:
      - {model: a, layer_range: [0, 3]}
      - {model: b, layer_range: [0, 3]}
merge_method: slerp
base_model: a
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.25
`, mm, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float32{
		// layer 1 of 3 sits at t = 0.5, which is index 2 of the five-point gradient.
		"model.layers.0.self_attn.q_proj.weight": 0, "model.layers.1.self_attn.q_proj.weight": 0.3, "model.layers.2.self_attn.q_proj.weight": 1,
		"model.layers.0.mlp.up_proj.weight": 1, "model.layers.1.mlp.up_proj.weight": 0.7, "model.layers.2.mlp.up_proj.weight": 0,
		// outside the layers mergekit evaluates at t = 0; no filter matches, so the fallback applies.
		"model.embed_tokens.weight": 0.25, "model.norm.weight": 0.25,
	}
	for name, w := range want {
		if g := got[name]; len(g) != 2 || math.Abs(float64(g[0]-1-w)) > 1e-6 {
			t.Errorf("%s = %v, want %v", name, g, w)
		}
	}
	s := &Setting{Gradient: []float64{0, 0.5, 0.3, 0.7, 1}}
	for _, c := range []struct{ t, want float64 }{{0, 0}, {0.125, 0.25}, {0.5, 0.3}, {0.875, 0.85}, {1, 1}} {
		if v, _ := s.Eval("x", c.t); math.Abs(v-c.want) > 1e-12 {
			t.Errorf("gradient at %v = %v, want %v", c.t, v, c.want)
		}
	}
}

// TestMergekitPrecedence checks that a model's parameters beat the top-level ones, and filters fall through to the
// next level when none matches (mergekit's ConfigReader.parameter).
func TestMergekitPrecedence(t *testing.T) {
	mm := memModels{}
	layered(t, mm, "a", 2, func(int) float32 { return 1 })
	layered(t, mm, "b", 2, func(int) float32 { return 3 })
	got, err := runMergekit(t, `
merge_method: linear
models:
  - model: a
    parameters:
      weight: [{filter: mlp, value: 3}]
  - model: b
parameters:
  weight: 1
  normalize: true
`, mm, 0)
	if err != nil {
		t.Fatal(err)
	}
	if g := got["model.layers.0.mlp.up_proj.weight"][0]; g != 1.5 {
		t.Errorf("mlp: %v, want (3·1 + 1·3)/4 = 1.5", g)
	}
	if g := got["model.layers.0.self_attn.q_proj.weight"][0]; g != 2 {
		t.Errorf("self_attn: %v, want the mean 2", g)
	}
}

// TestMergekitSlices builds a four-layer model from two layers of each input (a passthrough "frankenmerge") and
// checks the renumbering and which source each layer came from.
func TestMergekitSlices(t *testing.T) {
	mm := memModels{}
	layered(t, mm, "a", 3, func(l int) float32 { return float32(10 + l) })
	layered(t, mm, "b", 3, func(l int) float32 { return float32(20 + l) })
	const yaml = `
slices:
  - sources: [{model: a, layer_range: [0, 2]}]
  - sources: [{model: b, layer_range: [1, 3], parameters: {scale: 2}}]
merge_method: passthrough
`
	cfg, err := ParseMergekitConfig("s.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	m, err := OpenModelMerge(cfg, mm.open)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Layers != 4 || !m.Resized {
		t.Errorf("layers %d resized %v, want 4 and true", m.Layers, m.Resized)
	}
	got, err := runMergekit(t, yaml, mm, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float32{"model.embed_tokens.weight": 9, "model.layers.0.mlp.up_proj.weight": 10,
		"model.layers.1.mlp.up_proj.weight": 11, "model.layers.2.mlp.up_proj.weight": 42,
		"model.layers.3.self_attn.q_proj.weight": 44, "model.norm.weight": 36}
	for name, w := range want {
		if g := got[name]; len(g) == 0 || g[0] != w {
			t.Errorf("%s = %v, want %v", name, g, w)
		}
	}
	if len(got) != 2+4*2 {
		t.Errorf("%d tensors, want 10", len(got))
	}
}

// TestMergekitMergeErrors checks the errors found while planning or merging.
func TestMergekitMergeErrors(t *testing.T) {
	mm := memModels{}
	layered(t, mm, "a", 2, func(int) float32 { return 1 })
	layered(t, mm, "b", 2, func(int) float32 { return 2 })
	layered(t, mm, "deep", 3, func(int) float32 { return 2 })
	mm.add(t, "short", map[string][]float32{"model.embed_tokens.weight": {1}})
	cases := []struct{ yaml, want string }{
		{"merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}, {model: b}]", "missing required parameter weight for model b"},
		{"merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}, {model: deep, parameters: {weight: 1}}]", "has 3 layers"},
		{"merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}, {model: nowhere, parameters: {weight: 1}}]", "model nowhere"},
		{"merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}, {model: b, parameters: {weight: -1}}]", "sum to 0"},
		{"merge_method: ties\nbase_model: a\nmodels: [{model: b, parameters: {weight: 1, density: 0}}]", "density"},
		{"merge_method: model_stock\nbase_model: a\nmodels: [{model: b}]", "at least two other models"},
		{"merge_method: slerp\nbase_model: a\nmodels: [{model: b}, {model: deep}]\nparameters: {t: 0.5}", "layers"},
		{"merge_method: task_arithmetic\nbase_model: short\nmodels: [{model: a, parameters: {weight: 1}}]", "has 2 layers"},
		{"merge_method: passthrough\nslices: [{sources: [{model: a, layer_range: [0, 3]}]}]", "beyond its 2 layers"},
		{"merge_method: linear\nslices: [{sources: [{model: a, layer_range: [0, 2]}, {model: b, layer_range: [0, 1]}]}]", "same number of layers"},
	}
	for _, c := range cases {
		_, err := runMergekit(t, c.yaml, mm, 0)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one containing %q", c.yaml, err, c.want)
		}
	}
}
