// Package audit runs spectral analysis over whole models and adapters: every weight matrix of a model, the deltas
// of a fine-tune against its base, or the updates of a LoRA adapter with or without its base (with intruder
// dimensions and the merged weights' metrics when the base is known); the policy checks of `lathe check` built on
// them; and intruder mitigation written as a new adapter. The numbers come from package spectral; this package
// opens the files, pairs tensors and modules by name, and runs layers in parallel.
package audit

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"

	"github.com/lathe-ml/lathe/internal/parallel"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/spectral"
	"github.com/lathe-ml/lathe/tensor"
)

// Options control an analysis.
type Options struct {
	Spectral  spectral.Options
	Intruders spectral.IntruderOptions
	// Layers are analyzed when their smaller dimension M is at least MinEvals and at most MaxEvals and their larger
	// dimension at most MaxN: WeightWatcher's layer filter (layer_supported) with its defaults 10, 15000, 50000.
	// Zero disables a bound.
	MinEvals, MaxEvals, MaxN int
	// Include selects tensors (models) or modules (adapters) by name; nil selects all.
	Include func(name string) bool
	// Workers is the number of layers analyzed at once; 0 means GOMAXPROCS.
	Workers  int
	Progress func(done, total int)
}

// DefaultOptions are WeightWatcher's defaults with the paper's intruder settings.
func DefaultOptions() Options {
	return Options{Intruders: spectral.DefaultIntruderOptions(), MinEvals: 10, MaxEvals: 15000, MaxN: 50000}
}

// Kinds of report.
const (
	KindModel   = "model"   // the weights of one model
	KindDelta   = "delta"   // fine-tuned minus base, tensor by tensor
	KindAdapter = "adapter" // the updates ΔW of a LoRA adapter
)

// Layer is one analyzed matrix.
type Layer struct {
	Name  string `json:"name"`  // tensor name, or the adapter module's target tensor
	Rows  int    `json:"rows"`  // of the weight (and of ΔW)
	Cols  int    `json:"cols"`  //
	DType string `json:"dtype"` // of the stored tensor (of lora_B for adapters)
	// Skipped gives the reason a layer was not analyzed; the other fields are then empty.
	Skipped string `json:"skipped,omitempty"`
	// Metrics describe W for a model, ΔW for a delta or an adapter.
	Metrics *spectral.Metrics `json:"metrics,omitempty"`
	// Tuned describes the fine-tuned weight (delta) or the merged W + ΔW (adapter with base).
	Tuned *spectral.Metrics `json:"tuned,omitempty"`
	// Intruders compares the tuned weight's singular vectors with the base's.
	Intruders *spectral.Intruders `json:"intruders,omitempty"`
	// DeltaNormRatio is ‖ΔW‖₂/‖W‖₂, the update's spectral norm relative to the base weight's.
	DeltaNormRatio float64 `json:"delta_norm_ratio,omitempty"`
	// Rank and Scale of an adapter module.
	Rank  int     `json:"rank,omitempty"`
	Scale float64 `json:"scale,omitempty"`
}

// Report is the analysis of one model, delta or adapter.
type Report struct {
	Kind    string           `json:"kind"`
	Path    string           `json:"path"`
	Base    string           `json:"base,omitempty"`
	Layers  []Layer          `json:"layers"`
	Summary spectral.Summary `json:"summary"`
	// TunedSummary summarizes the Tuned metrics, when there are any.
	TunedSummary *spectral.Summary `json:"tuned_summary,omitempty"`
	// Intruders totals the paper's (left) intruder count over all layers, when a base is known.
	Intruders int `json:"intruders"`
}

// Spectrum analyzes path: a LoRA adapter (a PEFT directory or a GGUF adapter), with its base model if base is not
// empty; otherwise a model, against base as a fine-tune if base is given.
func Spectrum(path, base string, opts Options) (*Report, error) {
	isAdapter, err := IsAdapter(path)
	if err != nil {
		return nil, err
	}
	switch {
	case isAdapter:
		return Adapter(path, base, opts)
	case base != "":
		return Delta(path, base, opts)
	}
	return Model(path, opts)
}

