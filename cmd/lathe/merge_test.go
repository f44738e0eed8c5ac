package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/urfave/cli/v2"
)

// TestMergeCommand merges the shared LoRA into the shared safetensors base: the result is PEFT's merged
// model.safetensors, byte for byte; and into the GGUF base.
func TestMergeCommand(t *testing.T) {
	root := testshared.Path(t, "models", "tiny-llama-a")
	dir := t.TempDir()
	out := filepath.Join(dir, "merged.safetensors")
	if msg, code := run(t, "merge", filepath.Join(root, "hf", "model.safetensors"),
		filepath.Join(root, "lora-shakespeare-a"), "-o", out); code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(root, "merged-lora-shakespeare-a", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("lathe merge output differs from PEFT's merged model.safetensors")
	}
	gg := filepath.Join(dir, "merged.gguf")
	if msg, code := run(t, "merge", filepath.Join(root, "gguf", "tiny-llama-a-q8_0.gguf"),
		filepath.Join(root, "lora-shakespeare-a", "adapter-f32.gguf"), "-o", gg, "--scale", "0.5"); code != 0 {
		t.Fatalf("GGUF: exit %d: %s", code, msg)
	}
	bad := filepath.Join(dir, "x.safetensors")
	if msg, code := run(t, "merge", filepath.Join(root, "hf", "model.safetensors"),
		filepath.Join(root, "lora-shakespeare-a", "adapter-f32.gguf"), "-o", bad); code == 0 {
		t.Errorf("GGUF adapter on a safetensors base: exit 0: %s", msg)
	}
	if _, err := os.Stat(bad); err == nil {
		t.Error("a failed merge left its output behind")
	}
}

// TestAdaptersCombineCommand: the shared adapter combined with itself at weights ½ and ½ merges into the same model
// as the adapter alone, within float32 rounding.
func TestAdaptersCombineCommand(t *testing.T) {
	root := testshared.Path(t, "models", "tiny-llama-a")
	lora := filepath.Join(root, "lora-shakespeare-a")
	app := newApp()
	for _, cmd := range []*cli.Command{mergeCommand(), adaptersCommand()} {
		if app.Command(cmd.Name) == nil {
			app.Commands = append(app.Commands, cmd)
		}
	}
	runApp := func(args ...string) {
		t.Helper()
		var out bytes.Buffer
		app.Writer, app.ErrWriter = &out, &out
		if code := exitCode(&out, app.Run(permuteArgs(app, append([]string{"lathe"}, args...)))); code != 0 {
			t.Fatalf("lathe %v: exit %d: %s", args, code, out.String())
		}
	}
	dir := t.TempDir()
	combined := filepath.Join(dir, "combined")
	runApp("adapters", "combine", lora, lora, "--weights", "0.5,0.5", "-o", combined)
	merged := filepath.Join(dir, "m.safetensors")
	runApp("merge", filepath.Join(root, "hf", "model.safetensors"), combined, "-o", merged)
	got, err := modelfile.Open(merged)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	want, err := modelfile.Open(filepath.Join(root, "merged-lora-shakespeare-a", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	worst := 0.0
	for _, ti := range want.Tensors {
		g, err := got.View(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		w, _ := want.View(ti.Name)
		gf, err := g.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		wf, err := w.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		for i := range wf {
			worst = max(worst, math.Abs(float64(gf[i]-wf[i])))
		}
	}
	t.Logf("merge of the combined adapter vs PEFT's merged model: max abs diff %.3g", worst)
	if worst > 1e-6 {
		t.Errorf("max abs diff %g > 1e-6", worst)
	}
}
