//go:build amd64 && !noasm

package kernels

import "golang.org/x/sys/cpu"

// Implemented in gemm_amd64.s.

//go:noescape
func sgemm12x32AVX512(k int, a, b, c *float32, ldc int, alpha, beta float32)

//go:noescape
func sgemm12x32AVX512Direct(k int, a *float32, lda int, b, c *float32, ldc int, alpha, beta float32)

//go:noescape
func dgemm12x16AVX512(k int, a, b, c *float64, ldc int, alpha, beta float64)

//go:noescape
func sgemm6x16AVX2(k int, a, b, c *float32, ldc int, alpha, beta float32)

//go:noescape
func sgemm6x16AVX2Direct(k int, a *float32, lda int, b, c *float32, ldc int, alpha, beta float32)

//go:noescape
func skinny8x8AVX2(k int, x *float32, xr, xs int, y *float32, ys int, t *float32)

//go:noescape
func dgemm6x8AVX2(k int, a, b, c *float64, ldc int, alpha, beta float64)

func fmaPeakAVX512(n int)
func fmaPeakAVX2(n int)

// Block sizes: kc·nr·size (the B micro-panel streamed per kernel call) and mr·kc·size (the A micro-panel kept in
// L1) fit a 32–48 KiB L1d; kc·nc·size, the per-thread B block, takes about half of a 1–2 MiB L2; the shared A
// panel (mc·kc) is sized for L3. These are BLIS's SkylakeX choices, scaled for the mirrored tile.
var (
	avx512Sgemm = &gemmImpl[float32]{name: "avx512 12x32", mr: 12, nr: 32, kc: 384, mc: 3072, nc: 480, wholeB: 1 << 20,
		micro: sgemm12x32AVX512, direct: sgemm12x32AVX512Direct, tile: skinny8x8AVX2}
	avx512Dgemm = &gemmImpl[float64]{name: "avx512 12x16", mr: 12, nr: 16, kc: 256, mc: 1536, nc: 480, wholeB: 1 << 20,
		micro: dgemm12x16AVX512}
	avx2Sgemm = &gemmImpl[float32]{name: "avx2 6x16", mr: 6, nr: 16, kc: 256, mc: 1536, nc: 512, wholeB: 1 << 20,
		micro: sgemm6x16AVX2, direct: sgemm6x16AVX2Direct, tile: skinny8x8AVX2}
	avx2Dgemm = &gemmImpl[float64]{name: "avx2 6x8", mr: 6, nr: 8, kc: 256, mc: 768, nc: 512, wholeB: 1 << 20,
		micro: dgemm6x8AVX2}
)

var (
	hasAVX512 = cpu.X86.HasAVX512F
	hasAVX2   = cpu.X86.HasAVX2 && cpu.X86.HasFMA
)

// sgemmImpls and dgemmImpls list every implementation this CPU can run, fastest first; index 0 is the default.
var (
	sgemmImpls = pick(goSgemm, avx2Sgemm, avx512Sgemm)
	dgemmImpls = pick(goDgemm, avx2Dgemm, avx512Dgemm)
	sgemmImpl  = sgemmImpls[0]
	dgemmImpl  = dgemmImpls[0]
)

func pick[T float](portable, avx2, avx512 *gemmImpl[T]) []*gemmImpl[T] {
	var l []*gemmImpl[T]
	if hasAVX512 {
		l = append(l, avx512)
	}
	if hasAVX2 {
		l = append(l, avx2)
	}
	return append(l, portable)
}

// fmaProbe returns the FMA loop matching the float32 kernel in use and the flops of one of its iterations.
func fmaProbe() (func(n int), float64) {
	switch sgemmImpl {
	case avx512Sgemm:
		return fmaPeakAVX512, 768
	case avx2Sgemm:
		return fmaPeakAVX2, 192
	}
	return nil, 0
}