// IsAdapter reports whether path is a PEFT adapter directory or a GGUF file whose general.type is "adapter".
func IsAdapter(path string) (bool, error) {
	st, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	if st.IsDir() {
		_, err := os.Stat(filepath.Join(path, adapter.ConfigName))
		return err == nil, nil
	}
	m, err := modelfile.Open(path)
	if err != nil {
		return false, err
	}
	defer m.Close()
	if m.GGUF == nil {
		return false, nil
	}
	t, err := m.GGUF.Metadata.String("general.type")
	return err == nil && t == "adapter", nil
}

// skip applies WeightWatcher's layer filter.
func (o *Options) skip(rows, cols int) string {
	n, m := max(rows, cols), min(rows, cols)
	switch {
	case o.MinEvals > 0 && m < o.MinEvals:
		return fmt.Sprintf("smaller dimension %d below min_evals %d", m, o.MinEvals)
	case o.MaxEvals > 0 && m > o.MaxEvals:
		return fmt.Sprintf("smaller dimension %d above max_evals %d", m, o.MaxEvals)
	case o.MaxN > 0 && n > o.MaxN:
		return fmt.Sprintf("larger dimension %d above max_N %d", n, o.MaxN)
	}
	return ""
}

// layerOptions gives each layer its own randomization seed derived from its name, so that results do not depend
// on which worker runs which layer.
func (o *Options) layerOptions(name string) spectral.Options {
	s := o.Spectral
	h := fnv.New64a()
	h.Write([]byte(name))
	s.Seed ^= h.Sum64()
	return s
}

// matrixShape returns the rows and columns a tensor analyzes as (spectral.FromView's flattening), or ok = false
// for tensors that are not weight matrices: fewer than two dimensions, or not a float or block type.
func matrixShape(t modelfile.Tensor) (rows, cols int, ok bool) {
	if len(t.Shape) < 2 || !(t.DType.IsFloat() || t.DType.IsQuantized()) {
		return 0, 0, false
	}
	n, err := t.Shape.Elements()
	if err != nil || t.Shape[0] == 0 {
		return 0, 0, false
	}
	return int(t.Shape[0]), int(n / t.Shape[0]), true
}

// Model analyzes every weight matrix of a model (any format modelfile opens).
func Model(path string, opts Options) (*Report, error) {
	m, err := modelfile.Open(path)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	rep := &Report{Kind: KindModel, Path: path}
	var todo []modelfile.Tensor
	for _, t := range m.Tensors {
		rows, cols, ok := matrixShape(t)
		if !ok || opts.Include != nil && !opts.Include(t.Name) {
			continue
		}
		rep.Layers = append(rep.Layers, Layer{Name: t.Name, Rows: rows, Cols: cols, DType: t.DType.String()})
		todo = append(todo, t)
	}
	err = forEach(len(todo), opts, func(i int) error {
		l := &rep.Layers[i]
		if l.Skipped = opts.skip(l.Rows, l.Cols); l.Skipped != "" {
			return nil
		}
		w, err := loadMatrix(m, todo[i].Name)
		if err != nil {
			return err
		}
		l.Metrics, l.Skipped, err = analyze(w, opts.layerOptions(l.Name), "all zeros")
		return err
	})
	if err != nil {
		return nil, err
	}
	rep.summarize(opts)
	return rep, nil
}

// Delta analyzes a fine-tuned model against its base, tensor by tensor (WeightWatcher's base_model=): ΔW = W_t − W,
// the tuned weight's own metrics, the intruder dimensions of W_t against W and ‖ΔW‖₂/‖W‖₂. Tensors are paired by
// name; both models must name them alike (both Hugging Face, or both GGUF).
func Delta(tunedPath, basePath string, opts Options) (*Report, error) {
	tuned, err := modelfile.Open(tunedPath)
	if err != nil {
		return nil, err
	}
	defer tuned.Close()
	base, err := modelfile.Open(basePath)
	if err != nil {
		return nil, err
	}
	defer base.Close()
	rep := &Report{Kind: KindDelta, Path: tunedPath, Base: basePath}
	for _, t := range tuned.Tensors {
		rows, cols, ok := matrixShape(t)
		if !ok || opts.Include != nil && !opts.Include(t.Name) {
			continue
		}
		l := Layer{Name: t.Name, Rows: rows, Cols: cols, DType: t.DType.String()}
		switch bt, found := base.Lookup(t.Name); {
		case !found:
			l.Skipped = "not in the base model"
		case !bt.Shape.Equal(t.Shape):
			l.Skipped = fmt.Sprintf("shape %v, base %v", t.Shape, bt.Shape)
		}
		rep.Layers = append(rep.Layers, l)
	}
	err = forEach(len(rep.Layers), opts, func(i int) error {
		l := &rep.Layers[i]
		if l.Skipped != "" {
			return nil
		}
		if l.Skipped = opts.skip(l.Rows, l.Cols); l.Skipped != "" {
			return nil
		}
		wt, err := loadMatrix(tuned, l.Name)
		if err != nil {
			return err
		}
		w, err := loadMatrix(base, l.Name)
		if err != nil {
			return fmt.Errorf("base: %w", err)
		}
		d, err := wt.Sub(w)
		if err != nil {
			return err
		}
		lo := opts.layerOptions(l.Name)
		if l.Metrics, l.Skipped, err = analyze(d, lo, "unchanged from the base"); err != nil || l.Skipped != "" {
			return err
		}
		return compareToBase(l, w, wt, l.Metrics.SVMax, lo, opts.Intruders)
	})
	if err != nil {
		return nil, err
	}
	rep.summarize(opts)
	return rep, nil
}

