package adapter

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// MLX is mlx-lm's LoRA adapter: adapter_config.json with lora_parameters, and adapters.safetensors.
const MLX Format = "mlx"

// MLXWeightsName is the weights file of an mlx-lm adapter directory (its configuration is ConfigName too).
const MLXWeightsName = "adapters.safetensors"

// OpenMLX opens an mlx-lm LoRA adapter from its configuration and weights files. mlx-lm's LoRALinear computes
// y = W·x + scale·(x·lora_a)·lora_b with lora_a [in, r] and lora_b [r, out], so ΔW = scale·(lora_a·lora_b)ᵀ: the
// modules hold the transposes (A = lora_aᵀ [r, in], B = lora_bᵀ [out, r], copies) in the Linear layout, and the
// scale is lora_parameters.scale as mlx-lm applies it. Tensor names are the model's module paths plus ".lora_a" and
// ".lora_b".
func OpenMLX(configPath, weightsPath string) (*Adapter, error) {
	data, err := os.ReadFile(configPath)
	if err != nil {
		return nil, err
	}
	f, err := safetensors.Open(weightsPath)
	if err != nil {
		return nil, err
	}
	a, err := newMLX(configPath, weightsPath, data, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	a.Files, a.Bytes = []string{configPath, weightsPath}, int64(len(data))+f.Size()
	return a, nil
}

// newMLX reads an mlx-lm adapter from its configuration bytes and weights; the names are for errors.
func newMLX(configPath, weightsPath string, config []byte, set safetensors.Set) (*Adapter, error) {
	var raw struct {
		UseDoRA bool `json:"use_dora"`
		Params  *struct {
			Rank  *float64 `json:"rank"`
			Alpha *float64 `json:"alpha"`
			Scale *float64 `json:"scale"`
		} `json:"lora_parameters"`
	}
	if err := json.Unmarshal(config, &raw); err != nil {
		return nil, &ConfigError{File: configPath, Err: fmt.Errorf("not a JSON object of the expected shape: %w", err)}
	}
	if raw.Params == nil || raw.Params.Scale == nil {
		return nil, &ConfigError{File: configPath, Field: "lora_parameters.scale", Err: errors.New("missing: mlx-lm multiplies the update by it")}
	}
	if raw.UseDoRA {
		return nil, &ConfigError{File: configPath, Field: "use_dora", Err: errors.New("mlx-lm DoRA adapters are not supported")}
	}
	a := &Adapter{Path: weightsPath, Format: MLX, Config: &Config{PeftType: "LORA", Raw: append([]byte(nil), config...)}, tensors: set}
	if err := a.readMLX(weightsPath, set, *raw.Params.Scale, raw.Params.Rank, raw.Params.Alpha); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Adapter) readMLX(file string, set safetensors.Set, scale float64, rank, alpha *float64) error {
	var names []string
	for _, t := range set.Tensors() {
		names = append(names, t.Name)
	}
	load := func(name string) (tensor.View, error) {
		v, err := set.Tensor(name)
		if err != nil {
			return v, err
		}
		if len(v.Shape) != 2 || !v.DType.IsFloat() {
			return v, &FormatError{File: file, Tensor: name, Err: fmt.Errorf("%s %v: want a 2-D float matrix", v.DType, v.Shape)}
		}
		return encodeFactor(v, v.DType, 1, true)
	}
	mods, err := a.pairFactors(file, names, load, func(base string) *Module {
		return &Module{Name: base, Target: base + ".weight"}
	})
	if err != nil {
		return err
	}
	for _, m := range mods {
		r := m.Rank
		if rank != nil && float64(r) != *rank {
			return &FormatError{File: file, Tensor: m.A.Name, Err: fmt.Errorf("rank %d, lora_parameters.rank is %g", r, *rank)}
		}
		m.ConfigRank, m.Scale = r, scale
		// A GGUF adapter stores alpha, and llama.cpp applies alpha/rank: without an alpha, the one giving scale.
		m.Alpha = scale * float64(r)
		if alpha != nil {
			m.Alpha = *alpha
		}
		a.Config.R, a.Config.LoraAlpha = r, m.Alpha
		a.Modules = append(a.Modules, *m)
	}
	slices.SortFunc(a.Modules, func(x, y Module) int { return strings.Compare(x.Target, y.Target) })
	return nil
}
