package train

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// embedded64 returns a copy of w whose embedding table is E + scale·(B·A)ᵀ, in float64: the oracle of an embedding
// LoRA, written from PEFT's definition of the merged table rather than as a lookup.
func embedded64(w *model64, a, b []float64, rank, vocab, d int, scale float64) *model64 {
	c := *w
	c.embd = slices.Clone(w.embd)
	for t := range vocab {
		for j := range d {
			var s float64
			for k := range rank {
				s += b[j*rank+k] * a[k*vocab+t]
			}
			c.embd[t*d+j] += scale * s
		}
	}
	return &c
}

// embedWindows are the windows and loss masks of the embedding gradient checks: two windows of 8 tokens of held-out
// text, one with a prompt of two tokens, and tokens repeated across them.
func embedWindows(t *testing.T, m *Model) ([][]int32, [][]bool) {
	windows := windowsOf(t, shakespeare(t, m, "shakespeare_val.txt"), 2, 8)
	return windows, [][]bool{
		{false, false, true, true, true, true, true, true},
		{true, true, true, true, true, false, true, true},
	}
}

// TestEmbedLoRAGradient64 checks the gradients of the embedding LoRA's A and B, with all seven projections adapted
// too, against central differences of the float64 oracle whose table is E + s·(B·A)ᵀ: along a direction mixing the
// gradient's own and a random one, and entry by entry for a sample of entries. A's gradient must be zero, exactly,
// in the columns of tokens the windows do not hold, and the projections' gradients must still be right.
func TestEmbedLoRAGradient64(t *testing.T) {
	m := tinyLlamaHF(t)
	c := m.Config
	const B, T, rank = 2, 8, 4
	l, err := NewLoRAConfig(m, LoRAConfig{Rank: rank, Alpha: 8, Targets: []string{"all-linear", "embed_tokens"}}, B, T, 1)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(31, 32))
	randomB(l, rng)
	e := l.embed
	for i := range e.a { // A starts at zero, which would leave B's gradient zero
		e.a[i] = float32(rng.NormFloat64() * 0.01)
	}
	windows, scored := embedWindows(t, m)
	loss32, err := l.Step(windows, scored)
	if err != nil {
		t.Fatal(err)
	}
	w64 := newModel64(t, m)
	f := l.factors64()
	scale := float64(e.scale)
	loss := func(a, b []float64) float64 {
		return embedded64(w64, a, b, rank, c.Vocab, c.Embd, scale).loss64(l, f, windows, scored)
	}
	a64, b64 := widen(e.a), widen(e.b)
	loss64 := loss(a64, b64)
	t.Logf("loss: float32 pass %.7f, float64 oracle %.7f", loss32, loss64)
	if math.Abs(loss32-loss64) > 1e-5*loss64 {
		t.Errorf("the training pass's loss %.7f differs from the oracle's %.7f", loss32, loss64)
	}
	checkGradients64(t, l, embedded64(w64, a64, b64, rank, c.Vocab, c.Embd, scale), f, l.grads64(), windows, scored,
		rng)

	seen := map[int32]bool{}
	for _, w := range windows {
		for _, tok := range w[:T] {
			seen[tok] = true
		}
	}
	for k := range rank {
		for v := range c.Vocab {
			if g := e.da[k*c.Vocab+v]; (g != 0) != seen[int32(v)] {
				t.Fatalf("dA[%d, token %d] = %g; want nonzero exactly for the %d tokens the windows hold", k, v, g,
					len(seen))
			}
		}
	}

	for _, p := range []struct {
		name    string
		x, grad []float32
		at      func(x []float64) float64
	}{
		{"A", e.a, e.da, func(x []float64) float64 { return loss(x, b64) }},
		{"B", e.b, e.db, func(x []float64) float64 { return loss(a64, x) }},
	} {
		g64 := widen(p.grad)
		dir := widen(randVec(rng, len(g64), 1))
		var gn, rn float64
		for i := range g64 {
			gn, rn = gn+g64[i]*g64[i], rn+dir[i]*dir[i]
		}
		var analytic float64
		for i := range dir {
			dir[i] = g64[i]/math.Sqrt(gn) + dir[i]/math.Sqrt(rn)
			analytic += g64[i] * dir[i]
		}
		const eps = 1e-4
		shifted := func(s float64) float64 {
			x := widen(p.x)
			for i := range x {
				x[i] += s * dir[i]
			}
			return p.at(x)
		}
		fd := (shifted(eps) - shifted(-eps)) / (2 * eps)
		rel := math.Abs(fd-analytic) / math.Abs(analytic)
		t.Logf("embedding %s: directional derivative %.8g, float64 finite difference %.8g, relative error %.2e",
			p.name, analytic, fd, rel)
		if rel > 1e-4 {
			t.Errorf("embedding %s: relative error %.2e exceeds 1e-4", p.name, rel)
		}

		// Entry by entry, the largest gradient entries (A's in the columns of seen tokens).
		order := make([]int, len(g64))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(i, j int) int { return -cmpAbs(g64[i], g64[j]) })
		x := widen(p.x)
		for _, i := range order[:6] {
			orig := x[i]
			x[i] = orig + eps
			lp := p.at(x)
			x[i] = orig - eps
			lm := p.at(x)
			x[i] = orig
			fd := (lp - lm) / (2 * eps)
			if rel := math.Abs(fd-g64[i]) / math.Abs(g64[i]); rel > 1e-3 {
				t.Errorf("embedding d%s[%d] = %.8g, finite difference %.8g (relative error %.2e)", p.name, i, g64[i], fd,
					rel)
			}
		}
	}
}