// openAdapter opens an adapter and, when basePath is not empty, its base model.
func openAdapter(path, basePath string) (*adapter.Adapter, *modelfile.Model, error) {
	a, err := adapter.Open(path)
	if err != nil {
		return nil, nil, err
	}
	if basePath == "" {
		return a, nil, nil
	}
	base, err := modelfile.Open(basePath)
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, base, nil
}

func closeAdapter(a *adapter.Adapter, base *modelfile.Model) {
	a.Close()
	if base != nil {
		base.Close()
	}
}

// Adapter analyzes a LoRA adapter: the spectrum of each module's ΔW from its factors (never formed, unless the
// randomized ESD is asked for), and with a base model the merged weight's metrics, intruder dimensions and
// ‖ΔW‖₂/‖W‖₂. Without a base only the factors are read.
func Adapter(path, basePath string, opts Options) (*Report, error) {
	a, base, err := openAdapter(path, basePath)
	if err != nil {
		return nil, err
	}
	defer closeAdapter(a, base)
	rep := &Report{Kind: KindAdapter, Path: path, Base: basePath}
	var mods []*adapter.Module
	for i := range a.Modules {
		m := &a.Modules[i]
		if opts.Include != nil && !opts.Include(m.Target) {
			continue
		}
		rows, cols := m.Shape()
		l := Layer{Name: m.Target, Rows: rows, Cols: cols, DType: m.B.DType.String(), Rank: m.Rank, Scale: m.Scale}
		if base != nil {
			l.Skipped = baseMismatch(base, m)
		}
		rep.Layers = append(rep.Layers, l)
		mods = append(mods, m)
	}
	err = forEach(len(mods), opts, func(i int) error {
		l, m := &rep.Layers[i], mods[i]
		if l.Skipped != "" {
			return nil
		}
		if l.Skipped = opts.skip(l.Rows, l.Cols); l.Skipped != "" {
			return nil
		}
		lo := opts.layerOptions(l.Name)
		var (
			norm float64
			err  error
		)
		if l.Metrics, norm, l.Skipped, err = analyzeModule(m, lo); err != nil || l.Skipped != "" || base == nil {
			return err
		}
		w, err := loadMatrix(base, m.Target)
		if err != nil {
			return fmt.Errorf("base: %w", err)
		}
		merged, err := m.Merge(w)
		if err != nil {
			return err
		}
		return compareToBase(l, w, merged, norm, lo, opts.Intruders)
	})
	if err != nil {
		return nil, err
	}
	rep.summarize(opts)
	return rep, nil
}

// baseMismatch explains why a module cannot be applied to the base, or returns "".
func baseMismatch(base *modelfile.Model, m *adapter.Module) string {
	bt, ok := base.Lookup(m.Target)
	if !ok {
		return "target not in the base model"
	}
	rows, cols := m.Shape()
	if want := (tensor.Shape{int64(rows), int64(cols)}); !bt.Shape.Equal(want) {
		return fmt.Sprintf("update is %v, base tensor %v", want, bt.Shape)
	}
	return ""
}

