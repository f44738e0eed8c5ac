package adapter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
)

// Task vectors are the dense differences τ = θ_fine-tuned − θ_base (or a LoRA's ΔW) that TIES, DARE, magnitude
// pruning and Model Breadcrumbs sparsify and then sum with per-task weights. HF PEFT (utils/merge_utils.py) and
// mergekit (sparsify.py, merge_methods/generalized_task_arithmetic.py) implement the same names with different
// arithmetic (../shared/reference/spectral-prune-merge.md §5.2.1, §5.3); TaskSparsifier and TaskCombiner hold the
// choices, LookupTaskMethod fills them in for a method name under either semantics.

// Semantics names whose definition of a merge method is followed.
type Semantics uint8

const (
	// SemanticsPEFT: HF PEFT's merge_utils — DARE rescales by 1/density, TIES elects signs on the unweighted
	// (pruned) task vectors and divides by the number of agreeing tasks.
	SemanticsPEFT Semantics = iota
	// SemanticsMergekit: mergekit's generalized task arithmetic — DARE rescales to the L1 norm before masking, TIES
	// elects signs on the weighted task vectors and (with normalize) divides by the sum of the agreeing weights.
	SemanticsMergekit
)

func (s Semantics) String() string {
	if s == SemanticsMergekit {
		return "mergekit"
	}
	return "peft"
}

// ParseSemantics reads "peft" or "mergekit".
func ParseSemantics(name string) (Semantics, error) {
	switch name {
	case "peft":
		return SemanticsPEFT, nil
	case "mergekit":
		return SemanticsMergekit, nil
	}
	return 0, fmt.Errorf("semantics %q: want peft or mergekit", name)
}

// SparsifyMethod chooses which entries of a task vector survive.
type SparsifyMethod uint8

const (
	SparsifyNone SparsifyMethod = iota
	// SparsifyMagnitude keeps the int(density·n) entries of largest |τ| (PEFT magnitude_based_pruning, mergekit
	// magnitude). Among equal magnitudes the lower index comes first, so the mask is deterministic.
	SparsifyMagnitude
	// SparsifyRandom keeps each entry with probability density (DARE; PEFT random_pruning, mergekit bernoulli).
	SparsifyRandom
	// SparsifyBreadcrumbs drops the int(gamma·n) largest and then enough of the smallest to keep int(density·n)
	// (mergekit magnitude_outliers). mergekit keeps nothing when int(gamma·n) = 0 (the indices[n_bot:-0] slice is
	// empty, §5.3 and §8.7 of the notes); here no large entry is dropped then.
	SparsifyBreadcrumbs
)

// Rescale chooses how a sparsified task vector is scaled back.
type Rescale uint8

const (
	RescaleNone Rescale = iota
	// RescaleDensity divides the kept entries by density (PEFT random_pruning with rescale=True).
	RescaleDensity
	// RescaleL1 multiplies the kept entries by ‖τ‖₁/‖masked τ‖₁, unless either norm is below 1e-7 (mergekit
	// rescaled_masked_tensor with RescaleNorm.l1). The norms are summed in float64.
	RescaleL1
)

// TaskSparsifier sparsifies one task vector in place.
type TaskSparsifier struct {
	Method  SparsifyMethod
	Rescale Rescale
	Gamma   float64 // SparsifyBreadcrumbs: the fraction of largest entries dropped (mergekit's default 0.01)
}

// ErrDensity is returned for a density outside (0, 1].
var ErrDensity = errors.New("density must be a fraction in (0, 1]")

