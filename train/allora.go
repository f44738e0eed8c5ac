package train

import (
	"errors"
	"math"
	"math/rand/v2"

	"github.com/lathe-ml/lathe/internal/kernels"
)

// MethodALLoRA is ALLoRA (H. Huang, R. Balestriero, "ALLoRA: Adaptive Learning Rate Mitigates LoRA Fatal Flaws",
// arXiv 2410.09692): LoRA without dropout and without the α/r scale, ΔW = B·A, whose learning rate is adapted per
// row of each factor to the row's norm. Its result is a plain LoRA.
const MethodALLoRA = "allora"

func init() {
	registerMethod(MethodALLoRA, methodSpec{
		summary: "ALLoRA: LoRA without dropout or α/r scale, each factor row's learning rate 1/√(‖row‖²+1/η²)",
		args:    map[string]string{"eta": "4"},
		build: func(cfg LoRAConfig, args methodArgs) (method, error) {
			if cfg.RSLoRA {
				return nil, errors.New("train: method allora has no scale (the paper drops α/r): --rslora does " +
					"not apply")
			}
			eta := args.Float("eta", 1e-6, 1e6)
			if args.err != nil { // args is build's own copy: newMethod does not see its error
				return nil, args.err
			}
			return &alloraMethod{invEta2: 1 / (eta * eta)}, nil
		},
	})
}

// alloraMethod keeps its projections, in Params order, to scale their step sizes.
type alloraMethod struct {
	invEta2 float64 // 1/η²
	projs   []*plainLoRA
	scales  [][]float32 // the step-size factor of every entry, in Params order (A then B of each projection)
}

func (m *alloraMethod) project(s site) (projection, error) {
	p := newPlainLoRA(s, 1)
	m.projs = append(m.projs, p)
	m.scales = append(m.scales, make([]float32, len(p.lin.a)), make([]float32, len(p.lin.b)))
	return p, nil
}

// lrScales gives every entry of a row of A (rank×cols: one row per rank) or of B (rows×rank: one row per output)
// the factor 1/√(‖row‖² + 1/η²), from the parameters as they are before the update: the paper's adaptive learning
// rate, inversely proportional to the row's ℓ2 norm, which η bounds where the norm is small (B's rows start at zero,
// where the factor is η).
func (m *alloraMethod) lrScales() [][]float32 {
	for i, p := range m.projs {
		alloraRowScales(m.scales[2*i], p.lin.a, p.lin.w.cols, m.invEta2)
		alloraRowScales(m.scales[2*i+1], p.lin.b, p.lin.rank, m.invEta2)
	}
	return m.scales
}

// alloraRowScales sets each row of dst (rows of cols entries, like w) to 1/√(‖w's row‖² + invEta2).
func alloraRowScales(dst, w []float32, cols int, invEta2 float64) {
	for r := 0; r < len(w); r += cols {
		s := float32(1 / math.Sqrt(float64(kernels.SumSquares(w[r:r+cols]))+invEta2))
		for j := r; j < r+cols; j++ {
			dst[j] = s
		}
	}
}

// plainLoRA is LoRA factors as a method's projection: y = x·Wᵀ + scale·(x·Aᵀ)·Bᵀ, with the activations its passes
// keep.
type plainLoRA struct {
	lin    loraLinear
	h, tmp []float32 // x·Aᵀ of the last forward, and the backward's scratch: site.rows × rank each
}

// newPlainLoRA puts LoRA factors of rank s.cfg.Rank on s.w, initialised as PEFT does (A from U(−1/√cols, 1/√cols),
// B zero) from the site's seed.
func newPlainLoRA(s site, scale float32) *plainLoRA {
	w, rank := s.w, s.cfg.Rank
	rng := rand.New(rand.NewPCG(s.seed, 0x6c6f7261))
	a := make([]float32, rank*w.cols)
	bound := 1 / math.Sqrt(float64(w.cols))
	for k := range a {
		a[k] = float32((2*rng.Float64() - 1) * bound)
	}
	return &plainLoRA{
		lin: loraLinear{w: w, rank: rank, active: rank, scale: scale, a: a, b: make([]float32, w.rows*rank),
			da: make([]float32, len(a)), db: make([]float32, w.rows*rank)},
		h: make([]float32, s.rows*rank), tmp: make([]float32, s.rows*rank),
	}
}

func (p *plainLoRA) forward(y, x []float32, n int, buf *[]float32) { p.lin.forward(y, p.h, x, n, buf) }

func (p *plainLoRA) backward(dx, dy, x []float32, n int, buf *[]float32) {
	p.lin.backward(dx, dy, x, p.h, p.tmp, n, buf)
}

func (p *plainLoRA) params() ([][]float32, [][]float32) {
	return [][]float32{p.lin.a, p.lin.b}, [][]float32{p.lin.da, p.lin.db}
}

// factors is lowRank's for ALLoRA, whose scale is 1: the factors are the update as they are. (DoRA keeps its
// plainLoRA in a field, so that this does not make it lowRank.)
func (p *plainLoRA) factors() (a, b []float32, rank int) { return p.lin.a, p.lin.b, p.lin.rank }
