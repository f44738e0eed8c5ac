package spectral

import (
	"math"
	"slices"
)

// MPFit is the Marchenko–Pastur fit of an ESD (WeightWatcher mp_fit; §1.4). SigmaMP and the spike count are in the
// rescaled units where the mean eigenvalue is 1; BulkMin and BulkMax are back in units of λ.
type MPFit struct {
	SigmaMP    float64 `json:"sigma_mp"`
	BulkMin    float64 `json:"bulk_min"`
	BulkMax    float64 `json:"bulk_max"`
	NumSpikes  int     `json:"num_spikes"`  // eigenvalues above the bulk edge plus the Tracy–Widom margin
	MPSoftRank float64 `json:"mp_softrank"` // bulk edge / λmax, both rescaled
	WScale     float64 `json:"W_scale"`     // √n/‖W‖_F, the rescaling applied before the fit
	Status     string  `json:"status"`
}

// Parameters of WeightWatcher's fit (RMT_Util resid_mp, fit_density_with_range): KDE bandwidth, density floor,
// the σ grid relative to the σ that puts the bulk edge at λmax, and the penalty for an edge outside the data.
const (
	mpBandwidth  = 0.1
	mpDensityMin = 0.01
	mpKDEPoints  = 1000
	mpGridFrom   = 0.05
	mpGridTo     = 2.0
	mpGridStep   = 0.01
	mpPenalty    = 1000.0
)

// FitMP fits the Marchenko–Pastur density to eigenvalues λ of an N×M matrix (N ≥ M), as WeightWatcher does:
// rescale λ to mean 1; estimate the empirical density with a linear-kernel KDE (bandwidth 0.1) on 1000 points of
// [0, λmax+0.5], dropping points of density below 0.01; choose σ on the grid [0.05, 2)·s₀ (step 0.01·s₀, s₀ the σ
// whose bulk edge is λmax) that minimizes the squared residual against the MP density, then polish it with a
// Nelder–Mead simplex as scipy.optimize.brute's default finish does. A square matrix (Q = 1) is fitted with the
// quarter-circle law on √λ. Spikes are the λ above bulk_max + √TW, TW = Q^(−1/2)·bulk_max^(2/3)·M^(−2/3). The fit
// is a heuristic: compare its numbers with tolerances, not digits.
func FitMP(evals []float64, n, m int) MPFit {
	fail := MPFit{SigmaMP: -1, BulkMin: -1, BulkMax: -1, NumSpikes: -1, MPSoftRank: -1, WScale: -1, Status: StatusFailed}
	if len(evals) < 2 || m < 1 || n < m {
		return fail
	}
	sum := 0.0
	for _, l := range evals {
		sum += l
	}
	if !(sum > 0) || math.IsInf(sum, 0) {
		return fail
	}
	q := float64(n) / float64(m)
	wscale := math.Sqrt(float64(len(evals))) / math.Sqrt(sum)
	x := make([]float64, len(evals))
	for i, l := range evals {
		x[i] = wscale * wscale * l
	}
	lmax := slices.Max(x)
	s0 := math.Sqrt(lmax / math.Pow(1+1/math.Sqrt(q), 2)) // RMT_Util calc_sigma
	toFit := x
	if q == 1 {
		toFit = make([]float64, len(x))
		for i, v := range x {
			toFit[i] = math.Sqrt(v)
		}
	}
	res := newMPResidual(toFit, q)
	best, bestR := 0.0, math.Inf(1)
	// scipy.optimize.brute evaluates np.mgrid[slice(a, b, step)]: a + i·step while below b.
	steps := int(math.Ceil((mpGridTo - mpGridFrom) / mpGridStep))
	for i := range steps {
		s := mpGridFrom*s0 + float64(i)*mpGridStep*s0
		if r := res.eval(s); r < bestR {
			best, bestR = s, r
		}
	}
	sigma, _ := nelderMead1D(res.eval, best)

	bulkMax := math.Pow(sigma*(1+1/math.Sqrt(q)), 2)
	bulkMin := math.Pow(sigma*(1-1/math.Sqrt(q)), 2)
	tw := 1 / math.Sqrt(q) * math.Pow(bulkMax, 2.0/3) * math.Pow(float64(m), -2.0/3)
	edge := bulkMax + math.Sqrt(tw)
	spikes := 0
	for _, v := range x {
		if v > edge {
			spikes++
		}
	}
	return MPFit{SigmaMP: sigma, BulkMin: bulkMin / (wscale * wscale), BulkMax: bulkMax / (wscale * wscale),
		NumSpikes: spikes, MPSoftRank: bulkMax / lmax, WScale: wscale, Status: StatusSuccess}
}

// mpResidual holds the KDE of the data, which does not depend on σ, so that each trial σ costs one pass over the
// KDE points.
type mpResidual struct {
	q       float64
	x, y    []float64 // KDE points kept (density above the floor) and their densities
	dropped int       // KDE points below the floor, counted as zero residuals as in resid_mp
	peakX   float64   // the x of the KDE's maximum
	maxX    float64   // the largest kept x
}

