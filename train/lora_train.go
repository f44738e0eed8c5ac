package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/internal/kernels"
)

// LoRA is a set of trainable LoRA factors on some of the seven projections of every layer of a model (q, k, v, o,
// gate, up, down), with the activations and gradients of a training pass over batches of Batch sequences of Ctx tokens.
// The model's weights stay frozen in their stored type.
type LoRA struct {
	LoRAConfig

	m      *Model
	layers []loraLayer
	batch  int
	ctx    int
	acts   []layerActs
	resid  [][]float32 // the residual stream entering each layer, and leaving the last (Layers+1 buffers)
	xnf    []float32
	rstdf  []float32
	logits []float32
	cos    []float32
	sin    []float32
	negSin []float32
	g      grads
	buf    []float32 // decoded weight rows
	// initial holds the factors as PiSSA or MiLoRA initialised them, in Params order (nil for the default
	// initialisation): the trained update is expressed against the original base by subtracting them.
	initial [][]float32
	// method is the registered method of LoRAConfig.Method, nil for LoRA and DyLoRA.
	method method
	// extra holds the trained copies of the embedding, norms and head of a wholeModel method, nil otherwise.
	extra *extraParams
	// pos holds the rotary position of each row during a StepConfined, which confines attention to samples; nil
	// otherwise.
	pos []int32
	// drop is LoRA dropout's state (LoRAConfig.Dropout), which the adapted loraLinears point to.
	drop dropout
	// embed is the LoRA of the token embedding (target embed_tokens, embedlora.go), nil when it is not targeted.
	embed *embedLoRA
}

type loraLayer struct {
	q, k, v, o, gate, up, down loraLinear
}

func (l *loraLayer) linears() []*loraLinear {
	return []*loraLinear{&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}
}

// adapted returns the projections that are trained.
func (l *loraLayer) adapted() []*loraLinear {
	var out []*loraLinear
	for _, lin := range l.linears() {
		if lin.trained() {
			out = append(out, lin)
		}
	}
	return out
}

// targets returns the PEFT names of the projections adapted in some layer (in all of them, but where EVA gives a
// module rank 0), in layer order, then embed_tokens when the embedding is adapted.
func (l *LoRA) targets() []string {
	var names []string
	for j, name := range targetNames {
		for i := range l.layers {
			if l.layers[i].linears()[j].trained() {
				names = append(names, name)
				break
			}
		}
	}
	if l.embed != nil {
		names = append(names, embedTarget)
	}
	return names
}

// project is the method's projection, lin.forward, or the frozen product alone when the projection is not trained.
func project(lin *loraLinear, y, h, x []float32, n int, buf *[]float32) {
	if lin.proj != nil {
		lin.proj.forward(y, x, n, buf)
		return
	}
	if lin.rank == 0 {
		frozenForward(lin.w, y, x, n, buf)
		return
	}
	lin.forward(y, h, x, n, buf)
}

// projectBack is the backward pass of project.
func projectBack(lin *loraLinear, dx, dy, x, h, tmp []float32, n int, buf *[]float32) {
	if lin.proj != nil {
		lin.proj.backward(dx, dy, x, n, buf)
		return
	}
	if lin.rank == 0 {
		frozenBackward(lin.w, dx, dy, n, buf)
		return
	}
	lin.backward(dx, dy, x, h, tmp, n, buf)
}

// layerActs is what one layer's forward keeps for its backward.
type layerActs struct {
	xn1, rstd1, q, k, v, probs, att, x2, xn2, rstd2, g, u, h []float32
	hq, hk, hv, ho, hg, hu, hd                               []float32 // x·Aᵀ of each adapter
}

// grads holds the backward pass's activation gradients, shared by all layers.
type grads struct {
	dres, dxn, dq, dk, dv, datt, dg, du, dh, lora, scratch []float32
}

