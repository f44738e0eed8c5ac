package kernels

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// BenchShape is one GEMM shape to measure: C(m×n) = op(A)(m×k)·op(B)(k×n).
type BenchShape struct {
	Name           string
	TransA, TransB bool
	M, N, K        int
}

// BenchShapes are the shapes lathe's own work runs: square sizes, the GEMMs of one SmolLM2-135M layer at 512
// tokens (hidden 576, MLP 1536) in the transposes of the forward pass (Y = X·Wᵀ), the input gradient (dX = dY·W)
// and the weight gradient (dW = dYᵀ·X), and the tall-skinny products of blocked SVD.
var BenchShapes = []BenchShape{
	{"square 256", false, false, 256, 256, 256},
	{"square 512", false, false, 512, 512, 512},
	{"square 1024", false, false, 1024, 1024, 1024},
	{"square 2048", false, false, 2048, 2048, 2048},
	{"fwd q/o  X·Wᵀ", false, true, 512, 576, 576},
	{"fwd up   X·Wᵀ", false, true, 512, 1536, 576},
	{"fwd down X·Wᵀ", false, true, 512, 576, 1536},
	{"dX up    dY·W", false, false, 512, 576, 1536},
	{"dX down  dY·W", false, false, 512, 1536, 576},
	{"dW up    dYᵀ·X", true, false, 1536, 576, 512},
	{"dW down  dYᵀ·X", true, false, 576, 1536, 512},
	{"svd panel A·V", false, false, 4096, 64, 4096},
	{"svd update", false, false, 4096, 4096, 64},
	{"svd gram Vᵀ·A", true, false, 64, 4096, 4096},
}

// BenchResult is the measured speed of one shape.
type BenchResult struct {
	Shape   BenchShape
	Kernel  string // micro-kernel that ran
	Threads int
	// GFLOPS is the best rate over the rounds (2·m·n·k flops per call).
	GFLOPS float64
	// PeakGFLOPS is the best FMA-loop rate on the same threads, measured in rounds interleaved with the GEMM
	// ones; 0 when the CPU has no vector kernel to probe.
	PeakGFLOPS float64
	// Efficiency is the median over rounds of GEMM rate / peak rate of the same round, which stays meaningful
	// when the machine's speed drifts (shared cores, turbo) during the run.
	Efficiency float64
}

func (r BenchResult) String() string {
	s := fmt.Sprintf("%-16s %5d×%5d×%5d %s  %7.1f GFLOP/s", r.Shape.Name, r.Shape.M, r.Shape.N, r.Shape.K,
		r.Shape.Op(), r.GFLOPS)
	if r.PeakGFLOPS > 0 {
		s += fmt.Sprintf("  %5.1f%% of FMA peak", 100*r.Efficiency)
	}
	return s
}

func tr(t bool) string {
	if t {
		return "T"
	}
	return "N"
}

// Bench times Sgemm on each shape (nil means BenchShapes) for about d per shape, on threads goroutines (0 means
// Threads()), alternating rounds of GEMM and of the FMA peak probe. It is what `lathe bench` prints; it
// allocates the operands itself and leaves the thread setting as it found it.
func Bench(shapes []BenchShape, threads int, d time.Duration) []BenchResult {
	if shapes == nil {
		shapes = BenchShapes
	}
	if threads <= 0 {
		threads = Threads()
	}
	defer SetThreads(SetThreads(threads))
	var out []BenchResult
	for _, s := range shapes {
		out = append(out, benchShape(s, threads, d))
	}
	return out
}

// Flops is the floating-point operations of one product: a multiply and an add per term.
func (s BenchShape) Flops() float64 { return 2 * float64(s.M) * float64(s.N) * float64(s.K) }

// Op names the shape's transposes as BLAS does: "NT" is A·Bᵀ.
func (s BenchShape) Op() string { return tr(s.TransA) + tr(s.TransB) }

// Caller allocates the shape's operands, filled from a fixed sequence so that runs are comparable, and returns a
// function that runs Sgemm on them once. `lathe bench` and scripts/peers/pairs time it.
func (s BenchShape) Caller() func() {
	a := benchMatrix(s.M * s.K)
	b := benchMatrix(s.K * s.N)
	c := make([]float32, s.M*s.N)
	lda, ldb := s.K, s.N
	if s.TransA {
		lda = s.M
	}
	if s.TransB {
		ldb = s.K
	}
	return func() { Sgemm(s.TransA, s.TransB, s.M, s.N, s.K, 1, a, lda, b, ldb, 0, c, s.N) }
}

func benchShape(s BenchShape, threads int, d time.Duration) BenchResult {
	call := s.Caller()
	call() // warm the packing buffers and the worker pool
	flops := s.Flops()

	res := BenchResult{Shape: s, Kernel: sgemmImpl.name, Threads: threads}
	round := max(d/8, 20*time.Millisecond)
	var effs []float64
	for start := time.Now(); time.Since(start) < d || len(effs) < 3; {
		calls, el := 0, time.Duration(0)
		for t0 := time.Now(); el < round; el = time.Since(t0) {
			call()
			calls++
		}
		g := flops * float64(calls) / el.Seconds() / 1e9
		res.GFLOPS = max(res.GFLOPS, g)
		p := FMAPeak(threads, round/2)
		if p == 0 {
			effs = append(effs, 0)
			continue
		}
		res.PeakGFLOPS = max(res.PeakGFLOPS, p)
		effs = append(effs, g/p)
	}
	slices.Sort(effs)
	res.Efficiency = effs[len(effs)/2]
	return res
}

// benchMatrix returns n values in [-1, 1) from a fixed sequence, so runs are comparable.
func benchMatrix(n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(i*7919%2003)/1001.5 - 1
	}
	return x
}

// FMAPeak measures the float32 FMA throughput of threads goroutines running a loop of independent vector FMAs
// for about d, in GFLOP/s: the ceiling any GEMM on this machine can reach. It returns 0 when no vector kernel
// is in use (portable build or a CPU without AVX2+FMA).
func FMAPeak(threads int, d time.Duration) float64 {
	probe, flopsPerIter := fmaProbe()
	if probe == nil {
		return 0
	}
	const iters = 4096
	var wg sync.WaitGroup
	counts := make([]int, threads)
	t0 := time.Now()
	for t := 0; t < threads; t++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(t0) < d {
				probe(iters)
				counts[t]++
			}
		}()
	}
	wg.Wait()
	// Total work over the common wall time: if the goroutines share a core, this counts it once.
	el := time.Since(t0)
	total := 0
	for _, c := range counts {
		total += c
	}
	return flopsPerIter * iters * float64(total) / el.Seconds() / 1e9
}
