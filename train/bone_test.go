package train

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/linalg"
	"github.com/lathe-ml/lathe/tensor"
)

// boneDelta64 is Bone's ΔW (rows×cols) in float64, written from the paper's block picture rather than from
// bone.go's layout tricks: bone adds D[c mod b][o] to every entry; bat adds W_ij·D_i + D_i to block (i, j).
func boneDelta64(w, d []float64, rows, cols, b int, bat bool) []float64 {
	delta := make([]float64, rows*cols)
	for o := range rows {
		for c := range cols {
			if !bat {
				delta[o*cols+c] = d[(c%b)*rows+o]
				continue
			}
			i, a, j, q := o/b, o%b, c/b, c%b
			v := d[i*b*b+a*b+q]
			for k := range b {
				v += w[o*cols+j*b+k] * d[i*b*b+k*b+q]
			}
			delta[o*cols+c] = v
		}
	}
	return delta
}

// TestBoneBackward checks both structures' gradients (x and D) against central differences of x·(W + ΔW)ᵀ in
// float64, for F32 and F16 weights; bone with a last, partial column group.
func TestBoneBackward(t *testing.T) {
	for _, c := range []struct {
		bat           bool
		rows, cols, b int
		variant       string
	}{{false, 6, 10, 4, "bone"}, {true, 8, 12, 4, "bat"}} {
		for _, dt := range []tensor.DType{tensor.F32, tensor.F16} {
			rng := rand.New(rand.NewPCG(31, 32))
			const n = 3
			w, _ := testWeight(rng, c.rows, c.cols, dt)
			proj, err := boneMethod{b: c.b, bat: c.bat}.project(site{w: w, rows: n})
			if err != nil {
				t.Fatal(err)
			}
			params, grads := proj.params()
			copy(params[0], randVec(rng, len(params[0]), 0.5))
			x, dy := randVec(rng, n*c.cols, 1), randVec(rng, n*c.rows, 1)
			var buf []float32
			y, dx := make([]float32, n*c.rows), make([]float32, n*c.cols)
			proj.forward(y, x, n, &buf)
			proj.backward(dx, dy, x, n, &buf)
			w64 := decode64(t, w)
			out := func(x, d []float64) []float64 {
				wd := boneDelta64(w64, d, c.rows, c.cols, c.b, c.bat)
				for i := range wd {
					wd[i] += w64[i]
				}
				return linear64(x, n, wd, c.rows, c.cols)
			}
			x64, d64 := widen(x), widen(params[0])
			if diff := maxDiff(widen(y), out(x64, d64)); diff > 1e-5 {
				t.Errorf("%s forward (%s): differs from the float64 oracle by %.2e", c.variant, dt, diff)
			}
			fdError(t, c.variant+" dx ("+dt.String()+")", x, dx, func(x []float64) float64 { return dot64(dy, out(x, d64)) })
			fdError(t, c.variant+" dD ("+dt.String()+")", params[0], grads[0], func(d []float64) float64 {
				return dot64(dy, out(x64, d))
			})
		}
	}
}

// TestBoneShapesChecked: bat needs both dimensions to be multiples of the block size, bone shards no wider than
// the weight, and the arguments are checked.
func TestBoneShapesChecked(t *testing.T) {
	for _, args := range []map[string]string{{"init_weights": "lora"}, {"r": "-1"}, {"r": "x"}} {
		if _, err := newMethod(LoRAConfig{Rank: 8, Method: MethodBone, MethodArgs: args}); err == nil ||
			!strings.Contains(err.Error(), "argument") {
			t.Errorf("bone with %v: error %v, want one naming the argument", args, err)
		}
	}
	w, _ := testWeight(rand.New(rand.NewPCG(1, 1)), 8, 12, tensor.F32)
	if _, err := (boneMethod{b: 8, bat: true}).project(site{w: w, rows: 1}); err == nil {
		t.Error("bat with 8×8 blocks on an 8×12 weight: no error")
	}
	if _, err := (boneMethod{b: 16}).project(site{w: w, rows: 1}); err == nil {
		t.Error("bone with 16-column shards on a 12-column weight: no error")
	}
}

// TestMethodBone runs both structures through checkMethod (bone on the Hugging Face checkpoint, bat on the GGUF
// file) and checks that each trains out·b values per projection and that the merged update has the paper's block
// structure: for bone, the ΔW of every projection repeats with period b along its columns and has rank ≤ b; for bat,
// every b×b block is W_ij·D_i + D_i (boneDelta64 from the trained D and the stored weight) and ΔW has rank above b.
func TestMethodBone(t *testing.T) {
	const b = 8
	for _, c := range []struct {
		variant  string
		fromGGUF bool
	}{{"bone", false}, {"bat", true}} {
		run := checkMethod(t, TrainOptions{Method: MethodBone, MethodArgs: map[string]string{"init_weights": c.variant},
			Targets: []string{"q_proj", "o_proj", "up_proj", "down_proj"}, Rank: b, Steps: 6, LR: 1e-3, Batch: 2,
			Ctx: 64, Seed: 11}, c.fromGGUF)
		cfg := run.l.m.Config
		if want := cfg.Layers * b * (cfg.Heads*cfg.HeadDim + cfg.Embd + cfg.FF + cfg.Embd); run.trainable != want {
			t.Errorf("%s trains %d values, want out·b summed over the projections: %d", c.variant, run.trainable, want)
		}
		for i := range run.l.layers {
			for _, lin := range run.l.layers[i].adapted() {
				rows, cols := lin.w.rows, lin.w.cols
				d := make([]float32, rows*cols)
				lin.proj.(dense).delta(d)
				params, _ := lin.proj.params()
				d64 := widen(d)
				rank, _ := numericalRank(t, rows, cols, d64, 1e-5)
				want := boneDelta64(decode64(t, lin.w), widen(params[0]), rows, cols, b, c.variant == "bat")
				if diff, norm := maxDiff(d64, want), maxAbs(want); diff > 1e-5*norm || norm == 0 {
					t.Errorf("%s %s: ΔW differs from the block formula by %.3g (max |ΔW| %.3g)", c.variant,
						lin.w.name, diff, norm)
				}
				switch {
				case c.variant == "bone" && rank > b:
					t.Errorf("bone %s: ΔW has rank %d, more than b = %d", lin.w.name, rank, b)
				case c.variant == "bat" && rank <= b:
					t.Errorf("bat %s: ΔW has rank %d, want more than b = %d (W-guided blocks are full-rank)",
						lin.w.name, rank, b)
				}
				if i == 0 {
					t.Logf("%s %s: numerical rank of ΔW %d of %d", c.variant, lin.w.name, rank, min(rows, cols))
				}
			}
		}
	}
}

func maxAbs(a []float64) float64 {
	m := 0.0
	for _, v := range a {
		m = max(m, math.Abs(v))
	}
	return m
}

// numericalRank returns how many singular values of the rows×cols matrix a exceed rel·σ₁, and the ratio σ_min/σ₁.
func numericalRank(t *testing.T, rows, cols int, a []float64, rel float64) (int, float64) {
	t.Helper()
	sv, err := linalg.SingularValues(rows, cols, slices.Clone(a))
	if err != nil {
		t.Fatal(err)
	}
	rank := 0
	for _, s := range sv {
		if s > rel*sv[0] {
			rank++
		}
	}
	return rank, sv[len(sv)-1] / sv[0]
}
