package train

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestMethodFull: full fine-tuning of the projections, the embedding, the norms and the head lowers the loss, its
// merged model (GGUF and Hugging Face, which name those tensors differently) computes what the trainer computed —
// so every changed tensor reached the file — and it trains every weight of what it targets.
func TestMethodFull(t *testing.T) {
	for _, fromGGUF := range []bool{false, true} {
		run := checkMethod(t, TrainOptions{Method: MethodFull, Targets: []string{"q_proj", "down_proj"}, Steps: 6,
			LR: 1e-4, Batch: 2, Ctx: 64, Seed: 5}, fromGGUF)
		c := run.l.m.Config
		proj := c.Layers * (c.Heads*c.HeadDim*c.Embd + c.Embd*c.FF)
		outside := 2*c.Vocab*c.Embd + (2*c.Layers+1)*c.Embd // embedding, head, norms
		if run.trainable != proj+outside {
			t.Errorf("full fine-tuning of q_proj and down_proj trains %d values, want every weight of them, the "+
				"embedding, the head and the norms: %d", run.trainable, proj+outside)
		}
		deltas, err := run.l.Deltas()
		if err != nil {
			t.Fatal(err)
		}
		if len(deltas) != 2*c.Layers+2*c.Layers+3 {
			t.Errorf("the merged model changes %d tensors, want %d", len(deltas), 4*c.Layers+3)
		}
	}
}

// TestFullOutsideArgs: embed, norms and head each add exactly their tensors to the trained ones.
func TestFullOutsideArgs(t *testing.T) {
	m := tinyLlamaHF(t)
	c := m.Config
	for _, tc := range []struct {
		embed, norms, head string
		want               int
	}{
		{"false", "false", "false", 0},
		{"true", "false", "false", c.Vocab * c.Embd},
		{"false", "true", "false", (2*c.Layers + 1) * c.Embd},
		{"false", "false", "true", c.Vocab * c.Embd},
	} {
		l, err := NewLoRAConfig(m, LoRAConfig{Rank: 1, Method: MethodFull, Targets: []string{"k_proj"},
			MethodArgs: map[string]string{"embed": tc.embed, "norms": tc.norms, "head": tc.head}}, 1, 8, 1)
		if err != nil {
			t.Fatal(err)
		}
		params, _ := l.Params()
		n := 0
		for _, p := range params {
			n += len(p)
		}
		if want := c.Layers*c.HeadsKV*c.HeadDim*c.Embd + tc.want; n != want {
			t.Errorf("embed=%s norms=%s head=%s: %d trainable values, want %d", tc.embed, tc.norms, tc.head, n, want)
		}
	}
}

// TestFullOutsideGradient64 checks the gradients of the embedding, every RMSNorm weight and the output head against
// central differences of the float64 oracle's loss, along a direction mixing the gradient's own and a random one,
// on tiny-llama-a with a masked batch; then again with the head tied to the embedding (as a model without
// output.weight has it), where the one tensor gets both gradients, and a tied model training only one of them is
// refused.
func TestFullOutsideGradient64(t *testing.T) {
	for _, tied := range []bool{false, true} {
		m := tinyLlamaHF(t)
		if tied {
			m.output = &m.embd
			_, err := NewLoRAConfig(m, LoRAConfig{Rank: 1, Method: MethodFull,
				MethodArgs: map[string]string{"head": "false"}}, 1, 8, 1)
			if err == nil || !strings.Contains(err.Error(), "output head is the token embedding") {
				t.Errorf("a tied model training the embedding alone: error %v, want a refusal", err)
			}
		}
		const B, T = 2, 8
		l, err := NewLoRAConfig(m, LoRAConfig{Rank: 1, Method: MethodFull, Targets: []string{"v_proj"}}, B, T, 1)
		if err != nil {
			t.Fatal(err)
		}
		windows := windowsOf(t, shakespeare(t, m, "shakespeare_val.txt"), B, T)
		scored := [][]bool{{false, true, true, true, true, true, true, true},
			{true, true, true, false, true, true, true, true}}
		if _, err := l.Step(windows, scored); err != nil {
			t.Fatal(err)
		}
		e := l.extra
		if tied != (len(l.extra.head) > 0 && &e.head[0] == &e.embd[0]) {
			t.Fatalf("tied %t: the head and the embedding are shared: %t", tied, !tied)
		}
		w64 := newModel64(t, m)
		if tied {
			w64.output = w64.embd
		}
		f := l.factors64()
		rng := rand.New(rand.NewPCG(3, 4))
		// Each case: the gradient, and the oracle's copies of the tensor (one per layer for the norms).
		cases := []struct {
			name  string
			grads [][]float32
			at    func(*model64) [][]float64
		}{
			{"embedding", [][]float32{e.dembd}, func(w *model64) [][]float64 { return [][]float64{w.embd} }},
			{"attention norms", e.dattnNorm, func(w *model64) [][]float64 {
				var out [][]float64
				for i := range w.layers {
					out = append(out, w.layers[i].attnNorm)
				}
				return out
			}},
			{"feed-forward norms", e.dffnNorm, func(w *model64) [][]float64 {
				var out [][]float64
				for i := range w.layers {
					out = append(out, w.layers[i].ffnNorm)
				}
				return out
			}},
			{"output norm", [][]float32{e.doutNorm}, func(w *model64) [][]float64 { return [][]float64{w.outNorm} }},
		}
		if !tied {
			cases = append(cases, struct {
				name  string
				grads [][]float32
				at    func(*model64) [][]float64
			}{"head", [][]float32{e.dhead}, func(w *model64) [][]float64 { return [][]float64{w.output} }})
		}
		for _, c := range cases {
			var gn, rn, analytic float64
			dir := make([][]float64, len(c.grads))
			for i, g := range c.grads {
				dir[i] = widen(randVec(rng, len(g), 1))
				for j, v := range g {
					gn += float64(v) * float64(v)
					rn += dir[i][j] * dir[i][j]
				}
			}
			gn, rn = math.Sqrt(gn), math.Sqrt(rn)
			for i, g := range c.grads {
				for j, v := range g {
					dir[i][j] = float64(v)/gn + dir[i][j]/rn
					analytic += float64(v) * dir[i][j]
				}
			}
			const eps = 1e-4
			shifted := func(s float64) float64 {
				ts := c.at(w64)
				saved := make([][]float64, len(ts))
				for i, p := range ts {
					saved[i] = slices.Clone(p)
					for j := range p {
						p[j] += s * dir[i][j]
					}
				}
				loss := w64.loss64(l, f, windows, scored)
				for i, p := range ts {
					copy(p, saved[i])
				}
				return loss
			}
			fd := (shifted(eps) - shifted(-eps)) / (2 * eps)
			rel := math.Abs(fd-analytic) / math.Abs(analytic)
			t.Logf("tied %t, %s: directional derivative %.8g, float64 finite difference %.8g, relative error %.2e",
				tied, c.name, analytic, fd, rel)
			if rel > 1e-4 {
				t.Errorf("tied %t, %s: relative error %.2e exceeds 1e-4", tied, c.name, rel)
			}
		}
	}
}
