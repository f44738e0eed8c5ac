//go:build !noasm

package quant

import (
	"golang.org/x/sys/cpu"

	"github.com/lathe-ml/lathe/tensor"
)

var hasAVX2F16C = cpu.X86.HasAVX2 && cpu.X86.HasF16C

//go:noescape
func symRowAVX2(dst *byte, src *float32, nb int, q5 bool)

//go:noescape
func asymRowAVX2(dst *byte, src *float32, nb int, q5 bool)

//go:noescape
func q8_0RowAVX2(dst *byte, src *float32, nb int) int

// legacyAsm encodes every block of src as Q4_0, Q4_1, Q5_0 or Q5_1 (quantize_row_*_ref) and returns how many
// blocks it did: all, or none without AVX2 and F16C.
func legacyAsm(t tensor.DType, dst []byte, src []float32) int {
	nb := len(src) / qk
	if !hasAVX2F16C || nb == 0 {
		return 0
	}
	_ = dst[nb*t.BlockBytes()-1]
	switch t {
	case tensor.Q4_0, tensor.Q5_0:
		symRowAVX2(&dst[0], &src[0], nb, t == tensor.Q5_0)
	case tensor.Q4_1, tensor.Q5_1:
		asymRowAVX2(&dst[0], &src[0], nb, t == tensor.Q5_1)
	default:
		return 0
	}
	return nb
}

// q8_0Asm encodes Q8_0 blocks of src up to the first one holding a NaN and returns how many.
func q8_0Asm(dst []byte, src []float32) int {
	nb := len(src) / qk
	if !hasAVX2F16C || nb == 0 {
		return 0
	}
	_ = dst[nb*34-1]
	return q8_0RowAVX2(&dst[0], &src[0], nb)
}
