package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

// bestIndexScan is best_index_mxfp4 as ggml writes it: a scan of all 16 codes, strictly nearer replaces.
func bestIndexScan(x, e float32) uint8 {
	best, bestErr := uint8(0), abs32(float32(float32(kvaluesFP4[0])*e)-x)
	for i := 1; i < 16; i++ {
		if err := abs32(float32(float32(kvaluesFP4[i])*e) - x); err < bestErr {
			best, bestErr = uint8(i), err
		}
	}
	return best
}

// TestFP4BestIndexMatchesScan checks the eight-candidate, branch-free search (and its AVX2 form) against the
// 16-code scan for every MXFP4 and NVFP4 scale, on values at, between and around the code values, far beyond
// them, and special.
func TestFP4BestIndexMatchesScan(t *testing.T) {
	var scales []float32
	for e := range 255 {
		scales = append(scales, e8m0Half(uint8(e)))
	}
	scales = append(scales, ue4m3Half[:]...)
	r := rand.New(rand.NewPCG(1, 1))
	x := make([]float32, 0, 64)
	for _, e := range scales {
		g := newFP4Grid(e)
		x = x[:0]
		for len(x) < 64 {
			k := float32(kvaluesFP4[r.IntN(16)])
			switch r.IntN(6) {
			case 0: // a code value or a midpoint
				x = append(x, (k+float32(r.IntN(2))/2)*e)
			case 1: // one ulp around a midpoint
				m := (k + 0.5) * e
				x = append(x, math.Nextafter32(m, float32(math.Inf(1-2*r.IntN(2)))))
			case 2: // far beyond the grid
				x = append(x, float32(r.NormFloat64())*e*float32(math.Pow(2, float64(r.IntN(60)))))
			case 3:
				x = append(x, []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)),
					float32(math.Copysign(0, -1)), 0, math.SmallestNonzeroFloat32}[r.IntN(6)])
			default:
				x = append(x, float32(r.NormFloat64())*8*e)
			}
		}
		var idx [64]uint8
		fp4Indices(idx[:], x, &g)
		for i, v := range x {
			want := bestIndexScan(v, e)
			if got := g.bestIndex(v); got != want || idx[i] != want {
				t.Fatalf("scale %g, x %g (%#08x): bestIndex %d, fp4Indices %d, scan %d", e, v, math.Float32bits(v),
					got, idx[i], want)
			}
		}
	}
}
