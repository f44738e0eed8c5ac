package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/tensor"
)

// The backward functions are checked against central finite differences of the float64 oracle of their forward
// (oracle64_test.go), each on a small random problem: the scalar loss is Σ r·y for a fixed random r (so dy = r). The
// error reported is the largest difference between the analytic and numerical gradients over the largest gradient
// component; in float64 the differences are exact to about 1e-9, so what is left is the float32 rounding of the
// backward pass (1e-7 to 1e-6), while any mistake in a formula (a missing term, a wrong transpose) gives errors of
// order 1. The bar is the trainer's acceptance bar, 1e-4.

func randVec(rng *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * scale)
	}
	return v
}

func dot64(r []float32, y []float64) float64 {
	var s float64
	for i := range r {
		s += float64(r[i]) * y[i]
	}
	return s
}

// fdError perturbs every component of x by ±eps in float64, evaluates loss on the perturbed copy, and returns the
// largest deviation of the central differences from analytic, relative to the largest |analytic| component.
func fdError(t *testing.T, name string, x, analytic []float32, loss func(x []float64) float64) float64 {
	t.Helper()
	const eps = 1e-5
	x64 := widen(x)
	var maxErr, maxGrad float64
	for i := range x64 {
		orig := x64[i]
		x64[i] = orig + eps
		lp := loss(x64)
		x64[i] = orig - eps
		lm := loss(x64)
		x64[i] = orig
		fd := (lp - lm) / (2 * eps)
		maxErr = max(maxErr, math.Abs(fd-float64(analytic[i])))
		maxGrad = max(maxGrad, math.Abs(float64(analytic[i])))
	}
	if maxGrad == 0 {
		t.Fatalf("%s: the analytic gradient is zero: the check would prove nothing", name)
	}
	rel := maxErr / maxGrad
	t.Logf("%s: max |fd − analytic| / max |analytic| = %.2e (max |grad| %.3g)", name, rel, maxGrad)
	if rel > 1e-4 {
		t.Errorf("%s: finite-difference error %.2e exceeds 1e-4", name, rel)
	}
	return rel
}

var tinyConfig = Config{Layers: 1, Embd: 16, FF: 24, Heads: 4, HeadsKV: 2, HeadDim: 8, Vocab: 11, NormEps: 1e-5,
	RopeBase: 10000, RopeDims: 8, RopeScale: 1}

func TestRMSNormBackward(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n, d = 3, 16
	x, w, r := randVec(rng, n*d, 1), randVec(rng, d, 1), randVec(rng, n*d, 1)
	y, rstd := make([]float32, n*d), make([]float32, n)
	rmsNormForward(y, rstd, x, w, d, 1e-5)
	dx := make([]float32, n*d)
	rmsNormBackward(dx, r, x, w, rstd, d)
	w64 := widen(w)
	fdError(t, "rmsnorm dx", x, dx, func(x []float64) float64 { return dot64(r, rmsNorm64(x, w64, d, 1e-5)) })
}

func TestRopeBackward(t *testing.T) {
	for _, neox := range []bool{false, true} {
		c := tinyConfig
		c.RopeNeoX = neox
		rng := rand.New(rand.NewPCG(3, 4))
		const n = 5
		half := c.RopeDims / 2
		cos, sin, negSin := make([]float32, n*half), make([]float32, n*half), make([]float32, n*half)
		for p := range n {
			ropeAngles(cos[p*half:], sin[p*half:], p, c, nil)
		}
		for i, s := range sin {
			negSin[i] = -s
		}
		size := n * c.Heads * c.HeadDim
		x, r := randVec(rng, size, 1), randVec(rng, size, 1)
		dx := append([]float32(nil), r...)
		ropeBackward(dx, cos, negSin, n, c.Heads, c)
		name := "rope dx (adjacent pairs)"
		if neox {
			name = "rope dx (NeoX pairs)"
		}
		fdError(t, name, x, dx, func(x []float64) float64 {
			y := append([]float64(nil), x...)
			rope64(y, n, n, c.Heads, c)
			return dot64(r, y)
		})
	}
}

func TestAttentionBackward(t *testing.T) {
	c := tinyConfig
	rng := rand.New(rand.NewPCG(5, 6))
	const B, T = 2, 5
	qDim, kvDim := c.Heads*c.HeadDim, c.HeadsKV*c.HeadDim
	q, k, v := randVec(rng, B*T*qDim, 1), randVec(rng, B*T*kvDim, 1), randVec(rng, B*T*kvDim, 1)
	r := randVec(rng, B*T*qDim, 1)
	out, probs := make([]float32, B*T*qDim), make([]float32, B*c.Heads*T*T)
	attentionForward(out, probs, q, k, v, nil, B, T, c)
	dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
	attentionBackward(dq, dk, dv, r, probs, q, k, v, nil, make([]float32, 8*T*T), B, T, c)
	q64, k64, v64 := widen(q), widen(k), widen(v)
	fdError(t, "attention dq", q, dq, func(q []float64) float64 { return dot64(r, attention64(q, k64, v64, B, T, c)) })
	fdError(t, "attention dk", k, dk, func(k []float64) float64 { return dot64(r, attention64(q64, k, v64, B, T, c)) })
	fdError(t, "attention dv", v, dv, func(v []float64) float64 { return dot64(r, attention64(q64, k64, v, B, T, c)) })
}

