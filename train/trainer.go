package train

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// TrainOptions configures Train. Zero values take the defaults in brackets.
type TrainOptions struct {
	Rank    int      // LoRA rank [8]
	Alpha   float64  // LoRA alpha; the update is scaled by Alpha/Rank [16]
	RSLoRA  bool     // scale the update by Alpha/√Rank instead (rsLoRA)
	Targets []string // modules to adapt, by PEFT name (q_proj, …, down_proj, embed_tokens) [all seven projections]
	Init    string   // initial factors: "" (PEFT's default), InitPiSSA or InitMiLoRA; see LoRAConfig.Init
	// Method is MethodLoRA, MethodDyLoRA (see dylora.go: a rank drawn from 1..Rank per step) or another of
	// Methods() [MethodLoRA]; MethodArgs sets its arguments (MethodArgs(Method) lists them).
	Method     string
	MethodArgs map[string]string
	// DyLoRAFrozen trains, in a DyLoRA step that drew rank b, only the b-th rank (the paper's "frozen" mode)
	// instead of all b.
	DyLoRAFrozen bool
	Steps        int     // optimizer steps [100]
	LR           float64 // AdamW peak learning rate [1e-3]
	// Schedule shapes the learning rate over the steps [Constant], after WarmupSteps steps of linear warmup.
	Schedule    Schedule
	WarmupSteps int
	WeightDecay float64 // AdamW decoupled weight decay (torch.optim.AdamW's default is 0.01) [0]
	// MaxGradNorm clips the gradient to this global L2 norm before each update, as torch.nn.utils.clip_grad_norm_;
	// 0 does not clip.
	MaxGradNorm float64
	// GradAccum is the number of micro-batches of Batch windows per optimizer step [1]. The gradient is the mean of
	// the micro-batches' gradients of their own mean losses, as the Hugging Face Trainer accumulates (each
	// micro-batch loss divided by GradAccum): a micro-batch with few scored tokens weighs as much as a full one.
	GradAccum int
	Batch     int    // windows per micro-batch [8]
	Ctx       int    // tokens per window that are predicted from; a window holds Ctx+1 tokens [256]
	Seed      uint64 // seeds the LoRA initialisation and the choice of windows

	// Val, if set, is validation text already tokenized (with BOS). Its loss (see LoRA.ChunkLoss, with chunks of
	// Ctx tokens) is computed before the first step, every EvalEvery steps and after the last. ValScored, when not
	// nil, has one entry per Val token and leaves the unscored ones out of it (Stream.Scored, LoRA.ChunkLossScored).
	Val       []int32
	ValScored []bool
	EvalEvery int

	// Checkpoint, if set, is a directory where the complete training state is saved every SaveEvery steps, so that
	// a run given ResumeFrom continues to the same result as an uninterrupted run.
	Checkpoint string
	SaveEvery  int
	ResumeFrom string // a Checkpoint directory of an earlier run with the same options and data

	// Log, if set, is called after every step, and at step 0 with the validation loss before training. It is
	// called before the step's checkpoint is written, so that a log kept as the run goes always reaches the step
	// of the checkpoint on disk: a run killed between the two resumes from the checkpoint before, and a resumed
	// log drops the records past it. The other order would lose the record of a step killed after its save.
	Log func(StepLog)

	// Packing is PackingConcat or PackingConfined: whether a token of a training window attends to the samples
	// before its own (see Stream.ConfinedWindows) [PackingConcat]. Validation (ChunkLoss) is the same for both.
	Packing string

	// Dropout is LoRA dropout (LoRAConfig.Dropout, PEFT's lora_dropout) for methods lora and dylora: each
	// micro-batch drops adapter inputs with this probability, under masks that are a function of the seed, step,
	// micro-batch, layer and module, so that a resumed run draws the masks of an uninterrupted one. Validation
	// runs without dropout.
	Dropout float64
	// Recompute recomputes each layer's activations in the backward pass instead of keeping them
	// (LoRAConfig.Recompute): less memory, the same results.
	Recompute bool
}

