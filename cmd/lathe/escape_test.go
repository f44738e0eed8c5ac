package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/tensor"
)

// GGUF metadata comes from strangers: inspect must print its strings escaped, so that an escape sequence in a
// key, a value or an array element cannot clear or rewrite the user's terminal.
func TestInspectEscapesGGUFStrings(t *testing.T) {
	const clear = "\x1b[2J"
	path := filepath.Join(t.TempDir(), "evil.gguf")
	md := &gguf.Metadata{}
	md.Set("general.architecture", gguf.ValueOf("llama"))
	md.Set("general.name", gguf.ValueOf("evil"+clear+"name"))
	md.Set("general.tags", gguf.ArrayOf([]string{"a", "tag" + clear}))
	md.Set("tokenizer.ggml.model", gguf.ValueOf("llama"+clear))
	md.Set("tokenizer.ggml.pre", gguf.ValueOf("pre"+clear))
	md.Set("evil"+clear+".key", gguf.ValueOf(uint32(1)))
	if err := gguf.WriteFile(path, md, []tensor.View{f32View("w"+clear, tensor.Shape{1}, 1)}); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"inspect", path}, {"inspect", "--full", path}} {
		out, code := run(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s", args, code, out)
		}
		if strings.ContainsRune(out, 0x1b) {
			t.Errorf("%v printed a raw escape character:\n%q", args, out)
		}
		for _, want := range []string{`"evil\x1b[2Jname"`, `"tag\x1b[2J"`, `"evil\x1b[2J.key"`, `"w\x1b[2J"`, `"llama\x1b[2J"`, `"pre\x1b[2J"`} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: output lacks %s:\n%s", args, want, out)
			}
		}
	}
}
