package adapter

import (
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/spectral"
	"github.com/lathe-ml/lathe/tensor"
)

// Delta returns the dense update Scale·B·A in the base tensor's orientation (before any DoRA rescaling).
func (m *Module) Delta() (*spectral.Matrix, error) {
	left, right, err := m.Factors()
	if err != nil {
		return nil, err
	}
	return spectral.Product(left, right, m.Scale)
}

// Merge returns the merged weight for base weight w, as PEFT's merge computes it (§5.1 of spectral-prune-merge.md):
// W + ΔW, or for DoRA (m / ‖W + ΔW‖_row) ⊙ (W + ΔW) with the norm of each output row.
func (m *Module) Merge(w *spectral.Matrix) (*spectral.Matrix, error) {
	rows, cols := m.Shape()
	if w.Rows != rows || w.Cols != cols {
		return nil, fmt.Errorf("module %s: base weight is %d×%d, the update %d×%d", m.Name, w.Rows, w.Cols, rows, cols)
	}
	d, err := m.Delta()
	if err != nil {
		return nil, err
	}
	merged, err := w.Add(d)
	if err != nil {
		return nil, err
	}
	if m.Magnitude == nil {
		return merged, nil
	}
	if m.Layout != Linear {
		return nil, fmt.Errorf("module %s: DoRA on embeddings or fan_in_fan_out layers is not supported", m.Name)
	}
	mag, err := spectral.FromView(asMatrix(*m.Magnitude))
	if err != nil {
		return nil, err
	}
	for i := range merged.Rows {
		row := merged.Data[i*cols : (i+1)*cols]
		norm := 0.0
		for _, v := range row {
			norm += v * v
		}
		f := mag.Data[i] / math.Sqrt(norm)
		for j := range row {
			row[j] *= f
		}
	}
	return merged, nil
}

// asMatrix views a vector (a DoRA magnitude, or a norm that modules_to_save replaces) as an n×1 matrix, so that
// spectral.FromView decodes it; other tensors are returned as they are.
func asMatrix(v tensor.View) tensor.View {
	if len(v.Shape) == 1 {
		v.Shape = tensor.Shape{v.Shape[0], 1}
	}
	return v
}
