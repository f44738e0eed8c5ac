package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
)

func TestEvalCommand(t *testing.T) {
	dir := testshared.Path(t, "models")
	model := filepath.Join(dir, "tiny-llama-a", "gguf", "tiny-llama-a-q4_0.gguf")
	data := filepath.Join(dir, "data", "val.txt")
	out, code := run(t, "eval", model, "--data", data, "--ctx", "256", "--chunks", "3")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	var running [3]float64
	var ppl, errPPL float64
	var chunks, ctx, scored int
	_, err := fmt.Sscanf(out, "[1]%f,[2]%f,[3]%f,\nFinal estimate: PPL = %f +/- %f (%d chunks of %d tokens, %d predictions)",
		&running[0], &running[1], &running[2], &ppl, &errPPL, &chunks, &ctx, &scored)
	if err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	if chunks != 3 || ctx != 256 || scored != 3*127 || fmt.Sprintf("%.4f", running[2]) != fmt.Sprintf("%.4f", ppl) {
		t.Errorf("output %q", out)
	}
	jout, code := run(t, "eval", model, "--data", data, "--chunks", "3", "--json", "--threads", "1")
	var r struct {
		PPL    float64 `json:"ppl"`
		Chunks int     `json:"n_chunks"`
	}
	if code != 0 || json.Unmarshal([]byte(jout), &r) != nil || fmt.Sprintf("%.4f", r.PPL) != fmt.Sprintf("%.4f", ppl) {
		t.Errorf("--json: exit %d, %q; want PPL %.4f", code, jout, ppl)
	}

	jsonl := filepath.Join(t.TempDir(), "d.jsonl")
	if err := os.WriteFile(jsonl, []byte(`{"text": "Once upon a time, there was a dog."}`+"\n\n"+`{"text": "The end."}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := run(t, "eval", model, "--data", jsonl); code != 0 || !strings.Contains(out, "of 2 texts") {
		t.Errorf("jsonl: exit %d, %q", code, out)
	}
	if err := os.WriteFile(jsonl, []byte(`{"txt": "x"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := run(t, "eval", model, "--data", jsonl); code != 2 || !strings.Contains(out, "d.jsonl:1") {
		t.Errorf("bad jsonl: exit %d, %q", code, out)
	}
	if out, code := run(t, "eval", model, "--data", data, "--kv", "q4_0"); code != 2 || !strings.Contains(out, "--kv") {
		t.Errorf("--kv q4_0: exit %d, %q", code, out)
	}
}

// TestGenerateCommand streams the greedy completion PyTorch and llama.cpp recorded for the reference model.
func TestGenerateCommand(t *testing.T) {
	dir := testshared.Path(t, "models", "tiny-llama-a")
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Torch struct {
			Greedy struct {
				Text string `json:"text"`
			} `json:"greedy"`
		} `json:"torch"`
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	out, code := run(t, "generate", filepath.Join(dir, "hf"), "--prompt", "Once upon a time", "--n", "48")
	if code != 0 || out != ref.Torch.Greedy.Text+"\n" {
		t.Errorf("exit %d:\n%q\nwant\n%q", code, out, ref.Torch.Greedy.Text+"\n")
	}
	a, _ := run(t, "generate", filepath.Join(dir, "gguf", "tiny-llama-a-q8_0.gguf"), "--prompt", "Once", "--n", "20", "--temp", "0.8", "--seed", "5")
	b2, _ := run(t, "generate", filepath.Join(dir, "gguf", "tiny-llama-a-q8_0.gguf"), "--prompt", "Once", "--n", "20", "--temp", "0.8", "--seed", "5")
	if a != b2 || !strings.HasPrefix(a, "Once") {
		t.Errorf("same seed, different samples:\n%q\n%q", a, b2)
	}
}
