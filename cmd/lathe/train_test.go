package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
	"github.com/lathe-ml/lathe/tokenizer"
	"github.com/lathe-ml/lathe/train"
)

// trainArgs is a short training of tiny-llama-a on the Shakespeare validation text (small and quick).
func trainArgs(t *testing.T, out string, extra ...string) []string {
	models := testshared.Path(t, "models")
	return append([]string{"train", filepath.Join(models, "tiny-llama-a", "hf"),
		"--data", filepath.Join(models, "data", "shakespeare_val.txt"), "-o", out,
		"--rank", "4", "--alpha", "8", "--batch", "2", "--ctx", "32", "--seed", "3"}, extra...)
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTrainCommand runs a short training with every output and checks each: the adapter opens with the rank, scale
// and modules asked for; the JSONL log has one record per step with the validation loss at the evaluation steps;
// the plot is an SVG; the GGUF adapter applied by the runtime gives the loss the PEFT one gives; the merged model
// differs from the base exactly in the adapted projections. Bad flags are refused with a message naming them.
func TestTrainCommand(t *testing.T) {
	models := testshared.Path(t, "models")
	dir := t.TempDir()
	out := filepath.Join(dir, "lora")
	p := func(name string) string { return filepath.Join(dir, name) }
	// A few thousand characters of validation text keep the three evaluations quick.
	val := readFile(t, filepath.Join(models, "data", "shakespeare_val.txt"))[:6000]
	if err := os.WriteFile(p("val.txt"), val, 0o644); err != nil {
		t.Fatal(err)
	}
	args := trainArgs(t, out, "--steps", "4", "--target", "q_proj,v_proj,down_proj", "--lr-schedule", "linear",
		"--warmup-steps", "1", "--max-grad-norm", "1", "--val", p("val.txt"),
		"--eval-every", "2", "--log", p("log.jsonl"), "--plot", p("loss.svg"), "--gguf-out", p("lora.gguf"),
		"--merge-out", p("merged.safetensors"))
	msg, code := run(t, args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	if !strings.Contains(msg, "4 steps") || !strings.Contains(msg, "validation loss") {
		t.Errorf("summary: %q", msg)
	}
	a, err := adapter.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if len(a.Modules) != 6*3 || a.Modules[0].Rank != 4 || a.Modules[0].Scale != 2 {
		t.Errorf("adapter has %d modules, rank %d, scale %v; want 18, 4, 2", len(a.Modules), a.Modules[0].Rank,
			a.Modules[0].Scale)
	}

	var recs []train.StepLog
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, p("log.jsonl"))))
	for sc.Scan() {
		if n := len(recs); n > 0 && !bytes.Contains(sc.Bytes(), []byte(`"lr":`)) ||
			n == 0 && !bytes.HasPrefix(sc.Bytes(), []byte(`{"step":0,"val_loss":`)) {
			t.Errorf("log line %d: %s", n, sc.Text())
		}
		var r train.StepLog
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	if len(recs) != 5 {
		t.Fatalf("log has %d records, want 5 (validation before training, then 4 steps)", len(recs))
	}
	for i, r := range recs {
		hasVal := r.ValLoss != nil
		if r.Step != i || hasVal != (i%2 == 0) || i > 0 && (r.Loss <= 0 || r.GradNorm <= 0 || r.TokensSec <= 0) {
			t.Errorf("log record %d: %+v", i, r)
		}
	}
	// Linear schedule of 4 steps with 1 warmup step: factors 0, 1, 2/3, 1/3.
	for i, f := range []float64{0, 1, 2.0 / 3, 1.0 / 3} {
		if math.Abs(recs[i+1].LR-1e-3*f) > 1e-12 {
			t.Errorf("step %d: lr %v, want %v", i+1, recs[i+1].LR, 1e-3*f)
		}
	}
	if svg := readFile(t, p("loss.svg")); !bytes.Contains(svg, []byte("<svg")) {
		t.Errorf("loss.svg is not an SVG: %.60q", svg)
	}

	// The GGUF adapter on the GGUF base and the PEFT adapter on the HF base give the same loss.
	tokens := func(m *train.Model) [][]int32 {
		tok := m.Tokenizer.Encode(string(val), tokenizer.AddSpecial)
		return [][]int32{tok[:64], tok[64:128]}
	}
	var losses []float64
	for _, c := range []struct{ model, adapter string }{
		{filepath.Join(models, "tiny-llama-a", "hf"), out},
		{filepath.Join(models, "tiny-llama-a", "gguf", "tiny-llama-a-f32.gguf"), p("lora.gguf")},
	} {
		m, err := train.Open(c.model)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		ad, err := adapter.Open(c.adapter)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.SetCacheType(tensor.F32); err != nil {
			t.Fatal(err)
		}
		if err := m.ApplyAdapter(ad, 1); err != nil {
			t.Fatal(err)
		}
		ad.Close()
		r, err := train.MeanLossTokens(m, tokens(m), 64)
		if err != nil {
			t.Fatal(err)
		}
		losses = append(losses, r.Loss)
	}
	if math.Abs(losses[0]-losses[1]) > 1e-4 {
		t.Errorf("loss with the PEFT adapter %.6f, with the GGUF adapter %.6f", losses[0], losses[1])
	}

	merged, err := safetensors.Open(p("merged.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer merged.Close()
	base, err := safetensors.Open(filepath.Join(models, "tiny-llama-a", "hf", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	changed := 0
	for _, info := range base.Tensors() {
		bv, _ := base.Tensor(info.Name)
		mv, err := merged.Tensor(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		adapted := strings.Contains(info.Name, "q_proj") || strings.Contains(info.Name, "v_proj") ||
			strings.Contains(info.Name, "down_proj")
		if same := bytes.Equal(bv.Data, mv.Data); same == adapted {
			t.Errorf("merged %s: unchanged %v, adapted %v", info.Name, same, adapted)
		}
		if !bytes.Equal(bv.Data, mv.Data) {
			changed++
		}
	}
	if changed != 18 {
		t.Errorf("%d merged tensors changed, want 18", changed)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--ctx", "0"}, "--ctx"},
		{[]string{"--lr-schedule", "step"}, "--lr-schedule"},
		{[]string{"--target", "lm_head"}, "lm_head"},
		{[]string{"--save-every", "2"}, "--checkpoint"},
	} {
		msg, code := run(t, trainArgs(t, p("bad"), append([]string{"--steps", "1"}, c.args...)...)...)
		if code != 2 || !strings.Contains(msg, c.want) {
			t.Errorf("%v: exit %d, %q; want exit 2 and a message naming %s", c.args, code, msg, c.want)
		}
	}
}

// TestTrainThreadsDeterministic: the same flags write the same adapter bytes with 1 and 2 threads.
func TestTrainThreadsDeterministic(t *testing.T) {
	var got [][]byte
	for _, threads := range []string{"1", "2"} {
		out := filepath.Join(t.TempDir(), "lora")
		if msg, code := run(t, trainArgs(t, out, "--steps", "3", "--grad-accum", "2", "--threads", threads)...); code != 0 {
			t.Fatalf("exit %d: %s", code, msg)
		}
		got = append(got, readFile(t, filepath.Join(out, adapter.WeightsName)))
	}
	if !bytes.Equal(got[0], got[1]) {
		t.Error("--threads 1 and --threads 2 wrote different adapters")
	}
}

// TestTrainResumeAfterKill kills a running lathe train with SIGKILL after its first checkpoint, resumes it, and
// compares the final adapter with an uninterrupted run's, byte for byte; resuming with another --lr is refused.
// The --log the killed run wrote as it went holds its finished steps; resumed, it reads as the uninterrupted run's
// log (the same steps, losses, learning rates and norms).
func TestTrainResumeAfterKill(t *testing.T) {
	dir := t.TempDir()
	const steps = "40"
	whole := filepath.Join(dir, "whole")
	wholeLog, log := filepath.Join(dir, "whole.jsonl"), filepath.Join(dir, "log.jsonl")
	if msg, code := run(t, trainArgs(t, whole, "--steps", steps, "--log", wholeLog)...); code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	ckpt, out := filepath.Join(dir, "ckpt"), filepath.Join(dir, "resumed")
	cmd := lathe(trainArgs(t, out, "--steps", steps, "--checkpoint", ckpt, "--save-every", "2", "--log", log)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(ckpt, train.CheckpointName)); err == nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	if err := cmd.Wait(); err == nil {
		t.Skip("lathe train finished before it could be killed; nothing to check on this machine")
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("the killed run left its output %s (%v)", out, err)
	}
	if killed := logSteps(t, log); len(killed) < 2 || killed[0].Step != 1 {
		t.Errorf("the killed run's log holds %d records, want its finished steps from 1", len(killed))
	}
	if msg, code := run(t, trainArgs(t, out, "--steps", steps, "--resume", ckpt, "--lr", "2e-3")...); code != 2 ||
		!strings.Contains(msg, "lr 0.001, this run has lr 0.002") {
		t.Errorf("resume with another --lr: exit %d, %q", code, msg)
	}
	if msg, code := run(t, trainArgs(t, out, "--steps", steps, "--resume", ckpt, "--log", log)...); code != 0 {
		t.Fatalf("resume: exit %d: %s", code, msg)
	}
	want, got := logSteps(t, wholeLog), logSteps(t, log)
	if len(got) != len(want) {
		t.Fatalf("resumed log has %d records, the uninterrupted run's %d", len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		if g.Step != w.Step || g.Loss != w.Loss || g.LR != w.LR || g.GradNorm != w.GradNorm {
			t.Errorf("log record %d: resumed %+v, uninterrupted %+v", i, g, w)
		}
	}
	if !bytes.Equal(readFile(t, filepath.Join(whole, adapter.WeightsName)),
		readFile(t, filepath.Join(out, adapter.WeightsName))) {
		t.Error("the run killed and resumed wrote a different adapter from the uninterrupted run")
	}
}

// TestTrainLogStdout: --log - puts one JSON line per step on standard output, and the summary on standard error.
func TestTrainLogStdout(t *testing.T) {
	cmd := lathe(trainArgs(t, filepath.Join(t.TempDir(), "lora"), "--steps", "2", "--log", "-")...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	for i, l := range lines {
		var r train.StepLog
		if err := json.Unmarshal([]byte(l), &r); err != nil || r.Step != i+1 {
			t.Errorf("stdout line %d %q: step %d, %v", i, l, r.Step, err)
		}
	}
	if len(lines) != 2 || !strings.Contains(stderr.String(), "2 steps") {
		t.Errorf("stdout %q, stderr %q; want 2 JSON lines and the summary", stdout.String(), stderr.String())
	}
}

// logSteps reads a --log file.
func logSteps(t *testing.T, path string) []train.StepLog {
	t.Helper()
	var recs []train.StepLog
	for sc := bufio.NewScanner(bytes.NewReader(readFile(t, path))); sc.Scan(); {
		var r train.StepLog
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s: line %q: %v", path, sc.Text(), err)
		}
		recs = append(recs, r)
	}
	return recs
}

// TestTrainJSONL trains on alpaca records (the shared alpaca_en_demo.json array) and on a JSONL file whose third
// record is malformed: the first runs with prompts left out of the loss, the second is refused naming the file, the
// line and the field, and writes nothing.
func TestTrainJSONL(t *testing.T) {
	dir := t.TempDir()
	alpaca := testshared.Path(t, "data", "datasets", "llama-factory", "alpaca_en_demo.json")
	out := filepath.Join(dir, "alpaca")
	args := append(trainArgs(t, out, "--steps", "2"), "--data", alpaca)
	if msg, code := run(t, args...); code != 0 || !strings.Contains(msg, "445475 tokens") {
		t.Fatalf("exit %d, want 0 and 445475 tokens (999 records):\n%s", code, msg)
	}
	if _, err := adapter.Open(out); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.jsonl")
	records := `{"prompt": "To be", "completion": " or not to be"}` + "\n" + `{"text": "ROMEO: hello"}` + "\n" +
		`{"prompt": 3, "completion": "x"}` + "\n"
	if err := os.WriteFile(bad, []byte(records), 0o644); err != nil {
		t.Fatal(err)
	}
	badOut := filepath.Join(dir, "bad")
	msg, code := run(t, append(trainArgs(t, badOut, "--steps", "1"), "--data", bad)...)
	if code != 2 || !strings.Contains(msg, "bad.jsonl:3") || !strings.Contains(msg, `"prompt"`) {
		t.Fatalf("exit %d, want 2 and an error naming bad.jsonl:3 and the field:\n%s", code, msg)
	}
	if _, err := os.Stat(badOut); !os.IsNotExist(err) {
		t.Errorf("a refused run left %s behind (%v)", badOut, err)
	}
}
