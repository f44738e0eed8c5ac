package adapter

import (
	"bytes"
	"math"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

func openAdapter(t *testing.T, path string) *Adapter {
	t.Helper()
	a, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func mergedSet(t *testing.T, base safetensors.Set, adapters []*Adapter, opts MergeOptions) *safetensors.File {
	t.Helper()
	var buf bytes.Buffer
	if err := MergeAllSafetensors(&buf, base, adapters, opts); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func mergedGGUF(t *testing.T, base *gguf.File, adapters []*Adapter, opts MergeOptions) *gguf.File {
	t.Helper()
	var buf bytes.Buffer
	if err := MergeAllGGUF(&buf, base, adapters, opts); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestMergeAllInOrder: a LoRA then §8.7's DoRA adapter on W = diag(3,4). The LoRA (r=1, α=2, B=[[.5],[.25]],
// A=[[1,2]]) gives W₁ = [[4,2],[0.5,5]], exact in float32, so merging both at once equals merging one file after
// the other bit for bit; DoRA then adds [[0,0],[1,0]] and rescales the rows to norms 3 and 4. The other order gives
// another model.
func TestMergeAllInOrder(t *testing.T) {
	lora := openAdapter(t, writePEFT(t, `{"r": 1, "lora_alpha": 2}`,
		f32("base_model.model.l.lora_A.weight", tensor.Shape{1, 2}, 1, 2),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, 0.5, 0.25)))
	dora := doraOracle(t)
	defer dora.Close()
	base := memSet(t, f32("l.weight", tensor.Shape{2, 2}, 3, 0, 0, 4), f32("k.weight", tensor.Shape{1, 2}, 7, 8))

	both := mergedSet(t, base, []*Adapter{lora, dora}, MergeOptions{})
	step := mergedSet(t, mergedSet(t, base, []*Adapter{lora}, MergeOptions{}), []*Adapter{dora}, MergeOptions{})
	g, _ := both.Tensor("l.weight")
	s, _ := step.Tensor("l.weight")
	n1, n2 := math.Sqrt(20), math.Sqrt(1.5*1.5+25)
	want := []float32{float32(4 * 3 / n1), float32(2 * 3 / n1), float32(1.5 * 4 / n2), float32(5 * 4 / n2)}
	if got := decode(t, g); !equalFloats(got, want) {
		t.Errorf("LoRA then DoRA: %v, want %v", got, want)
	}
	if !bytes.Equal(g.Data, s.Data) {
		t.Errorf("merging both %v differs from merging one after the other %v", decode(t, g), decode(t, s))
	}
	k, _ := both.Tensor("k.weight")
	if kb, _ := base.Tensor("k.weight"); !bytes.Equal(k.Data, kb.Data) {
		t.Error("untouched tensor changed")
	}
	rev := mergedSet(t, base, []*Adapter{dora, lora}, MergeOptions{})
	if r, _ := rev.Tensor("l.weight"); bytes.Equal(r.Data, g.Data) {
		t.Error("the order of a DoRA and a LoRA adapter made no difference")
	}
	if err := MergeAllSafetensors(&bytes.Buffer{}, base, []*Adapter{lora, dora}, MergeOptions{Scales: []float64{1}}); err == nil {
		t.Error("one scale for two adapters: no error")
	}
}

// TestMergeAllTinyLlama: the shared LoRA twice at scales ½ and ½ gives PEFT's merged model (≤ 1e-6); into the f32
// GGUF base, llama.cpp's GGUF conversion of it at +1 followed by the PEFT original at −1 gives back the base.
func TestMergeAllTinyLlama(t *testing.T) {
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
	peft := openAdapter(t, filepath.Join(root, "lora-shakespeare-a"))
	got := mergedSet(t, base, []*Adapter{peft, peft}, MergeOptions{Scales: []float64{0.5, 0.5}})
	worst := 0.0
	for _, info := range want.Tensors() {
		g, _ := got.Tensor(info.Name)
		w, _ := want.Tensor(info.Name)
		worst = max(worst, maxAbsDiff(t, g, w))
	}
	t.Logf("½·LoRA + ½·LoRA vs PEFT merge: max abs diff %.3g", worst)
	if worst > 1e-6 {
		t.Errorf("max abs diff %g > 1e-6", worst)
	}

	gbase, err := gguf.Open(filepath.Join(root, "gguf", "tiny-llama-a-f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer gbase.Close()
	ggufA := openAdapter(t, filepath.Join(root, "lora-shakespeare-a", "adapter-f32.gguf"))
	back := mergedGGUF(t, gbase, []*Adapter{ggufA, peft}, MergeOptions{Scales: []float64{1, -1}})
	worst = 0
	for _, info := range gbase.Tensors() {
		g, _ := back.Tensor(info.Name)
		b, _ := gbase.Tensor(info.Name)
		worst = max(worst, maxAbsDiff(t, g, b))
	}
	t.Logf("GGUF adapter at +1 then PEFT adapter at −1: max abs diff from the base %.3g", worst)
	if worst > 1e-6 {
		t.Errorf("max abs diff %g > 1e-6", worst)
	}
}

// TestMergeQ8_0BitExact: merging into the Q8_0 base gives, bit for bit, Q8_0(deq(W) + s·B·A) with the update formed
// here independently (float64 triple loop over the GGUF adapter's factors, one rounding to float32).
func TestMergeQ8_0BitExact(t *testing.T) {
	root := sharedModel(t)
	base, err := gguf.Open(filepath.Join(root, "gguf", "tiny-llama-a-q8_0.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	a := openAdapter(t, filepath.Join(root, "lora-shakespeare-a", "adapter-f32.gguf"))
	const user = 0.75
	got := mergedGGUF(t, base, []*Adapter{a}, MergeOptions{Scale: user, Workers: 2})
	checked := 0
	for _, m := range a.Modules {
		b, err := base.Tensor(m.Target)
		if err != nil {
			t.Fatal(err)
		}
		if b.DType != tensor.Q8_0 {
			continue
		}
		w := decode(t, b)
		fa, fb := decode(t, m.A), decode(t, m.B) // A [r, in], B [out, r]
		r, in := int(m.A.Shape[0]), int(m.A.Shape[1])
		exp := make([]float32, len(w))
		for i := range int(m.B.Shape[0]) {
			for j := range in {
				d := 0.0
				for k := range r {
					d += float64(fb[i*r+k]) * float64(fa[k*in+j])
				}
				exp[i*in+j] = float32(float64(w[i*in+j]) + user*m.Scale*d)
			}
		}
		enc := make([]byte, len(b.Data))
		if err := quant.Encode(tensor.Q8_0, enc, exp, in, nil); err != nil {
			t.Fatal(err)
		}
		g, _ := got.Tensor(m.Target)
		if g.DType != tensor.Q8_0 || !bytes.Equal(g.Data, enc) {
			t.Errorf("%s: %s, not Q8_0(deq(W)+ΔW) bit for bit (max abs diff %g)", m.Target, g.DType, maxAbsDiff(t, g, tensor.View{Name: "want", DType: tensor.Q8_0, Shape: b.Shape, Data: enc}))
		}
		checked++
	}
	if checked != 42 {
		t.Errorf("%d Q8_0 tensors checked, want 42", checked)
	}
}

// TestMergeOutType: --outtype re-encodes only the merged tensors. Into the f32 GGUF base with OutType Q8_0 they are
// Q8_0 of the f32 merge, bit for bit, the rest stays f32 and byte-identical; into safetensors with BF16 they are the
// BF16 rounding of the f32 merge. Block types are refused for safetensors, and block types whose blocks do not tile
// the rows are refused.
func TestMergeOutType(t *testing.T) {
	root := sharedModel(t)
	peft := openAdapter(t, filepath.Join(root, "lora-shakespeare-a"))
	gbase, err := gguf.Open(filepath.Join(root, "gguf", "tiny-llama-a-f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer gbase.Close()
	ref := mergedGGUF(t, gbase, []*Adapter{peft}, MergeOptions{})
	q8 := mergedGGUF(t, gbase, []*Adapter{peft}, MergeOptions{OutType: tensor.Q8_0})
	requant := 0
	for _, info := range gbase.Tensors() {
		g, _ := q8.Tensor(info.Name)
		b, _ := gbase.Tensor(info.Name)
		r, _ := ref.Tensor(info.Name)
		if bytes.Equal(r.Data, b.Data) {
			if g.DType != b.DType || !bytes.Equal(g.Data, b.Data) {
				t.Errorf("%s: untouched tensor became %s / changed", info.Name, g.DType)
			}
			continue
		}
		enc := make([]byte, len(g.Data))
		if err := quant.Encode(tensor.Q8_0, enc, decode(t, r), int(info.Shape[len(info.Shape)-1]), nil); err != nil {
			t.Fatal(err)
		}
		if g.DType != tensor.Q8_0 || !bytes.Equal(g.Data, enc) {
			t.Errorf("%s: %s, not Q8_0 of the f32 merge", info.Name, g.DType)
		}
		requant++
	}
	if requant != 42 {
		t.Errorf("%d tensors re-encoded, want 42", requant)
	}

	base, err := safetensors.Open(filepath.Join(root, "hf", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	f32m := mergedSet(t, base, []*Adapter{peft}, MergeOptions{})
	bf := mergedSet(t, base, []*Adapter{peft}, MergeOptions{OutType: tensor.BF16})
	for _, m := range peft.Modules {
		g, _ := bf.Tensor(m.Target)
		r, _ := f32m.Tensor(m.Target)
		want := make([]byte, len(r.Data)/2)
		tensor.FromFloat32(want, decode(t, r), tensor.BF16)
		if g.DType != tensor.BF16 || !bytes.Equal(g.Data, want) {
			t.Errorf("%s: %s, not the BF16 rounding of the f32 merge", m.Target, g.DType)
		}
	}
	if err := MergeAllSafetensors(&bytes.Buffer{}, base, []*Adapter{peft}, MergeOptions{OutType: tensor.Q8_0}); err == nil {
		t.Error("safetensors with OutType Q8_0: no error")
	}
	if err := canWrite("x", tensor.Q4_K, tensor.Shape{4, 96}); err == nil {
		t.Error("Q4_K rows of 96: no error")
	}
}

// TestMergeModulesToSave: a PEFT adapter's full copy of a base tensor (modules_to_save) replaces it, converted to the
// base tensor's dtype, before the adapter's own LoRA update of it; a copy of another shape, or of a tensor the base
// lacks, is an error.
func TestMergeModulesToSave(t *testing.T) {
	base := memSet(t, f32("l.weight", tensor.Shape{2, 2}, 1, 0, 0, 1), f32("n.weight", tensor.Shape{2}, 1, 1))
	a := openAdapter(t, writePEFT(t, `{"r": 1, "lora_alpha": 1, "modules_to_save": ["l", "n"]}`,
		f32("base_model.model.l.lora_A.weight", tensor.Shape{1, 2}, 1, 0),
		f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, 0, 1),
		f32("base_model.model.l.weight", tensor.Shape{2, 2}, 5, 6, 7, 8),
		f32("base_model.model.n.weight", tensor.Shape{2}, 2, 3)))
	out := mergedSet(t, base, []*Adapter{a}, MergeOptions{Scale: 3})
	l, _ := out.Tensor("l.weight")
	n, _ := out.Tensor("n.weight")
	if got := decode(t, l); !equalFloats(got, []float32{5, 6, 10, 8}) {
		t.Errorf("l.weight = %v, want the copy plus 3·BA = [5 6 10 8]", got)
	}
	if got := decode(t, n); !equalFloats(got, []float32{2, 3}) {
		t.Errorf("n.weight = %v, want the copy [2 3]", got)
	}
	for _, bad := range []tensor.View{
		f32("base_model.model.n.weight", tensor.Shape{3}, 1, 2, 3),
		f32("base_model.model.x.weight", tensor.Shape{2}, 1, 2),
	} {
		b := openAdapter(t, writePEFT(t, `{"r": 1, "lora_alpha": 1}`,
			f32("base_model.model.l.lora_A.weight", tensor.Shape{1, 2}, 1, 0),
			f32("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, 0, 1), bad))
		if err := MergeAllSafetensors(&bytes.Buffer{}, base, []*Adapter{b}, MergeOptions{}); err == nil {
			t.Errorf("copy %s %v: no error", bad.Name, bad.Shape)
		} else {
			t.Log(err)
		}
	}
}
