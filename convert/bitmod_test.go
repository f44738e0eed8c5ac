package convert_test

import (
	"bytes"
	"encoding/binary"
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// syntheticImportance is an uneven per-column weighting, so that weighting changes both the error and the choice.
func syntheticImportance(cols int) []float32 {
	w := make([]float32, cols)
	for j := range w {
		w[j] = 0.5 + float32((j*7919)%13)
	}
	return w
}

// TestBitMoDBeatsQ4_0AndIQ4_NL is issue 5's acceptance comparison, on the linear weights of two blocks of
// tiny-llama-a at exactly 4.5 bits per weight, the cost of Q4_0 and IQ4_NL (a 16-bit scale per 32 weights): BitMoD
// groups of 32 with the type id in the scale's low mantissa bits and the least-squares scale search. The paper's set
// (ER/EA, here with signed scales) beats Q4_0 but not IQ4_NL; adding the IQ4_NL codebook and INT4 as candidates
// (bitmod4nl) beats both, with plain MSE and, selecting with the importance weights that ggml's encoders also get,
// with importance-weighted error. The scale search is checked to help.
func TestBitMoDBeatsQ4_0AndIQ4_NL(t *testing.T) {
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
		{"bitmod4", quant.BitMoD4S, quant.GroupOptions{Group: 32, IDInScale: true, ScaleSearch: 7}},
		{"bitmod4-nosearch", quant.BitMoD4S, quant.GroupOptions{Group: 32, IDInScale: true}},
		{"bitmod4nl", quant.BitMoD4NL, quant.GroupOptions{Group: 32, IDInScale: true, ScaleSearch: 7}},
	}
	ggml := []tensor.DType{tensor.Q4_0, tensor.IQ4_NL}
	plain, weighted := map[string]float64{}, map[string]float64{}
	add := func(m map[string]float64, name string, x, y, w []float32) {
		for i, v := range x {
			d := float64(y[i]) - float64(v)
			if w != nil {
				d *= math.Sqrt(float64(w[i%len(w)]))
			}
			m[name] += d * d
		}
	}
	tensors := 0
	for _, ti := range in.Tensors() {
		if len(ti.Shape) != 2 || !(strings.HasPrefix(ti.Name, "blk.0.") || strings.HasPrefix(ti.Name, "blk.3.")) {
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
		imp := syntheticImportance(ne0)
		y := make([]float32, len(x))
		for _, vr := range variants {
			if vr.types == nil {
				continue
			}
			if got := quant.GroupBPW(vr.types, vr.opts.Group, vr.opts.IDInScale); got != 4.5 {
				t.Fatalf("%s costs %v bits per weight, want 4.5", vr.name, got)
			}
			if _, err := quant.FakeQuantGroups(y, x, ne0, vr.types, vr.opts); err != nil {
				t.Fatal(err)
			}
			add(plain, vr.name, x, y, nil)
			o := vr.opts
			o.Importance = imp
			if _, err := quant.FakeQuantGroups(y, x, ne0, vr.types, o); err != nil {
				t.Fatal(err)
			}
			add(weighted, vr.name, x, y, imp)
		}
		for _, typ := range ggml {
			n, _ := typ.Bytes(int64(len(x)))
			enc := make([]byte, n)
			for _, w := range [][]float32{nil, imp} {
				if err := quant.Encode(typ, enc, x, ne0, w); err != nil {
					t.Fatal(err)
				}
				if err := quant.Decode(typ, y, enc); err != nil {
					t.Fatal(err)
				}
				if w == nil {
					add(plain, typ.String(), x, y, nil)
				} else {
					add(weighted, typ.String(), x, y, imp)
				}
			}
		}
		tensors++
	}
	if tensors != 14 {
		t.Fatalf("%d weights of blocks 0 and 3, want 14", tensors)
	}
	for _, n := range []string{"bitmod4", "bitmod4-nosearch", "bitmod4nl", "Q4_0", "IQ4_NL"} {
		t.Logf("%-18s 4.5 bpw  squared error %.5g  importance-weighted %.5g", n, plain[n], weighted[n])
	}
	for _, c := range [][2]string{{"bitmod4", "Q4_0"}, {"bitmod4nl", "Q4_0"}, {"bitmod4nl", "IQ4_NL"}, {"bitmod4", "bitmod4-nosearch"}} {
		for _, m := range []map[string]float64{plain, weighted} {
			if m[c[0]] >= m[c[1]] {
				t.Errorf("%s error %g is not below %s's %g", c[0], m[c[0]], c[1], m[c[1]])
			}
		}
	}
	// The paper's set alone does not reach IQ4_NL; if it ever does, the documentation is out of date.
	if plain["bitmod4"] <= plain["IQ4_NL"] {
		t.Errorf("bitmod4 (%g) now beats IQ4_NL (%g): update docs/bitmod.md", plain["bitmod4"], plain["IQ4_NL"])
	}
}

// smallCheckpoint is a few tensors of tiny-llama-a's checkpoint (two quantizable weights, a norm and the
// embedding), in memory.
func smallCheckpoint(t testing.TB) safetensors.Set {
	src, err := safetensors.Open(testshared.Path(t, "models", "tiny-llama-a", "hf", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var views []tensor.View
	for _, name := range []string{"model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
		"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"} {
		v, err := src.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		views = append(views, tensor.View{Name: v.Name, DType: v.DType, Shape: v.Shape, Data: bytes.Clone(v.Data)})
	}
	return writeSet(t, views, map[string]string{"format": "pt"})
}

func writeSet(t testing.TB, views []tensor.View, md map[string]string) *safetensors.File {
	b := setBytes(t, views, md)
	f, err := safetensors.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// setBytes is a safetensors file of views in their order.
func setBytes(t testing.TB, views []tensor.View, md map[string]string) []byte {
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, views, md, safetensors.KeepOrder()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeBitMoD(t testing.TB, in safetensors.Set, opts convert.BitMoDOptions) (*safetensors.File, *convert.BitMoDReport, []byte) {
	var buf bytes.Buffer
	r, err := convert.WriteBitMoD(&buf, in, opts)
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	return f, r, buf.Bytes()
}

// TestBitMoDPackedRoundTrip writes packed and fake-quant files of the same checkpoint for several layouts (type ids
// in the scales, in their own tensor, 3-bit codes, importance weighting) and checks: decoding the packed file gives
// the fake-quant F32 values bit for bit, and its F16 rounding is the F16 fake-quant file; unchanged tensors are
// copied byte for byte; the packed parts take exactly the bits per weight GroupBPW counts; the errors reported are
// those of the decoded values.
func TestBitMoDPackedRoundTrip(t *testing.T) {
	in := smallCheckpoint(t)
	im := &convert.Imatrix{Entries: map[string][]float32{
		"blk.0.attn_q.weight": syntheticImportance(256), "blk.1.ffn_down.weight": syntheticImportance(768)}}
	for _, c := range []struct {
		name string
		opts convert.BitMoDOptions
	}{
		{"bitmod4-g32-id", convert.BitMoDOptions{Types: quant.BitMoD4S, Group: 32, IDInScale: true, ScaleSearch: 3}},
		{"bitmod4nl-g128-imatrix", convert.BitMoDOptions{Types: quant.BitMoD4NL, IDInScale: true, Imatrix: im}},
		{"bitmod3-paper-g64-types", convert.BitMoDOptions{Types: quant.BitMoD3, Group: 64}},
		{"bitmod4nl-g32-types", convert.BitMoDOptions{Types: quant.BitMoD4NL, Group: 32, ScaleSearch: 2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			packed, report, _ := writeBitMoD(t, in, c.opts)
			opts := c.opts
			opts.FakeQuant = tensor.F32
			fake32, fakeReport, _ := writeBitMoD(t, in, opts)
			opts.FakeQuant = tensor.F16
			fake16, _, _ := writeBitMoD(t, in, opts)
			if !convert.IsBitMoD(packed) || convert.IsBitMoD(fake32) {
				t.Fatal("IsBitMoD does not tell the packed file from the fake-quant one")
			}
			dec, err := convert.DecodeBitMoD(packed)
			if err != nil {
				t.Fatal(err)
			}
			if convert.IsBitMoD(dec) {
				t.Error("decoded set still carries the layout metadata")
			}
			var packedBytes, elements int64
			for _, ti := range packed.Tensors() {
				if strings.Contains(ti.Name, ".bitmod_") {
					packedBytes += ti.Size
				}
			}
			for _, ti := range in.Tensors() {
				orig, _ := in.Tensor(ti.Name)
				got, err := dec.Tensor(ti.Name)
				if err != nil {
					t.Fatal(err)
				}
				want, _ := fake32.Tensor(ti.Name)
				w16, _ := fake16.Tensor(ti.Name)
				if len(ti.Shape) == 2 && !strings.Contains(ti.Name, "embed") {
					elements += int64(len(got.Data) / 4)
					if !bytes.Equal(got.Data, want.Data) || got.DType != tensor.F32 || !got.Shape.Equal(ti.Shape) {
						t.Errorf("%s: decoded packed tensor differs from the fake-quant output", ti.Name)
					}
					x, _ := got.Float32s()
					h := make([]byte, 2*len(x))
					if err := tensor.FromFloat32(h, x, tensor.F16); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(h, w16.Data) {
						t.Errorf("%s: F16 fake-quant output is not the decoded values rounded to F16", ti.Name)
					}
					if bytes.Equal(got.Data, orig.Data) {
						t.Errorf("%s: quantized tensor is unchanged", ti.Name)
					}
				} else if !bytes.Equal(got.Data, orig.Data) || !bytes.Equal(want.Data, orig.Data) || got.DType != ti.DType {
					t.Errorf("%s: tensor left as it is was changed", ti.Name)
				}
			}
			if bpw := 8 * float64(packedBytes) / float64(elements); math.Abs(bpw-report.BPW) > 1e-9 {
				t.Errorf("packed parts take %.5f bits per weight, GroupBPW says %.5f", bpw, report.BPW)
			}
			if report.Error != fakeReport.Error || len(report.Tensors) != 2 || report.Weighted != (c.opts.Imatrix != nil) {
				t.Errorf("reports differ or are incomplete: %+v, %+v", report, fakeReport)
			}
			for _, bt := range report.Tensors {
				x := setFloats(t, in, bt.Name)
				y := setFloats(t, dec, bt.Name)
				var imp []float32
				if c.opts.Imatrix != nil {
					imp, _ = c.opts.Imatrix.Lookup(bt.Name)
				}
				var e float64
				for i := range x {
					d := float64(y[i]) - float64(x[i])
					if imp != nil {
						d *= math.Sqrt(float64(imp[i%len(imp)]))
					}
					e += d * d
				}
				if math.Abs(e-bt.Error) > 1e-9*e {
					t.Errorf("%s: reported error %g, decoded values give %g", bt.Name, bt.Error, e)
				}
			}
		})
	}
}

// TestBitMoDPackedGolden checks the layout byte by byte on a row built from exact multiples of one table: INT3
// values 0.5·(-3..3, 0) in one group of 8 have scale 0.5 (fp16 0x3800), codes 0..6 then 3 packed 3 bits each,
// LSB first, and no type ids.
func TestBitMoDPackedGolden(t *testing.T) {
	x := []float32{-1.5, -1, -0.5, 0, 0.5, 1, 1.5, 0}
	data := make([]byte, 32)
	for i, v := range x {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	in := writeSet(t, []tensor.View{{Name: "w.weight", DType: tensor.F32, Shape: tensor.Shape{1, 8}, Data: data}}, nil)
	packed, _, _ := writeBitMoD(t, in, convert.BitMoDOptions{Types: []quant.Datatype{quant.INT3}, Group: 8})
	codes, err := packed.Tensor("w.weight.bitmod_codes")
	if err != nil {
		t.Fatal(err)
	}
	// codes 0,1,2,3,4,5,6,3 → bits 000 100 010 110 001 101 011 110 (LSB first) → 0x88 0xC6 0x7A
	if want := []byte{0x88, 0xC6, 0x7A}; !bytes.Equal(codes.Data, want) {
		t.Errorf("codes % x, want % x", codes.Data, want)
	}
	scales, _ := packed.Tensor("w.weight.bitmod_scales")
	if want := []byte{0x00, 0x38}; !bytes.Equal(scales.Data, want) {
		t.Errorf("scale % x, want % x", scales.Data, want)
	}
	if _, ok := packed.Lookup("w.weight.bitmod_types"); ok {
		t.Error("a single type got a type id tensor")
	}
	md := packed.Metadata()
	if md["lathe.bitmod.types"] != `[{"name":"int3","values":[-3,-2,-1,0,1,2,3]}]` || md["lathe.bitmod.group"] != "8" ||
		md["lathe.bitmod.code_bits"] != "3" || md["format"] != "pt" {
		t.Errorf("metadata %v", md)
	}
	dec, err := convert.DecodeBitMoD(packed)
	if err != nil {
		t.Fatal(err)
	}
	if got := setFloats(t, dec, "w.weight"); !equalFloats(got, x) {
		t.Errorf("decoded %v, want %v", got, x)
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

// packedCase is a small packed file to break: one weight of 2 rows × 64 with four 4-bit types, ids in a tensor.
func packedCase(t testing.TB) (views []tensor.View, md map[string]string) {
	x := make([]float32, 128)
	for i := range x {
		x[i] = float32(math.Sin(float64(i)))
	}
	data := make([]byte, 4*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	in := writeSet(t, []tensor.View{{Name: "w.weight", DType: tensor.F32, Shape: tensor.Shape{2, 64}, Data: data},
		{Name: "norm", DType: tensor.F32, Shape: tensor.Shape{1}, Data: make([]byte, 4)}}, nil)
	packed, _, _ := writeBitMoD(t, in, convert.BitMoDOptions{Types: quant.BitMoD4, Group: 32})
	for _, ti := range packed.Tensors() {
		v, _ := packed.Tensor(ti.Name)
		views = append(views, tensor.View{Name: v.Name, DType: v.DType, Shape: v.Shape, Data: bytes.Clone(v.Data)})
	}
	return views, packed.Metadata()
}

// TestDecodeBitMoDRejects breaks a valid packed file one way at a time; each must fail with an error naming what
// was wrong.
func TestDecodeBitMoDRejects(t *testing.T) {
	for _, c := range []struct {
		name, want string
		edit       func(views []tensor.View, md map[string]string) []tensor.View
	}{
		{"version", "version", func(v []tensor.View, md map[string]string) []tensor.View { md["lathe.bitmod.version"] = "2"; return v }},
		{"group", "lathe.bitmod.group", func(v []tensor.View, md map[string]string) []tensor.View { md["lathe.bitmod.group"] = "x"; return v }},
		{"group size", "has shape", func(v []tensor.View, md map[string]string) []tensor.View { md["lathe.bitmod.group"] = "16"; return v }},
		{"types json", "JSON", func(v []tensor.View, md map[string]string) []tensor.View { md["lathe.bitmod.types"] = "[{"; return v }},
		{"unsorted values", "not finite and above", func(v []tensor.View, md map[string]string) []tensor.View {
			md["lathe.bitmod.types"] = `[{"name":"a","values":[1,0]}]`
			return v
		}},
		{"code width", "code_bits", func(v []tensor.View, md map[string]string) []tensor.View {
			md["lathe.bitmod.code_bits"] = "3"
			return v
		}},
		{"missing scales", "has no w.weight.bitmod_scales", func(v []tensor.View, md map[string]string) []tensor.View {
			return drop(v, "w.weight.bitmod_scales")
		}},
		{"missing types", "has no w.weight.bitmod_types", func(v []tensor.View, md map[string]string) []tensor.View {
			return drop(v, "w.weight.bitmod_types")
		}},
		{"orphan scales", "has no .bitmod_codes", func(v []tensor.View, md map[string]string) []tensor.View {
			return drop(v, "w.weight.bitmod_codes")
		}},
		{"scales dtype", "want F16", func(v []tensor.View, md map[string]string) []tensor.View {
			s := find(v, "w.weight.bitmod_scales")
			s.DType, s.Shape = tensor.U8, tensor.Shape{2, 4}
			return v
		}},
		{"type id range", "type id", func(v []tensor.View, md map[string]string) []tensor.View {
			md["lathe.bitmod.types"] = `[{"name":"a","values":[0,1]},{"name":"b","values":[0,2]},{"name":"c","values":[0,3]}]`
			md["lathe.bitmod.code_bits"] = "4"
			find(v, "w.weight.bitmod_types").Data[0] = 0xFF
			return v
		}},
		{"code range", "has code", func(v []tensor.View, md map[string]string) []tensor.View {
			md["lathe.bitmod.types"] = `[{"name":"a","values":[0,1]},{"name":"b","values":[0,2]},{"name":"c","values":[0,3]},{"name":"d","values":[0,4]}]`
			return v
		}},
		{"packed and plain", "both packed and plain", func(v []tensor.View, md map[string]string) []tensor.View {
			return append(v, tensor.View{Name: "w.weight", DType: tensor.F32, Shape: tensor.Shape{1}, Data: make([]byte, 4)})
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			views, md := packedCase(t)
			views = c.edit(views, md)
			_, err := convert.DecodeBitMoD(writeSet(t, views, md))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one mentioning %q", err, c.want)
			}
		})
	}
}

func find(views []tensor.View, name string) *tensor.View {
	for i := range views {
		if views[i].Name == name {
			return &views[i]
		}
	}
	panic("no tensor " + name)
}

func drop(views []tensor.View, name string) []tensor.View {
	var out []tensor.View
	for _, v := range views {
		if v.Name != name {
			out = append(out, v)
		}
	}
	return out
}

// FuzzBitMoD decodes arbitrary files as packed checkpoints: no input may panic or allocate beyond its size.
func FuzzBitMoD(f *testing.F) {
	views, md := packedCase(f)
	seed := setBytes(f, views, md)
	f.Add(seed)
	f.Add(bytes.Replace(seed, []byte(`"lathe.bitmod.group":"32"`), []byte(`"lathe.bitmod.group":"99"`), 1))
	f.Add(bytes.Replace(seed, []byte(`[2,32]`), []byte(`[2,33]`), 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := safetensors.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		dec, err := convert.DecodeBitMoD(s)
		if err != nil || dec == nil {
			return
		}
		for _, ti := range dec.Tensors() {
			if _, err := dec.Tensor(ti.Name); err != nil {
				t.Fatalf("decoded set cannot read its own tensor %q: %v", ti.Name, err)
			}
		}
	})
}

func setFloats(t testing.TB, s safetensors.Set, name string) []float32 {
	t.Helper()
	v, err := s.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	f, err := v.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestBitMoDDeterministic writes the same packed file with one thread and with all: the bytes must not differ.
func TestBitMoDDeterministic(t *testing.T) {
	in := smallCheckpoint(t)
	opts := convert.BitMoDOptions{Types: quant.BitMoD4NL, Group: 32, IDInScale: true, ScaleSearch: 3}
	_, _, all := writeBitMoD(t, in, opts)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	_, _, one := writeBitMoD(t, in, opts)
	if !bytes.Equal(all, one) {
		t.Fatal("packed output depends on the number of threads")
	}
}
