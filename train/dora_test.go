package train

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// TestMethodDoRA: DoRA lowers the loss; its PEFT DoRA adapter (use_dora, lora_magnitude_vector), applied unmerged
// by the runtime, computes what the trainer computed, on the Hugging Face checkpoint and on the GGUF file (whose q
// and k rows, magnitudes included, are in the other rotary order); merged into the model by adapter.MergeAllGGUF or
// MergeAllSafetensors (what `lathe merge` runs) it gives the same loss again; resumed runs are
// bit-identical; it trains r·(rows + cols) + rows values per projection.
func TestMethodDoRA(t *testing.T) {
	const rank = 4
	for _, fromGGUF := range []bool{false, true} {
		run := checkMethod(t, TrainOptions{Method: MethodDoRA, Rank: rank, Alpha: 8,
			Targets: []string{"q_proj", "k_proj", "o_proj", "up_proj"}, Steps: 10, LR: 2e-3, Batch: 2, Ctx: 64,
			Seed: 11}, fromGGUF)
		c := run.l.m.Config
		q, kv, d, ff := c.Heads*c.HeadDim, c.HeadsKV*c.HeadDim, c.Embd, c.FF
		want := c.Layers * (rank*(q+d) + q + rank*(kv+d) + kv + rank*(d+q) + d + rank*(ff+d) + ff)
		if run.trainable != want {
			t.Errorf("DoRA of rank %d on q, k, o and up trains %d values, want r·(rows+cols)+rows summed: %d", rank,
				run.trainable, want)
		}
		a, err := adapter.Open(run.written)
		if err != nil {
			t.Fatal(err)
		}
		if !a.Config.UseDoRA || len(a.Modules) != 4*c.Layers || a.Modules[0].Magnitude == nil {
			t.Errorf("the adapter written has use_dora %v and %d modules (the first with magnitude %v), want a "+
				"DoRA module on each of %d projections", a.Config.UseDoRA, len(a.Modules), a.Modules[0].Magnitude,
				4*c.Layers)
		}
		checkDoRAMerge(t, run, a)
		a.Close()
	}
}

