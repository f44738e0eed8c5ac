package gguf

import (
	"fmt"
	"strings"

	"github.com/lathe-ml/lathe/tensor"
)

// ggmlTypes maps enum ggml_type ids (ggml include/ggml.h, GGML_TYPE_COUNT = 43) to lathe types. Ids that ggml has
// removed keep their old name in removedTypes so that a file using one gets an error saying what it was.
var ggmlTypes = [...]tensor.DType{
	0:  tensor.F32,
	1:  tensor.F16,
	2:  tensor.Q4_0,
	3:  tensor.Q4_1,
	6:  tensor.Q5_0,
	7:  tensor.Q5_1,
	8:  tensor.Q8_0,
	9:  tensor.Q8_1,
	10: tensor.Q2_K,
	11: tensor.Q3_K,
	12: tensor.Q4_K,
	13: tensor.Q5_K,
	14: tensor.Q6_K,
	15: tensor.Q8_K,
	16: tensor.IQ2_XXS,
	17: tensor.IQ2_XS,
	18: tensor.IQ3_XXS,
	19: tensor.IQ1_S,
	20: tensor.IQ4_NL,
	21: tensor.IQ3_S,
	22: tensor.IQ2_S,
	23: tensor.IQ4_XS,
	24: tensor.I8,
	25: tensor.I16,
	26: tensor.I32,
	27: tensor.I64,
	28: tensor.F64,
	29: tensor.IQ1_M,
	30: tensor.BF16,
	34: tensor.TQ1_0,
	35: tensor.TQ2_0,
	39: tensor.MXFP4,
	40: tensor.NVFP4,
	41: tensor.Q1_0,
	42: tensor.Q2_0,
}

// removedTypes names the ids ggml.h keeps only as comments, with the advice for each.
var removedTypes = map[uint32]struct{ name, advice string }{
	4: {"Q4_2", "requantize from the original weights" +
		" (early ollama builds also wrote MXFP4 as type 4; ggml's MXFP4 is type 39)"},
	5:  {"Q4_3", "requantize from the original weights"},
	31: {"Q4_0_4_4", "repacking now happens at load time; requantize to Q4_0"},
	32: {"Q4_0_4_8", "repacking now happens at load time; requantize to Q4_0"},
	33: {"Q4_0_8_8", "repacking now happens at load time; requantize to Q4_0"},
	36: {"IQ4_NL_4_4", "repacking now happens at load time; requantize to IQ4_NL"},
	37: {"IQ4_NL_4_8", "repacking now happens at load time; requantize to IQ4_NL"},
	38: {"IQ4_NL_8_8", "repacking now happens at load time; requantize to IQ4_NL"},
}

// TypeFromGGML maps a ggml_type id to a DType. Removed ids are rejected by name.
func TypeFromGGML(id uint32) (tensor.DType, error) {
	if r, ok := removedTypes[id]; ok {
		return tensor.Invalid, fmt.Errorf("type %d (%s) was removed from ggml; %s", id, r.name, r.advice)
	}
	if id >= uint32(len(ggmlTypes)) || ggmlTypes[id] == tensor.Invalid {
		return tensor.Invalid, fmt.Errorf("unknown ggml type %d (known ids are 0 to %d)", id, len(ggmlTypes)-1)
	}
	return ggmlTypes[id], nil
}

// GGMLType returns the ggml_type id of t. Element types that only safetensors has (U8, BOOL, F8_E4M3, ...) have
// none.
func GGMLType(t tensor.DType) (uint32, error) {
	if t != tensor.Invalid {
		for id, d := range ggmlTypes {
			if d == t {
				return uint32(id), nil
			}
		}
	}
	return 0, fmt.Errorf("data type %s has no ggml equivalent", t)
}

// FileType is llama_ftype, stored in general.file_type: the quantization recipe a whole model was made with
// (llama.h; names as llama-quantize accepts them).
type FileType uint32

// FileTypeGuessed is or-ed into a FileType that llama.cpp inferred from the tensor types rather than read.
const FileTypeGuessed FileType = 1024

var fileTypeNames = map[FileType]string{
	0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1",
	7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
	11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
	19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
	26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
	36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 41: "Q2_0",
}

// removedFileTypes are ids llama.h keeps only as comments; old files may still carry them.
var removedFileTypes = map[FileType]string{
	4: "Q4_1_SOME_F16", 5: "Q4_2", 6: "Q4_3", 33: "Q4_0_4_4", 34: "Q4_0_4_8", 35: "Q4_0_8_8",
}

// String returns the llama-quantize name ("Q4_K_M"), marking guessed and removed types.
func (t FileType) String() string {
	if t&FileTypeGuessed != 0 && t != FileTypeGuessed {
		return (t &^ FileTypeGuessed).String() + " (guessed)"
	}
	if n, ok := fileTypeNames[t]; ok {
		return n
	}
	if n, ok := removedFileTypes[t]; ok {
		return n + " (removed)"
	}
	return fmt.Sprintf("FileType(%d)", uint32(t))
}

// ParseFileType accepts a llama-quantize type name in any case ("q4_k_m"). Removed types are rejected.
func ParseFileType(name string) (FileType, error) {
	upper := strings.ToUpper(name)
	for t, n := range fileTypeNames {
		if n == upper {
			return t, nil
		}
	}
	for t, n := range removedFileTypes {
		if n == upper {
			return 0, fmt.Errorf("file type %s (%d) was removed from llama.cpp", n, uint32(t))
		}
	}
	return 0, fmt.Errorf("unknown file type %q", name)
}
