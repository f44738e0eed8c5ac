package quant

import (
	"encoding/binary"
	"math"

	"github.com/lathe-ml/lathe/tensor"
)

// The k-quants: 256-element super-blocks of 16- or 32-element sub-blocks, each with a quantized scale (and min)
// under F16 super-block scales (ggml-quants.c quantize_row_q{2..6}_K_ref without an importance matrix,
// quantize_row_q{2..6}_K_impl with one, and dequantize_row_q{2..6}_K; layouts from ggml-common.h).
// Sub-block codes are interleaved in groups of 32: byte l of a 32-byte run holds elements l, l+32, l+64, l+96
// (2-bit codes) or l, l+32 (4-bit codes).

func init() {
	register(tensor.Q2_K, codec{encodeRow: encodeQ2_K, decode: decodeQ2_K})
	register(tensor.Q3_K, codec{encodeRow: encodeQ3_K, decode: decodeQ3_K})
	register(tensor.Q4_K, codec{encodeRow: encodeQ4_K, decode: decodeQ4_K})
	register(tensor.Q5_K, codec{encodeRow: encodeQ5_K, decode: decodeQ5_K})
	register(tensor.Q6_K, codec{encodeRow: encodeQ6_K, decode: decodeQ6_K})
	register(tensor.Q8_K, codec{decode: decodeQ8_K})
}

// Block sizes in bytes.
const (
	q2KBytes = 84  // scales[16] (min<<4 | scale), qs[64], d, dmin
	q3KBytes = 110 // hmask[32], qs[64], scales[12] (16 × 6 bits), d
	q4KBytes = 144 // d, dmin, scales[12] (8 × 6-bit scale and min), qs[128]
	q5KBytes = 176 // d, dmin, scales[12], qh[32], qs[128]
	q6KBytes = 210 // ql[128], qh[64], scales[16] (int8), d
	q8KBytes = 292 // d (f32), qs[256] (int8), bsums[16] (int16)
)

// pack2 stores 2-bit codes: byte l of each 32-byte run holds elements l, l+32, l+64, l+96 of a 128-element half.
func pack2(qs []byte, L *[qkK]uint8) {
	for h := range 2 {
		q, l := qs[32*h:][:32], L[128*h:][:128]
		for j := range q {
			q[j] = l[j] | l[j+32]<<2 | l[j+64]<<4 | l[j+96]<<6
		}
	}
}

// pack4 stores 4-bit codes: byte l of each 32-byte run holds elements l and l+32 of a 64-element quarter.
func pack4(qs []byte, L *[qkK]uint8) {
	for h := range 4 {
		q, l := qs[32*h:][:32], L[64*h:][:64]
		for j := range q {
			q[j] = l[j] | l[j+32]<<4
		}
	}
}

// requantize recomputes the codes of an asymmetric sub-block from its final, F16-rounded scale and min, as
// every k-quant encoder does after packing the scales. A zero scale keeps the search's codes.
func requantize(L []uint8, x []float32, d, m float32, nmax int) {
	if d == 0 {
		return
	}
	for i, v := range x {
		L[i] = uint8(clampInt(nearestInt((v+m)/d), 0, nmax))
	}
}

