package quant

import (
	"fmt"
	"math"
	"math/bits"

	"github.com/lathe-ml/lathe/internal/parallel"
)

// Per-group datatypes after BitMoD (Chen et al., HPCA 2025, arXiv 2411.11745; ../shared/reference/formats-quant.md
// §7.1): each group of weights along a row is quantized with every candidate datatype and keeps the one with the
// least error. QuantizeGroups gives the codes, type ids and fp16 scales that packed storage holds
// (convert/bitmod.go, docs/bitmod.md); Groups.Dequantize turns them back into values, and FakeQuantGroups is the
// two in one, so that fake quantization and decoding packed storage agree bit for bit.

// Datatype is a small set of representable values, in units of a per-group scale.
type Datatype struct {
	Name string
	// Values are sorted ascending.
	Values []float32
	// SignedScale maps the group's largest-magnitude element onto Values[0] with a scale of either sign, as
	// ggml's quantize_row_iq4_nl_impl does (d = max/-127) for its asymmetric codebook. Otherwise the scale is
	// BitMoD's absmax / max|value|, always positive.
	SignedScale bool
}

// Bits is the code width the datatype needs.
func (d Datatype) Bits() int { return bits.Len(uint(len(d.Values) - 1)) }

func values(v ...float32) []float32 { return v }

// The base tables are BitMoD's (§7.1), in units where the smallest non-zero FP magnitude is 1 (twice the OCP
// values, as ggml's kvalues_fp4). The BitMoD types spend FP3's/FP4's spare code (its −0) on one special value:
// ER (extra resolution, ±3 or ±10) or EA (extra asymmetry, ±6 or ±16).
var (
	INT3 = Datatype{Name: "int3", Values: values(-3, -2, -1, 0, 1, 2, 3)}
	INT4 = Datatype{Name: "int4", Values: values(-7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7)}
	// FP4E2M1 is OCP FP4 E2M1 (±0, 0.5, 1, 1.5, 2, 3, 4, 6), doubled.
	FP4E2M1 = Datatype{Name: "fp4_e2m1", Values: values(-12, -8, -6, -4, -3, -2, -1, 0, 1, 2, 3, 4, 6, 8, 12)}
	// IQ4NL is ggml's kvalues_iq4nl codebook (ggml-common.h).
	IQ4NL = Datatype{Name: "iq4_nl", SignedScale: true,
		Values: values(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)}

	FP3ERPos = Datatype{Name: "fp3_er_pos", Values: values(-4, -2, -1, 0, 1, 2, 3, 4)}
	FP3ERNeg = Datatype{Name: "fp3_er_neg", Values: values(-4, -3, -2, -1, 0, 1, 2, 4)}
	FP3EAPos = Datatype{Name: "fp3_ea_pos", Values: values(-4, -2, -1, 0, 1, 2, 4, 6)}
	FP3EANeg = Datatype{Name: "fp3_ea_neg", Values: values(-6, -4, -2, -1, 0, 1, 2, 4)}
	FP4ERPos = Datatype{Name: "fp4_er_pos", Values: values(-12, -8, -6, -4, -3, -2, -1, 0, 1, 2, 3, 4, 6, 8, 10, 12)}
	FP4ERNeg = Datatype{Name: "fp4_er_neg", Values: values(-12, -10, -8, -6, -4, -3, -2, -1, 0, 1, 2, 3, 4, 6, 8, 12)}
	FP4EAPos = Datatype{Name: "fp4_ea_pos", Values: values(-12, -8, -6, -4, -3, -2, -1, 0, 1, 2, 3, 4, 6, 8, 12, 16)}
	FP4EANeg = Datatype{Name: "fp4_ea_neg", Values: values(-16, -12, -8, -6, -4, -3, -2, -1, 0, 1, 2, 3, 4, 6, 8, 12)}

	// BitMoD3 and BitMoD4 are the paper's mixed_bitmod candidate sets.
	BitMoD3 = []Datatype{FP3ERPos, FP3ERNeg, FP3EAPos, FP3EANeg}
	BitMoD4 = []Datatype{FP4ERPos, FP4ERNeg, FP4EAPos, FP4EANeg}

	// A positive scale leaves the fp16 sign bit unused, and a _neg table is its _pos table negated: with a signed
	// scale the ER and EA types alone represent the same values as the paper's four, for one id bit less.
	FP3ER = Datatype{Name: "fp3_er", Values: FP3ERPos.Values, SignedScale: true}
	FP3EA = Datatype{Name: "fp3_ea", Values: FP3EAPos.Values, SignedScale: true}
	FP4ER = Datatype{Name: "fp4_er", Values: FP4ERPos.Values, SignedScale: true}
	FP4EA = Datatype{Name: "fp4_ea", Values: FP4EAPos.Values, SignedScale: true}

	// BitMoD3S and BitMoD4S are BitMoD3 and BitMoD4 with signed scales; BitMoD4NL adds ggml's IQ4_NL codebook
	// and INT4, which the measurements in docs/bitmod.md show pay for their id bit.
	BitMoD3S  = []Datatype{FP3ER, FP3EA}
	BitMoD4S  = []Datatype{FP4ER, FP4EA}
	BitMoD4NL = []Datatype{FP4ER, FP4EA, IQ4NL, INT4}
)

