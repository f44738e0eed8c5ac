// Package kernels holds lathe's dense float32/float64 compute kernels: a cache-blocked, multi-threaded GEMM with
// Go-assembly micro-kernels (AVX-512 and AVX2+FMA, chosen at run time), symmetric rank-k products built on it, and
// the row primitives the runtime and trainer use (dot, axpy, softmax, RMSNorm, SiLU·mul, f16/bf16 widening).
//
// Every routine has a pure-Go version, used under the noasm build tag, on other architectures, and on CPUs
// without AVX2+FMA; tests run both versions on the same inputs. All matrices are row-major with an explicit
// leading dimension (the distance, in elements, between the starts of two rows), so a sub-matrix is a slice plus
// its parent's stride. Routines panic on arguments that break their documented shape contract, as the BLAS
// does: these are programming errors, never data errors.
//
// Results are deterministic for a given kernel (AVX-512, AVX2 or portable) whatever the thread count: the split of
// work across threads never changes the order in which any single output element is accumulated.
package kernels

import (
	"runtime"
	"sync/atomic"
)

// maxThreads caps the worker count; 0 means GOMAXPROCS.
var maxThreads atomic.Int32

// SetThreads sets how many goroutines a large GEMM is split across (n <= 0 restores the default, GOMAXPROCS) and
// returns the previous setting. The split depends only on the shape and this count, never on timing.
func SetThreads(n int) int {
	if n < 0 {
		n = 0
	}
	return int(maxThreads.Swap(int32(n)))
}

// Threads reports the number of goroutines a large GEMM uses.
func Threads() int {
	if n := int(maxThreads.Load()); n > 0 {
		return n
	}
	return runtime.GOMAXPROCS(0)
}
