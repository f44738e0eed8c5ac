package gguf

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkParseHeader parses the header of each shared GGUF from memory; MB/s counts header bytes (keys, token
// lists, tensor infos), which is what dominates opening a file.
func BenchmarkParseHeader(b *testing.B) {
	for _, p := range sharedGGUFs(b) {
		data, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		f, err := NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(filepath.Base(p), func(b *testing.B) {
			b.SetBytes(f.DataOffset)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := NewReader(bytes.NewReader(data), int64(len(data))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWriteHeader encodes the largest vocabulary header (GPT-2: 50257 tokens, 50000 merges).
func BenchmarkWriteHeader(b *testing.B) {
	f, err := Open(filepath.Join(sharedDir(b), "data", "gguf", "llama.cpp-vocab", "ggml-vocab-gpt-2.gguf"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.SetBytes(f.DataOffset)
	b.ReportAllocs()
	for b.Loop() {
		var buf bytes.Buffer
		w, err := NewWriter(&buf, f.Metadata, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
