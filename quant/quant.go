// Package quant encodes float32 rows into ggml block types and decodes them back, bit for bit as ggml's
// ggml_quantize_chunk and type_traits.to_float do (../shared/reference/formats-quant.md §2).
package quant

import (
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/internal/parallel"

	"github.com/lathe-ml/lathe/tensor"
)

// Shared by every codec file (coordinate here before adding another shared helper, to avoid duplicates):
//   nearestInt, truncInt32, fp32ToFP16, fp16ToFloat32, getF16, putF16, abs32 (this file);
//   groupMaxEps, qkK, sqrt32, sumSquares, maxC, imatrixWeights, makeQPQuants (iq2.go);
//   makeQXQuants, makeQ3Quants, makeQKXQuants, clampInt (search.go: the other ggml-quants.c scale searches);
//   inverse, packNibbles (legacy.go); kvaluesIQ4NL, bestIndexInt8 (iq4.go);
//   hasAVX2, the AVX2 kernels' switch (sweep_amd64.go; the tests turn it off to compare with the Go code).
// Arithmetic is float32 as in ggml's float code; products are wrapped in float32(...) wherever a sum follows, so
// that no Go compiler may fuse them into an FMA that ggml's reference build (x86-64, no -mfma) does not use.
// `GOAMD64=v3 go test ./quant` lets the amd64 compiler fuse, so it finds a missing wrap on any x86-64 machine.

// codec is one block type's pair of reference algorithms. encodeRow quantizes one row (a whole number of blocks);
// importance is nil or has one weight per element of the row, as ggml's imatrix does. decode expands whole blocks.
type codec struct {
	encodeRow       func(dst []byte, src, importance []float32)
	decode          func(dst []float32, src []byte)
	requiresImatrix bool // ggml_quantize_requires_imatrix: the encoder has no usable path without weights
}

var codecs = map[tensor.DType]codec{}

// register is called from each type's file so that the registry lists exactly the types implemented.
func register(t tensor.DType, c codec) {
	if _, dup := codecs[t]; dup {
		panic("quant: " + t.String() + " registered twice")
	}
	codecs[t] = c
}

// CanEncode reports whether Encode supports t.
func CanEncode(t tensor.DType) bool { return codecs[t].encodeRow != nil }

// CanDecode reports whether Decode supports t.
func CanDecode(t tensor.DType) bool { return codecs[t].decode != nil }

// RequiresImatrix reports whether encoding t needs an importance matrix, as ggml_quantize_requires_imatrix says.
func RequiresImatrix(t tensor.DType) bool { return codecs[t].requiresImatrix }

// Encode quantizes src, rows of nPerRow elements, into dst as type t, rows in parallel. importance is nil or has
// nPerRow weights shared by all rows. dst must hold exactly the encoded size. The output is the same whatever the
// parallelism, since rows are independent.
func Encode(t tensor.DType, dst []byte, src []float32, nPerRow int, importance []float32) error {
	c := codecs[t]
	if c.encodeRow == nil {
		return fmt.Errorf("quant: encoding %s is not supported", t)
	}
	if nPerRow <= 0 || len(src)%nPerRow != 0 {
		return fmt.Errorf("quant: %d values are not whole rows of %d", len(src), nPerRow)
	}
	if nPerRow%t.BlockSize() != 0 {
		return fmt.Errorf("quant: row length %d is not a multiple of the %s block size %d", nPerRow, t, t.BlockSize())
	}
	if importance != nil && len(importance) != nPerRow {
		return fmt.Errorf("quant: importance has %d weights, rows have %d elements", len(importance), nPerRow)
	}
	if importance == nil && c.requiresImatrix {
		return fmt.Errorf("quant: %s needs an importance matrix", t)
	}
	rowBytes := nPerRow / t.BlockSize() * t.BlockBytes()
	rows := len(src) / nPerRow
	if len(dst) != rows*rowBytes {
		return fmt.Errorf("quant: %d rows of %s need %d bytes, dst has %d", rows, t, rows*rowBytes, len(dst))
	}
	parallel.For(rows, 0, func(r int) {
		c.encodeRow(dst[r*rowBytes:(r+1)*rowBytes], src[r*nPerRow:(r+1)*nPerRow], importance)
	})
	return nil
}

