package train

import (
	"fmt"
	"math/rand/v2"
)

// Stream is a training corpus as one token sequence: documents and samples are concatenated (each starting with
// BOS), and training windows are cut from it at random offsets, so attention may cross a sample boundary (plain
// concatenation, as the reference PyTorch recipe trains). Scored, when not nil, has one entry per token and says
// whether predicting that token counts toward the loss: prompts of prompt/completion samples are not scored.
type Stream struct {
	Tokens []int32
	Scored []bool
}

// Windows draws batch windows of ctx+1 consecutive tokens at offsets uniform over the stream, using only rng, so
// that a run restored with the same rng state draws the same windows. scored is nil when every token is scored.
func (s *Stream) Windows(rng *rand.Rand, batch, ctx int) (windows [][]int32, scored [][]bool, err error) {
	if len(s.Tokens) < ctx+1 {
		return nil, nil, fmt.Errorf("train: %d tokens of training data are fewer than one window of %d",
			len(s.Tokens), ctx+1)
	}
	windows = make([][]int32, batch)
	if s.Scored != nil {
		scored = make([][]bool, batch)
	}
	for i := range windows {
		o := rng.IntN(len(s.Tokens) - ctx)
		windows[i] = s.Tokens[o : o+ctx+1]
		if s.Scored != nil {
			// Window position t predicts token o+t+1.
			scored[i] = s.Scored[o+1 : o+ctx+1]
		}
	}
	return windows, scored, nil
}