// Apply sparsifies tv in place keeping a fraction density of it (SparsifyNone ignores density); density 1 leaves it
// unchanged, without rescaling, as both PEFT and mergekit return the tensor as is. rng drives SparsifyRandom (one
// Float64 per entry, in index order, keeping the entry when it is below density) and may be nil for the other
// methods; TaskRand gives the documented stream.
func (s TaskSparsifier) Apply(tv []float32, density float64, rng *rand.Rand) error {
	if s.Method == SparsifyNone {
		return nil
	}
	if !(density > 0 && density <= 1) {
		return fmt.Errorf("density %g: %w", density, ErrDensity)
	}
	if density == 1 || len(tv) == 0 {
		return nil
	}
	var l1 float64
	if s.Rescale == RescaleL1 {
		l1 = sumAbs(tv)
	}
	n := len(tv)
	switch s.Method {
	case SparsifyMagnitude:
		keepRanks(tv, 0, int(density*float64(n)))
	case SparsifyBreadcrumbs:
		if !(s.Gamma >= 0 && s.Gamma < 1) {
			return fmt.Errorf("breadcrumbs gamma %g: want a fraction in [0, 1)", s.Gamma)
		}
		keep, top := int(density*float64(n)), int(s.Gamma*float64(n))
		top = min(top, n-keep) // mergekit: a negative n_bot shrinks n_top
		keepRanks(tv, top, top+keep)
	case SparsifyRandom:
		if rng == nil {
			return errors.New("random sparsification needs a random source")
		}
		for i := range tv {
			if rng.Float64() >= density {
				tv[i] = 0
			}
		}
	default:
		return fmt.Errorf("sparsification method %d unknown", s.Method)
	}
	switch s.Rescale {
	case RescaleDensity:
		f := float32(1 / density)
		for i := range tv {
			tv[i] *= f
		}
	case RescaleL1:
		const eps = 1e-7
		if after := sumAbs(tv); l1 >= eps && after >= eps {
			scaleBy(tv, l1/after)
		}
	}
	return nil
}

func sumAbs(x []float32) float64 {
	s := 0.0
	for _, v := range x {
		s += math.Abs(float64(v))
	}
	return s
}

func scaleBy(x []float32, f float64) {
	for i, v := range x {
		x[i] = float32(float64(v) * f)
	}
}

// keepRanks zeroes every entry of tv except those of rank lo … hi−1 in the order "larger |x| first, lower index
// first among equal |x|" (a NaN ranks above +Inf, as in torch.topk).
func keepRanks(tv []float32, lo, hi int) {
	tLo, nLo := rankKey(tv, lo)
	tHi, nHi := rankKey(tv, hi)
	for i, v := range tv {
		k := magKey(v)
		// Ranks below hi: keys above tHi and the first nHi entries equal to it; likewise for lo.
		inHi := k > tHi || k == tHi && nHi > 0
		if k == tHi && nHi > 0 {
			nHi--
		}
		inLo := k > tLo || k == tLo && nLo > 0
		if k == tLo && nLo > 0 {
			nLo--
		}
		if !inHi || inLo {
			tv[i] = 0
		}
	}
}

// magKey maps |x| to an integer with the same order: the bits of a non-negative float32 sort as the value does.
func magKey(x float32) uint32 { return math.Float32bits(x) &^ (1 << 31) }

// rankKey finds the k-th largest magnitude key of tv (1-based) by radix selection over its 31 bits in three
// passes — O(n) with a 2048-bucket histogram, no sort, no copy — and how many entries equal to it fall within the
// first k. For k = 0 it returns a key above every magnitude and 0.
func rankKey(tv []float32, k int) (key uint32, take int) {
	if k <= 0 {
		return 1 << 31, 0
	}
	var prefix, prefixMask uint32
	rem := k
	var hist [2048]int
	for _, shift := range [...]uint{22, 11, 0} {
		clear(hist[:])
		for _, v := range tv {
			if key := magKey(v); key&prefixMask == prefix {
				hist[(key>>shift)&0x7FF]++
			}
		}
		b := len(hist) - 1
		for ; hist[b] < rem; b-- {
			rem -= hist[b]
		}
		prefix |= uint32(b) << shift
		prefixMask |= 0x7FF << shift
	}
	return prefix, rem
}

