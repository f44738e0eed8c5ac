package train

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// TestChunkLossScored: a validation mask that scores one token gives that token's loss alone, as a window ending at
// it scores it (the mask is aligned with the token predicted, not the one predicting); an all-true mask gives
// ChunkLoss; a mask of the wrong length or scoring nothing is refused.
func TestChunkLossScored(t *testing.T) {
	m := tinyLlamaHF(t)
	const ctx = 32
	tokens := shakespeare(t, m, "shakespeare_val.txt")[:3*ctx+5]
	l, err := NewLoRA(m, 4, 8, 4, ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	all := make([]bool, len(tokens))
	for i := range all {
		all[i] = true
	}
	plain, err := l.ChunkLoss(tokens, ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := l.ChunkLossScored(tokens, all, ctx); err != nil || got != plain {
		t.Fatalf("all scored: %v, %v; ChunkLoss %v", got, err, plain)
	}
	const chunk, pos = 1, 13 // score token 13 of the second chunk only
	one := make([]bool, len(tokens))
	one[chunk*ctx+pos] = true
	got, err := l.ChunkLossScored(tokens, one, ctx)
	if err != nil {
		t.Fatal(err)
	}
	window := slices.Clone(tokens[chunk*ctx : chunk*ctx+pos+1])
	window[0] = m.Tokenizer.BOS()
	mask := make([]bool, pos)
	mask[pos-1] = true
	want, err := l.Step([][]int32{window}, [][]bool{mask})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(got-want) > 1e-5*want || math.Abs(got-plain) < 1e-3 {
		t.Errorf("the one scored token's loss is %.7f, the window ending at it gives %.7f (all tokens: %.7f)", got,
			want, plain)
	}
	for _, c := range []struct {
		mask []bool
		want string
	}{{all[1:], "loss-mask entries"}, {make([]bool, len(tokens)), "no prediction"}} {
		if _, err := l.ChunkLossScored(tokens, c.mask, ctx); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want one saying %q", err, c.want)
		}
	}
}
