package quant

import (
	"encoding/binary"
	"math"
	"slices"

	"github.com/lathe-ml/lathe/tensor"
)

// IQ1_S and IQ1_M: 256-element super-blocks whose groups of 8 are ternary points of iq1s_grid (-1, 0, 1) shifted by
// ±IQ1S_DELTA, with 3-bit group scales (formats-quant.md §2.1; ggml-quants.c dequantize_row_iq1_*,
// quantize_row_iq1_s_impl, quantize_row_iq1_m_impl).

func init() {
	register(tensor.IQ1_S, codec{encodeRow: encodeIQ1S, decode: decodeIQ1S, requiresImatrix: true})
	register(tensor.IQ1_M, codec{encodeRow: encodeIQ1M, decode: decodeIQ1M})
}

const iq1Delta = 0.125 // IQ1S_DELTA = IQ1M_DELTA

// putTernary writes dl·(grid[j] + delta) for the 8 signed bytes of an iq1s_grid entry.
func putTernary(y []float32, dl, delta float32, grid uint64) {
	y = y[:8]
	for j := range y {
		y[j] = dl * (float32(int8(grid>>(8*j))) + delta)
	}
}

// block_iq1_s: f16 d, 32 low bytes of 11-bit grid indices, then per 32 elements a u16 with the indices' top 3 bits
// (three per group), a 3-bit scale in bits 12-14 and the sign of delta in bit 15.
func decodeIQ1S(dst []float32, src []byte) {
	for ; len(dst) >= qkK; dst, src = dst[qkK:], src[50:] {
		d := getF16(src)
		for ib := range 8 {
			qh := binary.LittleEndian.Uint16(src[34+2*ib:])
			dl := d * float32(2*(qh>>12&7)+1)
			delta := float32(iq1Delta)
			if qh&0x8000 != 0 {
				delta = -iq1Delta
			}
			for l := range 4 {
				idx := int(src[2+4*ib+l]) | int(qh>>(3*l)&7)<<8
				putTernary(dst[32*ib+8*l:], dl, delta, iq1sGrid[idx])
			}
		}
	}
}

// block_iq1_m: 32 low bytes of 11-bit grid indices; 16 bytes each holding, per group of 8, the index's top 3 bits
// and the sign of delta (bit 3 or 7); 8 bytes of 3-bit scales, one per 16 elements, whose four u16 also carry the
// f16 super-block scale in their top nibbles.
func decodeIQ1M(dst []float32, src []byte) {
	for ; len(dst) >= qkK; dst, src = dst[qkK:], src[56:] {
		qs, qh := src[:32], src[32:48]
		var sc [4]uint16
		for i := range sc {
			sc[i] = binary.LittleEndian.Uint16(src[48+2*i:])
		}
		d := fp16ToFloat32(sc[0]>>12 | sc[1]>>8&0x00f0 | sc[2]>>4&0x0f00 | sc[3]&0xf000)
		for ib := range 8 {
			s := sc[ib/2] >> (6 * (ib % 2))
			dl := [2]float32{d * float32(2*(s&7)+1), d * float32(2*(s>>3&7)+1)}
			for l := range 4 {
				h := qh[2*ib+l/2] >> (4 * (l % 2))
				delta := float32(iq1Delta)
				if h&0x08 != 0 {
					delta = -iq1Delta
				}
				putTernary(dst[32*ib+8*l:], dl[l/2], delta, iq1sGrid[int(qs[4*ib+l])|int(h&7)<<8])
			}
		}
	}
}

// The two ternary value sets: levels 0, 1, 2 stand for -1, 0, 1 shifted by +delta or -delta.
var (
	iq1Plus  = [3]float32{-1 + iq1Delta, iq1Delta, 1 + iq1Delta}
	iq1Minus = [3]float32{-1 - iq1Delta, -iq1Delta, 1 - iq1Delta}
)

// iq1Neighbour replaces a group of 8 levels that is not a codebook point by the neighbour of its key with the least
// weighted squared error at scale, values xx[level] (iq1_find_best_neighbour2), and returns the point index. If
// every distance is NaN or infinite, ggml scans the whole codebook reading past the group (undefined behaviour)
// and aborts; the first neighbour is taken instead so that such input still yields a block.
func iq1Neighbour(lt *lattice, entry int32, x, weight []float32, scale float32, xx *[3]float32, L []int8) int {
	neighbours := lt.neighboursOf(entry)
	x8, w8 := (*[8]float32)(x), (*[8]float32)(weight)
	best, bestD2 := int(neighbours[0]), float32(math.MaxFloat32)
	for _, p := range neighbours {
		lv := (*[8]int8)(lt.levels[8*int(p):])
		var d2 float32
		for i := range 8 {
			d2 += wsq(w8[i], float32(scale*xx[lv[i]])-x8[i])
		}
		if d2 < bestD2 {
			best, bestD2 = int(p), d2
		}
	}
	copy(L, lt.levelsOf(best))
	return best
}

