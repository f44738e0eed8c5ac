package quant

import (
	"encoding/binary"
	"math"

	"github.com/lathe-ml/lathe/tensor"
)

// IQ2_XXS, IQ2_XS and IQ2_S: 256-element super-blocks whose groups of 8 magnitudes are points of an 8-dimensional
// codebook (iq2xxs_grid, iq2xs_grid, iq2s_grid) with separately stored signs and 4-bit group scales
// (formats-quant.md §2.1; ggml-quants.c dequantize_row_iq2_*, quantize_row_iq2_*_impl).

func init() {
	register(tensor.IQ2_XXS, codec{encodeRow: encodeIQ2XXS, decode: decodeIQ2XXS, requiresImatrix: true})
	register(tensor.IQ2_XS, codec{encodeRow: encodeIQ2XS, decode: decodeIQ2XS, requiresImatrix: true})
	register(tensor.IQ2_S, codec{encodeRow: encodeIQ2S, decode: decodeIQ2S})
}

const (
	qkK               = 256   // QK_K: elements per super-block
	groupMaxEps       = 1e-15 // GROUP_MAX_EPS: a group whose largest magnitude is below it counts as all zeros
	groupMaxEpsIQ2S   = 1e-8
	groupMaxEpsIQ3XXS = 1e-8
)

// putGroup writes the 8 values db·grid[j], negated where bit j of signs is set. ggml writes the sign as a
// multiplication by ±1, which GCC compiles to a sign flip; flipping the sign bit reproduces that also for a NaN
// scale, and without a branch on random sign bits.
func putGroup(y []float32, db float32, grid uint64, signs uint8) {
	y = y[:8]
	for j := range y {
		v := db * float32(uint8(grid>>(8*j)))
		y[j] = math.Float32frombits(math.Float32bits(v) ^ uint32(signs>>j&1)<<31)
	}
}

// block_iq2_xxs: f16 d, then per 32 elements two u32: four 8-bit grid indices, and four 7-bit sign codes with the
// 4-bit scale in the top bits.
func decodeIQ2XXS(dst []float32, src []byte) {
	for ; len(dst) >= qkK; dst, src = dst[qkK:], src[66:] {
		d := getF16(src)
		for ib := range 8 {
			q := src[2+8*ib : 10+8*ib]
			aux := binary.LittleEndian.Uint32(q[4:])
			db := d * (0.5 + float32(aux>>28)) * 0.25
			for l := range 4 {
				putGroup(dst[32*ib+8*l:], db, iq2xxsGrid[q[l]], ksignsIQ2XS[aux>>(7*l)&127])
			}
		}
	}
}

// block_iq2_xs: f16 d, 32 u16 (9-bit grid index, 7-bit sign code), 8 bytes of two 4-bit scales per 32 elements.
func decodeIQ2XS(dst []float32, src []byte) {
	for ; len(dst) >= qkK; dst, src = dst[qkK:], src[74:] {
		d := getF16(src)
		for ib := range 8 {
			sc := src[66+ib]
			db := [2]float32{d * (0.5 + float32(sc&0xf)) * 0.25, d * (0.5 + float32(sc>>4)) * 0.25}
			for l := range 4 {
				q := binary.LittleEndian.Uint16(src[2+8*ib+2*l:])
				putGroup(dst[32*ib+8*l:], db[l/2], iq2xsGrid[q&511], ksignsIQ2XS[q>>9])
			}
		}
	}
}

// block_iq2_s: f16 d, 32 low bytes of 10-bit grid indices, 32 full sign bytes, 8 bytes of the indices' top 2 bits
// (four per byte), 8 bytes of two 4-bit scales per 32 elements.
func decodeIQ2S(dst []float32, src []byte) {
	for ; len(dst) >= qkK; dst, src = dst[qkK:], src[82:] {
		d := getF16(src)
		qs, signs, qh, scales := src[2:34], src[34:66], src[66:74], src[74:82]
		for ib := range 8 {
			db := [2]float32{d * (0.5 + float32(scales[ib]&0xf)) * 0.25, d * (0.5 + float32(scales[ib]>>4)) * 0.25}
			for l := range 4 {
				idx := int(qs[4*ib+l]) | int(qh[ib])<<(8-2*l)&0x300
				putGroup(dst[32*ib+8*l:], db[l/2], iq2sGrid[idx], signs[4*ib+l])
			}
		}
	}
}

// sqrt32 is C's sqrtf: the float64 square root of a float32, rounded once, is the correctly rounded float32 root.
func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }

// sumSquares is Σx² accumulated left to right in float32, the loop ggml writes before every sigma2 or av_x.
func sumSquares(x []float32) float32 {
	var s float32
	for _, v := range x {
		s += float32(v * v)
	}
	return s
}

