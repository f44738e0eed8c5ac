package tensor

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// Stats summarises the values of a tensor. Min, Max, AbsMax, Mean and Std are over the finite values only
// (NaN and ±Inf are counted separately), Std is the population standard deviation (ddof = 0, numpy's default).
type Stats struct {
	Count  int64   `json:"count"`
	NaN    int64   `json:"nan"`
	Inf    int64   `json:"inf"`
	Zeros  int64   `json:"zeros"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	AbsMax float64 `json:"absmax"`
	Mean   float64 `json:"mean"`
	Std    float64 `json:"std"`
}

// Decoder expands whole blocks of one type to float32; quant.Decode has this shape once bound to a type.
type Decoder func(dst []float32, src []byte) error

// statsChunk is the number of elements decoded at a time: the float32 buffer stays in L2 for the second pass.
const statsChunk = 1 << 16

// ComputeStats makes one parallel pass over v. decode is nil for element types (ToFloat32 is used); quantized
// types pass their block decoder. Partial results are merged in chunk order, so the result does not depend on
// scheduling.
func ComputeStats(v View, decode Decoder) (Stats, error) {
	if decode == nil {
		if v.DType.Kind() == KindQuantized || v.DType == C64 {
			return Stats{}, fmt.Errorf("tensor %q: no element decoder for %s", v.Name, v.DType)
		}
		dt := v.DType
		decode = func(dst []float32, src []byte) error { return ToFloat32(dst, src, dt) }
	}
	n := v.Elements()
	bs := int64(v.DType.BlockSize())
	chunk := statsChunk / bs * bs
	if chunk == 0 {
		chunk = bs
	}
	chunks := int((n + chunk - 1) / chunk)
	parts := make([]partial, chunks)
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), max(chunks, 1)) {
		wg.Go(func() {
			buf := make([]float32, chunk)
			for {
				c := next.Add(1) - 1
				if c >= int64(chunks) {
					return
				}
				lo := c * chunk
				hi := min(lo+chunk, n)
				bLo, _ := v.DType.Bytes(lo)
				bHi, _ := v.DType.Bytes(hi)
				vals := buf[:hi-lo]
				if err := decode(vals, v.Data[bLo:bHi]); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("tensor %q: %w", v.Name, err) })
					return
				}
				parts[c] = summarise(vals)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return Stats{}, firstErr
	}
	var total partial
	total.min, total.max = math.Inf(1), math.Inf(-1)
	for _, p := range parts {
		total.merge(p)
	}
	s := Stats{Count: n, NaN: total.nan, Inf: total.inf, Zeros: total.zeros, Mean: total.mean}
	if total.n > 0 {
		s.Min, s.Max = total.min, total.max
		s.AbsMax = math.Max(-s.Min, s.Max)
		s.Std = math.Sqrt(total.m2 / float64(total.n))
	}
	return s, nil
}

// partial holds the moments of the finite values of one chunk, merged with Chan et al.'s pairwise formula.
type partial struct {
	n, nan, inf, zeros int64
	min, max, mean, m2 float64
}

func summarise(vals []float32) partial {
	p := partial{min: math.Inf(1), max: math.Inf(-1)}
	// Fast pass assuming every value is finite: a NaN or Inf anywhere makes the sum non-finite, and only then
	// is the chunk walked again with per-element checks.
	lo, hi, sum, zeros := fastMoments(vals)
	p.n = int64(len(vals))
	if math.IsNaN(sum) || math.IsInf(sum, 0) {
		lo, hi, sum, zeros = float32(math.Inf(1)), float32(math.Inf(-1)), 0, 0
		for _, x := range vals {
			switch {
			case x != x:
				p.nan++
				continue
			case x > math.MaxFloat32 || x < -math.MaxFloat32:
				p.inf++
				continue
			case x == 0:
				zeros++
			}
			lo = min(lo, x)
			hi = max(hi, x)
			sum += float64(x)
		}
		p.n -= p.nan + p.inf
	}
	p.zeros = zeros
	if p.n == 0 {
		return p
	}
	p.min, p.max = float64(lo), float64(hi)
	p.mean = sum / float64(p.n)
	// Second pass over the cached chunk: sum of squared deviations, which does not cancel like Σx² − n·mean².
	finite := p.nan+p.inf == 0
	for _, x := range vals {
		if !finite && (x != x || x > math.MaxFloat32 || x < -math.MaxFloat32) {
			continue
		}
		d := float64(x) - p.mean
		p.m2 += d * d
	}
	return p
}

// fastMoments returns min, max, sum and zero count assuming finite input. Four independent lanes break the
// dependency chain of a single running sum, which otherwise limits the loop to one element per add latency.
func fastMoments(vals []float32) (lo, hi float32, sum float64, zeros int64) {
	lo, hi = float32(math.Inf(1)), float32(math.Inf(-1))
	lo1, hi1 := lo, hi
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(vals); i += 4 {
		a, b, c, d := vals[i], vals[i+1], vals[i+2], vals[i+3]
		s0 += float64(a)
		s1 += float64(b)
		s2 += float64(c)
		s3 += float64(d)
		// Plain comparisons, not the min/max builtins, whose NaN and signed-zero rules cost branches.
		if a < lo {
			lo = a
		}
		if a > hi {
			hi = a
		}
		if b < lo1 {
			lo1 = b
		}
		if b > hi1 {
			hi1 = b
		}
		if c < lo {
			lo = c
		}
		if c > hi {
			hi = c
		}
		if d < lo1 {
			lo1 = d
		}
		if d > hi1 {
			hi1 = d
		}
		zeros += int64(b2i(a == 0) + b2i(b == 0) + b2i(c == 0) + b2i(d == 0))
	}
	for ; i < len(vals); i++ {
		x := vals[i]
		s0 += float64(x)
		if x < lo {
			lo = x
		}
		if x > hi {
			hi = x
		}
		zeros += int64(b2i(x == 0))
	}
	if lo1 < lo {
		lo = lo1
	}
	if hi1 > hi {
		hi = hi1
	}
	return lo, hi, (s0 + s1) + (s2 + s3), zeros
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (p *partial) merge(o partial) {
	p.nan += o.nan
	p.inf += o.inf
	p.zeros += o.zeros
	if o.n == 0 {
		return
	}
	n := p.n + o.n
	delta := o.mean - p.mean
	p.mean += delta * float64(o.n) / float64(n)
	p.m2 += o.m2 + delta*delta*float64(p.n)*float64(o.n)/float64(n)
	p.n = n
	p.min = math.Min(p.min, o.min)
	p.max = math.Max(p.max, o.max)
}
