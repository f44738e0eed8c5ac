package train

import (
	"fmt"

	"github.com/lathe-ml/lathe/internal/kernels"
)

// MethodFull is full fine-tuning: the targeted projections' weights themselves, and by default the token embedding,
// the RMSNorm weights and the output head as well, each on a float32 copy: 4 bytes per weight, plus AdamW's 8, so it
// suits small models. Its result is full-rank and is written as a merged model.
const MethodFull = "full"

func init() {
	registerMethod(MethodFull, methodSpec{
		summary: "full fine-tuning of the targeted projections, the embedding, the norms and the head (small " +
			"models; writes a merged model)",
		args:  map[string]string{"embed": "true", "norms": "true", "head": "true"},
		dense: true,
		build: func(_ LoRAConfig, a methodArgs) (method, error) {
			return &fullMethod{outside: outsideArgs(&a)}, nil
		},
	})
}

// outsideArgs reads which tensors outside the projections a whole-model method trains: its arguments embed, norms
// and head.
func outsideArgs(a *methodArgs) trainOutside {
	return trainOutside{embed: a.Bool("embed"), norms: a.Bool("norms"), head: a.Bool("head")}
}

// trainOutside says which tensors outside the projections are trained.
type trainOutside struct{ embed, norms, head bool }

type fullMethod struct {
	outside trainOutside
}

func (*fullMethod) project(s site) (projection, error) { return newDenseLinear(s.w) }

func (f *fullMethod) extras(m *Model, rows int) (*extraParams, error) {
	return newExtraParams(m, rows, f.outside)
}

func newDenseLinear(w *matrix) (*denseLinear, error) {
	p := &denseLinear{w: w, v: make([]float32, w.rows*w.cols), dv: make([]float32, w.rows*w.cols)}
	if err := w.decodeRows(p.v, 0, w.rows); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", w.name, err)
	}
	return p, nil
}

// denseLinear is a projection whose weight is trained whole: y = x·Vᵀ with V starting at the stored weight.
type denseLinear struct {
	w     *matrix // the stored weight, for delta
	v, dv []float32
	// frozen, when set, says the weight is not trained this step (LISA's frozen layers): backward then skips dV,
	// the costliest of its products.
	frozen func() bool
}

func (p *denseLinear) forward(y, x []float32, n int, _ *[]float32) {
	kernels.Sgemm(false, true, n, p.w.rows, p.w.cols, 1, x, p.w.cols, p.v, p.w.cols, 0, y, p.w.rows)
}

// backward: dx += dy·V, dV += dyᵀ·x.
func (p *denseLinear) backward(dx, dy, x []float32, n int, _ *[]float32) {
	rows, cols := p.w.rows, p.w.cols
	kernels.Sgemm(false, false, n, cols, rows, 1, dy, rows, p.v, cols, 1, dx, cols)
	if p.frozen == nil || !p.frozen() {
		kernels.Sgemm(true, false, rows, cols, n, 1, dy, rows, x, cols, 1, p.dv, cols)
	}
}

func (p *denseLinear) params() ([][]float32, [][]float32) { return [][]float32{p.v}, [][]float32{p.dv} }

// delta is V − W, W decoded again from the stored weight.
func (p *denseLinear) delta(dst []float32) {
	_ = p.w.decodeRows(dst, 0, p.w.rows) // decoded once already in project
	for i, v := range p.v {
		dst[i] = v - dst[i]
	}
}

// wholeModel is a method that also trains the tensors outside the projections: the token embedding, the RMSNorm
// weights and the output head. NewLoRAConfig calls extras once, after the projections, with the most rows a pass
// computes; the training pass then reads the trainable copies in place of the model's tensors and adds their
// gradients. Plain LoRA and the methods without it pay nothing: the passes test one nil pointer.
type wholeModel interface {
	extras(m *Model, rows int) (*extraParams, error)
}

// extraParams are float32 trainable copies of the tensors outside the projections, with their gradients. A nil
// tensor is frozen: the pass uses the model's own.
type extraParams struct {
	embd, dembd []float32 // Vocab×Embd
	// tokens are the input tokens of the last forward pass, whose rows of the embedding get its gradient.
	tokens              []int32
	attnNorm, dattnNorm [][]float32 // per layer
	ffnNorm, dffnNorm   [][]float32
	outNorm, doutNorm   []float32
	// head is the output projection (Vocab×Embd); when the model ties it to the embedding it is the same slice as
	// embd (and dhead as dembd), so that both uses add to one gradient.
	head, dhead []float32
	tied        bool
}

// newExtraParams copies the tensors of m that on selects.
func newExtraParams(m *Model, rows int, on trainOutside) (*extraParams, error) {
	c := m.Config
	e := &extraParams{tied: m.output == &m.embd}
	if e.tied && on.embed != on.head {
		return nil, fmt.Errorf("%s has no output.weight: its output head is the token embedding, so train both "+
			"(embed=true head=true) or neither, not embed=%t head=%t", m.Path, on.embed, on.head)
	}
	decode := func(w *matrix) ([]float32, []float32, error) {
		v := make([]float32, w.rows*w.cols)
		if err := w.decodeRows(v, 0, w.rows); err != nil {
			return nil, nil, fmt.Errorf("decoding %s: %w", w.name, err)
		}
		return v, make([]float32, len(v)), nil
	}
	var err error
	if on.embed {
		if e.embd, e.dembd, err = decode(&m.embd); err != nil {
			return nil, err
		}
		e.tokens = make([]int32, rows)
	}
	if on.head {
		if e.tied {
			e.head, e.dhead = e.embd, e.dembd
		} else if e.head, e.dhead, err = decode(m.output); err != nil {
			return nil, err
		}
	}
	if on.norms {
		for i := range m.layers {
			ml := &m.layers[i]
			e.attnNorm, e.dattnNorm = append(e.attnNorm, clone32(ml.attnNorm)), append(e.dattnNorm, make([]float32, c.Embd))
			e.ffnNorm, e.dffnNorm = append(e.ffnNorm, clone32(ml.ffnNorm)), append(e.dffnNorm, make([]float32, c.Embd))
		}
		e.outNorm, e.doutNorm = clone32(m.outNorm), make([]float32, c.Embd)
	}
	return e, nil
}