func encodeQ2_K(dst []byte, src, qw []float32) {
	var (
		L            [qkK]uint8
		w, sw        [16]float32
		scales, mins [16]float32
		lScale, lMin [16]uint8
	)
	for i := range len(src) / qkK {
		x, y := src[i*qkK:][:qkK], dst[i*q2KBytes:][:q2KBytes]
		sc := y[:16]
		if qw == nil {
			var maxScl, maxMin float32
			for j := range 16 {
				xs := x[16*j:][:16]
				for l, v := range xs {
					w[l] = abs32(v)
				}
				scales[j], mins[j] = makeQKXQuants(3, xs, w[:], L[16*j:], -0.5, 0.1, 15, true)
				if scales[j] > maxScl {
					maxScl = scales[j]
				}
				if mins[j] > maxMin {
					maxMin = mins[j]
				}
			}
			if maxScl > 0 {
				iscale := 15 / maxScl
				for j := range sc {
					sc[j] = uint8(nearestInt(iscale * scales[j]))
				}
				putF16(y[80:], maxScl/15)
			} else {
				clear(sc)
				putF16(y[80:], 0)
			}
			if maxMin > 0 {
				iscale := 15 / maxMin
				for j := range sc {
					sc[j] |= uint8(nearestInt(iscale*mins[j]) << 4)
				}
				putF16(y[82:], maxMin/15)
			} else {
				putF16(y[82:], 0)
			}
		} else {
			sigma2 := sumSquares(x) / qkK
			for j := range 16 {
				xs := x[16*j:][:16]
				imatrixWeights(w[:], xs, qw[qkK*i+16*j:], sigma2)
				sw[j] = 0
				for _, v := range w {
					sw[j] += v
				}
				scales[j], mins[j] = makeQKXQuants(3, xs, w[:], L[16*j:], -0.9, 0.05, 36, false)
			}
			putF16(y[80:], makeQPQuants(15, scales[:], lScale[:], sw[:]))
			putF16(y[82:], makeQPQuants(15, mins[:], lMin[:], sw[:]))
			for j := range sc {
				sc[j] = lScale[j] | lMin[j]<<4
			}
		}
		d, dmin := getF16(y[80:]), getF16(y[82:])
		for j, s := range sc {
			requantize(L[16*j:][:16], x[16*j:][:16], d*float32(s&0xF), dmin*float32(s>>4), 3)
		}
		pack2(y[16:80], &L)
	}
}

func decodeQ2_K(dst []float32, src []byte) {
	for i := range len(dst) / qkK {
		y, x := dst[i*qkK:][:qkK], src[i*q2KBytes:][:q2KBytes]
		d, dmin := getF16(x[80:]), getF16(x[82:])
		for h := range 2 {
			q := x[16+32*h:][:32]
			for k := range 4 {
				shift := 2 * k
				for half := range 2 {
					s := x[8*h+2*k+half]
					dl, ml := d*float32(s&0xF), dmin*float32(s>>4)
					yb := y[128*h+32*k+16*half:][:16]
					for l, b := range q[16*half:][:16] {
						yb[l] = float32(dl*float32(b>>shift&3)) - ml
					}
				}
			}
		}
	}
}

// q3Scale reads the j-th 6-bit scale of a Q3_K block, stored as 16 low nibbles then 2-bit high parts.
func q3Scale(sc []byte, j int) int {
	lo := sc[j%8] >> (4 * (j / 8)) & 0xF
	return int(lo|(sc[8+j%4]>>(2*(j/4))&3)<<4) - 32
}

func encodeQ3_K(dst []byte, src, qw []float32) {
	var (
		L       [qkK]int8
		w, sw   [16]float32
		scales  [16]float32
		lScales [16]int8
		u       [qkK]uint8
	)
	for i := range len(src) / qkK {
		x, y := src[i*qkK:][:qkK], dst[i*q3KBytes:][:q3KBytes]
		sc := y[96:108]
		clear(sc)
		if qw == nil {
			var maxScale, amax float32
			for j := range 16 {
				scales[j] = makeQ3Quants(4, x[16*j:][:16], L[16*j:])
				if a := abs32(scales[j]); a > amax {
					amax, maxScale = a, scales[j]
				}
			}
			if maxScale != 0 {
				iscale := -32 / maxScale
				for j := range 16 {
					lScales[j] = int8(clampInt(int(int8(nearestInt(iscale*scales[j]))), -32, 31) + 32)
				}
				putQ3Scales(sc, &lScales)
				putF16(y[108:], 1/iscale)
			} else {
				putF16(y[108:], 0)
			}
		} else {
			sigma2 := 2 * sumSquares(x) / qkK
			for j := range 16 {
				xs := x[16*j:][:16]
				imatrixWeights(w[:], xs, qw[qkK*i+16*j:], sigma2)
				var sum float32
				for _, v := range w {
					sum += v
				}
				sw[j] = sum
				scales[j] = makeQXQuants(4, xs, w[:], L[16*j:])
			}
			d := makeQXQuants(32, scales[:], sw[:], lScales[:])
			putQ3Scales(sc, &lScales)
			putF16(y[108:], d)
		}
		d := getF16(y[108:])
		for j := range 16 {
			dl := d * float32(q3Scale(sc, j))
			if dl == 0 {
				continue
			}
			for l, v := range x[16*j:][:16] {
				L[16*j+l] = int8(clampInt(nearestInt(v/dl), -4, 3) + 4)
			}
		}
		// Codes are 0..7 here: the C loop's "if (L[j] > 3) set the hmask bit and subtract 4" is bit 2.
		hmask := y[:32]
		clear(hmask)
		for j, l := range L {
			hmask[j%32] |= uint8(l>>2&1) << (j / 32)
			u[j] = uint8(l & 3)
		}
		pack2(y[32:96], &u)
	}
}

