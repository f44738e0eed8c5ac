package adapter

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// FuzzPEFT feeds arbitrary adapter_config.json and safetensors bytes to the PEFT reader: it must return an adapter
// or an error, never panic, and every module it returns must have factors that decode to the shape it claims.
func FuzzPEFT(f *testing.F) {
	var st bytes.Buffer
	dir := f.TempDir()
	path := filepath.Join(dir, "w.safetensors")
	if err := safetensors.WriteFile(path, []tensor.View{
		f32("base_model.model.l.q.lora_A.weight", tensor.Shape{1, 2}, 3, 4),
		f32("base_model.model.l.q.lora_B.weight", tensor.Shape{2, 1}, 1, 2),
		f32("base_model.model.l.q.lora_magnitude_vector", tensor.Shape{2}, 1, 1),
	}, nil); err != nil {
		f.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	st.Write(data)
	f.Add([]byte(`{"r": 1, "lora_alpha": 2, "use_dora": true, "target_modules": ["q"], "rank_pattern": {"q": 1}}`), st.Bytes())
	f.Add([]byte(`{"r": 4, "use_rslora": true, "target_modules": ".*q", "alpha_pattern": {"l\\.q": 3}}`), st.Bytes())
	f.Add([]byte(`{"fan_in_fan_out": true}`), st.Bytes())
	f.Fuzz(func(t *testing.T, config, weights []byte) {
		cfg, err := ParseConfig("fuzz.json", config)
		if err != nil {
			return
		}
		set, err := safetensors.NewReader(bytes.NewReader(weights), int64(len(weights)))
		if err != nil {
			return
		}
		a, err := newPEFT("fuzz", "fuzz.safetensors", cfg, set)
		if err != nil {
			return
		}
		for i := range a.Modules {
			checkModule(t, &a.Modules[i])
		}
	})
}

// FuzzGGUF does the same for GGUF adapters.
func FuzzGGUF(f *testing.F) {
	var md gguf.Metadata
	md.Set("general.type", gguf.ValueOf("adapter"))
	md.Set("adapter.type", gguf.ValueOf("lora"))
	md.Set("adapter.lora.alpha", gguf.ValueOf(float32(2)))
	path := filepath.Join(f.TempDir(), "a.gguf")
	if err := gguf.WriteFile(path, &md, []tensor.View{
		f32("token_embd.weight.lora_a", tensor.Shape{3, 1}, 1, 2, 3),
		f32("token_embd.weight.lora_b", tensor.Shape{2, 1}, 1, 2),
		f32("blk.0.attn_q.weight.lora_a", tensor.Shape{1, 2}, 3, 4),
		f32("blk.0.attn_q.weight.lora_b", tensor.Shape{2, 1}, 1, 2),
	}); err != nil {
		f.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	f.Add(data)
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := gguf.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		a, err := newGGUF("fuzz.gguf", file)
		if err != nil {
			return
		}
		for i := range a.Modules {
			checkModule(t, &a.Modules[i])
		}
	})
}

func checkModule(t *testing.T, m *Module) {
	left, right, err := m.Factors()
	if err != nil {
		return // e.g. a dtype the decoder refuses: an error, not a panic
	}
	rows, cols := m.Shape()
	if left.Rows != rows || right.Cols != cols || left.Cols != m.Rank || right.Rows != m.Rank {
		t.Fatalf("module %s: factors %d×%d·%d×%d for a %d×%d update of rank %d", m.Name, left.Rows, left.Cols,
			right.Rows, right.Cols, rows, cols, m.Rank)
	}
}

// FuzzMLX does the same for mlx-lm adapters.
func FuzzMLX(f *testing.F) {
	path := filepath.Join(f.TempDir(), "adapters.safetensors")
	if err := safetensors.WriteFile(path, []tensor.View{
		f32("model.layers.0.self_attn.q_proj.lora_a", tensor.Shape{2, 1}, 3, 4),
		f32("model.layers.0.self_attn.q_proj.lora_b", tensor.Shape{1, 2}, 1, 2),
	}, nil); err != nil {
		f.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	f.Add([]byte(`{"lora_parameters": {"rank": 1, "alpha": 2, "scale": 2.0}}`), data)
	f.Add([]byte(`{"lora_parameters": {"scale": 20}}`), data)
	f.Fuzz(func(t *testing.T, config, weights []byte) {
		set, err := safetensors.NewReader(bytes.NewReader(weights), int64(len(weights)))
		if err != nil {
			return
		}
		a, err := newMLX("fuzz.json", "fuzz.safetensors", config, set)
		if err != nil {
			return
		}
		for i := range a.Modules {
			checkModule(t, &a.Modules[i])
		}
	})
}
