package convert

import (
	"io"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/tensor"
)

// BenchmarkToGGUF converts the reference model (21 MB of F32 weights) to GGUF, written to io.Discard; MB/s counts
// the weights read.
func BenchmarkToGGUF(b *testing.B) {
	m := openTinyHF(b)
	var size int64
	for _, t := range m.Weights.Tensors() {
		size += t.Size
	}
	for _, typ := range []tensor.DType{tensor.F16, tensor.Q8_0} {
		b.Run(typ.String(), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				if err := ToGGUF(io.Discard, m, GGUFOptions{Type: typ}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkToHF converts the reference F16 GGUF to a Hugging Face directory in F32; MB/s counts the GGUF's
// tensor bytes.
func BenchmarkToHF(b *testing.B) {
	f := openGGUF(b, filepath.Join(tinyLlama(b), "gguf", "tiny-llama-a-f16.gguf"))
	var size int64
	for _, t := range f.Tensors() {
		size += t.Size
	}
	dir := b.TempDir()
	b.SetBytes(size)
	for b.Loop() {
		if err := ToHF(dir, f, HFOptions{Type: tensor.F32}); err != nil {
			b.Fatal(err)
		}
	}
}
