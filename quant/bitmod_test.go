package quant

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestDatatypeTables(t *testing.T) {
	fp3 := []float32{-4, -2, -1, 0, 1, 2, 4}
	fp4 := FP4E2M1.Values
	for _, c := range []struct {
		d       Datatype
		bits    int
		base    []float32
		special float32 // the value added to base; 0: none
	}{
		{INT3, 3, nil, 0}, {INT4, 4, nil, 0}, {FP4E2M1, 4, nil, 0}, {IQ4NL, 4, nil, 0},
		{FP3ERPos, 3, fp3, 3}, {FP3ERNeg, 3, fp3, -3}, {FP3EAPos, 3, fp3, 6}, {FP3EANeg, 3, fp3, -6},
		{FP4ERPos, 4, fp4, 10}, {FP4ERNeg, 4, fp4, -10}, {FP4EAPos, 4, fp4, 16}, {FP4EANeg, 4, fp4, -16},
	} {
		v := c.d.Values
		if c.d.Bits() != c.bits || len(v) > 1<<c.bits {
			t.Errorf("%s: %d values, %d bits; want %d bits", c.d.Name, len(v), c.d.Bits(), c.bits)
		}
		for i := 1; i < len(v); i++ {
			if v[i] <= v[i-1] {
				t.Errorf("%s: values not strictly ascending at %d", c.d.Name, i)
			}
		}
		if c.base != nil {
			want := slices.Sorted(slices.Values(append(slices.Clone(c.base), c.special)))
			if !slices.Equal(v, want) {
				t.Errorf("%s: %v, want base %v with %v", c.d.Name, v, c.base, c.special)
			}
		}
	}
	if got := GroupBPW(BitMoD4, 128, false); got != 4+18.0/128 {
		t.Errorf("BitMoD4 g128 costs %v bits per weight, want 4.140625", got)
	}
	if got := GroupBPW(BitMoD3, 128, false); got != 3+18.0/128 {
		t.Errorf("BitMoD3 g128 costs %v bits per weight, want 3.140625", got)
	}
}

// TestFakeQuantGroupsPicksTheExactType builds, for every datatype of a candidate set, a group made of that type's
// values times an fp16-exact scale: that type reproduces it exactly and every other one does not, so selection
// must pick it.
func TestFakeQuantGroupsPicksTheExactType(t *testing.T) {
	const group = 128
	for _, set := range [][]Datatype{BitMoD4, BitMoD3, BitMoD4NL, BitMoD3S, {INT4, FP4E2M1, IQ4NL}, {INT3, FP3ERPos, FP3EANeg}} {
		src := make([]float32, group*len(set))
		for k, d := range set {
			for i := range group {
				src[k*group+i] = 0.25 * d.Values[(i*5)%len(d.Values)]
			}
		}
		tmp := make([]float32, group)
		for k, d := range set {
			for j, o := range set {
				o.FakeQuant(tmp, src[k*group:(k+1)*group])
				exact := slices.Equal(tmp, src[k*group:(k+1)*group])
				if exact != (j == k) {
					t.Fatalf("group of %s quantized with %s: exact = %v", d.Name, o.Name, exact)
				}
			}
		}
		dst := make([]float32, len(src))
		// One row holding every group, and each group as its own row, must agree.
		for _, rowLen := range []int{len(src), group} {
			ids, err := FakeQuantGroups(dst, src, rowLen, set, GroupOptions{Group: group})
			if err != nil {
				t.Fatal(err)
			}
			for k, id := range ids {
				if int(id) != k {
					t.Errorf("row length %d: group of %s chose %s", rowLen, set[k].Name, set[id].Name)
				}
			}
			if !slices.Equal(dst, src) {
				t.Errorf("row length %d: exact groups were not reproduced", rowLen)
			}
		}
	}
}

// TestFakeQuantGroupsImportance checks that weights steer the choice: a group INT4 fits exactly but for one value
// that FP4 fits exactly switches to FP4 when that value's weight dominates.
func TestFakeQuantGroupsImportance(t *testing.T) {
	src := make([]float32, 32)
	for i := range src {
		src[i] = float32(i%15 - 7) // INT4's values: exact for INT4
	}
	src[0] = fp16ToFloat32(fp32ToFP16(7.0 / 12)) // FP4's scale for absmax 7: its value 1, between INT4's 0 and 1
	ids, err := FakeQuantGroups(make([]float32, 32), src, 32, []Datatype{INT4, FP4E2M1}, GroupOptions{Group: 32})
	if err != nil {
		t.Fatal(err)
	}
	if ids[0] != 0 {
		t.Fatalf("plain MSE chose %d, want INT4", ids[0])
	}
	imp := make([]float32, 32)
	for i := range imp {
		imp[i] = 1e-6
	}
	imp[0] = 1e6
	if ids, err = FakeQuantGroups(make([]float32, 32), src, 32, []Datatype{INT4, FP4E2M1}, GroupOptions{Group: 32, Importance: imp}); err != nil {
		t.Fatal(err)
	}
	if ids[0] != 1 {
		t.Fatalf("weighted MSE chose %d, want FP4", ids[0])
	}
}

