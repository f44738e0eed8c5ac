package adapter

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/lathe-ml/lathe/internal/parallel"
)

// legoMaxIters bounds Lloyd's iterations; k-means on a few hundred units converges in far fewer.
const legoMaxIters = 100

// CombineLEGO writes to dir a PEFT adapter merging the adapters rank-wise, after LoRA-LEGO (Zhao et al., ICLR 2025;
// spectral-prune-merge.md §5.4): in every module, each rank of each adapter is a minimal semantic unit, the rank-one
// update b·aᵀ (a a row of A, b the matching column of B times the adapter's scale); the units of all adapters are
// clustered by k-means into k clusters, and each cluster becomes one rank of the result (at most k per module).
//
// Choices, since the paper's exact formulas were not verified:
//   - Feature vector: the unit with its scale balanced, [a·c; b/c] with c = √(‖b‖/‖a‖), so that both halves have
//     norm √(‖a‖‖b‖) (the factors' split of the scale between A and B does not matter), and its sign fixed so that
//     the largest-magnitude entry of the a half is positive (b·aᵀ = (−b)·(−a)ᵀ are the same unit).
//   - Clustering: Lloyd's k-means (squared Euclidean distance) from k-means++ seeds drawn from a PCG seeded with
//     (seed, module index); ties go to the lower index, so equal inputs give byte-identical outputs.
//   - Parameter reweighting: a cluster's unit is its centroid (ā, b̄) scaled so that the Frobenius norm of b̄·āᵀ
//     equals the sum of its members' ‖b‖‖a‖ — averaging shrinks the centroid, and for m parallel units the sum is
//     exactly m·b̄·āᵀ, which this restores. A cluster of one unit is that unit unchanged.
//   - Output reweighting (the paper's correction of the merged output's variance) is not applied: it needs
//     activations, and an adapter file holds only weights.
//
// Clusters are written in the order of their first unit (adapter order, then rank), so with k at least the total
// number of units every cluster is a single unit and the result is the "cat" combination (Combine with
// CombineLinear, weights 1), factor for factor. Inputs are PEFT or MLX adapters; DoRA is refused.
func CombineLEGO(dir string, adapters []*Adapter, k int, seed uint64) error {
	if k < 1 {
		return &CombineError{Err: fmt.Errorf("lego: k = %d: want at least one unit per module", k)}
	}
	if len(adapters) == 0 {
		return &CombineError{Err: errors.New("lego: no adapter")}
	}
	inputs := make([]string, len(adapters))
	ones := make([]float64, len(adapters))
	for i, a := range adapters {
		inputs[i], ones[i] = a.Path, 1
	}
	terms, err := groupModules(adapters, ones, false)
	if err != nil {
		return err
	}
	byName := map[string][]*Module{}
	for name, ts := range terms {
		for _, t := range ts {
			byName[name] = append(byName[name], t.m)
		}
	}
	names := slices.Sorted(maps.Keys(byName))
	mods := make([]factored, len(names))
	err = parallel.ForEach(len(names), parallel.Workers(0), nil, func(_, i int) error {
		f, err := legoModule(byName[names[i]], k, seed, uint64(i))
		if err != nil {
			return &CombineError{Module: names[i], Err: err}
		}
		aName, bName := peftNames(byName[names[i]][0])
		mods[i] = factored{names[i], aName, bName, f}
		return nil
	})
	if err != nil {
		return err
	}
	return writeLoRA(dir, adapters[0], inputs, mods, nil, nil)
}

// legoUnit is one rank of one adapter: a (in) and b (out) as the "cat" combination stores them (b carries the
// scale), and its balanced, sign-fixed feature [a·c; b/c].
type legoUnit struct {
	a, b    []float32
	feature []float64
	mass    float64 // ‖a‖·‖b‖ = ‖b·aᵀ‖_F
}

func legoModule(mods []*Module, k int, seed, stream uint64) (loraFactors, error) {
	in, out := int(mods[0].A.Shape[1]), int(mods[0].B.Shape[0])
	var units []legoUnit
	for _, m := range mods {
		fa, err := floats(m.A)
		if err != nil {
			return loraFactors{}, err
		}
		fb, err := floats(m.B)
		if err != nil {
			return loraFactors{}, err
		}
		for r := range m.Rank {
			u := legoUnit{a: fa[r*in : (r+1)*in], b: make([]float32, out)}
			for i := range out {
				u.b[i] = float32(m.Scale * float64(fb[i*m.Rank+r]))
			}
			u.feature, u.mass = legoFeature(u.a, u.b)
			units = append(units, u)
		}
	}
	k = min(k, len(units))
	features := make([][]float64, len(units))
	for i, u := range units {
		features[i] = u.feature
	}
	assign := kmeans(features, k, rand.New(rand.NewPCG(seed, stream)))
	members := make([][]int, k)
	for i, c := range assign {
		members[c] = append(members[c], i)
	}
	// Clusters in the order of their first unit; members are in unit order already.
	slices.SortFunc(members, func(x, y []int) int {
		switch {
		case len(x) == 0 || len(y) == 0:
			return len(y) - len(x)
		}
		return x[0] - y[0]
	})
	f := loraFactors{in: in, out: out}
	for _, mem := range members {
		if len(mem) == 0 {
			continue
		}
		if len(mem) == 1 {
			u := units[mem[0]]
			f.a = append(f.a, u.a...)
			f.b = append(f.b, u.b...)
			f.rank++
			continue
		}
		c := centroid(features, assign, assign[mem[0]])
		mass := 0.0
		for _, i := range mem {
			mass += units[i].mass
		}
		na, nb := norm(c[:in]), norm(c[in:])
		if na == 0 || nb == 0 {
			continue // the members cancel: no update
		}
		g := math.Sqrt(mass / (na * nb))
		for _, v := range c[:in] {
			f.a = append(f.a, float32(g*v))
		}
		for _, v := range c[in:] {
			f.b = append(f.b, float32(g*v))
		}
		f.rank++
	}
	if f.rank == 0 {
		return f, errors.New("every cluster of units cancels out")
	}
	// f.b holds one column per rank, contiguous; B is [out, rank] row-major.
	f.b = transpose32(f.rank, out, f.b)
	return f, nil
}

