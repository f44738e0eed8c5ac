package adapter

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// TestGGUFToPEFTMatchesPyTorch converts llama.cpp's own GGUF adapter (convert_lora_to_gguf.py's output) back to
// PEFT, with the base given as the HF directory and as a GGUF file: every factor must equal the PyTorch PEFT
// adapter's bit for bit once the rotary permutation of q/k B rows is undone, and r, lora_alpha and the scales must
// come back.
func TestGGUFToPEFTMatchesPyTorch(t *testing.T) {
	root := testshared.Path(t, "models", "tiny-llama-a")
	want := openAdapter(t, filepath.Join(root, "lora-shakespeare-a"))
	g := openAdapter(t, filepath.Join(root, "lora-shakespeare-a", "adapter-f32.gguf"))
	for _, basePath := range []string{filepath.Join(root, "hf"), filepath.Join(root, "gguf", "tiny-llama-a-q4_0.gguf")} {
		base, err := OpenHFBase(basePath)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "peft")
		if err := g.WriteAsPEFT(dir, &base); err != nil {
			t.Fatal(err)
		}
		got := openAdapter(t, dir)
		if got.Format != PEFT || got.Config.R != 8 || got.Config.LoraAlpha != 16 {
			t.Errorf("--base %s: format %s, r %d, lora_alpha %g; want peft, 8, 16", basePath, got.Format, got.Config.R, got.Config.LoraAlpha)
		}
		if len(got.Modules) != len(want.Modules) {
			t.Fatalf("--base %s: %d modules, PyTorch's adapter has %d", basePath, len(got.Modules), len(want.Modules))
		}
		permuted := 0
		for i, w := range want.Modules {
			m := got.Modules[i]
			if m.Name != w.Name || m.Scale != w.Scale || m.Rank != w.Rank {
				t.Errorf("module %d: %s scale %g rank %d, want %s %g %d", i, m.Name, m.Scale, m.Rank, w.Name, w.Scale, w.Rank)
				continue
			}
			for _, p := range [][2]tensor.View{{m.A, w.A}, {m.B, w.B}} {
				if p[0].Name != p[1].Name || !p[0].Shape.Equal(p[1].Shape) || !bytes.Equal(p[0].Data, p[1].Data) {
					t.Errorf("tensor %s %v differs from PyTorch's %s %v", p[0].Name, p[0].Shape, p[1].Name, p[1].Shape)
				}
			}
			if strings.HasSuffix(m.Name, "q_proj") || strings.HasSuffix(m.Name, "k_proj") {
				permuted++
			}
		}
		if permuted == 0 {
			t.Error("no q/k projection was checked; the rotary permutation went untested")
		}
	}
}

