package spectral

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// Options choose what Analyze computes beyond the always-present norms and power-law fit.
type Options struct {
	// MPFit fits the Marchenko–Pastur law to the ESD (sigma_mp, bulk edges, spikes, mp_softrank).
	MPFit bool
	// Randomize adds the ESD of the element-shuffled matrix and its MP fit (correlation traps); AnalyzeMatrix only.
	Randomize bool
	// Seed drives the shuffles; the same seed gives the same numbers.
	Seed uint64
	// WWCompat reproduces WeightWatcher's quirks where lathe defaults to the documented correct form
	// (../shared/reference/spectral-prune-merge.md §1.9): the randomized-ESD distance is the Jensen–Shannon distance
	// of the two sorted eigenvalue vectors taken as distributions rather than of their histograms; summaries average
	// failed power-law fits (α = −1) in; and (applied by the callers that form LoRA updates) a LoRA update is B·A
	// without its α/r scaling, as WeightWatcher's peft mode analyzes it. The one-sided KS distance and the ESD
	// without 1/N are WeightWatcher's definitions and are kept in both modes.
	WWCompat bool
}

// Metrics are the per-layer numbers of WeightWatcher's details table (weightwatcher.py apply_esd,
// apply_norm_metrics, apply_powerlaw; §1.3), plus the effective rank. λ are the eigenvalues of WᵀW, i.e. the
// squared singular values, not divided by N.
type Metrics struct {
	N          int     `json:"N"` // larger dimension
	M          int     `json:"M"` // smaller dimension
	Q          float64 `json:"Q"` // N/M
	NumEvals   int     `json:"num_evals"`
	SVMax      float64 `json:"sv_max"`
	SVMin      float64 `json:"sv_min"`
	LambdaMax  float64 `json:"lambda_max"`
	RankLoss   int     `json:"rank_loss"`      // num_evals − matrix_rank
	WeakRank   int     `json:"weak_rank_loss"` // #{λ < 1e-6}
	MatrixRank int     `json:"matrix_rank"`    // #{σ > σmax·N·ε}, numpy's matrix_rank rule

	Norm            float64 `json:"norm"`              // Σλ = ‖W‖_F²
	LogNorm         float64 `json:"log_norm"`          // log10 Σλ
	SpectralNorm    float64 `json:"spectral_norm"`     // λmax = ‖W‖₂²
	LogSpectralNorm float64 `json:"log_spectral_norm"` // log10 λmax
	AlphaWeighted   float64 `json:"alpha_weighted"`    // α·log10 λmax
	LogAlphaNorm    float64 `json:"log_alpha_norm"`    // log10 Σ λ^α
	StableRank      float64 `json:"stable_rank"`       // Σλ/λmax
	Entropy         float64 `json:"entropy"`           // matrix entropy normalized by ln(matrix_rank), in [0, 1]
	// EffectiveRank is exp of the Shannon entropy of σ/Σσ (Roy and Vetterli, "The effective rank: a measure of
	// effective dimensionality", EUSIPCO 2007): between 1 and the number of nonzero singular values.
	EffectiveRank float64 `json:"effective_rank"`

	// ESD holds the eigenvalues λ in ascending order, for plots; it is not serialized.
	ESD []float64 `json:"-"`

	PowerLaw PowerLaw   `json:"power_law"`
	MP       *MPFit     `json:"mp,omitempty"`
	Random   *RandomESD `json:"random,omitempty"`
}

// ErrZero is returned for a matrix whose singular values are all zero: it has no spectral density to describe.
var ErrZero = errors.New("zero matrix: every singular value is 0")

// Constants of WeightWatcher's metric formulas (constants.py): EPSILON regularizes the entropy, and
// WEAK_RANK_LOSS_TOLERANCE bounds the eigenvalues counted as weak rank loss.
const (
	entropyEpsilon = 1e-10
	weakRankTol    = 1e-6
)

