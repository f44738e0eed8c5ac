// Package tensor is lathe's shared vocabulary: element and block data types, shapes with checked sizes,
// read-only views over tensor bytes, and exact conversions between every float type and float32.
package tensor

import (
	"fmt"
	"strings"
)

// DType is the storage type of a tensor: a plain element type of safetensors, or a ggml block type.
// Every type is described as blocks of BlockSize elements taking BlockBytes bytes, so one rule sizes all of them:
// sub-byte safetensors types are blocks too (F4 packs 2 elements in 1 byte, F6 packs 4 in 3), which is how the
// safetensors rule "sub-byte tensors must fill whole bytes" becomes "element count divisible by BlockSize".
type DType uint8

// Element types, named as safetensors names them.
const (
	Invalid DType = iota
	BOOL
	U8
	I8
	U16
	I16
	F16
	BF16
	U32
	I32
	F32
	U64
	I64
	F64
	C64
	F8_E4M3
	F8_E5M2
	F8_E8M0
	F4
	F6_E2M3
	F6_E3M2
	// Block types of ggml (ggml-common.h); F32, F16, BF16, I8, I16, I32, I64 and F64 above double as ggml types.
	Q4_0
	Q4_1
	Q5_0
	Q5_1
	Q8_0
	Q8_1
	Q2_K
	Q3_K
	Q4_K
	Q5_K
	Q6_K
	Q8_K
	IQ2_XXS
	IQ2_XS
	IQ3_XXS
	IQ1_S
	IQ4_NL
	IQ3_S
	IQ2_S
	IQ4_XS
	IQ1_M
	TQ1_0
	TQ2_0
	MXFP4
	NVFP4
	Q1_0
	Q2_0
	numDTypes
)

// Kind groups types by how their bytes are interpreted.
type Kind uint8

const (
	KindBool Kind = iota
	KindUint
	KindInt
	KindFloat
	KindComplex
	KindQuantized // ggml blocks: scales and codes, decodable only through the quant package
)

type traits struct {
	name       string
	blockSize  int // elements per block
	blockBytes int // bytes per block
	kind       Kind
}

// The table is the single source of sizes. Quantized block sizes are from the structs and static_asserts of
// ggml-common.h (../shared/reference/formats-quant.md §2.1).
var table = [numDTypes]traits{
	Invalid: {"INVALID", 0, 0, KindBool},
	BOOL:    {"BOOL", 1, 1, KindBool},
	U8:      {"U8", 1, 1, KindUint},
	I8:      {"I8", 1, 1, KindInt},
	U16:     {"U16", 1, 2, KindUint},
	I16:     {"I16", 1, 2, KindInt},
	F16:     {"F16", 1, 2, KindFloat},
	BF16:    {"BF16", 1, 2, KindFloat},
	U32:     {"U32", 1, 4, KindUint},
	I32:     {"I32", 1, 4, KindInt},
	F32:     {"F32", 1, 4, KindFloat},
	U64:     {"U64", 1, 8, KindUint},
	I64:     {"I64", 1, 8, KindInt},
	F64:     {"F64", 1, 8, KindFloat},
	C64:     {"C64", 1, 8, KindComplex},
	F8_E4M3: {"F8_E4M3", 1, 1, KindFloat},
	F8_E5M2: {"F8_E5M2", 1, 1, KindFloat},
	F8_E8M0: {"F8_E8M0", 1, 1, KindFloat},
	F4:      {"F4", 2, 1, KindFloat},
	F6_E2M3: {"F6_E2M3", 4, 3, KindFloat},
	F6_E3M2: {"F6_E3M2", 4, 3, KindFloat},
	Q4_0:    {"Q4_0", 32, 18, KindQuantized},
	Q4_1:    {"Q4_1", 32, 20, KindQuantized},
	Q5_0:    {"Q5_0", 32, 22, KindQuantized},
	Q5_1:    {"Q5_1", 32, 24, KindQuantized},
	Q8_0:    {"Q8_0", 32, 34, KindQuantized},
	Q8_1:    {"Q8_1", 32, 36, KindQuantized},
	Q2_K:    {"Q2_K", 256, 84, KindQuantized},
	Q3_K:    {"Q3_K", 256, 110, KindQuantized},
	Q4_K:    {"Q4_K", 256, 144, KindQuantized},
	Q5_K:    {"Q5_K", 256, 176, KindQuantized},
	Q6_K:    {"Q6_K", 256, 210, KindQuantized},
	Q8_K:    {"Q8_K", 256, 292, KindQuantized},
	IQ2_XXS: {"IQ2_XXS", 256, 66, KindQuantized},
	IQ2_XS:  {"IQ2_XS", 256, 74, KindQuantized},
	IQ3_XXS: {"IQ3_XXS", 256, 98, KindQuantized},
	IQ1_S:   {"IQ1_S", 256, 50, KindQuantized},
	IQ4_NL:  {"IQ4_NL", 32, 18, KindQuantized},
	IQ3_S:   {"IQ3_S", 256, 110, KindQuantized},
	IQ2_S:   {"IQ2_S", 256, 82, KindQuantized},
	IQ4_XS:  {"IQ4_XS", 256, 136, KindQuantized},
	IQ1_M:   {"IQ1_M", 256, 56, KindQuantized},
	TQ1_0:   {"TQ1_0", 256, 54, KindQuantized},
	TQ2_0:   {"TQ2_0", 256, 66, KindQuantized},
	MXFP4:   {"MXFP4", 32, 17, KindQuantized},
	NVFP4:   {"NVFP4", 64, 36, KindQuantized},
	Q1_0:    {"Q1_0", 128, 18, KindQuantized},
	Q2_0:    {"Q2_0", 64, 18, KindQuantized},
}

