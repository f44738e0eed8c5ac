package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
)

// TestConvertAdapter: lathe convert of the shared PEFT adapter equals convert_lora_to_gguf.py's file byte for byte,
// with the base given as the HF directory or the GGUF; without --base it is an input error.
func TestConvertAdapter(t *testing.T) {
	root := testshared.Path(t, "models", "tiny-llama-a")
	want, err := os.ReadFile(filepath.Join(root, "lora-shakespeare-a", "adapter-f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, base := range []string{filepath.Join(root, "hf"), filepath.Join(root, "gguf", "tiny-llama-a-q4_0.gguf")} {
		out := filepath.Join(t.TempDir(), "a.gguf")
		if msg, code := run(t, "convert", filepath.Join(root, "lora-shakespeare-a"), "-o", out, "--base", base); code != 0 {
			t.Fatalf("exit %d: %s", code, msg)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("--base %s: output differs from convert_lora_to_gguf.py's", base)
		}
	}
	if _, code := run(t, "convert", filepath.Join(root, "lora-shakespeare-a"), "-o", filepath.Join(t.TempDir(), "a.gguf")); code == 0 {
		t.Error("adapter without --base: exit 0")
	}
}