// StepLog is the record of one training step. Step 0 carries only the validation loss before training.
type StepLog struct {
	Step      int      `json:"step"`
	Loss      float64  `json:"loss"` // mean loss of the step's micro-batches, before the update
	LR        float64  `json:"lr"`   // learning rate of the update
	GradNorm  float64  `json:"grad_norm"`
	Rank      int      `json:"rank,omitempty"` // the rank a DyLoRA step drew
	TokensSec float64  `json:"tokens_per_s"`
	ValLoss   *float64 `json:"val_loss,omitempty"`
}

// MarshalJSON writes step 0 as its step and validation loss alone: there is no training loss to report yet.
func (s StepLog) MarshalJSON() ([]byte, error) {
	if s.Step == 0 {
		return json.Marshal(struct {
			Step    int      `json:"step"`
			ValLoss *float64 `json:"val_loss,omitempty"`
		}{0, s.ValLoss})
	}
	type plain StepLog // without this method
	return json.Marshal(plain(s))
}

func (o *TrainOptions) defaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Rank, 8)
	def(&o.Steps, 100)
	def(&o.Batch, 8)
	def(&o.Ctx, 256)
	def(&o.GradAccum, 1)
	if o.Alpha == 0 {
		o.Alpha = 16
	}
	if o.LR == 0 {
		o.LR = 1e-3
	}
	if o.Schedule == "" {
		o.Schedule = Constant
	}
	if o.Method == "" {
		o.Method = MethodLoRA
	}
}

func (o *TrainOptions) check() error {
	if _, err := ParseSchedule(string(o.Schedule)); err != nil {
		return err
	}
	for _, v := range []struct {
		name   string
		n, min int
	}{{"rank", o.Rank, 1}, {"steps", o.Steps, 1}, {"batch", o.Batch, 1}, {"ctx", o.Ctx, 1},
		{"grad-accum", o.GradAccum, 1}, {"warmup-steps", o.WarmupSteps, 0}, {"eval-every", o.EvalEvery, 0},
		{"save-every", o.SaveEvery, 0}} {
		if v.n < v.min {
			return fmt.Errorf("train: %s %d: must be at least %d", v.name, v.n, v.min)
		}
	}
	if o.MaxGradNorm < 0 || o.WeightDecay < 0 || o.LR < 0 {
		return fmt.Errorf("train: learning rate %g, weight decay %g and max grad norm %g must not be negative",
			o.LR, o.WeightDecay, o.MaxGradNorm)
	}
	if _, err := MethodArgs(o.Method); err != nil {
		return err
	}
	if len(o.MethodArgs) > 0 && (o.Method == MethodLoRA || o.Method == MethodDyLoRA) {
		return fmt.Errorf("train: method %s takes no arguments", o.Method)
	}
	if o.Method == MethodDyLoRA && o.Init != "" {
		return fmt.Errorf("train: method %s trains from PEFT's default initialisation, not %s: its truncated "+
			"ranks would not be adapters of the original base", o.Method, o.Init)
	}
	if o.DyLoRAFrozen && o.Method != MethodDyLoRA {
		return fmt.Errorf("train: the frozen update is an option of method %s, not %s", MethodDyLoRA, o.Method)
	}
	if o.Packing != "" && o.Packing != PackingConcat && o.Packing != PackingConfined {
		return fmt.Errorf("train: packing %q: expected %s or %s", o.Packing, PackingConcat, PackingConfined)
	}
	if o.SaveEvery > 0 && o.Checkpoint == "" {
		return fmt.Errorf("train: saving every %d steps needs a checkpoint directory", o.SaveEvery)
	}
	return nil
}

