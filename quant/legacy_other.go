//go:build !amd64 || noasm

package quant

import "github.com/lathe-ml/lathe/tensor"

func legacyAsm(t tensor.DType, dst []byte, src []float32) int { return 0 }

func q8_0Asm(dst []byte, src []float32) int { return 0 }
