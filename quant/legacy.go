package quant

import (
	"encoding/binary"
	"math"

	"github.com/lathe-ml/lathe/tensor"
)

// The legacy 32-element block types (ggml-quants.c quantize_row_q{4,5,8}_{0,1}_ref and the *_impl variants that
// ggml_quantize_chunk runs when an importance matrix is given). Each block starts with an F16 scale; the 4-bit
// codes of elements j and j+16 share byte j, low nibble first, and Q5's fifth bits sit in a little-endian u32.

func init() {
	register(tensor.Q4_0, codec{encodeRow: encodeQ4_0, decode: decodeQ4_0})
	register(tensor.Q4_1, codec{encodeRow: encodeQ4_1, decode: decodeQ4_1})
	register(tensor.Q5_0, codec{encodeRow: encodeQ5_0, decode: decodeQ5_0})
	register(tensor.Q5_1, codec{encodeRow: encodeQ5_1, decode: decodeQ5_1})
	register(tensor.Q8_0, codec{encodeRow: encodeQ8_0, decode: decodeQ8_0})
}

const qk = 32 // elements per legacy block (QK4_0 = QK4_1 = QK5_0 = QK5_1 = QK8_0)

// signedMax returns the first element of largest magnitude, NaNs ignored: the value ggml's loops find with
// `if (amax < fabsf(v)) { amax = fabsf(v); max = v; }` (0 when every element is zero or NaN). The magnitudes
// are compared as integers, which orders non-NaN floats exactly and lets four branch-free maxima run in
// parallel instead of one data-dependent branch per element.
func signedMax(x []float32) float32 {
	m := absMaxBits(x)
	if m == 0 {
		return 0
	}
	for _, v := range x {
		if math.Float32bits(v)&0x7fffffff == m {
			return v
		}
	}
	return 0
}

// absMaxBits is the bit pattern of the largest |x| that is not NaN (0 if none).
func absMaxBits(x []float32) uint32 {
	var m0, m1, m2, m3 uint32
	for ; len(x) >= 4; x = x[4:] {
		m0, m1 = max(m0, absBits(x[0])), max(m1, absBits(x[1]))
		m2, m3 = max(m2, absBits(x[2])), max(m3, absBits(x[3]))
	}
	for _, v := range x {
		m0 = max(m0, absBits(v))
	}
	return max(m0, m1, m2, m3)
}

// absBits is the bit pattern of |v|, or 0 for NaN.
func absBits(v float32) uint32 {
	a := math.Float32bits(v) & 0x7fffffff
	if a > 0x7f800000 {
		return 0
	}
	return a
}

// minMax is the FLT_MAX-seeded scan of quantize_row_q4_1_ref and quantize_row_q5_1_ref.
func minMax(x []float32) (lo, hi float32) {
	// The bits are selected as integers so that the compiler can use conditional moves, not branches.
	l, h := math.Float32bits(math.MaxFloat32), math.Float32bits(-math.MaxFloat32)
	for _, v := range x {
		b := math.Float32bits(v)
		if v < math.Float32frombits(l) {
			l = b
		}
		if v > math.Float32frombits(h) {
			h = b
		}
	}
	return math.Float32frombits(l), math.Float32frombits(h)
}

func inverse(d float32) float32 {
	if d != 0 {
		return 1 / d
	}
	return 0
}

// packNibbles stores codes j and j+16 of a 32-element block in byte j, as the Q4 and IQ4_NL encoders do (the
// second code is shifted into the byte without masking the first, exactly like the C assignment).
func packNibbles(qs []byte, q *[qk]uint8) {
	qs = qs[:qk/2]
	for j := range qs {
		qs[j] = q[j] | q[j+qk/2]<<4
	}
}

// packQ5 splits 5-bit codes into nibbles and the qh bit mask (bit j for element j).
func packQ5(qh, qs []byte, q *[qk]uint8) {
	qs = qs[:qk/2]
	var h uint32
	for j := range qs {
		qs[j] = q[j]&0x0F | (q[j+qk/2]&0x0F)<<4
		h |= uint32(q[j]&0x10)>>4<<j | uint32(q[j+qk/2]&0x10)>>4<<(j+qk/2)
	}
	binary.LittleEndian.PutUint32(qh, h)
}

