package kernels

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// The row primitives. Each public function checks its lengths, runs the vector kernel on the largest multiple of
// its width (8 lanes on AVX2+FMA) and finishes the tail with the portable code, which is also the whole
// implementation under noasm or on other architectures. The *Go functions are the portable versions; tests
// compare them with the public ones.

// Dot returns Σ x[i]·y[i]. It panics if len(y) < len(x).
func Dot(x, y []float32) float32 {
	y = y[:len(x)]
	n := vecBody(len(x))
	var s float32
	if n > 0 {
		s = dotVec(x[:n], y[:n])
	}
	return s + dotGo(x[n:], y[n:])
}

// Axpy sets y[i] += alpha·x[i]. It panics if len(y) < len(x).
func Axpy(alpha float32, x, y []float32) {
	y = y[:len(x)]
	n := vecBody(len(x))
	if n > 0 {
		axpyVec(alpha, x[:n], y[:n])
	}
	axpyGo(alpha, x[n:], y[n:])
}

// Scale sets x[i] *= alpha.
func Scale(alpha float32, x []float32) {
	n := vecBody(len(x))
	if n > 0 {
		scaleVec(alpha, x[:n])
	}
	scaleGo(alpha, x[n:])
}

// SumSquares returns Σ x[i]².
func SumSquares(x []float32) float32 {
	n := vecBody(len(x))
	var s float32
	if n > 0 {
		s = sumSquaresVec(x[:n])
	}
	return s + sumSquaresGo(x[n:])
}

// SoftmaxRow replaces x by softmax(x) = exp(x[i] − max x) / Σ exp(x[j] − max x) and returns log Σ exp(x[j]) of the
// input (the log-partition, so a cross-entropy loss is the return value minus the target's logit). Subtracting the
// maximum first keeps every exponent ≤ 0, so no term overflows. An empty row returns −Inf.
func SoftmaxRow(x []float32) float32 {
	if len(x) == 0 {
		return float32(math.Inf(-1))
	}
	m, sum := softmax(x)
	return m + float32(math.Log(float64(sum)))
}

// Softmax is SoftmaxRow without the log-partition, whose logarithm costs as much as softmax of a short row
// (attention's rows are 1 to a few hundred values). An empty row is left as it is.
func Softmax(x []float32) {
	if len(x) > 0 {
		softmax(x)
	}
}

// softmax replaces a non-empty x by its softmax and returns the maximum and the sum of the shifted exponentials.
func softmax(x []float32) (m, sum float32) {
	n := vecBody(len(x))
	m = float32(math.Inf(-1))
	if n > 0 {
		m = maxVec(x[:n])
	}
	m = max(m, maxGo(x[n:]))
	if n > 0 {
		sum = expShiftSumVec(x[:n], m)
	}
	sum += expShiftSumGo(x[n:], m)
	Scale(1/sum, x)
	return m, sum
}

// RMSNormRow sets dst[i] = x[i]·weight[i]/√(mean(x²)+eps), as in LLaMA's RMSNorm, and returns the inverse RMS
// 1/√(mean(x²)+eps), which the backward pass reuses. dst may be x. It panics if dst or weight is shorter than x.
func RMSNormRow(dst, x, weight []float32, eps float32) float32 {
	dst = dst[:len(x)]
	weight = weight[:len(x)]
	if len(x) == 0 {
		return 0
	}
	ms := float64(SumSquares(x)) / float64(len(x))
	inv := float32(1 / math.Sqrt(ms+float64(eps)))
	n := vecBody(len(x))
	if n > 0 {
		mulScaleVec(dst[:n], x[:n], weight[:n], inv)
	}
	mulScaleGo(dst[n:], x[n:], weight[n:], inv)
	return inv
}

// SiLUMul sets dst[i] = silu(gate[i])·up[i], with silu(g) = g/(1+e^−g): the SwiGLU activation of LLaMA's MLP.
// dst may alias gate or up. It panics if gate, up or dst is shorter than the others.
func SiLUMul(dst, gate, up []float32) {
	if len(gate) != len(up) || len(dst) < len(gate) {
		panic(fmt.Sprintf("kernels: SiLUMul: lengths dst=%d gate=%d up=%d", len(dst), len(gate), len(up)))
	}
	dst = dst[:len(gate)]
	n := vecBody(len(gate))
	if n > 0 {
		siluMulVec(dst[:n], gate[:n], up[:n])
	}
	siluMulGo(dst[n:], gate[n:], up[n:])
}

// SiLUMulGrad is the backward pass of SiLUMul: given dh, the gradient of dst = silu(gate)·up, it sets
// du[i] = dh[i]·silu(gate[i]) and dg[i] = dh[i]·up[i]·σ(gate[i])·(1 + gate[i]·(1−σ(gate[i]))), with σ the logistic
// function. The outputs must not alias the inputs. It panics if any slice is shorter than gate.
func SiLUMulGrad(dg, du, dh, gate, up []float32) {
	n := len(gate)
	if len(up) < n || len(dh) < n || len(dg) < n || len(du) < n {
		panic(fmt.Sprintf("kernels: SiLUMulGrad: lengths dg=%d du=%d dh=%d gate=%d up=%d", len(dg), len(du),
			len(dh), n, len(up)))
	}
	dg, du, dh, up = dg[:n], du[:n], dh[:n], up[:n]
	b := vecBody(n)
	if b > 0 {
		siluMulGradVec(dg[:b], du[:b], dh[:b], gate[:b], up[:b])
	}
	siluMulGradGo(dg[b:], du[b:], dh[b:], gate[b:], up[b:])
}

