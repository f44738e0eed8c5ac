package train

import (
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/internal/kernels"
	"github.com/lathe-ml/lathe/internal/linalg"
)

// MethodGaLore is GaLore (Zhao et al., "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection",
// ICML 2024, arXiv 2403.03507, Algorithm 2): full-parameter training in which each projection's gradient is
// projected onto the span of its top-r singular vectors, refreshed every update_proj_gap steps, Adam runs in that
// r-dimensional space, and its normalized step, projected back and scaled, updates the whole weight. The
// embedding, norms and head, if trained, take plain AdamW, as in the paper.
const MethodGaLore = "galore"

// MethodFRUGAL is FRUGAL (Zmushko et al., "FRUGAL: Memory-Efficient Optimization by Reducing State Overhead for
// Scalable Training", ICML 2025, arXiv 2411.07837, Algorithm 1 with the SVD projection): GaLore's split of each
// gradient, Adam on the top singular subspace (of density·min(rows, cols) dimensions, its moments reset at each
// refresh) and, what GaLore drops, signSGD on the residual G − P·Pᵀ·G, which needs no state.
const MethodFRUGAL = "frugal"

func init() {
	registerMethod(MethodGaLore, methodSpec{
		summary: "GaLore: full training with Adam on the gradients' top-r singular subspace (writes a merged model)",
		args: map[string]string{"update_proj_gap": "200", "scale": "0.25", "embed": "true", "norms": "true",
			"head": "true"},
		dense: true,
		build: func(cfg LoRAConfig, a methodArgs) (method, error) {
			return &galoreMethod{rank: cfg.Rank, gap: a.Int("update_proj_gap", 1),
				scale: a.Float("scale", 0, math.MaxFloat32), outside: outsideArgs(&a)}, nil
		},
	})
	registerMethod(MethodFRUGAL, methodSpec{
		summary: "FRUGAL: Adam on the gradients' top singular subspace, signSGD on the rest (writes a merged model)",
		args: map[string]string{"update_gap": "200", "density": "0.25", "proj_params_lr_scale": "1",
			"inactive_lr_scale": "0.1", "embed": "true", "norms": "true", "head": "true"},
		dense: true,
		build: func(_ LoRAConfig, a methodArgs) (method, error) {
			return &galoreMethod{frugal: true, density: a.Float("density", 0, 1), gap: a.Int("update_gap", 1),
				scale:    a.Float("proj_params_lr_scale", 0, math.MaxFloat32),
				inactive: a.Float("inactive_lr_scale", 0, math.MaxFloat32), outside: outsideArgs(&a)}, nil
		},
	})
}

// galoreMethod is GaLore, or FRUGAL when frugal is set.
type galoreMethod struct {
	frugal  bool
	rank    int     // GaLore's r (--rank)
	density float64 // FRUGAL's: r = round(density·min(rows, cols)) per weight
	gap     int
	// scale multiplies the subspace step: GaLore's scale, FRUGAL's proj_params_lr_scale.
	scale float64
	// inactive is FRUGAL's inactive_lr_scale: the residual's signSGD step is lr·scale·inactive.
	inactive float64
	outside  trainOutside
	mats     []*galoreMatrix // in Params order, first in it
	// low, full and res are scratch for one matrix: its projected gradient (then step), the full-size step and
	// FRUGAL's residual.
	low, full, res []float32
}

// galoreMatrix is one projection's weight with its projector and the Adam moments in the projected space. As
// galore_torch's GaLoreProjector (proj_type std), the projection reduces the longer side: a matrix with at least as
// many rows as columns keeps P = the top r right singular vectors (r×cols) and the gradient becomes G·Pᵀ (rows×r);
// a wider one keeps P = the top r left singular vectors (rows×r) and the gradient becomes Pᵀ·G (r×cols). Either way
// the moments take r·max(rows, cols) values each, against rows·cols for AdamW, and the projector r·min(rows, cols).
type galoreMatrix struct {
	p          *denseLinear
	right      bool
	r          int
	proj, m, v []float32
}

func (g *galoreMethod) project(s site) (projection, error) {
	rows, cols := s.w.rows, s.w.cols
	r := g.rank
	if g.frugal {
		r = int(math.Round(g.density * float64(min(rows, cols))))
	}
	if r < 1 || r > min(rows, cols) {
		return nil, fmt.Errorf("a subspace of rank %d for the %d×%d weight: want 1 to %d", r, rows, cols,
			min(rows, cols))
	}
	p, err := newDenseLinear(s.w)
	if err != nil {
		return nil, err
	}
	gm := &galoreMatrix{p: p, right: rows >= cols, r: r}
	low := r * cols
	if gm.right {
		low = rows * r
	}
	gm.proj, gm.m, gm.v = make([]float32, r*min(rows, cols)), make([]float32, low), make([]float32, low)
	g.mats = append(g.mats, gm)
	g.low, g.full = grow(g.low, low), grow(g.full, rows*cols)
	if g.frugal {
		g.res = grow(g.res, rows*cols)
	}
	return p, nil
}

func (g *galoreMethod) extras(m *Model, rows int) (*extraParams, error) {
	return newExtraParams(m, rows, g.outside)
}

func (g *galoreMethod) claimed() []int {
	out := make([]int, len(g.mats))
	for i := range out {
		out[i] = i
	}
	return out
}

