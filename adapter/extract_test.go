package adapter

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// TestExtractTinyLlama extracts (randomized SVD) PEFT's merged model against the base at rank 8, the rank of the PyTorch adapter that
// made it: every extracted ΔW matches the adapter's (α/r)·B·A up to the float32 rounding of the merged weights, and
// merging the extracted adapter into the base gives back the merged model.
func TestExtractTinyLlama(t *testing.T) {
	root := sharedModel(t)
	base, err := safetensors.Open(filepath.Join(root, "hf", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	tuned, err := safetensors.Open(filepath.Join(root, "merged-lora-shakespeare-a", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer tuned.Close()
	orig := openAdapter(t, filepath.Join(root, "lora-shakespeare-a"))
	// The full SVD (Exact) is checked on small matrices in TestExtractClassifies: gonum's Dgesvd needs about 20 s
	// for these 42 matrices, against 0.5 s for the randomized route.
	dir := filepath.Join(t.TempDir(), "x")
	rep, err := Extract(dir, base, tuned, ExtractOptions{Rank: 8, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Modules) != 42 || len(rep.NotExtractable) != 0 || len(rep.Unchanged) != len(base.Tensors())-42 {
		t.Fatalf("%d modules, %d not extractable, %d unchanged", len(rep.Modules), len(rep.NotExtractable), len(rep.Unchanged))
	}
	x := openAdapter(t, dir)
	worst, num, den := 0.0, 0.0, 0.0
	for i := range orig.Modules {
		m := &orig.Modules[i]
		got := moduleByName(t, x, m.Name)
		if got.Rank != 8 || got.Scale != 1 {
			t.Errorf("%s: rank %d scale %g, want 8 and 1", m.Name, got.Rank, got.Scale)
		}
		d, n := frobDiff(t, delta(t, got), delta(t, m))
		worst = max(worst, d/n)
		num, den = num+d*d, den+n*n
	}
	merged := mergedSet(t, base, []*Adapter{x}, MergeOptions{})
	maxDiff := 0.0
	for _, info := range tuned.Tensors() {
		g, _ := merged.Tensor(info.Name)
		w, _ := tuned.Tensor(info.Name)
		maxDiff = max(maxDiff, maxAbsDiff(t, g, w))
	}
	t.Logf("randomized SVD: relative Frobenius error of ΔW: worst module %.2g, overall %.2g; energy retained %.9f; merge of the extract vs PEFT's merged model: max abs diff %.2g",
		worst, math.Sqrt(num/den), rep.Retained, maxDiff)
	if worst > 1e-4 || maxDiff > 1e-6 {
		t.Errorf("worst relative error %g, merged max abs diff %g", worst, maxDiff)
	}
}

// TestExtractClassifies: a rank-2 change of a projection is recovered exactly at rank 2 and truncated at rank 1; a
// changed embedding and norm are reported (and with ModulesToSave written in full, listed in modules_to_save); a
// projection whose bytes differ but whose values do not (F32 vs BF16 of the same numbers) is unchanged.
func TestExtractClassifies(t *testing.T) {
	w := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12} // 3×4
	// ΔW of rank 2: the third row is the sum of the first two
	d := []float32{2, 0, 0, 1, 0, 2, 1, 0, 2, 2, 1, 1}
	tw := make([]float32, len(w))
	for i := range w {
		tw[i] = w[i] + d[i]
	}
	bf := make([]byte, 2*len(w))
	tensor.FromFloat32(bf, w, tensor.BF16)
	mk := func(proj []float32, embed, norm float32) *safetensors.File {
		return memSet(t,
			f32("model.embed_tokens.weight", tensor.Shape{2, 2}, embed, 0, 0, 1),
			f32("model.layers.0.norm.weight", tensor.Shape{2}, norm, 1),
			f32("model.layers.0.q_proj.weight", tensor.Shape{3, 4}, proj...),
			f32("model.layers.0.k_proj.weight", tensor.Shape{3, 4}, w...),
			tensor.View{Name: "model.layers.0.v_proj.weight", DType: tensor.BF16, Shape: tensor.Shape{3, 4}, Data: bf})
	}
	base, tuned := mk(w, 1, 1), mk(tw, 2, 3)
	tuned2 := memSet(t, append(tensorsOf(t, tuned)[:4], f32("model.layers.0.v_proj.weight", tensor.Shape{3, 4}, w...))...)
	for _, exact := range []bool{false, true} {
		for _, rank := range []int{2, 1} {
			dir := filepath.Join(t.TempDir(), "x")
			rep, err := Extract(dir, base, tuned2, ExtractOptions{Rank: rank, Exact: exact, ModulesToSave: true})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Modules) != 1 || rep.Modules[0].Module != "model.layers.0.q_proj" ||
				!slices.Equal(rep.NotExtractable, []string{"model.embed_tokens.weight", "model.layers.0.norm.weight"}) ||
				!slices.Equal(rep.Saved, rep.NotExtractable) ||
				!slices.Equal(rep.Unchanged, []string{"model.layers.0.k_proj.weight", "model.layers.0.v_proj.weight"}) {
				t.Fatalf("report %+v", rep)
			}
			x := openAdapter(t, dir)
			got := delta(t, moduleByName(t, x, "model.layers.0.q_proj"))
			diff, norm := frobDiff(t, got, matrix(3, 4, d))
			e := rep.Modules[0]
			if rank == 2 && (diff > 1e-6*norm || e.Retained < 1-1e-12) {
				t.Errorf("exact=%v rank 2: relative error %g, retained %g", exact, diff/norm, e.Retained)
			}
			if rank == 1 && (diff*diff-(e.Total-e.Kept) > 1e-6*norm*norm || e.Retained >= 1) {
				t.Errorf("exact=%v rank 1: ‖ΔW−ΔW₁‖² %g, reported tail %g", exact, diff*diff, e.Total-e.Kept)
			}
			if !slices.Equal(x.Extra, []string{peftPrefix + "model.embed_tokens.weight", peftPrefix + "model.layers.0.norm.weight"}) {
				t.Errorf("saved tensors %v", x.Extra)
			}
			// Merging the extract gives back the fine-tuned model: copies replace the embedding and the norm.
			merged := mergedSet(t, base, []*Adapter{x}, MergeOptions{})
			for _, v := range tensorsOf(t, tuned2) {
				g, _ := merged.Tensor(v.Name)
				if d := maxAbsDiff(t, g, v); d > 1e-6 && (rank == 2 || v.Name != "model.layers.0.q_proj.weight") {
					t.Errorf("exact=%v rank %d: merged %s differs from the fine-tuned model by %g", exact, rank, v.Name, d)
				}
			}
			raw, _ := os.ReadFile(filepath.Join(dir, ConfigName))
			var cfg struct {
				ModulesToSave []string `json:"modules_to_save"`
			}
			json.Unmarshal(raw, &cfg)
			if !slices.Equal(cfg.ModulesToSave, []string{"model.embed_tokens", "model.layers.0.norm"}) {
				t.Errorf("modules_to_save %v", cfg.ModulesToSave)
			}
		}
	}
	if _, err := Extract(filepath.Join(t.TempDir(), "x"), base, base, ExtractOptions{Rank: 2}); err == nil {
		t.Error("identical models: no error")
	}
	if _, err := Extract(filepath.Join(t.TempDir(), "x"), memSet(t, f32("a.weight", tensor.Shape{1, 1}, 1)), tuned, ExtractOptions{Rank: 2}); err == nil {
		t.Error("tensor missing from the base: no error")
	}
}

func tensorsOf(t *testing.T, f *safetensors.File) []tensor.View {
	t.Helper()
	var out []tensor.View
	for _, info := range f.Tensors() {
		v, err := f.Tensor(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// BenchmarkExtract extracts a rank-8 LoRA from the shared merged model (42 projections of 256×256 to 256×768), by
// randomized and by full SVD.
func BenchmarkExtract(b *testing.B) {
	root := testshared.Path(b, "models", "tiny-llama-a")
	base, err := safetensors.Open(filepath.Join(root, "hf", "model.safetensors"))
	if err != nil {
		b.Fatal(err)
	}
	defer base.Close()
	tuned, err := safetensors.Open(filepath.Join(root, "merged-lora-shakespeare-a", "model.safetensors"))
	if err != nil {
		b.Fatal(err)
	}
	defer tuned.Close()
	for _, exact := range []bool{false, true} {
		b.Run(map[bool]string{false: "randomized", true: "full"}[exact], func(b *testing.B) {
			dir := filepath.Join(b.TempDir(), "x")
			for b.Loop() {
				if _, err := Extract(dir, base, tuned, ExtractOptions{Rank: 8, Exact: exact}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