// F16ToF32Row widens len(dst) little-endian IEEE half-precision values from src (2 bytes each), exactly.
func F16ToF32Row(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	n := f16Body(len(dst))
	if n > 0 {
		f16ToF32Vec(dst[:n], src[:2*n])
	}
	f16ToF32Go(dst[n:], src[2*n:])
}

// F32ToF16Row narrows len(src) values to little-endian IEEE half precision in dst (2 bytes each) with
// round-to-nearest-even, as x448/float16 and VCVTPS2PH with immediate 0 (whatever MXCSR says) do.
func F32ToF16Row(dst []byte, src []float32) {
	dst = dst[:2*len(src)]
	n := f16Body(len(src))
	if n > 0 {
		f32ToF16Vec(dst[:2*n], src[:n])
	}
	f32ToF16Go(dst[2*n:], src[n:])
}

// BF16ToF32Row widens len(dst) little-endian bfloat16 values from src (2 bytes each), exactly.
func BF16ToF32Row(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	n := vecBody(len(dst))
	if n > 0 {
		bf16ToF32Vec(dst[:n], src[:2*n])
	}
	bf16ToF32Go(dst[n:], src[2*n:])
}

// Portable versions. Four independent accumulators let the loops issue one add per cycle instead of waiting on
// the latency of a single chain.

func dotGo(x, y []float32) float32 {
	y = y[:len(x)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		s0 += x[i] * y[i]
		s1 += x[i+1] * y[i+1]
		s2 += x[i+2] * y[i+2]
		s3 += x[i+3] * y[i+3]
	}
	for ; i < len(x); i++ {
		s0 += x[i] * y[i]
	}
	return (s0 + s1) + (s2 + s3)
}

func axpyGo(alpha float32, x, y []float32) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += alpha * v
	}
}

func scaleGo(alpha float32, x []float32) {
	for i := range x {
		x[i] *= alpha
	}
}

func sumSquaresGo(x []float32) float32 {
	return dotGo(x, x)
}

func maxGo(x []float32) float32 {
	m := float32(math.Inf(-1))
	for _, v := range x {
		m = max(m, v)
	}
	return m
}

func expShiftSumGo(x []float32, m float32) float32 {
	var s float32
	for i, v := range x {
		e := expf(v - m)
		x[i] = e
		s += e
	}
	return s
}

func mulScaleGo(dst, x, w []float32, s float32) {
	dst = dst[:len(x)]
	w = w[:len(x)]
	for i, v := range x {
		dst[i] = v * s * w[i]
	}
}

func siluMulGo(dst, g, u []float32) {
	dst = dst[:len(g)]
	u = u[:len(g)]
	for i, v := range g {
		dst[i] = v * u[i] / (1 + expf(-v))
	}
}

func siluMulGradGo(dg, du, dh, g, u []float32) {
	dg, du, dh, u = dg[:len(g)], du[:len(g)], dh[:len(g)], u[:len(g)]
	for i, v := range g {
		s := 1 / (1 + expf(-v))
		d := dh[i] * s
		du[i] = d * v
		dg[i] = d * u[i] * (1 + v*(1-s))
	}
}

func f16ToF32Go(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = f16ToF32(uint16(src[2*i]) | uint16(src[2*i+1])<<8)
	}
}

// f16ToF32 widens one IEEE 754 binary16 value: subnormals are renormalised, Inf and NaN keep their payload.
func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
	case man == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal: value = man·2^−24; shift the leading one into the implicit position.
	e := uint32(113)
	for man&0x400 == 0 {
		man <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (man&0x3ff)<<13)
}

func f32ToF16Go(dst []byte, src []float32) {
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], float16.Fromfloat32(v).Bits())
	}
}

func bf16ToF32Go(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = math.Float32frombits(uint32(src[2*i])<<16 | uint32(src[2*i+1])<<24)
	}
}

// expf is e^x in float32 by Cody–Waite range reduction and a degree-6 polynomial (Cephes expf): x = n·ln2 + r
// with |r| <= ln2/2, e^x = 2^n·P(r). Relative error within 2 ulp over the clamped range. Inputs are clamped to
// [expLo, expHi] so 2^n stays a normal float: below, the result is 2^−126 instead of a subnormal or zero (both
// vanish next to the softmax denominator's 1); above, it is 2^127·P(r) < MaxFloat32 instead of +Inf. The vector
// kernels evaluate the same steps.
func expf(x float32) float32 {
	x = min(max(x, expLo), expHi)
	n := float32(math.Floor(float64(x*log2e) + 0.5))
	r := x - n*expC1
	r -= n * expC2
	p := float32(expP0)
	p = p*r + expP1
	p = p*r + expP2
	p = p*r + expP3
	p = p*r + expP4
	p = p*r + expP5
	p = p*r*r + r + 1
	return p * math.Float32frombits(uint32(int32(n)+127)<<23)
}

const (
	expHi = 88.3762626647949
	expLo = -87.3365478515625 // ≈ ln 2^−126
	log2e = 1.44269504088896341
	expC1 = 0.693359375 // ln 2 split so that n·expC1 is exact for |n| < 2^9
	expC2 = -2.12194440e-4
	expP0 = 1.9875691500e-4
	expP1 = 1.3981999507e-3
	expP2 = 8.3334519073e-3
	expP3 = 4.1665795894e-2
	expP4 = 1.6666665459e-1
	expP5 = 5.0000001201e-1
)