// iq1Group returns the codebook index of a group of 8 levels, searching the neighbours when they are not a point.
func iq1Group(lt *lattice, x, weight []float32, scale float32, xx *[3]float32, L []int8) (int, bool) {
	p := lt.index[lt.key(L)]
	if p >= 0 {
		return int(p), true
	}
	return iq1Neighbour(lt, p, x, weight, scale, xx, L), false
}

// sortByValue fills order with 0..len(x)-1 sorted by x ascending, equal values keeping their order as glibc's qsort
// (a merge sort) keeps them.
func sortByValue(order []int, x []float32) {
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case x[a] < x[b]:
			return -1
		case x[a] > x[b]:
			return 1
		}
		return 0
	})
}

// absMax is the largest |x| by C's MAX over fabsf.
func absMax(x []float32) float32 {
	m := abs32(x[0])
	for _, v := range x[1:] {
		m = maxC(m, abs32(v))
	}
	return m
}

// encodeIQ1S follows quantize_row_iq1_s_impl: per block of 32, an exhaustive search over the two boundaries that
// split the sorted values into levels -1, 0, 1 with either delta, then a codebook lookup per group of 8.
func encodeIQ1S(dst []byte, src, importance []float32) {
	const bs = 32
	lt := iq1sLattice()
	var (
		weight     [bs]float32
		sumx, sumw [bs + 1]float32
		order      [bs]int
		L          [bs]int8
		index      [bs / 8]int
		scales     [8]float32
		shifts     [8]int
	)
	for ; len(src) >= qkK; src, dst, importance = src[qkK:], dst[50:], importance[qkK:] {
		blk := dst[:50]
		clear(blk)
		sigma2 := 2 * sumSquares(src[:qkK]) / qkK
		var maxScale float32
		for ib := range 8 {
			xb := src[bs*ib : bs*ib+bs]
			imatrixWeights(weight[:], xb, importance[bs*ib:], sigma2)
			mx := absMax(xb)
			if mx < 1e-12 { // GROUP_MAX_EPS_IQ1_S
				scales[ib], shifts[ib] = 0, 1
				continue
			}
			sortByValue(order[:], xb)
			for j, i := range order {
				sumx[j+1] = sumx[j] + float32(weight[i]*xb[i])
				sumw[j+1] = sumw[j] + weight[i]
			}
			bestScore, scale := float32(-math.MaxFloat32), mx
			besti1, besti2, bestShift := -1, -1, 0
			for i1 := 0; i1 <= bs; i1++ {
				for i2 := i1; i2 <= bs; i2++ {
					for _, shift := range [2]int{1, -1} {
						xx := &iq1Plus
						if shift < 0 {
							xx = &iq1Minus
						}
						sumqx, sumq2 := splitSums(sumx[:], sumw[:], i1, i2, xx)
						if sumq2 > 0 && sumqx*sumqx > bestScore*sumq2 {
							scale = sumqx / sumq2
							bestScore = scale * sumqx
							besti1, besti2, bestShift = i1, i2, shift
						}
					}
				}
			}
			if besti1 < 0 || besti2 < 0 || bestShift == 0 {
				scales[ib], shifts[ib] = 0, 1
				continue
			}
			setTernaryLevels(L[:], order[:], besti1, besti2)
			if scale < 0 {
				for j := range L {
					L[j] = 2 - L[j]
				}
				scale, bestShift = -scale, -bestShift
			}
			xx := &iq1Plus
			if bestShift < 0 {
				xx = &iq1Minus
			}
			allOnGrid := true
			for k := range bs / 8 {
				var on bool
				index[k], on = iq1Group(lt, xb[8*k:], weight[8*k:], scale, xx, L[8*k:])
				allOnGrid = allOnGrid && on
			}
			if !allOnGrid {
				var sumqx, sumq2 float32
				for k := range bs / 8 {
					for j, l := range lt.levelsOf(index[k]) {
						w, v := weight[8*k+j], xx[l]
						sumqx += float32(float32(w*v) * xb[8*k+j])
						sumq2 += float32(float32(w*v) * v)
					}
				}
				if sumqx > 0 && sumq2 > 0 {
					scale = sumqx / sumq2
				}
			}
			var h uint16
			for k := range bs / 8 {
				blk[2+4*ib+k] = uint8(index[k])
				h |= uint16(index[k]>>8) << (3 * k)
			}
			binary.LittleEndian.PutUint16(blk[34+2*ib:], h)
			scales[ib], shifts[ib] = scale, bestShift
			maxScale = maxC(maxScale, scale)
		}
		if maxScale == 0 {
			continue
		}
		d := maxScale / 15
		putF16(blk, d*1.125)
		id := 1 / d
		for ib := range 8 {
			l := scaleNibble(id, scales[ib], 7)
			if shifts[ib] == -1 {
				l |= 8
			}
			h := binary.LittleEndian.Uint16(blk[34+2*ib:])
			binary.LittleEndian.PutUint16(blk[34+2*ib:], h|uint16(l)<<12)
		}
	}
}

