package tokenizer

import (
	"bufio"

	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
)

// vector is one test of llama.cpp's tests/test-tokenizer-0: a text and the ids llama.cpp gives it with
// add_special = false and parse_special = false.
type vector struct {
	text string
	ids  []int32
}

// readVectors parses a .inp/.out pair the way test-tokenizer-0 does: inputs are separated by
// "\n__ggml_vocab_test__\n" (a trailing separator ends the list), outputs are one line of ids per input.
func readVectors(t *testing.T, gguf string) []vector {
	t.Helper()
	inp, err := os.ReadFile(gguf + ".inp")
	if err != nil {
		t.Fatal(err)
	}
	outf, err := os.Open(gguf + ".out")
	if err != nil {
		t.Fatal(err)
	}
	defer outf.Close()
	var outs []string
	sc := bufio.NewScanner(outf)
	for sc.Scan() {
		outs = append(outs, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	const sep = "\n__ggml_vocab_test__\n"
	var texts []string
	for rest := string(inp); rest != ""; {
		i := strings.Index(rest, sep)
		if i < 0 {
			texts = append(texts, rest)
			break
		}
		texts = append(texts, rest[:i])
		rest = rest[i+len(sep):]
	}
	if len(texts) != len(outs) || len(texts) == 0 {
		t.Fatalf("%s: %d inputs but %d outputs", gguf, len(texts), len(outs))
	}
	vs := make([]vector, len(texts))
	for i, s := range texts {
		vs[i].text = s
		for _, f := range strings.Fields(outs[i]) {
			id, err := strconv.ParseInt(f, 10, 32)
			if err != nil {
				t.Fatalf("%s.out line %d: %v", gguf, i+1, err)
			}
			vs[i].ids = append(vs[i].ids, int32(id))
		}
	}
	return vs
}

// TestLlamaCppVectors reproduces every test vector of the vocab-only GGUF files llama.cpp tests its tokenizers with.
func TestLlamaCppVectors(t *testing.T) {
	dir := testshared.Path(t, "data", "gguf", "llama.cpp-vocab")
	for _, name := range []string{"llama-spm", "phi-3", "gpt-2", "deepseek-coder"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, "ggml-vocab-"+name+".gguf")
			tok, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			vs := readVectors(t, path)
			for _, v := range vs {
				got := tok.Encode(v.text, 0)
				if !slices.Equal(got, v.ids) {
					t.Errorf("%q:\n got %v\nwant %v", v.text, got, v.ids)
				}
			}
			t.Logf("%d vectors", len(vs))
		})
	}
}

// TestBERTUnsupported checks that a WordPiece vocabulary is refused with ErrUnsupported rather than misread.
func TestBERTUnsupported(t *testing.T) {
	path := filepath.Join(testshared.Path(t, "data", "gguf", "llama.cpp-vocab"), "ggml-vocab-bert-bge.gguf")
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), `"bert"`) {
		t.Fatalf("Open(bert vocab) = %v, want an unsupported-model error", err)
	}
}
