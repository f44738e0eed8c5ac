package train

import (
	"math"
	"slices"
	"testing"

	"github.com/lathe-ml/lathe/internal/linalg"
)

// galoreTargets are a square (q), a tall (up) and a wide (down) weight: both sides of GaLore's projection, at a
// fraction of the cost of all seven.
var galoreTargets = []string{"q_proj", "up_proj", "down_proj"}

// TestMethodGaLore: GaLore lowers the loss, its merged model computes what the trainer computed, a run resumed after
// step 3 (with the projector refreshed at steps 1 and 4) ends bit-identical, it trains every weight of its targets,
// and its optimizer state for each projection is r·max(rows, cols) values per moment (and r·min(rows, cols) for the
// projector), not AdamW's rows·cols.
func TestMethodGaLore(t *testing.T) {
	const r = 8
	run := checkMethod(t, TrainOptions{Method: MethodGaLore, Rank: r, Targets: galoreTargets,
		MethodArgs: map[string]string{"update_proj_gap": "3"}, Steps: 6, LR: 1e-3, Batch: 2, Ctx: 64, Seed: 13}, false)
	c := run.l.m.Config
	proj := c.Layers * (c.Heads*c.HeadDim*c.Embd + 2*c.Embd*c.FF)
	if want := proj + 2*c.Vocab*c.Embd + (2*c.Layers+1)*c.Embd; run.trainable != want {
		t.Errorf("GaLore holds %d trainable values, want every weight of its targets, embedding, norms and head: %d",
			run.trainable, want)
	}
	g := run.l.method.(*galoreMethod)
	if len(g.mats) != 3*c.Layers {
		t.Fatalf("%d projected matrices, want %d", len(g.mats), 3*c.Layers)
	}
	var state int
	for _, gm := range g.mats {
		w := gm.p.w
		want := r * max(w.rows, w.cols)
		if len(gm.m) != want || len(gm.v) != want || len(gm.proj) != r*min(w.rows, w.cols) {
			t.Errorf("%s (%d×%d): moments of %d and %d values, projector of %d, want %d, %d and %d", w.name,
				w.rows, w.cols, len(gm.m), len(gm.v), len(gm.proj), want, want, r*min(w.rows, w.cols))
		}
		state += len(gm.m) + len(gm.v)
	}
	t.Logf("GaLore moments: %d values for %d projection weights (AdamW would keep %d)", state, proj, 2*proj)
}

// TestGaLoreSubspace: with a projector that is not refreshed during the run (update_proj_gap above the steps) and no
// weight decay, GaLore's whole update of each weight lies in the projector's subspace — its column space (wide
// weights, left singular vectors) or row space (tall and square ones, right) — and the projector is orthonormal.
func TestGaLoreSubspace(t *testing.T) {
	m := tinyLlamaHF(t)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_train.txt")}
	const r = 4
	l := mustTrain(t, m, data, TrainOptions{Method: MethodGaLore, Rank: r, Targets: galoreTargets,
		MethodArgs: map[string]string{"update_proj_gap": "100", "embed": "false", "norms": "false", "head": "false"}, Steps: 3, LR: 1e-3,
		Batch: 2, Ctx: 32, Seed: 17})
	g := l.method.(*galoreMethod)
	var worstOrtho, worstResidual float64
	for _, gm := range g.mats {
		w := gm.p.w
		rows, cols := w.rows, w.cols
		delta := make([]float32, rows*cols)
		gm.p.delta(delta)
		// P as rows×r columns (left) or r×cols rows (right): pv(i, k) is the i-th entry of basis vector k.
		n := cols
		pv := func(i, k int) float64 { return float64(gm.proj[k*cols+i]) }
		if !gm.right {
			n = rows
			pv = func(i, k int) float64 { return float64(gm.proj[i*r+k]) }
		}
		for a := range r {
			for b := range r {
				var dot float64
				for i := range n {
					dot += pv(i, a) * pv(i, b)
				}
				if a == b {
					dot--
				}
				worstOrtho = max(worstOrtho, math.Abs(dot))
			}
		}
		// The residual of each row (right) or column (left) of ΔW after projecting on the basis.
		lines, length := rows, cols
		at := func(i, line int) float64 { return float64(delta[line*cols+i]) }
		if !gm.right {
			lines, length = cols, rows
			at = func(i, line int) float64 { return float64(delta[i*cols+line]) }
		}
		res, total := residual64(length, lines, r, at, pv)
		if total == 0 {
			t.Fatalf("%s did not change", w.name)
		}
		worstResidual = max(worstResidual, math.Sqrt(res/total))
	}
	t.Logf("projectors: max |PᵀP − I| %.2e; updates: max ‖ΔW − proj(ΔW)‖/‖ΔW‖ %.2e", worstOrtho, worstResidual)
	if worstOrtho > 1e-5 {
		t.Errorf("a projector is not orthonormal: |PᵀP − I| up to %.2e", worstOrtho)
	}
	// ΔW is V − W in float32, whose rounding leaves a residual of order 1e-7·‖W‖/‖ΔW‖.
	if worstResidual > 1e-3 {
		t.Errorf("an update leaves its projector's subspace: relative residual %.2e", worstResidual)
	}
}

