package kernels_test

import (
	"testing"

	"github.com/lathe-ml/lathe/internal/kernels"
	"github.com/lathe-ml/lathe/tensor"
)

// The widening conversions against the tensor package's table-driven (F16) and scalar (BF16) loops, to decide
// which one model loading should call. b.SetBytes counts the float32 bytes written.

func benchConvert(b *testing.B, f func(dst []float32, src []byte)) {
	const n = 1 << 16
	src := make([]byte, 2*n)
	for i := range src {
		src[i] = byte(i * 7)
	}
	dst := make([]float32, n)
	b.SetBytes(4 * n)
	for b.Loop() {
		f(dst, src)
	}
}

func BenchmarkF16ToF32Row(b *testing.B)        { benchConvert(b, kernels.F16ToF32Row) }
func BenchmarkTensorF16ToFloat32(b *testing.B) { benchConvert(b, tensor.F16ToFloat32) }
func BenchmarkBF16ToF32Row(b *testing.B)       { benchConvert(b, kernels.BF16ToF32Row) }
func BenchmarkTensorBF16ToFloat32(b *testing.B) {
	benchConvert(b, tensor.BF16ToFloat32)
}
