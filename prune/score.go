// Package prune scores the entries of weight matrices and selects masks from the scores: LIFT's principal weights
// (the largest entries of a rank-r approximation), magnitude, Wanda (|W|·‖X_j‖) and seeded random scores; kept per
// matrix, per output row, or N:M along the input dimension (spectral-prune-merge.md §3.1 and §4).
//
// The package works on float32 row-major matrices of an [out, in] weight (rows are outputs, columns inputs) and
// on packed bitmasks; reading models, importance matrices and mask files is the business of the packages above.
package prune

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/lathe-ml/lathe/internal/kernels"
	"github.com/lathe-ml/lathe/internal/linalg"
)

// Method is a scoring rule.
type Method uint8

const (
	// Magnitude scores |W_ij| (§4.1).
	Magnitude Method = iota + 1
	// Principal scores |W'_ij| with W' the rank-r truncated SVD of W: LIFT's principal weights (§3.1).
	Principal
	// Wanda scores |W_ij|·‖X_j‖ with ‖X_j‖ the norm of input feature j over calibration data (§4.2).
	Wanda
	// Random scores are uniform draws from a seeded generator: the baseline every criterion must beat.
	Random
)

var methodNames = map[Method]string{Magnitude: "magnitude", Principal: "principal", Wanda: "wanda", Random: "random"}

