package quant

import "github.com/lathe-ml/lathe/tensor"

// Fallback is tensor_type_fallback for callers that pick types themselves (a size-budgeted plan): typ when the
// tensor's rows are whole blocks of it, else the type llama-quantize would write instead.
func Fallback(t TensorInfo, typ tensor.DType) (tensor.DType, error) {
	alt, _, err := fallback(t, typ)
	return alt, err
}
