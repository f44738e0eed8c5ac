package sparsity

import (
	"fmt"
	"testing"

	"github.com/lathe-ml/lathe/prune"
)

// BenchmarkPrincipalMasks computes LIFT masks (budget lora:128) for all 42 linear matrices of tiny-llama-a
// (128×256 to 768×256), one truncated SVD each, in parallel across matrices: at LIFT's rank 128, where the
// randomized SVD samples the whole range (q = 256), against the full SVD, and at rank 32 (q = 64).
func BenchmarkPrincipalMasks(b *testing.B) {
	m := tinyModel(b, "hf")
	for _, c := range []struct {
		rank int
		svd  prune.SVDMode
	}{{128, prune.SVDRandomized}, {128, prune.SVDFull}, {32, prune.SVDRandomized}} {
		opts := Options{
			Score:     prune.ScoreOptions{Method: prune.Principal, Rank: c.rank, SVD: c.svd},
			Selection: prune.Selection{Budget: prune.Budget{Kind: prune.LoRA, Value: 128}},
		}
		b.Run(fmt.Sprintf("r%d/%s", c.rank, c.svd), func(b *testing.B) {
			for b.Loop() {
				if _, err := ComputeMasks(m, opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
