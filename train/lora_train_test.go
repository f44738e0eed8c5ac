package train

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/tensor"
	"github.com/lathe-ml/lathe/tokenizer"
)

func tinyLlamaHF(t testing.TB) *Model {
	return openModel(t, testshared.Path(t, "models", "tiny-llama-a", "hf"))
}

// windowsOf cuts n windows of ctx+1 tokens from the start of a token stream, one after another.
func windowsOf(t testing.TB, tokens []int32, n, ctx int) [][]int32 {
	t.Helper()
	if len(tokens) < n*(ctx+1) {
		t.Fatalf("%d tokens are too few for %d windows of %d", len(tokens), n, ctx+1)
	}
	w := make([][]int32, n)
	for i := range w {
		w[i] = tokens[i*(ctx+1) : (i+1)*(ctx+1)]
	}
	return w
}

func shakespeare(t testing.TB, m *Model, name string) []int32 {
	t.Helper()
	text, err := os.ReadFile(testshared.Path(t, "models", "data", name))
	if err != nil {
		t.Fatal(err)
	}
	return m.Tokenizer.Encode(string(text), tokenizer.AddSpecial)
}

// TestTrainShakespeare fine-tunes tiny-llama-a on tinyshakespeare and checks that the loss on held-out text drops;
// the adapter written as PEFT must load with adapter.Open and, applied by ApplyAdapter, give through the inference
// runtime (Forward with an F32 cache) the loss the trainer computes.
func TestTrainShakespeare(t *testing.T) {
	if testing.Short() {
		t.Skip("trains for a few dozen steps")
	}
	m := tinyLlamaHF(t)
	const ctx = 128
	val := windowsOf(t, shakespeare(t, m, "shakespeare_val.txt"), 8, ctx)
	opts := TrainOptions{Rank: 8, Alpha: 16, Steps: 40, LR: 1e-3, Batch: 4, Ctx: ctx, Seed: 42}
	l, logs, err := Train(m, &Stream{Tokens: shakespeare(t, m, "shakespeare_train.txt")}, opts)
	if err != nil {
		t.Fatal(err)
	}
	base, err := MeanLossTokens(m, val, ctx+1)
	if err != nil {
		t.Fatal(err)
	}
	after, err := l.Loss(val)
	if err != nil {
		t.Fatal(err)
	}
	var tps float64
	for _, s := range logs[1:] {
		tps += s.TokensSec / float64(len(logs)-1)
	}
	t.Logf("validation loss %.4f (base model) → %.4f after %d steps; batch loss %.4f → %.4f; %.0f tokens/s",
		base.Loss, after, opts.Steps, logs[0].Loss, logs[len(logs)-1].Loss, tps)
	if after > base.Loss-0.1 {
		t.Errorf("validation loss went from %.4f to %.4f: training did not lower it by 0.1", base.Loss, after)
	}

	a := writtenAdapter(t, l)
	if len(a.Modules) != 7*m.Config.Layers || a.Modules[0].Scale != 2 {
		t.Fatalf("the written adapter has %d modules with scale %v, want %d with scale 2", len(a.Modules),
			a.Modules[0].Scale, 7*m.Config.Layers)
	}
	fresh := tinyLlamaHF(t)
	if err := fresh.SetCacheType(tensor.F32); err != nil {
		t.Fatal(err)
	}
	if err := fresh.ApplyAdapter(a, 1); err != nil {
		t.Fatal(err)
	}
	applied, err := MeanLossTokens(fresh, val, ctx+1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loss with the saved adapter through ApplyAdapter: %.6f, trainer: %.6f", applied.Loss, after)
	if math.Abs(applied.Loss-after) > 1e-4 {
		t.Errorf("the saved adapter gives loss %.6f in the runtime, the trainer %.6f", applied.Loss, after)
	}
}

// TestTrainGGUFMatchesHF trains the same few steps on the F32 GGUF conversion of tiny-llama-a, whose q and k rows
// are permuted, and on its Hugging Face original: WritePEFT puts the rows back in Hugging Face order, so both
// adapters must be the same up to float32 rounding and give the same loss.
func TestTrainGGUFMatchesHF(t *testing.T) {
	hf, gg := tinyLlamaHF(t), tinyLlama(t, "f32")
	tokens := shakespeare(t, hf, "shakespeare_train.txt")[:20000]
	opts := TrainOptions{Rank: 4, Alpha: 8, Steps: 3, Batch: 2, Ctx: 32, Seed: 7}
	var dirs []string
	for _, m := range []*Model{hf, gg} {
		l, _, err := Train(m, &Stream{Tokens: tokens}, opts)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "lora")
		if err := l.WritePEFT(dir); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, dir)
	}
	val := windowsOf(t, tokens, 4, 32)
	var losses []float64
	for _, dir := range dirs {
		losses = append(losses, adapterLoss(t, dir, val))
	}
	base, _ := MeanLossTokens(hf, val, 33)
	t.Logf("loss: base %.6f, adapter trained on HF %.6f, on GGUF %.6f", base.Loss, losses[0], losses[1])
	if math.Abs(losses[0]-losses[1]) > 1e-4 || math.Abs(losses[0]-base.Loss) < 1e-3 {
		t.Errorf("adapters trained on the HF and GGUF forms give losses %.6f and %.6f (base %.6f)", losses[0],
			losses[1], base.Loss)
	}
}

