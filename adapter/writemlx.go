package adapter

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// WriteMLX writes the adapter as an mlx-lm LoRA adapter directory: adapters.safetensors with "<module>.lora_a"
// [in, r] = Aᵀ and ".lora_b" [r, out] = Bᵀ (mlx-lm's LoRALinear computes y = W·x + scale·(x·lora_a)·lora_b), in
// the factors' own type, and adapter_config.json with fine_tune_type "lora", num_layers and lora_parameters
// {rank, scale, dropout, keys}, the form mlx-lm's load_adapters reads.
//
// mlx-lm has one rank and one scale for every layer, so the modules must share a rank; where a module's scale
// differs from the first one's (rank_pattern, alpha_pattern) the ratio is baked into lora_b. num_layers counts
// the adapted blocks from the last one, as linear_to_lora_layers applies them: base.Blocks minus the first adapted
// block, or without base -1 (mlx-lm's "all layers") when block 0 is adapted. keys are the adapted paths inside a block
// ("self_attn.q_proj"). Only linear layers inside model.layers have an mlx-lm LoRA form; DoRA, embeddings,
// fan_in_fan_out layers and other tensors are refused. base is needed for a GGUF adapter (names and head counts)
// and for num_layers as above.
func (a *Adapter) WriteMLX(dir string, base *HFBase) error {
	mods, err := a.convertedModules(dir, base, "mlx-lm")
	if err != nil {
		return err
	}
	first := -1
	var keys []string
	var views []tensor.View
	for i := range mods {
		m := &mods[i]
		if m.Magnitude != nil {
			return fmt.Errorf("%s: module %s is DoRA, which lathe does not write as an mlx-lm adapter", a.Path, m.Name)
		}
		if m.Layout != Linear {
			return fmt.Errorf("%s: module %s: embedding and fan_in_fan_out LoRA have no mlx-lm LoRALinear form", a.Path, m.Name)
		}
		if m.Rank != mods[0].Rank {
			return fmt.Errorf("%s: module %s has rank %d, module %s %d: mlx-lm gives every layer one rank", a.Path, m.Name, m.Rank, mods[0].Name, mods[0].Rank)
		}
		block, key, err := mlxBlock(m.Name)
		if err != nil {
			return fmt.Errorf("%s: module %s: %w", a.Path, m.Name, err)
		}
		if first < 0 || block < first {
			first = block
		}
		if !slices.Contains(keys, key) {
			keys = append(keys, key)
		}
		la, err := encodeFactor(m.A, m.A.DType, 1, true)
		if err != nil {
			return fmt.Errorf("%s: %w", a.Path, err)
		}
		lb, err := encodeFactor(m.B, m.B.DType, m.Scale/mods[0].Scale, true)
		if err != nil {
			return fmt.Errorf("%s: %w", a.Path, err)
		}
		la.Name, lb.Name = m.Name+".lora_a", m.Name+".lora_b"
		views = append(views, la, lb)
	}
	layers := -1
	switch {
	case base != nil:
		layers = base.Blocks - first
	case first > 0:
		return fmt.Errorf("%s: the adapter starts at block %d, so mlx-lm's num_layers needs the base model's block count", a.Path, first)
	}
	slices.Sort(keys)
	cfg, err := json.MarshalIndent(map[string]any{
		"fine_tune_type": "lora",
		"num_layers":     layers,
		"lora_parameters": map[string]any{
			"rank":    mods[0].Rank,
			"scale":   mods[0].Scale,
			"dropout": 0.0,
			"keys":    keys,
		},
	}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := safetensors.WriteFile(filepath.Join(dir, MLXWeightsName), views, nil); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, ConfigName), cfg)
}

// mlxBlock splits a module path "model.layers.N.KEY" into N and KEY, the only place mlx-lm puts LoRA layers.
func mlxBlock(name string) (int, string, error) {
	rest, ok := strings.CutPrefix(name, "model.layers.")
	if ok {
		n, key, found := strings.Cut(rest, ".")
		if b, err := strconv.Atoi(n); found && err == nil && b >= 0 && strconv.Itoa(b) == n {
			return b, key, nil
		}
	}
	return 0, "", fmt.Errorf("not inside model.layers.N: mlx-lm adapts only the transformer blocks")
}
