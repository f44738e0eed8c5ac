//go:build !amd64 || noasm

package kernels

// Without vector kernels every row is handled by the portable code: the bodies are empty and the *Vec functions
// are never called.

func vecBody(n int) int { return 0 }
func f16Body(n int) int { return 0 }

func dotVec(x, y []float32) float32                 { return dotGo(x, y) }
func sumSquaresVec(x []float32) float32             { return sumSquaresGo(x) }
func axpyVec(alpha float32, x, y []float32)         { axpyGo(alpha, x, y) }
func scaleVec(alpha float32, x []float32)           { scaleGo(alpha, x) }
func maxVec(x []float32) float32                    { return maxGo(x) }
func expShiftSumVec(x []float32, m float32) float32 { return expShiftSumGo(x, m) }
func siluMulVec(dst, g, u []float32)                { siluMulGo(dst, g, u) }
func mulScaleVec(dst, x, w []float32, s float32)    { mulScaleGo(dst, x, w, s) }
func siluMulGradVec(dg, du, dh, g, u []float32)     { siluMulGradGo(dg, du, dh, g, u) }
func f16ToF32Vec(dst []float32, src []byte)         { f16ToF32Go(dst, src) }
func bf16ToF32Vec(dst []float32, src []byte)        { bf16ToF32Go(dst, src) }
func f32ToF16Vec(dst []byte, src []float32)         { f32ToF16Go(dst, src) }
