package quant

// The scale searches of ggml-quants.c. Each one mirrors its C function's float32 operation order exactly, since
// the goldens compare bytes: a different summation order or a fused multiply-add changes which candidate wins.

// maxGroup bounds the sub-blocks the searches run on (16 or 32 elements in every ggml caller).
const maxGroup = 32

// makeQXQuants is make_qx_quants with rmse_type 1: symmetric codes l+nmax, l in [-nmax, nmax-1], for the scale
// that maximises (Σw·x·l)²/Σw·l² over 19 candidate inverse scales. weights is never nil here: callers without an
// importance matrix pass x², which is what rmse_type 1 substitutes for a missing qw.
func makeQXQuants(nmax int, x, weights []float32, L []int8) float32 {
	n := len(x)
	weights, L = weights[:n], L[:n]
	var max, amax float32
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, max = a, v
		}
	}
	if amax < groupMaxEps {
		clear(L)
		return 0
	}
	var wx [maxGroup]float32 // w·x, the first factor of every Σw·x·l term
	for i, v := range x {
		wx[i] = float32(weights[i] * v)
	}
	// Candidate 0 is the first guess -nmax/max, then is = -9..9 without 0 in make_qx_quants' order; the rest pad.
	const tries = 19
	var iscale, sumlx, suml2 [(tries + sweepLanes - 1) / sweepLanes * sweepLanes]float32
	fmax := float32(nmax)
	iscale[0] = -fmax / max
	c := 1
	for is := -9; is <= 9; is++ {
		if is != 0 {
			iscale[c] = -(fmax + float32(0.1*float32(is))) / max
			c++
		}
	}
	for ; c < len(iscale); c++ {
		iscale[c] = iscale[0]
	}
	qxSweep(x, weights, wx[:n], iscale[:], sumlx[:], suml2[:], -nmax, nmax-1)
	var scale float32
	if suml2[0] != 0 {
		scale = sumlx[0] / suml2[0]
	}
	best, chosen := scale*sumlx[0], 0
	for c := 1; c < tries; c++ {
		if suml2[c] > 0 && float32(sumlx[c]*sumlx[c]) > float32(best*suml2[c]) {
			scale = sumlx[c] / suml2[c]
			best, chosen = scale*sumlx[c], c
		}
	}
	for i, v := range x {
		L[i] = int8(clampInt(nearestInt(iscale[chosen]*v), -nmax, nmax-1) + nmax)
	}
	return scale
}

// makeQ3Quants is make_q3_quants with do_rmse: symmetric codes refined by up to five passes of coordinate descent
// on the x²-weighted error.
func makeQ3Quants(nmax int, x []float32, L []int8) float32 {
	n := len(x)
	L = L[:n]
	var max, amax float32
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, max = a, v
		}
	}
	if amax < groupMaxEps {
		clear(L)
		return 0
	}
	lo, hi := -nmax, nmax-1
	iscale := -float32(nmax) / max
	var w, wx [maxGroup]float32 // x² and x²·x, recomputed identically in every pass of the C loop
	var sumlx, suml2 float32
	for i, v := range x {
		l := clampInt(nearestInt(iscale*v), lo, hi)
		L[i] = int8(l)
		w[i] = float32(v * v)
		wx[i] = float32(w[i] * v)
		fl := float32(l)
		sumlx += float32(wx[i] * fl)
		suml2 += float32(float32(w[i]*fl) * fl)
	}
	for range 5 {
		changed := false
		for i, v := range x {
			fl := int8Float[uint8(L[i])]
			slx := sumlx - float32(wx[i]*fl)
			if !(slx > 0) {
				continue
			}
			sl2 := suml2 - float32(float32(w[i]*fl)*fl)
			nl := clampInt(nearestInt(float32(v*sl2)/slx), lo, hi)
			if nl == int(L[i]) {
				continue
			}
			fn := int8Float[uint8(nl)]
			slx += float32(wx[i] * fn)
			sl2 += float32(float32(w[i]*fn) * fn)
			if sl2 > 0 && float32(float32(slx*slx)*suml2) > float32(float32(sumlx*sumlx)*sl2) {
				L[i], sumlx, suml2 = int8(nl), slx, sl2
				changed = true
			}
		}
		if !changed {
			break
		}
	}
	for i := range L {
		L[i] += int8(nmax)
	}
	if suml2 > 0 {
		return sumlx / suml2
	}
	return 0
}

// makeQKXQuants is make_qkx2_quants (and make_qkx3_quants, identical when weights are given): asymmetric codes
// in [0, nmax] with a scale and a min ≤ 0, fitted by weighted least squares over nstep+1 candidate grids.
// It returns the scale and the negated min, as the C function does through the_min.
//
// Unlike make_qx_quants' candidates, these are not independent: accepting a step replaces min, and later steps
// round x - min at an inverse scale over max - min with the new min. So the steps are evaluated sweepWidth at a
// time from the current min, and after an acceptance that changes min the sweep restarts at the next step.
func makeQKXQuants(nmax int, x, weights []float32, L []uint8, rmin, rdelta float32, nstep int, useMad bool) (scale, negMin float32) {
	n := len(x)
	weights, L = weights[:n], L[:n]
	p := qkxParams{nmax: nmax, rmin: rmin, rdelta: rdelta, fmax: float32(nmax), mad: useMad}
	xmin, xmax := x[0], x[0]
	p.sumW = weights[0]
	p.sumX = float32(p.sumW * x[0])
	for i := 1; i < n; i++ {
		v := x[i]
		if v < xmin {
			xmin = v
		}
		if v > xmax {
			xmax = v
		}
		w := weights[i]
		p.sumW += w
		p.sumX += float32(w * v)
	}
	if xmin > 0 {
		xmin = 0
	}
	if xmax == xmin {
		clear(L)
		return 0, -xmin
	}
	var dx [maxGroup]float32 // x - xmin for the current xmin
	setMin := func(m float32) {
		xmin, p.rng = m, xmax-m
		for i, v := range x {
			dx[i] = v - xmin
		}
	}
	setMin(xmin)
	// The first grid: iscale nmax/(max-min), scale 1/iscale, the data's min.
	chosenIscale, chosenMin := p.fmax/p.rng, xmin
	scale = 1 / chosenIscale
	bestErr := qkxError(dx[:n], weights, x, chosenIscale, scale, xmin, &p)
	var lanes qkxLanes
	for step := 0; step <= nstep; {
		k := min(sweepWidth, nstep+1-step)
		fit := qkxSteps(dx[:n], weights, x, step, &p, &lanes)
		done := k
		for j := range k {
			if fit&(1<<j) == 0 || !(lanes.cur[j] < bestErr) {
				continue
			}
			bestErr, scale, chosenIscale, chosenMin = lanes.cur[j], lanes.scale[j], lanes.iscale[j], xmin
			if lanes.min[j] != xmin {
				setMin(lanes.min[j])
				done = j + 1
				break
			}
		}
		step += done
	}
	for i, v := range x {
		L[i] = uint8(clampInt(nearestInt(chosenIscale*(v-chosenMin)), 0, nmax))
	}
	return scale, -xmin
}

// clampInt is MAX(lo, MIN(hi, v)) without branches: the compiler sometimes turns min and max into jumps, which
// mispredict on the codes of noisy data.
func clampInt(v, lo, hi int) int {
	d := v - hi
	v = hi + d&(d>>63)
	d = v - lo
	return lo + d&^(d>>63)
}
