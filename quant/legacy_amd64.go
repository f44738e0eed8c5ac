//go:build !noasm

package quant

import "golang.org/x/sys/cpu"

var hasAVX2F16C = cpu.X86.HasAVX2 && cpu.X86.HasF16C

//go:noescape
func q4_0RowAVX2(dst *byte, src *float32, nb int)

//go:noescape
func q8_0RowAVX2(dst *byte, src *float32, nb int) int

// q4_0Asm encodes as many whole Q4_0 blocks of src as it can (all of them, or none without AVX2 and F16C) and
// returns how many.
func q4_0Asm(dst []byte, src []float32) int {
	nb := len(src) / qk
	if !hasAVX2F16C || nb == 0 {
		return 0
	}
	_ = dst[nb*18-1]
	q4_0RowAVX2(&dst[0], &src[0], nb)
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
