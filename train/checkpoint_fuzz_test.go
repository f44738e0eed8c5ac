package train

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/tensor"
)

// fuzzModel writes a one-layer llama GGUF of width 8 with an eight-token SentencePiece vocabulary and opens it: a
// training step on it takes microseconds, so the fuzzer spends its time in the checkpoint reader.
func fuzzModel(f *testing.F) *Model {
	const embd, ff, vocab = 8, 16, 8
	md := &gguf.Metadata{}
	md.Set(gguf.KeyArchitecture, gguf.ValueOf("llama"))
	for k, v := range map[string]uint32{"block_count": 1, "embedding_length": embd, "feed_forward_length": ff,
		"attention.head_count": 2, "attention.head_count_kv": 2, "context_length": 64} {
		md.Set("llama."+k, gguf.ValueOf(v))
	}
	md.Set("tokenizer.ggml.model", gguf.ValueOf("llama"))
	md.Set("tokenizer.ggml.tokens", gguf.ArrayOf([]string{"<unk>", "<s>", "</s>", "\u2581", "a", "b", "\u2581a", "ab"}))
	md.Set("tokenizer.ggml.scores", gguf.ArrayOf([]float32{0, 0, 0, -1, -2, -3, -4, -5}))
	md.Set("tokenizer.ggml.token_type", gguf.ArrayOf([]int32{2, 3, 3, 1, 1, 1, 1, 1}))
	rng := rand.New(rand.NewPCG(1, 2))
	var views []tensor.View
	add := func(name string, shape ...int64) {
		n := 1
		for _, d := range shape {
			n *= int(d)
		}
		w := make([]float32, n)
		for i := range w {
			w[i] = float32(rng.NormFloat64() * 0.3)
		}
		data := make([]byte, 4*n)
		tensor.FromFloat32(data, w, tensor.F32)
		views = append(views, tensor.View{Name: name, DType: tensor.F32, Shape: tensor.Shape(shape), Data: data})
	}
	add("token_embd.weight", vocab, embd)
	for _, w := range []struct {
		name       string
		rows, cols int64
	}{{"attn_q", embd, embd}, {"attn_k", embd, embd}, {"attn_v", embd, embd}, {"attn_output", embd, embd},
		{"ffn_gate", ff, embd}, {"ffn_up", ff, embd}, {"ffn_down", embd, ff}} {
		add("blk.0."+w.name+".weight", w.rows, w.cols)
	}
	add("blk.0.attn_norm.weight", embd)
	add("blk.0.ffn_norm.weight", embd)
	add("output_norm.weight", embd)
	path := filepath.Join(f.TempDir(), "tiny.gguf")
	if err := gguf.WriteFile(path, md, views); err != nil {
		f.Fatal(err)
	}
	m, err := Open(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { m.Close() })
	return m
}

// FuzzCheckpoint writes arbitrary bytes as the checkpoint a run resumes from (through Train, as lathe train
// --resume does), for a LoRA and a DyLoRA run, whose checkpoints differ in the rank generator's state. Any input
// must give an error or a resumed run; none may panic or make the resume allocate more than the real checkpoint's
// resume plus a multiple of the file's size. The seeds are checkpoints of step 1 of 2 written by each run, some
// cut short or with a byte of the header or data changed.
func FuzzCheckpoint(f *testing.F) {
	m := fuzzModel(f)
	tokens := make([]int32, 64)
	for i := range tokens {
		tokens[i] = int32(1 + i*5%7)
	}
	data := &Stream{Tokens: tokens}
	runs := []TrainOptions{
		{Rank: 2, Alpha: 4, Steps: 2, Batch: 1, Ctx: 4, Seed: 3, Targets: []string{"q_proj", "down_proj"}},
		{Rank: 2, Alpha: 4, Steps: 2, Batch: 1, Ctx: 4, Seed: 3, Method: MethodDyLoRA, Targets: []string{"v_proj"}},
	}
	dir := f.TempDir()
	resume := func(method byte, ckpt []byte) error {
		if err := os.WriteFile(filepath.Join(dir, CheckpointName), ckpt, 0o644); err != nil {
			return err
		}
		opts := runs[int(method)%len(runs)]
		opts.ResumeFrom = dir
		_, _, err := Train(m, data, opts)
		return err
	}
	// allocated is the bytes allocated by resuming from ckpt.
	allocated := func(method byte, ckpt []byte) (uint64, error) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		err := resume(method, ckpt)
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc, err
	}
	var budget uint64
	for i, opts := range runs {
		ckpt, kept := f.TempDir(), f.TempDir()
		opts.Checkpoint, opts.SaveEvery = ckpt, 1
		opts.Log = keepCheckpoint(f, ckpt, kept, 1)
		if _, _, err := Train(m, data, opts); err != nil {
			f.Fatal(err)
		}
		saved, err := os.ReadFile(filepath.Join(kept, CheckpointName))
		if err != nil {
			f.Fatalf("the run's checkpoint of step 1: %v", err)
		}
		n, err := allocated(byte(i), saved)
		if err != nil {
			f.Fatalf("resume from the run's own checkpoint: %v", err)
		}
		budget = max(budget, n)
		f.Add(byte(i), saved)
		for _, cut := range []int{0, 7, 8, len(saved) / 2, len(saved) - 1} {
			f.Add(byte(i), saved[:cut])
		}
		for _, at := range []int{0, 9, 40, len(saved) - 5} {
			b := bytes.Clone(saved)
			b[at] ^= 0x5a
			f.Add(byte(i), b)
		}
	}
	f.Fuzz(func(t *testing.T, method byte, ckpt []byte) {
		n, _ := allocated(method, ckpt)
		// Twice the real resume's allocation leaves room for the garbage collector's and the error messages'
		// variation; the 64 bytes per file byte cover JSON and hex decoding of the metadata.
		if limit := 2*budget + 64*uint64(len(ckpt)); n > limit {
			t.Errorf("resuming from a %d-byte checkpoint allocated %d bytes, more than %d", len(ckpt), n, limit)
		}
	})
}
