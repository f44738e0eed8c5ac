package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/prune"
	"github.com/lathe-ml/lathe/sparsity"
)

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, code := run(t, args...)
	if code != 0 {
		t.Fatalf("lathe %s: exit %d: %s", strings.Join(args, " "), code, out)
	}
	return out
}

// TestMaskCommand computes LIFT masks for the first block of tiny-llama-a, then reports and combines mask files.
func TestMaskCommand(t *testing.T) {
	hf := testshared.Path(t, "models", "tiny-llama-a", "hf")
	dir := t.TempDir()
	a, b, both := filepath.Join(dir, "a.safetensors"), filepath.Join(dir, "b.safetensors"), filepath.Join(dir, "and.safetensors")
	out := mustRun(t, "mask", hf, "-o", a, "--method", "principal", "--rank", "16", "--budget", "lora:8",
		"--include", `layers\.0\.`, "--exclude", "norm", "--json")
	var r sparsity.MaskReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Tensors) != 7 || r.Metadata["rank"] != "16" || r.Metadata["keep"] != "lora:8" {
		t.Fatalf("%d tensors, metadata %v", len(r.Tensors), r.Metadata)
	}
	for _, ts := range r.Tensors {
		if want := prune.LoRABudget(int(ts.Shape[0]), int(ts.Shape[1]), 8); ts.Kept != want {
			t.Errorf("%s: kept %d, want %d", ts.Name, ts.Kept, want)
		}
	}
	var again sparsity.MaskReport
	if err := json.Unmarshal([]byte(mustRun(t, "mask", "report", a, "--json")), &again); err != nil {
		t.Fatal(err)
	}
	if again.Total.Kept != r.Total.Kept || again.Total.Elements != r.Total.Elements {
		t.Errorf("report of the file %+v, at creation %+v", again.Total, r.Total)
	}
	mustRun(t, "mask", hf, "-o", b, "--method", "principal", "--rank", "16", "--budget", "lora:8", "--select",
		"smallest", "--include", `layers\.0\.`, "--exclude", "norm")
	out = mustRun(t, "mask", "combine", "--op", "and", a, b, "-o", both, "--json")
	var c sparsity.MaskReport
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatal(err)
	}
	// The largest and the smallest entries of the same approximation never overlap at a 1-6 % budget.
	if c.Total.Kept != 0 || c.Metadata["input1.select"] != "smallest" {
		t.Errorf("largest ∧ smallest kept %d, metadata %v", c.Total.Kept, c.Metadata)
	}
	if out := mustRun(t, "mask", "report", a); !strings.Contains(out, "model.layers.0.mlp.down_proj.weight") ||
		!strings.Contains(out, "total") {
		t.Errorf("text report:\n%s", out)
	}
	if _, code := run(t, "mask", hf, "-o", a, "--keep", "0.5", "--drop", "0.5"); code != 2 {
		t.Errorf("--keep with --drop: exit %d", code)
	}
	if out, code := run(t, "mask", "combine", a, b, "-o", a); code != 2 || !strings.Contains(out, "refusing") {
		t.Errorf("combine over one of its inputs: exit %d %s", code, out)
	}
}

// legacyImatrix writes a llama-imatrix legacy file with one entry of mean squared inputs.
func legacyImatrix(t *testing.T, path, name string, values []float32) {
	t.Helper()
	le := binary.LittleEndian
	b := le.AppendUint32(nil, 1)
	b = le.AppendUint32(b, uint32(len(name)))
	b = append(b, name...)
	b = le.AppendUint32(b, 1) // ncall
	b = le.AppendUint32(b, uint32(len(values)))
	for _, v := range values {
		b = le.AppendUint32(b, math.Float32bits(v))
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPruneCommand prunes GGUF and safetensors models: magnitude at 50 % with the mask written beside, the same mask
// applied again with --mask (same bytes), Wanda 2:4 from an imatrix, and the sparse-bitmask export.
func TestPruneCommand(t *testing.T) {
	gg := testshared.Path(t, "models", "tiny-llama-a", "gguf", "tiny-llama-a-f16.gguf")
	hf := testshared.Path(t, "models", "tiny-llama-a", "hf")
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	out := mustRun(t, "prune", gg, "-o", p("a.gguf"), "--method", "magnitude", "--keep", "0.5", "--mask-out",
		p("m.safetensors"), "--json")
	var r sparsity.PruneReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Tensors) != 42 || math.Abs(r.Total.Sparsity-0.5) > 1e-6 || r.Total.RelError <= 0 || r.Total.RelError >= 0.5 {
		t.Errorf("%d tensors, total %+v", len(r.Tensors), r.Total)
	}
	mustRun(t, "prune", gg, "-o", p("b.gguf"), "--mask", p("m.safetensors"))
	a, _ := os.ReadFile(p("a.gguf"))
	b, _ := os.ReadFile(p("b.gguf"))
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Error("pruning with the saved mask differs from the pruning that saved it")
	}
	if _, code := run(t, "prune", gg, "-o", p("c.gguf"), "--mask", p("m.safetensors"), "--keep", "0.3"); code != 2 {
		t.Errorf("--mask with --keep: exit %d", code)
	}
	if _, code := run(t, "prune", gg, "-o", p("c.gguf")); code != 2 {
		t.Errorf("no method: exit %d", code)
	}

	const down = "model.layers.0.mlp.down_proj.weight"
	norms := make([]float32, 768)
	for j := range norms {
		norms[j] = float32(j%7) + 0.5
	}
	legacyImatrix(t, p("imatrix.dat"), "blk.0.ffn_down.weight", norms)
	out = mustRun(t, "prune", hf, "-o", p("w.safetensors"), "--method", "wanda", "--imatrix", p("imatrix.dat"),
		"--structure", "2:4", "--include", `layers\.0\.mlp\.down`)
	if !strings.Contains(out, down) || !strings.Contains(out, "50.00%") {
		t.Errorf("wanda report:\n%s", out)
	}
	m, err := modelfile.Open(p("w.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	v, _ := m.View(down)
	x, _ := v.Float32s()
	for i := 0; i < len(x); i += 4 {
		zeros := 0
		for _, y := range x[i : i+4] {
			if y == 0 {
				zeros++
			}
		}
		if zeros < 2 {
			t.Fatalf("group at %d of %s keeps %d entries: %v", i, down, 4-zeros, x[i:i+4])
		}
	}

	out = mustRun(t, "prune", hf, "-o", p("s.safetensors"), "--method", "magnitude", "--keep", "0.25", "--format",
		"sparse-bitmask", "--json")
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.SparsityConfig["format"] != "sparse-bitmask" {
		t.Errorf("sparsity config %v", r.SparsityConfig)
	}
	s, err := modelfile.Open(p("s.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.Lookup(down + ".compressed"); !ok {
		t.Error("no compressed values in the sparse-bitmask output")
	}
	if _, code := run(t, "prune", gg, "-o", p("x.gguf"), "--method", "magnitude", "--keep", "0.5", "--format",
		"sparse-bitmask"); code != 2 {
		t.Errorf("sparse-bitmask from GGUF: exit %d", code)
	}
}
