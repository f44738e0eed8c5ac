package train

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// SampleOptions chooses how the next token is picked from the logits. The filters run in llama.cpp's default
// order (common_sampler: top-k, top-p, min-p, temperature, then a draw).
type SampleOptions struct {
	Temp float32 // <= 0 picks the most likely token (greedy); otherwise logits are divided by Temp
	TopK int     // keep the TopK most likely tokens; 0 keeps all
	TopP float32 // keep the smallest set of most likely tokens whose probability reaches TopP; 0 or >= 1 keeps all
	MinP float32 // drop tokens less likely than MinP times the most likely one; 0 keeps all
	Seed uint64  // the draw is deterministic for a seed
}

// Sampler picks tokens; it carries the random state from one token to the next.
type Sampler struct {
	opts SampleOptions
	rng  *rand.Rand
	cand []candidate
}

type candidate struct {
	id    int32
	logit float32
}

// NewSampler makes a sampler.
func NewSampler(opts SampleOptions) *Sampler {
	return &Sampler{opts: opts, rng: rand.New(rand.NewPCG(opts.Seed, 0x6c617468652d6d6c))}
}

// Sample picks a token from one row of logits.
func (s *Sampler) Sample(logits []float32) int32 {
	o := s.opts
	if o.Temp <= 0 { // the first maximum, as llama_sampler_greedy
		best := 0
		for i, l := range logits {
			if l > logits[best] {
				best = i
			}
		}
		return int32(best)
	}
	c := s.cand[:0]
	for i, l := range logits {
		c = append(c, candidate{int32(i), l})
	}
	slices.SortStableFunc(c, func(a, b candidate) int { return cmp.Compare(b.logit, a.logit) })
	if o.TopK > 0 && o.TopK < len(c) {
		c = c[:o.TopK]
	}
	probs := softmaxCandidates(c, 1)
	if o.TopP > 0 && o.TopP < 1 {
		sum := 0.0
		for i, p := range probs {
			sum += p
			if sum >= float64(o.TopP) {
				c = c[:i+1]
				break
			}
		}
	}
	if o.MinP > 0 {
		floor := c[0].logit + float32(math.Log(float64(o.MinP)))
		keep := 1
		for keep < len(c) && c[keep].logit >= floor {
			keep++
		}
		c = c[:keep]
	}
	probs = softmaxCandidates(c, o.Temp)
	s.cand = c
	r := s.rng.Float64()
	sum := 0.0
	for i, p := range probs {
		sum += p
		if sum >= r {
			return c[i].id
		}
	}
	return c[len(c)-1].id
}

// softmaxCandidates returns the probabilities of candidates sorted by decreasing logit, at temperature temp.
func softmaxCandidates(c []candidate, temp float32) []float64 {
	p := make([]float64, len(c))
	sum := 0.0
	for i, x := range c {
		p[i] = math.Exp(float64((x.logit - c[0].logit) / temp))
		sum += p[i]
	}
	for i := range p {
		p[i] /= sum
	}
	return p
}

// GenerateOptions tunes Generate.
type GenerateOptions struct {
	MaxTokens int // new tokens at most; 0 means until the context is full or an end-of-generation token
	// Ctx bounds the prompt plus the generated tokens; 0 means the model's training context.
	Ctx    int
	Sample SampleOptions
}

// ErrContextFull is returned when the prompt alone fills the context.
var ErrContextFull = errors.New("train: the prompt fills the context")

// Generate continues prompt (token ids, normally Encode with AddSpecial so that it starts with BOS), one token at a
// time through the KV cache, calling emit with each new token. It stops at an end-of-generation token (which is
// neither emitted nor returned), after MaxTokens tokens, or when the context is full, and returns the new tokens.
func (m *Model) Generate(prompt []int32, opts GenerateOptions, emit func(id int32) error) ([]int32, error) {
	if len(prompt) == 0 {
		return nil, errors.New("train: generation needs a prompt of at least one token (BOS)")
	}
	limit := opts.Ctx
	if limit == 0 {
		limit = m.Config.CtxTrain
	}
	if len(prompt) >= limit {
		return nil, fmt.Errorf("%w: %d tokens for a context of %d", ErrContextFull, len(prompt), limit)
	}
	size := limit
	if opts.MaxTokens > 0 { // the cache need not be larger than what this call can fill
		size = min(limit, len(prompt)+opts.MaxTokens)
	}
	cache := m.NewKVCache(size)
	logits := make([]float32, m.Config.Vocab)
	sampler := NewSampler(opts.Sample)
	next := prompt
	var out []int32
	for opts.MaxTokens <= 0 || len(out) < opts.MaxTokens {
		if cache.Len()+len(next) > size {
			break
		}
		if err := m.Forward(Sequence{Cache: cache, Tokens: next, Out: len(next) - 1, Logits: logits}); err != nil {
			return out, err
		}
		id := sampler.Sample(logits)
		if m.Tokenizer.IsEOG(id) {
			break
		}
		out = append(out, id)
		if emit != nil {
			if err := emit(id); err != nil {
				return out, err
			}
		}
		next = []int32{id}
	}
	return out, nil
}
