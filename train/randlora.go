package train

import (
	"math"
	"math/rand/v2"

	"github.com/lathe-ml/lathe/internal/kernels"
)

// MethodRandLoRA (P. Albert et al., "RandLoRA: Full-rank parameter-efficient fine-tuning of large models",
// ICLR 2025, arXiv 2502.00987; PEFT's RandLoraConfig) makes a full-rank update out of N = ⌈m/r⌉ fixed random
// low-rank bases, m = min(out, in), M = max(out, in): ΔW = s·Σᵢ Bᵢ·Λᵢ·A·Γᵢ in the orientation where A faces the
// smaller side, with Bᵢ M×r and A r×m random and frozen (A shared by the bases, as PEFT does), and
// only the diagonals Λᵢ (r values) and Γᵢ (m values) trained: N·(r + m) values per projection, s = α/r.
//
// The bases are never stored, not even in memory between passes: each pass draws them again from the site's seed
// (one PCG stream per basis), which costs M·N·r random numbers, little beside the pass's products. The update is
// full-rank, so the run writes a merged model: as a LoRA it would need rank N·r ≥ m, and (out + in)·N·r values
// are more than the out·in of the weight itself.
const MethodRandLoRA = "randlora"

func init() {
	registerMethod(MethodRandLoRA, methodSpec{
		summary: "RandLoRA: trained diagonal scalings of fixed random bases, full-rank (writes a merged model)",
		args:    map[string]string{"sparse": "false"},
		dense:   true,
		build: func(_ LoRAConfig, args methodArgs) (method, error) {
			return randloraMethod{sparse: args.Bool("sparse")}, nil
		},
	})
}

type randloraMethod struct {
	// sparse draws ternary bases (PEFT's sparse=True, the paper's sparse variant): ±1 with probability 1/6 each,
	// else 0, scaled to unit variance.
	sparse bool
}

// project lays the scalings as PEFT's reset_randlora_parameters does: Λ zero, so that training starts from the
// base model, and Γ = 1/max(N, m) = 1/m.
func (m randloraMethod) project(s site) (projection, error) {
	w, r := s.w, s.cfg.Rank
	small, big := min(w.rows, w.cols), max(w.rows, w.cols)
	nb := (small + r - 1) / r
	p := &randLinear{w: w, r: r, nb: nb, k: nb * r, small: small, big: big, inputSmall: w.cols <= w.rows,
		scale: float32(s.cfg.Scale()), seed: s.seed, sparse: m.sparse,
		lambda: make([]float32, nb*r), gamma: make([]float32, nb*small),
		dl: make([]float32, nb*r), dg: make([]float32, nb*small)}
	for i := range p.gamma {
		p.gamma[i] = 1 / float32(max(nb, small))
	}
	return p, nil
}

// randLinear is RandLoRA on one weight as a LoRA of rank K = N·r with one factor fixed: U = [B₁ … B_N] (M×K)
// and V (K×m), whose row i·r+k is λᵢₖ·A[k]⊙γᵢ. When the input is the smaller side, ΔW = s·U·V; otherwise
// ΔW = s·Vᵀ·Uᵀ.
type randLinear struct {
	w                    *matrix
	r, nb, k, small, big int
	inputSmall           bool
	scale                float32
	seed                 uint64
	sparse               bool
	lambda, gamma        []float32 // Λᵢ (N×r) and Γᵢ (N×m), basis after basis
	dl, dg               []float32
}

// bases draws U (M×K) and A (r×m) from the seed: stream i < N gives Bᵢ, stream N gives A. Uniform values have unit
// variance, as PEFT's bases divided by their standard deviation.
func (p *randLinear) bases(u, a []float32) {
	sqrt3 := float32(math.Sqrt(3))
	parallel(p.nb+1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			g := rand.NewPCG(p.seed, uint64(i))
			draw := func() float32 {
				x := g.Uint64()
				if !p.sparse {
					return (float32(x>>40)*(2.0/(1<<24)) - 1) * sqrt3
				}
				switch v := x >> 11; {
				case v < (1<<53)/6:
					return -sqrt3
				case v >= (1<<53)-(1<<53)/6:
					return sqrt3
				}
				return 0
			}
			if i == p.nb {
				for j := range a[:p.r*p.small] {
					a[j] = draw()
				}
				continue
			}
			for row := range p.big {
				bi := u[row*p.k+i*p.r : row*p.k+(i+1)*p.r]
				for k := range bi {
					bi[k] = draw()
				}
			}
		}
	})
}