// Consensus chooses how TIES elects the sign of each entry.
type Consensus uint8

const (
	ConsensusNone Consensus = iota
	// ConsensusSum: the sign of the sum of the entries (PEFT "total", mergekit "sum"); zero counts as +.
	ConsensusSum
	// ConsensusCount: the sign of the sum of their signs (PEFT "frequency", mergekit "count"); zero counts as +.
	ConsensusCount
)

// ParseConsensus reads PEFT's majority_sign_method or mergekit's consensus_method name.
func ParseConsensus(name string) (Consensus, error) {
	switch name {
	case "total", "sum":
		return ConsensusSum, nil
	case "frequency", "count":
		return ConsensusCount, nil
	}
	return 0, fmt.Errorf("sign consensus %q: want total/sum or frequency/count", name)
}

// TaskCombiner sums weighted task vectors, with TIES sign consensus when Consensus is set.
type TaskCombiner struct {
	Semantics Semantics
	Consensus Consensus
	// Normalize (mergekit only) divides by the sum of the weights — of the tasks that agree with the elected sign
	// when there is a consensus; a zero divisor (|Σw| < 1e-8 without consensus) counts as 1. PEFT never divides
	// without a consensus and always divides by the number of agreeing tasks (at least 1) with one.
	Normalize bool
	Lambda    float64 // mergekit's lambda, multiplying the result (1 leaves it as it is)
}

// Combine writes into dst the merge of the task vectors tvs (all of len(dst)) with one weight each. Every entry is
// computed in float64 over the tasks in order, independently of the others, so the result does not depend on how
// a caller splits the work.
//
// With a consensus, an entry contributes only where its sign equals the elected one (a zero entry never does). PEFT
// elects on the unweighted τᵢ and returns Σ wᵢτᵢ·maskᵢ / max(Σ maskᵢ, 1); mergekit elects on wᵢτᵢ and returns
// Σ wᵢτᵢ·maskᵢ, divided by Σ wᵢ·maskᵢ with Normalize.
func (c TaskCombiner) Combine(dst []float32, tvs [][]float32, weights []float64) error {
	if len(tvs) == 0 || len(tvs) != len(weights) {
		return fmt.Errorf("combining %d task vectors with %d weights: want one weight per task vector, at least one", len(tvs), len(weights))
	}
	for i, tv := range tvs {
		if len(tv) != len(dst) {
			return fmt.Errorf("task vector %d has %d entries, want %d", i, len(tv), len(dst))
		}
	}
	weighted := c.Semantics == SemanticsMergekit
	for j := range dst {
		elected := 1.0
		if c.Consensus != ConsensusNone {
			s := 0.0
			for i, tv := range tvs {
				v := float64(tv[j])
				if weighted {
					v *= weights[i]
				}
				if c.Consensus == ConsensusCount {
					v = sign(v)
				}
				s += v
			}
			if s < 0 {
				elected = -1
			}
		}
		sum, div, count := 0.0, 0.0, 0
		for i, tv := range tvs {
			wv := weights[i] * float64(tv[j])
			if c.Consensus != ConsensusNone {
				v := float64(tv[j])
				if weighted {
					v = wv
				}
				if sign(v) != elected {
					continue
				}
			}
			sum += wv
			div += weights[i]
			count++
		}
		switch {
		case c.Consensus != ConsensusNone && !weighted:
			sum /= float64(max(count, 1))
		case c.Normalize && weighted && c.Consensus != ConsensusNone:
			if div != 0 {
				sum /= div
			}
		case c.Normalize && weighted:
			if div = sumOf(weights); math.Abs(div) >= 1e-8 {
				sum /= div
			}
		}
		dst[j] = float32(sum * c.Lambda)
	}
	return nil
}

func sign(v float64) float64 {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}

func sumOf(x []float64) float64 {
	s := 0.0
	for _, v := range x {
		s += v
	}
	return s
}