func newMPResidual(data []float64, q float64) *mpResidual {
	top := slices.Max(data) + 0.5
	r := &mpResidual{q: q}
	sorted := slices.Clone(data)
	slices.Sort(sorted)
	peak := math.Inf(-1)
	for i := range mpKDEPoints {
		x := top * float64(i) / (mpKDEPoints - 1) // np.linspace(0, max+0.5, 1000)
		y := linearKDE(sorted, x, mpBandwidth)
		switch {
		case y > mpDensityMin:
			r.x, r.y = append(r.x, x), append(r.y, y)
			if y > peak {
				peak, r.peakX = y, x
			}
			r.maxX = x
		case y < mpDensityMin:
			r.dropped++
		}
	}
	return r
}

// linearKDE is scikit-learn's KernelDensity(kernel="linear") in one dimension: the mean of (1 − |x−xᵢ|/h)/h over
// the points within h of x. sorted must be ascending.
func linearKDE(sorted []float64, x, h float64) float64 {
	lo, _ := slices.BinarySearch(sorted, x-h)
	s := 0.0
	for _, v := range sorted[lo:] {
		d := math.Abs(x - v)
		if v > x+h {
			break
		}
		if d < h {
			s += 1 - d/h
		}
	}
	return s / (h * float64(len(sorted)))
}

// eval is resid_mp with allresid=False: the sum of squared differences between the model density and the KDE.
func (r *mpResidual) eval(sigma float64) float64 {
	if len(r.x) == 0 {
		return math.Inf(1)
	}
	sum := 0.0
	if r.q == 1 {
		for i, x := range r.x {
			sum += sq(quarterCircle(x, sigma) - r.y[i])
		}
		return sum
	}
	a := math.Pow(sigma*(1-math.Sqrt(1/r.q)), 2)
	b := math.Pow(sigma*(1+math.Sqrt(1/r.q)), 2)
	// WeightWatcher issue #60: a bulk edge left of the density peak or beyond the data, or a lower edge right of
	// the peak, is no fit.
	if b < r.peakX || b > r.maxX || a > r.peakX {
		return float64(len(r.x)) * mpPenalty * mpPenalty
	}
	for i, x := range r.x {
		sum += sq(marchenkoPastur(x, r.q, sigma, a, b) - r.y[i])
	}
	return sum
}

func sq(x float64) float64 { return x * x }

// marchenkoPastur is RMT_Util marchenko_pastur_fun: the MP density for aspect ratio Q and variance σ², zero outside
// the bulk [a, b] (numpy's nan_to_num of the square root of a negative number).
func marchenkoPastur(x, q, sigma, a, b float64) float64 {
	if x <= a || x >= b || x <= 0 {
		return 0
	}
	return math.Sqrt((b-x)*(x-a)) / (2 * math.Pi * sigma * sigma * x / q)
}

// quarterCircle is RMT_Util quarter_circle_fun, the density of singular values of a square random matrix; like
// the original, σ scales only the height.
func quarterCircle(x, sigma float64) float64 {
	if x >= 2 {
		return 0
	}
	return math.Sqrt(4-x*x) / (math.Pi * sigma * sigma)
}

// nelderMead1D minimizes f from x0 with scipy.optimize.fmin's rules in one dimension (reflection 1, expansion 2,
// contraction ½, shrink ½; initial step 5 % of x0; stop when both the simplex and its values are within 1e-4, or
// after 200 evaluations or iterations), which scipy.optimize.brute applies to its best grid point.
func nelderMead1D(f func(float64) float64, x0 float64) (float64, float64) {
	const (
		tol     = 1e-4
		maxIter = 200
	)
	x1 := x0 * 1.05
	if x0 == 0 {
		x1 = 0.00025
	}
	sim := [2]float64{x0, x1}
	fs := [2]float64{f(x0), f(x1)}
	calls := 2
	order := func() {
		if fs[1] < fs[0] {
			sim[0], sim[1] = sim[1], sim[0]
			fs[0], fs[1] = fs[1], fs[0]
		}
	}
	order()
	for iter := 0; iter < maxIter && calls < maxIter; iter++ {
		if math.Abs(sim[1]-sim[0]) <= tol && math.Abs(fs[0]-fs[1]) <= tol {
			break
		}
		xbar := sim[0]
		xr := 2*xbar - sim[1]
		fr := f(xr)
		calls++
		shrink := false
		switch {
		case fr < fs[0]:
			xe := 3*xbar - 2*sim[1]
			fe := f(xe)
			calls++
			if fe < fr {
				sim[1], fs[1] = xe, fe
			} else {
				sim[1], fs[1] = xr, fr
			}
		case fr < fs[1]: // outside contraction
			xc := 1.5*xbar - 0.5*sim[1]
			fc := f(xc)
			calls++
			if fc <= fr {
				sim[1], fs[1] = xc, fc
			} else {
				shrink = true
			}
		default: // inside contraction
			xcc := 0.5*xbar + 0.5*sim[1]
			fcc := f(xcc)
			calls++
			if fcc < fs[1] {
				sim[1], fs[1] = xcc, fcc
			} else {
				shrink = true
			}
		}
		if shrink {
			sim[1] = sim[0] + 0.5*(sim[1]-sim[0])
			fs[1] = f(sim[1])
			calls++
		}
		order()
	}
	return sim[0], fs[0]
}
