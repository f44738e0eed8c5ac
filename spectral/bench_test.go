package spectral

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/tensor"
)

// BenchmarkSingularValues times the values-only SVD of float32 Gaussian weight matrices of the benchmark
// shapes, from the tensor view (decoding included), as `lathe spectrum` runs it per layer.
func BenchmarkSingularValues(b *testing.B) {
	for _, sh := range [][2]int{{1024, 1024}, {2048, 2048}, {4096, 1024}} {
		rows, cols := sh[0], sh[1]
		r := rand.New(rand.NewPCG(1, 1))
		f := make([]float32, rows*cols)
		for i := range f {
			f[i] = float32(r.NormFloat64())
		}
		data := make([]byte, 4*len(f))
		if err := tensor.FromFloat32(data, f, tensor.F32); err != nil {
			b.Fatal(err)
		}
		v := tensor.View{Name: "w", DType: tensor.F32, Shape: tensor.Shape{int64(rows), int64(cols)}, Data: data}
		b.Run(fmt.Sprintf("%dx%d", rows, cols), func(b *testing.B) {
			for b.Loop() {
				m, err := FromView(v)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := SingularValues(m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFitPowerLaw times the O(n²) xmin scan on 4096 eigenvalues.
func BenchmarkFitPowerLaw(b *testing.B) {
	evals := paretoQuantiles(2.5, 4096)
	for b.Loop() {
		FitPowerLaw(evals)
	}
}