// targetNames are the PEFT target_modules names of the projections, in the order of loraLayer.linears.
var targetNames = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// LoRAConfig says which projections get factors and how they are scaled.
type LoRAConfig struct {
	Rank  int
	Alpha float64
	// RSLoRA scales the update by Alpha/√Rank (rank-stabilised LoRA, PEFT's use_rslora) instead of Alpha/Rank.
	RSLoRA bool
	// Targets are the PEFT module names to adapt (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj,
	// and embed_tokens, the token embedding: see embedlora.go); empty means all seven projections, and all-linear
	// stands for them in a list. The output projection is never adapted, and the embedding only when named, as
	// PEFT's all-linear leaves lm_head and embed_tokens out.
	Targets []string
	// Init chooses the initial factors: "" for PEFT's default (see NewLoRAConfig), InitPiSSA or InitMiLoRA, which
	// start from the SVD of each weight and train against the residual base (see LoRA.spectralInit).
	Init string
	// Method is a registered method (see method.go; not MethodLoRA or MethodDyLoRA, which are plain factors) that
	// lays its own trainable parameters on the targeted projections, with its MethodArgs.
	Method     string
	MethodArgs map[string]string
	// Steps is the run's number of optimizer steps (TrainOptions.Steps), for methods whose schedule spans the run
	// (AdaLoRA's rank budget); 0 when the LoRA is not made by Train.
	Steps int
	// Dropout is the probability, in [0, 1), with which Step drops each input value of an adapter (PEFT's
	// lora_dropout; see dropout.go), for LoRA and DyLoRA only: registered methods compute their projections whole.
	Dropout float64
	// Recompute keeps only each layer's input during the forward pass of Step and recomputes the layer's
	// activations just before its backward pass, into one set of buffers: about one more forward pass of compute
	// for activation memory of one layer instead of all. The results are the same bits.
	Recompute bool
}

// Scale is the factor of B·A in the update.
func (c LoRAConfig) Scale() float64 {
	if c.RSLoRA {
		return c.Alpha / math.Sqrt(float64(c.Rank))
	}
	return c.Alpha / float64(c.Rank)
}

// modules returns, for each of the seven projections in loraLayer.linears order, whether it is adapted, and
// whether the token embedding is.
func (c LoRAConfig) modules() (on []bool, embed bool, err error) {
	on = make([]bool, len(targetNames))
	for _, t := range c.Targets {
		switch i := slices.Index(targetNames, t); {
		case t == "all-linear":
			for i := range on {
				on[i] = true
			}
		case t == embedTarget:
			embed = true
		case i < 0:
			return nil, false, fmt.Errorf("train: unknown LoRA target %q (want all-linear or some of %s,%s)", t,
				strings.Join(targetNames, ","), embedTarget)
		default:
			on[i] = true
		}
	}
	if len(c.Targets) == 0 {
		for i := range on {
			on[i] = true
		}
	}
	return on, embed, nil
}

// NewLoRA puts LoRA factors of the given rank, scaled by alpha/rank, on all seven projections: NewLoRAConfig with
// those settings.
func NewLoRA(m *Model, rank int, alpha float64, batch, ctx int, seed uint64) (*LoRA, error) {
	return NewLoRAConfig(m, LoRAConfig{Rank: rank, Alpha: alpha}, batch, ctx, seed)
}

