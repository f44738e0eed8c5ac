//go:build !amd64 || noasm

package quant

func qxSweep(x, w, wx, iscale, sumlx, suml2 []float32, lo, hi int) {
	qxSweepGo(x, w, wx, iscale, sumlx, suml2, lo, hi)
}

func qkxSteps(dx, w, x []float32, first int, p *qkxParams, lanes *qkxLanes) uint {
	return qkxStepsGo(dx, w, x, first, sweepWidth, p, lanes)
}

func iq4Sweep(x, w, id, sumqx, sumq2 []float32) { iq4SweepGo(x, w, id, sumqx, sumq2) }

const sweepWidth = 1
