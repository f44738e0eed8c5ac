package tensor

import (
	"encoding/binary"
	"math"
	"testing"
	"unsafe"
)

func f16Bits(f float32) uint16 {
	var b [2]byte
	Float32ToF16(b[:], []float32{f})
	return binary.LittleEndian.Uint16(b[:])
}

func f16Value(h uint16) float32 {
	var out [1]float32
	F16ToFloat32(out[:], []byte{byte(h), byte(h >> 8)})
	return out[0]
}

func bf16Value(h uint16) float32 {
	var out [1]float32
	BF16ToFloat32(out[:], []byte{byte(h), byte(h >> 8)})
	return out[0]
}

func isNaN32(f float32) bool { return f != f }

// Every F16 bit pattern survives F16 → F32 → F16; NaNs stay NaN with their sign.
func TestF16RoundTripExhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := f16Value(h)
		back := f16Bits(f)
		if isNaN32(f) {
			if back&0x7c00 != 0x7c00 || back&0x3ff == 0 || back>>15 != h>>15 {
				t.Fatalf("NaN %#04x came back as %#04x", h, back)
			}
			continue
		}
		if back != h {
			t.Fatalf("%#04x → %v → %#04x", h, f, back)
		}
	}
}

// Every BF16 bit pattern survives; NaNs come back quiet (bit 6 set) exactly as ggml_compute_fp32_to_bf16 makes them.
func TestBF16RoundTripExhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := bf16Value(h)
		back := BF16FromFloat32(f)
		want := h
		if isNaN32(f) {
			want = h | 64
		}
		if back != want {
			t.Fatalf("%#04x → %v → %#04x, want %#04x", h, f, back, want)
		}
	}
}

// decoded describes a float format by its decoder, so one rounding test covers all of them.
type decoded struct {
	name   string
	codes  int // number of non-negative codes (sign bit excluded)
	value  func(code int) float32
	encode func(float32) int
	// overflow is what a magnitude beyond the largest finite value encodes to.
	overflow int
}

func formats() []decoded {
	mini := func(name string, f *minifloat) decoded {
		return decoded{name, 1 << (f.expBits + f.manBits), func(c int) float32 { return f.toFloat32(uint8(c)) },
			func(v float32) int { return int(f.fromFloat32(v)) }, int(f.maxCode)}
	}
	return []decoded{
		{"F16", 1 << 15, func(c int) float32 { return f16Value(uint16(c)) }, func(v float32) int { return int(f16Bits(v)) }, 0x7c00},
		{"BF16", 1 << 15, func(c int) float32 { return bf16Value(uint16(c)) }, func(v float32) int { return int(BF16FromFloat32(v)) }, 0x7f80},
		mini("F8_E4M3", e4m3), mini("F8_E5M2", e5m2), mini("F4", e2m1), mini("F6_E2M3", e2m3), mini("F6_E3M2", e3m2),
	}
}

// For every pair of neighbouring finite values of every format: the exact midpoint rounds to the even code, and
// the float32 just below or above it rounds down or up. This is the definition of round-to-nearest-even,
// subnormals included, checked independently of how each encoder works.
func TestRoundToNearestEven(t *testing.T) {
	for _, f := range formats() {
		t.Run(f.name, func(t *testing.T) {
			checked := 0
			for c := 0; c+1 < f.codes; c++ {
				lo, hi := f.value(c), f.value(c+1)
				if isNaN32(hi) || math.IsInf(float64(hi), 0) {
					break
				}
				mid64 := (float64(lo) + float64(hi)) / 2
				mid := float32(mid64)
				if float64(mid) != mid64 {
					t.Fatalf("midpoint of %v and %v is not a float32", lo, hi)
				}
				even := c
				if c%2 == 1 {
					even = c + 1
				}
				for _, sign := range []float32{1, -1} {
					signBit := 0
					if sign < 0 {
						signBit = f.codes
					}
					cases := []struct {
						in   float32
						want int
					}{
						{sign * mid, even | signBit},
						{sign * math.Nextafter32(mid, 0), c | signBit},
						{sign * math.Nextafter32(mid, float32(math.Inf(1))), (c + 1) | signBit},
						{sign * lo, c | signBit},
					}
					for _, tc := range cases {
						if got := f.encode(tc.in); got != tc.want {
							t.Fatalf("encode(%g) = %#x, want %#x", tc.in, got, tc.want)
						}
					}
				}
				checked++
			}
			if checked < 6 {
				t.Fatalf("only %d neighbour pairs checked", checked)
			}
		})
	}
}

