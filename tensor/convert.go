package tensor

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/lathe-ml/lathe/internal/kernels"
)

// littleEndian enables the F32 fast path: on such machines the file bytes are already float32s in memory order, and
// copy works at any alignment (mmap'd tensors are not always 4-byte aligned).
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// ToFloat32 decodes len(dst) elements of type t from src. Float types convert exactly (every value of every
// narrower float type is a float32, and F64 rounds to nearest even); integers and bools convert by value.
func ToFloat32(dst []float32, src []byte, t DType) error {
	need, err := t.Bytes(int64(len(dst)))
	if err != nil {
		return err
	}
	if int64(len(src)) < need {
		return fmt.Errorf("%d elements of %s need %d bytes, have %d", len(dst), t, need, len(src))
	}
	switch t {
	case F32:
		if littleEndian && len(dst) > 0 {
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*len(dst)), src)
			return nil
		}
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case F16:
		F16ToFloat32(dst, src)
	case BF16:
		BF16ToFloat32(dst, src)
	case F64:
		for i := range dst {
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(src[8*i:])))
		}
	case F8_E4M3:
		for i := range dst {
			dst[i] = e4m3.toFloat32(src[i])
		}
	case F8_E5M2:
		for i := range dst {
			dst[i] = e5m2.toFloat32(src[i])
		}
	case F8_E8M0:
		for i := range dst {
			dst[i] = E8M0ToFloat32(src[i])
		}
	case F4:
		for i := range dst {
			dst[i] = e2m1.toFloat32(src[i/2] >> (4 * (i % 2)) & 0xF)
		}
	case F6_E2M3, F6_E3M2:
		f := e2m3
		if t == F6_E3M2 {
			f = e3m2
		}
		for i := range dst {
			dst[i] = f.toFloat32(unpack6(src, i))
		}
	case BOOL, U8:
		for i := range dst {
			dst[i] = float32(src[i])
		}
	case I8:
		for i := range dst {
			dst[i] = float32(int8(src[i]))
		}
	case U16:
		for i := range dst {
			dst[i] = float32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case I16:
		for i := range dst {
			dst[i] = float32(int16(binary.LittleEndian.Uint16(src[2*i:])))
		}
	case U32:
		for i := range dst {
			dst[i] = float32(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case I32:
		for i := range dst {
			dst[i] = float32(int32(binary.LittleEndian.Uint32(src[4*i:])))
		}
	case U64:
		for i := range dst {
			dst[i] = float32(binary.LittleEndian.Uint64(src[8*i:]))
		}
	case I64:
		for i := range dst {
			dst[i] = float32(int64(binary.LittleEndian.Uint64(src[8*i:])))
		}
	default:
		return fmt.Errorf("cannot convert %s to float32 element by element", t)
	}
	return nil
}

// FromFloat32 encodes src as type t into dst, rounding to nearest even like the reference of each type
// (F16: IEEE 754; BF16: ggml_compute_fp32_to_bf16; FP8/FP6/FP4: OCP with saturation to the largest finite value).
func FromFloat32(dst []byte, src []float32, t DType) error {
	need, err := t.Bytes(int64(len(src)))
	if err != nil {
		return err
	}
	if int64(len(dst)) < need {
		return fmt.Errorf("%d elements of %s need %d bytes, have %d", len(src), t, need, len(dst))
	}
	if t == F4 || t == F6_E2M3 || t == F6_E3M2 {
		for i, v := range src {
			if v != v {
				return fmt.Errorf("element %d is NaN, which %s cannot represent", i, t)
			}
		}
	}
	switch t {
	case F32:
		if littleEndian && len(src) > 0 {
			copy(dst, unsafe.Slice((*byte)(unsafe.Pointer(&src[0])), 4*len(src)))
			return nil
		}
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case F16:
		Float32ToF16(dst, src)
	case BF16:
		Float32ToBF16(dst, src)
	case F64:
		for i, v := range src {
			binary.LittleEndian.PutUint64(dst[8*i:], math.Float64bits(float64(v)))
		}
	case F8_E4M3:
		for i, v := range src {
			dst[i] = e4m3.fromFloat32(v)
		}
	case F8_E5M2:
		for i, v := range src {
			dst[i] = e5m2.fromFloat32(v)
		}
	case F8_E8M0:
		for i, v := range src {
			dst[i] = Float32ToE8M0(v)
		}
	case F4:
		for i := 0; i < len(src); i += 2 {
			dst[i/2] = e2m1.fromFloat32(src[i]) | e2m1.fromFloat32(src[i+1])<<4
		}
	case F6_E2M3, F6_E3M2:
		f := e2m3
		if t == F6_E3M2 {
			f = e3m2
		}
		clear(dst[:need])
		for i, v := range src {
			pack6(dst, i, f.fromFloat32(v))
		}
	default:
		return fmt.Errorf("cannot convert float32 to %s element by element", t)
	}
	return nil
}

// F16ToFloat32 decodes len(dst) little-endian F16 values.
func F16ToFloat32(dst []float32, src []byte) { kernels.F16ToF32Row(dst, src) }

// Float32ToF16 encodes src as little-endian F16 with IEEE round-to-nearest-even (x448/float16).
func Float32ToF16(dst []byte, src []float32) { kernels.F32ToF16Row(dst, src) }

// BF16ToFloat32 decodes len(dst) little-endian BF16 values; BF16 is the top half of a float32.
func BF16ToFloat32(dst []float32, src []byte) { kernels.BF16ToF32Row(dst, src) }

// Float32ToBF16 encodes src as little-endian BF16 exactly as ggml_compute_fp32_to_bf16 does.
func Float32ToBF16(dst []byte, src []float32) {
	dst = dst[:2*len(src)]
	for i, v := range src {
		h := BF16FromFloat32(v)
		dst[2*i] = byte(h)
		dst[2*i+1] = byte(h >> 8)
	}
}

// BF16FromFloat32 rounds to nearest even; a NaN keeps its sign and top payload bits and is forced quiet, as in
// ggml_compute_fp32_to_bf16 (so a signalling NaN whose payload lives in the low bits cannot become an infinity).
func BF16FromFloat32(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 64
	}
	return uint16((u + 0x7fff + (u>>16)&1) >> 16)
}

// Float32s returns F32 tensor bytes as a []float32 without copying when the machine is little-endian and the bytes
// are 4-byte aligned (safetensors and GGUF data usually is), and ok = false otherwise. The slice aliases b, so it is
// read-only when b is a read-only mapping.
func Float32s(b []byte) (f []float32, ok bool) {
	if !littleEndian || len(b)%4 != 0 || len(b) > 0 && uintptr(unsafe.Pointer(&b[0]))%4 != 0 {
		return nil, false
	}
	if len(b) == 0 {
		return []float32{}, true
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4), true
}
