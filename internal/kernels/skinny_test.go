package kernels

import (
	"math"
	"testing"
)

// skinnyCases are products with at most 8 columns of C, the shapes the skinny path takes (LoRA factors of rank 8
// and less), in every transpose combination, with and without strides, with whole and partial blocks of 8 rows,
// and k across several skinnyDepth steps; and a few with at most 8 rows, which stay on the packed path.
func skinnyCases() []gemmCase {
	return []gemmCase{
		{m: 300, n: 8, k: 257, alpha: 1, beta: 0},
		{transB: true, m: 301, n: 8, k: 96, alpha: 0.5, beta: 1, pad: 3},
		{transA: true, m: 203, n: 5, k: 130, alpha: -1, beta: 0.25},
		{transA: true, transB: true, m: 64, n: 8, k: 33, alpha: 2, beta: 0, pad: 5},
		{m: 17, n: 1, k: 1000, alpha: 1, beta: 1},
		{transA: true, m: 1000, n: 7, k: 100, alpha: 1, beta: 0, pad: 1},
		{transA: true, m: 8, n: 300, k: 257, alpha: 1, beta: 1, pad: 2},
		{m: 8, n: 203, k: 64, alpha: 0.75, beta: 0},
		{m: 3, n: 67, k: 500, alpha: 1, beta: -0.5, pad: 7},
		{transA: true, m: 1, n: 9, k: 7, alpha: 1, beta: 0},
	}
}

// TestSkinny checks the skinny path of every implementation (assembly tiles and the portable tile) against the
// float64 reference, and that the implementations agree with each other.
func TestSkinny(t *testing.T) {
	impls := testImpls(sgemmImpls)
	for i, tc := range skinnyCases() {
		run := newGemmRun[float32](tc, uint64(500+i))
		ref := run.check(t, impls[len(impls)-1])
		for _, im := range impls[:len(impls)-1] {
			got := run.check(t, im)
			for e := range got {
				if d := math.Abs(float64(got[e] - ref[e])); d > 1e-5*float64(tc.k)*max(1, math.Abs(float64(ref[e]))) {
					t.Fatalf("%v: %s and %s differ at %d: %g vs %g", tc, im.name, impls[len(impls)-1].name, e,
						got[e], ref[e])
				}
			}
		}
	}
}

// TestSkinnyThreads checks that the skinny path gives bit-identical results for any thread count (the group of
// tiles a thread claims depends on it; the order in which a tile sums does not).
func TestSkinnyThreads(t *testing.T) {
	defer SetThreads(SetThreads(0))
	runs := []*gemmRun[float32]{
		newGemmRun[float32](gemmCase{m: 2000, n: 8, k: 300, alpha: 1, beta: 0.5}, 600),
		newGemmRun[float32](gemmCase{transA: true, m: 1500, n: 8, k: 400, alpha: 1, beta: 0}, 601),
	}
	for _, im := range testImpls(sgemmImpls) {
		SetThreads(1)
		first := [][]float32{runs[0].check(t, im), runs[1].check(t, im)}
		for _, th := range []int{2, 3, 8} {
			SetThreads(th)
			for i, run := range runs {
				if e := firstBitDiff(run.check(t, im), first[i]); e >= 0 {
					t.Fatalf("%s %v: %d threads differ from 1 thread at %d", im.name, run.tc, th, e)
				}
			}
		}
	}
}

// firstBitDiff returns the first index where a and b differ in any bit, or -1.
func firstBitDiff(a, b []float32) int {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

// TestSgemmSerial checks that SgemmSerial, on the packed and the skinny path, is bit-identical to Sgemm on two
// threads.
func TestSgemmSerial(t *testing.T) {
	defer SetThreads(SetThreads(2))
	for i, tc := range []gemmCase{
		{transB: true, m: 300, n: 200, k: 150, alpha: 1, beta: 0.5},
		{m: 1000, n: 8, k: 300, alpha: 1, beta: 0},
	} {
		run := newGemmRun[float32](tc, uint64(700+i))
		want := run.check(t, sgemmImpl)
		c := append([]float32(nil), run.c...)
		SgemmSerial(tc.transA, tc.transB, tc.m, tc.n, tc.k, float32(tc.alpha), run.a, run.lda, run.b, run.ldb,
			float32(tc.beta), c, run.ldc)
		got := make([]float32, 0, tc.m*tc.n)
		for i := 0; i < tc.m; i++ {
			got = append(got, c[i*run.ldc:i*run.ldc+tc.n]...)
		}
		if e := firstBitDiff(got, want); e >= 0 {
			t.Fatalf("%v: C[%d][%d] = %g, Sgemm gives %g", tc, e/tc.n, e%tc.n, got[e], want[e])
		}
	}
}

// BenchmarkSkinny times the skinny products of a rank-8 LoRA layer over 2048 tokens (tiny-llama-a's training step,
// width 768) on the skinny path and, for comparison, on the packed GEMM of the same kernel (GFLOP/s).
func BenchmarkSkinny(b *testing.B) {
	packed := &gemmImpl[float32]{name: sgemmImpl.name, mr: sgemmImpl.mr, nr: sgemmImpl.nr, kc: sgemmImpl.kc,
		mc: sgemmImpl.mc, nc: sgemmImpl.nc, micro: sgemmImpl.micro, portable: sgemmImpl.portable}
	for _, s := range []struct {
		name string
		tc   gemmCase
	}{
		{"x·Aᵀ", gemmCase{transB: true, m: 2048, n: 8, k: 768, alpha: 1}},
		{"dy·B", gemmCase{m: 2048, n: 8, k: 768, alpha: 1}},
		{"dyᵀ·h", gemmCase{transA: true, m: 768, n: 8, k: 2048, alpha: 1}},
	} {
		run, tc := newGemmRun[float32](s.tc, 1), s.tc
		for _, im := range []*gemmImpl[float32]{sgemmImpl, packed} {
			path := "skinny"
			if im == packed {
				path = "packed"
			}
			b.Run(s.name+"/"+path, func(b *testing.B) {
				for b.Loop() {
					gemm(im, tc.transA, tc.transB, tc.m, tc.n, tc.k, 1, run.a, run.lda, run.b, run.ldb, 0, run.c,
						run.ldc)
				}
				b.ReportMetric(2*float64(tc.m*tc.n*tc.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