// TestTrainDeterministic trains twice with the same options and data and compares the written files byte for byte;
// a different seed must give a different adapter.
func TestTrainDeterministic(t *testing.T) {
	m := tinyLlamaHF(t)
	tokens := shakespeare(t, m, "shakespeare_val.txt")
	write := func(seed uint64) []byte {
		return adapterBytes(t, mustTrain(t, m, &Stream{Tokens: tokens},
			TrainOptions{Rank: 2, Steps: 2, Batch: 2, Ctx: 16, Seed: seed}))
	}
	a, b, c := write(5), write(5), write(6)
	if !bytes.Equal(a, b) {
		t.Error("two runs with the same seed wrote different adapters")
	}
	if bytes.Equal(a, c) {
		t.Error("runs with seeds 5 and 6 wrote the same adapter")
	}
}

// TestTrainQuantized trains on the Q4_K_M GGUF (weights decoded on the fly in both passes, QLoRA-style): the loss of
// the windows it trains on must drop.
func TestTrainQuantized(t *testing.T) {
	m := tinyLlama(t, "q4_k_m")
	tokens := shakespeare(t, m, "shakespeare_val.txt")[:2000]
	opts := TrainOptions{Rank: 4, Steps: 8, Batch: 2, Ctx: 32, LR: 3e-3, Seed: 1}
	l, logs, err := Train(m, &Stream{Tokens: tokens}, opts)
	if err != nil {
		t.Fatal(err)
	}
	win := windowsOf(t, tokens, 8, 32)
	base, err := NewLoRA(m, 4, 16, 8, 32, 1)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := base.Loss(win)
	after, _ := l.Loss(win)
	t.Logf("Q4_K_M: loss %.4f → %.4f on training text (%d steps, last batch %.4f)", before, after, opts.Steps,
		logs[len(logs)-1].Loss)
	if after > before-0.05 {
		t.Errorf("loss went from %.4f to %.4f", before, after)
	}
}

// TestLoRABadInput checks that malformed batches are refused with a message rather than a panic.
func TestLoRABadInput(t *testing.T) {
	m := tinyLlamaHF(t)
	l, err := NewLoRA(m, 2, 4, 2, 8, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		windows [][]int32
		want    string
	}{
		{nil, "batch of 0"},
		{[][]int32{{1, 2}, {1, 2}, {1, 2}}, "batch of 3"},
		{[][]int32{make([]int32, 10)}, "windows of 10 tokens"},
		{[][]int32{{1, 2, 3}, {1, 2}}, "window 1 has 2 tokens"},
		{[][]int32{{1, 5000}}, "token 5000 at position 1"},
	} {
		if _, err := l.Step(c.windows, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one containing %q", c.windows, err, c.want)
		}
	}
	if _, err := NewLoRA(m, 0, 4, 2, 8, 0); err == nil {
		t.Error("rank 0 was accepted")
	}
	if _, _, err := Train(m, &Stream{Tokens: make([]int32, 5)}, TrainOptions{Ctx: 8}); err == nil {
		t.Error("5 tokens of data for windows of 9 were accepted")
	}
}