// BitMoDGroup is the paper's default group size (--wq_groupsize 128).
const BitMoDGroup = 128

// Scale clamp of BitMoD's quant_weight.py, applied before rounding the scale to fp16.
const minGroupScale, maxGroupScale = 1e-5, 1e4

// MaxScaleSearch bounds GroupOptions.ScaleSearch.
const MaxScaleSearch = 32

// scaleStep is the relative spacing of the searched inverse scales: ggml's quantize_row_iq4_nl_impl steps its
// inverse scale by 1/127 of the first guess (itry + 127)/max.
const scaleStep = 1.0 / 128

// FakeQuant quantizes src with d and BitMoD's absmax scale, writes the dequantized values to dst and returns the
// scale, rounded to fp16 as it would be stored.
func (d Datatype) FakeQuant(dst, src []float32) float32 {
	codes := make([]uint8, len(src))
	h, _ := newCodebook(d).encode(codes, make([]uint8, len(src)), src, nil, 0, 0)
	scale := fp16ToFloat32(h)
	for i, c := range codes {
		dst[i] = d.Values[c] * scale
	}
	return scale
}

// codebook is a Datatype prepared for rounding: the midpoints between its values and a table that gives, for any
// input, the nearest value up to one step, so that rounding costs a lookup and a comparison or two instead of a
// search.
type codebook struct {
	Datatype
	mid     []float32
	lut     [codebookLUT]uint8
	lo, inv float32 // lut index of v is (v - lo)·inv
}

const codebookLUT = 256

func newCodebook(d Datatype) *codebook {
	c := &codebook{Datatype: d, mid: make([]float32, len(d.Values)-1)}
	for i := range c.mid {
		c.mid[i] = (d.Values[i] + d.Values[i+1]) / 2
	}
	c.lo = d.Values[0]
	c.inv = codebookLUT / (d.Values[len(d.Values)-1] - c.lo)
	for b := range c.lut {
		c.lut[b] = c.search(c.lo + float32(b)/c.inv)
	}
	return c
}