// TestMethodFRUGAL: FRUGAL lowers the loss, its merged model computes what the trainer computed, a run resumed after
// step 3 (refreshes, with moments reset, at steps 1 and 4) ends bit-identical, and its state per weight is
// r = round(density·min(rows, cols)) rows or columns of moments: the residual's signSGD keeps none.
func TestMethodFRUGAL(t *testing.T) {
	run := checkMethod(t, TrainOptions{Method: MethodFRUGAL, Targets: galoreTargets, MethodArgs: map[string]string{
		"update_gap": "3", "density": "0.25"}, Steps: 6, LR: 1e-3, Batch: 2, Ctx: 64, Seed: 19}, false)
	g := run.l.method.(*galoreMethod)
	var state, weights int
	for _, gm := range g.mats {
		w := gm.p.w
		r := int(math.Round(0.25 * float64(min(w.rows, w.cols))))
		if gm.r != r || len(gm.m) != r*max(w.rows, w.cols) || len(gm.v) != len(gm.m) {
			t.Errorf("%s (%d×%d): rank %d and moments of %d values, want rank %d and %d", w.name, w.rows, w.cols,
				gm.r, len(gm.m), r, r*max(w.rows, w.cols))
		}
		state += len(gm.m) + len(gm.v)
		weights += w.rows * w.cols
	}
	t.Logf("FRUGAL moments: %d values for %d projection weights (AdamW would keep %d)", state, weights, 2*weights)
}

// residual64 projects count vectors x(·, j) of length n onto the span of r orthonormal vectors basis(·, a) and
// returns the squared norms of what is left and of the vectors.
func residual64(n, count, r int, x, basis func(i, j int) float64) (res, total float64) {
	coef := make([]float64, r)
	for j := range count {
		clear(coef)
		for a := range r {
			for i := range n {
				coef[a] += basis(i, a) * x(i, j)
			}
		}
		for i := range n {
			v := x(i, j)
			total += v * v
			for a := range r {
				v -= coef[a] * basis(i, a)
			}
			res += v * v
		}
	}
	return res, total
}

// subspaceDistance is the sine of the largest principal angle between the projector p (rows×r left singular
// vectors, or r×cols right ones) and the exact top-r singular subspace of grad (linalg.SVD in float64): the spectral
// norm of (I − U·Uᵀ)·P, bounded here by its Frobenius norm.
func subspaceDistance(t *testing.T, grad, p []float64, rows, cols, r int, right bool) float64 {
	t.Helper()
	u, _, vt, err := linalg.SVD(rows, cols, slices.Clone(grad))
	if err != nil {
		t.Fatal(err)
	}
	k := min(rows, cols)
	// basis(i, j) is entry i of exact vector j, vec(i, j) of projector vector j, over length n.
	n := rows
	basis := func(i, j int) float64 { return u[i*k+j] }
	vec := func(i, j int) float64 { return p[i*r+j] }
	if right {
		n = cols
		basis = func(i, j int) float64 { return vt[j*cols+i] }
		vec = func(i, j int) float64 { return p[j*cols+i] }
	}
	res, _ := residual64(n, r, r, vec, basis)
	return math.Sqrt(res)
}

