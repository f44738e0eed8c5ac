package train

import (
	"fmt"
	"math/rand/v2"

	"github.com/lathe-ml/lathe/internal/kernels"
	"github.com/lathe-ml/lathe/tensor"
)

// Embedding LoRA: PEFT's lora.Embedding on embed_tokens keeps lora_embedding_A (rank×vocab) and lora_embedding_B
// (dim×rank) and updates the table by ΔE = scale·(B·A)ᵀ. Looking token t up in E + ΔE is the lookup in E plus
// scale·B·A[:, t]: the update is a LoRA whose input is the one-hot of the token, so x·Aᵀ is a gather of A's column
// t, not a product, and the gradient of A touches only the columns of the tokens seen. Both the runtime
// (ApplyAdapter: GGUF's token_embd.weight, PEFT's model.embed_tokens) and the trainer (target embed_tokens) go
// through embedForward, in A's PEFT layout.
//
// Only the input lookup is adapted. With tied embeddings (no output.weight: the head multiplies by token_embd)
// the head keeps the base table, as in PEFT, whose lm_head is not the embedding module; merging such an adapter
// into a tied model changes the head as well, so its merged model computes something else than the adapter.

// embedTarget is the PEFT module name of the token embedding, a LoRA target outside all-linear, as in PEFT.
const embedTarget = "embed_tokens"

// embedForward adds to each of the n rows of x (n×d) scale·B·A[:, tokens[i]]: gathers h (n×rank) = the columns of A
// (rank×vocab), then x += scale·h·Bᵀ with B d×rank. h is kept for embedBackward.
func embedForward(x, h []float32, tokens []int32, a, b []float32, rank, vocab, d int, scale float32) {
	n := len(tokens)
	for i, t := range tokens {
		for k := range rank {
			h[i*rank+k] = a[k*vocab+int(t)]
		}
	}
	kernels.Sgemm(false, true, n, d, rank, scale, h, rank, b, rank, 1, x, d)
}

// embedBackward adds the gradients of embedForward given dx (n×d): dB += scale·dxᵀ·h and, with g = scale·dx·B
// (n×rank, into tmp), dA[:, tokens[i]] += g_i — a scatter over the tokens in order, so that a token seen twice
// sums its rows in the same order at every thread count. The table itself is frozen and the lookup has no input
// gradient.
func embedBackward(da, db, dx, h, tmp []float32, tokens []int32, b []float32, rank, vocab, d int, scale float32) {
	n := len(tokens)
	kernels.Sgemm(true, false, d, rank, n, scale, dx, d, h, rank, 1, db, rank)
	g := tmp[:n*rank]
	kernels.Sgemm(false, false, n, rank, d, scale, dx, d, b, rank, 0, g, rank)
	for i, t := range tokens {
		for k := range rank {
			da[k*vocab+int(t)] += g[i*rank+k]
		}
	}
}

// embedLoRA is the trainable LoRA of the token embedding: a (rank×vocab) and b (d×rank) in PEFT's
// lora_embedding_A/B layout, their gradients, and the tokens and gathered columns of the last forward pass.
type embedLoRA struct {
	a, b, da, db []float32
	rank, vocab  int
	d            int
	scale        float32
	tokens       []int32
	h, g         []float32
}

// newEmbedLoRA initialises the factors as PEFT's Embedding.reset_lora_parameters does: A zero, B standard normal
// (so that the update starts at zero and A's first gradient is not), for passes of up to n rows.
func newEmbedLoRA(rng *rand.Rand, rank, vocab, d, n int, scale float32) *embedLoRA {
	e := &embedLoRA{a: make([]float32, rank*vocab), b: make([]float32, d*rank), da: make([]float32, rank*vocab),
		db: make([]float32, d*rank), rank: rank, vocab: vocab, d: d, scale: scale, tokens: make([]int32, 0, n),
		h: make([]float32, n*rank), g: make([]float32, n*rank)}
	for i := range e.b {
		e.b[i] = float32(rng.NormFloat64())
	}
	return e
}

// forward adds the update to the embedded rows x of the B windows' first T tokens and keeps what backward needs.
func (e *embedLoRA) forward(x []float32, windows [][]int32, T int) {
	e.tokens = e.tokens[:0]
	for _, w := range windows {
		e.tokens = append(e.tokens, w[:T]...)
	}
	embedForward(x, e.h, e.tokens, e.a, e.b, e.rank, e.vocab, e.d, e.scale)
}

// backward adds to da and db the gradients given dx, the gradient of the embedded rows.
func (e *embedLoRA) backward(dx []float32) {
	embedBackward(e.da, e.db, dx[:len(e.tokens)*e.d], e.h, e.g, e.tokens, e.b, e.rank, e.vocab, e.d, e.scale)
}

// embedFactors converts the factors of an embedding module to PEFT's layout: A rank×vocab and B d×rank. A PEFT
// module (lora_embedding_A [r, vocab]) is already in it; a GGUF one stores lora_a as [vocab, r] (llama.cpp's
// build_inp_embd gathers its rows), which is transposed.
func embedFactors(a []float32, ggufLayout bool, rank, vocab int) []float32 {
	if !ggufLayout {
		return a
	}
	t := make([]float32, len(a))
	for v := range vocab {
		for k := range rank {
			t[k*vocab+v] = a[v*rank+k]
		}
	}
	return t
}

// embedRows looks up the tokens into x (len(tokens)×Embd) and adds the embedding adapters ApplyAdapter put on
// token_embd (loraFactors in PEFT's lora_embedding layout: a rank×vocab, b Embd×rank). h is scratch.
func (m *Model) embedRows(x []float32, tokens []int32, h *[]float32) {
	d := m.Config.Embd
	for i, t := range tokens {
		m.embd.row(x[i*d:(i+1)*d], int(t))
	}
	for _, a := range m.embd.adapters {
		*h = grow(*h, len(tokens)*a.rank)
		embedForward(x, *h, tokens, a.a, a.b, a.rank, m.Config.Vocab, d, a.scale)
	}
}

// checkEmbedShapes checks an embedding module's factors against the table: A holds rank·vocab values and B is
// d×rank, in either layout.
func checkEmbedShapes(aShape, bShape []int64, gguf bool, rank, vocab, d int) error {
	wantA := [2]int64{int64(rank), int64(vocab)}
	if gguf {
		wantA = [2]int64{int64(vocab), int64(rank)}
	}
	if len(aShape) != 2 || len(bShape) != 2 || aShape[0] != wantA[0] || aShape[1] != wantA[1] ||
		bShape[0] != int64(d) || bShape[1] != int64(rank) {
		return fmt.Errorf("A %v and B %v, want [%d %d] and [%d %d] for token_embd.weight", aShape, bShape,
			wantA[0], wantA[1], d, rank)
	}
	return nil
}

// embedPath is the Hugging Face module path of the token embedding.
const embedPath = "model.embed_tokens"

// views returns the embedding factors a (rank×vocab) and b (d×rank) as the tensors of a PEFT adapter:
// lora_embedding_A and lora_embedding_B, as PEFT's get_peft_model_state_dict names an Embedding's factors.
func (e *embedLoRA) views(a, b []float32, rank int) []tensor.View {
	name := "base_model.model." + embedPath
	return []tensor.View{floatView(name+".lora_embedding_A", tensor.Shape{int64(rank), int64(e.vocab)}, a),
		floatView(name+".lora_embedding_B", tensor.Shape{int64(e.d), int64(rank)}, b)}
}
