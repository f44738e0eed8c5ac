//go:build noasm || !amd64

package tensor

const hasF16C = false

func float32ToF16Asm([]byte, []float32) int { return 0 }

func f16ToFloat32Asm([]float32, []byte) int { return 0 }
