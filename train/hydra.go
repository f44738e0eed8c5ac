package train

import (
	"math"
	"math/rand/v2"
	"slices"

	"github.com/lathe-ml/lathe/internal/kernels"
)

// MethodHydra (Kim et al., "Hydra: Multi-head Low-rank Adaptation for Parameter Efficient Fine-tuning",
// arXiv 2309.06922) adds to each projection a parallel LoRA branch, as LoRA does, and a sequential one that
// recombines the projection's own output: y = W·x + s·B₁A₁·x + s·B₂A₂·(W·x). The authors' code
// (extremebird/Hydra, forward_vit_hydra_ffn and reparameterize) puts the sequential branch after the frozen
// weight, which is what makes it a "linear combination of the pre-trained features". Its update,
// ΔW = s·B₁A₁ + s·B₂A₂W = [sB₁, sB₂]·[A₁; A₂W], is a LoRA of rank 2r against the base, so it is written as one.
const MethodHydra = "hydra"

func init() {
	registerMethod(MethodHydra, methodSpec{
		summary: "Hydra: a parallel LoRA branch plus a sequential one on the frozen output (writes a rank-2r LoRA)",
		args:    map[string]string{},
		build:   func(LoRAConfig, methodArgs) (method, error) { return hydraMethod{}, nil },
	})
}

type hydraMethod struct{}

// project lays both branches of rank r (--rank) with scale s = α/r (--alpha, or α/√r with --rslora) on the weight.
// As in the authors' Hydra_layer, the down-projections A₁, A₂ start Xavier-uniform and the up-projections B₁, B₂
// at zero, so training starts from the base model; the branches' biases are left out, as LoRA's are, since the
// update is then a plain LoRA.
func (hydraMethod) project(s site) (projection, error) {
	w, r := s.w, s.cfg.Rank
	rng := rand.New(rand.NewPCG(s.seed, 0x6879647261))
	p := &hydraLinear{
		lin: loraLinear{w: w, rank: 2 * r, active: 2 * r, scale: float32(s.cfg.Scale()),
			a: make([]float32, 2*r*w.cols), b: make([]float32, w.rows*2*r),
			da: make([]float32, 2*r*w.cols), db: make([]float32, w.rows*2*r)},
		a2: make([]float32, r*w.rows), da2: make([]float32, r*w.rows),
		h: make([]float32, s.rows*2*r), tmp: make([]float32, s.rows*2*r),
	}
	xavier(rng, p.lin.a[:r*w.cols], r, w.cols)
	xavier(rng, p.a2, r, w.rows)
	return p, nil
}

// xavier fills a (out×in) from torch.nn.init.xavier_uniform_: U(−√(6/(in+out)), √(6/(in+out))).
func xavier(rng *rand.Rand, a []float32, out, in int) {
	bound := math.Sqrt(6 / float64(in+out))
	for i := range a {
		a[i] = float32((2*rng.Float64() - 1) * bound)
	}
}

// hydraLinear computes Hydra as the rank-2r LoRA it is: lin holds A' = [A₁; M] with M = A₂W (r×cols), recomputed
// from A₂ before every forward pass, and B' = [B₁ B₂] (each row: r values of B₁, then r of B₂).
type hydraLinear struct {
	lin     loraLinear
	a2, da2 []float32 // A₂, r×rows: the sequential branch's down-projection of the frozen output
	h, tmp  []float32 // x·A'ᵀ of the last forward, and backward's scratch: rows·2r values each
}

func (p *hydraLinear) r() int { return p.lin.rank / 2 }

// m returns M, the second half of A'.
func (p *hydraLinear) m() []float32 { return p.lin.a[p.r()*p.lin.w.cols:] }

// seqDown sets m = A₂·W, decoding W a block of rows at a time.
func (p *hydraLinear) seqDown(m []float32, buf *[]float32) {
	w, r := p.lin.w, p.r()
	clear(m)
	w.blocks(buf, func(r0, nr int, wb []float32) {
		kernels.Sgemm(false, false, r, w.cols, nr, 1, p.a2[r0:], w.rows, wb, w.cols, 1, m, w.cols)
	})
}

func (p *hydraLinear) forward(y, x []float32, n int, buf *[]float32) {
	p.seqDown(p.m(), buf)
	p.lin.forward(y, p.h, x, n, buf)
}

// backward is the LoRA backward of rank 2r, whose gradient dM of M = A₂W gives dA₂ = dM·Wᵀ.
func (p *hydraLinear) backward(dx, dy, x []float32, n int, buf *[]float32) {
	w, r := p.lin.w, p.r()
	dm := p.lin.da[r*w.cols:]
	clear(dm) // scratch, not a parameter gradient: the trainer does not clear it
	p.lin.backward(dx, dy, x, p.h, p.tmp, n, buf)
	w.blocks(buf, func(r0, nr int, wb []float32) {
		kernels.Sgemm(false, true, r, nr, w.cols, 1, dm, w.cols, wb, w.cols, 1, p.da2[r0:], w.rows)
	})
}

func (p *hydraLinear) params() ([][]float32, [][]float32) {
	k := p.r() * p.lin.w.cols
	return [][]float32{p.lin.a[:k], p.a2, p.lin.b}, [][]float32{p.lin.da[:k], p.da2, p.lin.db}
}

// factors returns A' = [A₁; A₂W] and B' = s·[B₁ B₂]: the rank-2r LoRA of the update.
func (p *hydraLinear) factors() (a, b []float32, rank int) {
	var buf []float32
	a = slices.Clone(p.lin.a)
	p.seqDown(a[p.r()*p.lin.w.cols:], &buf)
	b = slices.Clone(p.lin.b)
	kernels.Scale(p.lin.scale, b)
	return a, b, p.lin.rank
}
