package quant

import (
	"math"
	"sync"
)

// lattice is an i-quant codebook seen the way ggml's encoders search it (iq2xs_init_impl, iq3xs_init_impl): each
// coordinate is a level l = 0, 1, 2, ... standing for the odd integer 2l+1, and a group of levels packs into a key with
// `bits` bits per coordinate. The encoders round each coordinate to a level, look the key up, and when the key is not
// a codebook point, search a precomputed list of its nearest codebook points instead.
type lattice struct {
	dim, bits int
	levels    []int8    // l per coordinate, dim per point, in codebook order
	fpoints   []float32 // 2l+1 per coordinate (ggml's kgrid_q2xs / kgrid_q3xs), for the distance loops
	// index maps a key to its point, or for a key off the codebook to -(offset+1): neighbours[offset] is the length
	// of its list and the point indices follow.
	index      []int32
	neighbours []uint16
}

// newLattice builds the search tables for a codebook of n points read by coord(point, coordinate) as levels.
// maxLevel is the largest level an encoder rounds to (it clamps to kMaxQ-1), so only keys made of levels 0..maxLevel
// need neighbour lists. nwant is ggml's count of distinct squared distances kept per list: a key's list holds every
// point whose squared distance is among the nwant smallest, ordered by distance then point index, as ggml's qsort
// with a total order leaves them.
func newLattice(n, dim, bits, maxLevel, nwant int, coord func(point, c int) int) *lattice {
	lt := &lattice{dim: dim, bits: bits, levels: make([]int8, n*dim), fpoints: make([]float32, n*dim)}
	for p := range n {
		for c := range dim {
			l := coord(p, c)
			lt.levels[p*dim+c] = int8(l)
			lt.fpoints[p*dim+c] = float32(2*l + 1)
		}
	}
	keys := 0
	for range dim {
		keys = keys<<bits | maxLevel
	}
	keys++
	lt.index = make([]int32, keys)
	for i := range lt.index {
		lt.index[i] = -1
	}
	for p := range n {
		lt.index[lt.key(lt.levelsOf(p))] = int32(p)
	}

	// Squared distances are taken between levels: those between the odd coordinates are 4 times larger, which
	// changes neither their order nor which are equal.
	pos := make([]int8, dim)
	d2 := make([]int, n)
	for key := range keys {
		if lt.index[key] >= 0 || !lt.levelsWithin(key, maxLevel) {
			continue
		}
		for c := range dim {
			pos[c] = int8(key >> (bits * c) & (1<<bits - 1))
		}
		maxD2 := 0
		for p := range n {
			s := 0
			for c, l := range lt.levelsOf(p) {
				diff := int(l) - int(pos[c])
				s += diff * diff
			}
			d2[p] = s
			maxD2 = max(maxD2, s)
		}
		// The nwant smallest distinct distances, found by repeatedly taking the least distance above the last.
		offset := len(lt.neighbours)
		lt.neighbours = append(lt.neighbours, 0)
		last := -1
		for range nwant {
			next := maxD2 + 1
			for _, s := range d2 {
				if s > last && s < next {
					next = s
				}
			}
			if next > maxD2 {
				break
			}
			for p, s := range d2 {
				if s == next {
					lt.neighbours = append(lt.neighbours, uint16(p))
				}
			}
			last = next
		}
		lt.neighbours[offset] = uint16(len(lt.neighbours) - offset - 1)
		lt.index[key] = -int32(offset) - 1
	}
	return lt
}

// levelsWithin reports whether every coordinate of key is at most maxLevel.
func (lt *lattice) levelsWithin(key, maxLevel int) bool {
	for c := range lt.dim {
		if key>>(lt.bits*c)&(1<<lt.bits-1) > maxLevel {
			return false
		}
	}
	return true
}

// key packs the levels of one group.
func (lt *lattice) key(L []int8) int {
	k := 0
	for c := range lt.dim {
		k |= int(L[c]) << (lt.bits * c)
	}
	return k
}

// pointOf returns the codebook index of levels L. Every caller's L is either all zeros, which is codebook entry 0 of
// every IQ2/IQ3 codebook, or was last written by snap, so the key is always on the codebook.
func (lt *lattice) pointOf(L []int8) int { return int(lt.index[lt.key(L)]) }

// levelsOf returns the levels of codebook entry p.
func (lt *lattice) levelsOf(p int) []int8 { return lt.levels[p*lt.dim : (p+1)*lt.dim] }

// neighboursOf returns the neighbour list of an off-codebook index entry.
func (lt *lattice) neighboursOf(entry int32) []uint16 {
	off := -int(entry) - 1
	return lt.neighbours[off+1 : off+1+int(lt.neighbours[off])]
}

// snap rounds one group of xval at inverse scale id to levels (clamped to 0..maxLevel), written to L. If those levels
// are not a codebook point, the neighbour of the rounded key with the least weighted squared error at scale replaces
// them (iq2_find_best_neighbour, iq3_find_best_neighbour). It returns the point index and whether rounding alone
// landed on the codebook.
func (lt *lattice) snap(xval, waux []float32, id, scale float32, maxLevel int, L []int8) (int, bool) {
	k := 0
	for c := range lt.dim {
		l := min(max(nearestInt(0.5*(float32(id*xval[c])-1)), 0), maxLevel)
		L[c] = int8(l)
		k |= l << (lt.bits * c)
	}
	if p := lt.index[k]; p >= 0 {
		return int(p), true
	}
	best := lt.nearest(lt.neighboursOf(lt.index[k]), xval, waux, scale)
	copy(L, lt.levelsOf(best))
	return best, false
}