// maxC is C's MAX(a, b) macro, a > b ? a : b, which differs from Go's max on NaN and signed zeros.
func maxC(a, b float32) float32 {
	if a > b {
		return a
	}
	return b
}

// advance drops the first n weights of an optional importance vector.
func advance(importance []float32, n int) []float32 {
	if importance == nil {
		return nil
	}
	return importance[n:]
}

// imatrixWeights sets weight[i] = qw[i]·sqrt(sigma2 + x[i]²), the i-quants' importance with an imatrix.
func imatrixWeights(weight, x, qw []float32, sigma2 float32) {
	for i, v := range x {
		weight[i] = qw[i] * sqrt32(sigma2+float32(v*v))
	}
}

// foldSigns stores the magnitudes of a group of 8 in xval and returns its sign bits. With evenParity (IQ2_XXS,
// IQ2_XS, IQ3_XXS store 7 sign bits and imply the 8th) an odd count of negatives cannot be stored, so the element
// with the least w·x² keeps its wrong sign: its xval is negated back and its bit cleared.
func foldSigns(xval, x, weight []float32, evenParity bool) uint8 {
	var s uint8
	flips := 0
	for i := range 8 {
		if x[i] >= 0 {
			xval[i] = x[i]
		} else {
			xval[i] = -x[i]
			flips++
			s |= 1 << i
		}
	}
	if evenParity && flips%2 == 1 {
		imin, least := 0, float32(weight[0]*x[0])*x[0]
		for i := 1; i < 8; i++ {
			if ax := float32(weight[i]*x[i]) * x[i]; ax < least {
				imin, least = i, ax
			}
		}
		xval[imin] = -xval[imin]
		s ^= 1 << imin
	}
	return s
}

// levelSums returns Σw·x·q and Σw·q² for q = 2l+1, the least-squares terms of a block's scale.
func levelSums(weight, xval []float32, L []int8) (sumqx, sumq2 float32) {
	for i, w := range weight {
		q := float32(2*int(L[i]) + 1)
		sumqx += float32(float32(w*xval[i]) * q)
		sumq2 += float32(float32(w*q) * q)
	}
	return sumqx, sumq2
}

// resnapRule says which groups are snapped again at the winning scale of a scaleSearch.
type resnapRule int

const (
	resnapOffGrid      resnapRule = iota // if some group needed a neighbour search, only those groups
	resnapAllIfOffGrid                   // if some group needed a neighbour search, every group
	resnapAll                            // always every group
)

// scaleSearch is the block-scale search shared by the IQ2 and IQ3 encoders: for each trial inverse scale
// (nmax + is·step)/max, is in -steps..steps, every group is snapped to the codebook and the levels maximising
// (Σw·x·q)²/Σw·q² are kept with their least-squares scale; then groups are snapped again at that scale and the
// scale refitted.
type scaleSearch struct {
	maxLevel     int // kMaxQ-1; nmax = 2·kMaxQ-1
	steps        int
	step         float32
	rule         resnapRule
	startOffGrid bool // IQ3_S starts with every group marked off the grid

	laux              [32]int8 // scratch for blocks of up to 32 elements in up to 8 groups
	onGrid, onGridAux [8]bool
}

// run searches one block of xval (magnitudes) with weights weight and their square roots waux; L receives the
// chosen levels. div is the denominator of the trial inverse scales and scale the result if no trial improves.
func (s *scaleSearch) run(lt *lattice, xval, weight, waux []float32, L []int8, div, scale float32) float32 {
	dim := lt.dim
	Laux, onGrid, onGridAux := s.laux[:len(xval)], s.onGrid[:len(xval)/dim], s.onGridAux[:len(xval)/dim]
	for k := range onGrid {
		onGrid[k] = !s.startOffGrid
	}
	nmax := float32(2*s.maxLevel + 1)
	var best float32
	for is := -s.steps; is <= s.steps; is++ {
		id := (nmax + float32(float32(is)*s.step)) / div
		thisScale := 1 / id
		for k := range onGridAux {
			_, onGridAux[k] = lt.snap(xval[dim*k:], waux[dim*k:], id, thisScale, s.maxLevel, Laux[dim*k:])
		}
		sumqx, sumq2 := levelSums(weight, xval, Laux)
		if sumq2 > 0 && sumqx*sumqx > best*sumq2 {
			scale = sumqx / sumq2
			best = scale * sumqx
			copy(L, Laux)
			copy(onGrid, onGridAux)
		}
	}
	offGrid := false
	for _, on := range onGrid {
		offGrid = offGrid || !on
	}
	if scale > 0 && (offGrid || s.rule == resnapAll) {
		id := 1 / scale
		for k, on := range onGrid {
			if on && s.rule == resnapOffGrid {
				continue
			}
			lt.snap(xval[dim*k:], waux[dim*k:], id, scale, s.maxLevel, L[dim*k:])
		}
		if sumqx, sumq2 := levelSums(weight, xval, L); sumq2 > 0 {
			scale = sumqx / sumq2
		}
	}
	return scale
}

