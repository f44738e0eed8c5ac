package train

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/tensor"
	"github.com/lathe-ml/lathe/tokenizer"
)

func tinyLlama(t testing.TB, typ string) *Model {
	return openModel(t, filepath.Join(testshared.Path(t, "models", "tiny-llama-a"), "gguf", "tiny-llama-a-"+typ+".gguf"))
}

// TestCacheConsistency checks that the KV cache changes nothing: logits of a sequence evaluated at once, in pieces
// through the cache, and batched beside another sequence agree. Without rounding (F32 weights and cache) they agree
// to float32 precision. Rounding to F16 or 8 bits turns the differences of summation order between those paths
// (one token goes through dot products, many through the GEMM) into a rounding step now and then, so those runs
// are held to a small mean difference and a bound on the largest; a cache bug moves logits by whole units.
func TestCacheConsistency(t *testing.T) {
	for _, c := range []struct {
		typ              string
		cache            tensor.DType
		maxDiff, meanDif float64
	}{
		{"f32", tensor.F32, 1e-4, 1e-5},
		{"f32", tensor.F16, 5e-3, 5e-4},
		{"q4_k_m", tensor.F16, 0.3, 0.03},
	} {
		m := tinyLlama(t, c.typ)
		if err := m.SetCacheType(c.cache); err != nil {
			t.Fatal(err)
		}
		V := m.Config.Vocab
		tokens := m.Tokenizer.Encode("The little dog ran to the park, and then it sat under a big tree.", tokenizer.AddSpecial)
		n := len(tokens)
		whole := make([]float32, n*V)
		if err := m.Forward(Sequence{Cache: m.NewKVCache(n), Tokens: tokens, Logits: whole}); err != nil {
			t.Fatal(err)
		}
		pieces := make([]float32, n*V)
		kv := m.NewKVCache(n)
		if err := m.Forward(Sequence{Cache: kv, Tokens: tokens[:5], Logits: pieces}); err != nil {
			t.Fatal(err)
		}
		for i := 5; i < n; i++ {
			if err := m.Forward(Sequence{Cache: kv, Tokens: tokens[i : i+1], Logits: pieces[i*V:]}); err != nil {
				t.Fatal(err)
			}
		}
		if kv.Len() != n {
			t.Errorf("cache holds %d positions, want %d", kv.Len(), n)
		}
		batched := make([]float32, n*V)
		other := m.Tokenizer.Encode("Once upon a time", tokenizer.AddSpecial)
		err := m.Forward(Sequence{Cache: m.NewKVCache(len(other)), Tokens: other, Out: len(other)},
			Sequence{Cache: m.NewKVCache(n), Tokens: tokens, Out: 3, Logits: batched[3*V:]})
		if err != nil {
			t.Fatal(err)
		}
		for _, cmp := range []struct {
			name string
			got  []float32
		}{{"through the cache", pieces}, {"batched", batched}} {
			var worst, sum float64
			for i := 3 * V; i < n*V; i++ {
				d := math.Abs(float64(whole[i] - cmp.got[i]))
				worst, sum = max(worst, d), sum+d
			}
			mean := sum / float64((n-3)*V)
			if worst > c.maxDiff || mean > c.meanDif {
				t.Errorf("%s, %s cache, %s: logits differ by up to %.3g (mean %.3g) from one pass", c.typ, c.cache,
					cmp.name, worst, mean)
			}
		}
	}
}

// TestForwardErrors checks that misuse is reported, not a panic.
func TestForwardErrors(t *testing.T) {
	m := tinyLlama(t, "f32")
	c := m.NewKVCache(4)
	for _, s := range []Sequence{
		{Cache: c, Tokens: []int32{1, 2, 3, 4, 5}},
		{Cache: c, Tokens: []int32{1, -2}},
		{Cache: c, Tokens: []int32{1, int32(m.Config.Vocab)}},
		{Cache: c, Tokens: []int32{1, 2}, Out: 3},
		{Cache: c, Tokens: []int32{1, 2}, Logits: make([]float32, 10)},
		{Tokens: []int32{1}},
	} {
		if err := m.Forward(s); err == nil {
			t.Errorf("Forward(%d tokens, out %d) succeeded", len(s.Tokens), s.Out)
		}
	}
	if err := m.Forward(Sequence{Cache: c, Tokens: []int32{1}}, Sequence{Cache: c, Tokens: []int32{1}}); err == nil {
		t.Error("two sequences sharing a cache were accepted")
	}
	if c.Len() != 0 {
		t.Errorf("failed calls changed the cache: %d positions", c.Len())
	}
	if _, err := m.Generate(make([]int32, 600), GenerateOptions{Ctx: 512}, nil); err == nil {
		t.Error("a prompt longer than the context was accepted")
	}
}

