package quant_test

import (
	"bytes"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// TestGolden checks every file of shared/golden/quant, each produced by ggml's ggml_quantize_chunk and to_float:
// Encode must reproduce `quantized` byte for byte from `input` (and `imatrix` when present), and Decode must
// reproduce `dequantized` bit for bit from `quantized`. A type without a codec fails.
func TestGolden(t *testing.T) {
	dir := testshared.Path(t, "golden", "quant")
	files, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no golden files in %s", dir)
	}
	for _, path := range files {
		name := strings.TrimSuffix(filepath.Base(path), ".safetensors")
		t.Run(name, func(t *testing.T) {
			f, err := safetensors.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			typ, err := tensor.ParseDType(f.Metadata()["ggml_type"])
			if err != nil {
				t.Fatalf("metadata ggml_type: %v", err)
			}
			in := view(t, f, "input", tensor.F32)
			if len(in.Shape) != 2 {
				t.Fatalf("input has shape %v, want [rows, n_per_row]", in.Shape)
			}
			rows, nPerRow := int(in.Shape[0]), int(in.Shape[1])
			input := float32s(t, in)
			var imatrix []float32
			if _, ok := f.Lookup("imatrix"); ok {
				imatrix = float32s(t, view(t, f, "imatrix", tensor.F32))
			}
			want := view(t, f, "quantized", tensor.U8).Data

			got := make([]byte, len(want))
			if err := quant.Encode(typ, got, input, nPerRow, imatrix); err != nil {
				t.Errorf("encode: %v", err)
			} else if !bytes.Equal(got, want) {
				bad, first := 0, -1
				bb := typ.BlockBytes()
				for b := 0; b < len(want)/bb; b++ {
					if !bytes.Equal(got[b*bb:(b+1)*bb], want[b*bb:(b+1)*bb]) {
						if first < 0 {
							first = b
						}
						bad++
					}
				}
				blocksPerRow := nPerRow / typ.BlockSize()
				t.Errorf("encode: %d of %d blocks differ; first is block %d of row %d:\n got %x\nwant %x", bad,
					len(want)/bb, first%blocksPerRow, first/blocksPerRow, got[first*bb:(first+1)*bb],
					want[first*bb:(first+1)*bb])
			}

			wantF := float32s(t, view(t, f, "dequantized", tensor.F32))
			gotF := make([]float32, rows*nPerRow)
			if err := quant.Decode(typ, gotF, want); err != nil {
				t.Errorf("decode: %v", err)
				return
			}
			bad, first := 0, -1
			for i := range wantF {
				if math.Float32bits(gotF[i]) != math.Float32bits(wantF[i]) {
					if first < 0 {
						first = i
					}
					bad++
				}
			}
			if bad > 0 {
				t.Errorf("decode: %d of %d values differ; first at row %d column %d: got %g (%08x), want %g (%08x)",
					bad, len(wantF), first/nPerRow, first%nPerRow, gotF[first], math.Float32bits(gotF[first]),
					wantF[first], math.Float32bits(wantF[first]))
			}
		})
	}
}

func view(t *testing.T, f *safetensors.File, name string, dt tensor.DType) tensor.View {
	t.Helper()
	v, err := f.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	if v.DType != dt {
		t.Fatalf("tensor %q is %s, want %s", name, v.DType, dt)
	}
	return v
}

func float32s(t *testing.T, v tensor.View) []float32 {
	t.Helper()
	f, err := v.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return f
}
