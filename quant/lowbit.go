package quant

import (
	"math"

	"github.com/lathe-ml/lathe/tensor"
)

// Q1_0 and Q2_0 (ggml-quants.c quantize_row_q1_0_ref, quantize_row_q2_0_ref and their dequantizers): an F16 scale
// and packed 1- or 2-bit codes, element j at bit j (Q1_0) or bits 2(j%4) of byte j/4 (Q2_0). ggml_quantize_chunk
// ignores the importance matrix for both.

func init() {
	register(tensor.Q1_0, codec{encodeRow: encodeQ1_0, decode: decodeQ1_0})
	register(tensor.Q2_0, codec{encodeRow: encodeQ2_0, decode: decodeQ2_0})
}

const (
	qk1_0 = 128
	qk2_0 = 64
)

// encodeQ1_0 stores signs (x >= 0 sets the bit) under the scale mean |x|.
func encodeQ1_0(dst []byte, src, _ []float32) {
	for b := range len(src) / qk1_0 {
		x, y := src[b*qk1_0:][:qk1_0], dst[b*18:][:18]
		var sum float32
		for _, v := range x {
			sum += abs32(v)
		}
		putF16(y, sum/qk1_0)
		qs := y[2:18]
		for k := range qs {
			var q uint8
			for i, v := range x[8*k : 8*k+8] {
				var bit uint8
				if v >= 0 { // a compare and a conditional move: a branch would mispredict on random signs
					bit = 1
				}
				q |= bit << i
			}
			qs[k] = q
		}
	}
}

func decodeQ1_0(dst []float32, src []byte) {
	for b := range len(dst) / qk1_0 {
		y, x := dst[b*qk1_0:][:qk1_0], src[b*18:][:18]
		// A clear bit gives -d, which is d with its sign flipped: set the sign from the bit without a branch.
		d := math.Float32bits(getF16(x))
		for j := range y {
			neg := uint32(^x[2+j/8]>>(j%8)&1) << 31
			y[j] = math.Float32frombits(d ^ neg)
		}
	}
}

// encodeQ2_0 rounds x/amax half away from zero to the codes {-1, 0, 1, 2}, stored plus one.
func encodeQ2_0(dst []byte, src, _ []float32) {
	for b := range len(src) / qk2_0 {
		x, y := src[b*qk2_0:][:qk2_0], dst[b*18:][:18]
		amax := math.Float32frombits(absMaxBits(x)) // the largest |x| that `if (a > amax)` finds, NaN skipped
		var id float32
		if amax > 0 {
			id = 1 / amax
		}
		putF16(y, amax)
		qs := y[2:18]
		clear(qs)
		for j, v := range x {
			q := clampInt(int(roundToInt32(v*id))+1, 0, 3)
			qs[j/4] |= uint8(q) << (2 * (j % 4))
		}
	}
}

func decodeQ2_0(dst []float32, src []byte) {
	for b := range len(dst) / qk2_0 {
		y, x := dst[b*qk2_0:][:qk2_0], src[b*18:][:18]
		d := getF16(x)
		for j := range y {
			y[j] = float32(int(x[2+j/4]>>(2*(j%4))&3)-1) * d
		}
	}
}