// Train fine-tunes LoRA factors on the targeted projections of every layer of m with AdamW over a token stream:
// each step takes GradAccum micro-batches of Batch windows of Ctx+1 consecutive tokens at offsets drawn uniformly
// from the stream, and lowers their mean next-token loss. The same options and tokens give the same factors,
// whatever the thread count, and a run resumed from a checkpoint gives the factors of an uninterrupted one.
func Train(m *Model, data *Stream, opts TrainOptions) (*LoRA, []StepLog, error) {
	opts.defaults()
	if err := opts.check(); err != nil {
		return nil, nil, err
	}
	if len(data.Tokens) < opts.Ctx+1 {
		return nil, nil, fmt.Errorf("train: %d tokens of training data are fewer than one window of %d",
			len(data.Tokens), opts.Ctx+1)
	}
	t, err := newTrainer(m, data, opts)
	if err != nil {
		return nil, nil, err
	}
	if opts.ResumeFrom != "" {
		if err := t.restore(opts.ResumeFrom); err != nil {
			return nil, nil, err
		}
	}
	var logs []StepLog
	emit := func(rec StepLog) {
		logs = append(logs, rec)
		if opts.Log != nil {
			opts.Log(rec)
		}
	}
	validate := func() (*float64, error) {
		v, err := t.lora.ChunkLossScored(opts.Val, opts.ValScored, opts.Ctx)
		if err != nil {
			return nil, fmt.Errorf("train: validation: %w", err)
		}
		return &v, nil
	}
	if opts.Val != nil && t.step == 0 {
		v, err := validate()
		if err != nil {
			return nil, nil, err
		}
		emit(StepLog{ValLoss: v})
	}
	for t.step < opts.Steps {
		rec, err := t.next()
		if err != nil {
			return nil, nil, err
		}
		if opts.Val != nil && (t.step == opts.Steps || opts.EvalEvery > 0 && t.step%opts.EvalEvery == 0) {
			if rec.ValLoss, err = validate(); err != nil {
				return nil, nil, err
			}
		}
		emit(rec)
		if opts.SaveEvery > 0 && t.step%opts.SaveEvery == 0 {
			if err := t.save(opts.Checkpoint); err != nil {
				return nil, nil, err
			}
		}
	}
	return t.lora, logs, nil
}

// trainer is the state of a run between steps: everything a checkpoint holds.
type trainer struct {
	opts TrainOptions
	data *Stream
	lora *LoRA
	opt  *AdamW
	pcg  *rand.PCG
	rng  *rand.Rand
	// ranks draws DyLoRA's rank of each step (nil for plain LoRA), a stream of its own so that the windows are
	// those of a LoRA run with the same seed.
	ranks  *rand.PCG
	params [][]float32
	own    [][]float32 // the gradients LoRA.Step sets
	grads  [][]float32 // the gradient the update uses: own, or acc when accumulating
	acc    [][]float32
	step   int
	// update is the method's own update of the tensors it claims (see updater), which stand as empty tensors in
	// params and adam so that AdamW skips them.
	update updater
	adam   [][]float32 // the gradients AdamW takes: grads, the claimed ones empty
}

func newTrainer(m *Model, data *Stream, opts TrainOptions) (*trainer, error) {
	l, err := NewLoRAConfig(m, LoRAConfig{Rank: opts.Rank, Alpha: opts.Alpha, RSLoRA: opts.RSLoRA, Targets: opts.Targets,
		Init: opts.Init, Method: opts.Method, MethodArgs: opts.MethodArgs, Steps: opts.Steps, Dropout: opts.Dropout,
		Recompute: opts.Recompute},
		opts.Batch, opts.Ctx, opts.Seed)
	if err != nil {
		return nil, err
	}
	t := &trainer{opts: opts, data: data, lora: l, opt: NewAdamW(opts.LR), pcg: rand.NewPCG(opts.Seed, 0x64617461)}
	t.opt.WeightDecay = opts.WeightDecay
	if s, ok := l.method.(lrScaler); ok {
		t.opt.scales = s.lrScales
	}
	t.rng = rand.New(t.pcg)
	if opts.Method == MethodDyLoRA {
		t.ranks = rand.NewPCG(opts.Seed, 0x64796c6f)
	}
	if s, ok := l.method.(starter); ok {
		if err := s.start(t); err != nil {
			return nil, err
		}
	}
	t.params, t.own = l.Params()
	t.grads = t.own
	if opts.GradAccum > 1 {
		t.acc = make([][]float32, len(t.grads))
		for i, g := range t.grads {
			t.acc[i] = make([]float32, len(g))
		}
		t.grads = t.acc
	}
	t.adam = t.grads
	if u, ok := l.method.(updater); ok {
		t.update, t.params, t.adam = u, slices.Clone(t.params), slices.Clone(t.grads)
		for _, i := range u.claimed() {
			t.params[i], t.adam[i] = nil, nil
		}
	}
	return t, nil
}