func TestFakeQuantGroupsRejectsBadShapes(t *testing.T) {
	for _, c := range []struct {
		n, row, group, search int
		types                 []Datatype
	}{{256, 100, 128, 0, BitMoD4}, {256, 256, 96, 0, BitMoD4}, {256, 256, 128, 0, nil}, {256, 0, 128, 0, BitMoD4},
		{256, 256, 128, -1, BitMoD4}, {256, 256, -128, 0, BitMoD4}} {
		o := GroupOptions{Group: c.group, ScaleSearch: c.search}
		if _, err := FakeQuantGroups(make([]float32, c.n), make([]float32, c.n), c.row, c.types, o); err == nil {
			t.Errorf("%+v: accepted", c)
		}
	}
}

// groupTestData is rows of Gaussian-like values with a few outliers, as LLM weights are.
func groupTestData(n int) []float32 {
	rng := rand.New(rand.NewPCG(3, 4))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
		if rng.IntN(50) == 0 {
			x[i] *= 6
		}
	}
	return x
}

func groupErrors(t *testing.T, x []float32, nPerRow int, types []Datatype, o GroupOptions) ([]float64, *Groups) {
	t.Helper()
	g, err := QuantizeGroups(x, nPerRow, types, o)
	if err != nil {
		t.Fatal(err)
	}
	y := make([]float32, len(x))
	if err := g.Dequantize(y); err != nil {
		t.Fatal(err)
	}
	e := make([]float64, len(g.Scales))
	for i, v := range x {
		d := float64(y[i] - v)
		e[i/g.Group] += d * d
	}
	return e, g
}

// TestScaleSearch checks that the least-squares scale search never raises a group's error (the absmax scale is
// always a candidate) and lowers the total, for each candidate set.
func TestScaleSearch(t *testing.T) {
	x := groupTestData(64 * 128)
	for _, set := range [][]Datatype{BitMoD4, BitMoD3, BitMoD4S, BitMoD4NL, {INT4}} {
		plain, _ := groupErrors(t, x, 128, set, GroupOptions{Group: 32})
		searched, _ := groupErrors(t, x, 128, set, GroupOptions{Group: 32, ScaleSearch: 7})
		var sp, ss float64
		for i := range plain {
			if searched[i] > plain[i] {
				t.Fatalf("%s: group %d: error %g with the search, %g without", set[0].Name, i, searched[i], plain[i])
			}
			sp += plain[i]
			ss += searched[i]
		}
		if ss >= sp {
			t.Errorf("%s: search does not lower the total error: %g, %g without", set[0].Name, ss, sp)
		}
		t.Logf("%-10s ×%d: error %.4g, with the search %.4g (%.1f %% less)", set[0].Name, len(set), sp, ss, 100*(1-ss/sp))
	}
}

// TestSignedSetsMatchThePaper checks that signed scales over ER and EA represent the paper's four types: the
// errors agree but for ties, and IDInScale stores the id in the scale's low bits at a cost below 0.1 %.
func TestSignedSetsMatchThePaper(t *testing.T) {
	x := groupTestData(32 * 256)
	sum := func(e []float64) (s float64) {
		for _, v := range e {
			s += v
		}
		return s
	}
	for _, c := range [][2][]Datatype{{BitMoD4, BitMoD4S}, {BitMoD3, BitMoD3S}} {
		paper, _ := groupErrors(t, x, 256, c[0], GroupOptions{Group: 32})
		signed, _ := groupErrors(t, x, 256, c[1], GroupOptions{Group: 32})
		inScale, g := groupErrors(t, x, 256, c[1], GroupOptions{Group: 32, IDInScale: true})
		p, s, i := sum(paper), sum(signed), sum(inScale)
		if math.Abs(s-p) > 1e-6*p || i < s || i > 1.001*s {
			t.Errorf("%s: paper's set %g, signed %g, id in scale %g", c[1][0].Name, p, s, i)
		}
		for k, h := range g.Scales {
			if int(h&1) != int(g.TypeIDs[k]) {
				t.Fatalf("group %d: scale %#04x does not hold type id %d", k, h, g.TypeIDs[k])
			}
		}
		g.TypeIDs[0] ^= 1
		if err := g.Dequantize(make([]float32, len(x))); err == nil {
			t.Error("a type id that disagrees with its scale's was accepted")
		}
	}
	if GroupBPW(BitMoD4S, 32, true) != 4.5 || GroupBPW(BitMoD4NL, 32, false) != 4+18.0/32 {
		t.Error("GroupBPW does not count the id bits as stored")
	}
}

