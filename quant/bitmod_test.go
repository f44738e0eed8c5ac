package quant

import (
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
	if got := GroupBPW(BitMoD4, 128); got != 4+18.0/128 {
		t.Errorf("BitMoD4 g128 costs %v bits per weight, want 4.140625", got)
	}
	if got := GroupBPW(BitMoD3, 128); got != 3+18.0/128 {
		t.Errorf("BitMoD3 g128 costs %v bits per weight, want 3.140625", got)
	}
}

// TestFakeQuantGroupsPicksTheExactType builds, for every datatype of a candidate set, a group made of that type's
// values times an fp16-exact scale: that type reproduces it exactly and every other one does not, so selection
// must pick it.
func TestFakeQuantGroupsPicksTheExactType(t *testing.T) {
	const group = 128
	for _, set := range [][]Datatype{BitMoD4, BitMoD3, {INT4, FP4E2M1, IQ4NL}, {INT3, FP3ERPos, FP3EANeg}} {
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