// search is the index of the value nearest to v, the lower on a tie (midpoint thresholds, as BitMoD rounds).
func (c *codebook) search(v float32) uint8 {
	lo, hi := 0, len(c.mid)
	for lo < hi {
		m := (lo + hi) / 2
		if v > c.mid[m] {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return uint8(lo)
}

// nearest is search, started from the table's guess and corrected by walking; the result is exactly search's.
func (c *codebook) nearest(v float32) uint8 {
	f := (v - c.lo) * c.inv
	var k int
	switch {
	case f >= codebookLUT-1:
		k = int(c.lut[codebookLUT-1])
	case f > 0:
		k = int(c.lut[int(f)])
	}
	for k < len(c.mid) && v > c.mid[k] {
		k++
	}
	for k > 0 && v <= c.mid[k-1] {
		k--
	}
	return uint8(k)
}

// encode quantizes one group with d: codes receives the index of each value and the results are the stored scale
// (fp16 bits, with the low idBits mantissa bits clear, see scaleBits) and the weighted squared error. With search
// = 0 the scale is BitMoD's absmax one. Otherwise, in the manner of ggml's make_qx_quants and
// quantize_row_iq4_nl_impl, 2·search+1 inverse scales around the absmax one each assign codes and refit the scale
// by weighted least squares (d = Σw·q·x / Σw·q²); the refit maximising (Σw·q·x)²/Σw·q² is kept if, once stored and
// the codes reassigned, its weighted error is below the absmax scale's. A SignedScale type tries both signs of the
// scale (the group's largest-magnitude element at either end of the table) and searches around the better one.
func (d *codebook) encode(codes, scratch []uint8, x, w []float32, search, idBits int) (uint16, float64) {
	var amax, xmax float32
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, xmax = a, v
		}
	}
	if amax == 0 {
		return 0, d.assign(codes, x, w, 0)
	}
	lo, hi := d.Values[0], d.Values[len(d.Values)-1]
	starts := []float32{amax / max(-lo, hi)}
	if d.SignedScale {
		starts = []float32{xmax / lo, xmax / hi}
	}
	bestH, bestErr, tried := uint16(0), 0.0, false
	// try keeps scale s if it is the first or is stored with less error than the best so far, and says so; the
	// first is always kept so that infinite or NaN input still gets codes.
	try := func(s float32) bool {
		h := scaleBits(s, idBits)
		e := d.assign(scratch, x, w, fp16ToFloat32(h))
		if tried && !(e < bestErr) {
			return false
		}
		tried = true
		bestH, bestErr = h, e
		copy(codes, scratch)
		return true
	}
	var scale float32
	for _, s := range starts {
		if try(s) {
			scale = s
		}
	}
	if search == 0 {
		return bestH, bestErr
	}
	// Only the better sign is searched: the other one's refits would have to beat its whole error.
	id0 := 1 / scale
	var best, bestD float32
	for k := -search; k <= search; k++ {
		id := id0 * (1 + scaleStep*float32(k))
		var sumqx, sumq2 float32
		for i, v := range x {
			q := d.Values[d.nearest(v*id)]
			wi := float32(1)
			if w != nil {
				wi = w[i]
			}
			sumqx += wi * q * v
			sumq2 += wi * q * q
		}
		if sumq2 > 0 && sumqx*sumqx > best*sumq2 {
			best, bestD = sumqx*sumqx/sumq2, sumqx/sumq2
		}
	}
	if bestD != 0 {
		try(bestD)
	}
	return bestH, bestErr
}

// scaleBits is how a group's scale is stored: clamped as BitMoD's quant_weight.py does, keeping its sign, and
// rounded to fp16; with idBits > 0 the bit pattern is then rounded to a multiple of 2^idBits, freeing the low
// mantissa bits for the group's type id (GroupOptions.IDInScale). Rounding the pattern of a finite positive or
// negative half rounds its magnitude, a carry moving into the exponent as it should.
func scaleBits(s float32, idBits int) uint16 {
	sign := float32(1)
	if s < 0 {
		sign, s = -1, -s
	}
	h := fp32ToFP16(sign * min(max(s, minGroupScale), maxGroupScale))
	if idBits == 0 {
		return h
	}
	half := uint16(1) << (idBits - 1)
	return (h + half) &^ (half<<1 - 1)
}

// assign gives each value of x the code nearest to it at scale and returns the weighted squared error.
func (d *codebook) assign(codes []uint8, x, w []float32, scale float32) float64 {
	var e float64
	if scale == 0 {
		z := d.nearest(0)
		for i, v := range x {
			codes[i] = z
			e += groupWeight(w, i) * float64(v) * float64(v)
		}
		return e
	}
	inv := 1 / scale
	for i, v := range x {
		c := d.nearest(v * inv)
		codes[i] = c
		r := float64(d.Values[c]*scale - v)
		e += groupWeight(w, i) * r * r
	}
	return e
}

func groupWeight(w []float32, i int) float64 {
	if w == nil {
		return 1
	}
	return float64(w[i])
}