// DTypes lists every valid type in declaration order.
func DTypes() []DType {
	out := make([]DType, 0, numDTypes-1)
	for t := DType(1); t < numDTypes; t++ {
		out = append(out, t)
	}
	return out
}

// Valid reports whether t is a known type.
func (t DType) Valid() bool { return t > Invalid && t < numDTypes }

func (t DType) String() string {
	if t < numDTypes {
		return table[t].name
	}
	return fmt.Sprintf("DType(%d)", uint8(t))
}

// BlockSize is the number of elements stored together; 1 for plain element types.
func (t DType) BlockSize() int { return table[t%numDTypes].blockSize }

// BlockBytes is the number of bytes one block takes.
func (t DType) BlockBytes() int { return table[t%numDTypes].blockBytes }

// Bits is the storage cost per element in bits (fractional for block types: Q4_K is 4.5).
func (t DType) Bits() float64 {
	if !t.Valid() {
		return 0
	}
	return float64(8*t.BlockBytes()) / float64(t.BlockSize())
}

// Kind tells how the bytes of t are interpreted.
func (t DType) Kind() Kind { return table[t%numDTypes].kind }

// IsFloat reports whether t is a plain floating-point element type (convertible with ToFloat32/FromFloat32).
func (t DType) IsFloat() bool { return t.Valid() && t.Kind() == KindFloat }

// IsQuantized reports whether t is a ggml block type.
func (t DType) IsQuantized() bool { return t.Valid() && t.Kind() == KindQuantized }

// ParseDType accepts a type name in any case ("f16", "Q4_K", "bf16").
func ParseDType(name string) (DType, error) {
	upper := strings.ToUpper(name)
	for t := DType(1); t < numDTypes; t++ {
		if table[t].name == upper {
			return t, nil
		}
	}
	return Invalid, fmt.Errorf("unknown data type %q", name)
}

// Bytes returns the storage size of n elements of type t. n must be a whole number of blocks.
func (t DType) Bytes(n int64) (int64, error) {
	if !t.Valid() {
		return 0, fmt.Errorf("invalid data type %d", uint8(t))
	}
	if n < 0 {
		return 0, fmt.Errorf("negative element count %d", n)
	}
	bs := int64(t.BlockSize())
	if n%bs != 0 {
		return 0, fmt.Errorf("%d elements of %s do not fill whole blocks of %d", n, t, bs)
	}
	blocks := n / bs
	bb := int64(t.BlockBytes())
	if blocks > maxInt64/bb {
		return 0, fmt.Errorf("%d elements of %s overflow a 64-bit byte count", n, t)
	}
	return blocks * bb, nil
}

const maxInt64 = 1<<63 - 1
