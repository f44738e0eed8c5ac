package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/tensor"
)

// hydra64 is Hydra's output in float64: y = W·x + s·B₁A₁·x + s·B₂A₂·(W·x), with B' = [B₁ B₂] (rows×2r).
func hydra64(x []float64, n int, w, a1, a2, b []float64, rows, cols, r int, s float64) []float64 {
	b1, b2 := make([]float64, rows*r), make([]float64, rows*r)
	for i := range rows {
		copy(b1[i*r:(i+1)*r], b[i*2*r:])
		copy(b2[i*r:(i+1)*r], b[i*2*r+r:])
	}
	y0 := linear64(x, n, w, rows, cols)
	par := linear64(linear64(x, n, a1, r, cols), n, b1, rows, r)
	seq := linear64(linear64(y0, n, a2, r, rows), n, b2, rows, r)
	y := make([]float64, len(y0))
	for i := range y {
		y[i] = y0[i] + s*(par[i]+seq[i])
	}
	return y
}

// TestHydraBackward checks the gradients of x, A₁, A₂ and B' = [B₁ B₂] against central differences of hydra64,
// for an F32 weight and an F16 one, with B' random so that every path carries gradient.
func TestHydraBackward(t *testing.T) {
	for _, dt := range []tensor.DType{tensor.F32, tensor.F16} {
		rng := rand.New(rand.NewPCG(21, 22))
		const n, rows, cols, r, scale = 3, 7, 10, 2, 1.5
		w, _ := testWeight(rng, rows, cols, dt)
		proj, err := hydraMethod{}.project(site{w: w, rows: n, cfg: LoRAConfig{Rank: r, Alpha: r * scale}, seed: 9})
		if err != nil {
			t.Fatal(err)
		}
		p := proj.(*hydraLinear)
		copy(p.lin.b, randVec(rng, len(p.lin.b), 1))
		x, dyv := randVec(rng, n*cols, 1), randVec(rng, n*rows, 1)
		var buf []float32
		y, dx := make([]float32, n*rows), make([]float32, n*cols)
		p.forward(y, x, n, &buf)
		p.backward(dx, dyv, x, n, &buf)
		params, grads := p.params()
		w64 := decode64(t, w)
		x64, a1, a2, b := widen(x), widen(params[0]), widen(params[1]), widen(params[2])
		loss := func(x, a1, a2, b []float64) float64 {
			return dot64(dyv, hydra64(x, n, w64, a1, a2, b, rows, cols, r, scale))
		}
		if got, want := widen(y), hydra64(x64, n, w64, a1, a2, b, rows, cols, r, scale); maxDiff(got, want) > 1e-5 {
			t.Errorf("hydra forward (%s): differs from the float64 oracle by %.2e", dt, maxDiff(got, want))
		}
		fdError(t, "hydra dx ("+dt.String()+")", x, dx, func(x []float64) float64 { return loss(x, a1, a2, b) })
		fdError(t, "hydra dA1 ("+dt.String()+")", params[0], grads[0], func(v []float64) float64 { return loss(x64, v, a2, b) })
		fdError(t, "hydra dA2 ("+dt.String()+")", params[1], grads[1], func(v []float64) float64 { return loss(x64, a1, v, b) })
		fdError(t, "hydra dB ("+dt.String()+")", params[2], grads[2], func(v []float64) float64 { return loss(x64, a1, a2, v) })
	}
}

func maxDiff(a, b []float64) float64 {
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(a[i]-b[i]))
	}
	return d
}

