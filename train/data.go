package train

import (
	"fmt"
	"math/rand/v2"
	"sort"
)

// Packing modes of TrainOptions.Packing: how the samples of a Stream share a training window.
const (
	// PackingConcat cuts windows from the concatenated samples with plain causal attention, so a token may attend
	// to the end of the previous sample, as the recorded PyTorch recipe trains.
	PackingConcat = "concat"
	// PackingConfined cuts the same windows but confines each token's attention to the earlier tokens of its own
	// sample (a block-diagonal causal mask) and restarts the rotary positions at 0 at each sample's first token,
	// as Hugging Face's packing with position_ids (DataCollatorWithFlattening, flash-attention varlen) trains.
	PackingConfined = "confined"
)

// Stream is a training corpus as one token sequence: documents and samples are concatenated (each starting with
// BOS), and training windows are cut from it at random offsets, so a window may hold parts of several samples.
// Scored, when not nil, has one entry per token and says whether predicting that token counts toward the loss:
// prompts of prompt/completion samples are not scored. Starts, when not nil, holds the offset of each sample's
// first token in ascending order (0 first); nil means the stream is one sample. Only confined packing
// (ConfinedWindows) reads it.
type Stream struct {
	Tokens []int32
	Scored []bool
	Starts []int
}

// Windows draws batch windows of ctx+1 consecutive tokens at offsets uniform over the stream, using only rng, so
// that a run restored with the same rng state draws the same windows. scored is nil when every token is scored.
func (s *Stream) Windows(rng *rand.Rand, batch, ctx int) (windows [][]int32, scored [][]bool, err error) {
	windows, scored, _, err = s.draw(rng, batch, ctx, false)
	return windows, scored, err
}

// ConfinedWindows draws the windows Windows draws from the same rng state, with the rotary position of each of a
// window's ctx input tokens for LoRA.StepConfined: 0 at the window's first token (a sample the window cuts is
// taken from where the window starts, as a packed chunk of it would be) and at each sample's first token, counting
// up in between. The prediction of a sample's first token is left out of the loss (scored is then never nil): in
// its own window nothing precedes that token, and Hugging Face's flattening collator masks it likewise.
func (s *Stream) ConfinedWindows(rng *rand.Rand, batch, ctx int) (windows [][]int32, scored [][]bool,
	positions [][]int32, err error) {
	return s.draw(rng, batch, ctx, true)
}

// draw cuts the windows and, when confined, their positions and the loss masks that leave out sample starts.
func (s *Stream) draw(rng *rand.Rand, batch, ctx int, confined bool) (windows [][]int32, scored [][]bool,
	positions [][]int32, err error) {
	if len(s.Tokens) < ctx+1 {
		return nil, nil, nil, fmt.Errorf("train: %d tokens of training data are fewer than one window of %d",
			len(s.Tokens), ctx+1)
	}
	windows = make([][]int32, batch)
	if s.Scored != nil || confined {
		scored = make([][]bool, batch)
	}
	if confined {
		positions = make([][]int32, batch)
	}
	for i := range windows {
		o := rng.IntN(len(s.Tokens) - ctx)
		windows[i] = s.Tokens[o : o+ctx+1]
		if s.Scored != nil {
			// Window position t predicts token o+t+1.
			scored[i] = s.Scored[o+1 : o+ctx+1]
		}
		if confined {
			positions[i], scored[i] = s.segments(o, ctx, scored[i])
		}
	}
	return windows, scored, positions, nil
}

// segments returns the positions of the ctx input tokens of the window at offset o, and a copy of its loss mask
// (all true when nil) with the predictions of the samples' first tokens cleared.
func (s *Stream) segments(o, ctx int, mask []bool) ([]int32, []bool) {
	pos, sc := make([]int32, ctx), make([]bool, ctx)
	if mask == nil {
		for t := range sc {
			sc[t] = true
		}
	} else {
		copy(sc, mask)
	}
	// The first sample start after the window's first token; positions count up to it, and restart there.
	next := sort.SearchInts(s.Starts, o+1)
	p := int32(0)
	for t := range ctx + 1 {
		restart := false
		for ; next < len(s.Starts) && s.Starts[next] <= o+t; next++ {
			restart = true
		}
		if restart {
			p = 0
			if t > 0 {
				sc[t-1] = false // the prediction of this sample's first token
			}
		}
		if t < ctx {
			pos[t] = p
		}
		p++
	}
	return pos, sc
}
