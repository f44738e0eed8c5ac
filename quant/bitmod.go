package quant

import (
	"fmt"
	"math"
	"math/bits"

	"github.com/lathe-ml/lathe/internal/parallel"
)

// Per-group datatypes after BitMoD (Chen et al., HPCA 2025, arXiv 2411.11745; ../shared/reference/formats-quant.md
// §7.1): each group of weights along a row is quantized with every candidate datatype and keeps the one with the
// least error. This is fake quantization: the result is the dequantized values and the chosen type of each group;
// no packed layout is defined here.

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
)

// BitMoDGroup is the paper's default group size (--wq_groupsize 128).
const BitMoDGroup = 128

// Scale clamp of BitMoD's quant_weight.py, applied before rounding the scale to fp16.
const minGroupScale, maxGroupScale = 1e-5, 1e4

// FakeQuant quantizes src with d and one scale, writes the dequantized values to dst and returns the scale. The
// scale is rounded to fp16, as it would be stored; each value goes to the nearest table entry (the lower on a tie).
func (d Datatype) FakeQuant(dst, src []float32) float32 {
	scale := d.absmaxScale(src, 1)
	d.roundTo(dst, src, scale)
	return scale
}

// absmaxScale is the group's scale times shrink, clamped as BitMoD's quant_weight.py does and rounded to fp16.
func (d Datatype) absmaxScale(src []float32, shrink float32) float32 {
	var amax, xmax float32
	for _, x := range src {
		if a := float32(math.Abs(float64(x))); a > amax {
			amax, xmax = a, x
		}
	}
	if amax == 0 {
		return 0
	}
	lo, hi := d.Values[0], d.Values[len(d.Values)-1]
	var scale float32
	if d.SignedScale {
		scale = xmax / lo
	} else {
		scale = amax / max(-lo, hi)
	}
	sign := float32(1)
	if scale < 0 {
		sign, scale = -1, -scale
	}
	return sign * fp16ToFloat32(fp32ToFP16(min(max(scale*shrink, minGroupScale), maxGroupScale)))
}

func (d Datatype) roundTo(dst, src []float32, scale float32) {
	if scale == 0 {
		clear(dst[:len(src)])
		return
	}
	inv := 1 / scale
	for i, x := range src {
		v := x * inv
		// Values are few and sorted: the first entry whose midpoint with the next exceeds v is the nearest.
		k := 0
		for k < len(d.Values)-1 && v > (d.Values[k]+d.Values[k+1])/2 {
			k++
		}
		dst[i] = d.Values[k] * scale
	}
}

// GroupBPW is the storage cost in bits per weight of per-group datatypes: codes, an fp16 scale and a type id per
// group.
func GroupBPW(types []Datatype, group int) float64 {
	b := 0
	for _, t := range types {
		b = max(b, t.Bits())
	}
	return float64(b) + float64(16+bits.Len(uint(len(types)-1)))/float64(group)
}

// GroupOptions configures FakeQuantGroups.
type GroupOptions struct {
	// Group is the number of values per group along a row; 0 means BitMoDGroup.
	Group int
	// Importance holds a weight per column (nPerRow of them) for the error that selects types, or nil for plain
	// MSE as in the paper.
	Importance []float32
	// ScaleSearch is how many smaller scales are tried besides the absmax one, each 2 % below the previous, in the
	// spirit of ggml's scale searches (make_qx_quants); 0 is the paper's plain absmax.
	ScaleSearch int
}

// FakeQuantGroups quantizes src, rows of nPerRow values, in groups along each row: every group is quantized with
// each of types (and each searched scale) and keeps the one with the least squared error. dst receives the
// dequantized values; the result is the index in types chosen for each group, row by row. Rows run in parallel;
// the output does not depend on it.
func FakeQuantGroups(dst, src []float32, nPerRow int, types []Datatype, o GroupOptions) ([]uint8, error) {
	group, importance := o.Group, o.Importance
	if group == 0 {
		group = BitMoDGroup
	}
	switch {
	case len(types) == 0 || len(types) > math.MaxUint8+1:
		return nil, fmt.Errorf("quant: %d datatypes; want 1 to 256", len(types))
	case nPerRow <= 0 || len(src)%nPerRow != 0:
		return nil, fmt.Errorf("quant: %d values are not whole rows of %d", len(src), nPerRow)
	case group < 0 || nPerRow%group != 0:
		return nil, fmt.Errorf("quant: row length %d is not a multiple of the group size %d", nPerRow, group)
	case len(dst) != len(src):
		return nil, fmt.Errorf("quant: dst has %d values, src %d", len(dst), len(src))
	case importance != nil && len(importance) != nPerRow:
		return nil, fmt.Errorf("quant: importance has %d weights, rows have %d elements", len(importance), nPerRow)
	case o.ScaleSearch < 0 || o.ScaleSearch > 40:
		return nil, fmt.Errorf("quant: scale search of %d steps; want 0 to 40", o.ScaleSearch)
	}
	for _, t := range types {
		if len(t.Values) < 2 {
			return nil, fmt.Errorf("quant: datatype %q has %d values; want at least 2", t.Name, len(t.Values))
		}
	}
	perRow := nPerRow / group
	ids := make([]uint8, len(src)/group)
	workers := parallel.Workers(0)
	scratch := make([][]float32, workers)
	for w := range scratch {
		scratch[w] = make([]float32, group)
	}
	parallel.ForWorker(len(src)/nPerRow, workers, func(w, r int) {
		tmp := scratch[w]
		for g := range perRow {
			lo := r*nPerRow + g*group
			x, y := src[lo:lo+group], dst[lo:lo+group]
			var imp []float32
			if importance != nil {
				imp = importance[g*group : (g+1)*group]
			}
			best := math.Inf(1)
			for k, t := range types {
				for step := range o.ScaleSearch + 1 {
					t.roundTo(tmp, x, t.absmaxScale(x, 1-0.02*float32(step)))
					var e float64
					for i, v := range x {
						d := float64(tmp[i] - v)
						if imp != nil {
							d *= math.Sqrt(float64(imp[i]))
						}
						e += d * d
					}
					if e < best || (k == 0 && step == 0) {
						best = e
						ids[r*perRow+g] = uint8(k)
						copy(y, tmp)
					}
				}
			}
		}
	})
	return ids, nil
}
