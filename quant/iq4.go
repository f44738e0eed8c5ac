package quant

import (
	"encoding/binary"

	"github.com/lathe-ml/lathe/tensor"
)

// IQ4_NL and IQ4_XS: 4-bit indices into a non-linear 16-value codebook, with one F16 scale per 32 elements
// (IQ4_NL) or an F16 scale and 6-bit sub-scales per 256 (IQ4_XS). Both encoders are ggml-quants.c
// quantize_row_iq4_nl_impl with ntry = 7, which is what ggml_quantize_chunk runs with or without an importance
// matrix (quantize_row_iq4_nl_ref's ntry = -1 is never used by llama-quantize).

func init() {
	register(tensor.IQ4_NL, codec{encodeRow: encodeIQ4NL, decode: decodeIQ4NL})
	register(tensor.IQ4_XS, codec{encodeRow: encodeIQ4XS, decode: decodeIQ4XS})
}

// kvaluesIQ4NL is kvalues_iq4nl of ggml-common.h.
var kvaluesIQ4NL = [16]int8{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}

// bestIndexInt8 is best_index_int8: the index of the sorted value nearest to x by bisection, the upper one on ties.
func bestIndexInt8(val *[16]int8, x float32) uint8 {
	x = float32(x) // a product passed as x must not fuse with the subtractions below
	if x <= float32(val[0]) {
		return 0
	}
	if x >= float32(val[15]) {
		return 15
	}
	lo, hi := 0, 15
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if x < float32(val[mid]) {
			hi = mid
		} else {
			lo = mid
		}
	}
	if x-float32(val[hi-1]) < float32(val[hi])-x {
		return uint8(hi - 1)
	}
	return uint8(hi)
}

// iq4Search is the per-32 part of quantize_row_iq4_nl_impl with ntry = 7: the scale maximising
// (Σw·q·x)²/Σw·q² over the first guess max/127 and the 15 inverse scales (itry - 127)/max, itry = -7..7.
// It returns 0 for an all-zero block. The codes it tried are not kept: both callers recompute them.
func iq4Search(xb, weight []float32) float32 {
	xb, weight = xb[:32], weight[:32]
	var amax, max float32
	for _, v := range xb {
		if a := abs32(v); a > amax {
			amax, max = a, v
		}
	}
	if amax < groupMaxEps {
		return 0
	}
	const tries = 16
	var id, sumqx, sumq2 [tries]float32
	v0 := int(kvaluesIQ4NL[0])
	id[0] = 1 / (-max / float32(v0))
	for itry := -7; itry <= 7; itry++ {
		id[itry+8] = float32(itry+v0) / max
	}
	iq4Sweep(xb, weight, id[:], sumqx[:], sumq2[:])
	var d float32
	if sumq2[0] > 0 {
		d = sumqx[0] / sumq2[0]
	}
	best := d * sumqx[0]
	for c := 1; c < tries; c++ {
		if sumq2[c] > 0 && float32(sumqx[c]*sumqx[c]) > float32(best*sumq2[c]) {
			d = sumqx[c] / sumq2[c]
			best = d * sumqx[c]
		}
	}
	return d
}

// iq4Weights is the weighting of quantize_row_iq4_nl_impl: qw·sqrt(sigma2 + x²) with an importance matrix, x²
// without.
func iq4Weights(w, xb, qw []float32, sigma2 float32) {
	if qw != nil {
		imatrixWeights(w, xb, qw, sigma2)
		return
	}
	for j, v := range xb {
		w[j] = float32(v * v)
	}
}

func encodeIQ4NL(dst []byte, src, qw []float32) {
	var (
		w [32]float32
		L [32]uint8
	)
	for b := range len(src) / 32 {
		x, y := src[b*32:][:32], dst[b*18:][:18]
		sigma2 := float32(sumSquares(x) * (2.0 / 32))
		var qb []float32
		if qw != nil {
			qb = qw[b*32:][:32]
		}
		iq4Weights(w[:], x, qb, sigma2)
		d := iq4Search(x, w[:])
		putF16(y, d)
		id := inverse(d)
		for j, v := range x {
			L[j] = bestIndexInt8(&kvaluesIQ4NL, id*v)
		}
		packNibbles(y[2:], &L)
	}
}

func encodeIQ4XS(dst []byte, src, qw []float32) {
	var (
		w      [32]float32
		L      [qkK]uint8
		scales [8]float32
	)
	for b := range len(src) / qkK {
		x, y := src[b*qkK:][:qkK], dst[b*136:][:136]
		sigma2 := float32(sumSquares(x) * (2.0 / qkK))
		var maxScale, amaxScale float32
		for ib := range 8 {
			xb := x[32*ib:][:32]
			var qb []float32
			if qw != nil {
				qb = qw[qkK*b+32*ib:][:32]
			}
			iq4Weights(w[:], xb, qb, sigma2)
			scales[ib] = iq4Search(xb, w[:])
			if a := abs32(scales[ib]); a > amaxScale {
				amaxScale, maxScale = a, scales[ib]
			}
		}
		d := -maxScale / 32
		putF16(y, d)
		id := inverse(d)
		var scalesH uint16
		scalesL := y[4:8]
		for ib := range 8 {
			l := clampInt(nearestInt(id*scales[ib]), -32, 31)
			idl := inverse(d * float32(l))
			for j, v := range x[32*ib:][:32] {
				L[32*ib+j] = bestIndexInt8(&kvaluesIQ4NL, idl*v)
			}
			l += 32
			if ib%2 == 0 {
				scalesL[ib/2] = uint8(l & 0xF)
			} else {
				scalesL[ib/2] |= uint8(l&0xF) << 4
			}
			scalesH |= uint16(l>>4) << (2 * ib)
		}
		binary.LittleEndian.PutUint16(y[2:], scalesH)
		for i := range 8 {
			packNibbles(y[8+16*i:], (*[32]uint8)(L[32*i:]))
		}
	}
}

func decodeIQ4NL(dst []float32, src []byte) {
	for b := range len(dst) / 32 {
		y, x := dst[b*32:][:32], src[b*18:][:18]
		d := getF16(x)
		for j, q := range x[2:18] {
			y[j] = d * float32(kvaluesIQ4NL[q&0xF])
			y[j+16] = d * float32(kvaluesIQ4NL[q>>4])
		}
	}
}

func decodeIQ4XS(dst []float32, src []byte) {
	for b := range len(dst) / qkK {
		y, x := dst[b*qkK:][:qkK], src[b*136:][:136]
		d := getF16(x)
		scalesH := binary.LittleEndian.Uint16(x[2:])
		for ib := range 8 {
			ls := int(x[4+ib/2]>>(4*(ib%2))&0xF) | int(scalesH>>(2*ib)&3)<<4
			dl := d * float32(ls-32)
			yb := y[32*ib:][:32]
			for j, q := range x[8+16*ib:][:16] {
				yb[j] = dl * float32(kvaluesIQ4NL[q&0xF])
				yb[j+16] = dl * float32(kvaluesIQ4NL[q>>4])
			}
		}
	}
}