// NewLoRAConfig puts LoRA factors on the model's projections named by cfg.Targets, initialised as PEFT does
// (init_lora_weights=True): A from Kaiming-uniform with a=√5, i.e. U(−1/√in, 1/√in), B zero, so that training
// starts from the base model; with cfg.Init PiSSA or MiLoRA, from the SVD of each weight instead, the LoRA then
// computing with the residual weights (the model itself is unchanged). The random numbers come from seed; every projection draws its A whether targeted or
// not, so that a module's initial factors do not depend on which others are trained; a targeted token embedding
// then starts as PEFT's lora.Embedding does (A zero, B standard normal). batch and ctx size the
// buffers of Step: at most batch sequences of ctx tokens.
func NewLoRAConfig(m *Model, cfg LoRAConfig, batch, ctx int, seed uint64) (*LoRA, error) {
	c := m.Config
	rank := cfg.Rank
	if rank <= 0 || batch <= 0 || ctx <= 0 {
		return nil, fmt.Errorf("train: LoRA rank %d, batch %d and context %d must be positive", rank, batch, ctx)
	}
	on, embed, err := cfg.modules()
	if err != nil {
		return nil, err
	}
	if embed && (cfg.Init != "" || cfg.Method != "" && cfg.Method != MethodLoRA) {
		// PiSSA/MiLoRA and the methods lay their parameters on projections; DyLoRA's rank truncation is theirs too.
		return nil, fmt.Errorf("train: target %s is trained by method %s with PEFT's default initialisation only, "+
			"not method %s, init %q", embedTarget, MethodLoRA, cfg.Method, cfg.Init)
	}
	if len(m.embd.adapters) > 0 {
		return nil, fmt.Errorf("train: %s has an adapter applied; train on the base model (merge the adapter into "+
			"it first to build on it)", m.embd.name)
	}
	if cfg.Init != "" && cfg.Init != InitPiSSA && cfg.Init != InitMiLoRA {
		return nil, fmt.Errorf("train: unknown LoRA initialisation %q (want %s or %s, or none for PEFT's default)",
			cfg.Init, InitPiSSA, InitMiLoRA)
	}
	l := &LoRA{LoRAConfig: cfg, m: m, batch: batch, ctx: ctx, layers: make([]loraLayer, c.Layers)}
	if !(cfg.Dropout >= 0 && cfg.Dropout < 1) {
		return nil, fmt.Errorf("train: LoRA dropout %g: want a probability in [0, 1)", cfg.Dropout)
	}
	if cfg.Recompute && cfg.Method == MethodEVA {
		// EVA's initialisation reads every layer's activations after one forward pass.
		return nil, fmt.Errorf("train: method %s reads all layers' activations; it does not run with recomputation",
			cfg.Method)
	}
	if cfg.Method != "" && cfg.Method != MethodLoRA && cfg.Method != MethodDyLoRA {
		if cfg.Dropout > 0 {
			return nil, fmt.Errorf("train: method %s computes its projections whole; LoRA dropout is for %s and %s",
				cfg.Method, MethodLoRA, MethodDyLoRA)
		}
		if cfg.Init != "" {
			return nil, fmt.Errorf("train: method %s sets its own initial parameters; --init %s is for LoRA", cfg.Method,
				cfg.Init)
		}
		if l.method, err = newMethod(cfg); err != nil {
			return nil, err
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0x6c6f7261))
	for i := range l.layers {
		ml := &m.layers[i]
		ll := &l.layers[i]
		for j, w := range []*matrix{&ml.q, &ml.k, &ml.v, &ml.o, &ml.gate, &ml.up, &ml.down} {
			if len(w.adapters) > 0 {
				// The training pass multiplies by the base weights only; an applied adapter would be ignored.
				return nil, fmt.Errorf("train: %s has an adapter applied; train on the base model (merge the "+
					"adapter into it first to build on it)", w.name)
			}
			lin := ll.linears()[j]
			a := make([]float32, rank*w.cols)
			bound := 1 / math.Sqrt(float64(w.cols))
			for k := range a {
				a[k] = float32((2*rng.Float64() - 1) * bound)
			}
			*lin = loraLinear{w: w}
			siteIndex := i*len(targetNames) + j
			if on[j] && l.method != nil {
				p, err := l.method.project(site{w: w, layer: i, module: targetNames[j], rows: batch * ctx, cfg: cfg,
					seed: siteSeed(seed, i, targetNames[j])})
				if err != nil {
					return nil, fmt.Errorf("train: method %s on %s: %w", cfg.Method, w.name, err)
				}
				lin.proj = p
			} else if on[j] {
				*lin = loraLinear{w: w, rank: rank, active: rank, scale: float32(cfg.Scale()), a: a,
					b: make([]float32, w.rows*rank), da: make([]float32, rank*w.cols), db: make([]float32, w.rows*rank),
					site: siteIndex}
				if cfg.Dropout > 0 {
					lin.drop = &l.drop
				}
			}
		}
	}
	n := batch * ctx
	if embed {
		// Drawn after every projection's A, so that those do not depend on whether the embedding is trained.
		l.embed = newEmbedLoRA(rng, rank, c.Vocab, c.Embd, n, float32(cfg.Scale()))
	}
	if cfg.Init != "" {
		if l.initial, err = l.spectralInit(); err != nil {
			return nil, err
		}
	}
	if w, ok := l.method.(wholeModel); ok {
		if l.extra, err = w.extras(m, n); err != nil {
			return nil, fmt.Errorf("train: method %s: %w", cfg.Method, err)
		}
	}
	d, qDim, kvDim := c.Embd, c.Heads*c.HeadDim, c.HeadsKV*c.HeadDim
	if cfg.Dropout > 0 {
		l.drop = dropout{p: float32(cfg.Dropout), seed: seed, buf: make([]float32, n*max(d, qDim, c.FF)),
			masks: make([][]uint64, c.Layers*len(targetNames))}
		for i := range l.layers {
			for _, lin := range l.layers[i].adapted() {
				l.drop.masks[lin.site] = make([]uint64, n*((lin.w.cols+63)/64))
			}
		}
	}
	l.acts = make([]layerActs, c.Layers)
	if cfg.Recompute {
		l.acts = l.acts[:1]
	}
	for i := range l.acts {
		a := &l.acts[i]
		for _, s := range []struct {
			dst  *[]float32
			size int
		}{{&a.xn1, n * d}, {&a.rstd1, n}, {&a.q, n * qDim}, {&a.k, n * kvDim}, {&a.v, n * kvDim},
			{&a.probs, batch * c.Heads * ctx * ctx}, {&a.att, n * qDim}, {&a.x2, n * d}, {&a.xn2, n * d},
			{&a.rstd2, n}, {&a.g, n * c.FF}, {&a.u, n * c.FF}, {&a.h, n * c.FF}, {&a.hq, n * rank},
			{&a.hk, n * rank}, {&a.hv, n * rank}, {&a.ho, n * rank}, {&a.hg, n * rank}, {&a.hu, n * rank},
			{&a.hd, n * rank}} {
			*s.dst = make([]float32, s.size)
		}
	}
	l.resid = make([][]float32, c.Layers+1)
	for i := range l.resid {
		l.resid[i] = make([]float32, n*d)
	}
	l.xnf, l.rstdf, l.logits = make([]float32, n*d), make([]float32, n), make([]float32, n*c.Vocab)
	half := n * c.RopeDims / 2
	l.cos, l.sin, l.negSin = make([]float32, half), make([]float32, half), make([]float32, half)
	l.g = grads{dres: make([]float32, n*d), dxn: make([]float32, n*d), dq: make([]float32, n*qDim),
		dk: make([]float32, n*kvDim), dv: make([]float32, n*kvDim), datt: make([]float32, n*qDim),
		dg: make([]float32, n*c.FF), du: make([]float32, n*c.FF), dh: make([]float32, n*c.FF),
		lora: make([]float32, n*rank), scratch: make([]float32, kernels.Threads()*ctx*ctx)}
	return l, nil
}

