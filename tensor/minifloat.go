package tensor

import "math"

// minifloat describes the OCP 8-bit (OFP8) and microscaling (MX) element formats: sign, expBits, manBits.
// The formats differ only in how the all-ones exponent is used:
//   - ieee: all-ones exponent holds Inf (mantissa 0) and NaN, as F8_E5M2 does;
//   - fn:   only the all-ones code is NaN ("finite, NaN"), as F8_E4M3 does (max 448);
//   - neither: every code is finite (F4 E2M1, F6 E2M3, F6 E3M2 have no Inf or NaN).
type minifloat struct {
	expBits, manBits, bias int
	ieee, fn               bool
	decode                 [256]float32
	maxCode                uint8 // largest finite magnitude code
}

var (
	e4m3 = newMinifloat(4, 3, 7, false, true)
	e5m2 = newMinifloat(5, 2, 15, true, false)
	e2m1 = newMinifloat(2, 1, 1, false, false)
	e2m3 = newMinifloat(2, 3, 1, false, false)
	e3m2 = newMinifloat(3, 2, 3, false, false)
)

func newMinifloat(expBits, manBits, bias int, ieee, fn bool) *minifloat {
	f := &minifloat{expBits: expBits, manBits: manBits, bias: bias, ieee: ieee, fn: fn}
	magBits := expBits + manBits
	expMax := 1<<expBits - 1
	manMask := 1<<manBits - 1
	for code := 0; code < 1<<(magBits+1); code++ {
		e := code >> manBits & expMax
		m := code & manMask
		var v float64
		switch {
		case ieee && e == expMax && m == 0:
			v = math.Inf(1)
		case ieee && e == expMax, fn && e == expMax && m == manMask:
			v = math.NaN()
		case e == 0:
			v = math.Ldexp(float64(m), 1-bias-manBits)
		default:
			v = math.Ldexp(float64(manMask+1+m), e-bias-manBits)
		}
		if code>>magBits&1 == 1 {
			v = -v
		}
		f.decode[code] = float32(v)
		if code < 1<<magBits && !math.IsNaN(v) && !math.IsInf(v, 0) {
			f.maxCode = uint8(code)
		}
	}
	return f
}

func (f *minifloat) toFloat32(code uint8) float32 { return f.decode[code] }

func (f *minifloat) nanCode() uint8 { return uint8(1<<(f.expBits+f.manBits) - 1) }

// fromFloat32 rounds to nearest even. Out-of-range magnitudes, infinities included, saturate to the largest finite
// value (the OCP "saturating" conversion, which PyTorch and NVIDIA's SATFINITE mode also use). NaN maps to the
// format's NaN; formats without NaN get zero of the same sign, which is why FromFloat32 refuses
// NaN input for them rather than corrupt data silently.
func (f *minifloat) fromFloat32(x float32) uint8 {
	signBit := uint8(0)
	if math.Signbit(float64(x)) {
		signBit = 1 << (f.expBits + f.manBits)
	}
	if x != x {
		if f.ieee || f.fn {
			return signBit | f.nanCode()
		}
		return signBit
	}
	a := math.Abs(float64(x))
	if a == 0 {
		return signBit
	}
	if a > float64(f.decode[f.maxCode]) {
		return signBit | f.maxCode
	}
	_, exp := math.Frexp(a) // a = frac·2^exp, frac in [0.5, 1)
	e := exp - 1
	emin := 1 - f.bias
	if e < emin {
		e = emin
	}
	// a / 2^(e-manBits) is exact in float64, so RoundToEven rounds the true value.
	q := int(math.RoundToEven(math.Ldexp(a, f.manBits-e)))
	if q == 1<<(f.manBits+1) { // the mantissa carried into the exponent
		q >>= 1
		e++
	}
	var code int
	if q < 1<<f.manBits {
		code = q // subnormal, or zero after rounding
	} else {
		code = (e+f.bias)<<f.manBits | (q - 1<<f.manBits)
	}
	if code > int(f.maxCode) {
		code = int(f.maxCode)
	}
	return signBit | uint8(code)
}

// E8M0ToFloat32 decodes the OCP MX scale type: 2^(code-127), with 0xFF the only NaN and no zero or sign.
func E8M0ToFloat32(code uint8) float32 {
	if code == 0xFF {
		return float32(math.NaN())
	}
	return float32(math.Ldexp(1, int(code)-127))
}

// Float32ToE8M0 rounds to the nearest power of two (a float with 8 exponent bits and no mantissa, ties to the even
// exponent code). Values below 2^-127 (zero included) saturate to 2^-127, values above 2^127 to 2^127;
// negative values and NaN, which the type cannot hold, give NaN (0xFF).
func Float32ToE8M0(x float32) uint8 {
	if x != x || x < 0 {
		return 0xFF
	}
	u := math.Float32bits(x)
	exp := int(u >> 23)
	man := u & 0x7fffff
	if exp == 0 { // zero and float32 subnormals are all below 2^-126, so they round to 2^-127 or 2^-126
		if man > 0x400000 {
			return 1
		}
		return 0
	}
	if exp == 0xFF { // +Inf
		return 0xFE
	}
	if man > 0x400000 || man == 0x400000 && exp&1 == 1 {
		exp++
	}
	if exp > 0xFE {
		exp = 0xFE
	}
	return uint8(exp)
}

// unpack6 and pack6 address element i of a packed 6-bit array: 4 elements in 3 bytes, element i in bits
// [6i, 6i+6) of the little-endian bit stream, the order used by the OCP MX reference packing.
func unpack6(b []byte, i int) uint8 {
	bit := 6 * i
	w := uint16(b[bit/8])
	if bit/8+1 < len(b) {
		w |= uint16(b[bit/8+1]) << 8
	}
	return uint8(w>>(bit%8)) & 0x3F
}

func pack6(b []byte, i int, code uint8) {
	bit := 6 * i
	w := uint16(code&0x3F) << (bit % 8)
	b[bit/8] |= byte(w)
	if w>>8 != 0 {
		b[bit/8+1] |= byte(w >> 8)
	}
}
