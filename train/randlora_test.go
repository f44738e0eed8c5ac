package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/lathe-ml/lathe/internal/linalg"
	"github.com/lathe-ml/lathe/tensor"
)

// randloraDelta64 is the paper's ΔW = s·Σᵢ Bᵢ·diag(λᵢ)·A·diag(γᵢ) (rows×cols) in float64, summed basis by basis
// from the drawn bases (u holds Bᵢ as columns i·r…i·r+r−1) and the diagonals l, g, transposed when the output is
// the smaller side.
func randloraDelta64(p *randLinear, u, a []float32, l, g []float64) []float64 {
	M, m, r, k := p.big, p.small, p.r, p.k
	d := make([]float64, M*m) // M×m
	for i := range p.nb {
		for row := range M {
			for j := range m {
				var s float64
				for kk := range r {
					s += float64(u[row*k+i*r+kk]) * l[i*r+kk] * float64(a[kk*m+j])
				}
				d[row*m+j] += float64(p.scale) * s * g[i*m+j]
			}
		}
	}
	if p.inputSmall {
		return d
	}
	return linalg.Transpose(M, m, d)
}

func randloraDraw(p *randLinear) (u, a []float32) {
	u, a = make([]float32, p.big*p.k), make([]float32, p.r*p.small)
	p.bases(u, a)
	return u, a
}

// TestRandLoRABackward checks dx, dΛ and dΓ against central differences of x·(W + ΔW)ᵀ in float64, for both
// orientations (the input the smaller side or the output), with N·r above m, on F32 and F16 weights.
func TestRandLoRABackward(t *testing.T) {
	for _, shape := range [][2]int{{7, 5}, {4, 9}} {
		for _, dt := range []tensor.DType{tensor.F32, tensor.F16} {
			rng := rand.New(rand.NewPCG(41, 42))
			const n, r = 3, 2
			rows, cols := shape[0], shape[1]
			w, _ := testWeight(rng, rows, cols, dt)
			proj, err := randloraMethod{}.project(site{w: w, rows: n, cfg: LoRAConfig{Rank: r, Alpha: 3}, seed: 5})
			if err != nil {
				t.Fatal(err)
			}
			p := proj.(*randLinear)
			copy(p.lambda, randVec(rng, len(p.lambda), 1))
			copy(p.gamma, randVec(rng, len(p.gamma), 1))
			x, dy := randVec(rng, n*cols, 1), randVec(rng, n*rows, 1)
			var buf []float32
			y, dx := make([]float32, n*rows), make([]float32, n*cols)
			p.forward(y, x, n, &buf)
			p.backward(dx, dy, x, n, &buf)
			u, a := randloraDraw(p)
			w64 := decode64(t, w)
			lambda, gamma := slices.Clone(p.lambda), slices.Clone(p.gamma)
			out64 := func(x, l, g []float64) []float64 {
				wd := randloraDelta64(p, u, a, l, g)
				for i := range wd {
					wd[i] += w64[i]
				}
				return linear64(x, n, wd, rows, cols)
			}
			x64, l64, g64 := widen(x), widen(lambda), widen(gamma)
			if diff := maxDiff(widen(y), out64(x64, l64, g64)); diff > 1e-5 {
				t.Errorf("randlora forward %dx%d (%s): differs from the float64 oracle by %.2e", rows, cols, dt, diff)
			}
			name := func(s string) string {
				return fmt.Sprintf("randlora %s %d×%d %s", s, rows, cols, dt)
			}
			fdError(t, name("dx"), x, dx, func(x []float64) float64 { return dot64(dy, out64(x, l64, g64)) })
			fdError(t, name("dΛ"), lambda, p.dl, func(l []float64) float64 { return dot64(dy, out64(x64, l, g64)) })
			fdError(t, name("dΓ"), gamma, p.dg, func(g []float64) float64 { return dot64(dy, out64(x64, l64, g)) })
		}
	}
}

