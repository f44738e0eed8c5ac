package adapter

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/tensor"
)

// TestWriteGGUFMatchesLlamaCpp converts the shared PEFT adapter and compares it with convert_lora_to_gguf.py's
// output stored beside it: byte-identical, and when not, which keys or tensors differ.
func TestWriteGGUFMatchesLlamaCpp(t *testing.T) {
	root := testshared.Path(t, "models", "tiny-llama-a")
	want, err := gguf.Open(filepath.Join(root, "lora-shakespeare-a", "adapter-f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	base, err := OpenGGUFBase(filepath.Join(root, "gguf", "tiny-llama-a-f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	hfBase, err := OpenGGUFBase(filepath.Join(root, "hf"))
	if err != nil {
		t.Fatal(err)
	}
	if hfBase != base {
		t.Errorf("base from the HF directory %+v, from its GGUF %+v", hfBase, base)
	}
	a, err := OpenPEFT(filepath.Join(root, "lora-shakespeare-a"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var buf bytes.Buffer
	if err := a.WriteGGUF(&buf, base, GGUFOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := gguf.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	gk, wk := got.Metadata.KVs(), want.Metadata.KVs()
	if len(gk) != len(wk) {
		t.Errorf("%d keys, llama.cpp wrote %d", len(gk), len(wk))
	}
	for i := range min(len(gk), len(wk)) {
		if gk[i].Key != wk[i].Key || gk[i].Value.Type() != wk[i].Value.Type() || gk[i].Value.String() != wk[i].Value.String() {
			t.Errorf("key %d: %s = %s, llama.cpp %s = %s", i, gk[i].Key, gk[i].Value, wk[i].Key, wk[i].Value)
		}
	}
	gt, wt := got.Tensors(), want.Tensors()
	if len(gt) != len(wt) {
		t.Fatalf("%d tensors, llama.cpp wrote %d", len(gt), len(wt))
	}
	for i := range gt {
		if gt[i].Name != wt[i].Name || gt[i].DType != wt[i].DType || !gt[i].Shape.Equal(wt[i].Shape) {
			t.Errorf("tensor %d: %s %s %v, llama.cpp %s %s %v", i, gt[i].Name, gt[i].DType, gt[i].Shape, wt[i].Name, wt[i].DType, wt[i].Shape)
			continue
		}
		g, _ := got.Tensor(gt[i].Name)
		w, _ := want.Tensor(wt[i].Name)
		if !bytes.Equal(g.Data, w.Data) {
			t.Errorf("tensor %s: data differs from llama.cpp's (max abs diff %g)", gt[i].Name, maxAbsDiff(t, g, w))
		}
	}
	if !bytes.Equal(buf.Bytes(), mustRead(t, filepath.Join(root, "lora-shakespeare-a", "adapter-f32.gguf"))) {
		t.Error("output is not byte-identical to convert_lora_to_gguf.py's")
	}
}

// TestWriteGGUFBakesScale: for adapters whose scale is not alpha/rank (rsLoRA, alpha_pattern, rank_pattern with a
// different stored rank), the GGUF adapter read back with llama.cpp's rule (alpha/rank from the one stored alpha)
// gives the same ΔW as PEFT; the embedding LoRA becomes token_embd with a transposed lora_a.
func TestWriteGGUFBakesScale(t *testing.T) {
	views := []tensor.View{
		f32("base_model.model.model.embed_tokens.lora_embedding_A", tensor.Shape{2, 3}, 1, 2, 3, 4, 5, 6),
		f32("base_model.model.model.embed_tokens.lora_embedding_B", tensor.Shape{2, 2}, 1, -1, 0.5, 2),
		f32("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", tensor.Shape{2, 2}, 1, 2, 3, 4),
		f32("base_model.model.model.layers.0.mlp.up_proj.lora_B.weight", tensor.Shape{3, 2}, 1, 0, 0, 1, 1, 1),
		f32("base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", tensor.Shape{2, 2}, 0.5, 1, -2, 1),
		f32("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight", tensor.Shape{2, 2}, 3, 1, 1, 3),
	}
	base := GGUFBase{Arch: "llama", Blocks: 1, Heads: 2, HeadsKV: 1}
	for _, cfg := range []string{
		`{"r": 2, "lora_alpha": 16}`,
		`{"r": 2, "lora_alpha": 3, "use_rslora": true}`,
		`{"r": 2, "lora_alpha": 16, "alpha_pattern": {"up_proj": 5}}`,
		`{"r": 2, "lora_alpha": 4, "rank_pattern": {"v_proj": 8}}`,
	} {
		p, err := OpenPEFT(writePEFT(t, cfg, views...))
		if err != nil {
			t.Fatal(err)
		}
		for _, typ := range []tensor.DType{tensor.F32, tensor.F16} {
			var buf bytes.Buffer
			if err := p.WriteGGUF(&buf, base, GGUFOptions{Type: typ}); err != nil {
				t.Fatal(err)
			}
			f, err := gguf.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
			if err != nil {
				t.Fatal(err)
			}
			g, err := newGGUF("mem", f)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"model.embed_tokens.weight": "token_embd.weight",
				"model.layers.0.mlp.up_proj.weight": "blk.0.ffn_up.weight", "model.layers.0.self_attn.v_proj.weight": "blk.0.attn_v.weight"}
			tol := 1e-6
			if typ == tensor.F16 {
				tol = 1e-2
			}
			for i := range p.Modules {
				pm := &p.Modules[i]
				var gm *Module
				for j := range g.Modules {
					if g.Modules[j].Target == want[pm.Target] {
						gm = &g.Modules[j]
					}
				}
				if gm == nil {
					t.Fatalf("%s: no GGUF module for %s", cfg, pm.Target)
				}
				if gm.A.DType != typ {
					t.Errorf("%s: %s stored as %s, want %s", cfg, gm.A.Name, gm.A.DType, typ)
				}
				pd, gd := delta(t, pm), delta(t, gm)
				if pd.Rows != gd.Rows || pd.Cols != gd.Cols {
					t.Fatalf("%s %s: ΔW %d×%d vs GGUF %d×%d", cfg, pm.Name, pd.Rows, pd.Cols, gd.Rows, gd.Cols)
				}
				for k := range pd.Data {
					if math.Abs(pd.Data[k]-gd.Data[k]) > tol*max(1, math.Abs(pd.Data[k])) {
						t.Errorf("%s %s %s: ΔW %v, GGUF adapter gives %v", cfg, typ, pm.Name, pd.Data, gd.Data)
						break
					}
				}
			}
		}
		p.Close()
	}
}

func TestWriteGGUFRefuses(t *testing.T) {
	base := GGUFBase{Arch: "llama", Blocks: 1, Heads: 1, HeadsKV: 1}
	dora := writePEFT(t, `{"r": 1, "lora_alpha": 1, "use_dora": true}`,
		f32("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", tensor.Shape{1, 2}, 1, 0),
		f32("base_model.model.model.layers.0.mlp.up_proj.lora_B.weight", tensor.Shape{2, 1}, 0, 1),
		f32("base_model.model.model.layers.0.mlp.up_proj.lora_magnitude_vector", tensor.Shape{2}, 3, 4))
	extra := writePEFT(t, `{"r": 1, "lora_alpha": 1}`,
		f32("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", tensor.Shape{1, 2}, 1, 0),
		f32("base_model.model.model.layers.0.mlp.up_proj.lora_B.weight", tensor.Shape{2, 1}, 0, 1),
		f32("base_model.model.lm_head.weight", tensor.Shape{2, 2}, 1, 2, 3, 4))
	plain := writePEFT(t, `{"r": 1, "lora_alpha": 1}`,
		f32("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", tensor.Shape{1, 2}, 1, 0),
		f32("base_model.model.model.layers.0.mlp.up_proj.lora_B.weight", tensor.Shape{2, 1}, 0, 1))
	unknown := writePEFT(t, `{"r": 1, "lora_alpha": 1}`,
		f32("base_model.model.model.layers.0.mlp.fc.lora_A.weight", tensor.Shape{1, 2}, 1, 0),
		f32("base_model.model.model.layers.0.mlp.fc.lora_B.weight", tensor.Shape{2, 1}, 0, 1))
	for _, c := range []struct {
		name, dir string
		base      GGUFBase
	}{{"DoRA", dora, base}, {"modules_to_save", extra, base}, {"unknown module", unknown, base},
		{"architecture", plain, GGUFBase{Arch: "gpt2", Blocks: 1, Heads: 1, HeadsKV: 1}}} {
		a, err := OpenPEFT(c.dir)
		if err != nil {
			t.Fatal(err)
		}
		err = a.WriteGGUF(&bytes.Buffer{}, c.base, GGUFOptions{})
		a.Close()
		if err == nil {
			t.Errorf("%s: no error", c.name)
		} else {
			t.Logf("%s: %v", c.name, err)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
