package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lathe-ml/lathe/tensor"
)

// TestMain lets a test run the real lathe binary as a child process: the test binary re-executes itself with
// LATHE_RUN_MAIN set, so no separate build is needed.
func TestMain(m *testing.M) {
	if os.Getenv("LATHE_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// lathe returns a command running the lathe binary (this test binary, see TestMain) with args.
func lathe(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "LATHE_RUN_MAIN=1")
	return cmd
}

// A lathe process killed with SIGKILL in the middle of writing leaves the target path as it was: absent, or the
// complete previous file. Only a hidden temporary file can remain.
func TestKilledWriteLeavesTargetIntact(t *testing.T) {
	if testing.Short() {
		t.Skip("writes files of 40 to 80 MB")
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in.safetensors")
	n := 1 << 24
	data := make([]byte, 4*n)
	for i := range data {
		data[i] = byte(i * 7)
	}
	writeModel(t, in, tensor.View{Name: "w", DType: tensor.F32, Shape: tensor.Shape{int64(n)}, Data: data})
	// About 80 MB of BF16 weights: enough that converting and quantizing take a while after the first write.
	hf := filepath.Join(dir, "hf")
	writeHFLlama(t, hf, 1024, 2048, 4)
	tests := []struct {
		name string
		out  string
		args func(out string) []string
	}{
		{"cast", "out.safetensors", func(out string) []string { return []string{"cast", in, out, "--dtype", "bf16"} }},
		{"convert", "out.gguf", func(out string) []string { return []string{"convert", hf, "-o", out, "--outtype", "f16"} }},
		{"quantize", "out-q.gguf", func(out string) []string { return []string{"quantize", hf, out, "--type", "Q4_K_M"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, existing := range []bool{false, true} {
				killMidWrite(t, filepath.Join(dir, tt.out), existing, tt.args)
			}
		})
	}
}

// killMidWrite runs lathe with args(out), waits until its temporary file beside out has data, kills it with
// SIGKILL and checks that out is absent (or, when existing is set, still the file that was there before).
func killMidWrite(t *testing.T, out string, existing bool, args func(string) []string) {
	t.Helper()
	previous := []byte("the previous complete file")
	os.Remove(out)
	if existing {
		if err := os.WriteFile(out, previous, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := lathe(args(out)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	dir, tmpPrefix := filepath.Dir(out), "."+filepath.Base(out)+"."
	tmpSeen := false
	deadline := time.Now().Add(60 * time.Second)
	for !tmpSeen && time.Now().Before(deadline) {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), tmpPrefix) && strings.HasSuffix(e.Name(), ".tmp") {
				if info, err := e.Info(); err == nil && info.Size() > 0 {
					tmpSeen = true
				}
			}
		}
		time.Sleep(time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	err := cmd.Wait()
	if !tmpSeen {
		t.Fatalf("never saw the temporary file being written (process: %v)", err)
	}
	if err == nil {
		t.Skip("the command finished before it could be killed; nothing to check on this machine")
	}
	got, statErr := os.ReadFile(out)
	switch {
	case !existing && !os.IsNotExist(statErr):
		t.Errorf("target exists after a killed write (%d bytes)", len(got))
	case existing && !bytes.Equal(got, previous):
		t.Errorf("the previous file was replaced by %d bytes from a killed write", len(got))
	}
}

// writeHFLlama writes a Llama checkpoint in Hugging Face layout to dir: config.json, BF16 weights of the given
// sizes (8 heads of hidden/8, as many key-value heads), and the demo model's SentencePiece tokenizer (320 pieces).
// The weights are a fixed pattern of finite values, so the same call always writes the same files.
func writeHFLlama(t *testing.T, dir string, hidden, intermediate, layers int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const vocab, heads = 320, 8
	config := map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama", "vocab_size": vocab,
		"hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
		"num_attention_heads": heads, "num_key_value_heads": heads, "max_position_embeddings": 256,
		"rms_norm_eps": 1e-5, "rope_theta": 10000, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
		"bos_token_id": 1, "eos_token_id": 2,
	}
	b, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tokenizer.model", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "internal", "demo", "tiny", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	seed := 0
	bf16 := func(name string, shape ...int64) tensor.View {
		n := 1
		for _, d := range shape {
			n *= int(d)
		}
		data := make([]byte, 2*n)
		for i := 0; i < n; i++ {
			seed++
			// Sign and mantissa vary; the exponent stays within 2^-9 .. 2^-6, so every value is finite and small.
			data[2*i] = byte(seed * 151)
			data[2*i+1] = 0x3b + byte(seed>>3)%3 | byte(seed&1)<<7
		}
		return tensor.View{Name: name, DType: tensor.BF16, Shape: shape, Data: data}
	}
	h, m := int64(hidden), int64(intermediate)
	views := []tensor.View{bf16("model.embed_tokens.weight", vocab, h), bf16("lm_head.weight", vocab, h),
		bf16("model.norm.weight", h)}
	for l := range layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		views = append(views,
			bf16(p+"input_layernorm.weight", h), bf16(p+"post_attention_layernorm.weight", h),
			bf16(p+"self_attn.q_proj.weight", h, h), bf16(p+"self_attn.k_proj.weight", h, h),
			bf16(p+"self_attn.v_proj.weight", h, h), bf16(p+"self_attn.o_proj.weight", h, h),
			bf16(p+"mlp.gate_proj.weight", m, h), bf16(p+"mlp.up_proj.weight", m, h), bf16(p+"mlp.down_proj.weight", h, m))
	}
	writeModel(t, filepath.Join(dir, "model.safetensors"), views...)
}
