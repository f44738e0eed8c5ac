package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/tensor"
)

// TestMergeCommand merges the shared LoRA into the shared safetensors base: the result is PEFT's merged
// model.safetensors, byte for byte; and into the GGUF base.
func TestMergeCommand(t *testing.T) {
	root := testshared.Path(t, "models", "tiny-llama-a")
	dir := t.TempDir()
	out := filepath.Join(dir, "merged.safetensors")
	if msg, code := run(t, "merge", filepath.Join(root, "hf", "model.safetensors"),
		filepath.Join(root, "lora-shakespeare-a"), "-o", out); code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(root, "merged-lora-shakespeare-a", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("lathe merge output differs from PEFT's merged model.safetensors")
	}
	gg := filepath.Join(dir, "merged.gguf")
	if msg, code := run(t, "merge", filepath.Join(root, "gguf", "tiny-llama-a-q8_0.gguf"),
		filepath.Join(root, "lora-shakespeare-a", "adapter-f32.gguf"), "-o", gg, "--scale", "0.5"); code != 0 {
		t.Fatalf("GGUF: exit %d: %s", code, msg)
	}
	bad := filepath.Join(dir, "x.safetensors")
	if msg, code := run(t, "merge", filepath.Join(root, "hf", "model.safetensors"),
		filepath.Join(root, "lora-shakespeare-a", "adapter-f32.gguf"), "-o", bad); code == 0 {
		t.Errorf("GGUF adapter on a safetensors base: exit 0: %s", msg)
	}
	if _, err := os.Stat(bad); err == nil {
		t.Error("a failed merge left its output behind")
	}
}

// TestAdaptersCombineCommand: the shared adapter combined with itself at weights ½ and ½ merges into the same model
// as the adapter alone, within float32 rounding.
func TestAdaptersCombineCommand(t *testing.T) {
	root := testshared.Path(t, "models", "tiny-llama-a")
	lora := filepath.Join(root, "lora-shakespeare-a")
	runApp := func(args ...string) {
		t.Helper()
		if out, code := run(t, args...); code != 0 {
			t.Fatalf("lathe %v: exit %d: %s", args, code, out)
		}
	}
	dir := t.TempDir()
	combined := filepath.Join(dir, "combined")
	runApp("adapters", "combine", lora, lora, "--weights", "0.5,0.5", "-o", combined)
	merged := filepath.Join(dir, "m.safetensors")
	runApp("merge", filepath.Join(root, "hf", "model.safetensors"), combined, "-o", merged)
	worst := maxDiffModels(t, merged, filepath.Join(root, "merged-lora-shakespeare-a", "model.safetensors"))
	t.Logf("merge of the combined adapter vs PEFT's merged model: max abs diff %.3g", worst)
	if worst > 1e-6 {
		t.Errorf("max abs diff %g > 1e-6", worst)
	}
}

