package adapter

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/spectral"
	"github.com/lathe-ml/lathe/tensor"
)

// MergeOptions tunes MergeSafetensors and MergeGGUF.
type MergeOptions struct {
	// Scale multiplies every update (PEFT's set_scale, llama.cpp's --lora-scaled); the zero value means 1.
	Scale float64
	// Workers is the number of tensors merged at once; 0 means GOMAXPROCS.
	Workers int
}

func (o MergeOptions) scale() float64 {
	if o.Scale == 0 {
		return 1
	}
	return o.Scale
}

// MergeSafetensors writes base with the adapter merged in, as a safetensors stream to w: same tensors, order,
// dtypes and metadata; the adapted tensors hold W + s·ΔW (DoRA: rescaled rows, §5.1 of spectral-prune-merge.md)
// rounded to their own dtype, every other tensor is copied byte for byte. The adapter must be a PEFT one whose
// targets are base tensor names (PEFT or MLX).
func MergeSafetensors(w io.Writer, base safetensors.Set, a *Adapter, opts MergeOptions) error {
	if a.Format == GGUF {
		return fmt.Errorf("%s: merging a GGUF adapter into a safetensors model is not supported (GGUF names and row order)", a.Path)
	}
	if err := refuseExtra(a); err != nil {
		return err
	}
	infos := base.Tensors()
	byTarget, err := targets(a.Modules, func(name string) bool { _, ok := base.Lookup(name); return ok })
	if err != nil {
		return fmt.Errorf("%s: %w", a.Path, err)
	}
	sw, err := safetensors.NewWriter(w, infos, base.Metadata(), safetensors.KeepOrder())
	if err != nil {
		return err
	}
	names := make([]string, len(infos))
	for i, t := range sw.Tensors() {
		names[i] = t.Name
	}
	err = stream(names, opts, base.Tensor, byTarget, sw.WriteTensor)
	if err != nil {
		return err
	}
	return sw.Close()
}

// MergeGGUF writes the GGUF model base with the adapter merged in to w: the same metadata, tensors and types;
// adapted tensors are dequantized, merged and encoded back to their own type (quant.Encode for block types), the
// others are copied byte for byte. A PEFT adapter is mapped to GGUF names and rotary row order by GGUFModules.
func MergeGGUF(w io.Writer, base *gguf.File, a *Adapter, opts MergeOptions) error {
	if err := refuseExtra(a); err != nil {
		return err
	}
	mods := a.Modules
	if a.Format != GGUF {
		b, err := GGUFBaseOf(base.Metadata)
		if err != nil {
			return fmt.Errorf("base model: %w", err)
		}
		if mods, err = a.GGUFModules(b); err != nil {
			return err
		}
	}
	infos := base.Tensors()
	if len(base.Splits()) > 1 {
		return errors.New("merging into a split GGUF model is not supported; merge its splits first")
	}
	byTarget, err := targets(mods, func(name string) bool { _, ok := base.Info(name); return ok })
	if err != nil {
		return fmt.Errorf("%s: %w", a.Path, err)
	}
	decls := make([]gguf.TensorInfo, len(infos))
	names := make([]string, len(infos))
	for i, t := range infos {
		decls[i] = gguf.TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape, Dims: t.Dims}
		names[i] = t.Name
		if m := byTarget[t.Name]; m != nil && t.DType.IsQuantized() && !quant.CanEncode(t.DType) {
			return fmt.Errorf("tensor %q: lathe cannot re-encode %s after merging", t.Name, t.DType)
		}
	}
	gw, err := gguf.NewWriter(w, base.Metadata, decls)
	if err != nil {
		return err
	}
	if err := stream(names, opts, base.Tensor, byTarget, gw.WriteTensor); err != nil {
		gw.Abort()
		return err
	}
	return gw.Close()
}

// refuseExtra fails on adapter tensors that are not LoRA factors (modules_to_save copies, lora_B.bias), which a
// merge would otherwise drop silently. GGUF adapters' "_norm.weight" tensors are skipped, as llama.cpp's loader
// skips them.
func refuseExtra(a *Adapter) error {
	var extra []string
	for _, name := range a.Extra {
		if a.Format == GGUF && strings.HasSuffix(name, "_norm.weight") {
			continue
		}
		extra = append(extra, name)
	}
	if len(extra) > 0 {
		return fmt.Errorf("%s: merging tensors other than LoRA factors is not supported: %s", a.Path, strings.Join(extra, ", "))
	}
	return nil
}

// targets indexes modules by target and checks that each exists in the base.
func targets(mods []Module, has func(string) bool) (map[string]*Module, error) {
	by := make(map[string]*Module, len(mods))
	var missing []string
	for i := range mods {
		m := &mods[i]
		if !has(m.Target) {
			missing = append(missing, m.Target)
			continue
		}
		if by[m.Target] != nil {
			return nil, fmt.Errorf("two modules update tensor %q", m.Target)
		}
		by[m.Target] = m
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, fmt.Errorf("%d adapted tensors are not in the base model (wrong base?): %s", len(missing), strings.Join(missing, ", "))
	}
	return by, nil
}

// stream produces the tensors in order: untouched ones as their stored bytes, adapted ones merged on up to
// opts.Workers goroutines. At most Workers+1 tensors are in flight, so memory stays bounded by a few tensors.
func stream(names []string, opts MergeOptions, view func(string) (tensor.View, error), by map[string]*Module,
	write func(name string, data []byte) error) error {
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	type result struct {
		data []byte
		err  error
	}
	results := make([]chan result, len(names))
	for i := range results {
		results[i] = make(chan result, 1)
	}
	slots := make(chan struct{}, workers+1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for i, name := range names {
			select {
			case slots <- struct{}{}:
			case <-done:
				return
			}
			go func() {
				v, err := view(name)
				if err == nil && by[name] != nil {
					v.Data, err = mergeTensor(v, by[name], opts.scale())
				}
				results[i] <- result{v.Data, err}
			}()
		}
	}()
	for i, name := range names {
		r := <-results[i]
		if r.err != nil {
			return fmt.Errorf("tensor %q: %w", name, r.err)
		}
		if err := write(name, r.data); err != nil {
			return err
		}
		<-slots
	}
	return nil
}

// mergeTensor returns v merged with m and encoded in v's type.
func mergeTensor(v tensor.View, m *Module, scale float64) ([]byte, error) {
	w, err := spectral.FromView(v)
	if err != nil {
		return nil, err
	}
	scaled := *m
	scaled.Scale *= scale
	merged, err := scaled.Merge(w)
	if err != nil {
		return nil, err
	}
	f := make([]float32, len(merged.Data))
	for i, x := range merged.Data {
		f[i] = float32(x)
	}
	out := make([]byte, len(v.Data))
	if v.DType.IsQuantized() {
		err = quant.Encode(v.DType, out, f, int(v.Shape[len(v.Shape)-1]), nil)
	} else {
		err = tensor.FromFloat32(out, f, v.DType)
	}
	return out, err
}
