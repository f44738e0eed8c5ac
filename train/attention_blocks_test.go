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
	attentionForward(out, probs, q, k, v, nil, B, T, c)
	q64, k64, v64 := widen(q), widen(k), widen(v)
	want := attention64(q64, k64, v64, B, T, c)
	for i, w := range want {
		if math.Abs(float64(out[i])-w) > 1e-5*(1+math.Abs(w)) {
			t.Fatalf("forward [%d] = %g, oracle %g", i, out[i], w)
		}
	}
	dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
	attentionBackward(dq, dk, dv, r, probs, q, k, v, nil, make([]float32, 8*T*T), B, T, c)

	checkAttentionBlocks(t, rng, c, nil, B, T, r, [3][]float32{q, k, v}, [3][]float32{dq, dk, dv},
		func(q, k, v []float64) []float64 { return attention64(q, k, v, B, T, c) })
}
