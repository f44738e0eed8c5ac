package train

import (
	"math"

	"github.com/lathe-ml/lathe/internal/kernels"
	"github.com/lathe-ml/lathe/tensor"
)

// ggml's CPU backend does not multiply float32 activations by a weight of another type directly: it first converts
// each activation row to the weight's vec_dot_type (type_traits_cpu in ggml-cpu.c) — F16 for F16 weights, 8-bit
// blocks for quantized ones — and takes integer or half-precision dot products. lathe rounds the activations the
// same way and multiplies the float32 values those rounded activations stand for, so it computes llama.cpp's
// products up to the order of summation. That is why its perplexities and greedy completions of quantized models
// match llama.cpp's rather than those of a float32 evaluation of the dequantized weights.

// activationType is the vec_dot_type of a weight type; F32 means the activations are used as they are.
func activationType(w tensor.DType) tensor.DType {
	switch w {
	case tensor.F16, tensor.BF16:
		return w
	case tensor.Q4_0, tensor.Q4_1, tensor.Q5_0, tensor.Q5_1, tensor.Q8_0, tensor.IQ4_NL, tensor.MXFP4:
		// Q8_1, the partner of Q4_1 and Q5_1, rounds the values as Q8_0 does; its extra block sum only
		// serves the min term.
		return tensor.Q8_0
	case tensor.Q2_K, tensor.Q3_K, tensor.Q4_K, tensor.Q5_K, tensor.Q6_K, tensor.IQ2_XXS, tensor.IQ2_XS,
		tensor.IQ3_XXS, tensor.IQ1_S, tensor.IQ3_S, tensor.IQ2_S, tensor.IQ4_XS, tensor.IQ1_M, tensor.TQ1_0,
		tensor.TQ2_0:
		return tensor.Q8_K
	}
	return tensor.F32
}

// roundActivations writes into dst what each value of x becomes once converted to type t and back. Rows of cols
// values are converted independently, in blocks of the type's block size.
func roundActivations(dst, x []float32, t tensor.DType, cols int, half []byte) {
	switch t {
	case tensor.F16:
		roundF16(dst, x, half)
	case tensor.BF16:
		tensor.Float32ToBF16(half[:2*len(x)], x)
		kernels.BF16ToF32Row(dst[:len(x)], half)
	case tensor.Q8_0:
		for i := 0; i+32 <= len(x); i += 32 {
			roundQ8_0(dst[i:i+32], x[i:i+32])
		}
	case tensor.Q8_K:
		for i := 0; i+256 <= len(x); i += 256 {
			roundQ8_K(dst[i:i+256], x[i:i+256])
		}
	default:
		copy(dst, x)
	}
}

// roundQ8_0 is quantize_row_q8_0 as ggml's AVX2 code runs it: d = max|x|/127 stored as F16, q = round-half-even of
// x·127/max|x|; the value is then d·q.
func roundQ8_0(dst, x []float32) {
	var amax float32
	for _, v := range x {
		amax = max(amax, abs32(v))
	}
	var h [2]byte
	tensor.Float32ToF16(h[:], []float32{amax / 127})
	var d [1]float32
	tensor.F16ToFloat32(d[:], h[:])
	var id float32
	if amax != 0 {
		id = 127 / amax
	}
	for i, v := range x {
		dst[i] = d[0] * nearestInt(v*id)
	}
}

// roundQ8_K is quantize_row_q8_K_ref: the value of largest magnitude (the first, if tied) maps to -127, iscale =
// -127/max, q = min(127, nearest_int(iscale·x)), d = 1/iscale as float32; the value is then d·q.
func roundQ8_K(dst, x []float32) {
	var amax, mx float32
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, mx = a, v
		}
	}
	if amax == 0 {
		clear(dst)
		return
	}
	iscale := -127 / mx
	d := 1 / iscale
	for i, v := range x {
		q := nearestInt(iscale * v)
		if q > 127 { // only the largest magnitude, when it is positive, rounds to 128 before the cap
			q = 127
		}
		dst[i] = d * q
	}
}

// nearestInt rounds to the nearest integer, ties to even, as ggml's nearest_int and _mm256_round_ps do: adding
// 1.5·2²³ leaves the integer in the low mantissa bits. Valid for |x| < 2²².
func nearestInt(x float32) float32 {
	return float32(int32(math.Float32bits(x+12582912)&0x7FFFFF) - 0x400000)
}

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }
