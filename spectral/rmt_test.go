package spectral

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// gaussian returns an rows×cols matrix of standard normal entries from PCG(seed, 7), drawn row by row: the
// generator of the simulated oracles in ../shared/reference/spectral-prune-merge.md §8.3, whose printed figures
// these matrices reproduce.
func gaussian(rows, cols int, seed uint64) *Matrix {
	r := rand.New(rand.NewPCG(seed, 7))
	m := NewMatrix(rows, cols)
	for i := range m.Data {
		m.Data[i] = r.NormFloat64()
	}
	return m
}

// symmetricPareto returns entries ±(1−U)^(−1/μ), U uniform then the sign, from PCG(seed, 7): heavy-tailed with tail
// index μ (§8.3).
func symmetricPareto(rows, cols int, mu float64, seed uint64) *Matrix {
	r := rand.New(rand.NewPCG(seed, 7))
	m := NewMatrix(rows, cols)
	for i := range m.Data {
		v := math.Pow(1-r.Float64(), -1/mu)
		if r.Float64() < 0.5 {
			v = -v
		}
		m.Data[i] = v
	}
	return m
}

// like formats x with as many decimals as the printed figure want has.
func like(x float64, want string) string {
	d := 0
	if i := strings.IndexByte(want, '.'); i >= 0 {
		d = len(want) - i - 1
	}
	return fmt.Sprintf("%.*f", d, x)
}

// TestGaussianLayers: random Gaussian layers sit at the Marchenko–Pastur edges, have the stable rank RMT predicts,
// and get α > 6 ("under-trained"), as WeightWatcher predicts for random layers. Figures are the simulated oracles of
// §8.3 to their printed precision, plus the suggested tolerance assertions.
func TestGaussianLayers(t *testing.T) {
	cases := []struct {
		rows, cols int
		seed       uint64
		edgeRatio  string // λmax / σ²(√N+√M)²
		lmin       string
		stableRank string
		alpha      string
	}{
		{1000, 500, 1, "0.9781", "88.8", "175.0", "7.74"},
		{1000, 500, 2, "0.9907", "86.1", "172.9", "7.23"},
		{1000, 500, 3, "0.9976", "85.4", "171.8", "11.09"},
		{500, 500, 1, "0.975", "", "127.7", "15.1"},
	}
	for _, c := range cases {
		name := fmt.Sprintf("%dx%d/seed%d", c.rows, c.cols, c.seed)
		m, err := AnalyzeMatrix(gaussian(c.rows, c.cols, c.seed), Options{MPFit: true})
		if err != nil {
			t.Fatal(err)
		}
		n, k := float64(c.rows), float64(c.cols)
		edge := math.Pow(math.Sqrt(n)+math.Sqrt(k), 2)
		ratio := m.LambdaMax / edge
		wantSR := n * k / edge
		if got := like(ratio, c.edgeRatio); got != c.edgeRatio {
			t.Errorf("%s: λmax/edge = %s, want %s", name, got, c.edgeRatio)
		}
		if c.lmin != "" {
			if got := like(m.SVMin*m.SVMin, c.lmin); got != c.lmin {
				t.Errorf("%s: λmin = %s, want %s", name, got, c.lmin)
			}
			// Lower MP edge σ²(√N−√M)² = 85.79 for 1000×500.
			if lo := math.Pow(math.Sqrt(n)-math.Sqrt(k), 2); math.Abs(m.SVMin*m.SVMin/lo-1) > 0.05 {
				t.Errorf("%s: λmin %.1f not within 5%% of the lower MP edge %.2f", name, m.SVMin*m.SVMin, lo)
			}
		}
		if got := like(m.StableRank, c.stableRank); got != c.stableRank {
			t.Errorf("%s: stable rank = %s, want %s", name, got, c.stableRank)
		}
		if got := like(m.PowerLaw.Alpha, c.alpha); got != c.alpha {
			t.Errorf("%s: α = %s, want %s", name, got, c.alpha)
		}
		if ratio < 0.95 || ratio > 1.02 {
			t.Errorf("%s: λmax/edge = %.4f outside [0.95, 1.02]", name, ratio)
		}
		if c.rows != c.cols && math.Abs(m.StableRank/wantSR-1) >= 0.05 {
			t.Errorf("%s: stable rank %.1f not within 5%% of %.2f", name, m.StableRank, wantSR)
		}
		if m.PowerLaw.Alpha <= 6 || m.PowerLaw.Warning != WarnUnderTrained {
			t.Errorf("%s: α = %.2f (%q), want > 6, under-trained", name, m.PowerLaw.Alpha, m.PowerLaw.Warning)
		}
		// WeightWatcher's MP fit on a Gaussian layer: σ_mp ≈ 1 ± 0.02, no spikes, mp_softrank ≈ 1 (tolerance oracle).
		if mp := m.MP; mp.Status != StatusSuccess || math.Abs(mp.SigmaMP-1) > 0.02 || mp.NumSpikes != 0 ||
			math.Abs(mp.MPSoftRank-1) > 0.05 {
			t.Errorf("%s: MP fit %+v, want σ_mp 1±0.02, 0 spikes, softrank ≈ 1", name, *mp)
		}
		// The fitted bulk edge, back in units of λ, is the analytic edge σ²(√N+√M)² within the fit's tolerance.
		if math.Abs(m.MP.BulkMax/edge-1) > 0.05 {
			t.Errorf("%s: bulk_max %.1f, analytic edge %.1f", name, m.MP.BulkMax, edge)
		}
	}
}

