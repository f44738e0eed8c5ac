package train

import (
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/tokenizer"
)

// BenchmarkEval measures llama-perplexity-style evaluation of tiny-llama-a: per iteration one batch of 8 chunks of
// 256 tokens (2048 tokens, the default batch) from val.txt, logits for the second half of each chunk, scored.
func BenchmarkEval(b *testing.B) {
	dir := testshared.Path(b, "models")
	text := readText(b, filepath.Join(dir, "data", "val.txt"))
	for _, typ := range []string{"f32", "q4_k_m"} {
		b.Run(typ, func(b *testing.B) {
			m := openModel(b, filepath.Join(dir, "tiny-llama-a", "gguf", "tiny-llama-a-"+typ+".gguf"))
			tokens := m.Tokenizer.Encode(text, tokenizer.AddSpecial)[:8*256]
			b.ResetTimer()
			for range b.N {
				if _, err := PerplexityTokens(m, tokens, PerplexityOptions{Ctx: 256}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*len(tokens))/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

// BenchmarkGenerate measures token-by-token decoding through the KV cache (48 tokens after a 8-token prompt).
func BenchmarkGenerate(b *testing.B) {
	dir := testshared.Path(b, "models")
	for _, typ := range []string{"f32", "q4_k_m"} {
		b.Run(typ, func(b *testing.B) {
			m := openModel(b, filepath.Join(dir, "tiny-llama-a", "gguf", "tiny-llama-a-"+typ+".gguf"))
			prompt := m.Tokenizer.Encode("Once upon a time", tokenizer.AddSpecial)
			b.ResetTimer()
			n := 0
			for range b.N {
				out, err := m.Generate(prompt, GenerateOptions{MaxTokens: 48, Ctx: 64}, nil)
				if err != nil {
					b.Fatal(err)
				}
				n += len(out)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

// BenchmarkLoRAStep measures one LoRA training step (forward, backward, AdamW) of tiny-llama-a at the recorded
// PyTorch recipe's shape: rank 8 on the seven projections, batch 8 × 256 tokens.
func BenchmarkLoRAStep(b *testing.B) { benchLoRAStep(b, LoRAConfig{}) }

// BenchmarkLoRAStepRecompute is BenchmarkLoRAStep with the activations recomputed in the backward pass.
func BenchmarkLoRAStepRecompute(b *testing.B) { benchLoRAStep(b, LoRAConfig{Recompute: true}) }

// BenchmarkLoRAStepDropout is BenchmarkLoRAStep with LoRA dropout 0.1.
func BenchmarkLoRAStepDropout(b *testing.B) { benchLoRAStep(b, LoRAConfig{Dropout: 0.1}) }

// benchLoRAStep measures BenchmarkLoRAStep's step with the options of cfg besides rank 8 and alpha 16.
func benchLoRAStep(b *testing.B, cfg LoRAConfig) {
	m := openModel(b, testshared.Path(b, "models", "tiny-llama-a", "hf"))
	text := readText(b, filepath.Join(testshared.Path(b, "models", "data"), "shakespeare_val.txt"))
	tokens := m.Tokenizer.Encode(text, tokenizer.AddSpecial)
	const batch, ctx = 8, 256
	cfg.Rank, cfg.Alpha = 8, 16
	l, err := NewLoRAConfig(m, cfg, batch, ctx, 0)
	if err != nil {
		b.Fatal(err)
	}
	windows := make([][]int32, batch)
	for i := range windows {
		windows[i] = tokens[i*(ctx+1) : (i+1)*(ctx+1)]
	}
	opt := NewAdamW(1e-3)
	params, grads := l.Params()
	b.ResetTimer()
	for range b.N {
		if _, err := l.Step(windows, nil); err != nil {
			b.Fatal(err)
		}
		opt.Step(params, grads)
	}
	b.ReportMetric(float64(b.N*batch*ctx)/b.Elapsed().Seconds(), "tokens/s")
}
