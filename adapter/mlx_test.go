package adapter

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// TestMLXDiscollama converts ollama's mlx-lm test adapter (Llama 3 8B: 32 heads, 8 KV heads) to an F16 GGUF adapter
// and checks it against the keys and per-tensor sha256 ollama's converter produced (convert_test.go
// TestConvertAdapter). The attn_v factors match bit for bit. ollama's q factors differ on purpose: ollama permutes
// the input axis of lora_a and leaves lora_b alone, while the rotary permutation belongs to the output rows (lora_b),
// as llama.cpp's convert_lora_to_gguf.py does it; the test rebuilds ollama's layout from the same decoded factors
// and checks it hashes to ollama's values, which pins down that this is the only difference.
func TestMLXDiscollama(t *testing.T) {
	dir := testshared.Path(t, "data", "safetensors", "ollama-testdata")
	a, err := OpenMLX(filepath.Join(dir, "discollama-adapter_config.json"), filepath.Join(dir, "discollama-adapters.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if len(a.Modules) != 4 || a.Modules[0].Scale != 2 || a.Modules[0].Rank != 8 || a.Config.LoraAlpha != 16 {
		t.Fatalf("modules %d, scale %g, rank %d, alpha %g", len(a.Modules), a.Modules[0].Scale, a.Modules[0].Rank, a.Config.LoraAlpha)
	}
	var want map[string]string
	data, err := os.ReadFile(filepath.Join(dir, "discollama-expected-gguf-kv-and-tensor-sha256.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatal(err)
	}
	base := GGUFBase{Arch: "llama", Blocks: 32, Heads: 32, HeadsKV: 8}
	var buf bytes.Buffer
	if err := a.WriteGGUF(&buf, base, GGUFOptions{Type: tensor.F16}); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"general.architecture", "general.type", "adapter.type", "adapter.lora.alpha"} {
		v, ok := f.Metadata.Get(key)
		if got := strings.Trim(v.String(), `"`); !ok || got != want[key] {
			t.Errorf("key %s = %s, ollama %s", key, v, want[key])
		}
	}
	hash := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	f16 := func(v tensor.View) []byte {
		out, err := encodeFactor(v, tensor.F16, 1, false)
		if err != nil {
			t.Fatal(err)
		}
		return out.Data
	}
	tensors := 0
	for _, ti := range f.Tensors() {
		tensors++
		v, _ := f.Tensor(ti.Name)
		if ti.DType != tensor.F16 {
			t.Errorf("%s: %s, want F16", ti.Name, ti.DType)
		}
		if !strings.Contains(ti.Name, "attn_q") {
			if hash(v.Data) != want[ti.Name] {
				t.Errorf("%s: sha256 differs from ollama's", ti.Name)
			}
			continue
		}
		if hash(v.Data) == want[ti.Name] {
			t.Errorf("%s: equals ollama's, which has the rotary permutation on the wrong factor", ti.Name)
		}
		// ollama's layout: lora_a's columns (the input axis) permuted, lora_b as read.
		m := a.Modules[moduleIndex(t, a, strings.TrimSuffix(strings.TrimSuffix(ti.Name, ".lora_a"), ".lora_b"))]
		ollama := m.B
		if strings.HasSuffix(ti.Name, ".lora_a") {
			at, err := encodeFactor(m.A, m.A.DType, 1, true) // [in, r]: rows are the input axis
			if err != nil {
				t.Fatal(err)
			}
			if at, err = permuteRows(at, base.Heads, false); err != nil {
				t.Fatal(err)
			}
			if ollama, err = encodeFactor(at, at.DType, 1, true); err != nil {
				t.Fatal(err)
			}
		}
		if hash(f16(ollama)) != want[ti.Name] {
			t.Errorf("%s: ollama's layout rebuilt from lathe's factors does not hash to ollama's value", ti.Name)
		}
	}
	if tensors != 8 {
		t.Errorf("%d tensors, want 8", tensors)
	}
}

// moduleIndex finds the module whose GGUF name is target.
func moduleIndex(t *testing.T, a *Adapter, target string) int {
	t.Helper()
	for i, m := range a.Modules {
		if name, err := convert.GGUFName(m.Target, 32); err == nil && name == target {
			return i
		}
	}
	t.Fatalf("no module for %s", target)
	return -1
}

// TestMLXMergeMatchesPEFT: an mlx-lm adapter holding the PEFT adapter's factors transposed (lora_a = Aᵀ,
// lora_b = Bᵀ, scale α/r) merges into the same model as the PEFT adapter.
func TestMLXMergeMatchesPEFT(t *testing.T) {
	root := testshared.Path(t, "models", "tiny-llama-a")
	p, err := OpenPEFT(filepath.Join(root, "lora-shakespeare-a"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var views []tensor.View
	for _, m := range p.Modules {
		for _, part := range []struct {
			v      tensor.View
			suffix string
		}{{m.A, ".lora_a"}, {m.B, ".lora_b"}} {
			tv, err := encodeFactor(part.v, part.v.DType, 1, true)
			if err != nil {
				t.Fatal(err)
			}
			tv.Name = m.Name + part.suffix
			views = append(views, tv)
		}
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, ConfigName)
	if err := os.WriteFile(cfg, []byte(`{"lora_parameters": {"rank": 8, "scale": 2.0}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := safetensors.WriteFile(filepath.Join(dir, MLXWeightsName), views, nil); err != nil {
		t.Fatal(err)
	}
	m, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Format != MLX {
		t.Fatalf("Open(%s): format %s, want mlx", dir, m.Format)
	}
	base := openSafetensors(t, filepath.Join(root, "hf", "model.safetensors"))
	var fromPEFT, fromMLX bytes.Buffer
	if err := MergeSafetensors(&fromPEFT, base, p, MergeOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := MergeSafetensors(&fromMLX, base, m, MergeOptions{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fromPEFT.Bytes(), fromMLX.Bytes()) {
		t.Error("merging the MLX form of the adapter differs from merging the PEFT form")
	}
}

func openSafetensors(t *testing.T, path string) *safetensors.File {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
