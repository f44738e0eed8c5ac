package quant

import (
	"math"

	"github.com/lathe-ml/lathe/tensor"
)

// MXFP4 and NVFP4 (ggml-quants.c quantize_row_mxfp4_ref, quantize_row_nvfp4_ref and their dequantizers): FP4
// E2M1 codes under a power-of-two E8M0 scale per 32 elements (MXFP4) or a UE4M3 scale per 16 (NVFP4). ggml keeps
// the code values doubled (kvaluesFP4) and halves the scales to compensate. The importance matrix is ignored.

func init() {
	register(tensor.MXFP4, codec{encodeRow: encodeMXFP4, decode: decodeMXFP4})
	register(tensor.NVFP4, codec{encodeRow: encodeNVFP4, decode: decodeNVFP4})
}

// kvaluesFP4 is kvalues_fp4 of ggml-common.h: twice the E2M1 values, indexed by the 4-bit code.
var kvaluesFP4 = [16]int8{0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12}

// fp4Grid holds kvaluesFP4[0..7]·e, the non-negative code values of one block scale e.
type fp4Grid [8]float32

func newFP4Grid(e float32) (g fp4Grid) {
	for i := range g {
		g[i] = float32(kvaluesFP4[i]) * e
	}
	return g
}

// bestIndex is best_index_mxfp4: the first of the 16 codes whose value is nearest x, the distances rounded to
// float32. Codes of the other sign than x are never strictly nearer than code 0 (their distance is |x| plus a
// non-negative amount), so only the eight values on x's side compete, mirrored for negative x; and since the
// distances are non-negative floats, their bit patterns order like them, so the first nearest is the smallest
// bits<<3 | index, found without branches.
func (g *fp4Grid) bestIndex(x float32) uint8 {
	if x != x {
		return 0 // every distance is NaN, and no later code compares below code 0's
	}
	a := abs32(x)
	key := func(i int) uint64 { return uint64(math.Float32bits(g[i]-a)&0x7fffffff)<<3 | uint64(i) }
	best := min(min(key(0), key(1)), min(key(2), key(3)), min(key(4), key(5)), min(key(6), key(7)))
	i := uint8(best & 7)
	if x < 0 && i != 0 {
		i += 8
	}
	return i
}

func fp4IndicesGo(idx []uint8, x []float32, g *fp4Grid) {
	idx = idx[:len(x)]
	for i, v := range x {
		idx[i] = g.bestIndex(v)
	}
}

// e8m0Half is GGML_E8M0_TO_FP32_HALF: 2^(e-128), subnormal for e < 2.
func e8m0Half(e uint8) float32 {
	if e < 2 {
		return math.Float32frombits(0x00200000 << e)
	}
	return math.Float32frombits(uint32(e-1) << 23)
}

func encodeMXFP4(dst []byte, src, _ []float32) {
	for b := range len(src) / qk {
		x, y := src[b*qk:][:qk], dst[b*17:][:17]
		var amax float32
		for _, v := range x {
			if a := abs32(v); amax < a {
				amax = a
			}
		}
		var e uint8
		if amax > 0 {
			// (uint8_t)(floorf(log2f(amax)) - 2 + 127); log2f is correctly rounded in glibc, which rounding
			// the float64 logarithm reproduces.
			l := float32(math.Floor(float64(float32(math.Log2(float64(amax))))))
			e = uint8(truncInt32(l - 2 + 127))
		}
		g := newFP4Grid(e8m0Half(e))
		y[0] = e
		var q [qk]uint8
		fp4Indices(q[:], x, &g)
		packNibbles(y[1:], &q)
	}
}

func decodeMXFP4(dst []float32, src []byte) {
	for b := range len(dst) / qk {
		y, x := dst[b*qk:][:qk], src[b*17:][:17]
		d := e8m0Half(x[0])
		for j, q := range x[1:17] {
			y[j] = float32(kvaluesFP4[q&0x0F]) * d
			y[j+qk/2] = float32(kvaluesFP4[q>>4]) * d
		}
	}
}

// ue4m3Half is ggml_ue4m3_to_fp32: the unsigned E4M3 scale (0x7F, its NaN, reads as 0) times 0.5.
var ue4m3Half = func() (t [256]float32) {
	for x := range t {
		exp, man := x>>3&0xF, x&7
		switch {
		case x == 0 || x == 0x7F:
		case exp == 0:
			t[x] = float32(math.Ldexp(float64(man), -9)) * 0.5
		default:
			t[x] = float32(math.Ldexp(1+float64(man)/8, exp-7)) * 0.5
		}
	}
	return t
}()

// fp32ToUE4M3 is ggml_fp32_to_ue4m3: round half up on the mantissa, saturating at 0x7E (448); zero, negative
// and NaN give 0.
func fp32ToUE4M3(x float32) uint8 {
	if !(x > 0) {
		return 0
	}
	if x > 448 {
		x = 448
	}
	bits := math.Float32bits(x)
	exp := int(bits>>23&0xFF) - 127 + 7
	man := int(bits >> 20 & 7)
	if exp <= 0 {
		m := min(int(truncInt32(float32(x*512)+0.5)), 7)
		if m < 1 {
			return 0
		}
		return uint8(m)
	}
	if exp >= 15 {
		return 0x7E
	}
	man += int(bits >> 19 & 1)
	if man > 7 {
		man = 0
		exp++
		if exp >= 15 {
			return 0x7E
		}
	}
	return uint8(exp<<3 | man)
}

const (
	qkNVFP4    = 64
	qkNVFP4Sub = 16
)

func encodeNVFP4(dst []byte, src, _ []float32) {
	for b := range len(src) / qkNVFP4 {
		x, y := src[b*qkNVFP4:][:qkNVFP4], dst[b*36:][:36]
		for s := range qkNVFP4 / qkNVFP4Sub {
			xb := x[s*qkNVFP4Sub:][:qkNVFP4Sub]
			var amax float32
			for _, v := range xb {
				if a := abs32(v); amax < a {
					amax = a
				}
			}
			ue := fp32ToUE4M3(amax / 6)
			y[s] = ue
			g := newFP4Grid(ue4m3Half[ue])
			var q [qkNVFP4Sub]uint8
			fp4Indices(q[:], xb, &g)
			qs := y[4+s*qkNVFP4Sub/2:][:qkNVFP4Sub/2]
			for j := range qs {
				qs[j] = q[j] | q[j+qkNVFP4Sub/2]<<4
			}
		}
	}
}

func decodeNVFP4(dst []float32, src []byte) {
	for b := range len(dst) / qkNVFP4 {
		y, x := dst[b*qkNVFP4:][:qkNVFP4], src[b*36:][:36]
		for s := range qkNVFP4 / qkNVFP4Sub {
			d := ue4m3Half[x[s]]
			yb := y[s*qkNVFP4Sub:][:qkNVFP4Sub]
			for j, q := range x[4+s*qkNVFP4Sub/2:][:qkNVFP4Sub/2] {
				yb[j] = float32(kvaluesFP4[q&0x0F]) * d
				yb[j+qkNVFP4Sub/2] = float32(kvaluesFP4[q>>4]) * d
			}
		}
	}
}
