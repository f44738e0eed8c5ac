package tensor

import "fmt"

// View is a named tensor over bytes it does not own: often a slice of a read-only memory map, so writing to Data
// can fault. Data is exactly Shape.Bytes(DType) long, little-endian, row-major.
type View struct {
	Name  string
	DType DType
	Shape Shape
	Data  []byte
}

// NewView checks that data has exactly the size that dtype and shape imply.
func NewView(name string, dtype DType, shape Shape, data []byte) (View, error) {
	want, err := shape.Bytes(dtype)
	if err != nil {
		return View{}, fmt.Errorf("tensor %q: %w", name, err)
	}
	if int64(len(data)) != want {
		return View{}, fmt.Errorf("tensor %q: %s %v needs %d bytes, have %d", name, dtype, shape, want, len(data))
	}
	return View{Name: name, DType: dtype, Shape: shape, Data: data}, nil
}

// Elements returns the element count; the shape was checked when the view was made.
func (v View) Elements() int64 {
	n, _ := v.Shape.Elements()
	return n
}

// Float32s decodes the view into a new float32 slice. It works for float, integer and bool types;
// quantized types need the quant package.
func (v View) Float32s() ([]float32, error) {
	out := make([]float32, v.Elements())
	if err := ToFloat32(out, v.Data, v.DType); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", v.Name, err)
	}
	return out, nil
}