func encodeQ4_0(dst []byte, src, qw []float32) {
	if qw != nil {
		encodeQXWeighted(dst, src, qw, 8, 18, func(y []byte, q *[qk]uint8) { packNibbles(y[2:], q) })
		return
	}
	for b := legacyAsm(tensor.Q4_0, dst, src); b < len(src)/qk; b++ {
		x, y := src[b*qk:][:qk], dst[b*18:][:18]
		d := signedMax(x) / -8
		id := inverse(d)
		putF16(y, d)
		qs, lo, hi := y[2:18], x[:16], x[16:32]
		for j := range qs {
			qs[j] = q4Code(lo[j], id) | q4Code(hi[j], id)<<4
		}
	}
}

// q4Code is MIN(15, (int8_t)(x*id + 8.5f)) of quantize_row_q4_0_ref as a byte.
func q4Code(x, id float32) uint8 {
	return uint8(min(15, int(int8(truncInt32(float32(x*id)+8.5)))))
}

func encodeQ5_0(dst []byte, src, qw []float32) {
	if qw != nil {
		encodeQXWeighted(dst, src, qw, 16, 22, func(y []byte, q *[qk]uint8) { packQ5(y[2:6], y[6:], q) })
		return
	}
	for b := legacyAsm(tensor.Q5_0, dst, src); b < len(src)/qk; b++ {
		x, y := src[b*qk:][:qk], dst[b*22:][:22]
		d := signedMax(x) / -16
		id := inverse(d)
		putF16(y, d)
		var qh uint32
		qs, lo, hi := y[6:22], x[:16], x[16:32]
		for j := range qs {
			q0 := uint8(min(31, int(int8(truncInt32(float32(lo[j]*id)+16.5)))))
			q1 := uint8(min(31, int(int8(truncInt32(float32(hi[j]*id)+16.5)))))
			qs[j] = q0&0x0F | (q1&0x0F)<<4
			qh |= uint32(q0>>4&1)<<j | uint32(q1>>4&1)<<(j+16)
		}
		binary.LittleEndian.PutUint32(y[2:], qh)
	}
}

// encodeQXWeighted is quantize_row_q4_0_impl / quantize_row_q5_0_impl: make_qx_quants per block, weighted by the
// importance times sqrt(sigma2 + x²) with sigma2 the mean square of the whole row.
func encodeQXWeighted(dst []byte, src, qw []float32, nmax, blockBytes int, pack func(y []byte, q *[qk]uint8)) {
	sigma2 := sumSquares(src) / float32(len(src))
	var w [qk]float32
	var L [qk]int8
	var q [qk]uint8
	for b := range len(src) / qk {
		x, y := src[b*qk:][:qk], dst[b*blockBytes:][:blockBytes]
		imatrixWeights(w[:], x, qw[b*qk:], sigma2)
		putF16(y, makeQXQuants(nmax, x, w[:], L[:]))
		for j, l := range L {
			q[j] = uint8(l)
		}
		pack(y, &q)
	}
}

func encodeQ4_1(dst []byte, src, qw []float32) {
	if qw != nil {
		encodeQKXWeighted(dst, src, qw, 15, 20, func(y []byte, L *[qk]uint8) { packNibbles(y[4:], L) })
		return
	}
	for b := legacyAsm(tensor.Q4_1, dst, src); b < len(src)/qk; b++ {
		x, y := src[b*qk:][:qk], dst[b*20:][:20]
		lo, hi := minMax(x)
		d := (hi - lo) / 15
		id := inverse(d)
		putF16(y, d)
		putF16(y[2:], lo)
		var q [qk]uint8
		for j, v := range x {
			q[j] = uint8(min(15, int(int8(truncInt32(float32((v-lo)*id)+0.5)))))
		}
		packNibbles(y[4:], &q)
	}
}

func encodeQ5_1(dst []byte, src, qw []float32) {
	if qw != nil {
		encodeQKXWeighted(dst, src, qw, 31, 24, func(y []byte, L *[qk]uint8) { packQ5(y[4:8], y[8:], L) })
		return
	}
	for b := legacyAsm(tensor.Q5_1, dst, src); b < len(src)/qk; b++ {
		x, y := src[b*qk:][:qk], dst[b*24:][:24]
		lo, hi := minMax(x)
		d := (hi - lo) / 31
		id := inverse(d)
		putF16(y, d)
		putF16(y[2:], lo)
		var q [qk]uint8
		for j, v := range x {
			q[j] = uint8(truncInt32(float32((v-lo)*id) + 0.5)) // no clamp here in quantize_row_q5_1_ref
		}
		packQ5(y[4:8], y[8:], &q)
	}
}

