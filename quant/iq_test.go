package quant

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/tensor"
)

// TestLatticeMatchesGGML compares the encoders' search tables with the ones ggml builds. The reference figures were
// taken from ggml-org/ggml d99724f2 (the commit of the goldens) by calling iq2xs_init_impl / iq3xs_init_impl and
// walking kmap_q2xs / kmap_q3xs and kneighbors_* over every key an encoder can form: for the 8-coordinate codebooks
// the keys whose 2-bit levels are all at most 2, for the 4-coordinate ones all 4096 keys. The hash is FNV-1a (64-bit,
// one step per value) over each key's point index (0x10000 for a key off the codebook) followed, off the codebook,
// by the neighbour count and the neighbour indices in ggml's order.
func TestLatticeMatchesGGML(t *testing.T) {
	for _, c := range []struct {
		name           string
		lt             func() *lattice
		offGrid, total int
		hash           uint64
	}{
		{"IQ2_XXS", iq2xxsLattice, 6305, 113157, 0x998af213e7728200},
		{"IQ2_XS", iq2xsLattice, 6049, 181721, 0xcfb14f68dd0bd650},
		{"IQ2_S", iq2sLattice, 5537, 44716, 0x72f25d20eb0db0f7},
		{"IQ1_S/IQ1_M", iq1sLattice, 4513, 327721, 0x89c787352d2ec4c0},
		{"IQ3_XXS", iq3xxsLattice, 3840, 18985, 0x13ee26e8f0d8931b},
		{"IQ3_S", iq3sLattice, 3584, 24733, 0x44336a9ffa596200},
	} {
		lt := c.lt()
		maxLevel := 1<<lt.bits - 1
		if lt.dim == 8 {
			maxLevel = 2
		}
		h := uint64(14695981039346656037)
		step := func(v int) { h = (h ^ uint64(uint32(v))) * 1099511628211 }
		offGrid, total := 0, 0
		for key := range lt.index {
			if !lt.levelsWithin(key, maxLevel) {
				continue
			}
			p := lt.index[key]
			if p >= 0 {
				step(int(p))
				continue
			}
			step(0x10000)
			nb := lt.neighboursOf(p)
			offGrid++
			total += len(nb)
			step(len(nb))
			for _, q := range nb {
				step(int(q))
			}
		}
		if offGrid != c.offGrid || total != c.total || h != c.hash {
			t.Errorf("%s: %d keys off the codebook, %d neighbour entries, hash %016x; ggml has %d, %d, %016x",
				c.name, offGrid, total, h, c.offGrid, c.total, c.hash)
		}
	}
}

// TestKsignsEvenParity checks the reproduced ksigns_iq2xs table against its definition: the 7 stored sign bits,
// completed by an 8th so that every group has an even number of negatives.
func TestKsignsEvenParity(t *testing.T) {
	for i, s := range ksignsIQ2XS {
		if int(s&127) != i || bits.OnesCount8(s)%2 != 0 {
			t.Errorf("ksigns_iq2xs[%d] = %d", i, s)
		}
	}
}

var iqTypes = []tensor.DType{tensor.IQ2_XXS, tensor.IQ2_XS, tensor.IQ2_S, tensor.IQ3_XXS, tensor.IQ3_S, tensor.IQ1_S,
	tensor.IQ1_M}

// TestIQNonFinite feeds rows ggml itself would abort on (NaN, infinities, values whose squares overflow, negative
// and zero importance): encoding must neither panic nor depend on the run, and the blocks must decode.
func TestIQNonFinite(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const nPerRow = 512
	specials := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 3e38, -3e38, 1e-40, 0}
	src := make([]float32, 4*nPerRow)
	for i := range src {
		src[i] = float32(r.NormFloat64())
		if r.IntN(8) == 0 {
			src[i] = specials[r.IntN(len(specials))]
		}
	}
	clear(src[nPerRow : 2*nPerRow]) // one all-zero row
	importance := make([]float32, nPerRow)
	for i := range importance {
		importance[i] = float32(r.NormFloat64())
		if r.IntN(8) == 0 {
			importance[i] = specials[r.IntN(len(specials))]
		}
	}
	for _, typ := range iqTypes {
		for _, imp := range [][]float32{nil, importance} {
			if imp == nil && RequiresImatrix(typ) {
				continue
			}
			n, _ := typ.Bytes(int64(len(src)))
			a, b := make([]byte, n), make([]byte, n)
			if err := Encode(typ, a, src, nPerRow, imp); err != nil {
				t.Fatalf("%s: %v", typ, err)
			}
			if err := Encode(typ, b, src, nPerRow, imp); err != nil {
				t.Fatalf("%s: %v", typ, err)
			}
			if string(a) != string(b) {
				t.Errorf("%s (imatrix %v): two encodings of the same rows differ", typ, imp != nil)
			}
			if err := Decode(typ, make([]float32, len(src)), a); err != nil {
				t.Errorf("%s: %v", typ, err)
			}
		}
	}
}