// ParseMethod reads a method name: principal, magnitude, wanda or random.
func ParseMethod(s string) (Method, error) {
	for m, n := range methodNames {
		if n == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("method %q: want principal, magnitude, wanda or random", s)
}

func (m Method) String() string {
	if n, ok := methodNames[m]; ok {
		return n
	}
	return fmt.Sprintf("Method(%d)", uint8(m))
}

// MarshalText writes the method's name.
func (m Method) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// SVDMode chooses how the principal score's truncated SVD is computed.
type SVDMode uint8

const (
	// SVDRandomized, the default, uses randomized subspace iteration with q = min(2r, min(m, n)) samples, as
	// LIFT's "rand" variant does (torch.svd_lowrank): a few matrix products on the fast kernels. When 2r ≥ min(m, n)
	// the sample spans the whole range of W and the result is the exact truncated SVD up to float32 rounding.
	SVDRandomized SVDMode = iota
	// SVDFull computes the full float64 SVD, as LIFT's torch.svd: the reference, and far slower (gonum's Dgesvd
	// with vectors takes 0.4 s for 768×256 and two minutes for 2048×2048 where the randomized one takes 0.3 s).
	SVDFull
)

// ParseSVDMode reads randomized or full.
func ParseSVDMode(s string) (SVDMode, error) {
	switch s {
	case "randomized":
		return SVDRandomized, nil
	case "full":
		return SVDFull, nil
	}
	return 0, fmt.Errorf("svd %q: want randomized or full", s)
}

func (m SVDMode) String() string {
	if m == SVDFull {
		return "full"
	}
	return "randomized"
}

// Defaults of ScoreOptions.
const (
	// DefaultRank is the LIFT README's recommended filter rank.
	DefaultRank = 128
	// DefaultPowerIters is the number of subspace iterations of the randomized SVD. torch.svd_lowrank's default,
	// 2, is too few for trained weights, whose spectra decay slowly: on tiny-llama-a at r = 32 (q = 64 of 256) with
	// LIFT's budget, 2 iterations select 13 % of entries differently from the exact SVD, 4 iterations 3.5 %, 8
	// iterations 0.33 %.
	DefaultPowerIters = 8
)

// ScoreOptions configure Score.
type ScoreOptions struct {
	Method Method
	// Rank is r of the principal score; 0 means DefaultRank. It is capped at min(rows, cols), where the rank-r
	// approximation is W itself and the score is |W|.
	Rank int
	SVD  SVDMode
	// PowerIters is the number of subspace iterations of the randomized SVD; 0 means DefaultPowerIters. The
	// randomized SVD samples q = min(2r, min(rows, cols)) directions, as LIFT does.
	PowerIters int
	// Norms are ‖X_j‖ for Wanda, one per column: the square root of an imatrix's mean squared input.
	Norms []float32
	// Seed drives the random scores and the test matrix of the randomized SVD.
	Seed uint64
}

// ErrNoNorms is returned for Wanda scores without activation norms.
var ErrNoNorms = errors.New("prune: wanda needs activation norms (an importance matrix)")

// EffectiveRank is the rank the principal score uses on a rows×cols matrix for a requested rank (0: default).
func EffectiveRank(rows, cols, rank int) int {
	if rank <= 0 {
		rank = DefaultRank
	}
	return min(rank, rows, cols)
}

// Score returns the score of every entry of the row-major rows×cols matrix w (not modified).
func Score(rows, cols int, w []float32, opts ScoreOptions) ([]float32, error) {
	if rows < 0 || cols < 0 || len(w) != rows*cols {
		return nil, fmt.Errorf("prune: %d values for a %d×%d matrix", len(w), rows, cols)
	}
	switch opts.Method {
	case Magnitude:
		return abs(w), nil
	case Principal:
		return principal(rows, cols, w, opts)
	case Wanda:
		if opts.Norms == nil {
			return nil, ErrNoNorms
		}
		if len(opts.Norms) != cols {
			return nil, fmt.Errorf("prune: %d activation norms for %d columns", len(opts.Norms), cols)
		}
		for j, x := range opts.Norms {
			if !(x >= 0) || math.IsInf(float64(x), 0) {
				return nil, fmt.Errorf("prune: activation norm of column %d is %v", j, x)
			}
		}
		s := abs(w)
		for i := range rows {
			row := s[i*cols : (i+1)*cols]
			for j, x := range opts.Norms {
				row[j] *= x
			}
		}
		return s, nil
	case Random:
		rng := rand.New(rand.NewPCG(opts.Seed, 0x7a4d))
		s := make([]float32, len(w))
		for i := range s {
			s[i] = float32(rng.Uint32()>>8) / (1 << 24) // 24 random bits: exact in float32
		}
		return s, nil
	}
	return nil, fmt.Errorf("prune: unknown method %d", opts.Method)
}

func abs(w []float32) []float32 {
	s := make([]float32, len(w))
	for i, x := range w {
		s[i] = float32(math.Abs(float64(x)))
	}
	return s
}

// principal is |U_r·diag(S_r)·V_rᵀ|, from the full or the randomized SVD.
func principal(rows, cols int, w []float32, opts ScoreOptions) ([]float32, error) {
	r := EffectiveRank(rows, cols, opts.Rank)
	mn := min(rows, cols)
	if r == mn {
		return abs(w), nil // the rank-min(m,n) approximation is W
	}
	var u, s, vt []float64
	var err error
	if opts.SVD == SVDFull {
		w64 := make([]float64, len(w))
		for i, x := range w {
			w64[i] = float64(x)
		}
		u, s, vt, err = linalg.SVD(rows, cols, w64)
	} else {
		iters := opts.PowerIters
		if iters <= 0 {
			iters = DefaultPowerIters
		}
		u, s, vt, err = linalg.RandomizedSVD(rows, cols, w, r, min(2*r, mn), iters, opts.Seed)
	}
	if err != nil {
		return nil, fmt.Errorf("prune: principal score: %w", err)
	}
	k := len(s) // columns of u, rows of vt
	us := make([]float32, rows*r)
	for i := range rows {
		for j := range r {
			us[i*r+j] = float32(u[i*k+j] * s[j])
		}
	}
	v := make([]float32, r*cols)
	for i, x := range vt[:r*cols] {
		v[i] = float32(x)
	}
	approx := make([]float32, rows*cols)
	kernels.Sgemm(false, false, rows, cols, r, 1, us, r, v, cols, 0, approx, cols)
	for i, x := range approx {
		approx[i] = float32(math.Abs(float64(x)))
	}
	return approx, nil
}