// maxDiffModels is the largest difference between same-named tensors of two models, decoded to float32.
func maxDiffModels(t *testing.T, a, b string) float64 {
	t.Helper()
	ma, err := modelfile.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer ma.Close()
	mb, err := modelfile.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	worst := 0.0
	for _, ti := range mb.Tensors {
		va, err := ma.View(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		vb, _ := mb.View(ti.Name)
		fa, err := va.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		fb, err := vb.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		for i := range fb {
			worst = max(worst, math.Abs(float64(fa[i]-fb[i])))
		}
	}
	return worst
}

// TestMergeSeveralAdapters: the shared LoRA given twice with --scales 0.5,0.5 merges into PEFT's merged model; with
// --outtype bf16 the merged tensors become BF16 and the others keep their F32 bytes; bad --scales and --outtype are
// usage errors.
func TestMergeSeveralAdapters(t *testing.T) {
	root := testshared.Path(t, "models", "tiny-llama-a")
	base := filepath.Join(root, "hf", "model.safetensors")
	lora := filepath.Join(root, "lora-shakespeare-a")
	want := filepath.Join(root, "merged-lora-shakespeare-a", "model.safetensors")
	dir := t.TempDir()
	out := filepath.Join(dir, "m.safetensors")
	if msg, code := run(t, "merge", base, lora, lora, "--scales", "0.5,0.5", "-o", out); code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	if d := maxDiffModels(t, out, want); d > 1e-6 {
		t.Errorf("½+½ merge vs PEFT merge: max abs diff %g", d)
	}
	bf := filepath.Join(dir, "bf.safetensors")
	if msg, code := run(t, "merge", base, lora, "--outtype", "bf16", "-o", bf); code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	m, err := modelfile.Open(bf)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	types := map[string]int{}
	for _, ti := range m.Tensors {
		types[ti.DType.String()]++
	}
	if types["BF16"] != 42 || types["F32"] != len(m.Tensors)-42 {
		t.Errorf("--outtype bf16: types %v, want 42 BF16 and the rest F32", types)
	}
	if d := maxDiffModels(t, bf, want); d > 0.01 {
		t.Errorf("BF16 merge vs PEFT merge: max abs diff %g", d)
	}
	for _, args := range [][]string{
		{"merge", base, lora, lora, "--scales", "1", "-o", filepath.Join(dir, "x")},
		{"merge", base, lora, "--scales", "x", "-o", filepath.Join(dir, "x")},
		{"merge", base, lora, "--outtype", "q9", "-o", filepath.Join(dir, "x")},
		{"merge", base, "-o", filepath.Join(dir, "x")},
	} {
		if msg, code := run(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2: %s", args[2:], code, msg)
		}
	}
}

// TestAdaptersResizeAndExtract: resizing the shared rank-8 LoRA to 8 keeps all its energy and merges into the same
// model; extracting the merged model against the base at rank 8 and merging the result gives the merged model back.
func TestAdaptersResizeAndExtract(t *testing.T) {
	root := testshared.Path(t, "models", "tiny-llama-a")
	base := filepath.Join(root, "hf", "model.safetensors")
	want := filepath.Join(root, "merged-lora-shakespeare-a", "model.safetensors")
	dir := t.TempDir()
	resized := filepath.Join(dir, "resized")
	msg, code := run(t, "adapters", "resize", filepath.Join(root, "lora-shakespeare-a"), "--rank", "8", "-o", resized, "--json")
	if code != 0 {
		t.Fatalf("resize: exit %d: %s", code, msg)
	}
	var rep struct {
		Modules []struct {
			NewRank int `json:"new_rank"`
		} `json:"modules"`
		Retained float64 `json:"retained"`
	}
	if err := json.Unmarshal([]byte(msg), &rep); err != nil {
		t.Fatalf("resize --json: %v: %s", err, msg)
	}
	if len(rep.Modules) != 42 || math.Abs(rep.Retained-1) > 1e-9 {
		t.Errorf("resize report: %d modules, retained %g", len(rep.Modules), rep.Retained)
	}
	extracted := filepath.Join(dir, "extracted")
	if msg, code := run(t, "adapters", "extract", want, "--base", base, "--rank", "8", "-o", extracted); code != 0 ||
		!strings.Contains(msg, "total") {
		t.Fatalf("extract: exit %d: %s", code, msg)
	}
	for _, a := range []string{resized, extracted} {
		out := filepath.Join(dir, filepath.Base(a)+".safetensors")
		if msg, code := run(t, "merge", base, a, "-o", out); code != 0 {
			t.Fatalf("merge %s: exit %d: %s", a, code, msg)
		}
		d := maxDiffModels(t, out, want)
		t.Logf("merge of the %s adapter vs PEFT's merged model: max abs diff %.2g", filepath.Base(a), d)
		if d > 1e-6 {
			t.Errorf("%s: max abs diff %g", a, d)
		}
	}
	if msg, code := run(t, "adapters", "resize", resized, "--rank", "0", "-o", filepath.Join(dir, "z")); code == 0 {
		t.Errorf("rank 0: exit 0: %s", msg)
	}
}

// TestAdaptersConvertPiSSA: §8.7's PiSSA oracle (W = diag(4,1), A₀ = [[2,0]], B₀ = [[2],[0]], W_res = [[0,0],[0,1]]):
// the trained adapter (A = [[2,0.5]], B = [[2],[1]]) converted against its initialization and merged into W gives
// what the trained adapter gives merged into W_res, [[4,1],[2,1.5]].
func TestAdaptersConvertPiSSA(t *testing.T) {
	dir := t.TempDir()
	peft := func(name string, a, b []float32) string {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "adapter_config.json"), []byte(`{"r": 1, "lora_alpha": 1}`), 0o644); err != nil {
			t.Fatal(err)
		}
		writeModel(t, filepath.Join(d, "adapter_model.safetensors"),
			f32View("base_model.model.l.lora_A.weight", tensor.Shape{1, 2}, a...),
			f32View("base_model.model.l.lora_B.weight", tensor.Shape{2, 1}, b...))
		return d
	}
	initial := peft("init", []float32{2, 0}, []float32{2, 0})
	trained := peft("trained", []float32{2, 0.5}, []float32{2, 1})
	base := filepath.Join(dir, "w.safetensors")
	writeModel(t, base, f32View("l.weight", tensor.Shape{2, 2}, 4, 0, 0, 1))
	plain := filepath.Join(dir, "plain")
	if msg, code := run(t, "adapters", "convert-pissa", trained, "--initial", initial, "-o", plain); code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	out := filepath.Join(dir, "m.safetensors")
	if msg, code := run(t, "merge", base, plain, "-o", out); code != 0 {
		t.Fatalf("merge: exit %d: %s", code, msg)
	}
	want := filepath.Join(dir, "want.safetensors")
	writeModel(t, want, f32View("l.weight", tensor.Shape{2, 2}, 4, 1, 2, 1.5))
	if d := maxDiffModels(t, out, want); d != 0 {
		t.Errorf("converted adapter merged into W: max abs diff %g from [[4,1],[2,1.5]]", d)
	}
	if msg, code := run(t, "adapters", "convert-pissa", trained, "-o", filepath.Join(dir, "x")); code != 2 {
		t.Errorf("without --initial: exit %d: %s", code, msg)
	}
}