// TaskMethod is a named task-vector merge: how each task vector is sparsified and how they are combined.
type TaskMethod struct {
	Name       string
	Sparsifier TaskSparsifier
	Combiner   TaskCombiner
}

// LookupTaskMethod returns the defaults of a method under the given semantics: task_arithmetic (alias linear),
// ties, dare_linear, dare_ties, magnitude_prune; with mergekit also breadcrumbs and breadcrumbs_ties
// (gamma 0.01). mergekit's normalize and rescale defaults are those of its registry (ties normalizes, the DARE
// methods rescale by L1 and do not normalize); PEFT's "magnitude_prune" is mergekit's magnitude sparsification with
// no consensus. Sign consensus is "total"/"sum"; set Combiner.Consensus to change it.
func LookupTaskMethod(name string, sem Semantics) (TaskMethod, error) {
	m := TaskMethod{Name: name, Combiner: TaskCombiner{Semantics: sem, Lambda: 1}}
	dareRescale := RescaleDensity
	if sem == SemanticsMergekit {
		dareRescale = RescaleL1
	}
	switch name {
	case "task_arithmetic", "linear":
	case "magnitude_prune":
		m.Sparsifier.Method = SparsifyMagnitude
	case "ties":
		m.Sparsifier.Method = SparsifyMagnitude
		m.Combiner.Consensus, m.Combiner.Normalize = ConsensusSum, sem == SemanticsMergekit
	case "dare_linear":
		m.Sparsifier = TaskSparsifier{Method: SparsifyRandom, Rescale: dareRescale}
	case "dare_ties":
		m.Sparsifier = TaskSparsifier{Method: SparsifyRandom, Rescale: dareRescale}
		m.Combiner.Consensus = ConsensusSum
	case "breadcrumbs", "breadcrumbs_ties":
		if sem != SemanticsMergekit {
			return TaskMethod{}, fmt.Errorf("method %s: PEFT has no breadcrumbs; use mergekit semantics", name)
		}
		m.Sparsifier = TaskSparsifier{Method: SparsifyBreadcrumbs, Gamma: 0.01}
		if name == "breadcrumbs_ties" {
			m.Combiner.Consensus = ConsensusSum
		}
	default:
		return TaskMethod{}, fmt.Errorf("task-vector method %q unknown: want task_arithmetic, ties, dare_linear, dare_ties, magnitude_prune, breadcrumbs or breadcrumbs_ties", name)
	}
	return m, nil
}

// Merge sparsifies each task vector in place (task i with densities[i] and the stream TaskRand(seed, tensor, i))
// and combines them into dst with weights.
func (m TaskMethod) Merge(dst []float32, tvs [][]float32, weights, densities []float64, seed uint64, tensor string) error {
	if len(densities) != len(tvs) {
		return fmt.Errorf("%s: %d densities for %d task vectors", m.Name, len(densities), len(tvs))
	}
	for i, tv := range tvs {
		var rng *rand.Rand
		if m.Sparsifier.Method == SparsifyRandom {
			rng = TaskRand(seed, tensor, i)
		}
		if err := m.Sparsifier.Apply(tv, densities[i], rng); err != nil {
			return fmt.Errorf("%s: task vector %d: %w", m.Name, i, err)
		}
	}
	return m.Combiner.Combine(dst, tvs, weights)
}

// TaskRand is the random source of the mask of task vector `task` of tensor (or module) `tensor`: PCG
// (math/rand/v2) with seed `seed` and stream FNV-1a-64 over the name's bytes followed by the task index as 8
// little-endian bytes. Every (tensor, task) pair has its own stream, so masks do not depend on the order or the
// number of goroutines that compute them.
func TaskRand(seed uint64, tensor string, task int) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(tensor))
	h.Write(binary.LittleEndian.AppendUint64(nil, uint64(task)))
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}
