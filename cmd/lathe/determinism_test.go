package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The same command gives byte-identical files, run twice and with a different number of threads: outputs are
// compared by hash in release pipelines, so nothing may depend on scheduling, map order or the clock.
func TestSameCommandSameBytes(t *testing.T) {
	dir := t.TempDir()
	hf := filepath.Join(dir, "hf")
	// Rows of 256 and 512 elements, so that the k-quants of Q4_K_M apply and rows are spread across workers.
	writeHFLlama(t, hf, 256, 512, 2)
	f16 := filepath.Join(dir, "f16.gguf")
	tests := []struct {
		name string
		runs [][]string // each writes OUT; every run must give the same bytes
	}{
		{"convert HF to GGUF", [][]string{
			{"convert", hf, "-o", "OUT", "--outtype", "f16"},
			{"convert", hf, "-o", "OUT", "--outtype", "f16"},
		}},
		{"convert HF to GGUF q8_0", [][]string{
			{"convert", hf, "-o", "OUT", "--outtype", "q8_0"},
			{"convert", hf, "-o", "OUT", "--outtype", "q8_0"},
		}},
		{"quantize GGUF", [][]string{
			{"quantize", f16, "OUT", "--type", "Q4_K_M"},
			{"quantize", f16, "OUT", "--type", "Q4_K_M", "--threads", "1"},
			{"quantize", f16, "OUT", "--type", "Q4_K_M", "--threads", "2"},
		}},
		{"quantize HF", [][]string{
			{"quantize", hf, "OUT", "--type", "IQ4_XS", "--threads", "1"},
			{"quantize", hf, "OUT", "--type", "IQ4_XS", "--threads", "2"},
			{"quantize", hf, "OUT", "--type", "IQ4_XS", "--threads", "2"},
		}},
	}
	if out, err := lathe("convert", hf, "-o", f16, "--outtype", "f16").CombinedOutput(); err != nil {
		t.Fatalf("convert: %v\n%s", err, out)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var first []byte
			for i, args := range tt.runs {
				out := filepath.Join(t.TempDir(), "out.gguf")
				args = append([]string(nil), args...)
				for j := range args {
					if args[j] == "OUT" {
						args[j] = out
					}
				}
				// A child process each time: --threads sets GOMAXPROCS for the whole process.
				if msg, err := lathe(args...).CombinedOutput(); err != nil {
					t.Fatalf("%v: %v\n%s", args, err, msg)
				}
				got, err := os.ReadFile(out)
				if err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					first = got
					continue
				}
				if !bytes.Equal(got, first) {
					t.Errorf("%v: %d bytes differ from the first run's %d bytes (first difference at byte %d)",
						args, len(got), len(first), firstDiff(got, first))
				}
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
