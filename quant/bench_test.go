package quant_test

import (
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/tensor"
)

// benchRows × benchCols is one realistic weight matrix slice: 256 rows of a 4096-wide projection (4 MiB of F32).
const benchRows, benchCols = 256, 4096

func benchInput() (x, importance []float32) {
	r := rand.New(rand.NewPCG(1, 2))
	x = make([]float32, benchRows*benchCols)
	for i := range x {
		x[i] = float32(r.NormFloat64() * 0.02)
	}
	importance = make([]float32, benchCols)
	for i := range importance {
		importance[i] = float32(r.ExpFloat64())
	}
	return x, importance
}

// BenchmarkEncode reports MB/s of F32 input for every type Encode supports, without an importance matrix unless
// the type requires one.
func BenchmarkEncode(b *testing.B) {
	x, importance := benchInput()
	for _, t := range tensor.DTypes() {
		if !quant.CanEncode(t) {
			continue
		}
		b.Run(t.String(), func(b *testing.B) {
			var imp []float32
			if quant.RequiresImatrix(t) {
				imp = importance
			}
			n, _ := t.Bytes(int64(len(x)))
			dst := make([]byte, n)
			b.SetBytes(int64(4 * len(x)))
			for b.Loop() {
				if err := quant.Encode(t, dst, x, benchCols, imp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncodeImatrix covers the *_impl paths that an importance matrix selects.
func BenchmarkEncodeImatrix(b *testing.B) {
	x, importance := benchInput()
	for _, t := range []tensor.DType{tensor.Q4_0, tensor.Q2_K, tensor.Q3_K, tensor.Q4_K, tensor.Q5_K, tensor.Q6_K,
		tensor.IQ4_XS} {
		b.Run(t.String(), func(b *testing.B) {
			n, _ := t.Bytes(int64(len(x)))
			dst := make([]byte, n)
			b.SetBytes(int64(4 * len(x)))
			for b.Loop() {
				if err := quant.Encode(t, dst, x, benchCols, importance); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecode reports MB/s of F32 output for every type Decode supports.
func BenchmarkDecode(b *testing.B) {
	x, importance := benchInput()
	for _, t := range tensor.DTypes() {
		if !quant.CanDecode(t) || !quant.CanEncode(t) {
			continue
		}
		b.Run(t.String(), func(b *testing.B) {
			n, _ := t.Bytes(int64(len(x)))
			src := make([]byte, n)
			if err := quant.Encode(t, src, x, benchCols, importance); err != nil {
				b.Fatal(err)
			}
			dst := make([]float32, len(x))
			b.SetBytes(int64(4 * len(x)))
			for b.Loop() {
				if err := quant.Decode(t, dst, src); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
