package quant

import (
	"math"

	"github.com/lathe-ml/lathe/tensor"
)

// F16 and BF16 through ggml_quantize_chunk (ggml_fp32_to_fp16_row, ggml_fp32_to_bf16_row_ref) and their to_float
// rows. BF16 is the tensor package's conversion, which is ggml's. F16 differs from it only for NaN, which ggml
// fixes: every NaN encodes as the quiet NaN 0x7E00 (sign kept), and decoding quiets a signalling NaN.

func init() {
	register(tensor.F16, codec{encodeRow: encodeF16, decode: decodeF16})
	register(tensor.BF16, codec{
		encodeRow: func(dst []byte, src, _ []float32) { tensor.Float32ToBF16(dst, src) },
		decode:    tensor.BF16ToFloat32,
	})
}

func encodeF16(dst []byte, src, _ []float32) {
	tensor.Float32ToF16(dst, src) // round to nearest even, as ggml_compute_fp32_to_fp16 does for non-NaN values
	for i, v := range src {
		if v != v {
			h := fp32ToFP16(v)
			dst[2*i], dst[2*i+1] = byte(h), byte(h>>8)
		}
	}
}

func decodeF16(dst []float32, src []byte) {
	tensor.F16ToFloat32(dst, src)
	for i, v := range dst {
		if v != v { // quiet it, as the float multiply in ggml_compute_fp16_to_fp32 does
			dst[i] = math.Float32frombits(math.Float32bits(v) | 1<<22)
		}
	}
}
