package quant

import (
	"math"

	"github.com/lathe-ml/lathe/tensor"
)

// TQ1_0 and TQ2_0, the ternary types of BitNet b1.58 and TriLMs (ggml-quants.c quantize_row_tq{1,2}_0_ref,
// dequantize_row_tq{1,2}_0): trits x/amax rounded to {-1, 0, 1} and stored plus one, under an F16 scale amax.
// TQ2_0 packs 4 trits per byte (2 bits each); TQ1_0 packs 5 per byte as a base-3 number scaled to 0..255 so that
// multiplying by 3 moves the next trit into the top bits, plus 4 per byte in qh. ggml ignores the importance matrix.

func init() {
	register(tensor.TQ1_0, codec{encodeRow: encodeTQ1_0, decode: decodeTQ1_0})
	register(tensor.TQ2_0, codec{encodeRow: encodeTQ2_0, decode: decodeTQ2_0})
}

// trit is lroundf(x*id) + 1 stored in an int. |x*id| ≤ 1 unless id is infinite (a subnormal scale), so lroundf
// either rounds a small value half away from zero or gets ±Inf or NaN and returns LONG_MIN, whose low 32 bits
// plus one are 1; roundToInt32 agrees on both (its MinInt32 plus one has the same low bits, all that the
// packing keeps).
func trit(x, id float32) int { return int(roundToInt32(x*id) + 1) }

// tScale is d = amax with MAX(amax, fabsf(v)), which restarts after a NaN, and id = 1/d (0 for d = 0).
func tScale(x []float32) (d, id float32) {
	d = math.Float32frombits(absMaxBits(x))
	if hasNaN(x) {
		d = 0
		for _, v := range x {
			d = maxC(d, abs32(v))
		}
	}
	return d, inverse(d)
}

// encodeTQ1_0 fills qs[0:32] with elements 0..159 (byte m holds m, m+32, ..., m+128), qs[32:48] with 160..239
// (stride 16) and qh[0:4] with 240..255 (stride 4), each byte holding ceil(q·256/243) for its base-3 number q.
func encodeTQ1_0(dst []byte, src, _ []float32) {
	for b := range len(src) / qkK {
		x, y := src[b*qkK:][:qkK], dst[b*54:][:54]
		d, id := tScale(x)
		pack := func(out []byte, x []float32, stride, n int) {
			for m := range out {
				var q uint8
				for k := range n {
					q = q*3 + uint8(trit(x[m+k*stride], id))
				}
				if n == 4 {
					q *= 3 // the first trit goes to the top, as in a 5-trit byte
				}
				out[m] = uint8((uint16(q)*256 + 242) / 243)
			}
		}
		pack(y[0:32], x[0:160], 32, 5)
		pack(y[32:48], x[160:240], 16, 5)
		pack(y[48:52], x[240:256], 4, 4)
		putF16(y[52:], d)
	}
}

func decodeTQ1_0(dst []float32, src []byte) {
	pow3 := [5]uint8{1, 3, 9, 27, 81}
	for b := range len(dst) / qkK {
		y, x := dst[b*qkK:][:qkK], src[b*54:][:54]
		d := getF16(x[52:])
		unpack := func(y []float32, qs []byte, n int) {
			for k := range n {
				for m, q := range qs {
					t := int(uint16(q*pow3[k])*3>>8) - 1
					y[k*len(qs)+m] = float32(t) * d
				}
			}
		}
		unpack(y[0:160], x[0:32], 5)
		unpack(y[160:240], x[32:48], 5)
		unpack(y[240:256], x[48:52], 4)
	}
}

// encodeTQ2_0 stores element m+32n of each 128-element half in bits 2n of byte m.
func encodeTQ2_0(dst []byte, src, _ []float32) {
	for b := range len(src) / qkK {
		x, y := src[b*qkK:][:qkK], dst[b*66:][:66]
		d, id := tScale(x)
		for h := range 2 {
			xh := x[128*h:][:128]
			for m := range 32 {
				var q uint8
				for n := range 4 {
					q += uint8(trit(xh[m+32*n], id)&3) << (2 * n)
				}
				y[32*h+m] = q
			}
		}
		putF16(y[64:], d)
	}
}

func decodeTQ2_0(dst []float32, src []byte) {
	for b := range len(dst) / qkK {
		y, x := dst[b*qkK:][:qkK], src[b*66:][:66]
		d := getF16(x[64:])
		for h := range 2 {
			for n := range 4 {
				for m, q := range x[32*h : 32*h+32] {
					y[128*h+32*n+m] = float32(int(q>>(2*n)&3)-1) * d
				}
			}
		}
	}
}