// Analyze computes the metrics of an rows×cols matrix from its singular values (any order). sv may hold fewer than
// min(rows, cols) values — the nonzero ones of a low-rank update — and then describes that many eigenvalues, as
// WeightWatcher's truncated SVD of a LoRA product does.
func Analyze(sv []float64, rows, cols int, opts Options) (*Metrics, error) {
	if len(sv) == 0 || rows <= 0 || cols <= 0 {
		return nil, fmt.Errorf("spectral: no singular values for a %d×%d matrix", rows, cols)
	}
	sv = slices.Clone(sv)
	slices.Sort(sv)
	for _, s := range sv {
		if math.IsNaN(s) || math.IsInf(s, 0) || s < 0 {
			return nil, fmt.Errorf("spectral: singular value %g", s)
		}
	}
	if sv[len(sv)-1] == 0 {
		return nil, ErrZero
	}
	m := &Metrics{N: max(rows, cols), M: min(rows, cols), NumEvals: len(sv)}
	m.Q = float64(m.N) / float64(m.M)
	evals := make([]float64, len(sv)) // ascending, like WeightWatcher's
	m.ESD = evals
	for i, s := range sv {
		evals[i] = s * s
		m.Norm += evals[i]
		if evals[i] < weakRankTol {
			m.WeakRank++
		}
	}
	m.SVMax, m.SVMin = sv[len(sv)-1], sv[0]
	m.LambdaMax = evals[len(evals)-1]
	m.MatrixRank = matrixRank(sv, m.N)
	m.RankLoss = len(sv) - m.MatrixRank

	m.PowerLaw = FitPowerLaw(evals)
	m.setNorms(evals, m.PowerLaw.Alpha) // α = −1 for a failed fit, which WeightWatcher lets flow into the α columns
	m.EffectiveRank = effectiveRank(sv)

	if opts.MPFit {
		fit := FitMP(evals, m.N, m.M)
		m.MP = &fit
	}
	return m, nil
}

// setNorms fills the scale metrics of apply_norm_metrics (weightwatcher.py) from the ascending eigenvalues, the
// fitted α and the matrix rank.
func (m *Metrics) setNorms(evals []float64, alpha float64) {
	m.LogNorm = math.Log10(m.Norm)
	m.SpectralNorm = m.LambdaMax
	m.LogSpectralNorm = math.Log10(m.LambdaMax)
	m.AlphaWeighted = alpha * m.LogSpectralNorm
	m.LogAlphaNorm = logSumPow(evals, alpha) / math.Ln10
	m.StableRank = m.Norm / m.LambdaMax
	m.Entropy = matrixEntropy(evals, m.Norm, m.MatrixRank)
}

// machineEpsilon is numpy's finfo(float64).eps: WeightWatcher computes its SVD in float64 (W.astype(float)), so its
// matrix_rank tolerance σmax·N·eps uses the float64 epsilon, and so does ours.
const machineEpsilon = 0x1p-52

// matrixRank counts singular values above σmax·N·ε (RMT_Util matrix_rank, numpy.linalg.matrix_rank's default).
func matrixRank(sv []float64, n int) int {
	tol := slices.Max(sv) * float64(n) * machineEpsilon
	r := 0
	for _, s := range sv {
		if s > tol {
			r++
		}
	}
	return r
}

// matrixEntropy is RMT_Util matrix_entropy: p = λ/Σλ + 1e-10, H = −Σ p ln p / ln(rank + 1e-10).
func matrixEntropy(evals []float64, sum float64, rank int) float64 {
	h := 0.0
	for _, l := range evals {
		p := l/sum + entropyEpsilon
		h -= p * math.Log(p)
	}
	return h / math.Log(float64(rank)+entropyEpsilon)
}

// logSumPow returns ln Σ λ^α without overflow (λ^α for a steep fit on a large layer exceeds float64).
func logSumPow(evals []float64, alpha float64) float64 {
	top := math.Inf(-1)
	for _, l := range evals {
		if l > 0 {
			top = max(top, alpha*math.Log(l))
		}
	}
	s := 0.0
	for _, l := range evals {
		if l > 0 {
			s += math.Exp(alpha*math.Log(l) - top)
		}
	}
	return top + math.Log(s)
}

func effectiveRank(sv []float64) float64 {
	sum := 0.0
	for _, s := range sv {
		sum += s
	}
	h := 0.0
	for _, s := range sv {
		if p := s / sum; p > 0 {
			h -= p * math.Log(p)
		}
	}
	return math.Exp(h)
}

// AnalyzeMatrix computes the singular values of w and their metrics, and with opts.Randomize the randomized ESD.
func AnalyzeMatrix(w *Matrix, opts Options) (*Metrics, error) {
	sv, err := SingularValues(w)
	if err != nil {
		return nil, err
	}
	m, err := Analyze(sv, w.Rows, w.Cols, opts)
	if err != nil {
		return nil, err
	}
	if opts.Randomize {
		r, err := Randomized(w, sv, opts)
		if err != nil {
			return nil, err
		}
		m.Random = r
	}
	return m, nil
}
