package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/urfave/cli/v2"
)

// TestTrainCommand runs a short training of tiny-llama-a and checks that the adapter it writes opens with the rank,
// scale and modules asked for, and that bad flags are refused with a message naming them.
func TestTrainCommand(t *testing.T) {
	models := testshared.Path(t, "models")
	out := filepath.Join(t.TempDir(), "lora")
	var stdout, stderr bytes.Buffer
	app := &cli.App{Name: "lathe", Writer: &stdout, ErrWriter: &stderr, Commands: []*cli.Command{trainCommand()}}
	args := []string{"lathe", "train", filepath.Join(models, "tiny-llama-a", "hf"),
		"--data", filepath.Join(models, "data", "shakespeare_val.txt"), "-o", out,
		"--rank", "4", "--alpha", "8", "--steps", "2", "--batch", "2", "--ctx", "32", "--seed", "3"}
	if err := app.Run(permuteArgs(app, args)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "step 2/2: loss ") {
		t.Errorf("no progress lines on stderr: %q", stderr.String())
	}
	a, err := adapter.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if len(a.Modules) != 6*7 || a.Modules[0].Rank != 4 || a.Modules[0].Scale != 2 {
		t.Errorf("adapter has %d modules, rank %d, scale %v; want 42, 4, 2", len(a.Modules), a.Modules[0].Rank,
			a.Modules[0].Scale)
	}
	bad := append(append([]string(nil), args[:len(args)-2]...), "--ctx", "0")
	if err := app.Run(permuteArgs(app, bad)); err == nil || !strings.Contains(err.Error(), "--ctx") {
		t.Errorf("--ctx 0: got error %v, want one naming --ctx", err)
	}
}
