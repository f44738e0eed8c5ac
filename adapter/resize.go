package adapter

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/internal/parallel"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/spectral"
	"github.com/lathe-ml/lathe/tensor"
)

// Energy is the share of a module's update that a rank-k factorization keeps: Kept = Σ_{i<k} σᵢ² and Total =
// Σ σᵢ² = ‖ΔW‖_F², so that by Eckart–Young ‖ΔW − ΔW_k‖_F² = Total − Kept.
type Energy struct {
	Module   string  `json:"module"`
	Rank     int     `json:"rank"`     // rank before (the adapter's, or min(rows, cols) for a dense update)
	NewRank  int     `json:"new_rank"` // rank written
	Kept     float64 `json:"kept"`
	Total    float64 `json:"total"`
	Retained float64 `json:"retained"` // Kept/Total, 1 for a zero update
}

// EnergyReport lists the modules of a rank reduction, sorted by name, and the share of Σ‖ΔW‖_F² they keep together.
type EnergyReport struct {
	Modules  []Energy `json:"modules"`
	Retained float64  `json:"retained"`
}

func newEnergy(module string, rank, newRank int, s []float64, total float64) Energy {
	e := Energy{Module: module, Rank: rank, NewRank: newRank, Total: total, Retained: 1}
	for _, v := range s[:newRank] {
		e.Kept += v * v
	}
	if total > 0 {
		e.Retained = e.Kept / total
	}
	return e
}

func (r *EnergyReport) total() {
	kept, total := 0.0, 0.0
	for _, e := range r.Modules {
		kept, total = kept+e.Kept, total+e.Total
	}
	r.Retained = 1
	if total > 0 {
		r.Retained = kept / total
	}
}

// factored is one module of a LoRA about to be written with scale 1: ΔW = B·A, in the stored orientation of its
// PEFT factors.
type factored struct {
	name         string // module path
	aName, bName string // PEFT tensor names
	loraFactors
}

// distributed keeps the leading k triplets of svd as factors with √σ on both sides (B = U_k·√S_k, A = √S_k·Vt_k),
// as mergekit-extract-lora's distribute_scale does, so that neither factor dominates when the adapter is trained
// further or combined.
func distributed(svd *spectral.SVD, k int) loraFactors {
	f, _ := truncate(svd, k, &CombineOptions{Semantics: SemanticsMergekit}) // without Clamp it cannot fail
	return f
}

// peftNames returns the PEFT tensor names of a module's factors: lora_embedding_A/B for an embedding LoRA,
// lora_A/B.weight otherwise (formats-quant.md §5.2).
func peftNames(m *Module) (a, b string) {
	if strings.HasSuffix(m.A.Name, ".lora_embedding_A") {
		return peftPrefix + m.Name + ".lora_embedding_A", peftPrefix + m.Name + ".lora_embedding_B"
	}
	return peftPrefix + m.Name + ".lora_A.weight", peftPrefix + m.Name + ".lora_B.weight"
}

// writeLoRA writes a PEFT adapter directory holding mods (sorted by name) as F32 factors with scale 1: lora_alpha
// equals r for every module, through rank_pattern/alpha_pattern where a module's rank is not the common one (the
// configuration of combinedConfig). like supplies fan_in_fan_out and the base model name. saved are full tensors
// written beside the factors, named peftPrefix + the base tensor's name, and saveModules the module paths listed as
// modules_to_save for them. dir must not be one of the inputs.
func writeLoRA(dir string, like *Adapter, inputs []string, mods []factored, saved []tensor.View, saveModules []string) error {
	for _, in := range inputs {
		if same, err := sameDir(dir, in); err != nil || same {
			if err == nil {
				err = fmt.Errorf("%s is an input's directory; write the adapter elsewhere", dir)
			}
			return err
		}
	}
	if len(mods) == 0 {
		return errors.New("no module has an update to write")
	}
	names := make([]string, len(mods))
	ranks := map[string]int{}
	var views []tensor.View
	for i, m := range mods {
		names[i] = m.name
		ranks[m.name] = m.rank
		views = append(views, f32View(m.aName, tensor.Shape{int64(m.rank), int64(m.in)}, m.a),
			f32View(m.bName, tensor.Shape{int64(m.out), int64(m.rank)}, m.b))
	}
	cfg, err := combinedConfig(like, names, ranks)
	if err != nil {
		return err
	}
	if len(saveModules) > 0 {
		var fields map[string]any
		if err := json.Unmarshal(cfg, &fields); err != nil {
			return err
		}
		fields["modules_to_save"] = saveModules
		if cfg, err = json.MarshalIndent(fields, "", "  "); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	views = append(views, saved...)
	if err := safetensors.WriteFile(filepath.Join(dir, WeightsName), views, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, ConfigName), cfg)
}

// Resize writes to dir a PEFT adapter with every module's update reduced to its best rank-k approximation (k =
// rank, or the module's own rank if smaller), with scale 1, and reports the energy each module keeps. The SVD of
// ΔW = s·B·A is taken without forming ΔW (spectral.LowRankSVD: thin QR of B and Aᵀ, SVD of the r×r core), so the
// cost is O((out+in)·r²) per module. Resizing to the adapter's own rank rewrites it exactly up to float32 rounding.
// Inputs are PEFT or MLX adapters; DoRA adapters are refused (their magnitudes normalize W + ΔW, which a rank
// change alters).
func Resize(dir string, a *Adapter, rank int) (*EnergyReport, error) {
	if rank < 1 {
		return nil, fmt.Errorf("resize: rank %d: want at least 1", rank)
	}
	if a.Format == GGUF {
		return nil, fmt.Errorf("resize: %s: GGUF adapters are not supported (resize the PEFT original)", a.Path)
	}
	mods := make([]factored, len(a.Modules))
	rep := &EnergyReport{Modules: make([]Energy, len(a.Modules))}
	err := parallel.ForEach(len(a.Modules), parallel.Workers(0), nil, func(_, i int) error {
		m := &a.Modules[i]
		if m.Magnitude != nil {
			return fmt.Errorf("resize: %s: module %s is DoRA, whose merged weight a rank change does not preserve", a.Path, m.Name)
		}
		b, err := spectral.FromView(m.B)
		if err != nil {
			return err
		}
		am, err := spectral.FromView(m.A)
		if err != nil {
			return err
		}
		svd, err := spectral.LowRankSVD(b, am, m.Scale)
		if err != nil {
			return fmt.Errorf("resize: module %s: %w", m.Name, err)
		}
		k := min(rank, len(svd.S))
		total := 0.0
		for _, s := range svd.S {
			total += s * s
		}
		aName, bName := peftNames(m)
		mods[i] = factored{m.Name, aName, bName, distributed(svd, k)}
		rep.Modules[i] = newEnergy(m.Name, m.Rank, k, svd.S, total)
		return nil
	})
	if err != nil {
		return nil, err
	}
	rep.total()
	return rep, writeLoRA(dir, a, []string{a.Path}, mods, nil, nil)
}