func TestScaleBits(t *testing.T) {
	for _, c := range []struct {
		s      float32
		idBits int
		want   uint16
	}{
		{0.5, 0, 0x3800}, {0.5, 2, 0x3800}, {-0.5, 1, 0xB800},
		{1 + 3.0/1024, 2, 0x3C04}, // mantissa 3 rounds up to 4
		{1 + 1.0/1024, 2, 0x3C00}, // and 1 down to 0
		{2 - 1.0/1024, 1, 0x4000}, // 0x3FFF rounds up across the exponent to 2.0
		{1e-9, 0, 0x00A8},         // clamped up to 1e-5 (fp16 subnormal 0x00A8)
	} {
		if got := scaleBits(c.s, c.idBits); got != c.want {
			t.Errorf("scaleBits(%v, %d) = %#04x, want %#04x", c.s, c.idBits, got, c.want)
		}
	}
}

// BenchmarkQuantizeGroups measures per-group selection of 4-bit types on float32 input, with the paper's absmax
// scales and with the scale search.
func BenchmarkQuantizeGroups(b *testing.B) {
	x := groupTestData(256 * 1024)
	for _, c := range []struct {
		name  string
		types []Datatype
		o     GroupOptions
	}{
		{"bitmod4-g128", BitMoD4, GroupOptions{}},
		{"bitmod4-g32-search7", BitMoD4S, GroupOptions{Group: 32, ScaleSearch: 7, IDInScale: true}},
		{"bitmod4nl-g32-search7", BitMoD4NL, GroupOptions{Group: 32, ScaleSearch: 7, IDInScale: true}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(4 * len(x)))
			for b.Loop() {
				if _, err := QuantizeGroups(x, 1024, c.types, c.o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestCodebookNearestIsSearch checks the table-guided rounding against the plain midpoint search on every
// midpoint (the ties), its neighbours one ulp away, random values and values outside the table, for every type.
func TestCodebookNearestIsSearch(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, d := range []Datatype{INT3, INT4, FP4E2M1, IQ4NL, FP3ERPos, FP3EANeg, FP4ERNeg, FP4EAPos} {
		c := newCodebook(d)
		var vs []float32
		for _, m := range c.mid {
			vs = append(vs, m, math.Nextafter32(m, -1e9), math.Nextafter32(m, 1e9))
		}
		for range 10000 {
			vs = append(vs, (rng.Float32()*1.4-0.7)*2*max(-d.Values[0], d.Values[len(d.Values)-1]))
		}
		vs = append(vs, float32(math.Inf(1)), float32(math.Inf(-1)), 0, -0)
		for _, v := range vs {
			if got, want := c.nearest(v), c.search(v); got != want {
				t.Fatalf("%s: nearest(%v) = %d, search %d", d.Name, v, got, want)
			}
		}
	}
}

// TestQuantizeGroupsNonFinite feeds groups holding infinities and NaN: every group still gets a valid type id and
// codes in range (Dequantize accepts them), and finite groups beside them are quantized as when alone.
func TestQuantizeGroupsNonFinite(t *testing.T) {
	x := groupTestData(4 * 32)
	x[3], x[40], x[70] = float32(math.Inf(1)), float32(math.NaN()), float32(math.Inf(-1))
	for _, search := range []int{0, 3} {
		g, err := QuantizeGroups(x, 128, BitMoD4NL, GroupOptions{Group: 32, ScaleSearch: search, IDInScale: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Dequantize(make([]float32, len(x))); err != nil {
			t.Fatalf("search %d: %v", search, err)
		}
		alone, err := QuantizeGroups(x[96:], 32, BitMoD4NL, GroupOptions{Group: 32, ScaleSearch: search, IDInScale: true})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(alone.Codes, g.Codes[96:]) || alone.Scales[0] != g.Scales[3] {
			t.Errorf("search %d: the finite group is quantized differently beside non-finite ones", search)
		}
	}
}
