package kernels

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/x448/float16"
)

// vecLengths covers empty rows, every tail length around the 8- and 32-element loops, and long rows.
var vecLengths = []int{0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 576, 1000, 1536, 4099}

func randVec(r *rand.Rand, n int, scale float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32((r.Float64()*2 - 1) * scale)
	}
	return x
}

// near reports whether got is within tol·scale of want (scale is at least |want|).
func near(got, want, tol, scale float64) bool {
	return math.Abs(got-want) <= tol*max(scale, math.Abs(want))
}

const eps32 = 0x1p-24

func TestDotSumSquares(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range vecLengths {
		x, y := randVec(r, n, 1), randVec(r, n, 1)
		var want, mag, ss float64
		for i := range x {
			want += float64(x[i]) * float64(y[i])
			mag += math.Abs(float64(x[i]) * float64(y[i]))
			ss += float64(x[i]) * float64(x[i])
		}
		tol := float64(n+1) * eps32
		for _, c := range []struct {
			name string
			got  float32
		}{{"Dot", Dot(x, y)}, {"dotGo", dotGo(x, y)}} {
			if !near(float64(c.got), want, tol, mag) {
				t.Errorf("%s n=%d: %g, want %g", c.name, n, c.got, want)
			}
		}
		for _, c := range []struct {
			name string
			got  float32
		}{{"SumSquares", SumSquares(x)}, {"sumSquaresGo", sumSquaresGo(x)}} {
			if !near(float64(c.got), ss, tol, ss) {
				t.Errorf("%s n=%d: %g, want %g", c.name, n, c.got, ss)
			}
		}
	}
}

func TestAxpyScale(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range vecLengths {
		x, y := randVec(r, n, 1), randVec(r, n, 1)
		y1 := append([]float32(nil), y...)
		y2 := append([]float32(nil), y...)
		Axpy(-0.75, x, y1)
		axpyGo(-0.75, x, y2)
		for i := range y {
			want := float64(y[i]) - 0.75*float64(x[i])
			if !near(float64(y1[i]), want, 2*eps32, 1) || !near(float64(y2[i]), want, 2*eps32, 1) {
				t.Fatalf("Axpy n=%d [%d]: %g / %g, want %g", n, i, y1[i], y2[i], want)
			}
		}
		s := append([]float32(nil), x...)
		Scale(3.5, s)
		for i := range x {
			if s[i] != 3.5*x[i] { // one rounding either way, so exact
				t.Fatalf("Scale n=%d [%d]: %g, want %g", n, i, s[i], 3.5*x[i])
			}
		}
	}
}

func TestExpf(t *testing.T) {
	worst := 0.0
	for x := -87.0; x <= 88.0; x += 0.0137 {
		got := float64(expf(float32(x)))
		want := math.Exp(float64(float32(x)))
		worst = max(worst, math.Abs(got-want)/want)
	}
	if worst > 2.5*eps32*2 { // 2.5 ulp of float32 (ulp = 2^-23 relative at worst)
		t.Errorf("expf worst relative error %.3g, want <= %.3g", worst, 2.5*eps32*2)
	}
	if got := expf(-1000); got <= 0 || got > 1.0001*0x1p-126 {
		t.Errorf("expf(-1000) = %g, want about 2^-126", got)
	}
	if got := expf(1000); math.IsInf(float64(got), 0) || got < 1e38 {
		t.Errorf("expf(1000) = %g, want a finite value near MaxFloat32", got)
	}
}

