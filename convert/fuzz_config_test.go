package convert

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/testshared"
)

// FuzzConfig converts the demo model under arbitrary config.json files. config.json decides head counts, sizes and
// token ids that the converter divides by and indexes with, so a stranger's config must give an error, never a
// panic; a config that converts must give a GGUF file that reads back.
func FuzzConfig(f *testing.F) {
	demo, err := filepath.Abs(filepath.Join("..", "internal", "demo", "tiny"))
	if err != nil {
		f.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(demo, "config.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(cfg)
	for _, s := range []string{`{}`, `null`, `{"architectures":["LlamaForCausalLM"]}`,
		`{"architectures":["LlamaForCausalLM"],"num_attention_heads":0,"num_key_value_heads":0,"hidden_size":64}`,
		`{"architectures":["LlamaForCausalLM"],"num_attention_heads":-4,"head_dim":1e400,"rope_scaling":{"type":"linear","factor":"x"}}`,
	} {
		f.Add([]byte(s))
	}
	if dir, ok := testshared.Dir(); ok {
		if b, err := os.ReadFile(filepath.Join(dir, "models", "tiny-llama-a", "hf", "config.json")); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, config []byte) {
		dir := t.TempDir()
		for _, name := range []string{"model.safetensors", "tokenizer.model", "tokenizer_config.json"} {
			if err := os.Symlink(filepath.Join(demo, name), filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "config.json"), config, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := OpenHF(dir)
		if err != nil {
			return
		}
		defer m.Close()
		var out bytes.Buffer
		if err := ToGGUF(&out, m, GGUFOptions{}); err != nil {
			return
		}
		if _, err := gguf.NewReader(bytes.NewReader(out.Bytes()), int64(out.Len())); err != nil {
			t.Fatalf("converted file does not read back: %v", err)
		}
	})
}