// TestMethodHydra: Hydra trains, its adapter reproduces the trainer's loss and resumes bit for bit (checkMethod, on
// the GGUF file and the Hugging Face checkpoint); it trains r·(in + 3·out) values per projection (A₁ r×in, B₁ out×r,
// A₂ r×out, B₂ out×r); and the adapter file holds exactly the two branches: every module's scale·B·A equals
// s·B₁A₁ + s·B₂A₂W computed in float64 from the trained parameters and the base weight.
func TestMethodHydra(t *testing.T) {
	const r, alpha = 4, 8.0
	opts := TrainOptions{Method: MethodHydra, Targets: []string{"q_proj", "v_proj", "down_proj"}, Rank: r,
		Alpha: alpha, Steps: 6, LR: 2e-3, Batch: 2, Ctx: 64, Seed: 7}
	// The GGUF run checks the adapter's rows of q_proj, which the file keeps in llama.cpp's rotary order.
	checkMethod(t, opts, true)
	run := checkMethod(t, opts, false)
	c := run.l.m.Config
	q, v := c.Heads*c.HeadDim, c.HeadsKV*c.HeadDim
	want := c.Layers * r * ((c.Embd + 3*q) + (c.Embd + 3*v) + (c.FF + 3*c.Embd))
	if run.trainable != want {
		t.Errorf("hydra trains %d values, want r·(in + 3·out) summed over the projections: %d", run.trainable, want)
	}

	a, err := adapter.Open(run.written)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	modules := map[string]adapter.Module{}
	for _, m := range a.Modules {
		modules[m.Target] = m
	}
	checked := 0
	for i := range run.l.layers {
		for j, lin := range run.l.layers[i].linears() {
			if lin.proj == nil {
				continue
			}
			name := fmt.Sprintf("model.layers.%d.%s.weight", i, peftModules[j])
			m, ok := modules[name]
			if !ok {
				t.Fatalf("the adapter has no module for %s", name)
			}
			if m.Rank != 2*r {
				t.Errorf("%s: rank %d in the adapter, want 2r = %d", name, m.Rank, 2*r)
			}
			p := lin.proj.(*hydraLinear)
			rows, cols := lin.w.rows, lin.w.cols
			params, _ := p.params()
			w64 := decode64(t, lin.w)
			// ΔW = s·B₁A₁ + s·B₂A₂W is hydra64's output for the identity input minus W·I, transposed.
			eye := make([]float64, cols*cols)
			for k := range cols {
				eye[k*cols+k] = 1
			}
			y := hydra64(eye, cols, w64, widen(params[0]), widen(params[1]), widen(params[2]), rows, cols, r,
				alpha/r)
			fa, err := m.A.Float32s()
			if err != nil {
				t.Fatal(err)
			}
			fb, err := m.B.Float32s()
			if err != nil {
				t.Fatal(err)
			}
			var worst, norm float64
			for o := range rows {
				for k := range cols {
					want := y[k*rows+o] - w64[o*cols+k]
					var got float64
					for l := range m.Rank {
						got += float64(fb[o*m.Rank+l]) * float64(fa[l*cols+k])
					}
					got *= m.Scale
					worst, norm = max(worst, math.Abs(got-want)), max(norm, math.Abs(want))
				}
			}
			if norm == 0 || worst > 1e-5*norm {
				t.Errorf("%s: the written LoRA's ΔW differs from the two branches by %.3g (max |ΔW| %.3g)", name,
					worst, norm)
			}
			checked++
		}
	}
	if checked != 3*c.Layers {
		t.Errorf("checked %d projections, want %d", checked, 3*c.Layers)
	}
}

// benchProjection times one forward and one backward pass of a method's projection over n rows, the trainer's
// inner loop for one weight, and reports rows (tokens) per second.
func benchProjection(b *testing.B, p projection, rows, cols, n int) {
	rng := rand.New(rand.NewPCG(1, 2))
	x, dy := randVec(rng, n*cols, 1), randVec(rng, n*rows, 1)
	y, dx := make([]float32, n*rows), make([]float32, n*cols)
	var buf []float32
	b.ResetTimer()
	for range b.N {
		p.forward(y, x, n, &buf)
		clear(dx)
		p.backward(dx, dy, x, n, &buf)
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkMethodProjection: one forward and backward pass of each method's projection on a 768×256 F32 weight
// (tiny-llama-a's up_proj) for 512 tokens at r = b = 8: Hydra (a rank-16 LoRA plus A₂·W and its gradient), Bone's
// two structures (bat forms W' for each pass), RandLoRA (32 bases, drawn again in both passes).
func BenchmarkMethodProjection(b *testing.B) {
	const rows, cols, n = 768, 256, 512
	w, _ := testWeight(rand.New(rand.NewPCG(3, 4)), rows, cols, tensor.F32)
	cfg := LoRAConfig{Rank: 8, Alpha: 16}
	for _, c := range []struct {
		name string
		m    method
	}{{"hydra", hydraMethod{}}, {"bone", boneMethod{b: 8}}, {"bat", boneMethod{b: 8, bat: true}},
		{"randlora", randloraMethod{}}} {
		b.Run(c.name, func(b *testing.B) {
			p, err := c.m.project(site{w: w, rows: n, cfg: cfg, seed: 1})
			if err != nil {
				b.Fatal(err)
			}
			benchProjection(b, p, rows, cols, n)
		})
	}
}