// Decode expands len(dst) elements of type t from src.
func Decode(t tensor.DType, dst []float32, src []byte) error {
	c := codecs[t]
	if c.decode == nil {
		return fmt.Errorf("quant: decoding %s is not supported", t)
	}
	n, err := t.Bytes(int64(len(dst)))
	if err != nil {
		return fmt.Errorf("quant: %w", err)
	}
	if int64(len(src)) != n {
		return fmt.Errorf("quant: %d elements of %s need %d bytes, src has %d", len(dst), t, n, len(src))
	}
	bs, bb := t.BlockSize(), t.BlockBytes()
	blocks := len(dst) / bs
	const chunk = 256 // blocks per task: large enough to amortise scheduling, small enough to balance
	parallel.For((blocks+chunk-1)/chunk, 0, func(i int) {
		lo, hi := i*chunk, min((i+1)*chunk, blocks)
		c.decode(dst[lo*bs:hi*bs], src[lo*bb:hi*bb])
	})
	return nil
}

// nearestInt is ggml's nearest_int: adding 1.5·2^23 leaves the rounded value (to nearest, ties to even) in the low
// mantissa bits. ggml only asserts |f| <= 4194303 in debug builds, so larger inputs wrap exactly as here.
// The explicit float32(f) keeps a product passed as f from fusing with the addition once this is inlined.
func nearestInt(f float32) int {
	return int(math.Float32bits(float32(f)+12582912)&0x7fffff) - 0x400000
}

// truncInt32 is a C cast of a float to an integer type as x86-64 compiles it (cvttss2si): truncation toward zero,
// and 0x80000000 for NaN and out-of-range values, where C leaves the result undefined. Casts to int8_t and
// uint8_t take the low byte of this.
func truncInt32(f float32) int32 {
	if f >= -0x1p31 && f < 0x1p31 {
		return int32(f)
	}
	return math.MinInt32
}

// fp32ToFP16 is ggml_compute_fp32_to_fp16: round to nearest even, overflow to infinity, and every NaN to the
// canonical quiet NaN 0x7E00 with the sign kept.
func fp32ToFP16(f float32) uint16 {
	w := math.Float32bits(f)
	shl1 := w + w
	sign := w & 0x80000000
	if shl1 > 0xFF000000 {
		return uint16(sign>>16) | 0x7E00
	}
	// Scaling by 2^112 then 2^-110 pushes overflowing values to infinity and lets the addition below round the
	// mantissa to 10 bits at the right exponent (normal or subnormal alike).
	base := float32(float32(abs32(f)*0x1p112) * 0x1p-110)
	bias := shl1 & 0xFF000000
	if bias < 0x71000000 {
		bias = 0x71000000
	}
	base = math.Float32frombits(bias>>1+0x07800000) + base
	bits := math.Float32bits(base)
	return uint16(sign>>16) | uint16(bits>>13&0x7C00+bits&0x0FFF)
}

// fp16ToFloat32 is ggml_compute_fp16_to_fp32. It is exact; a NaN keeps its payload, made quiet by the multiplication
// as on the hardware ggml runs on.
func fp16ToFloat32(h uint16) float32 {
	w := uint32(h) << 16
	sign := w & 0x80000000
	two := w + w
	if two < 1<<27 {
		return math.Float32frombits(sign | math.Float32bits(math.Float32frombits(two>>17|126<<23)-0.5))
	}
	return math.Float32frombits(sign | math.Float32bits(math.Float32frombits(two>>4+0xE0<<23)*0x1p-112))
}

func getF16(b []byte) float32 { return fp16ToFloat32(uint16(b[0]) | uint16(b[1])<<8) }

func putF16(b []byte, f float32) {
	h := fp32ToFP16(f)
	b[0], b[1] = byte(h), byte(h>>8)
}

func abs32(f float32) float32 { return math.Float32frombits(math.Float32bits(f) &^ (1 << 31)) }
