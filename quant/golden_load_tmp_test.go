package quant_test

// TEMPORARY: replaced by the safetensors package once it compiles.

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"testing"

	"github.com/lathe-ml/lathe/tensor"
)

type golden struct {
	input, quantized, dequantized tensor.View
	imatrix                       *tensor.View
}

func loadGolden(t *testing.T, path string) golden {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	var h map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &h); err != nil {
		t.Fatal(err)
	}
	get := func(name string) *tensor.View {
		raw, ok := h[name]
		if !ok {
			return nil
		}
		var e struct {
			Dtype   string  `json:"dtype"`
			Shape   []int64 `json:"shape"`
			Offsets []int64 `json:"data_offsets"`
		}
		json.Unmarshal(raw, &e)
		dt, _ := tensor.ParseDType(e.Dtype)
		v, err := tensor.NewView(name, dt, e.Shape, b[8+int64(n)+e.Offsets[0]:8+int64(n)+e.Offsets[1]])
		if err != nil {
			t.Fatal(err)
		}
		return &v
	}
	return golden{input: *get("input"), quantized: *get("quantized"), dequantized: *get("dequantized"), imatrix: get("imatrix")}
}