// Params returns the trainable tensors (A then B of each adapted module, layer by layer, then those of the token
// embedding's LoRA, then those of a wholeModel method's extraParams) and their gradients, in the same order.
func (l *LoRA) Params() (params, grads [][]float32) {
	for i := range l.layers {
		for _, lin := range l.layers[i].adapted() {
			if lin.proj != nil {
				p, g := lin.proj.params()
				params, grads = append(params, p...), append(grads, g...)
				continue
			}
			params = append(params, lin.a, lin.b)
			grads = append(grads, lin.da, lin.db)
		}
	}
	if l.embed != nil {
		params, grads = append(params, l.embed.a, l.embed.b), append(grads, l.embed.da, l.embed.db)
	}
	if l.extra != nil {
		p, g := l.extra.params()
		params, grads = append(params, p...), append(grads, g...)
	}
	return params, grads
}

// ropeTables fills the cosines and sines of B sequences of T rows, each starting at position 0, or at the
// positions of StepConfined.
func (l *LoRA) ropeTables(B, T int) {
	c := l.m.Config
	half := c.RopeDims / 2
	for b := range B {
		for t := range T {
			r, p := b*T+t, t
			if l.pos != nil {
				p = int(l.pos[r])
			}
			ropeAngles(l.cos[r*half:], l.sin[r*half:], p, c, l.m.ropeFreqs)
		}
	}
	for i, s := range l.sin[:B*T*half] {
		l.negSin[i] = -s
	}
}

// check validates a batch: 1..batch windows of the same length 2..ctx+1, tokens in the vocabulary.
func (l *LoRA) check(windows [][]int32) (B, T int, err error) {
	if len(windows) == 0 || len(windows) > l.batch {
		return 0, 0, fmt.Errorf("train: a batch of %d windows; this LoRA takes 1 to %d", len(windows), l.batch)
	}
	T = len(windows[0]) - 1
	if T < 1 || T > l.ctx {
		return 0, 0, fmt.Errorf("train: windows of %d tokens; this LoRA takes 2 to %d", T+1, l.ctx+1)
	}
	for i, w := range windows {
		if len(w) != T+1 {
			return 0, 0, fmt.Errorf("train: window %d has %d tokens, window 0 has %d", i, len(w), T+1)
		}
		for j, tok := range w {
			if tok < 0 || int(tok) >= l.m.Config.Vocab {
				return 0, 0, fmt.Errorf("train: window %d: token %d at position %d is outside the vocabulary of %d",
					i, tok, j, l.m.Config.Vocab)
			}
		}
	}
	return len(windows), T, nil
}