// TestHeavyTailedLayers: entries with a heavy tail of index μ < 2 give ESD exponents near 1 + μ/2, and α grows
// with μ (§8.3). μ = 1 reproduces the simulated α = 1.393 and stable rank 1.69; for the larger μ, whose fits are
// noisy at this size, the assertions are the reference's bounds and monotonicity.
func TestHeavyTailedLayers(t *testing.T) {
	cases := []struct {
		mu     float64
		lo, hi float64
	}{{1, 1.2, 1.7}, {1.5, 1.5, 2.1}, {2.5, 2.1, math.Inf(1)}, {3.5, 2.1, math.Inf(1)}}
	prev := 0.0
	for _, c := range cases {
		m, err := AnalyzeMatrix(symmetricPareto(1000, 500, c.mu, 1), Options{})
		if err != nil {
			t.Fatal(err)
		}
		a := m.PowerLaw.Alpha
		if a < c.lo || a > c.hi || a <= prev {
			t.Errorf("μ = %g: α = %.3f, want in [%g, %g] and above %.3f", c.mu, a, c.lo, c.hi, prev)
		}
		if c.mu == 1 {
			if like(a, "1.393") != "1.393" || like(m.StableRank, "1.69") != "1.69" {
				t.Errorf("μ = 1: α %.4f, stable rank %.3f; want 1.393, 1.69", a, m.StableRank)
			}
			if m.PowerLaw.Warning != WarnOverTrained {
				t.Errorf("μ = 1: warning %q, want over-trained", m.PowerLaw.Warning)
			}
		}
		prev = a
	}
}

// TestRandomizedESD: shuffling a Gaussian layer changes nothing (no correlation traps, small distance), shuffling a
// layer with a strong planted rank-one signal destroys the signal (spikes before, none after), and a single huge
// element survives the shuffle as a correlation trap.
func TestRandomizedESD(t *testing.T) {
	opts := Options{MPFit: true, Randomize: true, Seed: 42}
	plain, err := AnalyzeMatrix(gaussian(400, 200, 5), opts)
	if err != nil {
		t.Fatal(err)
	}
	if r := plain.Random; r.CorrTraps != 0 || r.Replicas != 1 || math.Abs(r.WWSoftRank-1) > 0.1 || r.Distance > 0.5 {
		t.Errorf("Gaussian layer: randomized ESD %+v, want no traps, softrank ≈ 1", *r)
	}

	signal := gaussian(400, 200, 6)
	for i := range 400 {
		for j := range 200 {
			signal.Data[i*200+j] += 3 * math.Sin(float64(i)) * math.Cos(float64(j))
		}
	}
	s, err := AnalyzeMatrix(signal, opts)
	if err != nil {
		t.Fatal(err)
	}
	if s.MP.NumSpikes < 1 || s.Random.CorrTraps != 0 || s.Random.WWSoftRank > 0.5 {
		t.Errorf("planted rank-one signal: %d spikes, %d traps, ww_softrank %.3f; want ≥ 1 spike, 0 traps, small softrank",
			s.MP.NumSpikes, s.Random.CorrTraps, s.Random.WWSoftRank)
	}

	trap := gaussian(400, 200, 7)
	trap.Data[12345] = 400
	tr, err := AnalyzeMatrix(trap, opts)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Random.CorrTraps < 1 {
		t.Errorf("huge element: %d correlation traps, want ≥ 1", tr.Random.CorrTraps)
	}

	small, err := AnalyzeMatrix(gaussian(80, 40, 8), opts)
	if err != nil {
		t.Fatal(err)
	}
	if small.Random.Replicas != 5 {
		t.Errorf("40 eigenvalues: %d replicas pooled, want 5", small.Random.Replicas)
	}
	again, _ := AnalyzeMatrix(gaussian(80, 40, 8), opts)
	if *again.Random != *small.Random {
		t.Errorf("same seed, different randomized ESD: %+v vs %+v", *again.Random, *small.Random)
	}
}

// TestJSDistance checks both distance forms on hand-computable inputs.
func TestJSDistance(t *testing.T) {
	// Disjoint supports: JS divergence ln 2.
	if got := jsDistanceHistograms([]float64{1, 1}, []float64{1000, 1000}); relErr(got, math.Sqrt(math.Ln2)) > 1e-12 {
		t.Errorf("disjoint ESDs: distance %v, want √ln2", got)
	}
	if got := jsDistanceHistograms([]float64{1, 10, 100}, []float64{1, 10, 100}); got != 0 {
		t.Errorf("identical ESDs: distance %v", got)
	}
	// WeightWatcher's form on vectors: p = (1,3), q = (3,1): m = (2,2); KL(p̂‖m̂) = ¼ln½ + ¾ln(3/2).
	kl := 0.25*math.Log(0.5) + 0.75*math.Log(1.5)
	if got := jsDistanceVectors([]float64{1, 3}, []float64{3, 1}); relErr(got, math.Sqrt(kl)) > 1e-12 {
		t.Errorf("vector JS distance %v, want %v", got, math.Sqrt(kl))
	}
}