// next runs one optimizer step.
func (t *trainer) next() (StepLog, error) {
	start := time.Now()
	b := 0
	if t.ranks != nil {
		b = 1 + rand.New(t.ranks).IntN(t.opts.Rank)
		if err := t.lora.SetRank(b); err != nil {
			return StepLog{}, err
		}
	}
	loss, err := t.gradients()
	if err != nil {
		return StepLog{}, err
	}
	if t.ranks != nil {
		if t.opts.DyLoRAFrozen {
			t.lora.freezeBelow(t.grads, b)
		}
		// Validation and the written adapter use the full rank.
		if err := t.lora.SetRank(t.opts.Rank); err != nil {
			return StepLog{}, err
		}
	}
	if h, ok := t.lora.method.(gradHook); ok {
		h.beforeUpdate(t.step+1, t.grads)
	}
	norm := gradNorm(t.grads)
	if t.opts.MaxGradNorm > 0 {
		clipGrads(t.grads, norm, t.opts.MaxGradNorm)
	}
	t.step++
	t.opt.LR = t.opts.LR * t.opts.Schedule.Factor(t.step, t.opts.Steps, t.opts.WarmupSteps)
	if t.update != nil {
		t.update.update(t.step, t.opt, t.grads)
	}
	t.opt.Step(t.params, t.adam)
	if h, ok := t.lora.method.(stepHook); ok {
		if err := h.afterUpdate(t.step); err != nil {
			return StepLog{}, err
		}
	}
	tokens := t.opts.GradAccum * t.opts.Batch * t.opts.Ctx
	return StepLog{Step: t.step, Loss: loss, LR: t.opt.LR, GradNorm: norm, Rank: b,
		TokensSec: float64(tokens) / time.Since(start).Seconds()}, nil
}

// gradients draws GradAccum micro-batches and leaves in t.grads the mean of their loss gradients; it returns the
// mean of their losses.
func (t *trainer) gradients() (float64, error) {
	k := t.opts.GradAccum
	inv := float32(1 / float64(k))
	var loss float64
	for i := range k {
		t.lora.SetDropoutStep(t.step+1, i)
		l, err := t.microBatch()
		if err != nil {
			return 0, err
		}
		loss += l / float64(k)
		if k == 1 {
			break
		}
		for j, g := range t.own {
			acc := t.acc[j]
			if i == 0 {
				clear(acc)
			}
			for n, v := range g {
				acc[n] += v * inv
			}
		}
	}
	return loss, nil
}

// microBatch draws one micro-batch of windows, packed as the options say, and sets the LoRA's gradients of its
// mean loss, which it returns.
func (t *trainer) microBatch() (float64, error) {
	if t.opts.Packing == PackingConfined {
		windows, scored, positions, err := t.data.ConfinedWindows(t.rng, t.opts.Batch, t.opts.Ctx)
		if err != nil {
			return 0, err
		}
		return t.lora.StepConfined(windows, scored, positions)
	}
	windows, scored, err := t.data.Windows(t.rng, t.opts.Batch, t.opts.Ctx)
	if err != nil {
		return 0, err
	}
	return t.lora.Step(windows, scored)
}

// gradNorm is the L2 norm of all gradients together, the total_norm of torch.nn.utils.clip_grad_norm_.
func gradNorm(grads [][]float32) float64 {
	var sum float64
	for _, g := range grads {
		for _, v := range g {
			sum += float64(v) * float64(v)
		}
	}
	return math.Sqrt(sum)
}

// clipGrads scales the gradients, whose global norm is norm, as torch.nn.utils.clip_grad_norm_ does: by
// max/(norm+1e-6) when that is below 1.
func clipGrads(grads [][]float32, norm, maxNorm float64) {
	coef := maxNorm / (norm + 1e-6)
	if coef >= 1 {
		return
	}
	c := float32(coef)
	for _, g := range grads {
		for i := range g {
			g[i] *= c
		}
	}
}

// peftModules are the Hugging Face module paths of the projections, in the order of loraLayer.linears.
var peftModules = []string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
	"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}

