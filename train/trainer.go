package train

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// TrainOptions configures Train. Zero values take the defaults in brackets.
type TrainOptions struct {
	Rank        int     // LoRA rank [8]
	Alpha       float64 // LoRA alpha; the update is scaled by Alpha/Rank [16]
	Steps       int     // optimizer steps [100]
	LR          float64 // AdamW learning rate, constant [1e-3]
	WeightDecay float64 // AdamW decoupled weight decay [0]
	Batch       int     // windows per step [8]
	Ctx         int     // tokens per window that are predicted from; a window holds Ctx+1 tokens [256]
	Seed        uint64  // seeds the LoRA initialisation and the choice of windows
	// Log, if set, is called after every step.
	Log func(StepLog)
}

// StepLog is the record of one training step.
type StepLog struct {
	Step      int     `json:"step"`
	Loss      float64 `json:"loss"` // mean loss of the step's batch, before the update
	TokensSec float64 `json:"tokens_per_s"`
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
	if o.Alpha == 0 {
		o.Alpha = 16
	}
	if o.LR == 0 {
		o.LR = 1e-3
	}
}

// Train fine-tunes LoRA factors on the seven projections of every layer of m with AdamW over a token stream: each
// step takes Batch windows of Ctx+1 consecutive tokens at offsets drawn uniformly from the stream, and minimises the
// mean next-token loss. The same options and tokens give the same factors.
func Train(m *Model, data *Stream, opts TrainOptions) (*LoRA, []StepLog, error) {
	opts.defaults()
	if len(data.Tokens) < opts.Ctx+1 {
		return nil, nil, fmt.Errorf("train: %d tokens of training data are fewer than one window of %d",
			len(data.Tokens), opts.Ctx+1)
	}
	l, err := NewLoRA(m, opts.Rank, opts.Alpha, opts.Batch, opts.Ctx, opts.Seed)
	if err != nil {
		return nil, nil, err
	}
	opt := NewAdamW(opts.LR)
	opt.WeightDecay = opts.WeightDecay
	params, grads := l.Params()
	rng := rand.New(rand.NewPCG(opts.Seed, 0x64617461))
	var logs []StepLog
	for step := 1; step <= opts.Steps; step++ {
		windows, scored, err := data.Windows(rng, opts.Batch, opts.Ctx)
		if err != nil {
			return nil, nil, err
		}
		start := time.Now()
		loss, err := l.Step(windows, scored)
		if err != nil {
			return nil, nil, err
		}
		opt.Step(params, grads)
		rec := StepLog{Step: step, Loss: loss,
			TokensSec: float64(opts.Batch*opts.Ctx) / time.Since(start).Seconds()}
		logs = append(logs, rec)
		if opts.Log != nil {
			opts.Log(rec)
		}
	}
	return l, logs, nil
}

// peftModules are the Hugging Face module names of the projections, in the order of loraLayer.linears.
var peftModules = []string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
	"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}

// WritePEFT writes the factors as a PEFT adapter directory (adapter_config.json and adapter_model.safetensors, F32
// factors named as PEFT's get_peft_model_state_dict names them) that PEFT, adapter.Open and ApplyAdapter load.
// Factors of a GGUF model's q and k have their B rows put back in Hugging Face's rotary order.
func (l *LoRA) WritePEFT(dir string) error {
	var views []tensor.View
	for i := range l.layers {
		for j, lin := range l.layers[i].linears() {
			b := lin.b
			if heads := l.m.rotaryHeads(lin.w.name); heads > 0 && !l.m.Config.RopeNeoX {
				hf := make([]float32, len(b))
				convert.PermuteRotary(floatBytes(hf), floatBytes(b), heads, 4*l.Rank, false)
				b = hf
			}
			name := fmt.Sprintf("base_model.model.model.layers.%d.%s", i, peftModules[j])
			views = append(views,
				floatView(name+".lora_A.weight", tensor.Shape{int64(l.Rank), int64(lin.w.cols)}, lin.a),
				floatView(name+".lora_B.weight", tensor.Shape{int64(lin.w.rows), int64(l.Rank)}, b))
		}
	}
	cfg, err := json.MarshalIndent(map[string]any{
		"peft_type":               "LORA",
		"task_type":               "CAUSAL_LM",
		"base_model_name_or_path": l.m.Path,
		"r":                       l.Rank,
		"lora_alpha":              l.Alpha,
		"lora_dropout":            0.0,
		"target_modules":          []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
		"bias":                    "none",
		"fan_in_fan_out":          false,
		"use_rslora":              false,
		"use_dora":                false,
		"init_lora_weights":       true,
		"rank_pattern":            map[string]int{},
		"alpha_pattern":           map[string]float64{},
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
