package quant

import (
	"encoding/binary"

	"github.com/lathe-ml/lathe/tensor"
)

// IQ3_XXS and IQ3_S: 256-element super-blocks whose groups of 4 magnitudes are points of a 4-dimensional codebook
// (iq3xxs_grid, iq3s_grid), with separately stored signs and 4-bit scales (formats-quant.md §2.1; ggml-quants.c
// dequantize_row_iq3_*, quantize_row_iq3_xxs_impl, quantize_row_iq3_s_impl).

func init() {
	register(tensor.IQ3_XXS, codec{encodeRow: encodeIQ3XXS, decode: decodeIQ3XXS})
	register(tensor.IQ3_S, codec{encodeRow: encodeIQ3S, decode: decodeIQ3S})
}

// putGroup4 writes two 4-value codebook points signed by the 8 bits of signs.
func putGroup4(y []float32, db float32, g1, g2 uint32, signs uint8) {
	putGroup(y, db, uint64(g1)|uint64(g2)<<32, signs)
}

// block_iq3_xxs: f16 d, 64 8-bit grid indices, then per 32 elements a u32 of four 7-bit sign codes and a 4-bit scale.
func decodeIQ3XXS(dst []float32, src []byte) {
	for ; len(dst) >= qkK; dst, src = dst[qkK:], src[98:] {
		d := getF16(src)
		qs := src[2:66]
		for ib := range 8 {
			aux := binary.LittleEndian.Uint32(src[66+4*ib:])
			db := d * (0.5 + float32(aux>>28)) * 0.5
			for l := range 4 {
				q := qs[8*ib+2*l:]
				putGroup4(dst[32*ib+8*l:], db, iq3xxsGrid[q[0]], iq3xxsGrid[q[1]], ksignsIQ2XS[aux>>(7*l)&127])
			}
		}
	}
}

// block_iq3_s: f16 d, 64 low bytes of 9-bit grid indices, 8 bytes of their top bits, 32 sign bytes, 4 bytes of two
// 4-bit scales per 64 elements (odd multipliers 1..31).
func decodeIQ3S(dst []float32, src []byte) {
	for ; len(dst) >= qkK; dst, src = dst[qkK:], src[110:] {
		d := getF16(src)
		qs, qh, signs, scales := src[2:66], src[66:74], src[74:106], src[106:110]
		for ib := range 8 {
			db := d * float32(1+2*int(scales[ib/2]>>(4*(ib%2))&0xf))
			for l := range 4 {
				i1 := int(qs[8*ib+2*l]) | int(qh[ib])<<(8-2*l)&256
				i2 := int(qs[8*ib+2*l+1]) | int(qh[ib])<<(7-2*l)&256
				putGroup4(dst[32*ib+8*l:], db, iq3sGrid[i1], iq3sGrid[i2], signs[4*ib+l])
			}
		}
	}
}

// iq3Weights sets the importance of a 32-element block: qw·sqrt(sigma2 + x²) with an imatrix, else x².
func iq3Weights(weight, xb, qw []float32, sigma2 float32) {
	if qw != nil {
		imatrixWeights(weight, xb, qw, sigma2)
		return
	}
	for i, v := range xb {
		weight[i] = v * v
	}
}

// encodeIQ3XXS follows quantize_row_iq3_xxs_impl (grid_size 256): blocks of 32 in groups of 4, signs with even
// parity per 8, off-grid groups snapped again at the final scale.
func encodeIQ3XXS(dst []byte, src, importance []float32) {
	encodeIQ3(dst, src, importance, true)
}

// encodeIQ3S follows quantize_row_iq3_s_impl with IQ3S_BLOCK_SIZE 32: all 8 signs stored, a 9th index bit, and all
// groups snapped again at the final scale if any was off the grid.
func encodeIQ3S(dst []byte, src, importance []float32) {
	encodeIQ3(dst, src, importance, false)
}

// encodeIQ3 is the common body of IQ3_XXS (xxs) and IQ3_S (!xxs).
func encodeIQ3(dst []byte, src, importance []float32, xxs bool) {
	lt := iq3sLattice()
	search := scaleSearch{maxLevel: 7, steps: 9, step: 0.2, rule: resnapAllIfOffGrid, startOffGrid: true}
	blockBytes, fudge := 110, float32(1.033)
	if xxs {
		lt = iq3xxsLattice()
		search = scaleSearch{maxLevel: 7, steps: 15, step: 0.2, rule: resnapOffGrid}
		blockBytes, fudge = 98, 1.0125
	}
	var (
		weight, xval, waux [32]float32
		L                  [32]int8
		signs              [4]uint8
		scales             [8]float32
	)
	for ; len(src) >= qkK; src, dst, importance = src[qkK:], dst[blockBytes:], advance(importance, qkK) {
		blk := dst[:blockBytes]
		clear(blk)
		sigma2 := 2 * sumSquares(src[:qkK]) / qkK
		var maxScale float32
		// ggml's IQ3_S advances its index and sign cursors only past blocks it encodes, so the entries after an
		// all-zero block land one block early (and the block's own slots stay zero at the end); kept as written.
		next := 0
		for ib := range 8 {
			xb := src[32*ib : 32*ib+32]
			var qw []float32
			if importance != nil {
				qw = importance[32*ib:]
			}
			iq3Weights(weight[:], xb, qw, sigma2)
			for i, w := range weight {
				waux[i] = sqrt32(w)
			}
			for k := range 4 {
				signs[k] = foldSigns(xval[8*k:], xb[8*k:], weight[8*k:], xxs)
				if xxs {
					signs[k] &= 127
				}
			}
			mx := xval[0]
			for _, v := range xval[1:] {
				mx = maxC(mx, v)
			}
			L = [32]int8{}
			if xxs && mx < groupMaxEpsIQ3XXS || !xxs && mx == 0 {
				scales[ib] = 0
				continue
			}
			scale := search.run(lt, xval[:], weight[:], waux[:], L[:], mx, mx/15)
			if scale < 0 {
				// Unreachable with non-negative weights; ggml flips the signs so the stored scale stays unsigned.
				scale = -scale
				for k := range signs {
					signs[k] = ^signs[k]
					if xxs {
						signs[k] &= 127
					}
				}
			}
			for k := range 8 {
				p := lt.pointOf(L[4*k:])
				if xxs {
					blk[2+8*ib+k] = uint8(p)
				} else {
					blk[2+8*next+k] = uint8(p)
					blk[66+ib] |= uint8(p>>8) << k
				}
			}
			if xxs {
				packed := uint32(signs[0]) | uint32(signs[1])<<7 | uint32(signs[2])<<14 | uint32(signs[3])<<21
				binary.LittleEndian.PutUint32(blk[66+4*ib:], packed)
			} else {
				copy(blk[74+4*next:], signs[:])
			}
			next++
			scales[ib] = scale
			maxScale = maxC(maxScale, scale)
		}
		if maxScale == 0 {
			if xxs {
				clear(blk) // quantize_row_iq3_xxs_impl zeroes the block here; the IQ3_S one keeps what it wrote
			}
			continue
		}
		d := maxScale / 31
		putF16(blk, d*fudge)
		id := 1 / d
		for ib := range 8 {
			l := scaleNibble(id, scales[ib], 15)
			if xxs {
				blk[66+4*ib+3] |= uint8(l << 4)
			} else {
				blk[106+ib/2] |= uint8(l << (4 * (ib % 2)))
			}
		}
	}
}