func TestOverflowAndSpecials(t *testing.T) {
	inf := float32(math.Inf(1))
	nan := float32(math.NaN())
	cases := []struct {
		name string
		got  int
		want int
	}{
		// F16: 65520 is the midpoint between 65504 and 2^16, and ties away from the odd largest code to Inf.
		{"F16 65520", int(f16Bits(65520)), 0x7c00},
		{"F16 below 65520", int(f16Bits(math.Nextafter32(65520, 0))), 0x7bff},
		{"F16 -Inf", int(f16Bits(-inf)), 0xfc00},
		{"F16 smallest subnormal", int(f16Bits(float32(math.Ldexp(1, -24)))), 0x0001},
		{"F16 half the smallest subnormal", int(f16Bits(float32(math.Ldexp(1, -25)))), 0x0000},
		{"F16 -0", int(f16Bits(float32(math.Copysign(0, -1)))), 0x8000},
		{"BF16 max rounds to Inf", int(BF16FromFloat32(math.MaxFloat32)), 0x7f80},
		{"BF16 NaN quiet", int(BF16FromFloat32(math.Float32frombits(0x7f800001))), 0x7fc0},
		{"BF16 negative signalling NaN", int(BF16FromFloat32(math.Float32frombits(0xff810000))), 0xffc1},
		// OCP saturating conversion: out of range, infinities included, clamps to the largest finite value.
		{"E4M3 464", int(e4m3.fromFloat32(464)), 0x7e},
		{"E4M3 1e9", int(e4m3.fromFloat32(1e9)), 0x7e},
		{"E4M3 +Inf", int(e4m3.fromFloat32(inf)), 0x7e},
		{"E4M3 -Inf", int(e4m3.fromFloat32(-inf)), 0xfe},
		{"E4M3 NaN", int(e4m3.fromFloat32(nan)), 0x7f},
		{"E4M3 2^-10 ties to zero", int(e4m3.fromFloat32(float32(math.Ldexp(1, -10)))), 0x00},
		{"E5M2 +Inf", int(e5m2.fromFloat32(inf)), 0x7b},
		{"E5M2 1e9", int(e5m2.fromFloat32(-1e9)), 0xfb},
		{"F4 7", int(e2m1.fromFloat32(7)), 0x7},
		{"F6_E3M2 -100", int(e3m2.fromFloat32(-100)), 0x3f},
		{"E8M0 1", int(Float32ToE8M0(1)), 127},
		{"E8M0 1.5 ties to even exponent code", int(Float32ToE8M0(1.5)), 128},
		{"E8M0 3 ties to even exponent code", int(Float32ToE8M0(3)), 128},
		{"E8M0 0", int(Float32ToE8M0(0)), 0},
		{"E8M0 negative", int(Float32ToE8M0(-2)), 0xff},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s: got %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
	// Reference values of the OCP FP8 spec table.
	values := []struct {
		name string
		got  float32
		want float64
	}{
		{"E4M3 max", e4m3.toFloat32(0x7e), 448},
		{"E4M3 min normal", e4m3.toFloat32(0x08), math.Ldexp(1, -6)},
		{"E4M3 min subnormal", e4m3.toFloat32(0x01), math.Ldexp(1, -9)},
		{"E5M2 max", e5m2.toFloat32(0x7b), 57344},
		{"E5M2 min subnormal", e5m2.toFloat32(0x01), math.Ldexp(1, -16)},
		{"E5M2 Inf", e5m2.toFloat32(0x7c), math.Inf(1)},
		{"F4 max", e2m1.toFloat32(0x7), 6},
		{"F4 0.5", e2m1.toFloat32(0x1), 0.5},
		{"F6_E2M3 max", e2m3.toFloat32(0x1f), 7.5},
		{"F6_E3M2 max", e3m2.toFloat32(0x1f), 28},
		{"E8M0 127", E8M0ToFloat32(127), 1},
		{"E8M0 0", E8M0ToFloat32(0), math.Ldexp(1, -127)},
	}
	for _, v := range values {
		if float64(v.got) != v.want {
			t.Errorf("%s = %g, want %g", v.name, v.got, v.want)
		}
	}
	if !isNaN32(e5m2.toFloat32(e5m2.fromFloat32(nan))) {
		t.Error("E5M2 lost a NaN")
	}
	if !isNaN32(e4m3.toFloat32(0xff)) || !isNaN32(E8M0ToFloat32(0xff)) || !isNaN32(e5m2.toFloat32(0x7d)) {
		t.Error("NaN codes must decode to NaN")
	}
}

// The slice entry points pack sub-byte types and agree with the per-element codecs for every dtype.
func TestSliceConversionsRoundTrip(t *testing.T) {
	src := []float32{0, 1, -2, 0.5, 3, -6, 4, 1.5}
	for _, dt := range []DType{F32, F16, BF16, F64, F8_E4M3, F8_E5M2, F4, F6_E2M3, F6_E3M2} {
		n, err := dt.Bytes(int64(len(src)))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, n)
		if err := FromFloat32(buf, src, dt); err != nil {
			t.Fatalf("%s: %v", dt, err)
		}
		back := make([]float32, len(src))
		if err := ToFloat32(back, buf, dt); err != nil {
			t.Fatalf("%s: %v", dt, err)
		}
		for i := range src {
			if back[i] != src[i] {
				t.Errorf("%s: element %d: %v came back as %v", dt, i, src[i], back[i])
			}
		}
	}
	if err := FromFloat32(make([]byte, 1), []float32{float32(math.NaN()), 0}, F4); err == nil {
		t.Error("F4 accepted NaN")
	}
	if err := FromFloat32(make([]byte, 2), []float32{1, 2, 3}, F6_E2M3); err == nil {
		t.Error("F6 accepted 3 elements")
	}
	// Packed F6 layout: element i in bits [6i, 6i+6) of the little-endian stream.
	buf := make([]byte, 3)
	if err := FromFloat32(buf, []float32{0.125, 0, 0, -7.5}, F6_E2M3); err != nil {
		t.Fatal(err)
	}
	if buf[0] != 0x01 || buf[1] != 0x00 || buf[2] != 0xFC {
		t.Errorf("F6_E2M3 packing = % x, want 01 00 fc", buf)
	}
}

