package kernels

import (
	"fmt"
	"sync"
	"testing"
)

// TestPortableMicro runs both portable micro-kernels on every remainder of the unrolled k loop. The inputs are
// small integers, so every evaluation order gives the exact sum and the result is compared bit for bit; a C with
// a wider stride checks that nothing outside the tile is written.
func TestPortableMicro(t *testing.T) {
	const ldc, nr = 7, 4
	for _, mr := range []int{2, 4} {
		micro := portableImpl[float32](mr).micro
		for k := 0; k <= 13; k++ {
			a := make([]float32, mr*k)
			b := make([]float32, nr*k)
			for i := range a {
				a[i] = float32(i%5 - 2)
			}
			for i := range b {
				b[i] = float32(i%7 - 3)
			}
			for _, ab := range [][2]float32{{1, 0}, {2, 0.5}} {
				c := make([]float32, (mr-1)*ldc+nr+1)
				for i := range c {
					c[i] = float32(i) // never written outside the tile, scaled by beta inside it
				}
				pa, pb := &c[0], &c[0] // for k = 0, where the kernel must not read A or B
				if k > 0 {
					pa, pb = &a[0], &b[0]
				}
				micro(k, pa, pb, &c[0], ldc, ab[0], ab[1])
				for idx := range c {
					i, j := idx/ldc, idx%ldc
					want := float32(idx)
					if i < mr && j < nr {
						var s float32
						for p := 0; p < k; p++ {
							s += a[p*mr+i] * b[p*nr+j]
						}
						want = ab[0]*s + ab[1]*float32(idx)
					}
					if c[idx] != want {
						t.Errorf("%dx%d k=%d alpha=%g beta=%g: c[%d][%d] = %g, want %g", mr, nr, k, ab[0], ab[1],
							i, j, c[idx], want)
					}
				}
			}
		}
	}
}

// scalarPeak runs n steps of 14 independent chains c = c·m + d: one scalar multiply and one add per flop pair,
// with no loads, stores or loop overhead worth counting. Fourteen accumulators plus m fill the 15 XMM registers
// Go allocates on amd64 (X15 is the zero register; `go build -gcflags=-S` shows the loop as 14 MULSS, 14 ADDSS
// and reloads of m and d), enough chains in flight to cover the multiply-then-add latency. That is the most any
// GEMM written in scalar Go can issue here, whatever its tile. The sum is returned so the work is not dead.
func scalarPeak(n int, m, d float32) float32 {
	c0, c1, c2, c3, c4, c5, c6 := d, 2*d, 3*d, 4*d, 5*d, 6*d, 7*d
	c7, c8, c9, c10, c11, c12, c13 := 8*d, 9*d, 10*d, 11*d, 12*d, 13*d, 14*d
	for ; n > 0; n-- {
		c0 = c0*m + d
		c1 = c1*m + d
		c2 = c2*m + d
		c3 = c3*m + d
		c4 = c4*m + d
		c5 = c5*m + d
		c6 = c6*m + d
		c7 = c7*m + d
		c8 = c8*m + d
		c9 = c9*m + d
		c10 = c10*m + d
		c11 = c11*m + d
		c12 = c12*m + d
		c13 = c13*m + d
	}
	return c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11 + c12 + c13
}

// BenchmarkScalarPeak measures the scalar float32 multiply-add ceiling (scalarPeak) on 1 and 2 threads: the
// yardstick for the portable kernel, as BenchmarkFMAPeak is for the assembly ones. Under GOAMD64=v3 (or on
// arm64) the compiler fuses c·m + d into one FMA and the ceiling rises accordingly.
func BenchmarkScalarPeak(b *testing.B) {
	const steps = 1 << 18
	for _, th := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads=%d", th), func(b *testing.B) {
			sums := make([]float32, th)
			var wg sync.WaitGroup
			for b.Loop() {
				for t := range th {
					wg.Go(func() { sums[t] += scalarPeak(steps, 1-1.0/(1<<20), 1.0/(1<<20)) })
				}
				wg.Wait()
			}
			b.ReportMetric(28*steps*float64(th)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkPortableMicro times each portable micro-kernel alone on panels that stay in L1 (k = 256), on one
// thread: read against BenchmarkScalarPeak/threads=1, it shows how much of the ceiling the kernel's loop reaches
// before packing and memory traffic take their share.
func BenchmarkPortableMicro(b *testing.B) {
	const k = 256
	for _, mr := range []int{2, 4} {
		im := portableImpl[float32](mr)
		b.Run(im.name, func(b *testing.B) {
			a, bp := benchMatrix(mr*k), benchMatrix(im.nr*k)
			c := make([]float32, mr*im.nr)
			for b.Loop() {
				im.micro(k, &a[0], &bp[0], &c[0], im.nr, 1, 0)
			}
			b.ReportMetric(2*float64(mr*im.nr*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
