//go:build !noasm

package quant

import "golang.org/x/sys/cpu"

// The AVX2 sweeps (sweep_amd64.s) run 8 candidates per instruction with the same float32 operations as the Go
// sweeps, and never FMA; TestSweepAsmAgreesWithGo checks them bit for bit.
var hasAVX2 = cpu.X86.HasAVX2

//go:noescape
func qxSweepAVX2(x, w, wx *float32, n int, iscale, sumlx, suml2 *float32, nc, lo, hi int)

//go:noescape
func qkxStepsAVX2(dx, w, x *float32, n, first, nmax, mad int, rmin, rdelta, fmax, rng, sumW, sumX float32,
	lanes *qkxLanes) int

//go:noescape
func iq4SweepAVX2(x, w *float32, n int, id, sumqx, sumq2 *float32, nc int, tab *[31][sweepLanes]float32)

// useSweepAsm reports whether the kernels can take a sweep of n elements and nc candidates; the bounds checks
// of the slices they receive are done by the callers below, before the unchecked pointers are passed.
func useSweepAsm(n, nc int) bool { return hasAVX2 && n > 0 && nc > 0 && nc%sweepLanes == 0 }

func qxSweep(x, w, wx, iscale, sumlx, suml2 []float32, lo, hi int) {
	n, nc := len(x), len(iscale)
	if !useSweepAsm(n, nc) {
		qxSweepGo(x, w, wx, iscale, sumlx, suml2, lo, hi)
		return
	}
	_, _, _, _ = w[n-1], wx[n-1], sumlx[nc-1], suml2[nc-1]
	qxSweepAVX2(&x[0], &w[0], &wx[0], n, &iscale[0], &sumlx[0], &suml2[0], nc, lo, hi)
}

func qkxSteps(dx, w, x []float32, first int, p *qkxParams, lanes *qkxLanes) uint {
	n := len(dx)
	if !hasAVX2 || sweepWidth != sweepLanes || n == 0 {
		return qkxStepsGo(dx, w, x, first, sweepWidth, p, lanes)
	}
	_, _ = w[n-1], x[n-1]
	mad := 0
	if p.mad {
		mad = 1
	}
	return uint(qkxStepsAVX2(&dx[0], &w[0], &x[0], n, first, p.nmax, mad, p.rmin, p.rdelta, p.fmax, p.rng, p.sumW,
		p.sumX, lanes))
}

// iq4Table holds, for the AVX2 best_index_int8, the 16 codebook values and then the 15 gaps between neighbours,
// each repeated across the 8 lanes.
var iq4Table = func() (t [31][sweepLanes]float32) {
	for k := range 16 {
		for l := range sweepLanes {
			t[k][l] = float32(kvaluesIQ4NL[k])
			if k > 0 {
				t[15+k][l] = float32(kvaluesIQ4NL[k]) - float32(kvaluesIQ4NL[k-1])
			}
		}
	}
	return t
}()

func iq4Sweep(x, w, id, sumqx, sumq2 []float32) {
	n, nc := len(x), len(id)
	if !useSweepAsm(n, nc) {
		iq4SweepGo(x, w, id, sumqx, sumq2)
		return
	}
	_, _, _ = w[n-1], sumqx[nc-1], sumq2[nc-1]
	iq4SweepAVX2(&x[0], &w[0], n, &id[0], &sumqx[0], &sumq2[0], nc, &iq4Table)
}

// sweepWidth is how many dependent make_qkx2_quants candidates makeQKXQuants evaluates at once: a whole vector
// with AVX2, else one, which makes it the sequential C loop with no wasted work.
var sweepWidth = func() int {
	if hasAVX2 {
		return sweepLanes
	}
	return 1
}()
