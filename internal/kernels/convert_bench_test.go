package kernels

import "testing"

// The conversions between float32 and the 16-bit floats. b.SetBytes counts the float32 bytes read or written.

func benchWiden(b *testing.B, f func(dst []float32, src []byte)) {
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

func BenchmarkF16ToF32Row(b *testing.B)  { benchWiden(b, F16ToF32Row) }
func BenchmarkBF16ToF32Row(b *testing.B) { benchWiden(b, BF16ToF32Row) }

func BenchmarkF32ToF16Row(b *testing.B) {
	const n = 1 << 16
	src := make([]float32, n)
	for i := range src {
		src[i] = float32(i) * 0.37
	}
	dst := make([]byte, 2*n)
	b.SetBytes(4 * n)
	for b.Loop() {
		F32ToF16Row(dst, src)
	}
}
