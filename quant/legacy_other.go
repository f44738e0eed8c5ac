//go:build !amd64 || noasm

package quant

func q4_0Asm(dst []byte, src []float32) int { return 0 }

func q8_0Asm(dst []byte, src []float32) int { return 0 }
