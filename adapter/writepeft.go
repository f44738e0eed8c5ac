package adapter

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// HFBase is what mapping a GGUF adapter back to Hugging Face module names needs from its model: the head counts
// (to undo the rotary row order of q and k) and the model's own GGUF ↔ Hugging Face tensor names.
type HFBase struct {
	GGUFBase
	Names map[string]string // GGUF tensor name → Hugging Face tensor name
	// Model is written as base_model_name_or_path: the Hugging Face directory the base was read from, else empty.
	Model string
}

// OpenHFBase describes the model at path, a GGUF file or a Hugging Face directory. The name map is the model's
// own: the directory's tensors under convert.GGUFName, or the GGUF's under the names lathe's GGUF → HF conversion
// gives them (convert.PlanHF).
func OpenHFBase(path string) (HFBase, error) {
	b, err := OpenGGUFBase(path)
	if err != nil {
		return HFBase{}, err
	}
	hb := HFBase{GGUFBase: b, Names: map[string]string{}}
	st, err := os.Stat(path)
	if err != nil {
		return HFBase{}, err
	}
	if st.IsDir() {
		m, err := convert.OpenHF(path)
		if err != nil {
			return HFBase{}, err
		}
		defer m.Close()
		for _, t := range m.Weights.Tensors() {
			if g, err := convert.GGUFName(t.Name, b.Blocks); err == nil {
				hb.Names[g] = t.Name
			}
		}
		hb.Model = path
		return hb, nil
	}
	f, err := gguf.Open(path)
	if err != nil {
		return HFBase{}, err
	}
	defer f.Close()
	plan, err := convert.PlanHF(f, convert.HFOptions{})
	if err != nil {
		return HFBase{}, err
	}
	for _, e := range plan {
		if e.Source != "" {
			hb.Names[e.Source] = e.Name
		}
	}
	return hb, nil
}

// hfModules returns the adapter's modules in Hugging Face terms (PEFT's module paths and orientation): a PEFT or
// MLX adapter's as they are; a GGUF adapter's renamed through base, with the rows of B of the q and k projections
// put back in Hugging Face's rotary order (convert.PermuteRotary, inverse) and token_embd's factors in PEFT's
// embedding layout (lora_embedding_A = lora_aᵀ, lora_embedding_B = lora_b). Reordered factors are copies.
func (a *Adapter) hfModules(base *HFBase) ([]Module, error) {
	mods := make([]Module, len(a.Modules))
	copy(mods, a.Modules)
	if a.Format != GGUF {
		return mods, nil
	}
	if base == nil {
		return nil, fmt.Errorf("%s: a GGUF adapter names GGUF tensors; the base model is needed to map them to Hugging Face modules", a.Path)
	}
	for i := range mods {
		m := &mods[i]
		hf, ok := base.Names[m.Target]
		if !ok {
			return nil, fmt.Errorf("%s: tensor %s.lora_a: the base model has no tensor %s", a.Path, m.Target, m.Target)
		}
		name, ok := strings.CutSuffix(hf, ".weight")
		if !ok {
			return nil, fmt.Errorf("%s: tensor %s: base tensor %s is not a weight", a.Path, m.Target, hf)
		}
		heads := 0
		switch {
		case strings.HasSuffix(m.Target, ".attn_q.weight"):
			heads = base.Heads
		case strings.HasSuffix(m.Target, ".attn_k.weight"):
			heads = base.HeadsKV
		}
		if heads > 0 {
			b, err := permuteRows(m.B, heads, true)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", a.Path, err)
			}
			m.B = b
		}
		if m.Layout == GGUFEmbedding {
			at, err := encodeFactor(m.A, m.A.DType, 1, true)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", a.Path, err)
			}
			m.A, m.Layout = at, Transposed
		}
		m.Name, m.Target = name, hf
	}
	return mods, nil
}

// peftAlpha is the lora_alpha that gives module m its scale in PEFT (alpha/r): its own alpha where that already
// does (so a GGUF adapter's adapter.lora.alpha comes back unchanged), else scale·r.
func peftAlpha(m *Module) float64 {
	r := float64(m.Rank)
	if m.Alpha/r == m.Scale {
		return m.Alpha
	}
	return m.Scale * r
}