// analyzeModule computes the metrics of a module's ΔW from its factors — the nonzero part of its spectrum, r values
// — and ‖ΔW‖₂. In WeightWatcher-compatible mode the metrics describe B·A without the scaling, as its peft mode
// forms it; the norm is always that of the scaled update.
func analyzeModule(m *adapter.Module, opts spectral.Options) (met *spectral.Metrics, norm float64, skip string, err error) {
	scale := m.Scale
	if opts.WWCompat {
		scale = 1
	}
	left, right, err := m.Factors()
	if err != nil {
		return nil, 0, "", err
	}
	if n := left.NonFinite() + right.NonFinite(); n > 0 {
		return nil, 0, fmt.Sprintf("%d NaN or Inf values in lora_A and lora_B", n), nil
	}
	svd, err := spectral.LowRankSVD(left, right, scale)
	if err != nil {
		return nil, 0, "", fmt.Errorf("module %s: %w", m.Name, err)
	}
	norm = svd.S[0] * math.Abs(m.Scale/scale)
	met, err = spectral.Analyze(svd.S, left.Rows, right.Cols, opts)
	if errors.Is(err, spectral.ErrZero) {
		return nil, 0, "zero update (lora_B or lora_A is all zeros)", nil
	}
	if err != nil || !opts.Randomize {
		return met, norm, "", err
	}
	d, err := spectral.Product(left, right, scale)
	if err != nil {
		return nil, 0, "", err
	}
	full, err := spectral.SingularValues(d)
	if err != nil {
		return nil, 0, "", err
	}
	met.Random, err = spectral.Randomized(d, full, opts)
	return met, norm, "", err
}

// analyze runs AnalyzeMatrix, turning a matrix without a spectrum (NaN or Inf values, all zeros) into a skip
// reason; zero says what a zero matrix means for the caller.
func analyze(w *spectral.Matrix, opts spectral.Options, zero string) (*spectral.Metrics, string, error) {
	if n := w.NonFinite(); n > 0 {
		return nil, fmt.Sprintf("%d NaN or Inf values", n), nil
	}
	met, err := spectral.AnalyzeMatrix(w, opts)
	if errors.Is(err, spectral.ErrZero) {
		return nil, zero, nil
	}
	return met, "", err
}

// compareToBase fills the tuned weight's metrics, its intruders against the base and the update's norm deltaNorm
// relative to the base's. Both full SVDs are needed for the intruders; the metrics reuse their singular values.
func compareToBase(l *Layer, w, tuned *spectral.Matrix, deltaNorm float64, opts spectral.Options, io spectral.IntruderOptions) error {
	bs, err := spectral.Decompose(w)
	if err != nil {
		return fmt.Errorf("%s: base: %w", l.Name, err)
	}
	ts, err := spectral.Decompose(tuned)
	if err != nil {
		return fmt.Errorf("%s: tuned: %w", l.Name, err)
	}
	tunedOpts := opts
	tunedOpts.Randomize = false
	if l.Tuned, err = spectral.Analyze(ts.S, tuned.Rows, tuned.Cols, tunedOpts); err != nil && !errors.Is(err, spectral.ErrZero) {
		return err
	}
	if l.Intruders, err = spectral.FindIntruders(bs, ts, io); err != nil {
		return err
	}
	if bs.S[0] > 0 {
		l.DeltaNormRatio = deltaNorm / bs.S[0]
	}
	return nil
}

// loadMatrix decodes one tensor of a model.
func loadMatrix(m *modelfile.Model, name string) (*spectral.Matrix, error) {
	v, err := m.View(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Path, err)
	}
	w, err := spectral.FromView(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Path, err)
	}
	return w, nil
}

func (r *Report) summarize(opts Options) {
	var ms, ts []*spectral.Metrics
	for _, l := range r.Layers {
		if l.Metrics != nil {
			ms = append(ms, l.Metrics)
		}
		if l.Tuned != nil {
			ts = append(ts, l.Tuned)
		}
		if l.Intruders != nil {
			r.Intruders += len(l.Intruders.Left)
		}
	}
	r.Summary = spectral.Summarize(ms, opts.Spectral)
	if len(ts) > 0 {
		s := spectral.Summarize(ts, opts.Spectral)
		r.TunedSummary = &s
	}
}

// forEach runs fn(i) for i in [0, n) on opts.Workers goroutines, stopping at the first error. Each index writes only
// its own result slot, so the report does not depend on the schedule.
func forEach(n int, opts Options, fn func(i int) error) error {
	return parallel.ForEach(n, opts.Workers, opts.Progress, func(_, i int) error { return fn(i) })
}
