//go:build !noasm

package tensor

import "golang.org/x/sys/cpu"

// The F16C instructions convert 8 values per instruction with IEEE round-to-nearest-even, the same results as
// x448/float16 (TestF16AsmAgreesWithPureGo checks it); the pure-Go loops handle tails and CPUs without F16C.
var hasF16C = cpu.X86.HasAVX && cpu.X86.HasF16C

//go:noescape
func f32ToF16F16C(dst *byte, src *float32, n int)

//go:noescape
func f16ToF32F16C(dst *float32, src *byte, n int)

func float32ToF16Asm(dst []byte, src []float32) int {
	n := len(src) &^ 31
	if !hasF16C || n == 0 {
		return 0
	}
	f32ToF16F16C(&dst[0], &src[0], n)
	return n
}

func f16ToFloat32Asm(dst []float32, src []byte) int {
	n := len(dst) &^ 31
	if !hasF16C || n == 0 {
		return 0
	}
	f16ToF32F16C(&dst[0], &src[0], n)
	return n
}
