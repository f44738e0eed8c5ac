package spectral

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/tensor"
)

// TestFromView decodes float and block types into the same matrix that decoding the whole tensor at once gives, for
// tensors larger than one decoding chunk, and flattens trailing dimensions into columns.
func TestFromView(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	rows, cols := 96, 1024 // 98304 elements: more than one chunk, whole Q4_K and Q8_0 blocks per row
	src := make([]float32, rows*cols)
	for i := range src {
		src[i] = float32(r.NormFloat64())
	}
	for _, dt := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16, tensor.Q8_0, tensor.Q4_K} {
		shape := tensor.Shape{int64(rows), int64(cols)}
		size, err := shape.Bytes(dt)
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, size)
		if dt.IsQuantized() {
			err = quant.Encode(dt, data, src, cols, nil)
		} else {
			err = tensor.FromFloat32(data, src, dt)
		}
		if err != nil {
			t.Fatalf("%s: %v", dt, err)
		}
		want := make([]float32, len(src))
		if dt.IsQuantized() {
			err = quant.Decode(dt, want, data)
		} else {
			err = tensor.ToFloat32(want, data, dt)
		}
		if err != nil {
			t.Fatal(err)
		}
		m, err := FromView(tensor.View{Name: "w", DType: dt, Shape: shape, Data: data})
		if err != nil {
			t.Fatalf("%s: %v", dt, err)
		}
		if m.Rows != rows || m.Cols != cols {
			t.Fatalf("%s: %d×%d", dt, m.Rows, m.Cols)
		}
		for i, v := range want {
			if m.Data[i] != float64(v) {
				t.Fatalf("%s: element %d = %g, want %g", dt, i, m.Data[i], v)
			}
		}
	}

	conv := tensor.View{Name: "conv", DType: tensor.F32, Shape: tensor.Shape{2, 3, 2}, Data: make([]byte, 48)}
	if m, err := FromView(conv); err != nil || m.Rows != 2 || m.Cols != 6 {
		t.Errorf("[2 3 2] tensor: %v, %v; want a 2×6 matrix", m, err)
	}
	bias := tensor.View{Name: "bias", DType: tensor.F32, Shape: tensor.Shape{4}, Data: make([]byte, 16)}
	if _, err := FromView(bias); !errors.Is(err, ErrNotMatrix) {
		t.Errorf("1-D tensor: err = %v, want ErrNotMatrix", err)
	}
	short := tensor.View{Name: "short", DType: tensor.F32, Shape: tensor.Shape{2, 2}, Data: make([]byte, 12)}
	if _, err := FromView(short); err == nil {
		t.Error("tensor with too few bytes accepted")
	}
	ints := tensor.View{Name: "ids", DType: tensor.I32, Shape: tensor.Shape{2, 2}, Data: make([]byte, 16)}
	if _, err := FromView(ints); err == nil {
		t.Error("integer tensor accepted")
	}
}
