package kernels

import (
	"math/rand/v2"
	"testing"
)

// Row benchmarks at the sizes the trainer uses (hidden 576, MLP 1536, vocabulary 49152), each against the portable
// version; b.SetBytes counts the float32 elements read, so MB/s compares across sizes.

func benchRow(b *testing.B, n int, vec, portable func(x, y, z []float32)) {
	r := rand.New(rand.NewPCG(1, 1))
	x, y, z := randVec(r, n, 4), randVec(r, n, 1), make([]float32, n)
	for _, c := range []struct {
		name string
		f    func(x, y, z []float32)
	}{{"vector", vec}, {"go", portable}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(4 * n))
			for b.Loop() {
				c.f(x, y, z)
			}
		})
	}
}

func BenchmarkDot(b *testing.B) {
	var sink float32
	benchRow(b, 4096, func(x, y, _ []float32) { sink += Dot(x, y) }, func(x, y, _ []float32) { sink += dotGo(x, y) })
}

func BenchmarkAxpy(b *testing.B) {
	benchRow(b, 4096, func(x, y, _ []float32) { Axpy(1e-3, x, y) }, func(x, y, _ []float32) { axpyGo(1e-3, x, y) })
}

func BenchmarkSumSquares(b *testing.B) {
	var sink float32
	benchRow(b, 4096, func(x, _, _ []float32) { sink += SumSquares(x) },
		func(x, _, _ []float32) { sink += sumSquaresGo(x) })
}

func BenchmarkSoftmaxRow49152(b *testing.B) {
	benchRow(b, 49152, func(x, _, z []float32) { copy(z, x); SoftmaxRow(z) },
		func(x, _, z []float32) {
			copy(z, x)
			m := maxGo(z)
			scaleGo(1/expShiftSumGo(z, m), z)
		})
}

func BenchmarkRMSNormRow576(b *testing.B) {
	benchRow(b, 576, func(x, w, z []float32) { RMSNormRow(z, x, w, 1e-5) },
		func(x, w, z []float32) { mulScaleGo(z, x, w, 1/sumSquaresGo(x)) })
}

func BenchmarkSiLUMul1536(b *testing.B) {
	benchRow(b, 1536, func(g, u, z []float32) { SiLUMul(z, g, u) }, func(g, u, z []float32) { siluMulGo(z, g, u) })
}

func BenchmarkSiLUMulGrad1536(b *testing.B) {
	dg, du := make([]float32, 1536), make([]float32, 1536)
	benchRow(b, 1536, func(g, u, z []float32) { SiLUMulGrad(dg, du, z, g, u) },
		func(g, u, z []float32) { siluMulGradGo(dg, du, z, g, u) })
}