// TestRandLoRABases: the bases are a function of the seed alone — drawn again they are the same, another seed gives
// others — with unit variance; the sparse ones are ternary with PEFT's probabilities (1/6, 2/3, 1/6).
func TestRandLoRABases(t *testing.T) {
	w, _ := testWeight(rand.New(rand.NewPCG(1, 2)), 96, 64, tensor.F32)
	for _, sparse := range []bool{false, true} {
		at := func(seed uint64) *randLinear {
			p, err := randloraMethod{sparse: sparse}.project(site{w: w, rows: 1, cfg: LoRAConfig{Rank: 4, Alpha: 8},
				seed: seed})
			if err != nil {
				t.Fatal(err)
			}
			return p.(*randLinear)
		}
		u1, a1 := randloraDraw(at(3))
		u2, a2 := randloraDraw(at(3))
		u3, a3 := randloraDraw(at(4))
		if !slices.Equal(u1, u2) || !slices.Equal(a1, a2) {
			t.Errorf("sparse=%v: two draws from one seed differ", sparse)
		}
		if slices.Equal(u1, u3) || slices.Equal(a1, a3) {
			t.Errorf("sparse=%v: seeds 3 and 4 draw the same bases", sparse)
		}
		var sum, sq float64
		zeros := 0
		all := append(slices.Clone(u1), a1...)
		for _, v := range all {
			sum += float64(v)
			sq += float64(v) * float64(v)
			if v == 0 {
				zeros++
			}
			if sparse && v != 0 && math.Abs(math.Abs(float64(v))-math.Sqrt(3)) > 1e-6 {
				t.Fatalf("sparse basis value %g: want 0 or ±√3", v)
			}
		}
		nv := float64(len(all))
		mean, variance := sum/nv, sq/nv
		t.Logf("sparse=%v: %d values, mean %.4f, mean square %.4f, zeros %.3f", sparse, len(all), mean, variance,
			float64(zeros)/nv)
		if math.Abs(mean) > 0.03 || math.Abs(variance-1) > 0.03 {
			t.Errorf("sparse=%v: bases have mean %.4f and mean square %.4f, want 0 and 1", sparse, mean, variance)
		}
		if sparse && math.Abs(float64(zeros)/nv-2.0/3) > 0.02 {
			t.Errorf("sparse bases: %.3f zeros, want 2/3", float64(zeros)/nv)
		}
	}
}

// TestMethodRandLoRA: RandLoRA trains, its merged model reproduces the trainer's loss and resumes bit for bit
// (checkMethod); it trains N·(r + m) values per projection; after training, every projection's bases drawn again
// are those a new projection at the same seed draws (they are never trained nor stored), its ΔW is the paper's sum
// over bases in float64, and that ΔW is of high rank (singular values above 1e-6·σ₁): far above r, mostly m.
func TestMethodRandLoRA(t *testing.T) {
	const r = 8
	opts := TrainOptions{Method: MethodRandLoRA, Targets: []string{"q_proj", "v_proj", "up_proj", "down_proj"},
		Rank: r, Alpha: 20 * r, Steps: 6, LR: 2e-3, Batch: 2, Ctx: 64, Seed: 13}
	run := checkMethod(t, opts, false)
	c := run.l.m.Config
	want := 0
	for _, dims := range [][2]int{{c.Heads * c.HeadDim, c.Embd}, {c.HeadsKV * c.HeadDim, c.Embd}, {c.FF, c.Embd},
		{c.Embd, c.FF}} {
		m := min(dims[0], dims[1])
		want += (m + r - 1) / r * (r + m)
	}
	want *= c.Layers
	if run.trainable != want {
		t.Errorf("randlora trains %d values, want N·(r + m) summed over the projections: %d", run.trainable, want)
	}
	for i := range run.l.layers {
		for j, lin := range run.l.layers[i].linears() {
			if lin.proj == nil {
				continue
			}
			p := lin.proj.(*randLinear)
			fresh, err := randloraMethod{}.project(site{w: lin.w, layer: i, module: targetNames[j], rows: 1,
				cfg: LoRAConfig{Rank: opts.Rank, Alpha: opts.Alpha}, seed: siteSeed(opts.Seed, i, targetNames[j])})
			if err != nil {
				t.Fatal(err)
			}
			u, a := randloraDraw(p)
			u0, a0 := randloraDraw(fresh.(*randLinear))
			if !slices.Equal(u, u0) || !slices.Equal(a, a0) {
				t.Errorf("%s: the bases after training are not those of the seed", lin.w.name)
			}
			rows, cols := lin.w.rows, lin.w.cols
			d := make([]float32, rows*cols)
			p.delta(d)
			d64 := widen(d)
			oracle := randloraDelta64(p, u, a, widen(p.lambda), widen(p.gamma))
			if diff, norm := maxDiff(d64, oracle), maxAbs(oracle); diff > 1e-5*norm || norm == 0 {
				t.Errorf("%s: ΔW differs from the sum over bases by %.3g (max |ΔW| %.3g)", lin.w.name, diff, norm)
			}
			if i > 1 {
				continue // the rank of a few layers' updates is enough
			}
			rank, cond := numericalRank(t, rows, cols, oracle, 1e-6)
			t.Logf("%s: ΔW of rank %d of %d (r = %d); σ_min/σ_max %.2e", lin.w.name, rank, min(rows, cols), r, cond)
			if rank <= 4*r {
				t.Errorf("%s: ΔW has numerical rank %d of %d, want far above r = %d", lin.w.name, rank,
					min(rows, cols), r)
			}
		}
	}
}
