package convert

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// Casting tiny-llama-a's F32 weights to F16 must give the same bytes as llama.cpp's converter (numpy's
// astype(float16)) wrote into tiny-llama-a-f16.gguf, for every tensor the converter does not permute.
func TestCastF16MatchesLlamaCppConverter(t *testing.T) {
	hfPath := testshared.Path(t, "models", "tiny-llama-a", "hf", "model.safetensors")
	ref, err := gguf.Open(testshared.Path(t, "models", "tiny-llama-a", "gguf", "tiny-llama-a-f16.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	src, err := safetensors.Open(hfPath)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var buf bytes.Buffer
	if err := Cast(&buf, src, tensor.F16, CastOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err := safetensors.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	rename := strings.NewReplacer("model.embed_tokens", "token_embd", "lm_head", "output",
		"self_attn.v_proj", "attn_v", "self_attn.o_proj", "attn_output",
		"mlp.gate_proj", "ffn_gate", "mlp.up_proj", "ffn_up", "mlp.down_proj", "ffn_down")
	compared := 0
	for _, info := range out.Tensors() {
		if len(info.Shape) != 2 || strings.Contains(info.Name, "q_proj") || strings.Contains(info.Name, "k_proj") {
			continue // 1-D tensors stay F32 in the GGUF; Q and K rows are permuted by the converter
		}
		var layer int
		name := rename.Replace(info.Name)
		if _, err := fmt.Sscanf(name, "model.layers.%d.", &layer); err == nil {
			name = fmt.Sprintf("blk.%d.%s", layer, name[len(fmt.Sprintf("model.layers.%d.", layer)):])
		}
		want, err := ref.Tensor(name)
		if err != nil {
			t.Fatalf("%s → %s: %v", info.Name, name, err)
		}
		got, err := out.Tensor(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		if want.DType != tensor.F16 || !bytes.Equal(got.Data, want.Data) {
			t.Errorf("%s: F16 bytes differ from llama.cpp's %s (%s)", info.Name, name, want.DType)
		}
		compared++
	}
	if compared != 2+6*5 {
		t.Errorf("compared %d tensors, want %d", compared, 2+6*5)
	}
}

// A cast is deterministic and independent of chunking: BF16 → F32 → BF16 gives back the original file.
func TestCastRoundTripIsExact(t *testing.T) {
	vals := make([]float32, 3*castChunk+5)
	for i := range vals {
		vals[i] = float32(i%1000) * 0.37
	}
	data := make([]byte, 2*len(vals))
	tensor.Float32ToBF16(data, vals)
	views := []tensor.View{
		{Name: "big", DType: tensor.BF16, Shape: tensor.Shape{int64(len(vals))}, Data: data},
		{Name: "empty", DType: tensor.BF16, Shape: tensor.Shape{0, 4}, Data: []byte{}},
		{Name: "mask", DType: tensor.BOOL, Shape: tensor.Shape{3}, Data: []byte{1, 0, 1}},
	}
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.safetensors")
	if err := safetensors.WriteFile(orig, views, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	castBytes := func(in []byte, dt tensor.DType) []byte {
		set, err := safetensors.NewReader(bytes.NewReader(in), int64(len(in)))
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := Cast(&out, set, dt, CastOptions{}); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	src, err := os.ReadFile(orig)
	if err != nil {
		t.Fatal(err)
	}
	wide := castBytes(src, tensor.F32)
	if back := castBytes(wide, tensor.BF16); !bytes.Equal(back, src) {
		t.Error("BF16 → F32 → BF16 is not the identity")
	}
	if again := castBytes(src, tensor.F32); !bytes.Equal(again, wide) {
		t.Error("cast is not deterministic")
	}
}
