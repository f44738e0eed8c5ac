package kernels

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

func benchGemm(b *testing.B, run func(transA, transB bool, m, n, k int, a, bm, c []float32)) {
	for _, s := range BenchShapes {
		name := fmt.Sprintf("%dx%dx%d_%s", s.M, s.N, s.K, s.Op())
		b.Run(name, func(b *testing.B) {
			a := benchMatrix(s.M * s.K)
			bm := benchMatrix(s.K * s.N)
			c := make([]float32, s.M*s.N)
			run(s.TransA, s.TransB, s.M, s.N, s.K, a, bm, c)
			for b.Loop() {
				run(s.TransA, s.TransB, s.M, s.N, s.K, a, bm, c)
			}
			b.ReportMetric(s.Flops()*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

func BenchmarkSgemm(b *testing.B) {
	for _, im := range sgemmImpls {
		b.Run(im.name, func(b *testing.B) {
			benchGemm(b, func(tA, tB bool, m, n, k int, a, bm, c []float32) {
				lda, ldb := k, n
				if tA {
					lda = m
				}
				if tB {
					ldb = k
				}
				gemm(im, tA, tB, m, n, k, 1, a, lda, bm, ldb, 0, c, n)
			})
		})
	}
}

// BenchmarkDgemm covers the float64 kernels on square shapes (the SVD's double-precision work).
func BenchmarkDgemm(b *testing.B) {
	for _, im := range dgemmImpls {
		for _, n := range []int{256, 1024} {
			b.Run(fmt.Sprintf("%s/%d", im.name, n), func(b *testing.B) {
				a, bm, c := make([]float64, n*n), make([]float64, n*n), make([]float64, n*n)
				for i := range a {
					a[i], bm[i] = float64(i%7)-3, float64(i%5)-2
				}
				for b.Loop() {
					gemm(im, false, false, n, n, n, 1, a, n, bm, n, 0, c, n)
				}
				b.ReportMetric(2*float64(n*n*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

func BenchmarkGonumSgemm(b *testing.B) {
	var impl gonum.Implementation
	benchGemm(b, func(tA, tB bool, m, n, k int, a, bm, c []float32) {
		ta, tb := blas.NoTrans, blas.NoTrans
		lda, ldb := k, n
		if tA {
			ta, lda = blas.Trans, m
		}
		if tB {
			tb, ldb = blas.Trans, k
		}
		impl.Sgemm(ta, tb, m, n, k, 1, a, lda, bm, ldb, 0, c, n)
	})
}

// BenchmarkFMAPeak is the ceiling the GEMM numbers are read against: independent vector FMAs on 1 and on all
// threads.
func BenchmarkFMAPeak(b *testing.B) {
	if p, _ := fmaProbe(); p == nil {
		b.Skip("no vector kernel on this CPU or build")
	}
	for _, th := range []int{1, Threads()} {
		b.Run(fmt.Sprintf("threads=%d", th), func(b *testing.B) {
			var g float64
			for b.Loop() {
				g = FMAPeak(th, 100*time.Millisecond)
			}
			b.ReportMetric(g, "GFLOP/s")
		})
	}
}

// BenchmarkEfficiency prints what `lathe bench` prints: every shape with its rate and its share of the FMA peak
// measured in interleaved rounds (run with -benchtime 1x; the machine's speed may drift during the run, the
// ratio much less).
func BenchmarkEfficiency(b *testing.B) {
	for b.Loop() {
		for _, r := range Bench(nil, 0, time.Second) {
			b.Log(r)
		}
	}
}

// TestBenchReports checks that Bench fills in every field `lathe bench` prints (no timing is asserted).
func TestBenchReports(t *testing.T) {
	shape := BenchShape{Name: "tiny", TransB: true, M: 64, N: 48, K: 32}
	rs := Bench([]BenchShape{shape}, 1, time.Millisecond)
	if len(rs) != 1 {
		t.Fatalf("got %d results, want 1", len(rs))
	}
	r := rs[0]
	if r.Shape != shape || r.Kernel != sgemmImpl.name || r.Threads != 1 || !(r.GFLOPS > 0) {
		t.Errorf("result %+v", r)
	}
	if p, _ := fmaProbe(); p != nil && !(r.PeakGFLOPS > 0 && r.Efficiency > 0) {
		t.Errorf("peak %g, efficiency %g: want both positive", r.PeakGFLOPS, r.Efficiency)
	}
	if s := r.String(); !strings.Contains(s, "64×   48×   32 NT") || !strings.Contains(s, "GFLOP/s") {
		t.Errorf("String() = %q", s)
	}
}
