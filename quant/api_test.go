package quant_test

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/tensor"
)

// TestEncodeDecodeRejectBadArguments checks that every size mismatch is an error naming what was expected,
// and that nothing panics.
func TestEncodeDecodeRejectBadArguments(t *testing.T) {
	x := make([]float32, 2*256)
	for _, tc := range []struct {
		name    string
		err     error
		wantSub string
	}{
		{"not whole rows", quant.Encode(tensor.Q4_K, make([]byte, 288), x[:300], 256, nil), "not whole rows"},
		{"row not whole blocks", quant.Encode(tensor.Q4_K, make([]byte, 288), x, 128, nil), "block size 256"},
		{"zero row length", quant.Encode(tensor.Q8_0, nil, x, 0, nil), "not whole rows"},
		{"short dst", quant.Encode(tensor.Q8_0, make([]byte, 543), x, 256, nil), "need 544 bytes"},
		{"importance length", quant.Encode(tensor.Q4_K, make([]byte, 288), x, 256, make([]float32, 255)), "255 weights"},
		{"encode unsupported", quant.Encode(tensor.Q8_K, make([]byte, 584), x, 256, nil), "not supported"},
		{"encode F32", quant.Encode(tensor.F32, make([]byte, 2048), x, 256, nil), "not supported"},
		{"decode short src", quant.Decode(tensor.Q6_K, x, make([]byte, 419)), "need 420 bytes"},
		{"decode partial block", quant.Decode(tensor.Q6_K, x[:100], make([]byte, 210)), "whole blocks"},
		{"decode unsupported", quant.Decode(tensor.Q8_1, x[:32], make([]byte, 36)), "not supported"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.wantSub) {
			t.Errorf("%s: got error %v, want one mentioning %q", tc.name, tc.err, tc.wantSub)
		}
	}
}

// TestRegistry checks what the package claims to support against ggml: every type ggml_quantize_chunk
// quantizes can be encoded and decoded, and exactly IQ2_XXS, IQ2_XS and IQ1_S require an importance matrix
// (ggml_quantize_requires_imatrix).
func TestRegistry(t *testing.T) {
	for _, typ := range []tensor.DType{tensor.F16, tensor.BF16, tensor.Q4_0, tensor.Q4_1, tensor.Q5_0, tensor.Q5_1,
		tensor.Q8_0, tensor.Q2_K, tensor.Q3_K, tensor.Q4_K, tensor.Q5_K, tensor.Q6_K, tensor.IQ2_XXS, tensor.IQ2_XS,
		tensor.IQ3_XXS, tensor.IQ1_S, tensor.IQ4_NL, tensor.IQ3_S, tensor.IQ2_S, tensor.IQ4_XS, tensor.IQ1_M,
		tensor.TQ1_0, tensor.TQ2_0, tensor.MXFP4, tensor.NVFP4, tensor.Q1_0, tensor.Q2_0} {
		if !quant.CanEncode(typ) || !quant.CanDecode(typ) {
			t.Errorf("%s: CanEncode %v, CanDecode %v, want both", typ, quant.CanEncode(typ), quant.CanDecode(typ))
		}
		want := typ == tensor.IQ2_XXS || typ == tensor.IQ2_XS || typ == tensor.IQ1_S
		if got := quant.RequiresImatrix(typ); got != want {
			t.Errorf("%s: RequiresImatrix %v, want %v", typ, got, want)
		}
	}
	if quant.CanEncode(tensor.Q8_K) || !quant.CanDecode(tensor.Q8_K) {
		t.Error("Q8_K is ggml's dot-product intermediate: decodable, not produced by ggml_quantize_chunk")
	}
}

// TestDecodeQ8_K checks dequantize_row_q8_K on a hand-built block: y = d·q with an F32 d.
func TestDecodeQ8_K(t *testing.T) {
	blk := make([]byte, 292)
	binary.LittleEndian.PutUint32(blk, math.Float32bits(-0.375))
	for j := range 256 {
		blk[4+j] = byte(int8(j - 128))
	}
	y := make([]float32, 256)
	if err := quant.Decode(tensor.Q8_K, y, blk); err != nil {
		t.Fatal(err)
	}
	for j, v := range y {
		if want := float32(-0.375) * float32(j-128); v != want {
			t.Fatalf("element %d: got %g, want %g", j, v, want)
		}
	}
}

// TestF16NaN checks ggml's NaN rules, which the goldens (all finite) do not reach: every NaN encodes to the
// quiet NaN 0x7E00 with its sign, and a signalling F16 NaN decodes quiet.
func TestF16NaN(t *testing.T) {
	src := []float32{math.Float32frombits(0x7f800001), math.Float32frombits(0xffc00123), 1}
	dst := make([]byte, 6)
	if err := quant.Encode(tensor.F16, dst, src, 3, nil); err != nil {
		t.Fatal(err)
	}
	if got := []uint16{binary.LittleEndian.Uint16(dst), binary.LittleEndian.Uint16(dst[2:]),
		binary.LittleEndian.Uint16(dst[4:])}; got[0] != 0x7e00 || got[1] != 0xfe00 || got[2] != 0x3c00 {
		t.Errorf("encoded %#04x, want [0x7e00 0xfe00 0x3c00]", got)
	}
	y := make([]float32, 1)
	if err := quant.Decode(tensor.F16, y, []byte{0x01, 0x7c}); err != nil {
		t.Fatal(err)
	}
	if got := math.Float32bits(y[0]); got != 0x7fc02000 {
		t.Errorf("signalling NaN 0x7c01 decoded to %#08x, want the quiet 0x7fc02000", got)
	}
}