// GroupBPW is the storage cost in bits per weight of per-group datatypes: codes, and per group an fp16 scale and
// a type id, which idInScale stores in the scale's low mantissa bits.
func GroupBPW(types []Datatype, group int, idInScale bool) float64 {
	perGroup := 16
	if !idInScale {
		perGroup += TypeIDBits(types)
	}
	return float64(CodeBits(types)) + float64(perGroup)/float64(group)
}

// CodeBits is the code width of a candidate set: that of its widest type.
func CodeBits(types []Datatype) int {
	b := 0
	for _, t := range types {
		b = max(b, t.Bits())
	}
	return b
}

// TypeIDBits is the width of a group's type id: 0 for a single type.
func TypeIDBits(types []Datatype) int { return bits.Len(uint(len(types) - 1)) }

// GroupOptions configures QuantizeGroups.
type GroupOptions struct {
	// Group is the number of values per group along a row; 0 means BitMoDGroup.
	Group int
	// Importance holds a weight per column (nPerRow of them) for the error that selects types, or nil for plain
	// MSE as in the paper.
	Importance []float32
	// ScaleSearch is how many inverse scales on each side of the absmax one are tried, each refitted by least
	// squares (see Datatype.encode); 0 is the paper's plain absmax.
	ScaleSearch int
	// IDInScale stores each group's type id in the low mantissa bits of its fp16 scale instead of beside it, so
	// that a group costs 16 bits besides its codes, as a Q4_0 or IQ4_NL block does.
	IDInScale bool
}

// Groups is a tensor quantized with per-group datatypes: what packed storage holds.
type Groups struct {
	Types   []Datatype
	Group   int
	NPerRow int
	// Codes holds one index into the group's datatype's Values per element.
	Codes []uint8
	// TypeIDs holds one index into Types per group, row by row.
	TypeIDs []uint8
	// Scales holds one fp16 scale (its bits) per group; with IDInScale, its low TypeIDBits bits are the type id,
	// and the scale is the half with them clear.
	Scales    []uint16
	IDInScale bool
}

// idMask is the part of a stored scale that holds the type id.
func (g *Groups) idMask() uint16 {
	if !g.IDInScale {
		return 0
	}
	return uint16(1)<<TypeIDBits(g.Types) - 1
}

// ValidateGroupLayout checks the shape rules of per-group quantization.
func ValidateGroupLayout(n, nPerRow, group int, types []Datatype) error {
	switch {
	case len(types) == 0 || len(types) > math.MaxUint8+1:
		return fmt.Errorf("quant: %d datatypes; want 1 to 256", len(types))
	case nPerRow <= 0 || n%nPerRow != 0:
		return fmt.Errorf("quant: %d values are not whole rows of %d", n, nPerRow)
	case group <= 0 || nPerRow%group != 0:
		return fmt.Errorf("quant: row length %d is not a multiple of the group size %d", nPerRow, group)
	}
	for _, t := range types {
		if len(t.Values) < 2 || len(t.Values) > 256 {
			return fmt.Errorf("quant: datatype %q has %d values; want 2 to 256", t.Name, len(t.Values))
		}
		for i, v := range t.Values {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) || (i > 0 && v <= t.Values[i-1]) {
				return fmt.Errorf("quant: datatype %q: value %d (%v) is not finite and above the one before", t.Name, i, v)
			}
		}
	}
	return nil
}

