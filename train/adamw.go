package train

import "math"

// AdamW is torch.optim.AdamW (decoupled weight decay, bias-corrected moments) over float32 tensors, step by step
// as PyTorch's single-tensor implementation computes it: p ← p·(1 − lr·wd); m ← β₁m + (1−β₁)g;
// v ← β₂v + (1−β₂)g²; p ← p − (lr/(1−β₁ᵗ))·m/(√v/√(1−β₂ᵗ) + eps).
type AdamW struct {
	LR, Beta1, Beta2, Eps, WeightDecay float64

	t    int
	m, v [][]float32
	// scales, when set, returns per-entry factors of the step size (see lrScaler), nil tensors meaning 1.
	scales func() [][]float32
}

// NewAdamW returns AdamW with PyTorch's defaults besides the learning rate: betas (0.9, 0.999), eps 1e-8, weight
// decay 0.01.
func NewAdamW(lr float64) *AdamW {
	return &AdamW{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
}

// Step updates params from grads (same shapes, the same tensors at every call).
func (o *AdamW) Step(params, grads [][]float32) {
	if o.m == nil {
		o.m, o.v = make([][]float32, len(params)), make([][]float32, len(params))
		for i, p := range params {
			o.m[i], o.v[i] = make([]float32, len(p)), make([]float32, len(p))
		}
	}
	o.t++
	decay := float32(1 - o.LR*o.WeightDecay)
	b1, b2 := float32(o.Beta1), float32(o.Beta2)
	stepSize := float32(o.LR / (1 - math.Pow(o.Beta1, float64(o.t))))
	bc2 := float32(math.Sqrt(1 - math.Pow(o.Beta2, float64(o.t))))
	eps := float32(o.Eps)
	var scales [][]float32
	if o.scales != nil {
		scales = o.scales()
	}
	parallel(len(params), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			p, g, m, v := params[i], grads[i], o.m[i], o.v[i]
			if scales != nil && scales[i] != nil {
				s := scales[i]
				for j, gj := range g {
					p[j] *= 1 - (1-decay)*s[j]
					m[j] += (gj - m[j]) * (1 - b1)
					v[j] = v[j]*b2 + (1-b2)*gj*gj
					p[j] -= s[j] * stepSize * m[j] / (float32(math.Sqrt(float64(v[j])))/bc2 + eps)
				}
				continue
			}
			for j, gj := range g {
				p[j] *= decay
				m[j] += (gj - m[j]) * (1 - b1) // torch's lerp_
				v[j] = v[j]*b2 + (1-b2)*gj*gj
				p[j] -= stepSize * m[j] / (float32(math.Sqrt(float64(v[j])))/bc2 + eps)
			}
		}
	})
}
