//go:build !noasm

package quant

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/tensor"
)

// hostileRows builds rows whose blocks exercise the corners the AVX2 kernels must treat exactly as the Go code:
// NaN and infinities, signed zeros, subnormals, magnitudes near the float32 limits, exact rounding ties, and a
// largest magnitude shared by opposite signs (the first one is ggml's max). One NaN payload only: with two
// different NaNs in one product, which one propagates depends on operand order even in C.
func hostileRows(rows, cols int) []float32 {
	r := rand.New(rand.NewPCG(7, 11))
	x := make([]float32, rows*cols)
	nan := math.Float32frombits(0x7fc00000)
	for i := range x {
		row, col := i/cols, i%cols
		switch row % 10 {
		case 0: // plain data at a random scale
			x[i] = float32(r.NormFloat64() * math.Pow(10, float64(row%40-20)))
		case 1: // halves and quarters: ties for every rounding
			x[i] = float32(r.IntN(65)-32) / 4
		case 2: // sprinkled specials
			switch r.IntN(12) {
			case 0:
				x[i] = nan
			case 1:
				x[i] = float32(math.Inf(1 - 2*r.IntN(2)))
			case 2:
				x[i] = float32(math.Copysign(0, float64(1-2*r.IntN(2))))
			case 3:
				x[i] = math.Float32frombits(uint32(r.IntN(1 << 23))) // subnormal
			case 4:
				x[i] = math.MaxFloat32 * float32(1-2*r.IntN(2))
			default:
				x[i] = float32(r.NormFloat64())
			}
		case 3: // equal magnitudes of both signs
			x[i] = float32(2*r.IntN(2)-1) * 3
		case 4: // blocks of zeros, negative zeros and tiny values
			x[i] = float32(math.Copysign(float64(col%3)*1e-44, float64(1-2*(col/7%2))))
		case 5: // constant
			x[i] = -0.3
		case 6: // IQ4 codebook midpoints under a block maximum of 127, where best_index_int8 breaks ties
			if col%32 == 0 {
				x[i] = 127
			} else {
				k := 1 + r.IntN(15)
				mid := (float32(kvaluesIQ4NL[k-1]) + float32(kvaluesIQ4NL[k])) / 2
				x[i] = mid * float32(1-2*r.IntN(2))
			}
		case 7: // NaN-only and infinity-only stretches
			if col/64%2 == 0 {
				x[i] = nan
			} else {
				x[i] = float32(math.Inf(1))
			}
		case 8: // one-signed blocks holding zeros of both signs, so the min or max is a zero whose sign is order's
			v := float32(math.Abs(r.NormFloat64()))
			if r.IntN(4) == 0 {
				v = float32(math.Copysign(0, float64(1-2*r.IntN(2))))
			}
			if col/32%2 == 1 {
				v = -v
			}
			x[i] = v
		default: // heavy tails
			x[i] = float32(r.NormFloat64() / (r.Float64() + 1e-3))
		}
	}
	return x
}

// TestAsmAgreesWithGo encodes hostile rows with the AVX2 kernels and again with the pure-Go code, for every
// type that has a kernel, with and without an importance matrix, and requires identical bytes.
func TestAsmAgreesWithGo(t *testing.T) {
	if !hasAVX2 || !hasAVX2F16C {
		t.Skip("the CPU lacks AVX2 or F16C: only the Go code runs here")
	}
	const rows, cols = 64, 512
	x := hostileRows(rows, cols)
	r := rand.New(rand.NewPCG(3, 5))
	importance := make([]float32, cols)
	for i := range importance {
		importance[i] = float32(r.ExpFloat64())
	}
	types := []tensor.DType{tensor.Q4_0, tensor.Q4_1, tensor.Q5_0, tensor.Q5_1, tensor.Q8_0, tensor.Q2_K,
		tensor.Q3_K, tensor.Q4_K, tensor.Q5_K, tensor.Q6_K, tensor.IQ4_NL, tensor.IQ4_XS, tensor.MXFP4, tensor.NVFP4}
	for _, typ := range types {
		for _, imp := range [][]float32{nil, importance} {
			n, _ := typ.Bytes(int64(len(x)))
			fast, slow := make([]byte, n), make([]byte, n)
			if err := Encode(typ, fast, x, cols, imp); err != nil {
				t.Fatal(err)
			}
			withoutAsm(func() {
				if err := Encode(typ, slow, x, cols, imp); err != nil {
					t.Fatal(err)
				}
			})
			if !bytes.Equal(fast, slow) {
				bb := typ.BlockBytes()
				for b := 0; b < len(fast)/bb; b++ {
					if !bytes.Equal(fast[b*bb:(b+1)*bb], slow[b*bb:(b+1)*bb]) {
						t.Errorf("%s (importance %v): block %d differs:\nasm %x\n go %x", typ, imp != nil, b,
							fast[b*bb:(b+1)*bb], slow[b*bb:(b+1)*bb])
						break
					}
				}
			}
		}
	}
}

func withoutAsm(f func()) {
	a, b, w := hasAVX2, hasAVX2F16C, sweepWidth
	hasAVX2, hasAVX2F16C, sweepWidth = false, false, 1
	defer func() { hasAVX2, hasAVX2F16C, sweepWidth = a, b, w }()
	f()
}