func TestSwiGLUBackward(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const n = 40
	g, u, r := randVec(rng, n, 2), randVec(rng, n, 1), randVec(rng, n, 1)
	dg, du := make([]float32, n), make([]float32, n)
	swigluBackward(dg, du, r, g, u)
	g64, u64 := widen(g), widen(u)
	fdError(t, "swiglu dgate", g, dg, func(g []float64) float64 { return dot64(r, swiglu64(g, u64)) })
	fdError(t, "swiglu dup", u, du, func(u []float64) float64 { return dot64(r, swiglu64(g64, u)) })
}

func TestCrossEntropyBackward(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	const n, V = 4, 11
	logits := randVec(rng, n*V, 2)
	targets := []int32{3, -1, 0, 10} // -1: ignored
	grad := append([]float32(nil), logits...)
	crossEntropyForward(grad, targets, V)
	crossEntropyBackward(grad, targets, V, 1/float32(3))
	for j := range V {
		if grad[V+j] != 0 {
			t.Fatalf("the ignored row has gradient %v", grad[V:2*V])
		}
	}
	fdError(t, "cross-entropy dlogits", logits, grad, func(l []float64) float64 { return crossEntropy64(l, targets, V) })
}

// TestLoRALinearBackward checks x·Wᵀ + s·(x·Aᵀ)·Bᵀ for an aligned F32 weight (used in place) and an F16 one
// (decoded block by block in both passes), on 3 rows (the F32 weight unmerged) and 25 (merged in both passes: see
// loraLinear.merges).
func TestLoRALinearBackward(t *testing.T) {
	for _, c := range []struct {
		dt tensor.DType
		n  int
	}{{tensor.F32, 3}, {tensor.F32, 25}, {tensor.F16, 3}} {
		rng := rand.New(rand.NewPCG(11, 12))
		dt, n := c.dt, c.n
		const rows, cols, rank = 7, 10, 2
		w, _ := testWeight(rng, rows, cols, dt)
		l := &loraLinear{w: w, rank: rank, active: rank, scale: 1.5, a: randVec(rng, rank*cols, 1),
			b: randVec(rng, rows*rank, 1), da: make([]float32, rank*cols), db: make([]float32, rows*rank)}
		x, r := randVec(rng, n*cols, 1), randVec(rng, n*rows, 1)
		y, h := make([]float32, n*rows), make([]float32, n*rank)
		var buf []float32
		l.forward(y, h, x, n, &buf)
		dx := make([]float32, n*cols)
		l.backward(dx, r, x, h, make([]float32, n*rank), n, &buf)
		w64 := decode64(t, w) // the F16 weight as stored
		x64, a64, b64 := widen(x), widen(l.a), widen(l.b)
		loss := func(x, a, b []float64) float64 {
			y := linear64(x, n, w64, rows, cols)
			delta := linear64(linear64(x, n, a, rank, cols), n, b, rows, rank)
			for i := range y {
				y[i] += 1.5 * delta[i]
			}
			return dot64(r, y)
		}
		name := fmt.Sprintf("lora linear (%s, %d rows, merged forward %v)", dt, n, l.merges(n, cols))
		fdError(t, name+" dx", x, dx, func(x []float64) float64 { return loss(x, a64, b64) })
		fdError(t, name+" dA", l.a, l.da, func(a []float64) float64 { return loss(x64, a, b64) })
		fdError(t, name+" dB", l.b, l.db, func(b []float64) float64 { return loss(x64, a64, b) })
	}
}

// TestAdamWFirstStep checks AdamW against what torch.optim.AdamW provably does on its first step: with bias
// correction m̂ = g and v̂ = g², so every parameter moves by −lr·g/(|g|+eps) after decaying by (1 − lr·wd).
func TestAdamWFirstStep(t *testing.T) {
	p := []float32{1, -2, 0.5, 3}
	g := []float32{0.3, -1e-3, 2, 0}
	o := NewAdamW(0.1)
	want := make([]float64, len(p))
	for i := range p {
		want[i] = float64(p[i])*(1-0.1*0.01) - 0.1*float64(g[i])/(math.Abs(float64(g[i]))+1e-8)
	}
	o.Step([][]float32{p}, [][]float32{g})
	for i := range p {
		if math.Abs(float64(p[i])-want[i]) > 1e-6 {
			t.Errorf("param %d = %v after one step, want %v", i, p[i], want[i])
		}
	}
	// A second step with the same gradient: m = g, v = g², and the corrections cancel again.
	prev := append([]float32(nil), p...)
	o.Step([][]float32{p}, [][]float32{g})
	for i := range p {
		w := float64(prev[i])*(1-0.1*0.01) - 0.1*float64(g[i])/(math.Abs(float64(g[i]))+1e-8)
		if math.Abs(float64(p[i])-w) > 1e-6 {
			t.Errorf("param %d = %v after two steps, want %v", i, p[i], w)
		}
	}
}

// testWeight is a random rows×cols weight stored as dt (an aligned F32 weight is used in place, others are decoded
// block by block) and its float32 values, for the gradient checks of projections.
func testWeight(rng *rand.Rand, rows, cols int, dt tensor.DType) (*matrix, []float32) {
	wf := randVec(rng, rows*cols, 1)
	rowBytes := cols * int(dt.Bits()) / 8
	data := make([]byte, rows*rowBytes)
	tensor.FromFloat32(data, wf, dt)
	w := &matrix{name: "w", dtype: dt, rows: rows, cols: cols, rowBytes: rowBytes, data: data}
	if dt == tensor.F32 {
		w.f32 = wf
	}
	return w, wf
}