// Loss is the mean next-token loss of the windows (each predicts its tokens 1… from the ones before, all windows of
// one length), with the current factors; any number of windows is taken, a batch at a time.
func (l *LoRA) Loss(windows [][]int32) (float64, error) {
	return l.lossScored(windows, nil)
}

// lossScored is Loss over the predictions that scored (one mask per window, as Step takes them; nil scores all)
// says count.
func (l *LoRA) lossScored(windows [][]int32, scored [][]bool) (float64, error) {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	var nll float64
	count := 0
	for i := 0; i < len(windows) || i == 0; i += l.batch {
		chunk := windows[i:min(i+l.batch, len(windows))]
		B, T, err := l.check(chunk)
		if err != nil {
			return 0, err
		}
		if len(chunk[0]) != len(windows[0]) {
			return 0, fmt.Errorf("train: window %d has %d tokens, window 0 has %d", i, len(chunk[0]), len(windows[0]))
		}
		var masks [][]bool
		if scored != nil {
			masks = scored[i:min(i+l.batch, len(windows))]
		}
		s, n, _ := l.forward(chunk, masks, B, T)
		nll += s
		count += n
	}
	if count == 0 {
		return 0, fmt.Errorf("train: no prediction of the %d windows is scored", len(windows))
	}
	return nll / float64(count), nil
}

// ChunkLoss is the validation loss of the recorded PyTorch recipe (val_loss in
// models/tiny-llama-a/lora-shakespeare-a/lora_log.json) with the current factors: tokens (a text tokenized with BOS)
// are cut into non-overlapping chunks of ctx tokens, the incomplete tail dropped, each chunk's first token replaced
// by BOS when the vocabulary adds one — llama-perplexity's chunks — and every prediction in every chunk is scored,
// ctx-1 per chunk. ctx must not exceed the LoRA's context + 1.
func (l *LoRA) ChunkLoss(tokens []int32, ctx int) (float64, error) {
	return l.ChunkLossScored(tokens, nil, ctx)
}

// ChunkLossScored is ChunkLoss over the predictions of the tokens scored marks (one entry per token, as
// Stream.Scored: the prompts of prompt/completion and chat records are left out); nil scores every token, as
// ChunkLoss does.
func (l *LoRA) ChunkLossScored(tokens []int32, scored []bool, ctx int) (float64, error) {
	if scored != nil && len(scored) != len(tokens) {
		return 0, fmt.Errorf("train: %d loss-mask entries for %d validation tokens", len(scored), len(tokens))
	}
	n := len(tokens) / ctx
	if ctx < 2 || n == 0 {
		return 0, fmt.Errorf("train: %d tokens make no chunk of %d", len(tokens), ctx)
	}
	chunks := make([][]int32, n)
	for i := range chunks {
		chunks[i] = slices.Clone(tokens[i*ctx : (i+1)*ctx])
		if l.m.Tokenizer.AddsBOS() {
			chunks[i][0] = l.m.Tokenizer.BOS()
		}
	}
	var masks [][]bool
	if scored != nil {
		masks = make([][]bool, n)
		for i := range masks {
			masks[i] = scored[i*ctx+1 : (i+1)*ctx] // prediction t of a chunk is of its token t+1
		}
	}
	return l.lossScored(chunks, masks)
}

// Step computes the mean loss of the windows and sets the gradients (see Params) of that loss. scored, when not
// nil, has one mask per window: scored[b][t] says whether predicting windows[b][t+1] counts toward the loss (prompt
// tokens and padding do not); a batch with nothing scored has loss 0 and zero gradients.
func (l *LoRA) Step(windows [][]int32, scored [][]bool) (float64, error) {
	B, T, err := l.check(windows)
	if err != nil {
		return 0, err
	}
	if scored != nil && len(scored) != B {
		return 0, fmt.Errorf("train: %d loss masks for %d windows", len(scored), B)
	}
	for i, s := range scored {
		if len(s) < T {
			return 0, fmt.Errorf("train: loss mask %d has %d entries for %d predictions", i, len(s), T)
		}
	}
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	l.drop.on = l.Dropout > 0
	defer func() { l.drop.on = false }()
	nll, count, targets := l.forward(windows, scored, B, T)
	l.backward(targets, count, B, T)
	if count == 0 {
		return 0, nil
	}
	return nll / float64(count), nil
}

