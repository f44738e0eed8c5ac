package adapter

import (
	"bytes"
	"math"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// maxAbsDiff decodes two tensors of any float or block type and returns the largest difference.
func maxAbsDiff(t *testing.T, a, b tensor.View) float64 {
	t.Helper()
	if !a.Shape.Equal(b.Shape) {
		t.Fatalf("tensor %q: shape %v vs %v", a.Name, a.Shape, b.Shape)
	}
	fa, fb := decode(t, a), decode(t, b)
	d := 0.0
	for i := range fa {
		d = max(d, math.Abs(float64(fa[i])-float64(fb[i])))
	}
	return d
}

func decode(t *testing.T, v tensor.View) []float32 {
	t.Helper()
	f, err := floats(v)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestMergeScaling is §8.7's LoRA oracle through the model-level merge, for each scaling rule: W = I₂, B = [[1],[2]],
// A = [[3,4]] (rank 1 stored, so patterns set r and α for the scale): α/r, α/√r (rsLoRA), rank_pattern and
// alpha_pattern, and the user scale multiplying the result. Untouched tensors keep their bytes.
func TestMergeScaling(t *testing.T) {
	eye := f32("l.q.weight", tensor.Shape{2, 2}, 1, 0, 0, 1)
	other := f32("l.k.weight", tensor.Shape{2, 2}, 5, 6, 7, 8)
	factors := []tensor.View{
		f32("base_model.model.l.q.lora_A.weight", tensor.Shape{1, 2}, 3, 4),
		f32("base_model.model.l.q.lora_B.weight", tensor.Shape{2, 1}, 1, 2),
	}
	for _, c := range []struct {
		name, config string
		scale        float64 // user scale
		s            float64 // expected factor on BA = [[3,4],[6,8]]
	}{
		{"α/r", `{"r": 1, "lora_alpha": 2}`, 0, 2},
		{"α/r r=4 α=8", `{"r": 4, "lora_alpha": 8}`, 0, 2},
		{"rsLoRA r=4 α=8", `{"r": 4, "lora_alpha": 8, "use_rslora": true}`, 0, 4},
		{"rank_pattern", `{"r": 8, "lora_alpha": 8, "rank_pattern": {"q": 4}}`, 0, 2},
		{"alpha_pattern", `{"r": 2, "lora_alpha": 8, "alpha_pattern": {"l\\.q": 1}}`, 0, 0.5},
		{"user scale", `{"r": 1, "lora_alpha": 2}`, -0.5, -1},
	} {
		dir := writePEFT(t, c.config, factors...)
		a, err := OpenPEFT(dir)
		if err != nil {
			t.Fatal(err)
		}
		out := mergedSet(t, memSet(t, eye, other), []*Adapter{a}, MergeOptions{Scale: c.scale})
		a.Close()
		q, _ := out.Tensor("l.q.weight")
		want := []float32{float32(1 + 3*c.s), float32(4 * c.s), float32(6 * c.s), float32(1 + 8*c.s)}
		if got := decode(t, q); !equalFloats(got, want) {
			t.Errorf("%s: merged %v, want %v", c.name, got, want)
		}
		k, _ := out.Tensor("l.k.weight")
		if !bytes.Equal(k.Data, other.Data) {
			t.Errorf("%s: untouched tensor changed", c.name)
		}
	}
}

func equalFloats(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// memSet writes views to an in-memory safetensors file.
func memSet(t *testing.T, views ...tensor.View) *safetensors.File {
	t.Helper()
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, views, nil, safetensors.KeepOrder()); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestMergeDoRAModel is §8.7's DoRA oracle through MergeSafetensors, with a BF16 base to check that the merged tensor
// keeps its dtype: W = diag(3,4), B = [[0],[1]], A = [[1,0]], m = [3,4] → [[3,0],[0.9701425,3.88057]].
func TestMergeDoRAModel(t *testing.T) {
	a := doraOracle(t)
	defer a.Close()
	w := make([]byte, 8)
	tensor.FromFloat32(w, []float32{3, 0, 0, 4}, tensor.BF16)
	base := memSet(t, tensor.View{Name: "l.weight", DType: tensor.BF16, Shape: tensor.Shape{2, 2}, Data: w})
	out := mergedSet(t, base, []*Adapter{a}, MergeOptions{})
	v, _ := out.Tensor("l.weight")
	want := []float32{3, 0, 0.9701425001453319, 3.8805700005813275}
	wantBF := make([]byte, 8)
	tensor.FromFloat32(wantBF, want, tensor.BF16)
	if v.DType != tensor.BF16 || !bytes.Equal(v.Data, wantBF) {
		t.Errorf("DoRA merge into BF16: %s %v, want BF16 %v", v.DType, decode(t, v), want)
	}
}

// TestMergeRankPermutation: permuting the ranks of (A, B) jointly leaves the merge unchanged (§8.7 invariance).
func TestMergeRankPermutation(t *testing.T) {
	cfg := `{"r": 3, "lora_alpha": 5}`
	a1 := writePEFT(t, cfg,
		f32("base_model.model.l.lora_A.weight", tensor.Shape{3, 2}, 1, 2, 3, 4, 5, 6),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 3}, 0.5, -1, 2, 1, 0.25, -3))
	a2 := writePEFT(t, cfg, // ranks in order 2, 0, 1
		f32("base_model.model.l.lora_A.weight", tensor.Shape{3, 2}, 5, 6, 1, 2, 3, 4),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 3}, 2, 0.5, -1, -3, 1, 0.25))
	var outs [2][]byte
	for i, dir := range []string{a1, a2} {
		a, err := OpenPEFT(dir)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := MergeSafetensors(&buf, memSet(t, f32("l.weight", tensor.Shape{2, 2}, 1, 2, 3, 4)), a, MergeOptions{}); err != nil {
			t.Fatal(err)
		}
		a.Close()
		outs[i] = buf.Bytes()
	}
	if !bytes.Equal(outs[0], outs[1]) {
		t.Error("permuting ranks changed the merged model")
	}
}

