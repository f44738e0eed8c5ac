package adapter

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// CombineLinear writes to dir a PEFT adapter whose update is exactly Σᵢ weights[i]·ΔWᵢ for every module, by
// concatenating the factors along the rank (A' = [A₁; A₂; …], B' = [w₁s₁B₁ | w₂s₂B₂ | …] with each adapter's own
// scale sᵢ folded into B, and scale 1 for the result: lora_alpha = r per module). Unlike PEFT's add_weighted_adapter
// "linear", which concatenates √w-weighted factors only when ranks agree and otherwise mixes cross terms
// (spectral-prune-merge.md §5.2, §8.7), there are no cross terms; the rank is the sum of the ranks. A module present
// in only some adapters takes the terms of those. Factors are written as F32. Inputs are PEFT or MLX adapters (module
// names are model paths); DoRA adapters are refused, their update not being linear in the factors.
func CombineLinear(dir string, adapters []*Adapter, weights []float64) error {
	if len(adapters) == 0 || len(adapters) != len(weights) {
		return fmt.Errorf("combine: %d adapters and %d weights: want one weight per adapter, at least one adapter", len(adapters), len(weights))
	}
	type term struct {
		m *Module
		w float64
	}
	terms := map[string][]term{}
	for i, a := range adapters {
		if a.Format == GGUF {
			return fmt.Errorf("combine: %s: GGUF adapters are not supported (convert the PEFT original)", a.Path)
		}
		for j := range a.Modules {
			m := &a.Modules[j]
			if m.Magnitude != nil {
				return fmt.Errorf("combine: %s: module %s is DoRA, whose update is not a sum of factor products", a.Path, m.Name)
			}
			if prev := terms[m.Name]; len(prev) > 0 {
				if p := prev[0].m; p.Layout != m.Layout || p.A.Shape[1] != m.A.Shape[1] || p.B.Shape[0] != m.B.Shape[0] {
					return fmt.Errorf("combine: module %s: %s has factors %v·%v, %s %v·%v", m.Name, adapters[0].Path,
						p.B.Shape, p.A.Shape, a.Path, m.B.Shape, m.A.Shape)
				}
			}
			terms[m.Name] = append(terms[m.Name], term{m, weights[i]})
		}
	}
	names := slices.Sorted(maps.Keys(terms))
	var views []tensor.View
	ranks := map[string]int{}
	for _, name := range names {
		ts := terms[name]
		first := ts[0].m
		in, out := int(first.A.Shape[1]), int(first.B.Shape[0])
		rank := 0
		for _, t := range ts {
			rank += t.m.Rank
		}
		ranks[name] = rank
		a := make([]float32, rank*in)
		b := make([]float32, out*rank)
		off := 0
		for _, t := range ts {
			fa, err := floats(t.m.A)
			if err != nil {
				return err
			}
			fb, err := floats(t.m.B)
			if err != nil {
				return err
			}
			copy(a[off*in:], fa)
			f := t.w * t.m.Scale
			for i := range out {
				for k := range t.m.Rank {
					b[i*rank+off+k] = float32(f * float64(fb[i*t.m.Rank+k]))
				}
			}
			off += t.m.Rank
		}
		aName, bName := peftPrefix+name+".lora_A.weight", peftPrefix+name+".lora_B.weight"
		if strings.HasSuffix(first.A.Name, ".lora_embedding_A") {
			aName, bName = peftPrefix+name+".lora_embedding_A", peftPrefix+name+".lora_embedding_B"
		}
		views = append(views, f32View(aName, tensor.Shape{int64(rank), int64(in)}, a), f32View(bName, tensor.Shape{int64(out), int64(rank)}, b))
	}
	cfg, err := combinedConfig(adapters[0], names, ranks)
	if err != nil {
		return err
	}
	for _, a := range adapters {
		if same, err := sameDir(dir, a.Path); err != nil || same {
			if err == nil {
				err = fmt.Errorf("combine: %s is an input adapter's directory; write the result elsewhere", dir)
			}
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := safetensors.WriteFile(filepath.Join(dir, WeightsName), views, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, ConfigName), cfg)
}

// combinedConfig is the adapter_config.json of a combination: r and lora_alpha equal (scale 1) at the most common
// rank, and rank_pattern/alpha_pattern entries matching exactly each module of another rank.
func combinedConfig(first *Adapter, names []string, ranks map[string]int) ([]byte, error) {
	count := map[int]int{}
	common := 0
	for _, name := range names {
		r := ranks[name]
		count[r]++
		if count[r] > count[common] || count[r] == count[common] && r < common {
			common = r
		}
	}
	// encoding/json sorts map keys while PEFT takes the first key that matches: each key here matches one module.
	pattern := map[string]int{}
	for _, name := range names {
		if ranks[name] != common {
			pattern[regexp.QuoteMeta(name)] = ranks[name]
		}
	}
	fanInFanOut := first.Config != nil && first.Config.FanInFanOut
	base := ""
	if first.Config != nil {
		base = first.Config.BaseModel
	}
	return json.MarshalIndent(map[string]any{
		"peft_type":               "LORA",
		"base_model_name_or_path": base,
		"r":                       common,
		"lora_alpha":              common,
		"target_modules":          names,
		"rank_pattern":            pattern,
		"alpha_pattern":           pattern,
		"fan_in_fan_out":          fanInFanOut,
		"use_rslora":              false,
		"use_dora":                false,
		"bias":                    "none",
	}, "", "  ")
}

func floats(v tensor.View) ([]float32, error) {
	n, err := v.Shape.Elements()
	if err != nil {
		return nil, err
	}
	f := make([]float32, n)
	if err := tensor.ToFloat32(f, v.Data, v.DType); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", v.Name, err)
	}
	return f, nil
}

func f32View(name string, shape tensor.Shape, f []float32) tensor.View {
	data := make([]byte, 4*len(f))
	tensor.FromFloat32(data, f, tensor.F32) // sizes match by construction
	return tensor.View{Name: name, DType: tensor.F32, Shape: shape, Data: data}
}
