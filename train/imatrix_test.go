package train

import (
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/tokenizer"
)

// TestImatrix checks the collected statistics against an independent computation of the one input that is easy
// to form outside the runtime — layer 0's attention input, the RMS-normalised token embeddings — and checks the
// bookkeeping: every matrix of every layer counted once per token, q, k and v (and gate and up) fed the same input,
// the output matrix left out, and a Hugging Face directory giving the same names and values.
func TestImatrix(t *testing.T) {
	m := tinyLlama(t, "f32")
	text := readText(t, filepath.Join(testshared.Path(t, "models", "data"), "val.txt"))
	const ctx, chunks = 64, 3
	s, err := Imatrix(m, text, ImatrixOptions{Ctx: ctx, Chunks: chunks})
	if err != nil {
		t.Fatal(err)
	}
	if s.Chunks != chunks || s.ChunkSize != ctx {
		t.Errorf("chunks %d of %d, want %d of %d", s.Chunks, s.ChunkSize, chunks, ctx)
	}
	if len(s.Sums) != 7*m.Config.Layers {
		t.Errorf("%d tensors, want %d", len(s.Sums), 7*m.Config.Layers)
	}
	for li := range m.Config.Layers {
		for _, w := range []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"} {
			name := fmt.Sprintf("blk.%d.%s.weight", li, w)
			if s.Counts[name] != ctx*chunks {
				t.Errorf("%s: count %d, want %d", name, s.Counts[name], ctx*chunks)
			}
		}
		q, k, v := s.Sums[fmt.Sprintf("blk.%d.attn_q.weight", li)], s.Sums[fmt.Sprintf("blk.%d.attn_k.weight", li)],
			s.Sums[fmt.Sprintf("blk.%d.attn_v.weight", li)]
		for j := range q {
			if q[j] != k[j] || q[j] != v[j] {
				t.Fatalf("layer %d column %d: q, k, v sums %v %v %v differ", li, j, q[j], k[j], v[j])
			}
		}
	}
	if _, ok := s.Sums["output.weight"]; ok {
		t.Error("output.weight collected")
	}

	// Oracle: Σ over the chunks' tokens of (attn_norm · x / rms(x))², in float64.
	d := m.Config.Embd
	tokens := m.Tokenizer.Encode(text, tokenizer.AddSpecial)
	want := make([]float64, d)
	row := make([]float32, d)
	for c := range chunks {
		for i := range ctx {
			tok := tokens[c*ctx+i]
			if i == 0 && m.Tokenizer.AddsBOS() {
				tok = m.Tokenizer.BOS()
			}
			m.embd.row(row, int(tok))
			var ss float64
			for _, x := range row {
				ss += float64(x) * float64(x)
			}
			scale := 1 / math.Sqrt(ss/float64(d)+float64(m.Config.NormEps))
			for j, x := range row {
				y := float64(x) * scale * float64(m.layers[0].attnNorm[j])
				want[j] += y * y
			}
		}
	}
	got := s.Sums["blk.0.attn_q.weight"]
	for j := range want {
		if math.Abs(got[j]-want[j]) > 1e-4*math.Abs(want[j])+1e-9 {
			t.Fatalf("column %d: sum %g, want %g", j, got[j], want[j])
		}
	}

	hf := openModel(t, filepath.Join(testshared.Path(t, "models", "tiny-llama-a"), "hf"))
	sh, err := Imatrix(hf, text, ImatrixOptions{Ctx: ctx, Chunks: chunks})
	if err != nil {
		t.Fatal(err)
	}
	for name, a := range s.Sums {
		b, ok := sh.Sums[name]
		if !ok || len(b) != len(a) {
			t.Fatalf("%s: missing or %d columns from the Hugging Face directory", name, len(b))
		}
		for j := range a {
			if math.Abs(a[j]-b[j]) > 1e-3*math.Abs(a[j])+1e-6 {
				t.Fatalf("%s column %d: GGUF %g, Hugging Face %g", name, j, a[j], b[j])
			}
		}
	}
}

// TestCollectActivationsOff: after collection stops, Forward adds nothing.
func TestCollectActivationsOff(t *testing.T) {
	m := tinyLlama(t, "f32")
	s := NewActivationStats()
	m.CollectActivations(s)
	tokens := m.Tokenizer.Encode("Once upon a time", tokenizer.AddSpecial)
	if err := m.Forward(Sequence{Cache: m.NewKVCache(len(tokens)), Tokens: tokens}); err != nil {
		t.Fatal(err)
	}
	n := s.Counts["blk.0.ffn_down.weight"]
	if n != int64(len(tokens)) {
		t.Fatalf("count %d, want %d", n, len(tokens))
	}
	m.CollectActivations(nil)
	if err := m.Forward(Sequence{Cache: m.NewKVCache(len(tokens)), Tokens: tokens}); err != nil {
		t.Fatal(err)
	}
	if s.Counts["blk.0.ffn_down.weight"] != n {
		t.Error("Forward collected after CollectActivations(nil)")
	}
}
