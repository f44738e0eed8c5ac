package main

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/tensor"
	"github.com/lathe-ml/lathe/tokenizer"
	"github.com/lathe-ml/lathe/train"
)

// TestTrainInitPiSSA runs `lathe train --init pissa` on the F32 GGUF of tiny-llama-a (q rows in GGUF's rotary
// order): the adapter written is the rank-2·rank plain LoRA against the original model, in Hugging Face's order, so
// that applied to the Hugging Face model it gives the loss of the merged GGUF written from it (--merge-out); an
// unknown --init and a quantized model are refused.
func TestTrainInitPiSSA(t *testing.T) {
	models := testshared.Path(t, "models")
	dir := t.TempDir()
	out, merged := filepath.Join(dir, "lora"), filepath.Join(dir, "merged.gguf")
	args := trainArgs(t, out, "--steps", "3", "--lr", "5e-4", "--init", "pissa", "--target", "q_proj,down_proj",
		"--merge-out", merged)
	args[1] = filepath.Join(models, "tiny-llama-a", "gguf", "tiny-llama-a-f32.gguf")
	msg, code := run(t, args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	if !strings.Contains(msg, "plain LoRA of rank 8") {
		t.Errorf("summary: %q", msg)
	}
	a, err := adapter.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if len(a.Modules) != 6*2 || a.Modules[0].Rank != 8 || a.Modules[0].Scale != 1 {
		t.Errorf("adapter has %d modules, rank %d, scale %v; want 12, 8, 1", len(a.Modules), a.Modules[0].Rank,
			a.Modules[0].Scale)
	}
	base, err := train.Open(filepath.Join(models, "tiny-llama-a", "hf"))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	text := string(readFile(t, filepath.Join(models, "data", "shakespeare_val.txt"))[:2000])
	tok := base.Tokenizer.Encode(text, tokenizer.AddSpecial)
	seqs := [][]int32{tok[:64], tok[64:128]}
	if err := base.SetCacheType(tensor.F32); err != nil {
		t.Fatal(err)
	}
	before, err := train.MeanLossTokens(base, seqs, 64)
	if err != nil {
		t.Fatal(err)
	}
	var losses []float64
	for _, m := range []*train.Model{base, nil} {
		if m == nil {
			if m, err = train.Open(merged); err != nil {
				t.Fatal(err)
			}
			defer m.Close()
		} else if err := m.ApplyAdapter(a, 1); err != nil {
			t.Fatal(err)
		}
		if err := m.SetCacheType(tensor.F32); err != nil {
			t.Fatal(err)
		}
		r, err := train.MeanLossTokens(m, seqs, 64)
		if err != nil {
			t.Fatal(err)
		}
		losses = append(losses, r.Loss)
	}
	t.Logf("loss of the HF model %.6f; with the adapter applied %.6f; merged GGUF %.6f", before.Loss, losses[0],
		losses[1])
	if math.Abs(losses[0]-losses[1]) > 1e-4 || math.Abs(losses[0]-before.Loss) < 1e-3 {
		t.Errorf("the adapter applied gives loss %.6f, the merged model %.6f (base %.6f)", losses[0], losses[1],
			before.Loss)
	}

	q4 := filepath.Join(models, "tiny-llama-a", "gguf", "tiny-llama-a-q4_0.gguf")
	for _, c := range []struct {
		args []string
		want string
	}{
		{trainArgs(t, filepath.Join(dir, "x"), "--init", "olora"), `--init "olora"`},
		{append(trainArgs(t, filepath.Join(dir, "y"), "--init", "milora"), "--steps", "1"), "is Q4_0"},
	} {
		if c.want == "is Q4_0" {
			c.args[1] = q4
		}
		msg, code := run(t, c.args...)
		if code != 2 || !strings.Contains(msg, c.want) {
			t.Errorf("%v: exit %d, %q; want 2 and a message containing %q", c.args, code, msg, c.want)
		}
	}
}
