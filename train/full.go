package train

import (
	"fmt"

	"github.com/lathe-ml/lathe/internal/kernels"
)

// MethodFull trains the targeted projections' weights themselves (full fine-tuning of the linear layers), on a
// float32 copy of each: 4 bytes per weight, plus AdamW's 8, so it suits small models. Its result is full-rank and is
// written as a merged model.
const MethodFull = "full"

func init() {
	registerMethod(MethodFull, methodSpec{
		summary: "full fine-tuning of the targeted projections' weights (small models; writes a merged model)",
		args:    map[string]string{},
		dense:   true,
		build:   func(LoRAConfig, methodArgs) (method, error) { return fullMethod{}, nil },
	})
}

type fullMethod struct{}

func (fullMethod) project(s site) (projection, error) {
	w := s.w
	p := &denseLinear{w: w, v: make([]float32, w.rows*w.cols), dv: make([]float32, w.rows*w.cols)}
	if err := w.decodeRows(p.v, 0, w.rows); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", w.name, err)
	}
	return p, nil
}

// denseLinear is a projection whose weight is trained whole: y = x·Vᵀ with V starting at the stored weight.
type denseLinear struct {
	w     *matrix // the stored weight, for delta
	v, dv []float32
}

func (p *denseLinear) forward(y, x []float32, n int, _ *[]float32) {
	kernels.Sgemm(false, true, n, p.w.rows, p.w.cols, 1, x, p.w.cols, p.v, p.w.cols, 0, y, p.w.rows)
}

// backward: dx += dy·V, dV += dyᵀ·x.
func (p *denseLinear) backward(dx, dy, x []float32, n int, _ *[]float32) {
	rows, cols := p.w.rows, p.w.cols
	kernels.Sgemm(false, false, n, cols, rows, 1, dy, rows, p.v, cols, 1, dx, cols)
	kernels.Sgemm(true, false, rows, cols, n, 1, dy, rows, x, cols, 1, p.dv, cols)
}

func (p *denseLinear) params() ([][]float32, [][]float32) { return [][]float32{p.v}, [][]float32{p.dv} }

// delta is V − W, W decoded again from the stored weight.
func (p *denseLinear) delta(dst []float32) {
	_ = p.w.decodeRows(dst, 0, p.w.rows) // decoded once already in project
	for i, v := range p.v {
		dst[i] = v - dst[i]
	}
}
