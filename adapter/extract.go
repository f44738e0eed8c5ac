package adapter

import (
	"bytes"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/internal/linalg"
	"github.com/lathe-ml/lathe/internal/parallel"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/spectral"
	"github.com/lathe-ml/lathe/tensor"
)

// ExtractOptions tunes Extract.
type ExtractOptions struct {
	// Rank is the rank of every extracted module (less where a matrix is smaller).
	Rank int
	// Exact decomposes each ΔW with a full SVD (LAPACK Dgesvd in float64, O(out·in·min(out, in))) instead of the
	// default randomized subspace iteration (linalg.RandomizedSVD with Rank+Oversample columns and PowerIters
	// iterations, O(out·in·Rank)), which agrees with the full SVD to rounding when the spectrum has a gap after
	// Rank — the usual case for the update of a LoRA fine-tune — and otherwise loses a little of the tail energy.
	Exact bool
	// ModulesToSave writes changed tensors that a LoRA cannot express (embeddings, norms, biases) in full, listed
	// in modules_to_save as PEFT does; without it they are only reported.
	ModulesToSave bool
	// Seed seeds the randomized SVD.
	Seed uint64
	// BaseModel is written as base_model_name_or_path.
	BaseModel string
}

// Randomized SVD parameters of Extract: Halko et al. (2011) recommend oversampling by 5–10 columns; four power
// iterations make the leading triplets agree with the full SVD to float32 rounding for spectra with a modest gap.
const (
	Oversample = 10
	PowerIters = 4
)

// ExtractReport says what Extract did with each tensor of the fine-tuned model.
type ExtractReport struct {
	EnergyReport
	Unchanged      []string `json:"unchanged"`       // equal in both models: nothing to extract
	NotExtractable []string `json:"not_extractable"` // changed, but not a projection matrix (embeddings, norms, biases)
	Saved          []string `json:"saved"`           // of those, written in full (ModulesToSave)
}

// Extract writes to dir a PEFT LoRA adapter approximating tuned − base: for each changed 2-D ".weight" tensor that is
// a projection (not an embedding), the truncated SVD ΔW ≈ U_r·S_r·V_rᵀ split as B = U_r·√S_r, A = √S_r·V_rᵀ, with
// lora_alpha = r so the scale is 1 (mergekit-extract-lora's recipe, spectral-prune-merge.md §5.3). The report gives
// the energy kept per module. Both models are HF safetensors with the same tensor names and shapes.
func Extract(dir string, base, tuned safetensors.Set, opts ExtractOptions) (*ExtractReport, error) {
	if opts.Rank < 1 {
		return nil, fmt.Errorf("extract: rank %d: want at least 1", opts.Rank)
	}
	rep := &ExtractReport{}
	var todo []string
	var saved []tensor.View
	var saveModules []string
	for _, info := range tuned.Tensors() {
		bi, ok := base.Lookup(info.Name)
		if !ok {
			return nil, fmt.Errorf("extract: tensor %q of the fine-tuned model is not in the base model", info.Name)
		}
		if !bi.Shape.Equal(info.Shape) {
			return nil, fmt.Errorf("extract: tensor %q: shape %v in the fine-tuned model, %v in the base", info.Name, info.Shape, bi.Shape)
		}
		t, err := tuned.Tensor(info.Name)
		if err != nil {
			return nil, err
		}
		b, err := base.Tensor(info.Name)
		if err != nil {
			return nil, err
		}
		if t.DType == b.DType && bytes.Equal(t.Data, b.Data) {
			rep.Unchanged = append(rep.Unchanged, info.Name)
			continue
		}
		if module, ok := strings.CutSuffix(info.Name, ".weight"); ok && len(info.Shape) == 2 && !isEmbedding(module) {
			todo = append(todo, info.Name)
			continue
		}
		rep.NotExtractable = append(rep.NotExtractable, info.Name)
		if opts.ModulesToSave {
			t.Name = peftPrefix + info.Name
			saved = append(saved, t)
			rep.Saved = append(rep.Saved, info.Name)
			module := info.Name[:max(0, strings.LastIndexByte(info.Name, '.'))]
			if !slices.Contains(saveModules, module) {
				saveModules = append(saveModules, module)
			}
		}
	}
	slices.Sort(todo)
	mods := make([]factored, len(todo))
	energy := make([]Energy, len(todo))
	zero := make([]bool, len(todo))
	err := parallel.ForEach(len(todo), parallel.Workers(0), nil, func(_, i int) error {
		name := todo[i]
		t, err := tuned.Tensor(name)
		if err != nil {
			return err
		}
		b, err := base.Tensor(name)
		if err != nil {
			return err
		}
		d, err := floats(t)
		if err != nil {
			return err
		}
		fb, err := floats(b)
		if err != nil {
			return err
		}
		total := 0.0
		for j := range d {
			d[j] -= fb[j]
			total += float64(d[j]) * float64(d[j])
		}
		if total == 0 {
			zero[i] = true
			return nil
		}
		rows, cols := int(t.Shape[0]), int(t.Shape[1])
		k := min(opts.Rank, rows, cols)
		u, s, vt, err := decompose(rows, cols, d, k, opts)
		if err != nil {
			return fmt.Errorf("extract: tensor %q: %w", name, err)
		}
		module := strings.TrimSuffix(name, ".weight")
		svd := &spectral.SVD{U: &spectral.Matrix{Rows: rows, Cols: len(s), Data: u}, S: s, Vt: &spectral.Matrix{Rows: len(s), Cols: cols, Data: vt}}
		mods[i] = factored{module, peftPrefix + module + ".lora_A.weight", peftPrefix + module + ".lora_B.weight", distributed(svd, k)}
		energy[i] = newEnergy(module, min(rows, cols), k, s, total)
		return nil
	})
	if err != nil {
		return nil, err
	}
	var kept []factored
	for i := range todo {
		if zero[i] {
			rep.Unchanged = append(rep.Unchanged, todo[i])
			continue
		}
		kept = append(kept, mods[i])
		rep.Modules = append(rep.Modules, energy[i])
	}
	slices.Sort(rep.Unchanged)
	rep.total()
	like := &Adapter{Config: &Config{BaseModel: opts.BaseModel}}
	if err := writeLoRA(dir, like, nil, kept, saved, saveModules); err != nil {
		return nil, fmt.Errorf("extract: %w", err)
	}
	return rep, nil
}

// decompose returns the leading k singular triplets of the rows×cols matrix d: u rows×k' and vt k'×cols with
// k' ≥ k (the full SVD keeps every triplet; only the first k are used).
func decompose(rows, cols int, d []float32, k int, opts ExtractOptions) (u, s, vt []float64, err error) {
	if !opts.Exact {
		return linalg.RandomizedSVD(rows, cols, d, k, min(k+Oversample, rows, cols), PowerIters, opts.Seed)
	}
	a := make([]float64, len(d))
	for i, v := range d {
		a[i] = float64(v)
	}
	return linalg.SVD(rows, cols, a)
}

// isEmbedding reports whether a module path names an embedding table, whose update PEFT expresses with
// lora_embedding_A/B (a lookup, not a matrix product) rather than lora_A/B.
func isEmbedding(module string) bool {
	last := path.Ext(module)
	if last == "" {
		last = module
	} else {
		last = last[1:]
	}
	return strings.Contains(last, "embed") || last == "wte" || last == "wpe"
}
