package spectral

import (
	"math"
	"runtime"
	"slices"
	"sync"
)

// Thresholds of WeightWatcher (constants.py): eigenvalues at or below EvalThreshold are dropped before the power-law
// fit (EVALS_THRESH), and a fitted α outside [OverTrained, UnderTrained] earns a warning.
const (
	EvalThreshold = 1e-5
	OverTrained   = 2.0
	UnderTrained  = 6.0
)

// Fit statuses and warnings, spelled as WeightWatcher's details columns.
const (
	StatusSuccess = "success"
	StatusFailed  = "failed"

	WarnOverTrained  = "over-trained"
	WarnUnderTrained = "under-trained"
)

// PowerLaw is the power-law fit p(λ) ∝ λ^(−α), λ ≥ xmin, of an empirical spectral density.
type PowerLaw struct {
	Alpha     float64 `json:"alpha"`
	XMin      float64 `json:"xmin"`
	XMax      float64 `json:"xmax"`
	D         float64 `json:"D"`     // one-sided Kolmogorov–Smirnov distance at the chosen xmin
	Sigma     float64 `json:"sigma"` // (α−1)/√n_tail, the standard error of the Hill estimator
	NumSpikes int     `json:"num_pl_spikes"`
	Status    string  `json:"status"`
	Warning   string  `json:"warning"`
}

// FitPowerLaw fits a power law to eigenvalues (any order, any sign) exactly as WeightWatcher's default fitter
// (WW_powerlaw.py WWFit, ../shared/reference/spectral-prune-merge.md §1.2): over the values above EvalThreshold,
// sorted ascending, every value but the largest is tried as xmin; α comes from the continuous maximum-likelihood
// (Hill) estimator on the values ≥ xmin, and the xmin with the smallest one-sided KS distance
// D = max_k |1 − (x_k/xmin)^(1−α) − k/n| wins (the first on ties). A fit needs two values above the threshold;
// otherwise Status is "failed" and α, xmin, D, σ and NumSpikes are −1, as in WeightWatcher.
func FitPowerLaw(evals []float64) PowerLaw {
	fail := PowerLaw{Alpha: -1, XMin: -1, XMax: -1, D: -1, Sigma: -1, NumSpikes: -1, Status: StatusFailed}
	x := make([]float64, 0, len(evals))
	xmax := math.Inf(-1)
	for _, v := range evals {
		xmax = max(xmax, v)
		if v > EvalThreshold {
			x = append(x, v)
		}
	}
	if len(x) < 2 {
		return fail
	}
	slices.Sort(x)
	n := len(x)
	logx := make([]float64, n)
	for i, v := range x {
		logx[i] = math.Log(v)
	}
	// suffix[i] = Σ_{k≥i} ln x_k, summed from the top as numpy's np.sum(log_data[i:]) is not; the difference is a
	// few ulps, far below any tolerance that makes sense for α.
	suffix := make([]float64, n+1)
	for i := n - 1; i >= 0; i-- {
		suffix[i] = suffix[i+1] + logx[i]
	}
	alphas := make([]float64, n-1)
	ds := make([]float64, n-1)
	scan := func(i int) {
		ni := float64(n - i)
		a := 1 + ni/(suffix[i]-ni*logx[i])
		alphas[i] = a
		ds[i] = 1
		if !(a > 1) {
			return
		}
		// (x_k/x_i)^(1−α) as exp((1−α)(ln x_k − ln x_i)): the O(n²) scan's cost is this power.
		d := 0.0
		for k := 0; k < n-i; k++ {
			d = max(d, math.Abs(1-math.Exp((1-a)*(logx[i+k]-logx[i]))-float64(k)/ni))
		}
		ds[i] = d
	}
	parallelFor(n-1, scan)
	best := 0
	for i, d := range ds {
		if d < ds[best] {
			best = i
		}
	}
	a := alphas[best]
	if math.IsNaN(a) || math.IsInf(a, 0) {
		return fail
	}
	fit := PowerLaw{Alpha: a, XMin: x[best], XMax: xmax, D: ds[best], Sigma: (a - 1) / math.Sqrt(float64(n-best)),
		Status: StatusSuccess, Warning: Warning(a)}
	for _, v := range evals {
		if v >= fit.XMin {
			fit.NumSpikes++
		}
	}
	return fit
}

// Warning labels a fitted α as WeightWatcher does: "over-trained" below 2, "under-trained" above 6, else "".
func Warning(alpha float64) string {
	switch {
	case alpha < OverTrained:
		return WarnOverTrained
	case alpha > UnderTrained:
		return WarnUnderTrained
	}
	return ""
}

// parallelFor runs f(0..n-1) on all processors in interleaved stripes, which balances the power-law scan whose
// cost falls with i. Each index is computed by exactly one goroutine, so results do not depend on scheduling.
func parallelFor(n int, f func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), max(1, n/256))
	if workers <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				f(i)
			}
		})
	}
	wg.Wait()
}
