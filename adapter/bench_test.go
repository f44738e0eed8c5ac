package adapter

import (
	"io"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/safetensors"
)

// BenchmarkMerge merges the shared PEFT adapter into the shared model in each base format; MB/s is of the base file.
func BenchmarkMerge(b *testing.B) {
	root := testshared.Path(b, "models", "tiny-llama-a")
	a, err := OpenPEFT(filepath.Join(root, "lora-shakespeare-a"))
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	for _, c := range []struct{ name, path string }{
		{"safetensors-f32", filepath.Join("hf", "model.safetensors")},
		{"gguf-f32", filepath.Join("gguf", "tiny-llama-a-f32.gguf")},
		{"gguf-q8_0", filepath.Join("gguf", "tiny-llama-a-q8_0.gguf")},
		{"gguf-q4_k_m", filepath.Join("gguf", "tiny-llama-a-q4_k_m.gguf")},
	} {
		b.Run(c.name, func(b *testing.B) {
			path := filepath.Join(root, c.path)
			var merge func() error
			var size int64
			if filepath.Ext(path) == ".gguf" {
				f, err := gguf.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				for _, t := range f.Tensors() {
					size += t.Size
				}
				merge = func() error { return MergeGGUF(io.Discard, f, a, MergeOptions{}) }
			} else {
				f, err := safetensors.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				size = f.Size()
				merge = func() error { return MergeSafetensors(io.Discard, f, a, MergeOptions{}) }
			}
			b.SetBytes(size)
			for b.Loop() {
				if err := merge(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
