package quant_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// decodable lists the types Decode supports, in declaration order, so that a fuzz input's type byte is stable.
func decodable() []tensor.DType {
	var out []tensor.DType
	for _, t := range tensor.DTypes() {
		if t.IsQuantized() && quant.CanDecode(t) {
			out = append(out, t)
		}
	}
	return out
}

// FuzzDecode decodes arbitrary bytes as every block type: block data comes from files, so no bit pattern (NaN or
// infinite scales, out-of-range grid indices, any sign bits) may panic. Decoding the blocks together must give the
// same bits as decoding each block alone, and a src one byte off the expected size must be refused.
func FuzzDecode(f *testing.F) {
	types := decodable()
	for i, typ := range types {
		bb := typ.BlockBytes()
		zeros, ones := make([]byte, 2*bb), make([]byte, 2*bb)
		for j := range ones {
			ones[j] = 0xff
		}
		f.Add(uint8(i), zeros)
		f.Add(uint8(i), ones)
	}
	// Real blocks, as ggml wrote them.
	if dir, ok := testshared.Dir(); ok {
		files, _ := filepath.Glob(filepath.Join(dir, "golden", "quant", "*__gauss__noimat.safetensors"))
		for _, path := range files {
			sf, err := safetensors.Open(path)
			if err != nil {
				continue
			}
			typ, err := tensor.ParseDType(sf.Metadata()["ggml_type"])
			q, qerr := sf.Tensor("quantized")
			if i := indexOf(types, typ); err == nil && qerr == nil && i >= 0 {
				f.Add(uint8(i), append([]byte(nil), q.Data[:min(len(q.Data), 4*typ.BlockBytes())]...))
			}
			sf.Close()
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		typ := types[int(which)%len(types)]
		bs, bb := typ.BlockSize(), typ.BlockBytes()
		blocks := min(len(data)/bb, 64)
		src := data[:blocks*bb]
		all := make([]float32, blocks*bs)
		if err := quant.Decode(typ, all, src); err != nil {
			t.Fatalf("%s: %d whole blocks: %v", typ, blocks, err)
		}
		one := make([]float32, bs)
		for b := range blocks {
			if err := quant.Decode(typ, one, src[b*bb:(b+1)*bb]); err != nil {
				t.Fatalf("%s block %d: %v", typ, b, err)
			}
			for j, v := range one {
				if math.Float32bits(v) != math.Float32bits(all[b*bs+j]) {
					t.Fatalf("%s block %d element %d: alone %v, among others %v", typ, b, j, v, all[b*bs+j])
				}
			}
		}
		if len(data) > len(src) {
			if err := quant.Decode(typ, all, data[:len(src)+1]); err == nil {
				t.Fatalf("%s: %d elements decoded from %d bytes", typ, len(all), len(src)+1)
			}
		}
	})
}

func indexOf(types []tensor.DType, t tensor.DType) int {
	for i, u := range types {
		if u == t {
			return i
		}
	}
	return -1
}
