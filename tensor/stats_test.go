package tensor

import (
	"math"
	"math/rand/v2"
	"testing"
)

// ComputeStats against a direct float64 computation, on a tensor spanning several chunks with specials mixed in.
func TestComputeStats(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := 3*statsChunk + 123
	vals := make([]float32, n)
	for i := range vals {
		vals[i] = float32(rng.NormFloat64()*3 + 10)
	}
	vals[5] = float32(math.NaN())
	vals[statsChunk+7] = float32(math.Inf(-1))
	vals[2*statsChunk] = 0
	data := make([]byte, 4*n)
	if err := FromFloat32(data, vals, F32); err != nil {
		t.Fatal(err)
	}
	v, err := NewView("x", F32, Shape{int64(n)}, data)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ComputeStats(v, nil)
	if err != nil {
		t.Fatal(err)
	}
	var sum, lo, hi float64 = 0, math.Inf(1), math.Inf(-1)
	finite := 0
	for _, x := range vals {
		if x != x || math.IsInf(float64(x), 0) {
			continue
		}
		finite++
		sum += float64(x)
		lo, hi = math.Min(lo, float64(x)), math.Max(hi, float64(x))
	}
	mean := sum / float64(finite)
	var ss float64
	for _, x := range vals {
		if x != x || math.IsInf(float64(x), 0) {
			continue
		}
		ss += (float64(x) - mean) * (float64(x) - mean)
	}
	std := math.Sqrt(ss / float64(finite))
	if got.Count != int64(n) || got.NaN != 1 || got.Inf != 1 || got.Zeros != 1 {
		t.Errorf("counts: %+v", got)
	}
	if got.Min != lo || got.Max != hi || got.AbsMax != math.Max(-lo, hi) {
		t.Errorf("min/max: got %v %v %v, want %v %v", got.Min, got.Max, got.AbsMax, lo, hi)
	}
	if math.Abs(got.Mean-mean) > 1e-12*math.Abs(mean) || math.Abs(got.Std-std) > 1e-10*std {
		t.Errorf("mean/std: got %v %v, want %v %v", got.Mean, got.Std, mean, std)
	}
	again, _ := ComputeStats(v, nil)
	if again != got {
		t.Errorf("not deterministic: %+v vs %+v", again, got)
	}
}

func BenchmarkComputeStatsF32(b *testing.B) {
	n := 1 << 24
	rng := rand.New(rand.NewPCG(3, 4))
	vals := make([]float32, n)
	for i := range vals {
		vals[i] = float32(rng.NormFloat64() * 0.02)
	}
	data := make([]byte, 4*n)
	if err := FromFloat32(data, vals, F32); err != nil {
		b.Fatal(err)
	}
	v, _ := NewView("x", F32, Shape{int64(n)}, data)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ComputeStats(v, nil); err != nil {
			b.Fatal(err)
		}
	}
}