// TestAdapterRoundTrips: PEFT → GGUF → PEFT, PEFT → MLX → PEFT and PEFT → GGUF → MLX → PEFT on the shared adapter
// give every module the same ΔW (exact for F32 factors: the factors only move and transpose, and alpha/r is
// recomputed from the same alpha and r), the MLX stage included; and each converted PEFT adapter merges into the
// HF model byte for byte as the original does.
func TestAdapterRoundTrips(t *testing.T) {
	root := testshared.Path(t, "models", "tiny-llama-a")
	orig := openAdapter(t, filepath.Join(root, "lora-shakespeare-a"))
	ggufBase, err := OpenGGUFBase(filepath.Join(root, "hf"))
	if err != nil {
		t.Fatal(err)
	}
	hfBase, err := OpenHFBase(filepath.Join(root, "gguf", "tiny-llama-a-f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	model := openSafetensors(t, filepath.Join(root, "hf", "model.safetensors"))
	var want bytes.Buffer
	if err := MergeSafetensors(&want, model, orig, MergeOptions{}); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	toGGUF := func(a *Adapter) string {
		path := filepath.Join(tmp, "a.gguf")
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := a.WriteGGUF(f, ggufBase, GGUFOptions{}); err != nil {
			t.Fatal(err)
		}
		return path
	}
	toPEFT := func(a *Adapter, name string) string {
		dir := filepath.Join(tmp, name)
		if err := a.WriteAsPEFT(dir, &hfBase); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	toMLX := func(a *Adapter, name string) string {
		dir := filepath.Join(tmp, name)
		if err := a.WriteMLX(dir, &hfBase); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	g := openAdapter(t, toGGUF(orig))
	mlx := openAdapter(t, toMLX(orig, "mlx"))
	if mlx.Format != MLX {
		t.Fatalf("WriteMLX wrote a %s adapter", mlx.Format)
	}
	sameDeltas(t, "PEFT → MLX", orig, mlx)
	var cfg struct {
		FineTuneType string `json:"fine_tune_type"`
		NumLayers    int    `json:"num_layers"`
		Params       struct {
			Rank  int      `json:"rank"`
			Scale float64  `json:"scale"`
			Keys  []string `json:"keys"`
		} `json:"lora_parameters"`
	}
	data, err := os.ReadFile(filepath.Join(tmp, "mlx", ConfigName))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	if p := cfg.Params; cfg.FineTuneType != "lora" || cfg.NumLayers != 6 || p.Rank != 8 || p.Scale != 2 || len(p.Keys) != 7 {
		t.Errorf("mlx-lm configuration %s: want lora, 6 layers (all of tiny-llama-a), rank 8, scale 2, 7 keys", data)
	}
	gmlx := openAdapter(t, toMLX(g, "gguf-mlx"))
	sameDeltas(t, "PEFT → GGUF → MLX", orig, gmlx)
	for _, c := range []struct {
		name string
		a    *Adapter
	}{{"PEFT → GGUF → PEFT", g}, {"PEFT → MLX → PEFT", mlx}, {"PEFT → GGUF → MLX → PEFT", gmlx}} {
		back := openAdapter(t, toPEFT(c.a, strings.ReplaceAll(c.name, " ", "")))
		sameDeltas(t, c.name, orig, back)
		var got bytes.Buffer
		if err := MergeSafetensors(&got, model, back, MergeOptions{}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Errorf("%s: merging the converted adapter gives other weights than merging the original", c.name)
		}
	}
}

// sameDeltas checks that b's modules are a's with the same ΔW; a GGUF adapter's targets are not compared by name.
func sameDeltas(t *testing.T, what string, a, b *Adapter) {
	t.Helper()
	if len(a.Modules) != len(b.Modules) {
		t.Fatalf("%s: %d modules, want %d", what, len(b.Modules), len(a.Modules))
	}
	worst := 0.0
	for i := range a.Modules {
		ma, mb := &a.Modules[i], &b.Modules[i]
		if ma.Target != mb.Target {
			t.Fatalf("%s: module %d targets %s, want %s", what, i, mb.Target, ma.Target)
		}
		da, err := ma.Delta()
		if err != nil {
			t.Fatal(err)
		}
		db, err := mb.Delta()
		if err != nil {
			t.Fatal(err)
		}
		if da.Rows != db.Rows || da.Cols != db.Cols {
			t.Fatalf("%s: module %s: ΔW %d×%d, want %d×%d", what, ma.Name, db.Rows, db.Cols, da.Rows, da.Cols)
		}
		for j := range da.Data {
			worst = max(worst, math.Abs(da.Data[j]-db.Data[j]))
		}
	}
	if worst != 0 {
		t.Errorf("%s: ΔW differs by up to %g; F32 factors should come back exactly", what, worst)
	}
}

// TestConvertAdapterErrors: a GGUF adapter cannot be named in Hugging Face terms without its base, mlx-lm cannot
// hold modules of different ranks, and neither writer overwrites the input's directory.
func TestConvertAdapterErrors(t *testing.T) {
	root := testshared.Path(t, "models", "tiny-llama-a")
	g := openAdapter(t, filepath.Join(root, "lora-shakespeare-a", "adapter-f32.gguf"))
	if err := g.WriteAsPEFT(filepath.Join(t.TempDir(), "p"), nil); err == nil || !strings.Contains(err.Error(), "base model") {
		t.Errorf("GGUF → PEFT without a base: %v, want an error asking for the base model", err)
	}
	if err := g.WriteMLX(filepath.Join(t.TempDir(), "m"), nil); err == nil || !strings.Contains(err.Error(), "base model") {
		t.Errorf("GGUF → MLX without a base: %v, want an error asking for the base model", err)
	}
	p := openAdapter(t, filepath.Join(root, "lora-shakespeare-a"))
	p.Modules[1].Rank = 4 // as a rank_pattern adapter would have it
	if err := p.WriteMLX(filepath.Join(t.TempDir(), "m"), nil); err == nil || !strings.Contains(err.Error(), "one rank") {
		t.Errorf("MLX with two ranks: %v, want a rank error", err)
	}
	mlxDir := filepath.Join(t.TempDir(), "mlx")
	if err := openAdapter(t, filepath.Join(root, "lora-shakespeare-a")).WriteMLX(mlxDir, nil); err != nil {
		t.Fatal(err)
	}
	m := openAdapter(t, mlxDir)
	if err := m.WriteAsPEFT(mlxDir, nil); err == nil || !strings.Contains(err.Error(), "input adapter's directory") {
		t.Errorf("MLX → PEFT into its own directory: %v, want a refusal", err)
	}
}

// TestGGUFToPEFTPatterns covers what the shared adapter does not: an embedding LoRA, lm_head, a k projection of
// another rank (rank_pattern) and a module with its own alpha (alpha_pattern, baked into lora_b by WriteGGUF). The
// PEFT → GGUF → PEFT round trip must keep every ΔW, and the patterns must come back as PEFT configuration.
func TestGGUFToPEFTPatterns(t *testing.T) {
	root := testshared.Path(t, "models", "tiny-llama-a")
	rng := rand.New(rand.NewPCG(1, 2))
	view := func(name string, rows, cols int) tensor.View {
		f := make([]float32, rows*cols)
		for i := range f {
			f[i] = float32(rng.NormFloat64())
		}
		return f32View(peftPrefix+name, tensor.Shape{int64(rows), int64(cols)}, f)
	}
	views := []tensor.View{
		view("model.embed_tokens.lora_embedding_A", 4, 1024), view("model.embed_tokens.lora_embedding_B", 256, 4),
		view("model.layers.5.self_attn.k_proj.lora_A.weight", 4, 256), view("model.layers.5.self_attn.k_proj.lora_B.weight", 128, 4),
		view("model.layers.5.mlp.up_proj.lora_A.weight", 8, 256), view("model.layers.5.mlp.up_proj.lora_B.weight", 768, 8),
		view("lm_head.lora_A.weight", 8, 256), view("lm_head.lora_B.weight", 1024, 8),
	}
	src := t.TempDir()
	if err := safetensors.WriteFile(filepath.Join(src, WeightsName), views, nil); err != nil {
		t.Fatal(err)
	}
	cfg := `{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["embed_tokens", "k_proj", "up_proj", "lm_head"],
		"rank_pattern": {"embed_tokens": 4, "k_proj": 4}, "alpha_pattern": {"up_proj": 4}}`
	if err := os.WriteFile(filepath.Join(src, ConfigName), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	orig := openAdapter(t, src)
	gb, err := OpenGGUFBase(filepath.Join(root, "hf"))
	if err != nil {
		t.Fatal(err)
	}
	hb, err := OpenHFBase(filepath.Join(root, "hf"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "a.gguf")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := orig.WriteGGUF(f, gb, GGUFOptions{}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	g := openAdapter(t, path)
	dir := filepath.Join(t.TempDir(), "back")
	if err := g.WriteAsPEFT(dir, &hb); err != nil {
		t.Fatal(err)
	}
	back := openAdapter(t, dir)
	sameDeltas(t, "PEFT with patterns → GGUF → PEFT", orig, back)
	for _, m := range back.Modules {
		r, alpha := back.Config.RankAlpha(m.Name)
		if r != m.Rank || alpha != 16 {
			t.Errorf("module %s: configuration gives r %d, alpha %g; want %d, 16 (GGUF's one alpha)", m.Name, r, alpha, m.Rank)
		}
	}
	emb := slices.IndexFunc(back.Modules, func(m Module) bool { return m.Name == "model.embed_tokens" })
	if emb < 0 || back.Modules[emb].Layout != Transposed || !strings.HasSuffix(back.Modules[emb].A.Name, ".lora_embedding_A") {
		t.Error("the embedding LoRA did not come back as lora_embedding_A/B")
	}
	if err := g.WriteMLX(filepath.Join(t.TempDir(), "m"), &hb); err == nil || !strings.Contains(err.Error(), "mlx-lm") {
		t.Errorf("MLX with an embedding LoRA and two ranks: %v, want a refusal", err)
	}
}
