package convert_test

import (
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/tensor"
)

// TestBitMoDOnTinyLlama measures per-group datatypes on every 2-D weight of tiny-llama-a against single datatypes
// and ggml's 4-bit types (all without an importance matrix). It asserts BitMoD's claim, that choosing among its
// four types per group beats each base type alone at the same group size, and that the scale search never hurts;
// the comparison with Q4_0 and IQ4_NL is logged (issue 5 wants BitMoD below both; it is not, see the log).
func TestBitMoDOnTinyLlama(t *testing.T) {
	in, err := gguf.Open(testshared.Path(t, "models", "tiny-llama-a", "gguf", "tiny-llama-a-f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	type variant struct {
		name  string
		types []quant.Datatype
		opts  quant.GroupOptions
	}
	variants := []variant{
		{"bitmod4-g128", quant.BitMoD4, quant.GroupOptions{}},
		{"bitmod4-g128-search5", quant.BitMoD4, quant.GroupOptions{ScaleSearch: 5}},
		{"fp4-g128", []quant.Datatype{quant.FP4E2M1}, quant.GroupOptions{}},
		{"int4-g128", []quant.Datatype{quant.INT4}, quant.GroupOptions{}},
		{"bitmod4-g32", quant.BitMoD4, quant.GroupOptions{Group: 32}},
		{"bitmod4-g32-search5", quant.BitMoD4, quant.GroupOptions{Group: 32, ScaleSearch: 5}},
		{"bitmod3-g128", quant.BitMoD3, quant.GroupOptions{}},
		{"int3-g128", []quant.Datatype{quant.INT3}, quant.GroupOptions{}},
	}
	ggml := []tensor.DType{tensor.Q4_0, tensor.IQ4_NL, tensor.Q3_K}
	sse := map[string]float64{}
	add := func(name string, x, y []float32) {
		for i, v := range x {
			d := float64(y[i]) - float64(v)
			sse[name] += d * d
		}
	}
	tensors := 0
	for _, ti := range in.Tensors() {
		if len(ti.Shape) != 2 || ti.DType != tensor.F32 || ti.Shape[1]%quant.BitMoDGroup != 0 {
			continue
		}
		v, err := in.Tensor(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		x, err := v.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		ne0 := int(ti.Shape[1])
		y := make([]float32, len(x))
		for _, vr := range variants {
			if _, err := quant.FakeQuantGroups(y, x, ne0, vr.types, vr.opts); err != nil {
				t.Fatal(err)
			}
			add(vr.name, x, y)
		}
		for _, typ := range ggml {
			n, _ := typ.Bytes(int64(len(x)))
			enc := make([]byte, n)
			if err := quant.Encode(typ, enc, x, ne0, nil); err != nil {
				t.Fatal(err)
			}
			if err := quant.Decode(typ, y, enc); err != nil {
				t.Fatal(err)
			}
			add(typ.String(), x, y)
		}
		tensors++
	}
	if tensors == 0 {
		t.Fatal("no 2-D F32 weights with rows of whole groups")
	}
	for _, vr := range variants {
		t.Logf("%-22s %.4f bpw  squared error %.5g", vr.name, quant.GroupBPW(vr.types, groupOf(vr.opts)), sse[vr.name])
	}
	for _, typ := range ggml {
		t.Logf("%-22s %.4f bpw  squared error %.5g", typ, float64(typ.Bits()), sse[typ.String()])
	}
	for _, c := range [][2]string{
		{"bitmod4-g128", "fp4-g128"}, {"bitmod4-g128", "int4-g128"}, {"bitmod3-g128", "int3-g128"},
	} {
		if sse[c[0]] >= sse[c[1]] {
			t.Errorf("%s error %g is not below %s's %g", c[0], sse[c[0]], c[1], sse[c[1]])
		}
	}
	for _, c := range [][2]string{{"bitmod4-g128-search5", "bitmod4-g128"}, {"bitmod4-g32-search5", "bitmod4-g32"}} {
		if sse[c[0]] > sse[c[1]] {
			t.Errorf("%s error %g is above %s's %g", c[0], sse[c[0]], c[1], sse[c[1]])
		}
	}
}

func groupOf(o quant.GroupOptions) int {
	if o.Group == 0 {
		return quant.BitMoDGroup
	}
	return o.Group
}