// forward returns the summed loss, the number of scored predictions and the targets (-1 where not scored).
func (l *LoRA) forward(windows [][]int32, scored [][]bool, B, T int) (float64, int, []int32) {
	m, c, e := l.m, l.m.Config, l.extra
	n, d := B*T, c.Embd
	targets := make([]int32, n)
	trainedEmbd := e != nil && e.embd != nil
	for b, w := range windows {
		if trainedEmbd {
			e.embed(l.resid[0], b*T, w[:T], d)
		}
		for t := range T {
			if !trainedEmbd {
				m.embd.row(l.resid[0][(b*T+t)*d:(b*T+t+1)*d], int(w[t]))
			}
			targets[b*T+t] = w[t+1]
			if scored != nil && !scored[b][t] {
				targets[b*T+t] = -1
			}
		}
	}
	if l.embed != nil {
		l.embed.forward(l.resid[0], windows, T)
	}
	l.ropeTables(B, T)
	for li := range m.layers {
		l.layerForward(li, B, T)
	}
	rmsNormForward(l.xnf, l.rstdf[:n], l.resid[len(m.layers)][:n*d], e.finalNorm(m), d, c.NormEps)
	if e != nil && e.head != nil {
		kernels.Sgemm(false, true, n, c.Vocab, d, 1, l.xnf, d, e.head, d, 0, l.logits, c.Vocab)
	} else {
		frozenForward(m.output, l.logits, l.xnf, n, &l.buf)
	}
	nll, count := crossEntropyForward(l.logits[:n*c.Vocab], targets, c.Vocab)
	return nll, count, targets
}

// layerActs returns the buffers of layer li's activations: its own, or with Recompute the one set all layers share.
func (l *LoRA) layerActs(li int) *layerActs {
	if l.Recompute {
		return &l.acts[0]
	}
	return &l.acts[li]
}

// layerForward computes layer li from the residual stream entering it (l.resid[li]) into the one leaving it,
// keeping its activations in layerActs(li): the forward pass runs it for every layer and, with Recompute, the
// backward pass again for each layer before going back through it.
func (l *LoRA) layerForward(li, B, T int) {
	m, c := l.m, l.m.Config
	n, d, qDim, kvDim := B*T, c.Embd, c.Heads*c.HeadDim, c.HeadsKV*c.HeadDim
	ml, ll, a := &m.layers[li], &l.layers[li], l.layerActs(li)
	x, out := l.resid[li][:n*d], l.resid[li+1][:n*d]
	attnNorm, ffnNorm := l.extra.norms(li, ml)
	rmsNormForward(a.xn1, a.rstd1[:n], x, attnNorm, d, c.NormEps)
	project(&ll.q, a.q, a.hq, a.xn1, n, &l.buf)
	project(&ll.k, a.k, a.hk, a.xn1, n, &l.buf)
	project(&ll.v, a.v, a.hv, a.xn1, n, &l.buf)
	rope(a.q[:n*qDim], l.cos, l.sin, n, c.Heads, c)
	rope(a.k[:n*kvDim], l.cos, l.sin, n, c.HeadsKV, c)
	attentionForward(a.att, a.probs, a.q, a.k, a.v, l.pos, B, T, c)
	project(&ll.o, a.x2, a.ho, a.att, n, &l.buf)
	kernels.Axpy(1, x, a.x2[:n*d])
	rmsNormForward(a.xn2, a.rstd2[:n], a.x2[:n*d], ffnNorm, d, c.NormEps)
	project(&ll.gate, a.g, a.hg, a.xn2, n, &l.buf)
	project(&ll.up, a.u, a.hu, a.xn2, n, &l.buf)
	kernels.SiLUMul(a.h[:n*c.FF], a.g[:n*c.FF], a.u[:n*c.FF])
	project(&ll.down, out, a.hd, a.h, n, &l.buf)
	kernels.Axpy(1, a.x2[:n*d], out)
}