// WriteAsPEFT writes the adapter as a PEFT adapter directory (formats-quant.md §5.1–5.2). A PEFT adapter is
// copied as it is (WritePEFT). A GGUF or MLX adapter's factors keep their values and type; each module gets the
// rank of its factors and a lora_alpha with alpha/r equal to its scale (a GGUF adapter's adapter.lora.alpha, or r
// when it has none, since llama.cpp then applies scale 1; mlx-lm's lora_parameters.scale·r), with rank_pattern and
// alpha_pattern entries for modules that differ from the common values. target_modules lists the full module
// paths, so PEFT adapts exactly these modules. base is needed for a GGUF adapter only (names and head counts).
func (a *Adapter) WriteAsPEFT(dir string, base *HFBase) error {
	if a.Format == PEFT {
		return a.WritePEFT(dir, nil)
	}
	mods, err := a.convertedModules(dir, base, "PEFT")
	if err != nil {
		return err
	}
	names := make([]string, len(mods))
	ranks := map[string]int{}
	var views []tensor.View
	for i := range mods {
		m := &mods[i]
		names[i], ranks[m.Name] = m.Name, m.Rank
		aName, bName := peftPrefix+m.Name+".lora_A.weight", peftPrefix+m.Name+".lora_B.weight"
		if m.Layout == Transposed {
			aName, bName = peftPrefix+m.Name+".lora_embedding_A", peftPrefix+m.Name+".lora_embedding_B"
		}
		av, bv := m.A, m.B
		av.Name, bv.Name = aName, bName
		views = append(views, av, bv)
	}
	cfg, err := combinedConfig(a, names, ranks)
	if err != nil {
		return err
	}
	var fields map[string]any
	if err := json.Unmarshal(cfg, &fields); err != nil {
		return err
	}
	// combinedConfig sets lora_alpha = r (scale 1); here lora_alpha is the alpha of the first module at the common
	// rank and alpha_pattern names each module whose alpha differs.
	common := fields["r"].(float64)
	alpha := 0.0
	for i := range mods {
		if float64(mods[i].Rank) == common {
			alpha = peftAlpha(&mods[i])
			break
		}
	}
	pattern := map[string]float64{}
	for i := range mods {
		if al := peftAlpha(&mods[i]); al != alpha {
			pattern[regexp.QuoteMeta(mods[i].Name)] = al
		}
	}
	fields["lora_alpha"], fields["alpha_pattern"], fields["task_type"] = alpha, pattern, "CAUSAL_LM"
	if base != nil && base.Model != "" {
		fields["base_model_name_or_path"] = base.Model
	}
	if cfg, err = json.MarshalIndent(fields, "", "  "); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := safetensors.WriteFile(filepath.Join(dir, WeightsName), views, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, ConfigName), cfg)
}

// convertedModules checks that the adapter can be written as format into dir and returns its modules in Hugging
// Face terms (hfModules). dir must not be the directory the adapter was read from: mlx-lm and PEFT both name their
// configuration adapter_config.json, so the output would overwrite its own input.
func (a *Adapter) convertedModules(dir string, base *HFBase, format string) ([]Module, error) {
	own := a.Path // a PEFT directory; a GGUF file or an mlx-lm weights file otherwise
	if a.Format != PEFT {
		own = filepath.Dir(a.Path)
	}
	if same, err := sameDir(dir, own); err != nil || same {
		if err == nil {
			err = fmt.Errorf("%s is the input adapter's directory; write the new adapter elsewhere", dir)
		}
		return nil, err
	}
	if len(a.Extra) > 0 {
		return nil, fmt.Errorf("%s: tensors that are not LoRA factors have no place in a %s adapter: %s", a.Path, format, strings.Join(a.Extra, ", "))
	}
	mods, err := a.hfModules(base)
	if err == nil && len(mods) == 0 {
		err = fmt.Errorf("%s: no LoRA modules to write", a.Path)
	}
	return mods, err
}