// TestGaLoreFirstStep64: the first update of every weight equals, in float64, the method's formula applied to the
// step's gradient G (left in the projection's gradient buffer) and the projector P computed from it — GaLore:
// −lr·√(1−β₂)/(1−β₁)·scale·up(m/(√v+eps)); FRUGAL: −lr·s/(1−β₁)·up(m/(√v/√(1−β₂)+eps)) − lr·s·i·sign(G − up(R)),
// with R the projected gradient, m = (1−β₁)R and v = (1−β₂)R², and up(X) = P·X or X·P by the weight's shape; and
// that P spans the exact top singular subspace of G (linalg.SVD, LAPACK's dgesvd).
func TestGaLoreFirstStep64(t *testing.T) {
	m := tinyLlamaHF(t)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_train.txt")}
	const lr = 1e-3
	for _, method := range []string{MethodGaLore, MethodFRUGAL} {
		args := map[string]string{"embed": "false", "norms": "false", "head": "false", "scale": "0.5"}
		if method == MethodFRUGAL {
			args = map[string]string{"embed": "false", "norms": "false", "head": "false", "density": "0.1",
				"proj_params_lr_scale": "0.5", "inactive_lr_scale": "0.3"}
		}
		l := mustTrain(t, m, data, TrainOptions{Method: method, Rank: 4, Targets: []string{"k_proj", "down_proj"},
			MethodArgs: args, Steps: 1, LR: lr, Batch: 2, Ctx: 32, Seed: 23})
		g := l.method.(*galoreMethod)
		const b1, b2, eps = 0.9, 0.999, 1e-8
		var worst, angle float64
		for _, gm := range g.mats {
			rows, cols, r := gm.p.w.rows, gm.p.w.cols, gm.r
			grad, p := widen(gm.p.dv), widen(gm.proj)
			var low []float64
			if gm.right { // R = G·Pᵀ, rows×r
				low = linear64(grad, rows, p, r, cols)
			} else { // R = Pᵀ·G, r×cols
				low = linear64(linalg.Transpose(rows, cols, grad), cols, linalg.Transpose(rows, r, p), r, rows)
				low = linalg.Transpose(cols, r, low)
			}
			up := func(x []float64) []float64 {
				if gm.right { // X·P
					return linear64(x, rows, linalg.Transpose(r, cols, p), cols, r)
				}
				return linalg.Transpose(cols, rows, linear64(linalg.Transpose(r, cols, x), cols, p, rows, r))
			}
			n := make([]float64, len(low))
			for j, x := range low {
				mm, vv := (1-b1)*x, (1-b2)*x*x
				if method == MethodGaLore {
					n[j] = lr * math.Sqrt(1-b2) / (1 - b1) * 0.5 * mm / (math.Sqrt(vv) + eps)
				} else {
					n[j] = lr * 0.5 / (1 - b1) * mm / (math.Sqrt(vv)/math.Sqrt(1-b2) + eps)
				}
			}
			want := up(n)
			for j := range want {
				want[j] = -want[j]
			}
			back := up(low)
			skip := make([]bool, len(want))
			if method == MethodFRUGAL {
				for j, x := range grad {
					res := x - back[j]
					if math.Abs(res) < 1e-6*math.Abs(x) { // a sign that rounding may flip
						skip[j] = true
					}
					if res != 0 {
						want[j] -= lr * 0.5 * 0.3 * math.Copysign(1, res)
					}
				}
			}
			angle = max(angle, subspaceDistance(t, grad, p, rows, cols, r, gm.right))
			got := make([]float32, rows*cols)
			gm.p.delta(got)
			var maxErr, maxWant float64
			for j := range want {
				if !skip[j] {
					maxErr = max(maxErr, math.Abs(float64(got[j])-want[j]))
				}
				maxWant = max(maxWant, math.Abs(want[j]))
			}
			worst = max(worst, maxErr/maxWant)
		}
		t.Logf("%s: first step against the float64 formula: max error %.2e of the largest entry; projectors "+
			"against the exact SVD's: max sin of the largest principal angle %.2e", method, worst, angle)
		if angle > 1e-4 {
			t.Errorf("%s: a projector is %.2e (sine of the largest principal angle) from the exact top singular "+
				"subspace", method, angle)
		}
		// ΔW is V − W in float32: rounding of the weights (|W| up to ~0.1) against steps of ~lr.
		if worst > 5e-4 {
			t.Errorf("%s: the first update differs from the formula by %.2e of its largest entry", method, worst)
		}
	}
}
