package adapter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/modelfile"
)

// mergeShared merges with a configuration whose models are paths (opened with modelfile.Open) and returns the
// output opened from memory.
func mergeShared(t testing.TB, yaml string) (*ModelMerge, *modelfile.Model) {
	t.Helper()
	cfg, err := ParseMergekitConfig("shared.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	m, err := OpenModelMerge(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	var buf bytes.Buffer
	if err := m.Write(&buf, ModelMergeOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err := modelfile.FromBytes("merged", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return m, out
}

func decoded(t *testing.T, mf *modelfile.Model, name string) []float32 {
	t.Helper()
	v, err := mf.View(name)
	if err != nil {
		t.Fatal(err)
	}
	f, err := floats(v)
	if err != nil {
		t.Fatalf("tensor %q: %v", name, err)
	}
	return f
}

// TestMergekitTinyLlama merges tiny-llama-a with its LoRA-merged fine-tune (../shared/models): linear 0.5/0.5 is the
// elementwise float32 mean exactly, slerp at t = 0 and task_arithmetic with weight 0 give the base byte for byte,
// task_arithmetic with weight 1 gives the fine-tune.
func TestMergekitTinyLlama(t *testing.T) {
	dir := tinyLlamaDir(t)
	base, ft := filepath.Join(dir, "hf"), filepath.Join(dir, "merged-lora-shakespeare-a")
	a, err := modelfile.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := modelfile.Open(ft)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	_, lin := mergeShared(t, fmt.Sprintf("merge_method: linear\nmodels: [{model: %s, parameters: {weight: 0.5}}, {model: %s, parameters: {weight: 0.5}}]", base, ft))
	changed := 0
	for _, ti := range a.Tensors {
		x, y, got := decoded(t, a, ti.Name), decoded(t, b, ti.Name), decoded(t, lin, ti.Name)
		for i := range x {
			if want := (x[i] + y[i]) / 2; got[i] != want {
				t.Fatalf("%s[%d] = %v, want the mean %v", ti.Name, i, got[i], want)
			}
			if x[i] != y[i] {
				changed++
			}
		}
	}
	if changed == 0 {
		t.Fatal("the fine-tune equals the base; the test would prove nothing")
	}

	for _, yaml := range []string{
		fmt.Sprintf("merge_method: slerp\nbase_model: %s\nmodels: [{model: %s}]\nparameters: {t: 0}", base, ft),
		fmt.Sprintf("merge_method: task_arithmetic\nbase_model: %s\nmodels: [{model: %s, parameters: {weight: 0}}]", base, ft),
	} {
		_, out := mergeShared(t, yaml)
		for _, ti := range a.Tensors {
			x, _ := a.View(ti.Name)
			y, _ := out.View(ti.Name)
			if !bytes.Equal(x.Data, y.Data) || y.DType != x.DType {
				t.Fatalf("%s: tensor %s differs from the base", yaml, ti.Name)
			}
		}
	}

	_, ta := mergeShared(t, fmt.Sprintf("merge_method: task_arithmetic\nbase_model: %s\nmodels: [{model: %s, parameters: {weight: 1}}]", base, ft))
	for _, ti := range b.Tensors {
		want, got := decoded(t, b, ti.Name), decoded(t, ta, ti.Name)
		for i := range want {
			if math.Abs(float64(got[i]-want[i])) > 1e-6 {
				t.Fatalf("%s[%d] = %v, want the fine-tune's %v", ti.Name, i, got[i], want[i])
			}
		}
	}
}

// TestMergekitGGUF merges the f32 and q8_0 GGUF files of tiny-llama-a: the output is GGUF with the reference's
// metadata and types (Q8_0 tensors re-encoded), and with the F32 file as reference the F32 tensors hold the mean of
// the decoded inputs.
func TestMergekitGGUF(t *testing.T) {
	dir := filepath.Join(tinyLlamaDir(t), "gguf")
	f32, q8 := filepath.Join(dir, "tiny-llama-a-f32.gguf"), filepath.Join(dir, "tiny-llama-a-q8_0.gguf")
	m, out := mergeShared(t, fmt.Sprintf("merge_method: linear\nmodels: [{model: %s, parameters: {weight: 1}}, {model: %s, parameters: {weight: 1}}]", f32, q8))
	if out.Format != modelfile.GGUF || out.GGUF.Metadata.Len() != m.Reference.GGUF.Metadata.Len() {
		t.Fatalf("output format %s with %d keys, want GGUF with the reference's %d", out.Format, out.GGUF.Metadata.Len(), m.Reference.GGUF.Metadata.Len())
	}
	q, err := modelfile.Open(q8)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for _, ti := range m.Reference.Tensors {
		ot, _ := out.Lookup(ti.Name)
		if ot.DType != ti.DType || !ot.Shape.Equal(ti.Shape) {
			t.Fatalf("%s: %s %v, want %s %v", ti.Name, ot.DType, ot.Shape, ti.DType, ti.Shape)
		}
		x, y, got := decoded(t, m.Reference, ti.Name), decoded(t, q, ti.Name), decoded(t, out, ti.Name)
		for i := range x {
			if want := (x[i] + y[i]) / 2; got[i] != want {
				t.Fatalf("%s[%d] = %v, want %v", ti.Name, i, got[i], want)
			}
		}
	}

	_, out = mergeShared(t, fmt.Sprintf("merge_method: slerp\nbase_model: %s\nmodels: [{model: %s}]\nparameters: {t: 0.5}", q8, f32))
	for _, ti := range q.Tensors {
		if ot, _ := out.Lookup(ti.Name); ot.DType != ti.DType {
			t.Fatalf("%s: %s, want the reference's %s", ti.Name, ot.DType, ti.DType)
		}
	}
}

func tinyLlamaDir(t testing.TB) string { return testshared.Path(t, "models", "tiny-llama-a") }

// BenchmarkMergekit merges tiny-llama-a (21 MB of F32) with its fine-tune; MB/s counts the bytes of one model.
func BenchmarkMergekit(b *testing.B) {
	dir := tinyLlamaDir(b)
	for _, c := range []struct{ method, params string }{
		{"linear", "{weight: 0.5}"}, {"slerp", "{t: 0.3}"}, {"task_arithmetic", "{weight: 1}"},
		{"ties", "{weight: 1, density: 0.5}"}, {"dare_ties", "{weight: 1, density: 0.5}"},
		{"breadcrumbs", "{weight: 1, density: 0.9}"}, {"model_stock", "{}"},
	} {
		b.Run(c.method, func(b *testing.B) {
			models := []string{filepath.Join(dir, "hf"), filepath.Join(dir, "merged-lora-shakespeare-a")}
			if c.method == "model_stock" {
				models = append(models, filepath.Join(dir, "merged-lora-shakespeare-a"))
			}
			yaml := fmt.Sprintf("merge_method: %s\nbase_model: %s\nparameters: %s\nmodels:\n", c.method, models[0], c.params)
			for _, m := range models {
				yaml += "  - model: " + m + "\n"
			}
			cfg, err := ParseMergekitConfig("bench.yaml", []byte(yaml))
			if err != nil {
				b.Fatal(err)
			}
			m, err := OpenModelMerge(cfg, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			var size int64
			for _, ti := range m.Reference.Tensors {
				size += ti.Size
			}
			b.SetBytes(size)
			for b.Loop() {
				if err := m.Write(io.Discard, ModelMergeOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestMergekitSlicesResize stacks layers 0–3 of tiny-llama-a on layers 2–5 of its fine-tune (a passthrough
// "frankenmerge", eight layers): the HF config and the GGUF block_count follow the new depth, and layer 4 of the
// output is layer 2 of the fine-tune.
func TestMergekitSlicesResize(t *testing.T) {
	dir := tinyLlamaDir(t)
	hf, ft := filepath.Join(dir, "hf"), filepath.Join(dir, "merged-lora-shakespeare-a")
	m, out := mergeShared(t, fmt.Sprintf(`
merge_method: passthrough
slices:
  - sources: [{model: %s, layer_range: [0, 4]}]
  - sources: [{model: %s, layer_range: [2, 6]}]
`, hf, ft))
	if m.Layers != 8 || !m.Resized {
		t.Fatalf("layers %d resized %v, want 8 and true", m.Layers, m.Resized)
	}
	b, err := modelfile.Open(ft)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	x, _ := b.View("model.layers.2.mlp.down_proj.weight")
	y, _ := out.View("model.layers.4.mlp.down_proj.weight")
	if !bytes.Equal(x.Data, y.Data) {
		t.Error("output layer 4 is not the fine-tune's layer 2")
	}
	if len(out.Tensors) != len(m.Reference.Tensors)+2*9 {
		t.Errorf("%d tensors, want %d (two more layers of 9 tensors)", len(out.Tensors), len(m.Reference.Tensors)+18)
	}
	cfgDir := t.TempDir()
	if _, err := m.WriteHFFiles(cfgDir); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(cfgDir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Layers int `json:"num_hidden_layers"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil || cfg.Layers != 8 {
		t.Errorf("config.json num_hidden_layers %d (%v), want 8", cfg.Layers, err)
	}

	gg := filepath.Join(dir, "gguf", "tiny-llama-a-f32.gguf")
	_, out = mergeShared(t, fmt.Sprintf(`
merge_method: passthrough
slices:
  - sources: [{model: %s, layer_range: [0, 6]}]
  - sources: [{model: %s, layer_range: [5, 6]}]
`, gg, gg))
	if n, err := out.GGUF.Metadata.Uint32("llama.block_count"); err != nil || n != 7 {
		t.Errorf("llama.block_count %d (%v), want 7", n, err)
	}
	if _, ok := out.Lookup("blk.6.attn_q.weight"); !ok {
		t.Error("no blk.6 in the seven-layer GGUF")
	}
}

// TestMergekitDeterminism merges tiny-llama-a with dare_ties on one and on three workers: the bytes are the same,
// since each tensor's masks come from its own seeded stream.
func TestMergekitDeterminism(t *testing.T) {
	dir := tinyLlamaDir(t)
	cfg, err := ParseMergekitConfig("dare.yaml", fmt.Appendf(nil, `
merge_method: dare_ties
base_model: %s
models:
  - model: %s
    parameters: {weight: [0.3, 1], density: 0.4}
`, filepath.Join(dir, "hf"), filepath.Join(dir, "merged-lora-shakespeare-a")))
	if err != nil {
		t.Fatal(err)
	}
	m, err := OpenModelMerge(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var one, three bytes.Buffer
	if err := m.Write(&one, ModelMergeOptions{Seed: 42, Workers: 1}); err != nil {
		t.Fatal(err)
	}
	if err := m.Write(&three, ModelMergeOptions{Seed: 42, Workers: 3}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(one.Bytes(), three.Bytes()) {
		t.Error("the output depends on the number of workers")
	}
}