func TestSoftmaxRow(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range vecLengths[1:] {
		for _, scale := range []float64{1, 30, 300} { // 300: exponents far below the clamp for most entries
			x := randVec(r, n, scale)
			x[r.IntN(n)] += 1e4 // a huge logit must not overflow
			m := math.Inf(-1)
			for _, v := range x {
				m = max(m, float64(v))
			}
			var sum float64
			for _, v := range x {
				sum += math.Exp(float64(v) - m)
			}
			wantLSE := m + math.Log(sum)

			got := append([]float32(nil), x...)
			lse := SoftmaxRow(got)
			goRow := append([]float32(nil), x...)
			goMax := maxGo(goRow)
			goSum := expShiftSumGo(goRow, goMax)
			scaleGo(1/goSum, goRow)
			var total float64
			for i, v := range x {
				want := math.Exp(float64(v)-m) / sum
				if !near(float64(got[i]), want, 8*eps32, 1e-30) || !near(float64(goRow[i]), want, 8*eps32, 1e-30) {
					t.Fatalf("n=%d scale=%g [%d]: %g (go %g), want %g", n, scale, i, got[i], goRow[i], want)
				}
				total += float64(got[i])
			}
			if !near(float64(lse), wantLSE, 4*eps32, 1) {
				t.Errorf("n=%d scale=%g: log-partition %g, want %g", n, scale, lse, wantLSE)
			}
			if math.Abs(total-1) > float64(n)*eps32 {
				t.Errorf("n=%d scale=%g: probabilities sum to %g", n, scale, total)
			}
			// Softmax leaves the same row. Padded with −∞ to a multiple of 8, as attention pads its causal rows,
			// the padding comes out zero to float32 rounding and the row within 1 ulp of the unpadded one.
			plain := append([]float32(nil), x...)
			Softmax(plain)
			padded := append(append([]float32(nil), x...), make([]float32, 7-(n+7)%8)...)
			for i := n; i < len(padded); i++ {
				padded[i] = float32(math.Inf(-1))
			}
			Softmax(padded)
			for i := range padded {
				if i >= n {
					if padded[i] > 1e-37 {
						t.Fatalf("n=%d scale=%g: padding [%d] = %g", n, scale, i, padded[i])
					}
					continue
				}
				if plain[i] != got[i] || !near(float64(padded[i]), float64(got[i]), eps32, 1e-37) {
					t.Fatalf("n=%d scale=%g [%d]: Softmax %g, padded %g, SoftmaxRow %g", n, scale, i, plain[i],
						padded[i], got[i])
				}
			}
		}
	}
	if got := SoftmaxRow(nil); !math.IsInf(float64(got), -1) {
		t.Errorf("SoftmaxRow(nil) = %g, want -Inf", got)
	}
}

func TestRMSNormRow(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range vecLengths[1:] {
		x, w := randVec(r, n, 3), randVec(r, n, 1)
		var ms float64
		for _, v := range x {
			ms += float64(v) * float64(v)
		}
		ms /= float64(n)
		const eps = 1e-5
		wantInv := 1 / math.Sqrt(ms+eps)
		dst := make([]float32, n)
		inv := RMSNormRow(dst, x, w, eps)
		if !near(float64(inv), wantInv, float64(n+4)*eps32, 0) {
			t.Errorf("n=%d: inverse RMS %g, want %g", n, inv, wantInv)
		}
		goDst := make([]float32, n)
		mulScaleGo(goDst, x, w, inv)
		inPlace := append([]float32(nil), x...)
		RMSNormRow(inPlace, inPlace, w, eps)
		for i := range x {
			want := float64(x[i]) * wantInv * float64(w[i])
			if !near(float64(dst[i]), want, float64(n+8)*eps32, 1e-6) {
				t.Fatalf("n=%d [%d]: %g, want %g", n, i, dst[i], want)
			}
			if dst[i] != goDst[i] || inPlace[i] != dst[i] {
				t.Fatalf("n=%d [%d]: vector %g, portable %g, in place %g", n, i, dst[i], goDst[i], inPlace[i])
			}
		}
	}
}

// TestSiLUMulGrad checks the SwiGLU backward pass, vector and portable, against the derivative in float64.
func TestSiLUMulGrad(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, n := range vecLengths {
		g, u, dh := randVec(r, n, 12), randVec(r, n, 2), randVec(r, n, 1)
		if n > 2 {
			g[0], g[1] = -200, 200 // saturated: σ → 0 and → 1
		}
		dg, du, goDg, goDu := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
		SiLUMulGrad(dg, du, dh, g, u)
		siluMulGradGo(goDg, goDu, dh, g, u)
		for i := range g {
			gv, uv, hv := float64(g[i]), float64(u[i]), float64(dh[i])
			s := 1 / (1 + math.Exp(-gv))
			wantU := hv * gv * s
			wantG := hv * uv * s * (1 + gv*(1-s))
			for _, got := range [][2]float32{{dg[i], du[i]}, {goDg[i], goDu[i]}} {
				// Relative to the size of the terms, as 1 + g·(1−s) cancels near g = −1.28; the absolute floor
				// admits the clamped exponent's ~1e-36 for g << 0, as in TestSiLUMul.
				if !near(float64(got[0]), wantG, 16*eps32, max(math.Abs(hv*uv*s)*(1+math.Abs(gv)), 1e-20)) ||
					!near(float64(got[1]), wantU, 8*eps32, 1e-20) {
					t.Fatalf("n=%d [%d] g=%g u=%g dh=%g: dg %g du %g, want %g %g", n, i, g[i], u[i], dh[i],
						got[0], got[1], wantG, wantU)
				}
			}
		}
	}
}

