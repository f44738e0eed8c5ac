package quant

// The scale searches of ggml-quants.c. Each one mirrors its C function's float32 operation order exactly, since
// the goldens compare bytes: a different summation order or a fused multiply-add changes which candidate wins.

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
	fmax := float32(nmax)
	iscale := -fmax / max
	var sumlx, suml2 float32
	for i, v := range x {
		l := clampInt(nearestInt(iscale*v), -nmax, nmax-1)
		L[i] = int8(l + nmax)
		fl, w := float32(l), weights[i]
		sumlx += float32(float32(w*v) * fl)
		suml2 += float32(float32(w*fl) * fl)
	}
	scale := float32(0)
	if suml2 != 0 {
		scale = sumlx / suml2
	}
	best := scale * sumlx
	var cand [256]int8
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(fmax + float32(0.1*float32(is))) / max
		sumlx, suml2 = 0, 0
		for i, v := range x {
			l := clampInt(nearestInt(iscale*v), -nmax, nmax-1)
			cand[i] = int8(l + nmax)
			fl, w := float32(l), weights[i]
			sumlx += float32(float32(w*v) * fl)
			suml2 += float32(float32(w*fl) * fl)
		}
		if suml2 > 0 && float32(sumlx*sumlx) > float32(best*suml2) {
			copy(L, cand[:n])
			scale = sumlx / suml2
			best = scale * sumlx
		}
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
	var sumlx, suml2 float32
	for i, v := range x {
		l := clampInt(nearestInt(iscale*v), lo, hi)
		L[i] = int8(l)
		w, fl := float32(v*v), float32(l)
		sumlx += float32(float32(w*v) * fl)
		suml2 += float32(float32(w*fl) * fl)
	}
	for range 5 {
		changed := false
		for i, v := range x {
			w, fl := float32(v*v), float32(L[i])
			slx := sumlx - float32(float32(w*v)*fl)
			if !(slx > 0) {
				continue
			}
			sl2 := suml2 - float32(float32(w*fl)*fl)
			nl := clampInt(nearestInt(float32(v*sl2)/slx), lo, hi)
			if nl == int(L[i]) {
				continue
			}
			fn := float32(nl)
			slx += float32(float32(w*v) * fn)
			sl2 += float32(float32(w*fn) * fn)
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
func makeQKXQuants(nmax int, x, weights []float32, L []uint8, rmin, rdelta float32, nstep int, useMad bool) (scale, negMin float32) {
	n := len(x)
	weights, L = weights[:n], L[:n]
	min, max := x[0], x[0]
	sumW := weights[0]
	sumX := float32(sumW * x[0])
	for i := 1; i < n; i++ {
		v := x[i]
		if v < min {
			min = v
		}
		if v > max {
			max = v
		}
		w := weights[i]
		sumW += w
		sumX += float32(w * v)
	}
	if min > 0 {
		min = 0
	}
	if max == min {
		clear(L)
		return 0, -min
	}
	fmax := float32(nmax)
	iscale := fmax / (max - min)
	scale = 1 / iscale
	var bestErr float32
	for i, v := range x {
		l := clampInt(nearestInt(iscale*(v-min)), 0, nmax)
		L[i] = uint8(l)
		diff := float32(scale*float32(l)) + min - v
		if useMad {
			diff = abs32(diff)
		} else {
			diff = float32(diff * diff)
		}
		bestErr += float32(weights[i] * diff)
	}
	var aux [256]uint8
	for is := 0; is <= nstep; is++ {
		iscale = (rmin + float32(rdelta*float32(is)) + fmax) / (max - min)
		var sumL, sumL2, sumXL float32
		for i, v := range x {
			l := clampInt(nearestInt(iscale*(v-min)), 0, nmax)
			aux[i] = uint8(l)
			fl := float32(l)
			wl := float32(weights[i] * fl)
			sumL += wl
			sumL2 += float32(wl * fl)
			sumXL += float32(wl * v)
		}
		D := float32(sumW*sumL2) - float32(sumL*sumL)
		if !(D > 0) {
			continue
		}
		thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / D
		thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / D
		if thisMin > 0 {
			thisMin = 0
			thisScale = sumXL / sumL2
		}
		var cur float32
		for i, v := range x {
			diff := float32(thisScale*float32(aux[i])) + thisMin - v
			if useMad {
				diff = abs32(diff)
			} else {
				diff = float32(diff * diff)
			}
			cur += float32(weights[i] * diff)
		}
		if cur < bestErr {
			copy(L, aux[:n])
			bestErr, scale, min = cur, thisScale, thisMin
		}
	}
	return scale, -min
}

func clampInt(v, lo, hi int) int { return max(lo, min(hi, v)) }