// legoFeature returns the balanced, sign-fixed feature of the unit b·aᵀ and its Frobenius norm ‖a‖‖b‖.
func legoFeature(a, b []float32) ([]float64, float64) {
	f := make([]float64, len(a)+len(b))
	na, nb := norm32(a), norm32(b)
	if na == 0 || nb == 0 {
		return f, 0
	}
	c := math.Sqrt(nb / na)
	big := 0
	for i, v := range a {
		if math.Abs(float64(v)) > math.Abs(float64(a[big])) {
			big = i
		}
	}
	if a[big] < 0 {
		c = -c
	}
	for i, v := range a {
		f[i] = float64(v) * c
	}
	for i, v := range b {
		f[len(a)+i] = float64(v) / c
	}
	return f, na * nb
}

// kmeans clusters points into k clusters (k ≤ len(points)) by Lloyd's algorithm from k-means++ seeds (Arthur and
// Vassilvitskii 2007) and returns each point's cluster. When every remaining point coincides with
// a seed, the next seed is the first point not chosen yet, so k = len(points) distinct points give one point per
// cluster.
func kmeans(points [][]float64, k int, rng *rand.Rand) []int {
	n := len(points)
	chosen := make([]bool, n)
	first := rng.IntN(n)
	centroids := [][]float64{slices.Clone(points[first])}
	chosen[first] = true
	d2 := make([]float64, n)
	for i := range d2 {
		d2[i] = dist2(points[i], centroids[0])
	}
	for len(centroids) < k {
		total := 0.0
		for _, d := range d2 {
			total += d
		}
		next := -1
		if total > 0 {
			x := rng.Float64() * total
			for i, d := range d2 {
				if x -= d; x < 0 && d > 0 {
					next = i
					break
				}
			}
			if next < 0 { // rounding left x ≥ 0 at the end: the last point with weight
				for i := n - 1; i >= 0 && next < 0; i-- {
					if d2[i] > 0 {
						next = i
					}
				}
			}
		} else {
			next = slices.Index(chosen, false)
		}
		chosen[next] = true
		c := slices.Clone(points[next])
		centroids = append(centroids, c)
		for i := range d2 {
			d2[i] = min(d2[i], dist2(points[i], c))
		}
	}
	assign := make([]int, n)
	for iter := range legoMaxIters {
		changed := false
		for i, p := range points {
			best, bestD := 0, math.Inf(1)
			for c, ctr := range centroids {
				if d := dist2(p, ctr); d < bestD {
					best, bestD = c, d
				}
			}
			if iter == 0 || assign[i] != best {
				assign[i], changed = best, true
			}
		}
		if !changed {
			break
		}
		for c := range centroids {
			if mean := centroid(points, assign, c); mean != nil {
				centroids[c] = mean
			} // an emptied cluster keeps its centre and may win points back
		}
	}
	return assign
}

// centroid returns the mean of the points assigned to cluster c, nil if there are none.
func centroid(points [][]float64, assign []int, c int) []float64 {
	var mean []float64
	count := 0
	for i, p := range points {
		if assign[i] != c {
			continue
		}
		if mean == nil {
			mean = make([]float64, len(p))
		}
		for j, v := range p {
			mean[j] += v
		}
		count++
	}
	for j := range mean {
		mean[j] /= float64(count)
	}
	return mean
}

func dist2(x, y []float64) float64 {
	s := 0.0
	for i, v := range x {
		d := v - y[i]
		s += d * d
	}
	return s
}

func norm(x []float64) float64 { return math.Sqrt(dist2(x, make([]float64, len(x)))) }

func norm32(x []float32) float64 {
	s := 0.0
	for _, v := range x {
		s += float64(v) * float64(v)
	}
	return math.Sqrt(s)
}

// transpose32 returns the cols×rows transpose of the rows×cols matrix x.
func transpose32(rows, cols int, x []float32) []float32 {
	t := make([]float32, len(x))
	for i := range rows {
		for j := range cols {
			t[j*rows+i] = x[i*cols+j]
		}
	}
	return t
}
