package train

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/adapter"
)

// TestResumeByteIdentical: a run resumed from the checkpoint of step 3 of 6 writes the adapter of the uninterrupted
// 6-step run byte for byte, with schedule, warmup, clipping, accumulation, weight decay and a loss mask all in play;
// resuming with a different option or different data is refused with a message naming it.
func TestResumeByteIdentical(t *testing.T) {
	m := tinyLlamaHF(t)
	tokens := shakespeare(t, m, "shakespeare_val.txt")[:6000]
	scored := make([]bool, len(tokens))
	for i := range scored {
		scored[i] = i%7 != 0
	}
	data := &Stream{Tokens: tokens, Scored: scored}
	base := TrainOptions{Rank: 4, Alpha: 8, Steps: 6, LR: 3e-3, Schedule: Cosine, WarmupSteps: 2, WeightDecay: 0.01,
		MaxGradNorm: 0.5, GradAccum: 2, Batch: 2, Ctx: 24, Seed: 11, Targets: []string{"q_proj", "v_proj", "down_proj"}}
	want := adapterBytes(t, mustTrain(t, m, data, base))

	// Checkpoints every 3 steps; the one of step 3 is kept aside, as a run killed after it would have left it.
	ckpt, kept := t.TempDir(), t.TempDir()
	opts := base
	opts.Checkpoint, opts.SaveEvery = ckpt, 3
	opts.Log = keepCheckpoint(t, ckpt, kept, 3)
	if _, _, err := Train(m, data, opts); err != nil {
		t.Fatal(err)
	}
	resumed := base
	resumed.ResumeFrom = kept
	var steps []int
	resumed.Log = func(s StepLog) { steps = append(steps, s.Step) }
	l, _, err := Train(m, data, resumed)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 3 || steps[0] != 4 {
		t.Errorf("the resumed run logged steps %v, want 4 5 6", steps)
	}
	if got := adapterBytes(t, l); !bytes.Equal(got, want) {
		t.Error("the run resumed at step 3 wrote a different adapter from the uninterrupted run")
	}
	if bytes.Equal(want, adapterBytes(t, mustTrain(t, m, data, TrainOptions{Rank: 4, Alpha: 8, Steps: 3, LR: 3e-3,
		Batch: 2, Ctx: 24, Seed: 11, Targets: base.Targets}))) {
		t.Error("a different run wrote the same adapter: the comparison cannot fail")
	}

	for _, c := range []struct {
		change func(*TrainOptions, **Stream)
		want   string
	}{
		{func(o *TrainOptions, _ **Stream) { o.LR = 1e-3 }, "lr 0.003, this run has lr 0.001"},
		{func(o *TrainOptions, _ **Stream) { o.GradAccum = 1 }, "grad-accum"},
		{func(o *TrainOptions, _ **Stream) { o.Targets = nil }, "target"},
		{func(o *TrainOptions, _ **Stream) { o.Init = InitPiSSA }, "init"},
		{func(_ *TrainOptions, d **Stream) { *d = &Stream{Tokens: tokens} }, "data"},
	} {
		o, d := base, data
		o.ResumeFrom = kept
		c.change(&o, &d)
		if _, _, err := Train(m, d, o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("resume with a changed option: error %v, want one naming %q", err, c.want)
		}
	}
	if _, _, err := Train(m, data, TrainOptions{Steps: 2, Batch: 2, Ctx: 24, ResumeFrom: t.TempDir()}); err == nil ||
		!strings.Contains(err.Error(), CheckpointName) {
		t.Errorf("resume from an empty directory: error %v, want one naming %s", err, CheckpointName)
	}
}

// adapterBytes writes l as a PEFT directory and returns its safetensors file.
func adapterBytes(t *testing.T, l *LoRA) []byte {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "lora")
	if err := l.WritePEFT(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, adapter.WeightsName))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustTrain(t *testing.T, m *Model, data *Stream, opts TrainOptions) *LoRA {
	t.Helper()
	l, _, err := Train(m, data, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestTrainTargetsRSLoRA: only the targeted projections get factors, and the written configuration says so, with
// use_rslora and the α/√r scale that adapter.Open derives from it.
func TestTrainTargetsRSLoRA(t *testing.T) {
	m := tinyLlamaHF(t)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_val.txt")[:3000]}
	l := mustTrain(t, m, data, TrainOptions{Rank: 4, Alpha: 8, RSLoRA: true, Steps: 2, Batch: 2, Ctx: 16, Seed: 3,
		Targets: []string{"v_proj", "up_proj"}})
	dir := filepath.Join(t.TempDir(), "lora")
	if err := l.WritePEFT(dir); err != nil {
		t.Fatal(err)
	}
	a, err := adapter.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if len(a.Modules) != 2*m.Config.Layers {
		t.Fatalf("%d modules, want %d", len(a.Modules), 2*m.Config.Layers)
	}
	for _, mod := range a.Modules {
		if !strings.HasSuffix(mod.Name, "v_proj") && !strings.HasSuffix(mod.Name, "up_proj") || mod.Scale != 4 {
			t.Errorf("module %s with scale %v; want only v_proj and up_proj, scale 8/√4 = 4", mod.Name, mod.Scale)
		}
	}
	cfg, err := os.ReadFile(filepath.Join(dir, adapter.ConfigName))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), `"use_rslora": true`) ||
		!strings.Contains(strings.Join(strings.Fields(string(cfg)), ""), `"target_modules":["v_proj","up_proj"]`) {
		t.Errorf("adapter_config.json does not record the targets and rsLoRA:\n%s", cfg)
	}
	if _, _, err := Train(m, data, TrainOptions{Steps: 1, Batch: 2, Ctx: 16, Targets: []string{"lm_head"}}); err == nil ||
		!strings.Contains(err.Error(), "lm_head") {
		t.Errorf("target lm_head: error %v, want one naming it", err)
	}
}