// putQ3Scales packs sixteen 6-bit scales (already offset by 32): low nibbles in bytes 0..7, the top two bits of
// scale j in byte 8+j%4 at bit 2(j/4).
func putQ3Scales(sc []byte, l *[16]int8) {
	for j, v := range l {
		if j < 8 {
			sc[j] = uint8(v) & 0xF
		} else {
			sc[j-8] |= (uint8(v) & 0xF) << 4
		}
		sc[j%4+8] |= uint8(v>>4) << (2 * (j / 4))
	}
}

func decodeQ3_K(dst []float32, src []byte) {
	for i := range len(dst) / qkK {
		y, x := dst[i*qkK:][:qkK], src[i*q3KBytes:][:q3KBytes]
		d := getF16(x[108:])
		hm, sc := x[:32], x[96:108]
		for h := range 2 {
			q := x[32+32*h:][:32]
			for k := range 4 {
				shift, bit := 2*k, uint(4*h+k)
				for half := range 2 {
					dl := d * float32(q3Scale(sc, 8*h+2*k+half))
					yb := y[128*h+32*k+16*half:][:16]
					for l := range yb {
						v := int(q[16*half+l] >> shift & 3)
						if hm[16*half+l]>>bit&1 == 0 {
							v -= 4
						}
						yb[l] = dl * float32(v)
					}
				}
			}
		}
	}
}

// putScaleMinK4 packs the 6-bit scale and min of sub-block j: j < 4 in the low 6 bits of bytes j and j+4, j >= 4
// as nibbles of byte j+4 with their top 2 bits in the spare high bits of bytes j-4 and j. Sub-blocks must be
// packed in order, as the C loops do.
func putScaleMinK4(sc []byte, j int, ls, lm uint8) {
	if j < 4 {
		sc[j], sc[j+4] = ls, lm
		return
	}
	sc[j+4] = ls&0xF | (lm&0xF)<<4
	sc[j-4] |= ls >> 4 << 6
	sc[j] |= lm >> 4 << 6
}

// scaleMinK4 is get_scale_min_k4.
func scaleMinK4(sc []byte, j int) (uint8, uint8) {
	if j < 4 {
		return sc[j] & 63, sc[j+4] & 63
	}
	return sc[j+4]&0xF | sc[j-4]>>6<<4, sc[j+4]>>4 | sc[j]>>6<<4
}