func TestMergeErrors(t *testing.T) {
	dir := writePEFT(t, `{"r": 1, "lora_alpha": 1}`,
		f32("base_model.model.l.lora_A.weight", tensor.Shape{1, 2}, 1, 0),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, 0, 1))
	a, err := OpenPEFT(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	bias := writePEFT(t, `{"r": 1, "lora_alpha": 1, "lora_bias": true}`,
		f32("base_model.model.l.lora_A.weight", tensor.Shape{1, 2}, 1, 0),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, 0, 1),
		f32("base_model.model.l.lora_B.bias", tensor.Shape{2}, 0, 1))
	b, err := OpenPEFT(bias)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, c := range []struct {
		name string
		a    *Adapter
		base *safetensors.File
	}{
		{"missing target", a, memSet(t, f32("x.weight", tensor.Shape{2, 2}, 1, 0, 0, 1))},
		{"wrong shape", a, memSet(t, f32("l.weight", tensor.Shape{2, 3}, 1, 0, 0, 1, 0, 0))},
		{"lora_bias", b, memSet(t, f32("l.weight", tensor.Shape{2, 2}, 1, 0, 0, 1))},
	} {
		if err := MergeSafetensors(&bytes.Buffer{}, c.base, c.a, MergeOptions{}); err == nil {
			t.Errorf("%s: no error", c.name)
		} else {
			t.Logf("%s: %v", c.name, err)
		}
	}
}

