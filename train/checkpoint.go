package train

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strconv"

	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// CheckpointName is the file a checkpoint directory holds: the LoRA factors, AdamW's moments and step count, the
// window generator's state, the step and the options, in one safetensors file replaced atomically, so that a
// checkpoint is complete or absent.
const CheckpointName = "checkpoint.safetensors"

// fingerprint is what must not change between a run and its resumption; the JSON names are the lathe train flags.
type fingerprint struct {
	Rank        int      `json:"rank"`
	Alpha       float64  `json:"alpha"`
	RSLoRA      bool     `json:"rslora"`
	Init        string   `json:"init"`
	Method      string   `json:"method,omitempty"` // absent for plain LoRA, as in checkpoints made before methods
	Frozen      bool     `json:"dylora-frozen,omitempty"`
	MethodArgs  string   `json:"method-arg,omitempty"`
	Targets     []string `json:"target"`
	Steps       int      `json:"steps"`
	LR          float64  `json:"lr"`
	Schedule    Schedule `json:"lr-schedule"`
	WarmupSteps int      `json:"warmup-steps"`
	WeightDecay float64  `json:"weight-decay"`
	MaxGradNorm float64  `json:"max-grad-norm"`
	GradAccum   int      `json:"grad-accum"`
	Batch       int      `json:"batch"`
	Ctx         int      `json:"ctx"`
	Seed        uint64   `json:"seed"`
	Data        string   `json:"data"`              // token count and FNV-1a hash of the training stream
	Model       string   `json:"model"`             // the model's shape
	Packing     string   `json:"packing,omitempty"` // absent for concat, as in checkpoints made before packing modes
	// Dropout is absent without dropout, as in checkpoints made before it. Recompute is not here: it changes no
	// result, so a run may resume with or without it.
	Dropout float64 `json:"lora-dropout,omitempty"`
}

// fingerprintKeys is the order in which differences are looked for.
var fingerprintKeys = []string{"rank", "alpha", "rslora", "init", "method", "dylora-frozen", "method-arg", "target", "steps", "lr",
	"lr-schedule", "warmup-steps", "weight-decay", "max-grad-norm", "grad-accum", "batch", "ctx", "seed", "packing", "lora-dropout", "data", "model"}

func (t *trainer) fingerprint() ([]byte, error) {
	h := fnv.New64a()
	for _, tok := range t.data.Tokens {
		h.Write([]byte{byte(tok), byte(tok >> 8), byte(tok >> 16), byte(tok >> 24)})
	}
	for _, s := range t.data.Scored {
		if s {
			h.Write([]byte{1})
		} else {
			h.Write([]byte{0})
		}
	}
	o, c := t.opts, t.lora.m.Config
	packing := ""
	if o.Packing == PackingConfined {
		// Confined windows depend on where the samples start, which the data hash then covers.
		packing = o.Packing
		for _, st := range t.data.Starts {
			h.Write([]byte{byte(st), byte(st >> 8), byte(st >> 16), byte(st >> 24), byte(st >> 32), byte(st >> 40)})
		}
	}
	method := o.Method
	if method == MethodLoRA {
		method = ""
	}
	return json.Marshal(fingerprint{Rank: o.Rank, Alpha: o.Alpha, RSLoRA: o.RSLoRA, Init: o.Init, Method: method,
		Frozen: o.DyLoRAFrozen, MethodArgs: canonicalArgs(o.MethodArgs),
		Targets: t.lora.targets(),
		Steps:   o.Steps, LR: o.LR, Schedule: o.Schedule, WarmupSteps: o.WarmupSteps, WeightDecay: o.WeightDecay,
		MaxGradNorm: o.MaxGradNorm, GradAccum: o.GradAccum, Batch: o.Batch, Ctx: o.Ctx, Seed: o.Seed,
		Data:    fmt.Sprintf("%d tokens, fnv1a %016x", len(t.data.Tokens), h.Sum64()),
		Model:   fmt.Sprintf("%d layers, width %d, ff %d, vocab %d", c.Layers, c.Embd, c.FF, c.Vocab),
		Packing: packing, Dropout: o.Dropout})
}

