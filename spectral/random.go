package spectral

import (
	"math"
	"math/rand/v2"
	"slices"
)

// RandomESD compares a layer's ESD with that of the same matrix with its elements shuffled, which destroys every
// correlation but keeps the element distribution (WeightWatcher apply_random_esd and the random MP fit; §1.5).
// Spikes that survive the shuffle (NumSpikes of the random MP fit) are WeightWatcher's "correlation traps": a few
// elements so large that they dominate the spectrum by themselves.
type RandomESD struct {
	Replicas    int     `json:"replicas"` // shuffles pooled: 5 when the layer has fewer than 100 eigenvalues
	MaxEval     float64 `json:"max_rand_eval"`
	Distance    float64 `json:"rand_distance"` // Jensen–Shannon distance between the ESD and the randomized ESD
	WWSoftRank  float64 `json:"ww_softrank"`   // max random λ / max λ
	WWMaxDist   float64 `json:"ww_maxdist"`    // max λ − max random λ
	CorrTraps   int     `json:"rand_num_spikes"`
	SigmaMP     float64 `json:"rand_sigma_mp"`
	MPSoftRank  float64 `json:"rand_mp_softrank"`
	BulkMax     float64 `json:"rand_bulk_max"`
	BulkMin     float64 `json:"rand_bulk_min"`
	WScale      float64 `json:"rand_W_scale"`
	MPFitStatus string  `json:"rand_mp_status"`
}

// Randomized shuffles w's elements (Fisher–Yates with a PCG seeded by opts.Seed), computes the singular values of
// each shuffle and fits MP to the pooled eigenvalues. sv are w's own singular values. WeightWatcher draws one
// more shuffle for the distance; lathe uses the first replica, which has the same distribution and saves an SVD.
func Randomized(w *Matrix, sv []float64, opts Options) (*RandomESD, error) {
	replicas := 1
	if min(w.Rows, w.Cols) < 100 {
		replicas = 5
	}
	rng := rand.New(rand.NewPCG(opts.Seed, 0x5eed))
	shuffled := w.Clone()
	var pooled, first []float64
	for r := range replicas {
		rng.Shuffle(len(shuffled.Data), func(i, j int) {
			shuffled.Data[i], shuffled.Data[j] = shuffled.Data[j], shuffled.Data[i]
		})
		rsv, err := SingularValues(shuffled)
		if err != nil {
			return nil, err
		}
		for _, s := range rsv {
			pooled = append(pooled, s*s)
		}
		if r == 0 {
			first = pooled[:len(rsv):len(rsv)]
		}
	}
	slices.Sort(pooled)
	evals := make([]float64, len(sv))
	for i, s := range sv {
		evals[i] = s * s
	}
	slices.Sort(evals)
	first = slices.Clone(first)
	slices.Sort(first)

	maxEval, maxRand := evals[len(evals)-1], pooled[len(pooled)-1]
	firstMax := first[len(first)-1]
	res := &RandomESD{Replicas: replicas, MaxEval: maxRand, WWSoftRank: firstMax / maxEval, WWMaxDist: maxEval - firstMax}
	if opts.WWCompat {
		res.Distance = jsDistanceVectors(evals, first)
	} else {
		res.Distance = jsDistanceHistograms(evals, first)
	}
	fit := FitMP(pooled, max(w.Rows, w.Cols), min(w.Rows, w.Cols))
	res.CorrTraps, res.SigmaMP, res.MPSoftRank = fit.NumSpikes, fit.SigmaMP, fit.MPSoftRank
	res.BulkMax, res.BulkMin, res.WScale, res.MPFitStatus = fit.BulkMax, fit.BulkMin, fit.WScale, fit.Status
	return res, nil
}

// jsDistanceVectors is WeightWatcher's jensen_shannon_distance applied as it is (RMT_Util, scipy.stats.entropy):
// the two ascending eigenvalue vectors are compared position by position as if they were probability vectors,
// with m = (p+q)/2 formed before scipy normalizes p, q and m separately. Kept for --ww-compat; it measures how the
// sorted magnitudes differ, not how the densities do.
func jsDistanceVectors(p, q []float64) float64 {
	n := min(len(p), len(q))
	m := make([]float64, n)
	for i := range m {
		m[i] = (p[i] + q[i]) / 2
	}
	return math.Sqrt(max((klDivergence(p[:n], m)+klDivergence(q[:n], m))/2, 0))
}

// jsHistogramBins is the resolution of the histogram form of the distance: as many bins as WeightWatcher's ESD
// plots use.
const jsHistogramBins = 100

// jsDistanceHistograms is the Jensen–Shannon distance (natural log, so in [0, √ln2]) between the two ESDs as
// densities: histograms of log10 λ over the nonzero eigenvalues of both, on one set of equal-width bins.
func jsDistanceHistograms(a, b []float64) float64 {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range slices.Concat(a, b) {
		if v > 0 {
			lv := math.Log10(v)
			lo, hi = min(lo, lv), max(hi, lv)
		}
	}
	if lo > hi {
		return 0
	}
	width := (hi - lo) / jsHistogramBins
	hist := func(x []float64) []float64 {
		h := make([]float64, jsHistogramBins)
		for _, v := range x {
			if v <= 0 {
				continue
			}
			i := jsHistogramBins - 1
			if width > 0 {
				i = min(int((math.Log10(v)-lo)/width), jsHistogramBins-1)
			}
			h[i]++
		}
		return h
	}
	return jsDistance(hist(a), hist(b))
}

// jsDistance is √(½KL(p‖m) + ½KL(q‖m)) with m the mean of the normalized p and q.
func jsDistance(p, q []float64) float64 {
	sp, sq := sum(p), sum(q)
	if sp <= 0 || sq <= 0 {
		return 0
	}
	m := make([]float64, len(p))
	for i := range m {
		m[i] = (p[i]/sp + q[i]/sq) / 2
	}
	return math.Sqrt(max((klDivergence(p, m)+klDivergence(q, m))/2, 0))
}

// klDivergence is scipy.stats.entropy(p, m): Σ p ln(p/m) after normalizing p and m to sum 1.
func klDivergence(p, m []float64) float64 {
	sp, sm := sum(p), sum(m)
	if sp <= 0 || sm <= 0 {
		return 0
	}
	d := 0.0
	for i := range p {
		if pi := p[i] / sp; pi > 0 {
			d += pi * math.Log(pi/(m[i]/sm))
		}
	}
	return d
}

func sum(x []float64) float64 {
	s := 0.0
	for _, v := range x {
		s += v
	}
	return s
}
