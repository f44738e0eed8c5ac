package convert

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

func openGGUF(t testing.TB, path string) *gguf.File {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// toHFDir converts f into a new directory named like the reference model's folder, so that the name heuristics
// give the reference name without an override.
func toHFDir(t testing.TB, f *gguf.File, opts HFOptions) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tiny-llama-a")
	if err := ToHF(dir, f, opts); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestHFToGGUFToHF: the safetensors file written back from lathe's f32 GGUF is the original, byte for byte, and
// config.json holds the original hyper-parameters.
func TestHFToGGUFToHF(t *testing.T) {
	m := openTinyHF(t)
	b := toGGUFBytes(t, m, GGUFOptions{Type: tensor.F32})
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := toHFDir(t, openGGUF(t, path), HFOptions{})
	got, err := os.ReadFile(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(m.Dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("model.safetensors differs from the original (%s)", firstDiff(got, want))
	}

	gotCfg, err := readJSONObject(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
		"num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings",
		"rms_norm_eps", "rope_theta", "rope_scaling", "tie_word_embeddings", "bos_token_id", "eos_token_id",
		"hidden_act", "attention_bias", "mlp_bias", "torch_dtype"} {
		g, _ := json.Marshal(gotCfg[k])
		w, _ := json.Marshal(m.Config[k])
		if !bytes.Equal(g, w) {
			t.Errorf("config.json %q = %s, want %s", k, g, w)
		}
	}
}

// TestGGUFToHFToGGUF: converting llama.cpp's GGUFs to HF and back gives the same files, byte for byte (so the
// tokenizer, the hyper-parameters and the tensors all survive the trip), also through sharded safetensors.
func TestGGUFToHFToGGUF(t *testing.T) {
	for _, tc := range []struct {
		file  string
		typ   tensor.DType
		shard int64
	}{
		{"tiny-llama-a-f32.gguf", tensor.F32, 0},
		{"tiny-llama-a-f16.gguf", tensor.F16, 0},
		{"tiny-llama-a-f32.gguf", tensor.F32, 3 << 20},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join(tinyLlama(t), "gguf", tc.file)
			dir := toHFDir(t, openGGUF(t, path), HFOptions{MaxShardSize: tc.shard})
			if tc.shard > 0 {
				shards, _ := filepath.Glob(filepath.Join(dir, "model-*-of-*.safetensors"))
				if len(shards) < 2 {
					t.Fatalf("%d shards for a %d-byte limit", len(shards), tc.shard)
				}
				if _, err := os.Stat(filepath.Join(dir, safetensors.IndexName)); err != nil {
					t.Fatal(err)
				}
			}
			m, err := OpenHF(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			got := toGGUFBytes(t, m, GGUFOptions{Type: tc.typ})
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("round trip differs from %s", tc.file)
				diffGGUF(t, readGGUF(t, got), readGGUF(t, want))
			}
		})
	}
}