// scaleNibble quantizes a group scale against the super-block's d: nearest_int(0.5·(s/d − 1)) in 0..maxL.
func scaleNibble(id, s float32, maxL int) int {
	return min(max(nearestInt(0.5*(float32(id*s)-1)), 0), maxL)
}

// encodeIQ2XXS follows quantize_row_iq2_xxs_impl: blocks of 32, the search seeded by make_qp_quants, signs with
// even parity, every group snapped again at the final scale.
func encodeIQ2XXS(dst []byte, src, importance []float32) {
	lt := iq2xxsLattice()
	search := scaleSearch{maxLevel: 2, steps: 6, step: 0.1, rule: resnapAll}
	var (
		weight, xval, waux [32]float32
		L                  [32]int8
		Lqp                [32]uint8
		signs              [4]uint8
		scales             [8]float32
		q2                 [16]uint32
	)
	for ; len(src) >= qkK; src, dst, importance = src[qkK:], dst[66:], importance[qkK:] {
		q2 = [16]uint32{}
		sigma2 := sumSquares(src[:qkK]) / qkK
		var maxScale float32
		for ib := range 8 {
			xb := src[32*ib : 32*ib+32]
			imatrixWeights(weight[:], xb, importance[32*ib:], sigma2)
			for i, w := range weight {
				waux[i] = sqrt32(w)
			}
			for k := range 4 {
				signs[k] = foldSigns(xval[8*k:], xb[8*k:], weight[8*k:], true) & 127
			}
			mx := xval[0]
			for _, v := range xval[1:] {
				mx = maxC(mx, v)
			}
			if mx < groupMaxEps {
				scales[ib] = 0
				continue
			}
			scale := makeQPQuants(4, xval[:], Lqp[:], weight[:])
			effMax := scale * 3
			// ggml tests effMax <= 0; a NaN scale (from non-finite input) would go on to abort there on a point
			// off the grid, so it is skipped like a zero one.
			if !(effMax > 0) {
				scales[ib] = 0
				continue
			}
			for i, l := range Lqp {
				L[i] = int8(l)
			}
			scale = search.run(lt, xval[:], weight[:], waux[:], L[:], effMax, scale)
			if scale < 0 {
				// Unreachable with non-negative weights; ggml flips the signs so the stored scale stays unsigned.
				scale = -scale
				for k := range signs {
					signs[k] = ^signs[k] & 127
				}
			}
			for k := range 4 {
				q2[2*ib] |= uint32(lt.pointOf(L[8*k:])) << (8 * k)
				q2[2*ib+1] |= uint32(signs[k]) << (7 * k)
			}
			scales[ib] = scale
			maxScale = maxC(maxScale, scale)
		}
		clear(dst[:66])
		if maxScale == 0 {
			continue
		}
		d := maxScale / 31
		putF16(dst, d)
		id := 1 / d
		for ib := range 8 {
			q2[2*ib+1] |= uint32(scaleNibble(id, scales[ib], 15)) << 28
		}
		for i, v := range q2 {
			binary.LittleEndian.PutUint32(dst[2+4*i:], v)
		}
	}
}

// encodeIQ2XS follows quantize_row_iq2_xs_impl: blocks of 16, signs with even parity.
func encodeIQ2XS(dst []byte, src, importance []float32) {
	encodeIQ2Pair(dst, src, importance, iq2xsLattice(), true)
}

// encodeIQ2S follows quantize_row_iq2_s_impl: blocks of 16, all 8 signs stored, weights 0.25·sigma2 + x² without
// an imatrix.
func encodeIQ2S(dst []byte, src, importance []float32) {
	encodeIQ2Pair(dst, src, importance, iq2sLattice(), false)
}

