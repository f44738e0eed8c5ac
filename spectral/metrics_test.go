package spectral

import (
	"math"
	"testing"
)

// TestNormMetricsOracles checks the scale metrics against ../shared/reference/spectral-prune-merge.md §8.2, with α
// given (the oracle fixes α rather than fitting it).
func TestNormMetricsOracles(t *testing.T) {
	type want struct {
		name      string
		got, want float64
	}
	cases := []struct {
		sv         []float64
		rows, cols int
		alpha      float64
		rank       int
		checks     func(m *Metrics) []want
	}{
		{[]float64{3, 2, 1}, 3, 3, 2, 3, func(m *Metrics) []want {
			return []want{{"norm", m.Norm, 14}, {"log_norm", m.LogNorm, 1.146128035678238}, {"spectral_norm", m.SpectralNorm, 9},
				{"log_spectral_norm", m.LogSpectralNorm, 0.9542425094393249}, {"stable_rank", m.StableRank, 1.5555555555555556},
				{"entropy", m.Entropy, 0.7559279293619338}, {"alpha_weighted", m.AlphaWeighted, 1.9084850188786497},
				{"log_alpha_norm", m.LogAlphaNorm, 1.9912260756924949}}
		}},
		{[]float64{1, 1, 1, 1}, 4, 4, 2, 4, func(m *Metrics) []want {
			return []want{{"stable_rank", m.StableRank, 4}, {"log_spectral_norm", m.LogSpectralNorm, 0},
				{"entropy", m.Entropy, 1.0000000000934273}}
		}},
		{[]float64{10, 1, 0.1}, 5, 3, 3, 3, func(m *Metrics) []want {
			return []want{{"norm", m.Norm, 101.01}, {"log_norm", m.LogNorm, 2.004364371107751}, {"stable_rank", m.StableRank, 1.0101},
				{"entropy", m.Entropy, 0.05147620553705516}, {"alpha_weighted", m.AlphaWeighted, 6.0},
				{"log_alpha_norm", m.LogAlphaNorm, 6.000000434294699}}
		}},
	}
	for _, c := range cases {
		m, err := Analyze(c.sv, c.rows, c.cols, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if m.MatrixRank != c.rank {
			t.Errorf("sv %v: matrix_rank = %d, want %d", c.sv, m.MatrixRank, c.rank)
		}
		evals := make([]float64, len(c.sv))
		for i, s := range c.sv {
			evals[len(c.sv)-1-i] = s * s
		}
		m.setNorms(evals, c.alpha)
		for _, w := range c.checks(m) {
			if relErr(w.got, w.want) > 1e-12 && math.Abs(w.got-w.want) > 1e-15 {
				t.Errorf("sv %v: %s = %.17g, want %.17g", c.sv, w.name, w.got, w.want)
			}
		}
	}
}

func TestAnalyzeBasics(t *testing.T) {
	m, err := Analyze([]float64{0, 2, 1e-4, 4}, 10, 4, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m.N != 10 || m.M != 4 || m.Q != 2.5 || m.NumEvals != 4 || m.SVMax != 4 || m.SVMin != 0 || m.LambdaMax != 16 {
		t.Errorf("shape/extremes wrong: %+v", m)
	}
	// λ = 0, 1e-8, 4, 16: two below the weak-rank tolerance 1e-6, one exactly zero.
	if m.WeakRank != 2 || m.MatrixRank != 3 || m.RankLoss != 1 {
		t.Errorf("weak_rank_loss %d, matrix_rank %d, rank_loss %d; want 2, 3, 1", m.WeakRank, m.MatrixRank, m.RankLoss)
	}
	// Effective rank of σ = (4, 2, 1e-4, 0): exp of the entropy of σ/Σσ.
	p := []float64{4 / 6.0001, 2 / 6.0001, 1e-4 / 6.0001}
	h := 0.0
	for _, x := range p {
		h -= x * math.Log(x)
	}
	if relErr(m.EffectiveRank, math.Exp(h)) > 1e-12 {
		t.Errorf("effective_rank = %g, want %g", m.EffectiveRank, math.Exp(h))
	}
	if e, _ := Analyze([]float64{1, 1, 1}, 3, 3, Options{}); relErr(e.EffectiveRank, 3) > 1e-12 {
		t.Errorf("effective rank of three equal singular values = %g, want 3", e.EffectiveRank)
	}
	if _, err := Analyze([]float64{0, 0}, 2, 2, Options{}); err != ErrZero {
		t.Errorf("zero spectrum: err = %v, want ErrZero", err)
	}
	if _, err := Analyze([]float64{1, math.NaN()}, 2, 2, Options{}); err == nil {
		t.Error("NaN singular value accepted")
	}
}

// TestLogAlphaNormNoOverflow: λ^α overflows float64 for a steep fit on a large layer; the log-sum-exp form does not.
func TestLogAlphaNormNoOverflow(t *testing.T) {
	got := logSumPow([]float64{1e10, 1e10}, 40) / math.Ln10
	if want := 400 + math.Log10(2); relErr(got, want) > 1e-14 {
		t.Errorf("log10(2·(1e10)^40) = %v, want %v", got, want)
	}
}

func TestSummarize(t *testing.T) {
	ok := &Metrics{LogNorm: 1, LogSpectralNorm: 2, StableRank: 3, AlphaWeighted: 8, LogAlphaNorm: 5,
		PowerLaw: PowerLaw{Alpha: 4, Status: StatusSuccess}}
	failed := &Metrics{LogNorm: 3, LogSpectralNorm: 4, StableRank: 5, AlphaWeighted: -4, LogAlphaNorm: 1,
		PowerLaw: PowerLaw{Alpha: -1, Status: StatusFailed}}
	s := Summarize([]*Metrics{ok, failed}, Options{})
	if s.Layers != 2 || s.Fitted != 1 || s.Alpha != 4 || s.AlphaWeighted != 8 || s.LogAlphaNorm != 5 || s.LogNorm != 2 ||
		s.LogSpectralNorm != 3 || s.StableRank != 4 {
		t.Errorf("Summarize = %+v", s)
	}
	s = Summarize([]*Metrics{ok, failed}, Options{WWCompat: true})
	if s.Alpha != 1.5 || s.AlphaWeighted != 2 || s.LogAlphaNorm != 3 {
		t.Errorf("Summarize (WW compat, failed fit averaged in) = %+v", s)
	}
}
