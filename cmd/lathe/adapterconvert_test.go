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

// TestConvertAdapterFormats: llama.cpp's GGUF adapter → PEFT (--base as the GGUF model) and the PyTorch adapter →
// MLX → PEFT each merge with `lathe merge` into the same bytes as the PyTorch adapter; the MLX form and the GGUF →
// PEFT result both convert back to the reference GGUF adapter byte for byte. A GGUF adapter without --base, an
// unknown --to, --outtype for a PEFT or MLX output and --to for a model are input errors.
func TestConvertAdapterFormats(t *testing.T) {
	root := testshared.Path(t, "models", "tiny-llama-a")
	peft := filepath.Join(root, "lora-shakespeare-a")
	ref := filepath.Join(peft, "adapter-f32.gguf")
	hf := filepath.Join(root, "hf")
	tmp := t.TempDir()
	merge := func(adapterPath, name string) []byte {
		out := filepath.Join(tmp, name+".safetensors")
		if msg, code := run(t, "merge", filepath.Join(hf, "model.safetensors"), adapterPath, "-o", out); code != 0 {
			t.Fatalf("merge %s: exit %d: %s", adapterPath, code, msg)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	want := merge(peft, "want")
	steps := [][]string{
		{ref, "-o", filepath.Join(tmp, "from-gguf"), "--base", filepath.Join(root, "gguf", "tiny-llama-a-f32.gguf")},
		{peft, "-o", filepath.Join(tmp, "mlx"), "--to", "mlx"},
		{filepath.Join(tmp, "mlx"), "-o", filepath.Join(tmp, "from-mlx"), "--to", "peft"},
		{filepath.Join(tmp, "mlx"), "-o", filepath.Join(tmp, "mlx.gguf"), "--base", hf, "--name", "Lora Shakespeare A"},
		{filepath.Join(tmp, "from-gguf"), "-o", filepath.Join(tmp, "again.gguf"), "--base", hf, "--name", "Lora Shakespeare A"},
	}
	for _, s := range steps {
		if msg, code := run(t, append([]string{"convert"}, s...)...); code != 0 {
			t.Fatalf("convert %v: exit %d: %s", s, code, msg)
		}
	}
	for _, name := range []string{"from-gguf", "from-mlx"} {
		if _, err := os.Stat(filepath.Join(tmp, name, "adapter_model.safetensors")); err != nil {
			t.Fatalf("%s is not a PEFT adapter: %v", name, err)
		}
		if !bytes.Equal(merge(filepath.Join(tmp, name), name), want) {
			t.Errorf("merging %s differs from merging the PyTorch adapter", name)
		}
	}
	refBytes, err := os.ReadFile(ref)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"mlx.gguf", "again.gguf"} {
		got, err := os.ReadFile(filepath.Join(tmp, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, refBytes) {
			t.Errorf("%s differs from convert_lora_to_gguf.py's file", name)
		}
	}
	for _, bad := range [][]string{
		{ref, "-o", filepath.Join(tmp, "nobase")},
		{peft, "-o", filepath.Join(tmp, "x"), "--to", "onnx"},
		{peft, "-o", filepath.Join(tmp, "x"), "--to", "mlx", "--outtype", "f16"},
		{hf, "-o", filepath.Join(tmp, "x"), "--to", "peft"},
	} {
		if msg, code := run(t, append([]string{"convert"}, bad...)...); code != 2 {
			t.Errorf("convert %v: exit %d (%s), want 2", bad, code, msg)
		}
	}
}
