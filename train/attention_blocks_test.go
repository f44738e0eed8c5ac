package train

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAttentionBackwardBlocks checks the training attention over a sequence of several query blocks (the forward
// and backward passes go by blocks of queryBlock queries against the keys each block sees), which the small
// problems of TestAttentionBackward do not reach. The output is compared with the float64 oracle, and each gradient
// with the finite-difference derivative of the oracle's loss along random directions confined to one block of
// rows at a time: a wrong term in any block moves the projection by a large fraction of the gradient's size there.
func TestAttentionBackwardBlocks(t *testing.T) {
	c := tinyConfig
	rng := rand.New(rand.NewPCG(7, 8))
	const B, T = 2, 2*queryBlock + 7
	qDim, kvDim := c.Heads*c.HeadDim, c.HeadsKV*c.HeadDim
	q, k, v := randVec(rng, B*T*qDim, 1), randVec(rng, B*T*kvDim, 1), randVec(rng, B*T*kvDim, 1)
	r := randVec(rng, B*T*qDim, 1)
	out, probs := make([]float32, B*T*qDim), make([]float32, B*c.Heads*T*T)
	attentionForward(out, probs, q, k, v, B, T, c)
	q64, k64, v64 := widen(q), widen(k), widen(v)
	want := attention64(q64, k64, v64, B, T, c)
	for i, w := range want {
		if math.Abs(float64(out[i])-w) > 1e-5*(1+math.Abs(w)) {
			t.Fatalf("forward [%d] = %g, oracle %g", i, out[i], w)
		}
	}
	dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
	attentionBackward(dq, dk, dv, r, probs, q, k, v, make([]float32, 8*T*T), B, T, c)

	loss := func(q, k, v []float64) float64 { return dot64(r, attention64(q, k, v, B, T, c)) }
	for _, in := range []struct {
		name string
		x    []float64
		grad []float32
		dim  int
		eval func(x []float64) float64
	}{
		{"dq", q64, dq, qDim, func(x []float64) float64 { return loss(x, k64, v64) }},
		{"dk", k64, dk, kvDim, func(x []float64) float64 { return loss(q64, x, v64) }},
		{"dv", v64, dv, kvDim, func(x []float64) float64 { return loss(q64, k64, x) }},
	} {
		for b := range B {
			for t0 := 0; t0 < T; t0 += queryBlock {
				lo, hi := (b*T+t0)*in.dim, (b*T+min(t0+queryBlock, T))*in.dim
				dir := make([]float64, len(in.x))
				var an, gNorm, dNorm float64
				for i := lo; i < hi; i++ {
					dir[i] = rng.NormFloat64()
					an += float64(in.grad[i]) * dir[i]
					gNorm += float64(in.grad[i]) * float64(in.grad[i])
					dNorm += dir[i] * dir[i]
				}
				const eps = 1e-5
				xp, xm := append([]float64(nil), in.x...), append([]float64(nil), in.x...)
				for i := lo; i < hi; i++ {
					xp[i] += eps * dir[i]
					xm[i] -= eps * dir[i]
				}
				fd := (in.eval(xp) - in.eval(xm)) / (2 * eps)
				rel := math.Abs(fd-an) / math.Sqrt(gNorm*dNorm)
				if gNorm == 0 || rel > 1e-4 {
					t.Errorf("%s, sequence %d, rows %d…: directional derivative %g, analytic %g (error %.2e of "+
						"|grad|·|dir|, |grad| %.3g)", in.name, b, t0, fd, an, rel, math.Sqrt(gNorm))
				}
			}
		}
	}
}