// splitSums returns IQ1_S's Σw·x·q and Σw·q² when the sorted values below i1 take level 0, those below i2 level 1
// and the rest level 2, from the prefix sums of w·x and w, evaluated in ggml's order.
func splitSums(sumx, sumw []float32, i1, i2 int, xx *[3]float32) (sumqx, sumq2 float32) {
	n := len(sumx) - 1
	x0, x1, x2 := sumx[i1]-sumx[0], sumx[i2]-sumx[i1], sumx[n]-sumx[i2]
	w0, w1, w2 := sumw[i1]-sumw[0], sumw[i2]-sumw[i1], sumw[n]-sumw[i2]
	sumqx = float32(x0*xx[0]) + float32(x1*xx[1]) + float32(x2*xx[2])
	sumq2 = float32(float32(w0*xx[0])*xx[0]) + float32(float32(w1*xx[1])*xx[1]) + float32(float32(w2*xx[2])*xx[2])
	return sumqx, sumq2
}

// setTernaryLevels gives the values in sorted positions [0, i1) level 0, [i1, i2) level 1 and the rest level 2.
func setTernaryLevels(L []int8, order []int, i1, i2 int) {
	for j, i := range order {
		switch {
		case j < i1:
			L[i] = 0
		case j < i2:
			L[i] = 1
		default:
			L[i] = 2
		}
	}
}

// iq1mValues returns the value set of group k (0 or 1) of an IQ1_M block under shift code s: bit 1 of s selects
// the delta sign of the first group and bit 0 that of the second (0: both +, 1: +,-, 2: -,+, 3: -,-).
func iq1mValues(s, k int) *[3]float32 {
	if k == 0 && s < 2 || k == 1 && s%2 == 0 {
		return &iq1Plus
	}
	return &iq1Minus
}

