package spectral

// Summary is WeightWatcher's get_summary: plain means over the analyzed layers of the metrics that describe a whole
// model.
type Summary struct {
	Layers          int     `json:"layers"`
	Fitted          int     `json:"fitted"` // layers whose power-law fit succeeded
	LogNorm         float64 `json:"log_norm"`
	Alpha           float64 `json:"alpha"`
	AlphaWeighted   float64 `json:"alpha_weighted"`
	LogAlphaNorm    float64 `json:"log_alpha_norm"`
	LogSpectralNorm float64 `json:"log_spectral_norm"`
	StableRank      float64 `json:"stable_rank"`
	MPSoftRank      float64 `json:"mp_softrank,omitempty"` // over layers with an MP fit
}

// Summarize averages layer metrics. The α-based means (alpha, alpha_weighted, log_alpha_norm) cover only the layers
// whose fit succeeded, unless opts.WWCompat, which averages the failed fits' −1 in as WeightWatcher does (§1.9
// quirk 3). Means over no layers are 0.
func Summarize(layers []*Metrics, opts Options) Summary {
	var s Summary
	var nAlpha, nMP int
	for _, m := range layers {
		s.Layers++
		s.LogNorm += m.LogNorm
		s.LogSpectralNorm += m.LogSpectralNorm
		s.StableRank += m.StableRank
		ok := m.PowerLaw.Status == StatusSuccess
		if ok {
			s.Fitted++
		}
		if ok || opts.WWCompat {
			nAlpha++
			s.Alpha += m.PowerLaw.Alpha
			s.AlphaWeighted += m.AlphaWeighted
			s.LogAlphaNorm += m.LogAlphaNorm
		}
		if m.MP != nil && (m.MP.Status == StatusSuccess || opts.WWCompat) {
			nMP++
			s.MPSoftRank += m.MP.MPSoftRank
		}
	}
	mean := func(x *float64, n int) {
		if n > 0 {
			*x /= float64(n)
		}
	}
	mean(&s.LogNorm, s.Layers)
	mean(&s.LogSpectralNorm, s.Layers)
	mean(&s.StableRank, s.Layers)
	mean(&s.Alpha, nAlpha)
	mean(&s.AlphaWeighted, nAlpha)
	mean(&s.LogAlphaNorm, nAlpha)
	mean(&s.MPSoftRank, nMP)
	return s
}