// backward sets the gradients of the mean loss over the count scored targets.
func (l *LoRA) backward(targets []int32, count, B, T int) {
	m, c, g, e := l.m, l.m.Config, &l.g, l.extra
	n, d, qDim, kvDim := B*T, c.Embd, c.Heads*c.HeadDim, c.HeadsKV*c.HeadDim
	_, all := l.Params()
	for _, g := range all {
		clear(g)
	}
	crossEntropyBackward(l.logits[:n*c.Vocab], targets, c.Vocab, 1/float32(max(count, 1)))
	dres, dxn := g.dres[:n*d], g.dxn[:n*d]
	clear(dxn)
	if e != nil && e.head != nil {
		kernels.Sgemm(false, false, n, d, c.Vocab, 1, l.logits, c.Vocab, e.head, d, 1, dxn, d)
		kernels.Sgemm(true, false, c.Vocab, d, n, 1, l.logits, c.Vocab, l.xnf, d, 1, e.dhead, d)
	} else {
		frozenBackward(m.output, dxn, l.logits, n, &l.buf)
	}
	clear(dres)
	rmsNormBackward(dres, dxn, l.resid[len(m.layers)], e.finalNorm(m), l.rstdf[:n], d)
	if e != nil && e.doutNorm != nil {
		rmsNormWeightGrad(e.doutNorm, dxn, l.resid[len(m.layers)], l.rstdf[:n], d)
	}
	for li := len(m.layers) - 1; li >= 0; li-- {
		if l.Recompute && li < len(m.layers)-1 {
			// The last layer's activations are still those of the forward pass.
			l.layerForward(li, B, T)
		}
		ml, ll, a := &m.layers[li], &l.layers[li], l.layerActs(li)
		attnNorm, ffnNorm := e.norms(li, ml)
		// dres is the gradient of the layer's output, which is x2 + down(h).
		dh, dgt, du := g.dh[:n*c.FF], g.dg[:n*c.FF], g.du[:n*c.FF]
		clear(dh)
		projectBack(&ll.down, dh, dres, a.h, a.hd, g.lora, n, &l.buf)
		swigluBackward(dgt, du, dh, a.g[:n*c.FF], a.u[:n*c.FF])
		clear(dxn)
		projectBack(&ll.gate, dxn, dgt, a.xn2, a.hg, g.lora, n, &l.buf)
		projectBack(&ll.up, dxn, du, a.xn2, a.hu, g.lora, n, &l.buf)
		rmsNormBackward(dres, dxn, a.x2, ffnNorm, a.rstd2[:n], d)
		if e != nil && e.dffnNorm != nil {
			rmsNormWeightGrad(e.dffnNorm[li], dxn, a.x2, a.rstd2[:n], d)
		}
		// dres is now the gradient of x2 = x + o(att).
		datt := g.datt[:n*qDim]
		clear(datt)
		projectBack(&ll.o, datt, dres, a.att, a.ho, g.lora, n, &l.buf)
		dq, dk, dv := g.dq[:n*qDim], g.dk[:n*kvDim], g.dv[:n*kvDim]
		clear(dk)
		clear(dv)
		attentionBackward(dq, dk, dv, datt, a.probs, a.q, a.k, a.v, l.pos, g.scratch, B, T, c)
		ropeBackward(dq, l.cos, l.negSin, n, c.Heads, c)
		ropeBackward(dk, l.cos, l.negSin, n, c.HeadsKV, c)
		clear(dxn)
		projectBack(&ll.q, dxn, dq, a.xn1, a.hq, g.lora, n, &l.buf)
		projectBack(&ll.k, dxn, dk, a.xn1, a.hk, g.lora, n, &l.buf)
		projectBack(&ll.v, dxn, dv, a.xn1, a.hv, g.lora, n, &l.buf)
		rmsNormBackward(dres, dxn, l.resid[li], attnNorm, a.rstd1[:n], d)
		if e != nil && e.dattnNorm != nil {
			rmsNormWeightGrad(e.dattnNorm[li], dxn, l.resid[li], a.rstd1[:n], d)
		}
	}
	if e != nil && e.embd != nil {
		e.embedBack(dres, n, d)
	}
	if l.embed != nil {
		l.embed.backward(dres)
	}
}