// scaled sets V from A and the trained diagonals.
func (p *randLinear) scaled(v, a []float32) {
	m := p.small
	parallel(p.nb, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			gi := p.gamma[i*m : (i+1)*m]
			for k := range p.r {
				vr, ar, l := v[(i*p.r+k)*m:(i*p.r+k+1)*m], a[k*m:(k+1)*m], p.lambda[i*p.r+k]
				for j := range vr {
					vr[j] = l * ar[j] * gi[j]
				}
			}
		}
	})
}

// scratch carves U, A, V, the gradient of V and an n×K product out of the shared buffer, after the frozen product
// has used it, and draws U, A and V.
func (p *randLinear) scratch(buf *[]float32, n int) (u, a, v, dv, h []float32) {
	nu, na, nv := p.big*p.k, p.r*p.small, p.k*p.small
	*buf = grow(*buf, nu+na+2*nv+n*p.k)
	b := *buf
	u, a, v, dv, h = b[:nu], b[nu:nu+na], b[nu+na:nu+na+nv], b[nu+na+nv:nu+na+2*nv], b[nu+na+2*nv:][:n*p.k]
	p.bases(u, a)
	p.scaled(v, a)
	return u, a, v, dv, h
}

func (p *randLinear) forward(y, x []float32, n int, buf *[]float32) {
	rows, cols, k := p.w.rows, p.w.cols, p.k
	frozenForward(p.w, y, x, n, buf)
	u, _, v, _, h := p.scratch(buf, n)
	if p.inputSmall { // y += s·(x·Vᵀ)·Uᵀ
		kernels.Sgemm(false, true, n, k, cols, 1, x, cols, v, cols, 0, h, k)
		kernels.Sgemm(false, true, n, rows, k, p.scale, h, k, u, k, 1, y, rows)
		return
	}
	// y += s·(x·U)·V
	kernels.Sgemm(false, false, n, k, cols, 1, x, cols, u, k, 0, h, k)
	kernels.Sgemm(false, false, n, rows, k, p.scale, h, k, v, rows, 1, y, rows)
}

// backward finds dV and adds dx; then dλᵢₖ = Σⱼ dV[i·r+k][j]·A[k][j]·γᵢⱼ and dγᵢⱼ = Σₖ dV[i·r+k][j]·A[k][j]·λᵢₖ.
// The product through U that the forward pass kept is drawn and multiplied again instead: RandLoRA keeps no
// activations of its own.
func (p *randLinear) backward(dx, dy, x []float32, n int, buf *[]float32) {
	rows, cols, k, m := p.w.rows, p.w.cols, p.k, p.small
	frozenBackward(p.w, dx, dy, n, buf)
	u, a, v, dv, h := p.scratch(buf, n)
	if p.inputSmall { // g = s·dy·U, dV = gᵀ·x, dx += g·V
		kernels.Sgemm(false, false, n, k, rows, p.scale, dy, rows, u, k, 0, h, k)
		kernels.Sgemm(true, false, k, cols, n, 1, h, k, x, cols, 0, dv, cols)
		kernels.Sgemm(false, false, n, cols, k, 1, h, k, v, cols, 1, dx, cols)
	} else { // h = x·U, dV = s·hᵀ·dy; g = s·dy·Vᵀ, dx += g·Uᵀ
		kernels.Sgemm(false, false, n, k, cols, 1, x, cols, u, k, 0, h, k)
		kernels.Sgemm(true, false, k, rows, n, p.scale, h, k, dy, rows, 0, dv, rows)
		kernels.Sgemm(false, true, n, k, rows, p.scale, dy, rows, v, rows, 0, h, k)
		kernels.Sgemm(false, true, n, cols, k, 1, h, k, u, k, 1, dx, cols)
	}
	parallel(p.nb, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			gi, dgi := p.gamma[i*m:(i+1)*m], p.dg[i*m:(i+1)*m]
			for kk := range p.r {
				dvr, ar, l := dv[(i*p.r+kk)*m:(i*p.r+kk+1)*m], a[kk*m:(kk+1)*m], p.lambda[i*p.r+kk]
				var dl float32
				for j, d := range dvr {
					t := d * ar[j]
					dl += t * gi[j]
					dgi[j] += t * l
				}
				p.dl[i*p.r+kk] += dl
			}
		}
	})
}

func (p *randLinear) params() ([][]float32, [][]float32) {
	return [][]float32{p.lambda, p.gamma}, [][]float32{p.dl, p.dg}
}

func (p *randLinear) delta(dst []float32) {
	var buf []float32
	u, _, v, _, _ := p.scratch(&buf, 0)
	rows, cols, k := p.w.rows, p.w.cols, p.k
	if p.inputSmall {
		kernels.Sgemm(false, false, rows, cols, k, p.scale, u, k, v, cols, 0, dst, cols)
		return
	}
	kernels.Sgemm(true, true, rows, cols, k, p.scale, v, rows, u, k, 0, dst, cols)
}
