package quant

import (
	"math"
	"testing"

	"github.com/lathe-ml/lathe/tensor"
)

// TestFP16ConversionsMatchIEEE checks the ports of ggml_compute_fp32_to_fp16 and ggml_compute_fp16_to_fp32
// against the tensor package's IEEE conversions: identical except for NaN, where ggml writes the canonical
// quiet NaN 0x7E00 (sign kept) and reads any NaN back quiet.
func TestFP16ConversionsMatchIEEE(t *testing.T) {
	var want [1 << 16]float32
	var halves [2 << 16]byte
	for h := range 1 << 16 {
		halves[2*h], halves[2*h+1] = byte(h), byte(h>>8)
	}
	tensor.F16ToFloat32(want[:], halves[:])
	for h := range 1 << 16 {
		got, w := fp16ToFloat32(uint16(h)), want[h]
		if w != w {
			if math.Float32bits(got) != math.Float32bits(w)|1<<22 {
				t.Fatalf("half %#04x: got %#08x, want the quiet NaN %#08x", h, math.Float32bits(got),
					math.Float32bits(w)|1<<22)
			}
			continue
		}
		if math.Float32bits(got) != math.Float32bits(w) {
			t.Fatalf("half %#04x: got %g, want %g", h, got, w)
		}
	}

	// Every 997th float32 bit pattern, plus both sides of every rounding boundary of the half grid.
	var src []float32
	for u := uint64(0); u < 1<<32; u += 997 {
		src = append(src, math.Float32frombits(uint32(u)))
	}
	for h := range 1 << 15 {
		b := math.Float32bits(want[h])
		for _, d := range []uint32{0, 1, 1 << 12, 1<<12 - 1, 1<<12 + 1} {
			src = append(src, math.Float32frombits(b+d), -math.Float32frombits(b+d))
		}
	}
	ieee := make([]byte, 2*len(src))
	tensor.Float32ToF16(ieee, src)
	for i, v := range src {
		got := fp32ToFP16(v)
		w := uint16(ieee[2*i]) | uint16(ieee[2*i+1])<<8
		if v != v {
			w = uint16(math.Float32bits(v)>>16)&0x8000 | 0x7E00
		}
		if got != w {
			t.Fatalf("float %#08x: got %#04x, want %#04x", math.Float32bits(v), got, w)
		}
	}
}

// TestNearestIntRoundsHalfToEven checks the magic-number rounding against math.RoundToEven where ggml uses it.
func TestNearestIntRoundsHalfToEven(t *testing.T) {
	for _, f := range []float32{0, -0.5, 0.5, 1.5, 2.5, -2.5, 0.49999997, -1.5000001, 4194302.5, -4194303, 1e-40} {
		if got, want := nearestInt(f), int(math.RoundToEven(float64(f))); got != want {
			t.Errorf("nearestInt(%g) = %d, want %d", f, got, want)
		}
	}
	for u := uint32(0); u <= 0x4a7ffffc; u += 4099 { // every 4099th float in ggml's range, up to 4194303
		f := math.Float32frombits(u)
		for _, v := range []float32{f, -f} {
			if got, want := nearestInt(v), int(math.RoundToEven(float64(v))); got != want {
				t.Fatalf("nearestInt(%g) = %d, want %d", v, got, want)
			}
		}
	}
}