func cmpAbs(a, b float64) int {
	switch a, b = math.Abs(a), math.Abs(b); {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestEmbedLoRAInit: the embedding factors start as PEFT's lora.Embedding's (A zero, B standard normal), so that the
// loss is the base model's; the projections' initial factors are those of a run that does not train the embedding.
func TestEmbedLoRAInit(t *testing.T) {
	m := tinyLlamaHF(t)
	withEmbed, err := NewLoRAConfig(m, LoRAConfig{Rank: 8, Alpha: 16, Targets: []string{"q_proj", "embed_tokens"}},
		2, 16, 9)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := NewLoRAConfig(m, LoRAConfig{Rank: 8, Alpha: 16, Targets: []string{"q_proj"}}, 2, 16, 9)
	if err != nil {
		t.Fatal(err)
	}
	pe, _ := withEmbed.Params()
	pp, _ := plain.Params()
	if len(pe) != len(pp)+2 {
		t.Fatalf("%d parameter tensors with the embedding, %d without: want two more", len(pe), len(pp))
	}
	for i := range pp {
		if !slices.Equal(pe[i], pp[i]) {
			t.Fatalf("parameter tensor %d differs when the embedding is trained too", i)
		}
	}
	a, b := pe[len(pp)], pe[len(pp)+1]
	if len(a) != 8*m.Config.Vocab || len(b) != m.Config.Embd*8 || slices.ContainsFunc(a, func(v float32) bool { return v != 0 }) {
		t.Fatalf("A (%d values) must be zero and hold 8×%d, B %d values", len(a), m.Config.Vocab, len(b))
	}
	var mean, sq float64
	for _, v := range b {
		mean += float64(v) / float64(len(b))
		sq += float64(v) * float64(v) / float64(len(b))
	}
	std := math.Sqrt(sq - mean*mean)
	t.Logf("B: %d values, mean %.4f, standard deviation %.4f", len(b), mean, std)
	if math.Abs(mean) > 0.1 || math.Abs(std-1) > 0.1 { // 2048 draws: the sampling error is about 0.02
		t.Errorf("B has mean %.4f and standard deviation %.4f, want a standard normal sample", mean, std)
	}
	windows := windowsOf(t, shakespeare(t, m, "shakespeare_val.txt"), 2, 16)
	l0, err := withEmbed.Loss(windows)
	if err != nil {
		t.Fatal(err)
	}
	base, err := MeanLossTokens(m, windows, 17)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(l0-base.Loss) > 1e-3 {
		t.Errorf("initial loss %.6f, base model %.6f: the update must start at zero", l0, base.Loss)
	}
}

// TestTrainEmbedLoRA trains embed_tokens and q_proj of tiny-llama-a on Shakespeare through checkMethod (validation
// loss drops, the written PEFT adapter applied by ApplyAdapter reproduces the trainer's loss, a resumed run is
// bit-identical) and checks what is written: target_modules and the lora_embedding_A/B tensors; the model merged by
// adapter.MergeSafetensors gives the loss of the adapter applied unmerged; the GGUF adapter (adapter.WriteGGUF, as
// --gguf-out writes it) reads back with the same ΔE and, applied to the GGUF model, gives the same loss.
func TestTrainEmbedLoRA(t *testing.T) {
	if testing.Short() {
		t.Skip("trains for a few dozen steps")
	}
	const ctx = 64
	opts := TrainOptions{Method: MethodLoRA, Rank: 8, Alpha: 16, Steps: 24, LR: 2e-3, Batch: 4, Ctx: ctx, Seed: 42,
		Targets: []string{"embed_tokens", "q_proj"}}
	run := checkMethod(t, opts, false)
	m := tinyLlamaHF(t)
	c := m.Config
	if want := 8*c.Vocab + c.Embd*8 + c.Layers*8*(c.Embd+c.Heads*c.HeadDim); run.trainable != want {
		t.Errorf("%d trainable values, want %d", run.trainable, want)
	}

	cfg, err := os.ReadFile(filepath.Join(run.written, adapter.ConfigName))
	if err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		Targets []string `json:"target_modules"`
	}
	if err := json.Unmarshal(cfg, &parsed); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(parsed.Targets, []string{"q_proj", "embed_tokens"}) {
		t.Errorf("target_modules %v, want [q_proj embed_tokens]", parsed.Targets)
	}
	peft, err := adapter.Open(run.written)
	if err != nil {
		t.Fatal(err)
	}
	defer peft.Close()
	emb := module(t, peft, "model.embed_tokens")
	if emb.Layout != adapter.Transposed || emb.A.Name != "base_model.model.model.embed_tokens.lora_embedding_A" ||
		!emb.A.Shape.Equal(tensor.Shape{8, int64(c.Vocab)}) || !emb.B.Shape.Equal(tensor.Shape{int64(c.Embd), 8}) ||
		emb.Scale != 2 {
		t.Fatalf("embedding module %s: layout %d, A %s %v, B %v, scale %g; want lora_embedding_A [8 %d] and B [%d 8], "+
			"scale 2", emb.Name, emb.Layout, emb.A.Name, emb.A.Shape, emb.B.Shape, emb.Scale, c.Vocab, c.Embd)
	}
	want := deltaE(t, emb)
	var norm float64
	for _, v := range want {
		norm = max(norm, math.Abs(v))
	}
	t.Logf("trained ΔE: largest entry %.4g", norm)
	val := windowsOf(t, shakespeare(t, m, "shakespeare_val.txt"), 8, ctx)
	// The embedding's share of the gain: the trained run without its ΔE (A zeroed) must do worse.
	trainedA := slices.Clone(run.l.embed.a)
	clear(run.l.embed.a)
	withoutE, err := run.l.Loss(val)
	copy(run.l.embed.a, trainedA)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("validation loss without the trained ΔE: %.4f, with it %.4f", withoutE, run.after)
	if !(run.after < withoutE-0.005) {
		t.Errorf("the trained embedding update lowers the validation loss only from %.4f to %.4f", withoutE, run.after)
	}

	applied := adapterLoss(t, run.written, val)
	dir := t.TempDir()
	merged := openModel(t, mergeModelFile(t, m.Path, dir, nil, func(w io.Writer, base safetensors.Set) error {
		return adapter.MergeSafetensors(w, base, peft, adapter.MergeOptions{Scale: 1})
	}))
	if err := merged.SetCacheType(tensor.F32); err != nil {
		t.Fatal(err)
	}
	mergedLoss, err := MeanLossTokens(merged, val, ctx+1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("validation loss: adapter applied %.6f, merged model %.6f, trainer %.6f", applied, mergedLoss.Loss, run.after)
	if math.Abs(applied-mergedLoss.Loss) > 1e-5*applied {
		t.Errorf("the adapter applied unmerged gives %.6f, the merged model %.6f", applied, mergedLoss.Loss)
	}

	// --gguf-out: the adapter package's writer, read back.
	base, err := adapter.OpenGGUFBase(m.Path)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := peft.WriteGGUF(&buf, base, adapter.GGUFOptions{Type: tensor.F32}); err != nil {
		t.Fatal(err)
	}
	ggufPath := filepath.Join(dir, "adapter.gguf")
	if err := atomicfile.WriteFile(ggufPath, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	gg, err := adapter.Open(ggufPath)
	if err != nil {
		t.Fatal(err)
	}
	defer gg.Close()
	tok := module(t, gg, "token_embd.weight")
	if tok.Layout != adapter.GGUFEmbedding || !tok.A.Shape.Equal(tensor.Shape{int64(c.Vocab), 8}) {
		t.Fatalf("GGUF module %s: layout %d, lora_a %v; want the embedding layout, [%d 8]", tok.Name, tok.Layout,
			tok.A.Shape, c.Vocab)
	}
	got := deltaE(t, tok)
	var diff float64
	for i := range want {
		diff = max(diff, math.Abs(got[i]-want[i]))
	}
	t.Logf("ΔE of the GGUF adapter vs the PEFT one: largest difference %.3g", diff)
	if diff > 1e-6*norm {
		t.Errorf("the GGUF adapter's ΔE differs from the PEFT adapter's by up to %.3g (largest entry %.3g)", diff, norm)
	}
	ggLoss := appliedLoss(t, tinyLlama(t, "f32"), gg, val)
	t.Logf("validation loss with the GGUF adapter on the GGUF model: %.6f", ggLoss)
	if math.Abs(ggLoss-applied) > 1e-4*applied {
		t.Errorf("the GGUF adapter on the GGUF model gives %.6f, the PEFT one on the HF model %.6f", ggLoss, applied)
	}
}

// module finds an adapter's module by name.
func module(t *testing.T, a *adapter.Adapter, name string) *adapter.Module {
	t.Helper()
	for i := range a.Modules {
		if a.Modules[i].Name == name {
			return &a.Modules[i]
		}
	}
	t.Fatalf("%s has no module %s", a.Path, name)
	return nil
}

// deltaE is a module's update scale·left·right in the orientation of the base tensor (vocab×dim for the embedding),
// through adapter.Module.Factors, which knows the layouts.
func deltaE(t *testing.T, mod *adapter.Module) []float64 {
	t.Helper()
	left, right, err := mod.Factors()
	if err != nil {
		t.Fatal(err)
	}
	d, err := left.Mul(right)
	if err != nil {
		t.Fatal(err)
	}
	for i := range d.Data {
		d.Data[i] *= mod.Scale
	}
	return d.Data
}

// TestEmbedLoRATied: on a model with tied embeddings (tiny-llama-a's F32 GGUF rewritten without output.weight, so
// that the head multiplies by token_embd), the embedding LoRA adapts the lookup only, in the trainer and in the
// runtime alike: the trainer's loss with its factors equals the loss of its PEFT adapter applied by ApplyAdapter,
// and differs from that of the model merged with the adapter, whose head has changed too.
func TestEmbedLoRATied(t *testing.T) {
	path := tiedModel(t)
	m := openModel(t, path)
	if m.output != &m.embd {
		t.Fatal("the rewritten model's head is not tied to token_embd")
	}
	const ctx = 32
	tokens := shakespeare(t, m, "shakespeare_val.txt")
	l := mustTrain(t, m, &Stream{Tokens: tokens[:8000]}, TrainOptions{Rank: 4, Alpha: 8, Steps: 4, LR: 1e-2, Batch: 2,
		Ctx: ctx, Seed: 3, Targets: []string{"embed_tokens"}})
	val := windowsOf(t, tokens[8000:], 4, ctx)
	trainer, err := l.Loss(val)
	if err != nil {
		t.Fatal(err)
	}
	a := writtenAdapter(t, l)
	applied := appliedLoss(t, openModel(t, path), a, val)
	merged := openModel(t, mergeModelFile(t, path, t.TempDir(), func(w io.Writer, base *gguf.File) error {
		return adapter.MergeGGUF(w, base, a, adapter.MergeOptions{Scale: 1})
	}, nil))
	if err := merged.SetCacheType(tensor.F32); err != nil {
		t.Fatal(err)
	}
	mergedLoss, err := MeanLossTokens(merged, val, ctx+1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("tied model: trainer %.6f, adapter applied %.6f, merged (head changed too) %.6f", trainer, applied,
		mergedLoss.Loss)
	if math.Abs(trainer-applied) > 1e-4*trainer {
		t.Errorf("the trainer's loss %.6f differs from the applied adapter's %.6f", trainer, applied)
	}
	if math.Abs(mergedLoss.Loss-applied) < 1e-4 {
		t.Errorf("the merged tied model gives the applied adapter's loss %.6f: the head should have changed with the "+
			"table", applied)
	}
}

// tiedModel writes tiny-llama-a's F32 GGUF without output.weight into a temporary file and returns its path.
func tiedModel(t *testing.T) string {
	t.Helper()
	f, err := gguf.Open(testshared.Path(t, "models", "tiny-llama-a", "gguf", "tiny-llama-a-f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var decls []gguf.TensorInfo
	for _, ti := range f.Tensors() {
		if ti.Name != "output.weight" {
			decls = append(decls, gguf.TensorInfo{Name: ti.Name, DType: ti.DType, Shape: ti.Shape})
		}
	}
	var buf bytes.Buffer
	w, err := gguf.NewWriter(&buf, f.Metadata, decls)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range decls {
		v, err := f.Tensor(d.Name)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WriteTensor(d.Name, v.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tied.gguf")
	if err := atomicfile.WriteFile(path, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	return path
}

// writtenAdapter writes l as a PEFT adapter into a temporary directory and opens it.
func writtenAdapter(t *testing.T, l *LoRA) *adapter.Adapter {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "adapter")
	if err := l.WritePEFT(dir); err != nil {
		t.Fatal(err)
	}
	a, err := adapter.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// appliedLoss is the mean loss of the windows through the runtime (F32 cache) on m with a applied.
func appliedLoss(t *testing.T, m *Model, a *adapter.Adapter, windows [][]int32) float64 {
	t.Helper()
	if err := m.SetCacheType(tensor.F32); err != nil {
		t.Fatal(err)
	}
	if err := m.ApplyAdapter(a, 1); err != nil {
		t.Fatal(err)
	}
	r, err := MeanLossTokens(m, windows, len(windows[0]))
	if err != nil {
		t.Fatal(err)
	}
	return r.Loss
}

// TestEmbedLoRARefused: embed_tokens trains with plain LoRA only; a model with an embedding adapter applied does not
// train; ApplyAdapter refuses a linear LoRA on the embedding and embedding factors of the wrong shape, naming them.
func TestEmbedLoRARefused(t *testing.T) {
	m := tinyLlamaHF(t)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_val.txt")[:2000]}
	for _, o := range []TrainOptions{
		{Init: InitPiSSA}, {Method: MethodDyLoRA}, {Method: MethodDoRA},
	} {
		o.Steps, o.Batch, o.Ctx, o.Targets = 1, 1, 16, []string{"q_proj", "embed_tokens"}
		if _, _, err := Train(m, data, o); err == nil || !strings.Contains(err.Error(), "embed_tokens") {
			t.Errorf("embed_tokens with method %q, init %q: error %v, want one naming embed_tokens", o.Method, o.Init, err)
		}
	}
	if _, _, err := Train(m, data, TrainOptions{Steps: 1, Batch: 1, Ctx: 16, Targets: []string{"embed"}}); err == nil ||
		!strings.Contains(err.Error(), "embed_tokens") {
		t.Errorf("unknown target: error %v, want one listing embed_tokens", err)
	}

	c := m.Config
	for _, tc := range []struct {
		name   string
		shapes [2]tensor.Shape
		want   string
	}{
		{"lora_A.weight", [2]tensor.Shape{{2, int64(c.Vocab)}, {int64(c.Embd), 2}}, "must be an embedding LoRA"},
		{"lora_embedding_A", [2]tensor.Shape{{2, int64(c.Vocab) - 1}, {int64(c.Embd), 2}}, "want [2 1024]"},
		{"lora_embedding_A", [2]tensor.Shape{{2, int64(c.Vocab)}, {int64(c.Embd) + 1, 2}}, "[256 2]"},
	} {
		dir := t.TempDir()
		bName := strings.Replace(strings.Replace(tc.name, "_A", "_B", 1), "A.weight", "B.weight", 1)
		var views []tensor.View
		for i, n := range []string{tc.name, bName} {
			count, _ := tc.shapes[i].Elements()
			views = append(views, floatView("base_model.model.model.embed_tokens."+n, tc.shapes[i],
				make([]float32, count)))
		}
		if err := safetensors.WriteFile(filepath.Join(dir, adapter.WeightsName), views, nil); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, adapter.ConfigName),
			[]byte(`{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["embed_tokens"]}`), 0o644); err != nil {
			t.Fatal(err)
		}
		a, err := adapter.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		err = m.ApplyAdapter(a, 1)
		a.Close()
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "embed_tokens") {
			t.Errorf("%s %v: error %v, want one naming the module and saying %q", tc.name, tc.shapes, err, tc.want)
		}
	}
	if len(m.embd.adapters) != 0 {
		t.Fatal("a refused adapter was applied")
	}

	// An applied embedding adapter: training on top of it is refused.
	l := mustTrain(t, m, data, TrainOptions{Rank: 2, Steps: 1, Batch: 1, Ctx: 16, Targets: []string{"embed_tokens"}})
	if err := m.ApplyAdapter(writtenAdapter(t, l), 1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Train(m, data, TrainOptions{Steps: 1, Batch: 1, Ctx: 16, Targets: []string{"q_proj"}}); err == nil ||
		!strings.Contains(err.Error(), "token_embd.weight has an adapter applied") {
		t.Errorf("training with an embedding adapter applied: error %v", err)
	}
}