// encodeIQ1M follows quantize_row_iq1_m_impl: blocks of 16, each group of 8 with its own delta sign, and a final
// least-squares refit of the super-block scale, stored as f16 across the scale words' top nibbles.
func encodeIQ1M(dst []byte, src, importance []float32) {
	const bs = 16
	lt := iq1sLattice()
	masks := [4]uint8{0x00, 0x80, 0x08, 0x88}
	var (
		weight [bs]float32
		order  [bs]int
		L      [bs]int8
		index  [2]int
		scales [16]float32
		shifts [16]int
		terms  [3][bs][8]float32 // per level and sorted value: w·v·x for the 4 shift codes, then w·v²
	)
	for ; len(src) >= qkK; src, dst, importance = src[qkK:], dst[56:], advance(importance, qkK) {
		blk := dst[:56]
		clear(blk)
		qs, qh := blk[:32], blk[32:48]
		sigma2 := 2 * sumSquares(src[:qkK]) / qkK
		weights := func(ib int) []float32 {
			xb := src[bs*ib : bs*ib+bs]
			if importance != nil {
				imatrixWeights(weight[:], xb, importance[bs*ib:], sigma2)
			} else {
				for i, v := range xb {
					weight[i] = v * v
				}
			}
			return xb
		}
		var maxScale float32
		for ib := range 16 {
			xb := weights(ib)
			mx := absMax(xb)
			if mx < 1e-7 { // GROUP_MAX_EPS_IQ1_M
				scales[ib], shifts[ib] = 0, 0
				continue
			}
			sortByValue(order[:], xb)
			// Every split's four sums run over the sorted values in order from zero, as ggml accumulates them;
			// the terms are precomputed per value and level, and a split (i1, i2) reuses the running sum of its
			// first i2 terms, which the same i1 with a smaller i2 already built, so the order of additions is kept.
			for j, i := range order {
				w, x := weight[i], xb[i]
				for lvl := range 3 {
					for k := range 4 {
						v := iq1mValues(k, i/(bs/2))[lvl]
						terms[lvl][j][k] = float32(float32(w*v) * x)
						terms[lvl][j][4+k] = float32(float32(w*v) * v)
					}
				}
			}
			bestScore, scale := float32(-math.MaxFloat32), mx
			besti1, besti2, bestK := -1, -1, -1
			var low [8]float32 // sums of the level-0 terms of the first i1 values
			for i1 := 0; i1 <= bs; i1++ {
				head := low // sums of the first i2 terms: level 0 below i1, level 1 from i1
				for i2 := i1; i2 <= bs; i2++ {
					sums := head
					for j := i2; j < bs; j++ {
						for c := range sums {
							sums[c] += terms[2][j][c]
						}
					}
					for k := range 4 {
						sumqx, sumq2 := sums[k], sums[4+k]
						if sumq2 > 0 && sumqx*sumqx > bestScore*sumq2 {
							scale = sumqx / sumq2
							bestScore = scale * sumqx
							besti1, besti2, bestK = i1, i2, k
						}
					}
					if i2 < bs {
						for c := range head {
							head[c] += terms[1][i2][c]
						}
					}
				}
				if i1 < bs {
					for c := range low {
						low[c] += terms[0][i1][c]
					}
				}
			}
			if besti1 < 0 || besti2 < 0 || bestK < 0 {
				scales[ib], shifts[ib] = 0, 0
				continue
			}
			setTernaryLevels(L[:], order[:], besti1, besti2)
			if scale < 0 {
				for j := range L {
					L[j] = 2 - L[j]
				}
				scale, bestK = -scale, 3-bestK
			}
			allOnGrid := true
			for k := range 2 {
				var on bool
				index[k], on = iq1Group(lt, xb[8*k:], weight[8*k:], scale, iq1mValues(bestK, k), L[8*k:])
				allOnGrid = allOnGrid && on
			}
			if !allOnGrid {
				var sqx, sq2 float32
				for k := range 2 {
					xx := iq1mValues(bestK, k)
					for j, l := range lt.levelsOf(index[k]) {
						w, v := weight[8*k+j], xx[l]
						sqx += float32(float32(w*v) * xb[8*k+j])
						sq2 += float32(float32(w*v) * v)
					}
				}
				if sqx > 0 && sq2 > 0 {
					scale = sqx / sq2
				}
			}
			qs[2*ib], qs[2*ib+1] = uint8(index[0]), uint8(index[1])
			qh[ib] = uint8(index[0]>>8) | uint8(index[1]>>8)<<4
			scales[ib], shifts[ib] = scale, bestK
			maxScale = maxC(maxScale, scale)
		}
		if maxScale == 0 {
			continue
		}
		var sc [4]uint16
		d := maxScale / 15
		id := 1 / d
		var sqx, sq2 float32
		for ib := range 16 {
			l := scaleNibble(id, scales[ib], 7)
			sc[ib/4] |= uint16(l) << (3 * (ib % 4))
			qh[ib] |= masks[shifts[ib]]
			xb := weights(ib)
			for k := range 2 {
				xx := iq1mValues(shifts[ib], k)
				idx := int(qs[2*ib+k]) + int(qh[ib])<<(8-4*k)&0x700
				for j, lv := range lt.levelsOf(idx) {
					w, v := weight[8*k+j], float32(xx[lv]*float32(2*l+1))
					sqx += float32(float32(w*v) * xb[8*k+j])
					sq2 += float32(float32(w*v) * v)
				}
			}
		}
		if sq2 > 0 {
			d = sqx / sq2
		}
		s := fp32ToFP16(d * 1.1125)
		sc[0] |= (s & 0x000f) << 12
		sc[1] |= (s & 0x00f0) << 8
		sc[2] |= (s & 0x0f00) << 4
		sc[3] |= s & 0xf000
		for i, v := range sc {
			binary.LittleEndian.PutUint16(blk[48+2*i:], v)
		}
	}
}
