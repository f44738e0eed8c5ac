package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/tensor"
)

func writeGGUFModel(t *testing.T, path string, views ...tensor.View) {
	t.Helper()
	md := &gguf.Metadata{}
	md.Set("general.architecture", gguf.ValueOf("test"))
	if err := gguf.WriteFile(path, md, views); err != nil {
		t.Fatal(err)
	}
}

func TestDiffCommand(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.safetensors")
	same := filepath.Join(dir, "same.gguf")
	changed := filepath.Join(dir, "changed.safetensors")
	writeModel(t, a, f32View("w", tensor.Shape{2, 2}, 1, 2, 3, 4), f32View("b", tensor.Shape{2}, 0.5, -0.5))
	writeGGUFModel(t, same, f32View("b", tensor.Shape{2}, 0.5, -0.5), f32View("w", tensor.Shape{2, 2}, 1, 2, 3, 4))
	writeModel(t, changed, f32View("w", tensor.Shape{2, 2}, 1, 2, 3, 4.25), f32View("b", tensor.Shape{2}, 0.5, -0.5),
		f32View("extra", tensor.Shape{1}, 1))

	out, code := run(t, "diff", a, same)
	if code != 0 || !strings.Contains(out, "2 tensors in both: 2 identical, 0 within tolerance, 0 beyond") {
		t.Errorf("identical models: exit %d\n%s", code, out)
	}
	out, code = run(t, "diff", a, changed)
	if code != 1 || !strings.Contains(out, "only in b: extra") || !strings.Contains(out, "beyond tolerance") ||
		!strings.Contains(out, "lathe: "+a+" and "+changed+" differ") {
		t.Errorf("changed model: exit %d\n%s", code, out)
	}
	// Within tolerance the changed tensor passes, but the extra tensor still makes them differ.
	out, code = run(t, "diff", a, changed, "--tol", "0.25", "--json")
	var r modelfile.DiffReport
	if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "lathe:")]), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	w := r.Tensors[0]
	if w.Name != "w" {
		w = r.Tensors[1]
	}
	if code != 1 || !r.Differs || r.Tol != 0.25 || len(r.OnlyInB) != 1 || !w.Within || w.MaxAbsDiff != 0.25 ||
		r.Tensors[0].Cosine != 1 && r.Tensors[1].Cosine != 1 {
		t.Errorf("exit %d, report %+v", code, r)
	}
	for _, args := range [][]string{
		{"diff", a},                             // one model
		{"diff", a, same, "--map", "mistral"},   // unknown mapping
		{"diff", a, same, "--map", "llama"},     // llama mapping without a llama GGUF
		{"diff", a, filepath.Join(dir, "none")}, // missing file
	} {
		if out, code := run(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2\n%s", args, code, out)
		}
	}
}

// The acceptance check of the issue: a Hugging Face checkpoint and llama.cpp's F32 conversion of it do not differ.
func TestDiffCommandLlamaConversion(t *testing.T) {
	hf := testshared.Path(t, "models", "tiny-llama-a", "hf")
	conv := filepath.Join(filepath.Dir(hf), "gguf", "tiny-llama-a-f32.gguf")
	out, code := run(t, "diff", hf, conv, "--map", "llama")
	if code != 0 || !strings.Contains(out, "57 tensors in both: 57 identical") {
		t.Errorf("exit %d\n%s", code, out)
	}
	q8 := filepath.Join(filepath.Dir(hf), "gguf", "tiny-llama-a-q8_0.gguf")
	if out, code := run(t, "diff", hf, q8, "--map", "llama", "--rel-tol", "0.01"); code != 0 {
		t.Errorf("q8_0 within 1%%: exit %d\n%s", code, out)
	}
	if out, code := run(t, "diff", hf, q8, "--map", "llama"); code != 1 || !strings.Contains(out, "F32 → Q8_0") {
		t.Errorf("q8_0 exactly: exit %d\n%s", code, out)
	}
	if out, code := run(t, "diff", hf, conv); code != 1 || !strings.Contains(out, "0 tensors in both") {
		t.Errorf("without the mapping: exit %d\n%s", code, out)
	}
}