// TestMergeTinyLlama merges the shared PyTorch LoRA into the shared base and compares with PEFT's
// merge_and_unload output stored beside it (acceptance: max abs diff ≤ 1e-6).
func TestMergeTinyLlama(t *testing.T) {
	root := sharedModel(t)
	base, err := safetensors.Open(filepath.Join(root, "hf", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	want, err := safetensors.Open(filepath.Join(root, "merged-lora-shakespeare-a", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	a, err := OpenPEFT(filepath.Join(root, "lora-shakespeare-a"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	got := mergedSet(t, base, []*Adapter{a}, MergeOptions{})
	touched := map[string]bool{}
	for _, m := range a.Modules {
		touched[m.Target] = true
	}
	worst := 0.0
	for _, info := range want.Tensors() {
		g, err := got.Tensor(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		w, _ := want.Tensor(info.Name)
		b, _ := base.Tensor(info.Name)
		if g.DType != b.DType {
			t.Errorf("%s: dtype %s, base %s", info.Name, g.DType, b.DType)
		}
		if !touched[info.Name] && !bytes.Equal(g.Data, b.Data) {
			t.Errorf("%s: untouched tensor not copied byte for byte", info.Name)
		}
		worst = max(worst, maxAbsDiff(t, g, w))
	}
	t.Logf("%d tensors (%d merged): max abs diff vs PEFT merge_and_unload %.3g", len(want.Tensors()), len(touched), worst)
	if worst > 1e-6 {
		t.Errorf("max abs diff %g > 1e-6", worst)
	}
	if len(got.Tensors()) != len(base.Tensors()) {
		t.Errorf("%d tensors, base has %d", len(got.Tensors()), len(base.Tensors()))
	}
}

func sharedModel(t *testing.T) string {
	t.Helper()
	return testshared.Path(t, "models", "tiny-llama-a")
}

// TestMergeGGUFTinyLlama merges the PEFT adapter (renamed, q/k rows of B permuted) and llama.cpp's GGUF conversion of
// it into the f32 GGUF base, and compares both with lathe's GGUF conversion of PEFT's merged model.
func TestMergeGGUFTinyLlama(t *testing.T) {
	root := sharedModel(t)
	ref := convertedMerged(t, root)
	defer ref.Close()
	base, err := gguf.Open(filepath.Join(root, "gguf", "tiny-llama-a-f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	for _, adapterPath := range []string{
		filepath.Join(root, "lora-shakespeare-a"),
		filepath.Join(root, "lora-shakespeare-a", "adapter-f32.gguf"),
	} {
		a, err := Open(adapterPath)
		if err != nil {
			t.Fatal(err)
		}
		got := mergedGGUF(t, base, []*Adapter{a}, MergeOptions{})
		a.Close()
		if got.Metadata.Len() != base.Metadata.Len() {
			t.Errorf("%d keys, base has %d", got.Metadata.Len(), base.Metadata.Len())
		}
		worst, merged := 0.0, 0
		for _, info := range base.Tensors() {
			g, err := got.Tensor(info.Name)
			if err != nil {
				t.Fatal(err)
			}
			r, err := ref.Tensor(info.Name)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := base.Tensor(info.Name)
			if g.DType != b.DType {
				t.Errorf("%s: type %s, base %s", info.Name, g.DType, b.DType)
			}
			if !bytes.Equal(g.Data, b.Data) {
				merged++
			}
			worst = max(worst, maxAbsDiff(t, g, r))
		}
		t.Logf("%s: %d tensors changed, max abs diff vs converted merged model %.3g", filepath.Base(adapterPath), merged, worst)
		if worst > 1e-6 || merged != 42 {
			t.Errorf("%s: max abs diff %g (want ≤ 1e-6), %d tensors changed (want 42)", adapterPath, worst, merged)
		}
	}
}

// convertedMerged converts PEFT's merged model to an f32 GGUF with lathe's converter (checked against
// convert_hf_to_gguf.py in package convert).
func convertedMerged(t *testing.T, root string) *gguf.File {
	t.Helper()
	m, err := convert.OpenHF(filepath.Join(root, "merged-lora-shakespeare-a"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var buf bytes.Buffer
	if err := convert.ToGGUF(&buf, m, convert.GGUFOptions{Type: tensor.F32}); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestMergeGGUFQuantized merges into the Q8_0 base: adapted tensors stay Q8_0 and equal quant.Encode of the
// dequantized base plus the update (the update taken from the f32 reference pair), untouched tensors keep their
// bytes.
func TestMergeGGUFQuantized(t *testing.T) {
	root := sharedModel(t)
	ref := convertedMerged(t, root)
	defer ref.Close()
	f32Base, err := gguf.Open(filepath.Join(root, "gguf", "tiny-llama-a-f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f32Base.Close()
	base, err := gguf.Open(filepath.Join(root, "gguf", "tiny-llama-a-q8_0.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	a, err := OpenPEFT(filepath.Join(root, "lora-shakespeare-a"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	got := mergedGGUF(t, base, []*Adapter{a}, MergeOptions{Workers: 2})
	touched := 0
	worstStep := 0.0
	for _, info := range base.Tensors() {
		g, _ := got.Tensor(info.Name)
		b, _ := base.Tensor(info.Name)
		if g.DType != b.DType {
			t.Fatalf("%s: type %s, base %s", info.Name, g.DType, b.DType)
		}
		if bytes.Equal(g.Data, b.Data) {
			continue
		}
		touched++
		// expected = Q8_0(deq(base) + (merged − base)_f32)
		r, _ := ref.Tensor(info.Name)
		w, _ := f32Base.Tensor(info.Name)
		exp := decode(t, b)
		rf, wf := decode(t, r), decode(t, w)
		for i := range exp {
			exp[i] += rf[i] - wf[i]
		}
		enc := make([]byte, len(b.Data))
		if err := quant.Encode(b.DType, enc, exp, int(b.Shape[len(b.Shape)-1]), nil); err != nil {
			t.Fatal(err)
		}
		encView := b
		encView.Data = enc
		// The reference update carries f32 rounding, so a few values may round to the neighbouring code:
		// compare the decoded values against one quantization step.
		d := maxAbsDiff(t, g, encView)
		worstStep = max(worstStep, d)
		deq := decode(t, encView)
		big := 0.0
		for _, x := range deq {
			big = max(big, math.Abs(float64(x)))
		}
		if d > big/127+1e-6 {
			t.Errorf("%s: max abs diff %g vs re-encoded reference, more than a Q8_0 step %g", info.Name, d, big/127)
		}
	}
	t.Logf("Q8_0 base: %d tensors merged and re-encoded, max abs diff vs Q8_0(deq(W)+ΔW) %.3g", touched, worstStep)
	if touched != 42 {
		t.Errorf("%d tensors changed, want 42", touched)
	}
}
