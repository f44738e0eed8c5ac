package quant

// The scale searches of ggml try a list of candidate scales on one group of 16 or 32 values and keep the best.
// Each candidate's sums are accumulated element by element in order, which makes every candidate a chain of
// dependent float additions; but different candidates are independent. The sweeps below therefore evaluate
// several candidates at once, one per SIMD lane on amd64 (sweep_amd64.s), each lane computing exactly the
// float32 operations of the C loop in the same order. The search then replays ggml's sequential accept-if-better
// decisions on the finished sums, which gives the same winner as interleaving them would. make_qx_quants' and
// quantize_row_iq4_nl_impl's candidates are all swept at once (lane counts are multiples of sweepLanes, padded
// with repeats); make_qkx2_quants' depend on earlier acceptances and go sweepWidth at a time (makeQKXQuants).

const sweepLanes = 8

// int8Float maps an int8 code, as a byte, to its float32 value: a load is cheaper than an int-to-float conversion
// in the inner loops.
var int8Float = func() (t [256]float32) {
	for i := range t {
		t[i] = float32(int8(i))
	}
	return t
}()

// qxSweepGo: for each candidate c, with l = clamp(nearest_int(iscale[c]·x[i]), lo, hi),
// sumlx[c] = Σ wx[i]·l and suml2[c] = Σ (w[i]·l)·l, as in make_qx_quants (wx[i] = w[i]·x[i]).
func qxSweepGo(x, w, wx, iscale, sumlx, suml2 []float32, lo, hi int) {
	w, wx = w[:len(x)], wx[:len(x)]
	for c, is := range iscale {
		var slx, sl2 float32
		for i, v := range x {
			fl := int8Float[uint8(clampInt(nearestInt(is*v), lo, hi))]
			slx += float32(wx[i] * fl)
			sl2 += float32(float32(w[i]*fl) * fl)
		}
		sumlx[c], suml2[c] = slx, sl2
	}
}

// iq4SweepGo: for each candidate inverse scale id[c], with q = kvalues_iq4nl[best_index_int8(id[c]·x)], the sums
// Σ (w·q)·x and Σ (w·q)·q of quantize_row_iq4_nl_impl.
func iq4SweepGo(x, w, id, sumqx, sumq2 []float32) {
	w = w[:len(x)]
	for c, s := range id {
		var sqx, sq2 float32
		for i, v := range x {
			q := float32(kvaluesIQ4NL[bestIndexInt8(&kvaluesIQ4NL, s*v)])
			wq := float32(w[i] * q)
			sqx += float32(wq * v)
			sq2 += float32(wq * q)
		}
		sumqx[c], sumq2[c] = sqx, sq2
	}
}

// qkxParams are the fixed inputs of one make_qkx2_quants search, and rng = max - min for the current min.
type qkxParams struct {
	nmax                    int
	rmin, rdelta, fmax, rng float32
	sumW, sumX              float32 // Σw and Σw·x
	mad                     bool    // weigh |error| rather than error²
}

// qkxLanes receives the candidates of one sweep: each step's inverse scale, fitted scale and min, and error.
type qkxLanes struct {
	iscale, scale, min, cur [sweepLanes]float32
}

// qkxError is the weighted error of one candidate: Σ w·e with e = |scale·l + min - x| (mad) or its square,
// l = clamp(nearest_int(iscale·(x - min0)), 0, nmax) and dx = x - min0.
func qkxError(dx, w, x []float32, iscale, scale, min float32, p *qkxParams) float32 {
	w, x = w[:len(dx)], x[:len(dx)]
	var e float32
	for i, d := range dx {
		fl := int8Float[uint8(clampInt(nearestInt(iscale*d), 0, p.nmax))]
		diff := float32(scale*fl) + min - x[i]
		if p.mad {
			diff = abs32(diff)
		} else {
			diff = float32(diff * diff)
		}
		e += float32(w[i] * diff)
	}
	return e
}

// qkxStepsGo evaluates steps first..first+width-1 of the search into lanes, each as one iteration of the C loop
// computes it: the grid at iscale = (rmin + rdelta·is + nmax)/(max - min), the weighted least-squares scale and
// min (min clamped to ≤ 0), and the error. Bit j of the result is set if step first+j had D > 0, the only
// steps the C loop considers.
func qkxStepsGo(dx, w, x []float32, first, width int, p *qkxParams, lanes *qkxLanes) (fit uint) {
	w, x = w[:len(dx)], x[:len(dx)]
	for j := range width {
		is := (p.rmin + float32(p.rdelta*float32(first+j)) + p.fmax) / p.rng
		var sumL, sumL2, sumXL float32
		for i, d := range dx {
			fl := int8Float[uint8(clampInt(nearestInt(is*d), 0, p.nmax))]
			wl := float32(w[i] * fl)
			sumL += wl
			sumL2 += float32(wl * fl)
			sumXL += float32(wl * x[i])
		}
		D := float32(p.sumW*sumL2) - float32(sumL*sumL)
		scale := (float32(p.sumW*sumXL) - float32(p.sumX*sumL)) / D
		min := (float32(sumL2*p.sumX) - float32(sumL*sumXL)) / D
		if min > 0 {
			min = 0
			scale = sumXL / sumL2
		}
		lanes.iscale[j], lanes.scale[j], lanes.min[j] = is, scale, min
		if D > 0 {
			lanes.cur[j] = qkxError(dx, w, x, is, scale, min, p)
			fit |= 1 << j
		}
	}
	return fit
}
