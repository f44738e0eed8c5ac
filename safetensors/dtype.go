package safetensors

import (
	"fmt"

	"github.com/lathe-ml/lathe/tensor"
)

// dtypes lists the type names of the format in the order of the reference's Dtype enum (safetensors/src/tensor.rs),
// which is increasing alignment; the reference writer (prepare) sorts tensors by this order, descending.
// bits is the reference's Dtype::bitsize. The two FNUZ types are known to the format but have no tensor.DType, so
// they are listed to give them a precise error instead of "unknown dtype".
var dtypes = [...]struct {
	name  string
	dtype tensor.DType // tensor.Invalid: a type of the format that lathe cannot hold
	bits  uint64
}{
	{"BOOL", tensor.BOOL, 8},
	{"F4", tensor.F4, 4},
	{"F6_E2M3", tensor.F6_E2M3, 6},
	{"F6_E3M2", tensor.F6_E3M2, 6},
	{"U8", tensor.U8, 8},
	{"I8", tensor.I8, 8},
	{"F8_E5M2", tensor.F8_E5M2, 8},
	{"F8_E4M3", tensor.F8_E4M3, 8},
	{"F8_E8M0", tensor.F8_E8M0, 8},
	{"F8_E4M3FNUZ", tensor.Invalid, 8},
	{"F8_E5M2FNUZ", tensor.Invalid, 8},
	{"I16", tensor.I16, 16},
	{"U16", tensor.U16, 16},
	{"F16", tensor.F16, 16},
	{"BF16", tensor.BF16, 16},
	{"I32", tensor.I32, 32},
	{"U32", tensor.U32, 32},
	{"F32", tensor.F32, 32},
	{"C64", tensor.C64, 64},
	{"F64", tensor.F64, 64},
	{"I64", tensor.I64, 64},
	{"U64", tensor.U64, 64},
}

// parseDType maps a header dtype name to its index in dtypes. Names are case-sensitive, as serde matches enum
// variants exactly.
func parseDType(name []byte) (int, error) {
	for i, d := range dtypes {
		if d.name == string(name) {
			if d.dtype == tensor.Invalid {
				return 0, fmt.Errorf("unsupported dtype %q: lathe has no such tensor type", name)
			}
			return i, nil
		}
	}
	return 0, fmt.Errorf("unknown dtype %q", name)
}

// rank returns the index of t in dtypes, or false when safetensors cannot store t (the ggml block types).
func rank(t tensor.DType) (int, bool) {
	for i, d := range dtypes {
		if d.dtype == t && t != tensor.Invalid {
			return i, true
		}
	}
	return 0, false
}
