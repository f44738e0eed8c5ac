package gguf

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
)

// FuzzHeader reads arbitrary bytes with both readers. A file is accepted by the ReaderAt reader exactly when the
// stream reader can read it to the end; every rejection is a FormatError; an accepted file has its tensors inside
// it and survives a write-read-write cycle unchanged.
func FuzzHeader(f *testing.F) {
	seeds := []rawSpec{baseSpec()}
	for _, mutate := range []func(*rawSpec){
		func(s *rawSpec) { s.version = 2 },
		func(s *rawSpec) { s.tensors, s.data = nil, nil },
		func(s *rawSpec) { s.cut = 14 },
		func(s *rawSpec) { s.kvs[1].val = u32Val(64); s.align = 64; s.tensors[1].offset = 64 },
	} {
		s := baseSpec()
		mutate(&s)
		seeds = append(seeds, s)
	}
	for _, s := range seeds {
		f.Add(s.build().b)
	}
	var every bytes.Buffer
	if w, err := NewWriter(&every, everyValue(), nil); err == nil && w.Close() == nil {
		f.Add(every.Bytes())
	}
	// Real headers, cut short: they exercise long key lists and end in truncation errors.
	if root, ok := testshared.Dir(); ok {
		for _, rel := range []string{"data/gguf/llama.cpp-vocab/ggml-vocab-gpt-2.gguf",
			"models/tiny-llama-a/gguf/tiny-llama-a-q4_0.gguf"} {
			if b, err := os.ReadFile(filepath.Join(root, rel)); err == nil {
				f.Add(b[:min(4096, len(b))])
			}
		}
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := NewReader(bytes.NewReader(data), int64(len(data)))
		serr := streamAll(data)
		if (err == nil) != (serr == nil) {
			t.Fatalf("readers disagree: ReaderAt %v, stream %v", err, serr)
		}
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) || !errors.As(serr, &fe) {
				t.Fatalf("not FormatErrors: %v / %v", err, serr)
			}
			return
		}
		for _, ti := range file.Tensors() {
			if ti.Offset < file.DataOffset || ti.Offset+ti.Size > int64(len(data)) {
				t.Fatalf("tensor %q [%d, %d) outside the file", ti.Name, ti.Offset, ti.Offset+ti.Size)
			}
		}
		once := rewrite(t, file)
		again, err := NewReader(bytes.NewReader(once), int64(len(once)))
		if err != nil {
			t.Fatalf("written file does not read back: %v", err)
		}
		for i, ti := range again.Tensors() {
			orig := file.Tensors()[i]
			if !bytes.Equal(once[ti.Offset:ti.Offset+ti.Size], data[orig.Offset:orig.Offset+orig.Size]) {
				t.Fatalf("tensor %q changed", ti.Name)
			}
		}
		if twice := rewrite(t, again); !bytes.Equal(once, twice) {
			t.Fatal("writing is not idempotent")
		}
	})
}