// QuantizeGroups quantizes src, rows of nPerRow values, in groups along each row: every group is quantized with
// each of types and keeps the one with the least (importance-weighted) squared error, the first on a tie. Rows
// run in parallel; the result does not depend on it.
func QuantizeGroups(src []float32, nPerRow int, types []Datatype, o GroupOptions) (*Groups, error) {
	group := o.Group
	if group == 0 {
		group = BitMoDGroup
	}
	if err := ValidateGroupLayout(len(src), nPerRow, group, types); err != nil {
		return nil, err
	}
	switch {
	case o.Importance != nil && len(o.Importance) != nPerRow:
		return nil, fmt.Errorf("quant: importance has %d weights, rows have %d elements", len(o.Importance), nPerRow)
	case o.ScaleSearch < 0 || o.ScaleSearch > MaxScaleSearch:
		return nil, fmt.Errorf("quant: scale search of %d steps; want 0 to %d", o.ScaleSearch, MaxScaleSearch)
	case o.IDInScale && TypeIDBits(types) > 4:
		return nil, fmt.Errorf("quant: %d datatypes need %d id bits; at most 4 fit in a scale", len(types), TypeIDBits(types))
	}
	g := &Groups{Types: types, Group: group, NPerRow: nPerRow, Codes: make([]uint8, len(src)),
		TypeIDs: make([]uint8, len(src)/group), Scales: make([]uint16, len(src)/group), IDInScale: o.IDInScale}
	idBits := 0
	if o.IDInScale {
		idBits = TypeIDBits(types)
	}
	perRow := nPerRow / group
	books := make([]*codebook, len(types))
	for k, t := range types {
		books[k] = newCodebook(t)
	}
	workers := parallel.Workers(0)
	scratch := make([][]uint8, workers)
	for w := range scratch {
		scratch[w] = make([]uint8, 2*group)
	}
	parallel.ForWorker(len(src)/nPerRow, workers, func(wk, r int) {
		tmp, spare := scratch[wk][:group], scratch[wk][group:]
		for j := range perRow {
			gi := r*perRow + j
			x, codes := src[gi*group:(gi+1)*group], g.Codes[gi*group:(gi+1)*group]
			var imp []float32
			if o.Importance != nil {
				imp = o.Importance[j*group : (j+1)*group]
			}
			best := math.Inf(1)
			for k, t := range books {
				h, e := t.encode(tmp, spare, x, imp, o.ScaleSearch, idBits)
				if k == 0 || e < best {
					best = e
					g.TypeIDs[gi], g.Scales[gi] = uint8(k), h|uint16(k)&g.idMask()
					copy(codes, tmp)
				}
			}
		}
	})
	return g, nil
}

// Dequantize writes the values g encodes to dst: Types[id].Values[code] × scale, in float32.
func (g *Groups) Dequantize(dst []float32) error {
	if err := ValidateGroupLayout(len(g.Codes), g.NPerRow, g.Group, g.Types); err != nil {
		return err
	}
	groups := len(g.Codes) / g.Group
	switch {
	case len(dst) != len(g.Codes):
		return fmt.Errorf("quant: dst has %d values, the groups %d", len(dst), len(g.Codes))
	case len(g.TypeIDs) != groups || len(g.Scales) != groups:
		return fmt.Errorf("quant: %d type ids and %d scales for %d groups", len(g.TypeIDs), len(g.Scales), groups)
	}
	mask := g.idMask()
	for gi := range groups {
		id := int(g.TypeIDs[gi])
		if g.IDInScale && id != int(g.Scales[gi]&mask) {
			return fmt.Errorf("quant: group %d has type id %d, its scale says %d", gi, id, g.Scales[gi]&mask)
		}
		if id >= len(g.Types) {
			return fmt.Errorf("quant: group %d has type id %d; there are %d types", gi, id, len(g.Types))
		}
		vals, scale := g.Types[id].Values, fp16ToFloat32(g.Scales[gi]&^mask)
		for i, c := range g.Codes[gi*g.Group : (gi+1)*g.Group] {
			if int(c) >= len(vals) {
				return fmt.Errorf("quant: element %d has code %d; datatype %q has %d values", gi*g.Group+i, c, g.Types[id].Name, len(vals))
			}
			dst[gi*g.Group+i] = vals[c] * scale
		}
	}
	return nil
}

// FakeQuantGroups is QuantizeGroups followed by Dequantize into dst; it returns the type id of each group.
func FakeQuantGroups(dst, src []float32, nPerRow int, types []Datatype, o GroupOptions) ([]uint8, error) {
	if len(dst) != len(src) {
		return nil, fmt.Errorf("quant: dst has %d values, src %d", len(dst), len(src))
	}
	g, err := QuantizeGroups(src, nPerRow, types, o)
	if err != nil {
		return nil, err
	}
	return g.TypeIDs, g.Dequantize(dst)
}
