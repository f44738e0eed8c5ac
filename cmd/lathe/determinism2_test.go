package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
)

// merge, prune and mask give byte-identical files whatever the number of threads: the merged and pruned tensors are
// spread over workers (and re-encoded when quantized), and the principal score's randomized SVD and the random
// score draw from a seed, so nothing may depend on which worker ran what. TestSameCommandSameBytes covers convert
// and quantize.
func TestThreadsSameBytes(t *testing.T) {
	root := testshared.Path(t, "models", "tiny-llama-a")
	hf, lora := filepath.Join(root, "hf"), filepath.Join(root, "lora-shakespeare-a")
	q4, q8 := filepath.Join(root, "gguf", "tiny-llama-a-q4_k_m.gguf"), filepath.Join(root, "gguf", "tiny-llama-a-q8_0.gguf")
	tests := []struct {
		name string
		args []string // OUT and MASK name the files compared
	}{
		{"merge safetensors", []string{"merge", filepath.Join(hf, "model.safetensors"), lora, "-o", "OUT.safetensors",
			"--scale", "0.7", "--outtype", "bf16"}},
		{"merge GGUF q8_0", []string{"merge", q8, filepath.Join(lora, "adapter-f32.gguf"), "-o", "OUT.gguf"}},
		{"prune principal", []string{"prune", hf, "-o", "OUT.safetensors", "--mask-out", "MASK.safetensors",
			"--method", "principal", "--rank", "8", "--keep", "0.4", "--seed", "3", "--include", `layers\.[01]\.`}},
		// Two blocks are enough to spread Q4_K and Q6_K rows over workers; the rest is copied.
		{"prune q4_k_m 2:4", []string{"prune", q4, "-o", "OUT.gguf", "--method", "magnitude", "--structure", "2:4",
			"--include", `blk\.[01]\.`}},
		{"mask random", []string{"mask", hf, "-o", "OUT.safetensors", "--method", "random", "--keep", "0.3",
			"--seed", "5"}},
		{"mask principal by row", []string{"mask", q8, "-o", "OUT.safetensors", "--method", "principal", "--rank",
			"4", "--keep", "0.2", "--group", "row", "--seed", "9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var first map[string][]byte
			for _, threads := range []string{"1", "2", "2"} {
				got := runWithOutputs(t, append(tt.args, "--threads", threads))
				if first == nil {
					first = got
					continue
				}
				for name, b := range got {
					if !bytes.Equal(b, first[name]) {
						t.Errorf("--threads %s: %s: %d bytes differ from the first run's %d bytes (first difference at byte %d)",
							threads, name, len(b), len(first[name]), firstDiff(b, first[name]))
					}
				}
			}
		})
	}
}

// runWithOutputs runs lathe in a child process (--threads sets GOMAXPROCS for the whole process), with each
// argument starting with OUT or MASK replaced by a path in a new directory, and returns those files' contents by
// argument.
func runWithOutputs(t *testing.T, args []string) map[string][]byte {
	t.Helper()
	dir := t.TempDir()
	args = append([]string(nil), args...)
	paths := map[string]string{}
	for i, a := range args {
		if strings.HasPrefix(a, "OUT") || strings.HasPrefix(a, "MASK") {
			paths[a] = filepath.Join(dir, a)
			args[i] = paths[a]
		}
	}
	if msg, err := lathe(args...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, msg)
	}
	got := map[string][]byte{}
	for a, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 {
			t.Fatalf("%v: %s is empty", args, a)
		}
		got[a] = b
	}
	return got
}
