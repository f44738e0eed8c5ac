// Package spectral measures weight matrices by their singular values: WeightWatcher's heavy-tailed self-regularization
// metrics (power-law α of the empirical spectral density, norms, stable rank, entropy), the Marchenko–Pastur fit
// with its spikes, the randomized (element-shuffled) ESD and its correlation traps, effective rank, the spectrum of
// a LoRA update computed from its factors, and the intruder dimensions a fine-tune adds to a base matrix
// (../shared/reference/spectral-prune-merge.md §1 and §2).
//
// The package works on tensor views and matrices only; reading models and adapters is the business of the packages
// above it. All arithmetic is float64; the definitions follow WeightWatcher v0.7.5.5 (weightwatcher.py,
// WW_powerlaw.py, RMT_Util.py) except where Options.WWCompat documents a deliberate difference.
package spectral

import (
	"errors"
	"fmt"

	"github.com/lathe-ml/lathe/internal/linalg"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/tensor"
)

// Matrix is a dense row-major float64 matrix.
type Matrix struct {
	Rows, Cols int
	Data       []float64 // Rows·Cols values, row after row
}

// NewMatrix returns a zero rows×cols matrix.
func NewMatrix(rows, cols int) *Matrix {
	return &Matrix{Rows: rows, Cols: cols, Data: make([]float64, rows*cols)}
}

// ErrNotMatrix is returned for a tensor with fewer than two dimensions.
var ErrNotMatrix = errors.New("not a matrix: fewer than two dimensions")

// decodeChunk is the number of elements decoded at a time, so that widening a large tensor never holds a second
// float32 copy of it; a multiple of every block size (32, 256).
const decodeChunk = 1 << 16

// FromView decodes a tensor of two or more dimensions, of any float or ggml block type, into a matrix. The first
// dimension gives the rows and the others are flattened into columns (PyTorch's W.reshape(out, -1)), so a
// [out, in] Linear weight keeps its orientation, whether it came from safetensors or from GGUF (whose Shape is
// already outermost first).
func FromView(v tensor.View) (*Matrix, error) {
	if len(v.Shape) < 2 {
		return nil, fmt.Errorf("tensor %q %v: %w", v.Name, v.Shape, ErrNotMatrix)
	}
	n, err := v.Shape.Elements()
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", v.Name, err)
	}
	rows := v.Shape[0]
	if rows == 0 || n/rows > 1<<31 || rows > 1<<31 {
		return nil, fmt.Errorf("tensor %q %v: unsupported matrix size", v.Name, v.Shape)
	}
	want, err := v.Shape.Bytes(v.DType)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", v.Name, err)
	}
	if int64(len(v.Data)) != want {
		return nil, fmt.Errorf("tensor %q: %d bytes of data, %v %s needs %d", v.Name, len(v.Data), v.Shape, v.DType, want)
	}
	var decode func(dst []float32, src []byte) error
	switch {
	case v.DType.IsQuantized():
		if !quant.CanDecode(v.DType) {
			return nil, fmt.Errorf("tensor %q: no decoder for %s", v.Name, v.DType)
		}
		decode = func(dst []float32, src []byte) error { return quant.Decode(v.DType, dst, src) }
	case v.DType.IsFloat():
		decode = func(dst []float32, src []byte) error { return tensor.ToFloat32(dst, src, v.DType) }
	default:
		return nil, fmt.Errorf("tensor %q: %s is not a float or block type", v.Name, v.DType)
	}
	m := NewMatrix(int(rows), int(n/rows))
	bs := int64(v.DType.BlockSize())
	buf := make([]float32, min(n, decodeChunk))
	for off := int64(0); off < n; off += decodeChunk {
		cnt := min(n-off, decodeChunk)
		b0, err := tensor.Shape{off}.Bytes(v.DType)
		if err != nil || off%bs != 0 || cnt%bs != 0 {
			return nil, fmt.Errorf("tensor %q: %d elements are not whole %s blocks", v.Name, n, v.DType)
		}
		b1, _ := tensor.Shape{off + cnt}.Bytes(v.DType)
		if err := decode(buf[:cnt], v.Data[b0:b1]); err != nil {
			return nil, fmt.Errorf("tensor %q: %w", v.Name, err)
		}
		for i, x := range buf[:cnt] {
			m.Data[off+int64(i)] = float64(x)
		}
	}
	return m, nil
}

// Clone returns a deep copy.
func (m *Matrix) Clone() *Matrix {
	return &Matrix{Rows: m.Rows, Cols: m.Cols, Data: append([]float64(nil), m.Data...)}
}

// T returns the transpose.
func (m *Matrix) T() *Matrix {
	return &Matrix{Rows: m.Cols, Cols: m.Rows, Data: linalg.Transpose(m.Rows, m.Cols, m.Data)}
}

// Add returns m + o.
func (m *Matrix) Add(o *Matrix) (*Matrix, error) { return m.combine(o, 1) }

// Sub returns m − o.
func (m *Matrix) Sub(o *Matrix) (*Matrix, error) { return m.combine(o, -1) }

func (m *Matrix) combine(o *Matrix, sign float64) (*Matrix, error) {
	if m.Rows != o.Rows || m.Cols != o.Cols {
		return nil, fmt.Errorf("combining a %d×%d matrix with a %d×%d one", m.Rows, m.Cols, o.Rows, o.Cols)
	}
	d := NewMatrix(m.Rows, m.Cols)
	for i := range d.Data {
		d.Data[i] = m.Data[i] + sign*o.Data[i]
	}
	return d, nil
}

// Mul returns m·o.
func (m *Matrix) Mul(o *Matrix) (*Matrix, error) {
	if m.Cols != o.Rows {
		return nil, fmt.Errorf("multiplying a %d×%d matrix by a %d×%d one", m.Rows, m.Cols, o.Rows, o.Cols)
	}
	return &Matrix{Rows: m.Rows, Cols: o.Cols, Data: linalg.Mul(false, false, m.Rows, o.Cols, m.Cols, m.Data, o.Data)}, nil
}

// NonFinite counts the NaN and ±Inf elements.
func (m *Matrix) NonFinite() int {
	n := 0
	for _, v := range m.Data {
		if v-v != 0 {
			n++
		}
	}
	return n
}

// SingularValues returns the singular values of m in descending order; m is not modified.
func SingularValues(m *Matrix) ([]float64, error) {
	return linalg.SingularValues(m.Rows, m.Cols, append([]float64(nil), m.Data...))
}

// SVD is a thin singular value decomposition W = U·diag(S)·Vt with k = min(rows, cols) components, S descending.
type SVD struct {
	U  *Matrix   // rows×k, orthonormal columns (left singular vectors, in the output space of an [out, in] weight)
	S  []float64 // k singular values, descending
	Vt *Matrix   // k×cols, orthonormal rows (right singular vectors, in the input space)
}

// Decompose computes the thin SVD of m; m is not modified.
func Decompose(m *Matrix) (*SVD, error) {
	u, s, vt, err := linalg.SVD(m.Rows, m.Cols, append([]float64(nil), m.Data...))
	if err != nil {
		return nil, err
	}
	k := len(s)
	return &SVD{U: &Matrix{Rows: m.Rows, Cols: k, Data: u}, S: s, Vt: &Matrix{Rows: k, Cols: m.Cols, Data: vt}}, nil
}
