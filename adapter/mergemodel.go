package adapter

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/spectral"
	"github.com/lathe-ml/lathe/tensor"
)

// MergeOptions tunes the merges.
type MergeOptions struct {
	// Scale multiplies every update (PEFT's set_scale, llama.cpp's --lora-scaled); the zero value means 1.
	Scale float64
	// Scales, when set, holds one more factor per adapter, in the order the adapters are given.
	Scales []float64
	// OutType is the type the merged tensors are written in; the zero value (tensor.Invalid) keeps each tensor's
	// own. Tensors no adapter touches keep their type and bytes whatever OutType says.
	OutType tensor.DType
	// Workers is the number of tensors merged at once; 0 means GOMAXPROCS.
	Workers int
}

// scale returns the factor on adapter i's updates.
func (o MergeOptions) scale(i int) float64 {
	s := o.Scale
	if s == 0 {
		s = 1
	}
	if o.Scales != nil {
		s *= o.Scales[i]
	}
	return s
}

func (o MergeOptions) check(n int) error {
	if o.Scales != nil && len(o.Scales) != n {
		return fmt.Errorf("%d scales for %d adapters", len(o.Scales), n)
	}
	if n == 0 {
		return errors.New("no adapter to merge")
	}
	return nil
}

// MergeSafetensors merges one adapter; see MergeAllSafetensors.
func MergeSafetensors(w io.Writer, base safetensors.Set, a *Adapter, opts MergeOptions) error {
	return MergeAllSafetensors(w, base, []*Adapter{a}, opts)
}

// MergeAllSafetensors writes base with the adapters merged in, one after the other, as a safetensors stream to w:
// same tensors, order and metadata; an adapted tensor holds W + s₁·ΔW₁, then + s₂·ΔW₂ and so on (DoRA: rescaled
// rows after its own update, §5.1 of spectral-prune-merge.md), computed in float64 and rounded once to its own dtype
// or opts.OutType; every other tensor is copied byte for byte. Adapters must be PEFT or MLX ones, whose targets are
// base tensor names.
func MergeAllSafetensors(w io.Writer, base safetensors.Set, adapters []*Adapter, opts MergeOptions) error {
	if err := opts.check(len(adapters)); err != nil {
		return err
	}
	if opts.OutType != tensor.Invalid && (!opts.OutType.IsFloat() || opts.OutType.IsQuantized()) {
		return fmt.Errorf("output type %s: a safetensors model holds plain float types", opts.OutType)
	}
	for _, a := range adapters {
		if a.Format == GGUF {
			return fmt.Errorf("%s: merging a GGUF adapter into a safetensors model is not supported (GGUF names and row order)", a.Path)
		}
	}
	mods := make([][]Module, len(adapters))
	for i, a := range adapters {
		mods[i] = a.Modules
	}
	byTarget, err := targets(adapters, mods, opts, func(name string) bool { _, ok := base.Lookup(name); return ok })
	if err != nil {
		return err
	}
	return writeSafetensors(w, base, byTarget, opts)
}

// MergeDeltasSafetensors writes base with dense updates added, as MergeAllSafetensors writes it: deltas maps base
// tensor names to ΔW, row-major in the tensor's shape, each scaled by opts.Scale.
func MergeDeltasSafetensors(w io.Writer, base safetensors.Set, deltas map[string][]float32, opts MergeOptions) error {
	if opts.OutType != tensor.Invalid && (!opts.OutType.IsFloat() || opts.OutType.IsQuantized()) {
		return fmt.Errorf("output type %s: a safetensors model holds plain float types", opts.OutType)
	}
	byTarget, err := deltaTargets(deltas, opts, func(name string) (tensor.Shape, bool) {
		t, ok := base.Lookup(name)
		return t.Shape, ok
	})
	if err != nil {
		return err
	}
	return writeSafetensors(w, base, byTarget, opts)
}

