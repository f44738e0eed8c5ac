package train

import (
	"errors"
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/tokenizer"
)

// PerplexityOptions tunes Perplexity.
type PerplexityOptions struct {
	// Ctx is the chunk length in tokens (llama-perplexity -c); 0 means 512, llama.cpp's default.
	Ctx int
	// Chunks limits the number of chunks evaluated (llama-perplexity --chunks); 0 evaluates all.
	Chunks int
	// Batch is how many tokens one forward pass takes (llama-perplexity -b); chunks are evaluated Batch/Ctx at a
	// time. 0 means 2048, llama.cpp's default. It changes speed and memory, not the result.
	Batch int
	// Progress, if set, is called after each chunk with the running perplexity estimate, which llama-perplexity
	// prints as "[chunk]estimate,".
	Progress func(chunk int, ppl float64)
}

// PerplexityResult is llama-perplexity's final estimate and the numbers behind it.
type PerplexityResult struct {
	PPL     float64   `json:"ppl"`      // exp of the mean negative log-likelihood
	Err     float64   `json:"ppl_err"`  // its standard error, the "+/-" of llama-perplexity
	MeanNLL float64   `json:"mean_nll"` // in nats per token
	Ctx     int       `json:"n_ctx"`
	Chunks  int       `json:"n_chunks"`
	Tokens  int       `json:"tokens"`        // the whole text, BOS included
	Scored  int       `json:"tokens_scored"` // predictions averaged
	Running []float64 `json:"running"`       // the estimate after each chunk
}

// Perplexity scores text exactly as llama-perplexity does (tools/perplexity, perplexity()): the whole text is
// tokenized once, with BOS when the vocabulary adds one; it is cut into non-overlapping chunks of Ctx tokens (the
// incomplete tail is dropped); each chunk is evaluated on its own with its first token replaced by BOS, and only the
// predictions made from the second half of the chunk count: the logits at positions Ctx/2 … Ctx-2, each scored
// against the token that follows.
func Perplexity(m *Model, text string, opts PerplexityOptions) (*PerplexityResult, error) {
	if m.Tokenizer.AddsEOS() {
		return nil, errors.New("train: perplexity needs a vocabulary that does not append EOS (as llama-perplexity)")
	}
	return PerplexityTokens(m, m.Tokenizer.Encode(text, tokenizer.AddSpecial), opts)
}

// PerplexityTokens is Perplexity over text already tokenized (with BOS, if the vocabulary adds one).
func PerplexityTokens(m *Model, tokens []int32, opts PerplexityOptions) (*PerplexityResult, error) {
	ctx := opts.Ctx
	if ctx == 0 {
		ctx = 512
	}
	if ctx < 4 {
		return nil, fmt.Errorf("train: perplexity context %d is too small", ctx)
	}
	if len(tokens) < 2*ctx {
		return nil, fmt.Errorf("train: perplexity with a context of %d needs at least %d tokens; the text has %d",
			ctx, 2*ctx, len(tokens))
	}
	chunks := len(tokens) / ctx
	if opts.Chunks > 0 {
		chunks = min(chunks, opts.Chunks)
	}
	batch := opts.Batch
	if batch == 0 {
		batch = 2048
	}
	nSeq := max(1, batch/ctx)
	vocab := m.Config.Vocab
	first := ctx / 2
	res := &PerplexityResult{Ctx: ctx, Chunks: chunks, Tokens: len(tokens)}
	caches := make([]*KVCache, nSeq)
	logits := make([][]float32, nSeq)
	inputs := make([][]int32, nSeq)
	for i := range caches {
		caches[i] = m.NewKVCache(ctx)
		logits[i] = make([]float32, (ctx-first)*vocab)
		inputs[i] = make([]int32, ctx)
	}
	nlls := make([]float64, ctx)
	var nll, nll2 float64
	count := 0
	for c0 := 0; c0 < chunks; c0 += nSeq {
		seqs := make([]Sequence, 0, nSeq)
		for s := 0; s < nSeq && c0+s < chunks; s++ {
			start := (c0 + s) * ctx
			copy(inputs[s], tokens[start:start+ctx])
			if m.Tokenizer.AddsBOS() {
				inputs[s][0] = m.Tokenizer.BOS()
			}
			caches[s].Reset()
			seqs = append(seqs, Sequence{Cache: caches[s], Tokens: inputs[s], Out: first, Logits: logits[s]})
		}
		if err := m.Forward(seqs...); err != nil {
			return nil, err
		}
		for s := range seqs {
			start := (c0 + s) * ctx
			n := ctx - 1 - first
			parallel(n, func(lo, hi int) {
				for j := lo; j < hi; j++ {
					nlls[j] = -logSoftmax(logits[s][j*vocab:(j+1)*vocab], tokens[start+first+j+1])
				}
			})
			for _, v := range nlls[:n] { // summed in order, so the result does not depend on the thread count
				nll += v
				nll2 += v * v
			}
			count += n
			ppl := math.Exp(nll / float64(count))
			res.Running = append(res.Running, ppl)
			if opts.Progress != nil {
				opts.Progress(c0+s+1, ppl)
			}
		}
	}
	mean := nll / float64(count)
	res.MeanNLL, res.Scored = mean, count
	res.PPL = math.Exp(mean)
	if v := nll2/float64(count) - mean*mean; v > 0 {
		res.Err = math.Sqrt(v/float64(count-1)) * res.PPL
	}
	return res, nil
}

