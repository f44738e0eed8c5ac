package spectral

import (
	"fmt"

	"github.com/lathe-ml/lathe/internal/linalg"
)

// LowRankSVD returns the thin SVD of ΔW = scale·B·A (B rows×r, A r×cols, the orientation of a LoRA update of an
// [out, in] weight) with r components, without forming ΔW: with B = Q_B·R_B and Aᵀ = Q_A·R_A (thin QR), ΔW =
// scale·Q_B·(R_B·R_Aᵀ)·Q_Aᵀ, so the SVD of the r×r core gives the singular values, and Q_B, Q_A carry its vectors
// back. Cost O((rows+cols)·r²) instead of O(rows·cols·min(rows, cols)). When r exceeds a dimension the product is
// formed and decomposed directly. Singular values beyond the rank of B·A come out as (near) zero.
func LowRankSVD(b, a *Matrix, scale float64) (*SVD, error) {
	if b.Cols != a.Rows {
		return nil, fmt.Errorf("spectral: low-rank factors %d×%d and %d×%d do not chain", b.Rows, b.Cols, a.Rows, a.Cols)
	}
	if n := b.NonFinite() + a.NonFinite(); n > 0 {
		return nil, fmt.Errorf("spectral: low-rank factors hold %d NaN or Inf values: %w", n, linalg.ErrNotFinite)
	}
	r := b.Cols
	if r > b.Rows || r > a.Cols {
		w, err := Product(b, a, scale)
		if err != nil {
			return nil, err
		}
		return Decompose(w)
	}
	qb, rb := linalg.QR(b.Rows, r, b.Data)
	at := a.T()
	qa, ra := linalg.QR(at.Rows, r, at.Data)
	core := linalg.Mul(false, true, r, r, r, rb, ra)
	cu, s, cvt, err := linalg.SVD(r, r, core)
	if err != nil {
		return nil, err
	}
	u := linalg.Mul(false, false, b.Rows, r, r, qb, cu)
	vt := linalg.Mul(false, true, r, a.Cols, r, cvt, qa)
	sign := 1.0
	if scale < 0 {
		sign, scale = -1, -scale
	}
	for i := range s {
		s[i] *= scale
	}
	if sign < 0 {
		for i := range u {
			u[i] = -u[i]
		}
	}
	return &SVD{U: &Matrix{Rows: b.Rows, Cols: r, Data: u}, S: s, Vt: &Matrix{Rows: r, Cols: a.Cols, Data: vt}}, nil
}

// Product returns scale·B·A, the dense update of a factored pair.
func Product(b, a *Matrix, scale float64) (*Matrix, error) {
	w, err := b.Mul(a)
	if err != nil {
		return nil, err
	}
	for i := range w.Data {
		w.Data[i] *= scale
	}
	return w, nil
}
