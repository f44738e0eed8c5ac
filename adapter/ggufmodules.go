package adapter

import (
	"fmt"
	"os"
	"strings"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/tensor"
)

// GGUFBase is what applying a PEFT adapter to a GGUF model needs to know about that model: the architecture (for
// general.architecture of a GGUF adapter), the block count (to map layer names) and the head counts (for the rotary
// row order of the q and k projections).
type GGUFBase struct {
	Arch           string
	Blocks         int
	Heads, HeadsKV int
}

// GGUFBaseOf reads the base description from a GGUF model's metadata: general.architecture and the
// <arch>.block_count, <arch>.attention.head_count and head_count_kv keys (head_count_kv defaults to head_count, as
// in llama.cpp's llm_load_hparams).
func GGUFBaseOf(md *gguf.Metadata) (GGUFBase, error) {
	arch, err := md.String("general.architecture")
	if err != nil {
		return GGUFBase{}, err
	}
	b := GGUFBase{Arch: arch}
	ints := []struct {
		key string
		dst *int
	}{{arch + ".block_count", &b.Blocks}, {arch + ".attention.head_count", &b.Heads}}
	for _, k := range ints {
		v, err := md.Int(k.key)
		if err != nil {
			return GGUFBase{}, err
		}
		if v <= 0 || v > 1<<20 {
			return GGUFBase{}, fmt.Errorf("key %s = %d: want a positive count", k.key, v)
		}
		*k.dst = int(v)
	}
	b.HeadsKV = b.Heads
	if _, ok := md.Get(arch + ".attention.head_count_kv"); ok {
		v, err := md.Int(arch + ".attention.head_count_kv")
		if err != nil {
			return GGUFBase{}, err
		}
		if v <= 0 || v > int64(b.Heads) {
			return GGUFBase{}, fmt.Errorf("key %s.attention.head_count_kv = %d: want 1…%d", arch, v, b.Heads)
		}
		b.HeadsKV = int(v)
	}
	return b, nil
}

// OpenGGUFBase describes the model at path, a GGUF file or a Hugging Face model directory; for the latter the
// metadata is the header lathe's converter would write for it.
func OpenGGUFBase(path string) (GGUFBase, error) {
	st, err := os.Stat(path)
	if err != nil {
		return GGUFBase{}, err
	}
	if st.IsDir() {
		m, err := convert.OpenHF(path)
		if err != nil {
			return GGUFBase{}, err
		}
		defer m.Close()
		h, err := convert.PlanHeader(m, convert.GGUFOptions{})
		if err != nil {
			return GGUFBase{}, err
		}
		b, err := GGUFBaseOf(h.Metadata)
		if err != nil {
			return GGUFBase{}, fmt.Errorf("%s: %w", path, err)
		}
		return b, nil
	}
	f, err := gguf.Open(path)
	if err != nil {
		return GGUFBase{}, err
	}
	defer f.Close()
	b, err := GGUFBaseOf(f.Metadata)
	if err != nil {
		return GGUFBase{}, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// GGUFModules returns the adapter's modules as they apply to a GGUF model: a GGUF adapter's as they are; a PEFT
// or MLX adapter's with targets renamed to GGUF tensor names (convert.GGUFName) and, for the q and k projections, the rows
// of B and of a DoRA magnitude reordered as convert_hf_to_gguf.py reorders the base rows (convert.PermuteRotary), so
// that ΔW lines up with the permuted base weight. Permuted factors are copies; the others still view the file.
func (a *Adapter) GGUFModules(base GGUFBase) ([]Module, error) {
	mods := make([]Module, len(a.Modules))
	copy(mods, a.Modules)
	if a.Format == GGUF {
		return mods, nil
	}
	if base.Arch != "llama" {
		return nil, fmt.Errorf("%s: mapping PEFT module names to GGUF architecture %q is not supported (llama only)", a.Path, base.Arch)
	}
	for i := range mods {
		m := &mods[i]
		name, err := convert.GGUFName(m.Target, base.Blocks)
		if err != nil {
			return nil, fmt.Errorf("%s: module %s: %w", a.Path, m.Name, err)
		}
		m.Target = name
		heads := 0
		switch {
		case strings.HasSuffix(name, ".attn_q.weight"):
			heads = base.Heads
		case strings.HasSuffix(name, ".attn_k.weight"):
			heads = base.HeadsKV
		}
		if heads == 0 {
			continue
		}
		if m.Layout != Linear {
			return nil, fmt.Errorf("%s: module %s: a fan_in_fan_out q/k projection cannot be mapped to GGUF", a.Path, m.Name)
		}
		if m.B, err = permuteRows(m.B, heads, false); err != nil {
			return nil, fmt.Errorf("%s: module %s: %w", a.Path, m.Name, err)
		}
		if m.Magnitude != nil {
			v, err := permuteRows(*m.Magnitude, heads, false)
			if err != nil {
				return nil, fmt.Errorf("%s: module %s: %w", a.Path, m.Name, err)
			}
			m.Magnitude = &v
		}
	}
	return mods, nil
}

// permuteRows returns a copy of v (rows outermost) in GGUF's rotary row order for heads heads, or, with toHF, from
// GGUF's order back to Hugging Face's.
func permuteRows(v tensor.View, heads int, toHF bool) (tensor.View, error) {
	rows := int(v.Shape[0])
	if rows%(2*heads) != 0 {
		return tensor.View{}, fmt.Errorf("tensor %q: %d rows are not %d heads of rotary pairs", v.Name, rows, heads)
	}
	out := v
	out.Data = make([]byte, len(v.Data))
	convert.PermuteRotary(out.Data, v.Data, heads, len(v.Data)/rows, !toHF)
	return out, nil
}