// TestTokenizerModelRebuilt: the tokenizer.model written from the GGUF vocabulary has the original's pieces,
// scores and types, and its model type, byte fallback and special ids.
func TestTokenizerModelRebuilt(t *testing.T) {
	dir := toHFDir(t, openGGUF(t, filepath.Join(tinyLlama(t), "gguf", "tiny-llama-a-f32.gguf")), HFOptions{})
	got, err := OpenSentencePiece(filepath.Join(dir, "tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := OpenSentencePiece(filepath.Join(tinyLlama(t), "hf", "tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Pieces) != len(want.Pieces) {
		t.Fatalf("%d pieces, want %d", len(got.Pieces), len(want.Pieces))
	}
	for i := range got.Pieces {
		g, w := got.Pieces[i], want.Pieces[i]
		if g.Text != w.Text || math.Float32bits(g.Score) != math.Float32bits(w.Score) || g.Type != w.Type {
			t.Errorf("piece %d = %+v, want %+v", i, g, w)
		}
	}
	if got.ModelType != want.ModelType || got.ByteFallback != want.ByteFallback || got.UnkID != want.UnkID ||
		got.BOSID != want.BOSID || got.EOSID != want.EOSID || got.PadID != want.PadID ||
		got.AddDummyPrefix != want.AddDummyPrefix || got.EscapeWhitespaces != want.EscapeWhitespaces {
		t.Errorf("trainer/normalizer spec: got %v bf=%v ids %d/%d/%d/%d, want %v bf=%v ids %d/%d/%d/%d",
			got.ModelType, got.ByteFallback, got.UnkID, got.BOSID, got.EOSID, got.PadID,
			want.ModelType, want.ByteFallback, want.UnkID, want.BOSID, want.EOSID, want.PadID)
	}
}

// TestQuantizedGGUFToHF: block types are decoded with quant.Decode and the rotary permutation undone. The result is
// checked against an independent decode of the GGUF tensor, permuted back by index arithmetic, and against the
// original F32 weights within the quantization error. Re-quantizing the decoded Q8_0 weights to Q8_0 gives
// llama-quantize's bytes back.
func TestQuantizedGGUFToHF(t *testing.T) {
	orig, err := safetensors.Open(filepath.Join(tinyLlama(t), "hf", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	for _, tc := range []struct {
		file   string
		maxRel float64 // relative RMS error against the F32 original
	}{
		{"tiny-llama-a-q8_0.gguf", 0.01},
		{"tiny-llama-a-q4_k_m.gguf", 0.12},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join(tinyLlama(t), "gguf", tc.file)
			f := openGGUF(t, path)
			dir := toHFDir(t, f, HFOptions{})
			out, err := safetensors.Open(filepath.Join(dir, "model.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			const heads, headsKV = 8, 4
			for _, ti := range f.Tensors() {
				name, err := ggufToHF(ti.Name)
				if err != nil {
					t.Fatal(err)
				}
				got := tensorFloats(t, out, name)
				src, err := f.Tensor(ti.Name)
				if err != nil {
					t.Fatal(err)
				}
				dec := make([]float32, len(got))
				if ti.DType.IsQuantized() {
					err = quant.Decode(ti.DType, dec, src.Data)
				} else {
					err = tensor.ToFloat32(dec, src.Data, ti.DType)
				}
				if err != nil {
					t.Fatal(err)
				}
				nHead := 0
				switch {
				case strings.HasSuffix(ti.Name, "attn_q.weight"):
					nHead = heads
				case strings.HasSuffix(ti.Name, "attn_k.weight"):
					nHead = headsKV
				}
				if nHead > 0 {
					// GGUF row h·d + 2i + j holds HF row h·d + j·d/2 + i.
					rows, cols := int(ti.Shape[0]), int(ti.Shape[1])
					d := rows / nHead
					back := make([]float32, len(dec))
					for r := range rows {
						h, k := r/d, r%d
						hf := h*d + (k%2)*(d/2) + k/2
						copy(back[hf*cols:(hf+1)*cols], dec[r*cols:(r+1)*cols])
					}
					dec = back
				}
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(dec[i]) {
						t.Fatalf("%s[%d] = %g, decoded GGUF has %g", name, i, got[i], dec[i])
					}
				}
				want := tensorFloats(t, orig, name)
				var num, den float64
				for i := range want {
					e := float64(got[i] - want[i])
					num += e * e
					den += float64(want[i]) * float64(want[i])
				}
				if rel := math.Sqrt(num / den); rel > tc.maxRel {
					t.Errorf("%s: relative RMS error %.4f against the F32 original, want <= %.2f", name, rel, tc.maxRel)
				}
			}
			if tc.file != "tiny-llama-a-q8_0.gguf" {
				return
			}
			m, err := OpenHF(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			requant := readGGUF(t, toGGUFBytes(t, m, GGUFOptions{Type: tensor.Q8_0}))
			for _, ti := range requant.Tensors() {
				g, _ := requant.Tensor(ti.Name)
				w, err := f.Tensor(ti.Name)
				if err != nil {
					t.Fatal(err)
				}
				if g.DType != w.DType || !bytes.Equal(g.Data, w.Data) {
					t.Errorf("%s: re-quantized %s differs from llama-quantize's %s", ti.Name, g.DType, w.DType)
				}
			}
		})
	}
}

func tensorFloats(t testing.TB, s safetensors.Set, name string) []float32 {
	t.Helper()
	v, err := s.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	f, err := v.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return f
}