// nearest returns the neighbour with the least Σ waux·(scale·q − x)² (iq2_find_best_neighbour,
// iq3_find_best_neighbour), the first on ties. If every distance is NaN or infinite ggml asserts; the first neighbour
// is returned instead so that non-finite input still yields a block.
func (lt *lattice) nearest(neighbours []uint16, xval, waux []float32, scale float32) int {
	best, bestD2 := int(neighbours[0]), float32(math.MaxFloat32)
	if lt.dim == 8 {
		x, w := (*[8]float32)(xval), (*[8]float32)(waux)
		for _, p := range neighbours {
			q := (*[8]float32)(lt.fpoints[8*int(p):])
			var d2 float32 // unrolled: the terms are summed in coordinate order, as ggml's loop does
			d2 += wsq(w[0], float32(scale*q[0])-x[0])
			d2 += wsq(w[1], float32(scale*q[1])-x[1])
			d2 += wsq(w[2], float32(scale*q[2])-x[2])
			d2 += wsq(w[3], float32(scale*q[3])-x[3])
			d2 += wsq(w[4], float32(scale*q[4])-x[4])
			d2 += wsq(w[5], float32(scale*q[5])-x[5])
			d2 += wsq(w[6], float32(scale*q[6])-x[6])
			d2 += wsq(w[7], float32(scale*q[7])-x[7])
			if d2 < bestD2 {
				best, bestD2 = int(p), d2
			}
		}
		return best
	}
	x, w := (*[4]float32)(xval), (*[4]float32)(waux)
	for _, p := range neighbours {
		q := (*[4]float32)(lt.fpoints[4*int(p):])
		var d2 float32
		d2 += wsq(w[0], float32(scale*q[0])-x[0])
		d2 += wsq(w[1], float32(scale*q[1])-x[1])
		d2 += wsq(w[2], float32(scale*q[2])-x[2])
		d2 += wsq(w[3], float32(scale*q[3])-x[3])
		if d2 < bestD2 {
			best, bestD2 = int(p), d2
		}
	}
	return best
}

// wsq is the weighted squared error w·d·d, rounded before it is summed.
func wsq(w, d float32) float32 { return float32(float32(w*d) * d) }

// The encoders' codebooks with ggml's nwant per type, built on first use so that decoding never pays for them.
var (
	iq2xxsLattice = sync.OnceValue(func() *lattice { return gridLattice8(iq2xxsGrid[:], iq2Level, 2) })
	iq2xsLattice  = sync.OnceValue(func() *lattice { return gridLattice8(iq2xsGrid[:], iq2Level, 2) })
	iq2sLattice   = sync.OnceValue(func() *lattice { return gridLattice8(iq2sGrid[:], iq2Level, 1) })
	iq1sLattice   = sync.OnceValue(func() *lattice { return gridLattice8(iq1sGrid[:], iq1Level, 3) })
	iq3xxsLattice = sync.OnceValue(func() *lattice { return gridLattice4(iq3xxsGrid[:], iq3xxsLevel, 2) })
	iq3sLattice   = sync.OnceValue(func() *lattice { return gridLattice4(iq3sGrid[:], iq3sLevel, 3) })
)

// The level of a codebook byte. The codebooks store scaled magnitudes; ggml's encoder tables (kgrid_2bit_*,
// kgrid_1bit_2048, kgrid_256, kgrid_512 in ggml-quants.c) list the same points as levels, the rank of each byte
// among the codebook's values.
func iq2Level(b uint8) int {
	switch b {
	case 0x08:
		return 0
	case 0x19:
		return 1
	}
	return 2 // 0x2b
}

func iq1Level(b uint8) int { return int(int8(b)) + 1 } // -1, 0, 1

func iq3xxsLevel(b uint8) int {
	if b == 0x3e {
		return 7
	}
	return int(b-4) / 8 // 4, 12, ..., 52
}

func iq3sLevel(b uint8) int { return int(b-1) / 2 } // 1, 3, ..., 15

// gridLattice8 builds the 8-coordinate, 2-bit-key search table of an IQ2/IQ1 codebook (iq2xs_init_impl).
func gridLattice8(grid []uint64, level func(uint8) int, nwant int) *lattice {
	return newLattice(len(grid), 8, 2, 2, nwant, func(p, c int) int { return level(uint8(grid[p] >> (8 * c))) })
}

// gridLattice4 builds the 4-coordinate, 3-bit-key search table of an IQ3 codebook (iq3xs_init_impl).
func gridLattice4(grid []uint32, level func(uint8) int, nwant int) *lattice {
	return newLattice(len(grid), 4, 3, 7, nwant, func(p, c int) int { return level(uint8(grid[p] >> (8 * c))) })
}