// TestOpenErrors checks files that are not llama models.
func TestOpenErrors(t *testing.T) {
	vocab := testshared.Path(t, "data", "gguf", "llama.cpp-vocab")
	for _, c := range []struct{ path, want string }{
		{filepath.Join(vocab, "ggml-vocab-gpt-2.gguf"), `architecture "gpt2"`},
		{filepath.Join(vocab, "ggml-vocab-llama-spm.gguf"), "token_embd.weight"},
		{filepath.Join(vocab, "missing.gguf"), "no such file"},
	} {
		if _, err := Open(c.path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%s) = %v, want an error about %s", filepath.Base(c.path), err, c.want)
		}
	}
	// An adapter made for another model (SmolLM, 576 wide, 30 layers) does not fit.
	a, err := adapter.Open(testshared.Path(t, "data", "safetensors", "smollm135m-medical-lora"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	m := tinyLlama(t, "f32")
	if err := m.ApplyAdapter(a, 1); err == nil {
		t.Error("a SmolLM adapter was applied to tiny-llama-a")
	}
}

// TestActivationRounding compares the Q8_0 rounding of activations with the reference quantizer (quant, bit-exact
// with ggml) and checks the Q8_K rounding's defining properties.
func TestActivationRounding(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, 1024)
	for i := range x {
		x[i] = float32(r.NormFloat64()) * float32(1+i%7)
	}
	got := make([]float32, len(x))
	roundActivations(got, x, tensor.Q8_0, len(x), nil)
	enc := make([]byte, len(x)/32*34)
	if err := quant.Encode(tensor.Q8_0, enc, x, len(x), nil); err != nil {
		t.Fatal(err)
	}
	want := make([]float32, len(x))
	if err := quant.Decode(tensor.Q8_0, want, enc); err != nil {
		t.Fatal(err)
	}
	for i := range x {
		if got[i] != want[i] {
			t.Fatalf("Q8_0 value %d: %g, ggml's quantize_row_q8_0 gives %g", i, got[i], want[i])
		}
	}
	roundActivations(got, x, tensor.Q8_K, len(x), nil)
	for b := 0; b < len(x); b += 256 {
		var amax float32
		for _, v := range x[b : b+256] {
			amax = max(amax, abs32(v))
		}
		for i := b; i < b+256; i++ {
			if e := abs32(got[i] - x[i]); e > amax/127/2*1.0001 {
				t.Fatalf("Q8_K value %d: %g for %g, more than half a step (%g) away", i, got[i], x[i], amax/127/2)
			}
		}
	}
}

// TestSampler checks greedy choice, the filters and the reproducibility of draws.
func TestSampler(t *testing.T) {
	logits := []float32{float32(math.Log(0.2)), float32(math.Log(0.5)), float32(math.Log(0.3)), float32(math.Log(0.5))}
	if got := NewSampler(SampleOptions{}).Sample(logits); got != 1 {
		t.Errorf("greedy picked %d, want the first maximum 1", got)
	}
	if got := NewSampler(SampleOptions{Temp: 5, TopK: 1}).Sample(logits); got != 1 {
		t.Errorf("top-k 1 picked %d, want 1", got)
	}
	draw := func(o SampleOptions, n int) []int {
		counts := make([]int, len(logits))
		s := NewSampler(o)
		for range n {
			counts[s.Sample(logits)]++
		}
		return counts
	}
	// Probabilities 0.2/1.5 … : each frequency within 1.5 % of its probability.
	counts := draw(SampleOptions{Temp: 1, Seed: 7}, 20000)
	for i, p := range []float64{0.2 / 1.5, 0.5 / 1.5, 0.3 / 1.5, 0.5 / 1.5} {
		if f := float64(counts[i]) / 20000; math.Abs(f-p) > 0.015 {
			t.Errorf("token %d drawn with frequency %.3f, probability %.3f", i, f, p)
		}
	}
	if a, b := draw(SampleOptions{Temp: 0.8, TopP: 0.9, Seed: 3}, 500), draw(SampleOptions{Temp: 0.8, TopP: 0.9, Seed: 3}, 500); !equalInts(a, b) {
		t.Errorf("same seed, different draws: %v and %v", a, b)
	}
	// top-p 0.6 keeps the two most likely (0.5/1.5 + 0.5/1.5 ≥ 0.6); min-p 0.7 keeps those with p ≥ 0.7·max.
	for _, o := range []SampleOptions{{Temp: 1, TopP: 0.6}, {Temp: 1, MinP: 0.7}} {
		c := draw(o, 2000)
		if c[0] != 0 || c[2] != 0 || c[1] == 0 || c[3] == 0 {
			t.Errorf("%+v: drew %v, want only tokens 1 and 3", o, c)
		}
	}
}

func equalInts(a, b []int) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}

// TestWeightsStayQuantized checks that a model keeps its weights in the stored type: the bytes the runtime uses
// are those of the file (a Q4_K_M model needs about a fifth of its F32 original), and F32 data is used in place.
func TestWeightsStayQuantized(t *testing.T) {
	dir := testshared.Path(t, "models", "tiny-llama-a", "gguf")
	sizes := map[string]int64{}
	for _, typ := range []string{"f32", "q4_k_m"} {
		m := tinyLlama(t, typ)
		st, err := os.Stat(filepath.Join(dir, "tiny-llama-a-"+typ+".gguf"))
		if err != nil {
			t.Fatal(err)
		}
		n := m.Bytes()
		// Everything but the F32 norms and the header is a projection or the embedding.
		if n > st.Size() || n < st.Size()*95/100 {
			t.Errorf("%s: %d bytes of weights for a %d-byte file", typ, n, st.Size())
		}
		sizes[typ] = n
		if typ == "f32" && m.layers[0].q.f32 == nil {
			t.Errorf("f32: weights are decoded instead of used in place")
		}
	}
	if r := float64(sizes["q4_k_m"]) / float64(sizes["f32"]); r > 0.2 {
		t.Errorf("q4_k_m needs %.2f of the f32 weight memory", r)
	}
}