// save writes the checkpoint of the current step into dir.
func (t *trainer) save(dir string) error {
	fp, err := t.fingerprint()
	if err != nil {
		return err
	}
	rng, err := t.pcg.MarshalBinary()
	if err != nil {
		return err
	}
	var views []tensor.View
	for i, p := range t.params {
		shape := tensor.Shape{int64(len(p))}
		views = append(views, floatView(fmt.Sprintf("lora.%d", i), shape, p),
			floatView(fmt.Sprintf("adam_m.%d", i), shape, t.opt.m[i]),
			floatView(fmt.Sprintf("adam_v.%d", i), shape, t.opt.v[i]))
	}
	for _, s := range t.methodState() {
		views = append(views, floatView("method."+s.name, tensor.Shape{int64(len(s.f))}, s.f))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("train: checkpoint: %w", err)
	}
	meta := map[string]string{"step": strconv.Itoa(t.step), "adam_t": strconv.Itoa(t.opt.t),
		"rng": hex.EncodeToString(rng), "options": string(fp)}
	if t.ranks != nil {
		ranks, err := t.ranks.MarshalBinary()
		if err != nil {
			return err
		}
		meta["dylora_rng"] = hex.EncodeToString(ranks)
	}
	if err := safetensors.WriteFile(filepath.Join(dir, CheckpointName), views, meta); err != nil {
		return fmt.Errorf("train: checkpoint: %w", err)
	}
	return nil
}

// restore loads the checkpoint in dir, written by a run with the same options and data.
func (t *trainer) restore(dir string) error {
	path := filepath.Join(dir, CheckpointName)
	f, err := safetensors.Open(path)
	if err != nil {
		return fmt.Errorf("train: resume: %w", err)
	}
	defer f.Close()
	meta := f.Metadata()
	fp, err := t.fingerprint()
	if err != nil {
		return err
	}
	if err := sameOptions(path, []byte(meta["options"]), fp); err != nil {
		return err
	}
	step, err1 := strconv.Atoi(meta["step"])
	adamT, err2 := strconv.Atoi(meta["adam_t"])
	rng, err3 := hex.DecodeString(meta["rng"])
	if err := errors.Join(err1, err2, err3); err != nil || step < 1 || step > t.opts.Steps || adamT < 1 {
		return fmt.Errorf("train: resume: %s: metadata step %q, adam_t %q, rng %q: want a step in 1..%d, a positive "+
			"count and a hex generator state", path, meta["step"], meta["adam_t"], meta["rng"], t.opts.Steps)
	}
	if err := t.pcg.UnmarshalBinary(rng); err != nil {
		return fmt.Errorf("train: resume: %s: rng: %w", path, err)
	}
	if t.ranks != nil {
		ranks, err := hex.DecodeString(meta["dylora_rng"])
		if err == nil {
			err = t.ranks.UnmarshalBinary(ranks)
		}
		if err != nil {
			return fmt.Errorf("train: resume: %s: metadata dylora_rng %q: want the hex state of the rank "+
				"generator: %w", path, meta["dylora_rng"], err)
		}
	}
	t.opt.m, t.opt.v = make([][]float32, len(t.params)), make([][]float32, len(t.params))
	for i, p := range t.params {
		t.opt.m[i], t.opt.v[i] = make([]float32, len(p)), make([]float32, len(p))
		for _, dst := range []struct {
			name string
			f    []float32
		}{{"lora", p}, {"adam_m", t.opt.m[i]}, {"adam_v", t.opt.v[i]}} {
			if err := readFloats(f, path, fmt.Sprintf("%s.%d", dst.name, i), dst.f); err != nil {
				return err
			}
		}
	}
	for _, s := range t.methodState() {
		if err := readFloats(f, path, "method."+s.name, s.f); err != nil {
			return err
		}
	}
	t.opt.t, t.step = adamT, step
	return nil
}

// methodState is the state of the run's method that a checkpoint holds (see stateful).
func (t *trainer) methodState() []namedFloats {
	if s, ok := t.lora.method.(stateful); ok {
		return s.state()
	}
	return nil
}

// readFloats reads the F32 vector name of a checkpoint into dst, which fixes its length.
func readFloats(f *safetensors.File, path, name string, dst []float32) error {
	v, err := f.Tensor(name)
	if err != nil {
		return fmt.Errorf("train: resume: %s: %w", path, err)
	}
	if v.DType != tensor.F32 || len(v.Shape) != 1 || v.Shape[0] != int64(len(dst)) {
		return fmt.Errorf("train: resume: %s: tensor %s is %s %v, want F32 [%d]", path, name, v.DType, v.Shape,
			len(dst))
	}
	tensor.ToFloat32(dst, v.Data, tensor.F32)
	return nil
}

// sameOptions reports the first option that differs between a checkpoint's fingerprint and this run's.
func sameOptions(path string, saved, current []byte) error {
	var a, b map[string]json.RawMessage
	if err := json.Unmarshal(saved, &a); err != nil {
		return fmt.Errorf("train: resume: %s: metadata options: %w", path, err)
	}
	if err := json.Unmarshal(current, &b); err != nil {
		return err
	}
	for _, k := range fingerprintKeys {
		if string(a[k]) != string(b[k]) {
			return fmt.Errorf("train: resume: %s was written with %s %s, this run has %s %s: resume with the "+
				"options and data of the interrupted run", path, k, a[k], k, b[k])
		}
	}
	return nil
}
