package kernels

import (
	"fmt"
	"testing"
)

// BenchmarkPack measures the four packing routines (copying and transposing, for the A side with mr = 12 and the
// B side with nr = 32) in assembly and in portable Go, per element packed, on a 480×256 block of a 2000-wide
// matrix (a stride that is not a power of two, so cache-set aliasing does not distort the numbers).
func BenchmarkPack(b *testing.B) {
	const n, rows, kc = 2000, 480, 256
	src := benchMatrix(n * n)
	for _, w := range []int{12, 32} {
		for _, portable := range []bool{false, true} {
			im := &gemmImpl[float32]{mr: w, nr: w, portable: portable}
			dst := make([]float32, rows*kc)
			for _, c := range []struct {
				name string
				f    func()
			}{
				{"A_NoTrans", func() { im.packA(dst, src, n, false, 0, 0, rows, kc, 0, rows/w) }},
				{"A_Trans", func() { im.packA(dst, src, n, true, 0, 0, rows, kc, 0, rows/w) }},
				{"B_NoTrans", func() { im.packB(dst, src, n, false, 0, 0, kc, rows) }},
				{"B_Trans", func() { im.packB(dst, src, n, true, 0, 0, kc, rows) }},
			} {
				b.Run(fmt.Sprintf("%s/w=%d/portable=%v", c.name, w, portable), func(b *testing.B) {
					for b.Loop() {
						c.f()
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(rows*kc), "ns/elem")
				})
			}
		}
	}
}