// checkDoRAMerge merges the adapter into run's model (the GGUF file or the checkpoint) as `lathe merge` does
// (adapter.MergeAllGGUF, which puts the q and k magnitudes in GGUF's row order itself, or MergeAllSafetensors) and
// checks that the merged model's validation loss is the trainer's.
func checkDoRAMerge(t *testing.T, run methodRun, a *adapter.Adapter) {
	t.Helper()
	m := run.l.m
	adapters := []*adapter.Adapter{a}
	out := mergeModelFile(t, m.Path, t.TempDir(),
		func(w io.Writer, base *gguf.File) error {
			return adapter.MergeAllGGUF(w, base, adapters, adapter.MergeOptions{})
		},
		func(w io.Writer, base safetensors.Set) error {
			return adapter.MergeAllSafetensors(w, base, adapters, adapter.MergeOptions{})
		})
	merged, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer merged.Close()
	if err := merged.SetCacheType(tensor.F32); err != nil {
		t.Fatal(err)
	}
	ctx := len(run.l.acts[0].rstd1) / run.l.batch
	val := windowsOf(t, shakespeare(t, m, "shakespeare_val.txt"), 8, ctx)
	got, err := MeanLossTokens(merged, val, ctx+1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("merged DoRA model: validation loss %.6f, trainer %.6f", got.Loss, run.after)
	if math.Abs(got.Loss-run.after) > 1e-4*run.after {
		t.Errorf("the model with the DoRA adapter merged gives validation loss %.6f, the trainer %.6f", got.Loss,
			run.after)
	}
}

// TestDoRABackward checks doraLinear's gradients against central differences of the float64 function PEFT
// differentiates: y = m/‖W + s·B₀·A₀‖ ⊙ (x·Wᵀ + s·x·Aᵀ·Bᵀ), the norm held at the point's value (detached), for an
// aligned F32 weight and an F16 one decoded block by block. The forward output is checked against the same function.
func TestDoRABackward(t *testing.T) {
	for _, dt := range []tensor.DType{tensor.F32, tensor.F16} {
		rng := rand.New(rand.NewPCG(13, 14))
		const n, rows, cols, rank, s = 3, 7, 10, 2, 1.5
		w, _ := testWeight(rng, rows, cols, dt)
		proj, err := doraMethod{}.project(site{w: w, rows: n, cfg: LoRAConfig{Rank: rank, Alpha: s * rank}, seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		p := proj.(*doraLinear)
		lin := &p.lora.lin
		copy(lin.a, randVec(rng, rank*cols, 1))
		copy(lin.b, randVec(rng, rows*rank, 1))
		for i := range p.m {
			p.m[i] *= float32(1 + 0.3*rng.NormFloat64()) // away from the norms, so that g ≠ 1
		}
		x, r := randVec(rng, n*cols, 1), randVec(rng, n*rows, 1)
		y := make([]float32, n*rows)
		var buf []float32
		p.forward(y, x, n, &buf)
		dx := make([]float32, n*cols)
		p.backward(dx, r, x, n, &buf)

		w64 := decode64(t, w)
		x64, a64, b64, m64 := widen(x), widen(lin.a), widen(lin.b), widen(p.m)
		adapted := func(a, b []float64) []float64 { // W + s·B·A
			out := append([]float64(nil), w64...)
			for i := range rows {
				for k := range rank {
					for j := range cols {
						out[i*cols+j] += s * b[i*rank+k] * a[k*cols+j]
					}
				}
			}
			return out
		}
		norm := make([]float64, rows) // detached: at the point
		wp := adapted(a64, b64)
		for i := range rows {
			for _, v := range wp[i*cols : (i+1)*cols] {
				norm[i] += v * v
			}
			norm[i] = math.Sqrt(norm[i])
		}
		out := func(x, a, b, m []float64) []float64 {
			y := linear64(x, n, adapted(a, b), rows, cols)
			for i := range y {
				y[i] *= m[i%rows] / norm[i%rows]
			}
			return y
		}
		var worst float64
		for i, v := range out(x64, a64, b64, m64) {
			worst = max(worst, math.Abs(float64(y[i])-v)/(1+math.Abs(v)))
		}
		if worst > 1e-5 {
			t.Errorf("%s: DoRA forward is %.2e from the float64 function", dt, worst)
		}
		loss := func(x, a, b, m []float64) float64 { return dot64(r, out(x, a, b, m)) }
		fdError(t, "dora dx ("+dt.String()+")", x, dx, func(x []float64) float64 { return loss(x, a64, b64, m64) })
		fdError(t, "dora dA ("+dt.String()+")", lin.a, lin.da, func(a []float64) float64 { return loss(x64, a, b64, m64) })
		fdError(t, "dora dB ("+dt.String()+")", lin.b, lin.db, func(b []float64) float64 { return loss(x64, a64, b, m64) })
		fdError(t, "dora dm ("+dt.String()+")", p.m, p.dm, func(m []float64) float64 { return loss(x64, a64, b64, m) })
	}
}

// TestDoRAStartsAsLoRA: with m at its initial value (the row norms of W + s·B·A, which PEFT's dora_init takes
// with B zero), DoRA's g is 1, so the first step's loss and the gradients of A and B are those of a plain LoRA with
// the same factors and scale; m gets a gradient of its own. Checked at PEFT's initialisation (B zero: the output
// is the base model's) and with random B and m set to the norms of the resulting weights.
func TestDoRAStartsAsLoRA(t *testing.T) {
	m := tinyLlamaHF(t)
	const B, T = 2, 16
	windows := windowsOf(t, shakespeare(t, m, "shakespeare_val.txt"), B, T)
	for _, random := range []bool{false, true} {
		cfg := LoRAConfig{Rank: 4, Alpha: 8, Targets: []string{"v_proj", "gate_proj", "down_proj"}}
		plain, err := NewLoRAConfig(m, cfg, B, T, 9)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Method = MethodDoRA
		dora, err := NewLoRAConfig(m, cfg, B, T, 9)
		if err != nil {
			t.Fatal(err)
		}
		if random {
			rng := rand.New(rand.NewPCG(3, 4))
			for i := range dora.layers {
				for _, lin := range dora.layers[i].adapted() {
					p := lin.proj.(*doraLinear)
					for j := range p.lora.lin.b {
						p.lora.lin.b[j] = float32(rng.NormFloat64() * 0.05)
					}
					var buf []float32
					doraNorms(p.m, lin.w, p.lora.lin.a, p.lora.lin.b, cfg.Rank, p.lora.lin.scale, &buf)
				}
			}
		}
		pp, _ := plain.Params()
		dp, _ := dora.Params()
		for i := range pp { // DoRA's tensors are A, B, m for each projection
			copy(pp[i], dp[i+i/2])
		}
		lp, err := plain.Step(windows, nil)
		if err != nil {
			t.Fatal(err)
		}
		ld, err := dora.Step(windows, nil)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(lp-ld) > 1e-6*lp {
			t.Errorf("random B %v: first-step loss: DoRA %.7f, LoRA %.7f", random, ld, lp)
		}
		_, pg := plain.Params()
		_, dg := dora.Params()
		var worst, largest, magnitude float64
		for i := range pg {
			for j, v := range pg[i] {
				worst = max(worst, math.Abs(float64(dg[i+i/2][j]-v)))
				largest = max(largest, math.Abs(float64(v)))
			}
		}
		for i := 2; i < len(dg); i += 3 {
			for _, v := range dg[i] {
				magnitude = max(magnitude, math.Abs(float64(v)))
			}
		}
		t.Logf("random B %v: loss %.6f; largest A/B gradient %.3g, largest difference %.2e; largest m gradient %.3g",
			random, ld, largest, worst, magnitude)
		if largest == 0 || worst > 1e-6*largest {
			t.Errorf("random B %v: DoRA's first-step gradients of A and B differ from LoRA's by %.2e (largest %.3g)",
				random, worst, largest)
		}
		if magnitude == 0 {
			t.Errorf("random B %v: the magnitudes get no gradient", random)
		}
	}
}

// TestDoRAAdapterConfig: the adapter written is PEFT's DoRA layout: use_dora true, r and lora_alpha as trained, and
// one F32 lora_magnitude_vector per module with one value per output row.
func TestDoRAAdapterConfig(t *testing.T) {
	m := tinyLlamaHF(t)
	l, err := NewLoRAConfig(m, LoRAConfig{Rank: 2, Alpha: 6, Targets: []string{"k_proj"}, Method: MethodDoRA}, 1, 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := l.WritePEFT(dir); err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		UseDoRA bool    `json:"use_dora"`
		R       int     `json:"r"`
		Alpha   float64 `json:"lora_alpha"`
	}
	b, err := os.ReadFile(filepath.Join(dir, adapter.ConfigName))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if !cfg.UseDoRA || cfg.R != 2 || cfg.Alpha != 6 {
		t.Errorf("adapter_config.json has use_dora %v, r %d, lora_alpha %g; want true, 2, 6", cfg.UseDoRA, cfg.R,
			cfg.Alpha)
	}
	f, err := safetensors.Open(filepath.Join(dir, adapter.WeightsName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kv := int64(m.Config.HeadsKV * m.Config.HeadDim)
	for i := range m.Config.Layers {
		name := fmt.Sprintf("base_model.model.model.layers.%d.self_attn.k_proj.lora_magnitude_vector", i)
		info, ok := f.Lookup(name)
		if !ok || info.DType != tensor.F32 || !info.Shape.Equal(tensor.Shape{kv}) {
			t.Errorf("%s: present %v, %v %v; want F32 [%d]", name, ok, info.DType, info.Shape, kv)
		}
	}
}