// encodeQKXWeighted is quantize_row_q4_1_impl / quantize_row_q5_1_impl: make_qkx3_quants per block.
func encodeQKXWeighted(dst []byte, src, qw []float32, nmax, blockBytes int, pack func(y []byte, L *[qk]uint8)) {
	sigma2 := sumSquares(src) / float32(len(src))
	var w [qk]float32
	var L [qk]uint8
	for b := range len(src) / qk {
		x, y := src[b*qk:][:qk], dst[b*blockBytes:][:blockBytes]
		imatrixWeights(w[:], x, qw[b*qk:], sigma2)
		d, negMin := makeQKXQuants(nmax, x, w[:], L[:], -0.9, 0.05, 36, false)
		putF16(y, d)
		putF16(y[2:], -negMin)
		pack(y, &L)
	}
}

func encodeQ8_0(dst []byte, src, _ []float32) {
	for b := 0; b < len(src)/qk; b++ {
		if n := q8_0Asm(dst[b*34:], src[b*qk:]); n > 0 {
			b += n - 1
			continue
		}
		x, y := src[b*qk:][:qk], dst[b*34:][:34]
		amax := math.Float32frombits(absMaxBits(x))
		if hasNaN(x) {
			// MAX(amax, fabsf(v)) restarts from the element after a NaN (and ends NaN if the last one is).
			amax = 0
			for _, v := range x {
				amax = maxC(amax, abs32(v))
			}
		}
		d := amax / 127
		id := inverse(d)
		putF16(y, d)
		for j, v := range x {
			y[2+j] = uint8(roundToInt32(v * id))
		}
	}
}

func hasNaN(x []float32) bool {
	for _, v := range x {
		if v != v {
			return true
		}
	}
	return false
}

// roundToInt32 is (int)roundf(f) as compiled for x86-64: round half away from zero, then truncInt32.
// Adding the float just below 0.5 with f's sign and truncating rounds half away from zero exactly, for every
// float32 (the sum cannot round up to the next integer unless f's fraction is at least one half).
func roundToInt32(f float32) int32 {
	f = float32(f)
	return truncInt32(f + math.Float32frombits(math.Float32bits(0.49999997)|math.Float32bits(f)&(1<<31)))
}

func decodeQ4_0(dst []float32, src []byte) {
	for b := range len(dst) / qk {
		y, x := dst[b*qk:][:qk], src[b*18:][:18]
		d := getF16(x)
		for j, q := range x[2:18] {
			y[j] = float32(int(q&0x0F)-8) * d
			y[j+16] = float32(int(q>>4)-8) * d
		}
	}
}

func decodeQ4_1(dst []float32, src []byte) {
	for b := range len(dst) / qk {
		y, x := dst[b*qk:][:qk], src[b*20:][:20]
		d, m := getF16(x), getF16(x[2:])
		for j, q := range x[4:20] {
			y[j] = float32(float32(q&0x0F)*d) + m
			y[j+16] = float32(float32(q>>4)*d) + m
		}
	}
}

func decodeQ5_0(dst []float32, src []byte) {
	for b := range len(dst) / qk {
		y, x := dst[b*qk:][:qk], src[b*22:][:22]
		d := getF16(x)
		qh := binary.LittleEndian.Uint32(x[2:])
		for j, q := range x[6:22] {
			h0 := uint8(qh>>j<<4) & 0x10
			h1 := uint8(qh>>(j+12)) & 0x10
			y[j] = float32(int(q&0x0F|h0)-16) * d
			y[j+16] = float32(int(q>>4|h1)-16) * d
		}
	}
}

func decodeQ5_1(dst []float32, src []byte) {
	for b := range len(dst) / qk {
		y, x := dst[b*qk:][:qk], src[b*24:][:24]
		d, m := getF16(x), getF16(x[2:])
		qh := binary.LittleEndian.Uint32(x[4:])
		for j, q := range x[8:24] {
			h0 := uint8(qh>>j<<4) & 0x10
			h1 := uint8(qh>>(j+12)) & 0x10
			y[j] = float32(float32(q&0x0F|h0)*d) + m
			y[j+16] = float32(float32(q>>4|h1)*d) + m
		}
	}
}

func decodeQ8_0(dst []float32, src []byte) {
	for b := range len(dst) / qk {
		y, x := dst[b*qk:][:qk], src[b*34:][:34]
		d := getF16(x)
		for j, q := range x[2:34] {
			y[j] = float32(int8(q)) * d
		}
	}
}