// writeSafetensors streams base to w with the updates of byTarget merged.
func writeSafetensors(w io.Writer, base safetensors.Set, byTarget map[string][]update, opts MergeOptions) error {
	infos := base.Tensors()
	for i, t := range infos {
		if byTarget[t.Name] != nil && opts.OutType != tensor.Invalid {
			infos[i].DType = opts.OutType
		}
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

// MergeGGUF merges one adapter; see MergeAllGGUF.
func MergeGGUF(w io.Writer, base *gguf.File, a *Adapter, opts MergeOptions) error {
	return MergeAllGGUF(w, base, []*Adapter{a}, opts)
}

// MergeAllGGUF writes the GGUF model base with the adapters merged in, one after the other, to w: the same metadata,
// tensors and types; adapted tensors are dequantized, merged in float64 and encoded once, to their own type or
// opts.OutType (quant.Encode for block types, so a Q8_0 tensor becomes Q8_0(deq(W) + ΔW)); the others are copied
// byte for byte. PEFT adapters are mapped to GGUF names and rotary row order by GGUFModules.
func MergeAllGGUF(w io.Writer, base *gguf.File, adapters []*Adapter, opts MergeOptions) error {
	if err := opts.check(len(adapters)); err != nil {
		return err
	}
	if len(base.Splits()) > 1 {
		return errors.New("merging into a split GGUF model is not supported; merge its splits first")
	}
	mods := make([][]Module, len(adapters))
	for i, a := range adapters {
		mods[i] = a.Modules
		if a.Format != GGUF {
			b, err := GGUFBaseOf(base.Metadata)
			if err != nil {
				return fmt.Errorf("base model: %w", err)
			}
			if mods[i], err = a.GGUFModules(b); err != nil {
				return err
			}
		}
	}
	byTarget, err := targets(adapters, mods, opts, func(name string) bool { _, ok := base.Info(name); return ok })
	if err != nil {
		return err
	}
	return writeGGUF(w, base, byTarget, opts)
}

// MergeDeltasGGUF writes the GGUF model base with dense updates added, as MergeAllGGUF writes it: deltas maps
// tensor names to ΔW, row-major in the tensor's shape, each scaled by opts.Scale.
func MergeDeltasGGUF(w io.Writer, base *gguf.File, deltas map[string][]float32, opts MergeOptions) error {
	if len(base.Splits()) > 1 {
		return errors.New("merging into a split GGUF model is not supported; merge its splits first")
	}
	byTarget, err := deltaTargets(deltas, opts, func(name string) (tensor.Shape, bool) {
		t, ok := base.Info(name)
		return t.Shape, ok
	})
	if err != nil {
		return err
	}
	return writeGGUF(w, base, byTarget, opts)
}

// deltaTargets checks dense updates against the base's tensors and indexes them as updates.
func deltaTargets(deltas map[string][]float32, opts MergeOptions, shape func(string) (tensor.Shape, bool)) (map[string][]update, error) {
	if len(deltas) == 0 {
		return nil, errors.New("no update to merge")
	}
	by := map[string][]update{}
	for _, name := range slices.Sorted(maps.Keys(deltas)) {
		s, ok := shape(name)
		if !ok {
			return nil, fmt.Errorf("updated tensor %q is not in the base model", name)
		}
		if n, err := s.Elements(); err != nil || n != int64(len(deltas[name])) {
			return nil, fmt.Errorf("tensor %q: an update of %d values for shape %v", name, len(deltas[name]), s)
		}
		by[name] = []update{{delta: deltas[name], scale: opts.scale(0)}}
	}
	return by, nil
}

// writeGGUF streams base to w with the updates of byTarget merged.
func writeGGUF(w io.Writer, base *gguf.File, byTarget map[string][]update, opts MergeOptions) error {
	infos := base.Tensors()
	decls := make([]gguf.TensorInfo, len(infos))
	names := make([]string, len(infos))
	for i, t := range infos {
		decls[i] = gguf.TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape, Dims: t.Dims}
		names[i] = t.Name
		if byTarget[t.Name] == nil {
			continue
		}
		if opts.OutType != tensor.Invalid {
			decls[i].DType = opts.OutType
		}
		if err := canWrite(t.Name, decls[i].DType, t.Shape); err != nil {
			return err
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

// canWrite checks that a merged tensor of the given shape can be encoded in dt: a float type, or a block type that
// quant encodes and whose blocks tile the rows (ggml quantizes row by row).
func canWrite(name string, dt tensor.DType, shape tensor.Shape) error {
	if !dt.IsQuantized() {
		if !dt.IsFloat() {
			return fmt.Errorf("tensor %q: cannot write a merged weight as %s", name, dt)
		}
		return nil
	}
	if !quant.CanEncode(dt) {
		return fmt.Errorf("tensor %q: lathe cannot encode %s after merging", name, dt)
	}
	if row := shape[len(shape)-1]; row%int64(dt.BlockSize()) != 0 {
		return fmt.Errorf("tensor %q: rows of %d values do not split into %s blocks of %d", name, row, dt, dt.BlockSize())
	}
	return nil
}

// savedTensors returns the full tensors an adapter replaces base tensors with (PEFT's modules_to_save copies, named
// "base_model.model." + the base tensor's name, formats-quant.md §5.2), keyed by base tensor name, and fails on any
// other tensor that is not a LoRA factor (lora_B.bias, copies of tensors the base lacks), which a merge would
// otherwise drop silently. GGUF adapters' "_norm.weight" tensors are skipped, as llama.cpp's loader skips them.
func savedTensors(a *Adapter, has func(string) bool) (map[string]tensor.View, error) {
	saved := map[string]tensor.View{}
	var extra []string
	for _, name := range a.Extra {
		if a.Format == GGUF && strings.HasSuffix(name, "_norm.weight") {
			continue
		}
		if target, ok := strings.CutPrefix(name, peftPrefix); ok && a.Format == PEFT && has(target) {
			v, err := a.Tensor(name)
			if err != nil {
				return nil, err
			}
			saved[target] = v
			continue
		}
		extra = append(extra, name)
	}
	if len(extra) > 0 {
		return nil, fmt.Errorf("%s: merging tensors other than LoRA factors and copies of base tensors is not supported: %s", a.Path, strings.Join(extra, ", "))
	}
	return saved, nil
}

// update is one adapter's module with the factor the merge applies to it, or a full copy that replaces the tensor.
type update struct {
	m       *Module
	scale   float64
	replace *tensor.View
	delta   []float32 // a dense ΔW (MergeDeltas*), scaled by scale
}

// targets indexes the updates of every adapter by target, in adapter order, and checks that each target exists in
// the base and that no adapter updates one tensor twice. mods[i] are adapter i's modules, named as in the base.
func targets(adapters []*Adapter, mods [][]Module, opts MergeOptions, has func(string) bool) (map[string][]update, error) {
	by := map[string][]update{}
	for i, a := range adapters {
		var missing []string
		seen := map[string]bool{}
		for j := range mods[i] {
			m := &mods[i][j]
			if !has(m.Target) {
				missing = append(missing, m.Target)
				continue
			}
			if seen[m.Target] {
				return nil, fmt.Errorf("%s: two modules update tensor %q", a.Path, m.Target)
			}
			seen[m.Target] = true
			by[m.Target] = append(by[m.Target], update{m: m, scale: opts.scale(i)})
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			return nil, fmt.Errorf("%s: %d adapted tensors are not in the base model (wrong base?): %s", a.Path, len(missing), strings.Join(missing, ", "))
		}
		saved, err := savedTensors(a, has)
		if err != nil {
			return nil, err
		}
		// A copy replaces the tensor before the adapter's own update of it, if any.
		for target, v := range saved {
			by[target] = append(by[target], update{replace: &v})
			if n := len(by[target]); seen[target] {
				by[target][n-2], by[target][n-1] = by[target][n-1], by[target][n-2]
			}
		}
	}
	return by, nil
}

// stream produces the tensors in order: untouched ones as their stored bytes, adapted ones merged on up to
// opts.Workers goroutines. At most Workers+1 tensors are in flight, so memory stays bounded by a few tensors.
func stream(names []string, opts MergeOptions, view func(string) (tensor.View, error), by map[string][]update,
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
					v.Data, err = mergeUpdates(v, by[name], opts.OutType)
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

// mergeUpdates returns v with the updates merged in order, encoded in out (v's own type if Invalid).
func mergeUpdates(v tensor.View, ups []update, out tensor.DType) ([]byte, error) {
	w, err := spectral.FromView(asMatrix(v))
	if err != nil {
		return nil, err
	}
	for _, u := range ups {
		if u.replace != nil {
			if !u.replace.Shape.Equal(v.Shape) {
				return nil, fmt.Errorf("the adapter's copy %q is %v, the base tensor %v", u.replace.Name, u.replace.Shape, v.Shape)
			}
			if w, err = spectral.FromView(asMatrix(*u.replace)); err != nil {
				return nil, err
			}
			continue
		}
		if u.delta != nil {
			for i, d := range u.delta {
				w.Data[i] += u.scale * float64(d)
			}
			continue
		}
		scaled := *u.m
		scaled.Scale *= u.scale
		if w, err = scaled.Merge(w); err != nil {
			return nil, err
		}
	}
	f := make([]float32, len(w.Data))
	for i, x := range w.Data {
		f[i] = float32(x)
	}
	if out == tensor.Invalid {
		out = v.DType
	}
	n, err := v.Shape.Bytes(out)
	if err != nil {
		return nil, err
	}
	data := make([]byte, n)
	if out.IsQuantized() {
		err = quant.Encode(out, data, f, int(v.Shape[len(v.Shape)-1]), nil)
	} else {
		err = tensor.FromFloat32(data, f, out)
	}
	return data, err
}
