package train

import (
	"errors"
	"fmt"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/tokenizer"
)

// ActivationStats accumulates what llama-imatrix collects (tools/imatrix/imatrix.cpp,
// IMatrixCollector::collect_imatrix): for every weight matrix a forward pass multiplies by, the sum over tokens of
// the squared input activation of each column, and the number of tokens. The activations are the float32 values
// before any rounding for the weight type, as ggml's callback sees src1. Keys are GGUF tensor names
// (blk.0.attn_q.weight), also for a Hugging Face model.
type ActivationStats struct {
	Sums   map[string][]float64
	Counts map[string]int64
}

// NewActivationStats returns empty statistics.
func NewActivationStats() *ActivationStats {
	return &ActivationStats{Sums: map[string][]float64{}, Counts: map[string]int64{}}
}

// CollectActivations makes every later Forward add its products' inputs to s; nil stops collecting.
func (m *Model) CollectActivations(s *ActivationStats) {
	m.mu.Lock() // Forward holds the lock for the whole pass, so s is never swapped mid-pass
	m.stats = s
	m.mu.Unlock()
}

// add sums the squares of the n rows of x, cols values each, into name's column sums. It runs under Forward's
// lock; columns are split among threads so that each sum is accumulated in token order, whatever the thread count.
func (s *ActivationStats) add(name string, x []float32, n, cols int) {
	sums := s.Sums[name]
	if sums == nil {
		sums = make([]float64, cols)
		s.Sums[name] = sums
	}
	parallel(cols, func(lo, hi int) {
		for i := range n {
			row := x[i*cols+lo : i*cols+hi]
			acc := sums[lo:hi]
			for j, v := range row {
				acc[j] += float64(v) * float64(v)
			}
		}
	})
	s.Counts[name] += int64(n)
}

// ImatrixOptions tunes Imatrix.
type ImatrixOptions struct {
	// Ctx is the chunk length in tokens (llama-imatrix -c); 0 means 512.
	Ctx int
	// Chunks limits the number of chunks evaluated (--chunks); 0 evaluates all.
	Chunks int
	// Progress, if set, is called after each chunk.
	Progress func(chunk, chunks int)
}

// Imatrix computes the importance matrix of m on text as llama-imatrix does: the text is tokenized once (with BOS
// when the vocabulary adds one) and cut into chunks of Ctx tokens, the tail dropped; each chunk, its first token
// replaced by BOS, is run through the model and every token's activations are collected. The output matrix is left
// out, as llama-imatrix leaves it out without --process-output. The result's Datasets and ChunkSize are for the
// caller to fill as it names the text.
func Imatrix(m *Model, text string, opts ImatrixOptions) (*convert.ImatrixStats, error) {
	ctx := opts.Ctx
	if ctx == 0 {
		ctx = 512
	}
	if ctx < 2 {
		return nil, fmt.Errorf("train: imatrix context %d is too small", ctx)
	}
	tokens := m.Tokenizer.Encode(text, tokenizer.AddSpecial)
	chunks := len(tokens) / ctx
	if opts.Chunks > 0 {
		chunks = min(chunks, opts.Chunks)
	}
	if chunks == 0 {
		return nil, fmt.Errorf("train: imatrix with a context of %d needs at least %d tokens; the text has %d",
			ctx, ctx, len(tokens))
	}
	stats := NewActivationStats()
	m.CollectActivations(stats)
	defer m.CollectActivations(nil)
	cache := m.NewKVCache(ctx)
	input := make([]int32, ctx)
	for c := range chunks {
		copy(input, tokens[c*ctx:(c+1)*ctx])
		if m.Tokenizer.AddsBOS() {
			input[0] = m.Tokenizer.BOS()
		}
		cache.Reset()
		if err := m.Forward(Sequence{Cache: cache, Tokens: input}); err != nil {
			return nil, err
		}
		if opts.Progress != nil {
			opts.Progress(c+1, chunks)
		}
	}
	if len(stats.Sums) == 0 {
		return nil, errors.New("train: the model multiplied by no weight matrix")
	}
	return &convert.ImatrixStats{Sums: stats.Sums, Counts: stats.Counts, Chunks: chunks, ChunkSize: ctx}, nil
}