func TestSiLUMul(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, n := range vecLengths {
		g, u := randVec(r, n, 12), randVec(r, n, 2)
		if n > 2 {
			g[0], g[1] = -200, 200 // saturated tails: silu → 0 and → g
		}
		dst := make([]float32, n)
		SiLUMul(dst, g, u)
		goDst := make([]float32, n)
		siluMulGo(goDst, g, u)
		alias := append([]float32(nil), g...)
		SiLUMul(alias, alias, u)
		for i := range g {
			gv := float64(g[i])
			want := gv / (1 + math.Exp(-gv)) * float64(u[i])
			for _, got := range []float32{dst[i], goDst[i], alias[i]} {
				// The absolute floor admits the clamped exponent's ~1e-36 for g << 0, where the exact value is
				// below float32's range anyway.
				if !near(float64(got), want, 8*eps32, 1e-20) {
					t.Fatalf("n=%d [%d] g=%g u=%g: %g, want %g", n, i, g[i], u[i], got, want)
				}
			}
		}
	}
}

// TestF16ToF32Row checks every half-precision bit pattern against github.com/x448/float16, in a row long enough
// for the vector loop and with every alignment of the tail.
func TestF16ToF32Row(t *testing.T) {
	src := make([]byte, 2<<16)
	for i := 0; i < 1<<16; i++ {
		src[2*i], src[2*i+1] = byte(i), byte(i>>8)
	}
	for _, off := range []int{0, 1, 5} {
		n := 1<<16 - off
		dst := make([]float32, n)
		F16ToF32Row(dst, src[2*off:])
		goDst := make([]float32, n)
		f16ToF32Go(goDst, src[2*off:])
		for i := 0; i < n; i++ {
			h := uint16(i + off)
			want := float16.Frombits(h).Float32()
			for _, got := range []float32{dst[i], goDst[i]} {
				if math.IsNaN(float64(want)) {
					if !math.IsNaN(float64(got)) || math.Signbit(float64(got)) != math.Signbit(float64(want)) {
						t.Fatalf("f16 %#04x: %g, want NaN of the same sign", h, got)
					}
					continue
				}
				if math.Float32bits(got) != math.Float32bits(want) {
					t.Fatalf("f16 %#04x: %g (%#08x), want %g", h, got, math.Float32bits(got), want)
				}
			}
		}
	}
}

// TestF32ToF16Row sweeps the float32 bit patterns with a prime stride (every exponent, varied mantissas, NaN
// payloads, subnormals and the rounding ties between them) against x448/float16, bit for bit, on the vector path
// and the portable one, with tails of several lengths.
func TestF32ToF16Row(t *testing.T) {
	const stride = 4099
	src := make([]float32, 0, 1<<20)
	for u := uint64(0); u < 1<<32; u += stride {
		src = append(src, math.Float32frombits(uint32(u)))
	}
	for _, off := range []int{0, 3} {
		in := src[off:]
		dst, goDst := make([]byte, 2*len(in)), make([]byte, 2*len(in))
		F32ToF16Row(dst, in)
		f32ToF16Go(goDst, in)
		for i, v := range in {
			want := float16.Fromfloat32(v).Bits()
			for path, out := range map[string][]byte{"F32ToF16Row": dst, "portable": goDst} {
				if got := uint16(out[2*i]) | uint16(out[2*i+1])<<8; got != want {
					t.Fatalf("%s: float32 %#08x → f16 %#04x, want %#04x", path, math.Float32bits(v), got, want)
				}
			}
		}
	}
}

func TestBF16ToF32Row(t *testing.T) {
	src := make([]byte, 2<<16)
	for i := 0; i < 1<<16; i++ {
		src[2*i], src[2*i+1] = byte(i), byte(i>>8)
	}
	for _, off := range []int{0, 3} {
		n := 1<<16 - off
		dst := make([]float32, n)
		BF16ToF32Row(dst, src[2*off:])
		for i := 0; i < n; i++ {
			if want := uint32(i+off) << 16; math.Float32bits(dst[i]) != want {
				t.Fatalf("bf16 %#04x: %#08x, want %#08x", i+off, math.Float32bits(dst[i]), want)
			}
		}
	}
}
