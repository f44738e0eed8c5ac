package tensor

import (
	"bytes"
	"math"
	"testing"
)

// The assembly path (when the CPU has F16C) and the pure-Go path (x448/float16) must agree on every input class:
// a sweep across all float32 bit patterns, and all F16 patterns for the widening direction.
func TestF16AsmAgreesWithPureGo(t *testing.T) {
	if !hasF16C {
		t.Skip("no F16C on this CPU or built with noasm: only the pure-Go path exists")
	}
	const stride = 4099 // prime, so the sweep hits every exponent with varied mantissas and NaN payloads
	src := make([]float32, 0, 1<<20)
	for u := uint64(0); u < 1<<32; u += stride {
		src = append(src, math.Float32frombits(uint32(u)))
	}
	src = src[:len(src)&^31]
	asm := make([]byte, 2*len(src))
	pure := make([]byte, 2*len(src))
	if float32ToF16Asm(asm, src) != len(src) {
		t.Fatal("assembly path did not run")
	}
	float32ToF16Go(pure, src)
	if !bytes.Equal(asm, pure) {
		for i := range src {
			if asm[2*i] != pure[2*i] || asm[2*i+1] != pure[2*i+1] {
				t.Fatalf("%#08x: asm %#02x%02x, pure Go %#02x%02x", math.Float32bits(src[i]), asm[2*i+1], asm[2*i], pure[2*i+1], pure[2*i])
			}
		}
	}
	halves := make([]byte, 2<<16)
	for i := range 1 << 16 {
		halves[2*i], halves[2*i+1] = byte(i), byte(i>>8)
	}
	wideAsm := make([]float32, 1<<16)
	widePure := make([]float32, 1<<16)
	f16ToFloat32Asm(wideAsm, halves)
	f16ToFloat32Go(widePure, halves)
	for i := range wideAsm {
		if math.Float32bits(wideAsm[i]) != math.Float32bits(widePure[i]) {
			t.Fatalf("F16 %#04x: asm %#08x, pure Go %#08x", i, math.Float32bits(wideAsm[i]), math.Float32bits(widePure[i]))
		}
	}
}
