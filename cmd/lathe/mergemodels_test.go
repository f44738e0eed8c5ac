package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
)

// TestMergeModelsCommand runs slerp at t = 0 on the shared tiny-llama-a and its fine-tune: the output directory holds
// the base's model.safetensors byte for byte and its configuration and tokenizer files.
func TestMergeModelsCommand(t *testing.T) {
	root := testshared.Path(t, "models", "tiny-llama-a")
	base := filepath.Join(root, "hf")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "merge.yaml")
	yaml := fmt.Sprintf("merge_method: slerp\nbase_model: %s\nmodels:\n  - model: %s\n  - model: %s\nparameters:\n  t: 0\ntokenizer_source: base\n",
		base, base, filepath.Join(root, "merged-lora-shakespeare-a"))
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	msg, code := run(t, "merge-models", "--config", cfg, "-o", out, "-q")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	if !strings.Contains(msg, "note: tokenizer_source: base") {
		t.Errorf("output %q does not note tokenizer_source", msg)
	}
	for _, name := range []string{"model.safetensors", "config.json", "tokenizer.model", "tokenizer_config.json"} {
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(base, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the base's", name)
		}
	}

	// The output may not replace an input, and configuration errors name their line; both exit 2.
	if msg, code := run(t, "merge-models", "--config", cfg, "-o", filepath.Join(base, "model.safetensors")); code != 2 || !strings.Contains(msg, "refusing to overwrite") {
		t.Errorf("overwriting the base: exit %d: %s", code, msg)
	}
	if err := os.WriteFile(cfg, []byte("merge_method: slerp\nbase_model: a\nmodels: [{model: a}]\nparameters: {t: 0, desnity: 1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if msg, code := run(t, "merge-models", "--config", cfg, "-o", out); code != 2 || !strings.Contains(msg, "merge.yaml:4: desnity: unknown parameter") {
		t.Errorf("bad configuration: exit %d: %s", code, msg)
	}
}
