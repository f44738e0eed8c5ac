package spectral

import (
	"math"
	"slices"
	"testing"
)

func relErr(got, want float64) float64 {
	if want == 0 {
		return math.Abs(got)
	}
	return math.Abs(got-want) / math.Abs(want)
}

// paretoQuantiles returns x_k = (1 − (k−0.5)/n)^(−1/(a−1)), k = 1..n: a deterministic sample of a power law with
// pdf ∝ x^(−a), xmin = 1 (§8.1 case 3).
func paretoQuantiles(a float64, n int) []float64 {
	x := make([]float64, n)
	for k := 1; k <= n; k++ {
		x[k-1] = math.Pow(1-(float64(k)-0.5)/float64(n), -1/(a-1))
	}
	return x
}

// TestFitPowerLawOracles checks the WWFit port against ../shared/reference/spectral-prune-merge.md §8.1.
func TestFitPowerLawOracles(t *testing.T) {
	one2ten := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	cases := []struct {
		name                  string
		evals                 []float64
		alpha, xmin, d, sigma float64
		tol                   float64
		spikes                int
	}{
		{"1..10", one2ten, 4.681550358521012, 6, 0.25323780014523245, 1.6464393728483409, 1e-12, 5},
		{"1..10 with zeros", append([]float64{0, 0, 1e-6, 1e-5}, one2ten...), 4.681550358521012, 6, 0.25323780014523245, 1.6464393728483409, 1e-12, 5},
		{"fibonacci", []float64{0.5, 1, 1.5, 2, 3, 5, 8, 13, 21, 34, 55, 89}, 1.4677287188691681, 1, 0.16736133613308052, 0.1410255149238777, 1e-12, 11},
		{"pareto a=2", paretoQuantiles(2, 1000), 2.000847, 1.000500, 0.000673, 0.031650, 5e-6 / 0.000673, 1000},
		{"pareto a=3", paretoQuantiles(3, 1000), 3.001695, 1.000250, 0.000673, 0.063299, 5e-6 / 0.000673, 1000},
		{"pareto a=4", paretoQuantiles(4, 500), 4.005089, 1.000334, 0.001345, 0.134392, 5e-6 / 0.001345, 500},
	}
	for _, c := range cases {
		f := FitPowerLaw(c.evals)
		if f.Status != StatusSuccess {
			t.Errorf("%s: status %q", c.name, f.Status)
			continue
		}
		// The Pareto oracles are printed to 6 decimals: compare to half a unit of the last place.
		tol := c.tol
		for _, q := range []struct {
			what      string
			got, want float64
		}{{"alpha", f.Alpha, c.alpha}, {"xmin", f.XMin, c.xmin}, {"D", f.D, c.d}, {"sigma", f.Sigma, c.sigma}} {
			if tol < 1e-9 {
				if relErr(q.got, q.want) > tol {
					t.Errorf("%s: %s = %.17g, want %.17g", c.name, q.what, q.got, q.want)
				}
			} else if math.Abs(q.got-q.want) > 5e-7 {
				t.Errorf("%s: %s = %.7f, want %.6f", c.name, q.what, q.got, q.want)
			}
		}
		if f.NumSpikes != c.spikes {
			t.Errorf("%s: num_pl_spikes = %d, want %d", c.name, f.NumSpikes, c.spikes)
		}
		if f.XMax != slices.Max(c.evals) {
			t.Errorf("%s: xmax = %g", c.name, f.XMax)
		}
	}
}

func TestFitPowerLawFails(t *testing.T) {
	for _, evals := range [][]float64{nil, {3}, {0, 1e-6, 2}, {2, 2, 2}} {
		f := FitPowerLaw(evals)
		if f.Status != StatusFailed || f.Alpha != -1 || f.XMin != -1 || f.D != -1 || f.Sigma != -1 || f.NumSpikes != -1 {
			t.Errorf("FitPowerLaw(%v) = %+v, want a failed fit with −1 values", evals, f)
		}
	}
}

func TestWarning(t *testing.T) {
	for _, c := range []struct {
		alpha float64
		want  string
	}{{1.9, WarnOverTrained}, {6.1, WarnUnderTrained}, {2, ""}, {6, ""}, {4, ""}} {
		if got := Warning(c.alpha); got != c.want {
			t.Errorf("Warning(%g) = %q, want %q", c.alpha, got, c.want)
		}
	}
}