// encodeIQ2Pair is the common body of IQ2_XS (xs) and IQ2_S (!xs); they differ in sign parity, the no-imatrix
// weights, the zero threshold, the scale fudge factor and the block layout.
func encodeIQ2Pair(dst []byte, src, importance []float32, lt *lattice, xs bool) {
	search := scaleSearch{maxLevel: 2, steps: 9, step: 0.1, rule: resnapOffGrid}
	blockBytes, eps, sigmaScale, fudge := 82, float32(groupMaxEpsIQ2S), float32(2), float32(0.9875)
	if xs {
		blockBytes, eps, sigmaScale, fudge = 74, groupMaxEps, 1, 1
	}
	var (
		weight, xval, waux [16]float32
		L                  [16]int8
		signs              [2]uint8
		scales             [16]float32
	)
	for ; len(src) >= qkK; src, dst, importance = src[qkK:], dst[blockBytes:], advance(importance, qkK) {
		blk := dst[:blockBytes]
		clear(blk)
		sigma2 := sigmaScale * sumSquares(src[:qkK]) / qkK
		var maxScale float32
		for ib := range 16 {
			xb := src[16*ib : 16*ib+16]
			if importance != nil {
				imatrixWeights(weight[:], xb, importance[16*ib:], sigma2)
			} else {
				for i, v := range xb {
					weight[i] = float32(0.25*sigma2) + float32(v*v)
				}
			}
			for i, w := range weight {
				waux[i] = sqrt32(w)
			}
			for k := range 2 {
				signs[k] = foldSigns(xval[8*k:], xb[8*k:], weight[8*k:], xs)
				if xs {
					signs[k] &= 127
				}
			}
			mx := xval[0]
			for _, v := range xval[1:] {
				mx = maxC(mx, v)
			}
			L = [16]int8{}
			if mx < eps {
				scales[ib] = 0
				continue
			}
			scale := search.run(lt, xval[:], weight[:], waux[:], L[:], mx, mx/5)
			if scale < 0 {
				scale = -scale
				for k := range signs {
					signs[k] = ^signs[k]
					if xs {
						signs[k] &= 127
					}
				}
			}
			for k := range 2 {
				p := lt.pointOf(L[8*k:])
				i8 := 2*ib + k
				if xs {
					binary.LittleEndian.PutUint16(blk[2+2*i8:], uint16(p)|uint16(signs[k])<<9)
				} else {
					blk[2+i8] = uint8(p)
					blk[66+i8/4] |= uint8(p>>8) << (2 * (i8 % 4))
					blk[34+i8] = signs[k]
				}
			}
			scales[ib] = scale
			maxScale = maxC(maxScale, scale)
		}
		if maxScale == 0 {
			continue
		}
		d := maxScale / 31
		putF16(blk, d*fudge)
		id := 1 / d
		sc := blk[66:74]
		if !xs {
			sc = blk[74:82]
		}
		for ib := range 16 {
			sc[ib/2] |= uint8(scaleNibble(id, scales[ib], 15)) << (4 * (ib % 2))
		}
	}
}

// makeQPQuants is ggml's make_qp_quants: non-negative levels 0..nmax for x under weights w, the best of nine trial
// scales (nmax ± 0.1·is)/max(x), refined by up to five passes of coordinate descent; it returns the least-squares
// scale. L is uint8 as in ggml, so a negative level (IQ2_XXS's x may hold one negated element) wraps as it does there.
func makeQPQuants(nmax int, x []float32, L []uint8, w []float32) float32 {
	n := len(x)
	L, w = L[:n], w[:n]
	var mx float32
	for _, v := range x {
		mx = maxC(mx, v)
	}
	if mx < groupMaxEps {
		clear(L)
		return 0
	}
	fmax := float32(nmax)
	iscale := fmax / mx
	for i, v := range x {
		L[i] = uint8(nearestInt(iscale * v))
	}
	scale := 1 / iscale
	var bestMSE float32
	for i, v := range x {
		diff := v - float32(scale*float32(L[i]))
		bestMSE += float32(float32(w[i]*diff) * diff)
	}
	for is := -4; is <= 4; is++ {
		if is == 0 {
			continue
		}
		iscaleIs := (float32(0.1*float32(is)) + fmax) / mx
		scaleIs := 1 / iscaleIs
		var mse float32
		for i, v := range x {
			l := min(nmax, nearestInt(iscaleIs*v))
			diff := v - float32(scaleIs*float32(l))
			mse += float32(float32(w[i]*diff) * diff)
		}
		if mse < bestMSE {
			bestMSE, iscale = mse, iscaleIs
		}
	}
	var sumlx, suml2 float32
	for i, v := range x {
		l := min(nmax, nearestInt(iscale*v))
		L[i] = uint8(l)
		fl := float32(l)
		sumlx += float32(float32(w[i]*v) * fl)
		suml2 += float32(float32(w[i]*fl) * fl)
	}
	for range 5 {
		changed := false
		for i, v := range x {
			wi, fl := w[i], float32(L[i])
			slx := sumlx - float32(float32(wi*v)*fl)
			sl2 := suml2 - float32(float32(wi*fl)*fl)
			if !(slx > 0 && sl2 > 0) {
				continue
			}
			nl := min(nmax, nearestInt(float32(v*sl2)/slx))
			if nl == int(L[i]) {
				continue
			}
			fn := float32(nl)
			slx += float32(float32(wi*v) * fn)
			sl2 += float32(float32(wi*fn) * fn)
			if float32(slx*slx)*suml2 > float32(sumlx*sumlx)*sl2 {
				L[i], sumlx, suml2 = uint8(nl), slx, sl2
				changed = true
			}
		}
		if !changed {
			break
		}
	}
	if suml2 > 0 {
		return sumlx / suml2
	}
	return 0
}
