package quant_test

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/tensor"
)

// goldenDir finds ../shared/golden/quant by walking up from the package directory to the folder that holds
// shared/ beside the repository.
func goldenDir(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		p := filepath.Join(dir, "shared", "golden", "quant")
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("shared/golden/quant not found above the package directory; goldens are not available here")
		}
		dir = parent
	}
}

// TestGolden checks every file of shared/golden/quant, each produced by ggml's ggml_quantize_chunk and to_float:
// Encode must reproduce `quantized` byte for byte from `input` (and `imatrix` when present), and Decode must
// reproduce `dequantized` bit for bit from `quantized`. A type without a codec fails.
func TestGolden(t *testing.T) {
	dir := goldenDir(t)
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
			typ, err := tensor.ParseDType(strings.Split(name, "__")[0])
			if err != nil {
				t.Fatalf("file name does not start with a type: %v", err)
			}
			g := loadGolden(t, path)
			rows, nPerRow := int(g.input.Shape[0]), int(g.input.Shape[1])
			input := float32s(t, g.input)
			var imatrix []float32
			if g.imatrix != nil {
				imatrix = float32s(t, *g.imatrix)
			}
			want := g.quantized.Data

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

			wantF := float32s(t, g.dequantized)
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

func float32s(t *testing.T, v tensor.View) []float32 {
	t.Helper()
	if v.DType != tensor.F32 {
		t.Fatalf("tensor %q is %s, want F32", v.Name, v.DType)
	}
	f, err := v.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return f
}