// encodeK32 is the scale search shared by Q4_K and Q5_K (32-element sub-blocks, 6-bit scales and mins); it fills
// the scales, d and dmin of y and leaves the final codes, 0..nmax, in L.
func encodeK32(y []byte, x, qw []float32, nmax int, L *[qkK]uint8) {
	var (
		scales, mins, sw [8]float32
		w32              [32]float32
		lScale, lMin     [8]uint8
	)
	sc := y[4:16]
	if qw == nil {
		// quantize_row_q{4,5}_K_ref: make_qkx2_quants weighted by av_x + |x|, av_x the sub-block's RMS.
		rmin, nstep := float32(-1), 20
		if nmax == 31 {
			rmin, nstep = -0.5, 15
		}
		var maxScale, maxMin float32
		for j := range 8 {
			xs := x[32*j:][:32]
			avx := sqrt32(sumSquares(xs) / 32)
			for l, v := range xs {
				w32[l] = avx + abs32(v)
			}
			scales[j], mins[j] = makeQKXQuants(nmax, xs, w32[:], L[32*j:], rmin, 0.1, nstep, false)
			if scales[j] > maxScale {
				maxScale = scales[j]
			}
			if mins[j] > maxMin {
				maxMin = mins[j]
			}
		}
		var invScale, invMin float32
		if maxScale > 0 {
			invScale = 63 / maxScale
		}
		if maxMin > 0 {
			invMin = 63 / maxMin
		}
		for j := range 8 {
			ls := min(63, uint8(nearestInt(invScale*scales[j])))
			lm := min(63, uint8(nearestInt(invMin*mins[j])))
			putScaleMinK4(sc, j, ls, lm)
		}
		putF16(y, maxScale/63)
		putF16(y[2:], maxMin/63)
	} else {
		// quantize_row_q{4,5}_K_impl: make_qkx3_quants, then make_qp_quants for the scales and mins.
		sigma2 := 2 * sumSquares(x) / qkK
		for j := range 8 {
			xs := x[32*j:][:32]
			imatrixWeights(w32[:], xs, qw[32*j:], sigma2)
			var sum float32
			for _, v := range w32 {
				sum += v
			}
			sw[j] = sum
			scales[j], mins[j] = makeQKXQuants(nmax, xs, w32[:], L[32*j:], -0.9, 0.05, 36, false)
		}
		dBlock := makeQPQuants(63, scales[:], lScale[:], sw[:])
		mBlock := makeQPQuants(63, mins[:], lMin[:], sw[:])
		for j := range 8 {
			ls, lm := lScale[j], lMin[j]
			if nmax == 31 { // only quantize_row_q5_K_impl clamps here
				ls, lm = min(63, ls), min(63, lm)
			}
			putScaleMinK4(sc, j, ls, lm)
		}
		putF16(y, dBlock)
		putF16(y[2:], mBlock)
	}
	d, dmin := getF16(y), getF16(y[2:])
	for j := range 8 {
		s, m := scaleMinK4(sc, j)
		requantize(L[32*j:][:32], x[32*j:][:32], d*float32(s), dmin*float32(m), nmax)
	}
}

func encodeQ4_K(dst []byte, src, qw []float32) {
	var L [qkK]uint8
	for i := range len(src) / qkK {
		y := dst[i*q4KBytes:][:q4KBytes]
		encodeK32(y, src[i*qkK:][:qkK], subImportance(qw, i), 15, &L)
		pack4(y[16:], &L)
	}
}

func encodeQ5_K(dst []byte, src, qw []float32) {
	var L [qkK]uint8
	for i := range len(src) / qkK {
		y := dst[i*q5KBytes:][:q5KBytes]
		encodeK32(y, src[i*qkK:][:qkK], subImportance(qw, i), 31, &L)
		// Codes are 0..31: the C loop's "if (l > 15) set the qh bit and subtract 16" is bit 4.
		qh := y[16:48]
		clear(qh)
		for k := range 4 {
			for j := range 32 {
				l1, l2 := L[64*k+j], L[64*k+j+32]
				qh[j] |= (l1>>4&1 | l2>>4&1<<1) << (2 * k)
				y[48+32*k+j] = l1&0xF | (l2&0xF)<<4
			}
		}
	}
}

// subImportance returns the importance of super-block i, or nil.
func subImportance(qw []float32, i int) []float32 {
	if qw == nil {
		return nil
	}
	return qw[qkK*i:][:qkK]
}

func decodeQ4_K(dst []float32, src []byte) {
	for i := range len(dst) / qkK {
		y, x := dst[i*qkK:][:qkK], src[i*q4KBytes:][:q4KBytes]
		d, dmin := getF16(x), getF16(x[2:])
		for k := range 4 {
			s1, m1 := scaleMinK4(x[4:16], 2*k)
			s2, m2 := scaleMinK4(x[4:16], 2*k+1)
			d1, dm1 := d*float32(s1), dmin*float32(m1)
			d2, dm2 := d*float32(s2), dmin*float32(m2)
			yb := y[64*k:][:64]
			for l, q := range x[16+32*k:][:32] {
				yb[l] = float32(d1*float32(q&0xF)) - dm1
				yb[l+32] = float32(d2*float32(q>>4)) - dm2
			}
		}
	}
}

