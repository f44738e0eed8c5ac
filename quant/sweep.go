package quant

// The scale searches of ggml try a list of candidate scales on one group of 16 or 32 values and keep the best.
// Each candidate's sums are accumulated element by element in order, which makes every candidate a chain of
// dependent float additions; but different candidates are independent. The sweeps below therefore evaluate all
// candidates of a search at once, one candidate per SIMD lane on amd64 (sweep_amd64.s), each lane computing
// exactly the float32 operations of the C loop in the same order. The search then replays ggml's sequential
// accept-if-better decisions on the finished sums, which gives the same winner as interleaving them would.
// Lane counts (len of iscale and the outputs) are multiples of sweepLanes; callers pad with repeats.

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
