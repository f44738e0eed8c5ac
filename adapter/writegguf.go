package adapter

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/tensor"
)

// GGUFOptions tunes WriteGGUF.
type GGUFOptions struct {
	// Type of the factors: F32 (also the zero value), F16 or BF16.
	Type tensor.DType
	// Name is general.name; empty derives it from the adapter's directory name, as convert_lora_to_gguf.py does.
	Name string
}

// WriteGGUF writes the adapter as a llama.cpp LoRA adapter (formats-quant.md §1.4) for a model of base: the keys
// general.architecture, general.type=adapter, adapter.type=lora, general.name, adapter.lora.alpha (lora_alpha) and
// general.quantization_version, as convert_lora_to_gguf.py writes them; tensors "<GGUF base tensor>.lora_a" and
// ".lora_b" in the adapter file's order, with B's rows of q and k projections in GGUF's rotary order.
//
// llama.cpp scales every tensor by alpha/rank with the one stored alpha, so where the adapter's own scale differs
// (rsLoRA's α/√r, alpha_pattern, a rank_pattern rank that differs from the stored rank) the ratio is baked into
// lora_b, and llama.cpp then applies exactly the update PEFT would (convert_lora_to_gguf.py ignores those). DoRA
// and fan_in_fan_out layers have no GGUF adapter form, and tensors other than LoRA factors are refused, as
// llama.cpp's converter refuses them.
func (a *Adapter) WriteGGUF(w io.Writer, base GGUFBase, opts GGUFOptions) error {
	if a.Format == GGUF {
		return fmt.Errorf("%s: already a GGUF adapter", a.Path)
	}
	typ := opts.Type
	switch typ {
	case tensor.Invalid:
		typ = tensor.F32
	case tensor.F32, tensor.F16, tensor.BF16:
	default:
		return fmt.Errorf("GGUF adapter type %s: want f32, f16 or bf16 (llama.cpp rejects quantized adapters)", typ)
	}
	if len(a.Extra) > 0 {
		return fmt.Errorf("%s: tensors that are not LoRA factors have no place in a GGUF adapter: %s", a.Path, strings.Join(a.Extra, ", "))
	}
	mods, err := a.GGUFModules(base)
	if err != nil {
		return err
	}
	alpha := a.Config.LoraAlpha
	byTensor := map[string]struct {
		m    *Module
		part string
	}{}
	for i := range mods {
		m := &mods[i]
		if m.Magnitude != nil {
			return fmt.Errorf("%s: module %s is DoRA, which a GGUF adapter cannot express; merge it into the model instead", a.Path, m.Name)
		}
		if m.Layout == Transposed && !strings.HasPrefix(m.Target, "token_embd.") {
			return fmt.Errorf("%s: module %s: fan_in_fan_out layers cannot be written as a GGUF adapter", a.Path, m.Name)
		}
		orig := a.Modules[i]
		byTensor[orig.A.Name] = struct {
			m    *Module
			part string
		}{m, "a"}
		byTensor[orig.B.Name] = struct {
			m    *Module
			part string
		}{m, "b"}
	}
	name := opts.Name
	if name == "" {
		name = convert.Title(filepath.Base(filepath.Clean(a.Path)))
	}
	md := &gguf.Metadata{}
	md.Set("general.architecture", gguf.ValueOf(base.Arch))
	md.Set(keyGeneralType, gguf.ValueOf("adapter"))
	md.Set(keyAdapterType, gguf.ValueOf("lora"))
	md.Set("general.name", gguf.ValueOf(name))
	md.Set(keyLoraAlpha, gguf.ValueOf(float32(alpha)))
	md.Set("general.quantization_version", gguf.ValueOf(uint32(2)))

	var views []tensor.View
	for _, tn := range a.names {
		e, ok := byTensor[tn]
		if !ok {
			continue // a DoRA magnitude would be here, and was refused above
		}
		m := e.m
		v := m.A
		factor := 1.0
		if e.part == "b" {
			v = m.B
			// llama.cpp's scale: alpha/rank with rank = lora_b's ne[0], or 1 when alpha is 0 (llama-adapter.cpp).
			llama := 1.0
			if alpha != 0 {
				llama = float64(float32(alpha)) / float64(m.Rank)
			}
			factor = m.Scale / llama
		}
		out, err := encodeFactor(v, typ, factor, e.part == "a" && m.Layout == Transposed)
		if err != nil {
			return fmt.Errorf("%s: %w", a.Path, err)
		}
		out.Name = m.Target + ".lora_" + e.part
		views = append(views, out)
	}
	decls := make([]gguf.TensorInfo, len(views))
	for i, v := range views {
		decls[i] = gguf.TensorInfo{Name: v.Name, DType: v.DType, Shape: v.Shape}
	}
	gw, err := gguf.NewWriter(w, md, decls)
	if err != nil {
		return err
	}
	for _, v := range views {
		if err := gw.WriteTensor(v.Name, v.Data); err != nil {
			gw.Abort()
			return err
		}
	}
	return gw.Close()
}

// encodeFactor returns v in type typ, multiplied by factor, transposed if asked (PEFT's lora_embedding_A [r, vocab]
// becomes token_embd's lora_a [vocab, r], the layout llama.cpp's loader expects). An unchanged factor of the same type
// keeps its bytes.
func encodeFactor(v tensor.View, typ tensor.DType, factor float64, transpose bool) (tensor.View, error) {
	if v.DType == typ && factor == 1 && !transpose {
		return v, nil
	}
	n, err := v.Shape.Elements()
	if err != nil {
		return tensor.View{}, fmt.Errorf("tensor %q: %w", v.Name, err)
	}
	f := make([]float32, n)
	if err := tensor.ToFloat32(f, v.Data, v.DType); err != nil {
		return tensor.View{}, fmt.Errorf("tensor %q: %w", v.Name, err)
	}
	if factor != 1 {
		for i := range f {
			f[i] = float32(float64(f[i]) * factor)
		}
	}
	shape := v.Shape
	if transpose {
		rows, cols := int(v.Shape[0]), int(v.Shape[1])
		t := make([]float32, n)
		for i := range rows {
			for j := range cols {
				t[j*rows+i] = f[i*cols+j]
			}
		}
		f, shape = t, tensor.Shape{v.Shape[1], v.Shape[0]}
	}
	bytes, err := typ.Bytes(n)
	if err != nil {
		return tensor.View{}, err
	}
	out := tensor.View{Name: v.Name, DType: typ, Shape: shape, Data: make([]byte, bytes)}
	if err := tensor.FromFloat32(out.Data, f, typ); err != nil {
		return tensor.View{}, fmt.Errorf("tensor %q: %w", v.Name, err)
	}
	return out, nil
}