// logSoftmax returns log p(tok) from logits as llama-perplexity's log_softmax computes it: the maximum subtracted
// in float32, the exponentials summed in float64.
func logSoftmax(logits []float32, tok int32) float64 {
	mx := logits[0]
	for _, l := range logits[1:] {
		mx = max(mx, l)
	}
	var sum float64
	for _, l := range logits {
		sum += math.Exp(float64(l - mx))
	}
	return float64(logits[tok]-mx) - math.Log(sum)
}

// LossResult is the mean next-token loss over a set of texts.
type LossResult struct {
	Loss   float64 `json:"loss"` // mean negative log-likelihood in nats per predicted token
	PPL    float64 `json:"ppl"`  // exp(Loss)
	Texts  int     `json:"texts"`
	Scored int     `json:"tokens_scored"`
}

// MeanLoss averages the next-token loss over every token of every text (tokenized with BOS when the vocabulary adds
// one), the usual training loss. See MeanLossTokens for long texts.
func MeanLoss(m *Model, texts []string, ctx int) (*LossResult, error) {
	seqs := make([][]int32, len(texts))
	for i, text := range texts {
		seqs[i] = m.Tokenizer.Encode(text, tokenizer.AddSpecial)
	}
	return MeanLossTokens(m, seqs, ctx)
}

// MeanLossTokens averages the next-token loss over token sequences. A sequence longer than ctx tokens is evaluated
// in windows of ctx tokens that overlap by one, so that each token is predicted once, from at most ctx-1 tokens of
// context.
func MeanLossTokens(m *Model, seqs [][]int32, ctx int) (*LossResult, error) {
	if ctx < 2 {
		return nil, fmt.Errorf("train: loss context %d is too small", ctx)
	}
	vocab := m.Config.Vocab
	cache := m.NewKVCache(ctx)
	logits := make([]float32, ctx*vocab)
	nlls := make([]float64, ctx)
	res := &LossResult{Texts: len(seqs)}
	var nll float64
	for _, tokens := range seqs {
		for s := 0; s+1 < len(tokens); s += ctx - 1 {
			win := tokens[s:min(s+ctx, len(tokens))]
			cache.Reset()
			if err := m.Forward(Sequence{Cache: cache, Tokens: win, Logits: logits}); err != nil {
				return nil, err
			}
			n := len(win) - 1
			parallel(n, func(lo, hi int) {
				for j := lo; j < hi; j++ {
					nlls[j] = -logSoftmax(logits[j*vocab:(j+1)*vocab], win[j+1])
				}
			})
			for _, v := range nlls[:n] {
				nll += v
			}
			res.Scored += n
		}
	}
	if res.Scored == 0 {
		return nil, errors.New("train: the texts have no token to predict")
	}
	res.Loss = nll / float64(res.Scored)
	res.PPL = math.Exp(res.Loss)
	return res, nil
}