func decodeQ5_K(dst []float32, src []byte) {
	for i := range len(dst) / qkK {
		y, x := dst[i*qkK:][:qkK], src[i*q5KBytes:][:q5KBytes]
		d, dmin := getF16(x), getF16(x[2:])
		qh := x[16:48]
		for k := range 4 {
			s1, m1 := scaleMinK4(x[4:16], 2*k)
			s2, m2 := scaleMinK4(x[4:16], 2*k+1)
			d1, dm1 := d*float32(s1), dmin*float32(m1)
			d2, dm2 := d*float32(s2), dmin*float32(m2)
			yb := y[64*k:][:64]
			for l, q := range x[48+32*k:][:32] {
				h := qh[l] >> (2 * k)
				yb[l] = float32(d1*float32(q&0xF|h&1<<4)) - dm1
				yb[l+32] = float32(d2*float32(q>>4|h&2<<3)) - dm2
			}
		}
	}
}

func encodeQ6_K(dst []byte, src, qw []float32) {
	var (
		L      [qkK]int8
		w      [16]float32
		scales [16]float32
	)
	for i := range len(src) / qkK {
		x, y := src[i*qkK:][:qkK], dst[i*q6KBytes:][:q6KBytes]
		var maxScale, maxAbs float32
		for ib := range 16 {
			xs := x[16*ib:][:16]
			ws := w[:]
			if qw != nil {
				ws = qw[qkK*i+16*ib:][:16] // the raw importance: quantize_row_q6_K_impl does not add sigma2
			} else {
				for l, v := range xs {
					w[l] = float32(v * v)
				}
			}
			scales[ib] = makeQXQuants(32, xs, ws, L[16*ib:])
			if a := abs32(scales[ib]); a > maxAbs {
				maxAbs, maxScale = a, scales[ib]
			}
		}
		if maxAbs < groupMaxEps {
			clear(y)
			continue
		}
		iscale := -128 / maxScale
		putF16(y[208:], 1/iscale)
		sc := y[192:208]
		for ib := range sc {
			sc[ib] = uint8(min(127, nearestInt(iscale*scales[ib])))
		}
		d := getF16(y[208:])
		for j, s := range sc {
			dl := d * float32(int8(s))
			if dl == 0 {
				continue
			}
			for l, v := range x[16*j:][:16] {
				L[16*j+l] = int8(clampInt(nearestInt(v/dl), -32, 31) + 32)
			}
		}
		for h := range 2 {
			ql, qh, l := y[64*h:][:64], y[128+32*h:][:32], L[128*h:][:128]
			for j := range 32 {
				q1, q2, q3, q4 := uint8(l[j]), uint8(l[j+32]), uint8(l[j+64]), uint8(l[j+96])
				ql[j] = q1&0xF | (q3&0xF)<<4
				ql[j+32] = q2&0xF | (q4&0xF)<<4
				qh[j] = q1>>4 | q2>>4<<2 | q3>>4<<4 | q4>>4<<6
			}
		}
	}
}

func decodeQ6_K(dst []float32, src []byte) {
	for i := range len(dst) / qkK {
		y, x := dst[i*qkK:][:qkK], src[i*q6KBytes:][:q6KBytes]
		d := getF16(x[208:])
		for h := range 2 {
			ql, qh, sc, yb := x[64*h:][:64], x[128+32*h:][:32], x[192+8*h:][:8], y[128*h:][:128]
			for l := range 32 {
				is := l / 16
				q1 := int(ql[l]&0xF|(qh[l]&3)<<4) - 32
				q2 := int(ql[l+32]&0xF|(qh[l]>>2&3)<<4) - 32
				q3 := int(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
				q4 := int(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
				yb[l] = d * float32(int8(sc[is])) * float32(q1)
				yb[l+32] = d * float32(int8(sc[is+2])) * float32(q2)
				yb[l+64] = d * float32(int8(sc[is+4])) * float32(q3)
				yb[l+96] = d * float32(int8(sc[is+6])) * float32(q4)
			}
		}
	}
}

// decodeQ8_K is dequantize_row_q8_K; Q8_K is ggml's intermediate for dot products and has no encoder in
// ggml_quantize_chunk.
func decodeQ8_K(dst []float32, src []byte) {
	for i := range len(dst) / qkK {
		y, x := dst[i*qkK:][:qkK], src[i*q8KBytes:][:q8KBytes]
		d := math.Float32frombits(binary.LittleEndian.Uint32(x))
		for j, q := range x[4 : 4+qkK] {
			y[j] = d * float32(int8(q))
		}
	}
}