func TestIntegerDecoding(t *testing.T) {
	cases := []struct {
		dt   DType
		data []byte
		want float32
	}{
		{I8, []byte{0xff}, -1},
		{U16, []byte{0x01, 0x02}, 513},
		{I16, []byte{0xfe, 0xff}, -2},
		{I32, []byte{0, 0, 0, 0x80}, -2147483648},
		{U64, []byte{0, 0, 0, 0, 0, 0, 0, 1}, 72057594037927936},
		{BOOL, []byte{1}, 1},
	}
	for _, tc := range cases {
		var out [1]float32
		if err := ToFloat32(out[:], tc.data, tc.dt); err != nil || out[0] != tc.want {
			t.Errorf("%s % x: got %v (%v), want %v", tc.dt, tc.data, out[0], err, tc.want)
		}
	}
}

func TestSizes(t *testing.T) {
	cases := []struct {
		dt    DType
		shape Shape
		want  int64
		ok    bool
	}{
		{F32, Shape{2, 3}, 24, true},
		{F4, Shape{3}, 0, false},
		{F4, Shape{4}, 2, true},
		{F6_E3M2, Shape{2, 2}, 3, true},
		{F6_E3M2, Shape{6}, 0, false},
		{Q4_K, Shape{4, 512}, 4 * 2 * 144, true},
		{Q4_0, Shape{33}, 0, false},
		{F32, Shape{}, 4, true},
		{F32, Shape{0, 5}, 0, true},
		{F32, Shape{1 << 40, 1 << 40}, 0, false},
		{F64, Shape{1 << 61}, 0, false},
		{F32, Shape{-1}, 0, false},
	}
	for _, tc := range cases {
		got, err := tc.shape.Bytes(tc.dt)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%s%v: got %d, %v; want %d ok=%v", tc.dt, tc.shape, got, err, tc.want, tc.ok)
		}
	}
	for _, dt := range DTypes() {
		back, err := ParseDType(dt.String())
		if err != nil || back != dt {
			t.Errorf("ParseDType(%s) = %v, %v", dt, back, err)
		}
	}
	if Q4_K.Bits() != 4.5 || F6_E2M3.Bits() != 6 || F4.Bits() != 4 {
		t.Errorf("bits: Q4_K %v F6 %v F4 %v", Q4_K.Bits(), F6_E2M3.Bits(), F4.Bits())
	}
}

func TestFloat32sAliasesAlignedBytes(t *testing.T) {
	// Backed by float32s, so the start is 4-byte aligned whatever the allocator does with byte slices.
	words := make([]float32, 4)
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), 16)
	if err := FromFloat32(buf[:12], []float32{1, -2, 0.5}, F32); err != nil {
		t.Fatal(err)
	}
	f, ok := Float32s(buf[:12])
	if !ok || len(f) != 3 || f[0] != 1 || f[1] != -2 || f[2] != 0.5 {
		t.Fatalf("aligned: %v %v", f, ok)
	}
	if _, ok := Float32s(buf[1:13]); ok {
		t.Error("misaligned bytes were reinterpreted")
	}
	if _, ok := Float32s(buf[:6]); ok {
		t.Error("a partial float was reinterpreted")
	}
}
