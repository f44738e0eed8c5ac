package spectral

import (
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/internal/linalg"
)

// IntruderOptions set the detection of intruder dimensions ("LoRA vs Full Fine-tuning: an Illusion of
// Equivalence", Shuttleworth et al., arXiv 2410.21228; §2.1).
type IntruderOptions struct {
	K       int     // how many of the tuned matrix's top singular vectors are examined
	Epsilon float64 // a vector is an intruder when its best |cosine| with every base singular vector is below this
}

// DefaultIntruderOptions are the paper code's defaults: k = 10 (find_number_of_intruder_dimensions) and ε = 0.5
// (--intruder_dimension_threshold).
func DefaultIntruderOptions() IntruderOptions { return IntruderOptions{K: 10, Epsilon: 0.5} }

// Intruders reports the intruder dimensions of one tuned matrix against its base.
type Intruders struct {
	// Left lists, by rank (0 = largest singular value), the top-K left singular vectors of the tuned matrix whose
	// largest |cos| with any left singular vector of the base is below ε. This is the paper's count; left vectors
	// live in the output space of an [out, in] weight.
	Left []int `json:"left"`
	// Right is the same test on the right singular vectors (input space), which the paper's code does not run.
	Right       []int     `json:"right"`
	MaxCosLeft  []float64 `json:"max_cos_left"` // for each examined vector, its best |cos| with the base's
	MaxCosRight []float64 `json:"max_cos_right"`
	Sigma       []float64 `json:"sigma"` // the examined vectors' singular values
}

// FindIntruders compares the singular vectors of a tuned matrix with those of its base, as the paper's
// find_intruder_dimensions.py does: C = |U_tunedᵀ·U_base|, m_j = max_i C[j,i] over all base vectors, and the tuned
// vectors j < K with m_j < ε are intruders. The right singular vectors are tested the same way.
func FindIntruders(base, tuned *SVD, opts IntruderOptions) (*Intruders, error) {
	if base.U.Rows != tuned.U.Rows || base.Vt.Cols != tuned.Vt.Cols {
		return nil, fmt.Errorf("spectral: intruders: base is %d×%d, tuned is %d×%d", base.U.Rows, base.Vt.Cols,
			tuned.U.Rows, tuned.Vt.Cols)
	}
	if opts.K <= 0 {
		return nil, fmt.Errorf("spectral: intruders: k = %d, need at least 1", opts.K)
	}
	k := min(opts.K, len(tuned.S))
	res := &Intruders{Left: []int{}, Right: []int{}, Sigma: append([]float64(nil), tuned.S[:k]...)}
	res.MaxCosLeft = maxAbsCos(columns(tuned.U, k), base.U.T(), k)
	res.MaxCosRight = maxAbsCos(tuned.Vt.Data[:k*tuned.Vt.Cols], base.Vt, k)
	for j := range k {
		if res.MaxCosLeft[j] < opts.Epsilon {
			res.Left = append(res.Left, j)
		}
		if res.MaxCosRight[j] < opts.Epsilon {
			res.Right = append(res.Right, j)
		}
	}
	return res, nil
}

// columns returns the first k columns of m, transposed: k rows of length m.Rows.
func columns(m *Matrix, k int) []float64 {
	out := make([]float64, k*m.Rows)
	for i := range m.Rows {
		for j := range k {
			out[j*m.Rows+i] = m.Data[i*m.Cols+j]
		}
	}
	return out
}

// maxAbsCos returns, for each of the k vectors stored as rows of t (length base.Cols), the largest |dot product|
// with any row of base. All vectors are unit length, so dot products are cosines.
func maxAbsCos(t []float64, base *Matrix, k int) []float64 {
	c := linalg.Mul(false, true, k, base.Rows, base.Cols, t, base.Data)
	best := make([]float64, k)
	for j := range k {
		for _, v := range c[j*base.Rows : (j+1)*base.Rows] {
			best[j] = max(best[j], math.Abs(v))
		}
	}
	return best
}

// MitigationOptions set intruder mitigation; Lambda is the fraction of each intruder direction that is kept.
type MitigationOptions struct {
	IntruderOptions
	Lambda float64
}

// DefaultMitigationOptions are PEFT's reduce_intruder_dimension defaults: k = 10, ε = 0.5, λ = 0.75.
func DefaultMitigationOptions() MitigationOptions {
	return MitigationOptions{IntruderOptions: DefaultIntruderOptions(), Lambda: 0.75}
}

// ReduceIntruders is PEFT's reduce_intruder_dimension for one LoRA layer (peft/tuners/lora/intruders.py; §2.2).
// With W the base weight and ΔW = scale·B·A, it finds the intruders of W_m = W + ΔW (left vectors, as PEFT does),
// scales each intruder's component u_j·s_j·v_jᵀ of W_m by λ, and refactors the new update (W_mit − W)/scale to the
// adapter's rank r with the singular values split evenly: B' = U_r·√S_r, A' = √S_r·V_rᵀ. Without intruders it
// returns B and A unchanged (copies), as PEFT copies them. The new update is exactly ΔW/scale + (λ−1)/scale·Σ_I
// u_j s_j v_jᵀ, of rank at most r + |I|, so it is decomposed in factored form (LowRankSVD) rather than densely; its
// top r components are those of PEFT's dense SVD.
func ReduceIntruders(w, b, a *Matrix, scale float64, opts MitigationOptions) (newB, newA *Matrix, found *Intruders, err error) {
	if scale == 0 || math.IsNaN(scale) || math.IsInf(scale, 0) {
		return nil, nil, nil, fmt.Errorf("spectral: LoRA scaling %g cannot be divided out", scale)
	}
	delta, err := Product(b, a, scale)
	if err != nil {
		return nil, nil, nil, err
	}
	merged, err := delta.Add(w)
	if err != nil {
		return nil, nil, nil, err
	}
	base, err := Decompose(w)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("base: %w", err)
	}
	tuned, err := Decompose(merged)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("base + update: %w", err)
	}
	found, err = FindIntruders(base, tuned, opts.IntruderOptions)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(found.Left) == 0 {
		return b.Clone(), a.Clone(), found, nil
	}
	// [scale·B | (λ−1)·U_I·S_I] · [A ; V_Iᵀ] / scale
	r, extra := b.Cols, len(found.Left)
	b2 := NewMatrix(b.Rows, r+extra)
	for i := range b.Rows {
		row := b2.Data[i*(r+extra):]
		for j := range r {
			row[j] = scale * b.Data[i*r+j]
		}
		for e, idx := range found.Left {
			row[r+e] = (opts.Lambda - 1) * tuned.U.Data[i*tuned.U.Cols+idx] * tuned.S[idx]
		}
	}
	a2 := NewMatrix(r+extra, a.Cols)
	copy(a2.Data, a.Data)
	for e, idx := range found.Left {
		copy(a2.Data[(r+e)*a.Cols:(r+e+1)*a.Cols], tuned.Vt.Data[idx*a.Cols:(idx+1)*a.Cols])
	}
	d, err := LowRankSVD(b2, a2, 1/scale)
	if err != nil {
		return nil, nil, nil, err
	}
	newB, newA = NewMatrix(b.Rows, r), NewMatrix(r, a.Cols)
	for j := range min(r, len(d.S)) {
		root := math.Sqrt(d.S[j])
		for i := range b.Rows {
			newB.Data[i*r+j] = d.U.Data[i*d.U.Cols+j] * root
		}
		for i := range a.Cols {
			newA.Data[j*a.Cols+i] = d.Vt.Data[j*a.Cols+i] * root
		}
	}
	return newB, newA, found, nil
}