// WritePEFT writes the factors as a PEFT adapter directory (adapter_config.json and adapter_model.safetensors, F32
// factors named as PEFT's get_peft_model_state_dict names them) that PEFT, adapter.Open and ApplyAdapter load.
// Factors of a GGUF model's q and k have their B rows put back in Hugging Face's rotary order. After a PiSSA or
// MiLoRA initialisation the adapter written is the plain LoRA of rank 2·Rank and scale 1 whose update on the
// original base equals the trained factors' on the residual one (see writeConverted), so that it applies to the
// model as released.
func (l *LoRA) WritePEFT(dir string) error {
	if l.method != nil {
		return l.writeMethod(dir)
	}
	if l.initial != nil {
		return l.writeConverted(dir)
	}
	params, _ := l.Params()
	return l.writeFactors(dir, params)
}

// writeFactors writes factors (A then B of each adapted module, in Params order) as WritePEFT describes.
func (l *LoRA) writeFactors(dir string, factors [][]float32) error {
	return l.writeFactorsRank(dir, factors, l.Rank)
}

// writeFactorsRank is writeFactors for factors of the given rank.
func (l *LoRA) writeFactorsRank(dir string, factors [][]float32, rank int) error {
	ranks := make([]int, len(factors)/2)
	for i := range ranks {
		ranks[i] = rank
	}
	return l.writeLoRA(dir, factors, ranks, l.Alpha, l.RSLoRA)
}

// writeLoRA writes factors (A then B of each trained module, in Params order) of the given ranks as a PEFT LoRA
// adapter. With alpha > 0 every rank must be the same and the adapter has that lora_alpha; alpha 0 means the
// scale is folded into the factors: lora_alpha equals r, and modules of another rank than the most common one get
// rank_pattern and alpha_pattern entries of their own, so that every module has scale 1.
func (l *LoRA) writeLoRA(dir string, factors [][]float32, ranks []int, alpha float64, rslora bool) error {
	var views []tensor.View
	var names []string
	k := 0
	for i := range l.layers {
		for j, lin := range l.layers[i].linears() {
			if !lin.trained() {
				continue
			}
			a, b, rank := factors[2*k], factors[2*k+1], ranks[k]
			k++
			if heads := l.m.rotaryHeads(lin.w.name); heads > 0 && !l.m.Config.RopeNeoX {
				hf := make([]float32, len(b))
				convert.PermuteRotary(floatBytes(hf), floatBytes(b), heads, 4*rank, false)
				b = hf
			}
			module := fmt.Sprintf("model.layers.%d.%s", i, peftModules[j])
			names = append(names, module)
			name := "base_model.model." + module
			views = append(views,
				floatView(name+".lora_A.weight", tensor.Shape{int64(rank), int64(lin.w.cols)}, a),
				floatView(name+".lora_B.weight", tensor.Shape{int64(lin.w.rows), int64(rank)}, b))
		}
	}
	if l.embed != nil {
		names = append(names, embedPath)
		views = append(views, l.embed.views(factors[2*k], factors[2*k+1], ranks[k])...)
	}
	r, pattern := ranks[0], map[string]int{}
	if alpha == 0 {
		byName := map[string]int{}
		for i, n := range ranks {
			byName[names[i]] = n
		}
		r, pattern = adapter.RankPatterns(names, byName)
		alpha = float64(r)
	} else if slices.Min(ranks) != slices.Max(ranks) {
		return fmt.Errorf("train: writing modules of ranks %d to %d with one lora_alpha", slices.Min(ranks),
			slices.Max(ranks))
	}
	cfg, err := json.MarshalIndent(map[string]any{
		"peft_type":               "LORA",
		"task_type":               "CAUSAL_LM",
		"base_model_name_or_path": l.m.Path,
		"r":                       r,
		"lora_alpha":              alpha,
		"lora_dropout":            l.Dropout,
		"target_modules":          l.targets(),
		"bias":                    "none",
		"fan_in_fan_out":          false,
		"use_rslora":              rslora,
		"use_dora":                false,
		"init_lora_weights":       true,
		"rank_pattern":            pattern,
		"alpha_pattern":           pattern,
	}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := safetensors.WriteFile(filepath.Join(dir, adapter.WeightsName), views,
		map[string]string{"format": "pt"}); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, adapter.ConfigName), cfg)
}

func floatView(name string, shape tensor.Shape, f []float32) tensor.View {
	data := make([]byte, 4*len(f))
	tensor.FromFloat32(data, f, tensor.F32) // sizes match by construction
	return tensor.View{Name: name, DType: tensor.F32, Shape: shape, Data: data}
}
