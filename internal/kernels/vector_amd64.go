//go:build amd64 && !noasm

package kernels

import "golang.org/x/sys/cpu"

// Implemented in vector_amd64.s; n is a positive multiple of 8.

//go:noescape
func dotAVX2(x, y *float32, n int) float32

//go:noescape
func sumSquaresAVX2(x *float32, n int) float32

//go:noescape
func axpyAVX2(alpha float32, x, y *float32, n int)

//go:noescape
func scaleAVX2(alpha float32, x *float32, n int)

//go:noescape
func maxAVX2(x *float32, n int) float32

//go:noescape
func expShiftSumAVX2(x *float32, n int, m float32) float32

//go:noescape
func siluMulAVX2(dst, gate, up *float32, n int)

//go:noescape
func siluMulGradAVX2(dg, du, dh, gate, up *float32, n int)

//go:noescape
func mulScaleAVX2(dst, x, w *float32, n int, s float32)

//go:noescape
func f16ToF32F16C(dst *float32, src *byte, n int)

//go:noescape
func f32ToF16F16C(dst *byte, src *float32, n int)

//go:noescape
func bf16ToF32AVX2(dst *float32, src *byte, n int)

var hasF16C = hasAVX2 && cpu.X86.HasF16C

// vecBody returns how many leading elements of an n-element row the vector kernels take.
func vecBody(n int) int {
	if !hasAVX2 {
		return 0
	}
	return n &^ 7
}

func f16Body(n int) int {
	if !hasF16C {
		return 0
	}
	return n &^ 7
}

// The *Vec wrappers take slices already cut to a vecBody length (and matching lengths for the other operands).

func dotVec(x, y []float32) float32                 { return dotAVX2(&x[0], &y[0], len(x)) }
func sumSquaresVec(x []float32) float32             { return sumSquaresAVX2(&x[0], len(x)) }
func axpyVec(alpha float32, x, y []float32)         { axpyAVX2(alpha, &x[0], &y[0], len(x)) }
func scaleVec(alpha float32, x []float32)           { scaleAVX2(alpha, &x[0], len(x)) }
func maxVec(x []float32) float32                    { return maxAVX2(&x[0], len(x)) }
func expShiftSumVec(x []float32, m float32) float32 { return expShiftSumAVX2(&x[0], len(x), m) }
func siluMulVec(dst, g, u []float32)                { siluMulAVX2(&dst[0], &g[0], &u[0], len(g)) }
func mulScaleVec(dst, x, w []float32, s float32)    { mulScaleAVX2(&dst[0], &x[0], &w[0], len(x), s) }
func siluMulGradVec(dg, du, dh, g, u []float32) {
	siluMulGradAVX2(&dg[0], &du[0], &dh[0], &g[0], &u[0], len(g))
}
func f16ToF32Vec(dst []float32, src []byte)  { f16ToF32F16C(&dst[0], &src[0], len(dst)) }
func bf16ToF32Vec(dst []float32, src []byte) { bf16ToF32AVX2(&dst[0], &src[0], len(dst)) }
func f32ToF16Vec(dst []byte, src []float32)  { f32ToF16F16C(&dst[0], &src[0], len(src)) }
