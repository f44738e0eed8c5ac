package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/internal/testshared"
)

// TestTrainCompare compares lora with dylora and full fine-tuning (v_proj, and the embedding, head and norms): each method runs in its own process
// (its log and output kept under -o), lora and dylora at the budget lora has at --rank, full at its own fixed size;
// every row has a validation loss, a speed and a peak memory; the plot is written, and the lora adapter kept is
// the one `lathe train --method lora` writes alone. Method arguments must name their method.
func TestTrainCompare(t *testing.T) {
	models := testshared.Path(t, "models")
	dir := t.TempDir()
	text := readFile(t, filepath.Join(models, "data", "shakespeare_val.txt"))
	val := filepath.Join(dir, "val.txt")
	if err := os.WriteFile(val, text[:3000], 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "cmp")
	args := trainArgs(t, out, "--steps", "2", "--target", "v_proj", "--val", val, "--compare", "lora,dylora,full",
		"--plot", filepath.Join(dir, "cmp.svg"), "--json")
	msg, code := run(t, args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	var report struct {
		Budget int           `json:"budget"`
		Runs   []comparedRun `json:"runs"`
	}
	if err := json.Unmarshal([]byte(msg), &report); err != nil {
		t.Fatalf("%v: %s", err, msg)
	}
	const layers, rank, rows, cols = 6, 4, 128, 256 // tiny-llama-a's v_proj
	if want := layers * rank * (rows + cols); report.Budget != want || len(report.Runs) != 3 {
		t.Fatalf("budget %d and %d runs, want %d and 3", report.Budget, len(report.Runs), want)
	}
	for i, r := range report.Runs {
		if r.ValLoss == nil || r.TokensSec <= 0 || r.PeakRSS < 1<<20 {
			t.Errorf("%s: validation loss %v, %g tokens/s, peak RSS %d", r.Method, r.ValLoss, r.TokensSec, r.PeakRSS)
		}
		if want := report.Budget; i < 2 && (r.Trainable != want || r.Rank != rank || r.Fixed) {
			t.Errorf("%s: rank %d with %d trainable values, want rank %d and %d", r.Method, r.Rank, r.Trainable, rank, want)
		}
	}
	// full fine-tuning trains every v_proj weight, and by default the embedding, the head and every norm.
	const vocab, d = 1024, 256
	if full, want := report.Runs[2], layers*rows*cols+2*vocab*d+(2*layers+1)*d; !full.Fixed || full.Trainable != want {
		t.Errorf("full: %d trainable values (fixed %v), want %d", full.Trainable, full.Fixed, want)
	}
	if svg := readFile(t, filepath.Join(dir, "cmp.svg")); !strings.Contains(string(svg), ">dylora<") {
		t.Error("the plot has no curve for dylora")
	}
	alone := filepath.Join(dir, "alone")
	if msg, code := run(t, trainArgs(t, alone, "--steps", "2", "--target", "v_proj", "--val", val)...); code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	if a, b := readFile(t, filepath.Join(alone, adapter.WeightsName)), readFile(t, filepath.Join(out, "lora",
		adapter.WeightsName)); string(a) != string(b) {
		t.Error("the lora adapter of the comparison differs from the one lathe train writes alone")
	}
	if msg, code := run(t, append(args, "--method-arg", "alpha=2")...); code != 2 || !strings.Contains(msg, "METHOD:KEY=VALUE") {
		t.Errorf("an argument naming no method: exit %d, %q", code, msg)
	}
}