// update takes the step of every projected weight with the trainer's betas, eps, weight decay and learning rate.
//
// GaLore is galore_torch's AdamW (correct_bias): the projector refreshed from the gradient at steps 1, 1+gap…;
// R the projected gradient; m ← β₁m + (1−β₁)R, v ← β₂v + (1−β₂)R²; N = m/(√v + eps), projected back and scaled;
// W ← W − lr·√(1−β₂ᵗ)/(1−β₁ᵗ)·N, then W ← W − lr·wd·W. The moments carry over a refresh, as in the paper.
//
// FRUGAL is the authors' GaloreAdamW (reset_statistics, inactive_update_rule sign_sgd): W ← W·(1 − lr·wd) first;
// at a refresh the moments and the bias correction restart (t counts from the refresh); the subspace step is
// torch's AdamW of R at lr·scale, projected back; the residual G − P·R takes −lr·scale·inactive·sign(·).
func (g *galoreMethod) update(step int, opt *AdamW, grads [][]float32) {
	b1, b2, eps := float32(opt.Beta1), float32(opt.Beta2), float32(opt.Eps)
	t := step
	if g.frugal {
		t = (step-1)%g.gap + 1
	}
	bc1, bc2 := 1-math.Pow(opt.Beta1, float64(t)), math.Sqrt(1-math.Pow(opt.Beta2, float64(t)))
	// N = m/(√v·vScale + eps) and the step stepSize·N: GaLore puts eps beside √v, torch beside √v/√(1−β₂ᵗ).
	stepSize, vScale := float32(opt.LR*bc2/bc1), float32(1)
	if g.frugal {
		stepSize, vScale = float32(opt.LR*g.scale/bc1), float32(1/bc2)
	}
	decay := float32(opt.LR * opt.WeightDecay)
	signStep := float32(opt.LR * g.scale * g.inactive)
	for i, gm := range g.mats {
		grad, w, v := grads[i], gm.p.w, gm.p.v
		rows, cols, r := w.rows, w.cols, gm.r
		if g.frugal && decay != 0 {
			kernels.Scale(1-decay, v)
		}
		if (step-1)%g.gap == 0 {
			gm.refresh(grad, rows, cols)
			if g.frugal {
				clear(gm.m)
				clear(gm.v)
			}
		}
		low, full := g.low[:len(gm.m)], g.full[:rows*cols]
		if gm.right {
			kernels.Sgemm(false, true, rows, r, cols, 1, grad, cols, gm.proj, cols, 0, low, r)
		} else {
			kernels.Sgemm(true, false, r, cols, rows, 1, gm.proj, r, grad, cols, 0, low, cols)
		}
		if g.frugal && signStep != 0 {
			res := g.res[:rows*cols]
			gm.up(res, low, 1)
			for j, x := range grad {
				switch d := x - res[j]; {
				case d > 0:
					v[j] -= signStep
				case d < 0:
					v[j] += signStep
				}
			}
		}
		for j, x := range low {
			gm.m[j] = b1*gm.m[j] + (1-b1)*x
			gm.v[j] = b2*gm.v[j] + (1-b2)*x*x
			low[j] = gm.m[j] / (float32(math.Sqrt(float64(gm.v[j])))*vScale + eps)
		}
		scale := float32(1)
		if !g.frugal {
			scale = float32(g.scale)
		}
		gm.up(full, low, scale)
		kernels.Axpy(-stepSize, full, v)
		if !g.frugal && decay != 0 {
			kernels.Scale(1-decay, v)
		}
	}
}

// up sets full (rows×cols) to scale·P·low (left) or scale·low·P (right): the projected matrix brought back.
func (gm *galoreMatrix) up(full, low []float32, scale float32) {
	rows, cols, r := gm.p.w.rows, gm.p.w.cols, gm.r
	if gm.right {
		kernels.Sgemm(false, false, rows, cols, r, scale, low, r, gm.proj, cols, 0, full, cols)
	} else {
		kernels.Sgemm(false, false, rows, cols, r, scale, gm.proj, r, low, cols, 0, full, cols)
	}
}

// refresh sets the projector from the top r singular vectors of the gradient: GaLore's torch.linalg.svd, here
// linalg.RandomizedSVD with a sample as wide as the matrix's rank, which makes it the exact truncated SVD up to
// rounding (its power iterations are skipped and nothing depends on the draw) and runs on the float32 kernels,
// faster than gonum's dgesvd on these shapes. A narrower sample was tried and rejected: gradients' spectra are flat
// enough that 2 power iterations left principal angles of 0.1 to 0.3 rad from the exact subspace.
func (gm *galoreMatrix) refresh(grad []float32, rows, cols int) {
	r := gm.r
	u, _, vt, err := linalg.RandomizedSVD(rows, cols, grad, r, min(rows, cols), 0, 0)
	if err != nil {
		// A gradient with NaN or Inf (the loss diverged) has no subspace: keep the last projector.
		return
	}
	if gm.right {
		for i := range gm.proj { // the first r rows of Vᵀ
			gm.proj[i] = float32(vt[i])
		}
		return
	}
	for i := range gm.proj { // the first r columns of U, which is rows×r
		gm.proj[i] = float32(u[i])
	}
}

// state is each matrix's weight (claimed, so not in the trainer's checkpoint), projector and moments.
func (g *galoreMethod) state() []namedFloats {
	var out []namedFloats
	for i, gm := range g.mats {
		out = append(out, namedFloats{fmt.Sprintf("galore.%d.weight", i), gm.p.v},
			namedFloats{fmt.Sprintf("galore.%d.proj", i), gm.proj},
			namedFloats{fmt.Sprintf("galore.%d.m", i), gm.m}, namedFloats{fmt.Sprintf("galore.%d.v", i), gm.v})
	}
	return out
}