func clone32(f []float32) []float32 { return append([]float32(nil), f...) }

// params returns the trained tensors and their gradients, in the order LoRA.Params appends them after the
// projections': the embedding, each layer's attention and feed-forward norms, the output norm, the head (unless
// tied, when it is the embedding already listed).
func (e *extraParams) params() (params, grads [][]float32) {
	add := func(p, g []float32) {
		if p != nil {
			params, grads = append(params, p), append(grads, g)
		}
	}
	add(e.embd, e.dembd)
	for i := range e.attnNorm {
		add(e.attnNorm[i], e.dattnNorm[i])
		add(e.ffnNorm[i], e.dffnNorm[i])
	}
	add(e.outNorm, e.doutNorm)
	if !e.tied {
		add(e.head, e.dhead)
	}
	return params, grads
}

// norms returns the weights of layer li's two RMSNorms: the trained copies, or the model's.
func (e *extraParams) norms(li int, ml *layer) (attn, ffn []float32) {
	if e == nil || e.attnNorm == nil {
		return ml.attnNorm, ml.ffnNorm
	}
	return e.attnNorm[li], e.ffnNorm[li]
}

// finalNorm returns the output norm's weight: the trained copy, or the model's.
func (e *extraParams) finalNorm(m *Model) []float32 {
	if e == nil || e.outNorm == nil {
		return m.outNorm
	}
	return e.outNorm
}

// embed sets rows r0… of x to the embeddings of tokens from the trained copy, keeping the tokens for backward.
func (e *extraParams) embed(x []float32, r0 int, tokens []int32, d int) {
	copy(e.tokens[r0:], tokens)
	for i, tok := range tokens {
		copy(x[(r0+i)*d:(r0+i+1)*d], e.embd[int(tok)*d:(int(tok)+1)*d])
	}
}

// embedBack adds the gradient dx of the embedded rows of the last forward pass to the embedding rows of their
// tokens (a scatter-add, in row order so that repeated tokens sum the same way whatever the thread count).
func (e *extraParams) embedBack(dx []float32, n, d int) {
	for r, tok := range e.tokens[:n] {
		kernels.Axpy(1, dx[r*d:(r+1)*d], e.dembd[int(tok)*d:(int(tok)+1)*d])
	}
}

// deltas adds the updates of the trained tensors to out, keyed by their names in m's file.
func (e *extraParams) deltas(m *Model, out map[string][]float32) error {
	hf := m.Config.RopeNeoX // a Hugging Face checkpoint
	name := func(gguf, hfName string) string {
		if hf {
			return hfName
		}
		return gguf
	}
	sub := func(key string, trained []float32, base func(dst []float32) error) error {
		d := make([]float32, len(trained))
		if err := base(d); err != nil {
			return err
		}
		for i, v := range trained {
			d[i] = v - d[i]
		}
		out[key] = d
		return nil
	}
	vector := func(w []float32) func([]float32) error {
		return func(dst []float32) error { copy(dst, w); return nil }
	}
	matrixRows := func(w *matrix) func([]float32) error {
		return func(dst []float32) error { return w.decodeRows(dst, 0, w.rows) }
	}
	if e.embd != nil {
		if err := sub(name("token_embd.weight", "model.embed_tokens.weight"), e.embd, matrixRows(&m.embd)); err != nil {
			return err
		}
	}
	for i := range e.attnNorm {
		ml := &m.layers[i]
		if err := sub(name(fmt.Sprintf("blk.%d.attn_norm.weight", i),
			fmt.Sprintf("model.layers.%d.input_layernorm.weight", i)), e.attnNorm[i], vector(ml.attnNorm)); err != nil {
			return err
		}
		if err := sub(name(fmt.Sprintf("blk.%d.ffn_norm.weight", i),
			fmt.Sprintf("model.layers.%d.post_attention_layernorm.weight", i)), e.ffnNorm[i],
			vector(ml.ffnNorm)); err != nil {
			return err
		}
	}
	if e.outNorm != nil {
		if err := sub(name("output_norm.weight", "model.norm.weight"), e.outNorm, vector(m.outNorm)); err != nil {
			return err
		}
	}
	if e.head != nil && !e.tied {
		if err := sub(name("output.weight", "lm_head.weight"), e.head, matrixRows(m.output)); err != nil {
			return err
		}
	}
	return nil
}

// updater is a method that updates some of its parameters itself instead of AdamW (GaLore's projected moments,
// LISA's per-period optimizer). claimed gives their indices in Params order, fixed for the run; the trainer calls
// update at each step (1-based) after clipping and before AdamW, with its AdamW (whose LR is the step's, and whose
// betas, eps and weight decay the method uses) and the gradients in Params order. AdamW keeps no moments for the
// claimed tensors, which therefore stand as empty tensors in the trainer's checkpoints: the method saves their
// values through stateful.
type updater interface {
	claimed() []int
	update(step int, opt *AdamW, grads [][]float32)
}
