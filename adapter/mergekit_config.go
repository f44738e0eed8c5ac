package adapter

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/lathe-ml/lathe/tensor"
	"go.yaml.in/yaml/v3"
)

// MergekitConfig is a model merge described the way mergekit's YAML describes it (mergekit/config.py
// MergeConfiguration; ../shared/reference/spectral-prune-merge.md §5.3), limited to what lathe runs: the `models` or
// `slices` form, one merge method, parameters at the global, slice and model levels.
type MergekitConfig struct {
	File      string // name used in messages
	Method    string
	BaseModel string
	// Models is the `models` form: whole models. Slices is the `slices` form; exactly one of the two is set.
	Models     []MergekitSource
	Slices     []MergekitSlice
	Parameters MergekitParameters
	// DType is the type inputs are rounded to before merging, as mergekit's GatherTensors casts them; Invalid keeps
	// each input's own type. OutDType is the stored type (mergekit's out_dtype); Invalid: DType, else the base's.
	DType    tensor.DType
	OutDType tensor.DType
	// Notes lists settings that were accepted but do not change lathe's result (int8_mask, tokenizer_source: base).
	Notes []string
}

// MergekitSlice is one output slice: the same number of layers taken from every source.
type MergekitSlice struct {
	Sources    []MergekitSource
	BaseModel  string
	Parameters MergekitParameters
	line       int
}

// MergekitSource is one input model, or a range of its layers in the slices form.
type MergekitSource struct {
	Model      string
	LayerRange [2]int // [first, end) of the source's layers; zero in the models form
	Parameters MergekitParameters
	line       int
}

// MergekitParameters maps a parameter name (weight, density, t, ...) to its setting.
type MergekitParameters map[string]*Setting

// Setting is one parameter value in mergekit's ParameterSetting shapes: a scalar, a gradient (a list of numbers
// interpolated over the layers), or filters tried in order. Booleans are 1 and 0, also inside gradients: Python's
// bool is an int, so mergekit's evaluate_setting interpolates a list of them like numbers.
type Setting struct {
	Scalar   float64
	Gradient []float64
	Filters  []FilteredSetting
	line     int
}

// FilteredSetting applies Value to tensors whose name contains Filter; an empty Filter (or "*") matches every
// tensor.
type FilteredSetting struct {
	Filter string
	Value  *Setting
}

// Eval returns the value for a tensor at relative layer position t in [0, 1], as mergekit's evaluate_setting does:
// gradients interpolate linearly between neighbouring entries at t·(n−1); filters take the first match. ok is false
// when no filter matches, so that the caller falls back to the next level of the configuration.
func (s *Setting) Eval(tensorName string, t float64) (v float64, ok bool) {
	switch {
	case s.Filters != nil:
		for _, f := range s.Filters {
			if f.Filter == "" || f.Filter == "*" || strings.Contains(tensorName, f.Filter) {
				return f.Value.Eval(tensorName, t)
			}
		}
		return 0, false
	case s.Gradient != nil:
		scaled := t * float64(len(s.Gradient)-1)
		i0 := min(max(int(scaled), 0), len(s.Gradient)-1)
		i1 := min(len(s.Gradient)-1, i0+1)
		frac := scaled - float64(i0)
		return (1-frac)*s.Gradient[i0] + frac*s.Gradient[i1], true
	}
	return s.Scalar, true
}

// MergekitConfigError reports a setting lathe cannot use, with its line in the YAML file.
type MergekitConfigError struct {
	File string
	Line int
	Key  string
	Err  error
}

func (e *MergekitConfigError) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err)
	}
	return fmt.Sprintf("%s:%d: %s: %v", e.File, e.Line, e.Key, e.Err)
}

func (e *MergekitConfigError) Unwrap() error { return e.Err }

// mergekitMethod describes a merge method: its method-level parameters and per-model (tensor) parameters with
// their defaults (NaN: required), as the method classes in mergekit/merge_methods declare them.
type mergekitMethod struct {
	global, perModel map[string]float64
	needsBase        bool
	// For the generalized task arithmetic family (generalized_task_arithmetic.py, registry.py).
	taskVector bool
	consensus  bool // TIES sign election ("sum")
	sparsify   SparsifyMethod
}

var required = math.NaN()

func gtaMethod(consensus bool, sparsify SparsifyMethod, normalize, rescale float64) mergekitMethod {
	m := mergekitMethod{
		global:     map[string]float64{"int8_mask": 0, "normalize": normalize, "rescale": rescale, "lambda": 1},
		perModel:   map[string]float64{"weight": required, "density": 1},
		needsBase:  true,
		taskVector: true, consensus: consensus, sparsify: sparsify,
	}
	if sparsify == SparsifyBreadcrumbs {
		m.perModel["gamma"] = 0.01
	}
	return m
}

// mergekitMethods holds the methods lathe runs, with mergekit's defaults (registry.py STATIC_MERGE_METHODS).
var mergekitMethods = map[string]mergekitMethod{
	"linear":           {global: map[string]float64{"normalize": 1}, perModel: map[string]float64{"weight": required}},
	"slerp":            {global: map[string]float64{"t": required}, needsBase: true},
	"model_stock":      {global: map[string]float64{"filter_wise": 0}, needsBase: true},
	"passthrough":      {perModel: map[string]float64{"scale": 1}},
	"task_arithmetic":  gtaMethod(false, SparsifyNone, 0, 0),
	"ties":             gtaMethod(true, SparsifyMagnitude, 1, 0),
	"dare_ties":        gtaMethod(true, SparsifyRandom, 0, 1),
	"dare_linear":      gtaMethod(false, SparsifyRandom, 0, 1),
	"breadcrumbs":      gtaMethod(false, SparsifyBreadcrumbs, 0, 0),
	"breadcrumbs_ties": gtaMethod(true, SparsifyBreadcrumbs, 0, 0),
}

// MergekitMethods lists the merge methods lathe runs.
func MergekitMethods() []string {
	var names []string
	for name := range mergekitMethods {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// maxMergekitConfig bounds the YAML accepted: real configurations are a few kilobytes.
const maxMergekitConfig = 1 << 20

// ParseMergekitConfig reads a mergekit YAML configuration; name is used in messages. Keys mergekit does not define,
// or that lathe does not implement, are errors naming the key and its line (mergekit itself ignores unknown keys,
// which hides typos such as `desnity`).
func ParseMergekitConfig(name string, data []byte) (*MergekitConfig, error) {
	if len(data) > maxMergekitConfig {
		return nil, fmt.Errorf("%s: %d bytes is too large for a merge configuration (limit %d)", name, len(data), maxMergekitConfig)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &configParser{file: name}
	c := &MergekitConfig{File: name}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, p.errorf(&doc, "", "expected a YAML mapping with merge_method and models or slices")
	}
	root := doc.Content[0]
	var models, slicesNode, params *yaml.Node
	err := p.mapping(root, "configuration", func(key string, k, v *yaml.Node) error {
		var err error
		switch key {
		case "merge_method":
			c.Method, err = p.str(v, key)
		case "base_model":
			c.BaseModel, err = p.str(v, key)
		case "models":
			models = v
		case "slices":
			slicesNode = v
		case "parameters":
			params = v
		case "dtype", "out_dtype":
			var dt tensor.DType
			if dt, err = p.dtype(v, key); key == "dtype" {
				c.DType = dt
			} else {
				c.OutDType = dt
			}
		case "tokenizer_source":
			var s string
			if s, err = p.str(v, key); err == nil && s != "base" {
				err = p.errorf(v, key, "%q is not supported: lathe keeps the base model's tokenizer (use base or leave it out)", s)
			}
			c.Notes = append(c.Notes, "tokenizer_source: base: the base model's tokenizer and embeddings are kept as they are")
		case "modules", "tokenizer", "chat_template":
			err = p.errorf(k, key, "not supported by lathe (supported: merge_method, base_model, models, slices, parameters, dtype, out_dtype, tokenizer_source)")
		default:
			err = p.errorf(k, key, "unknown key (expected merge_method, base_model, models, slices, parameters, dtype, out_dtype or tokenizer_source)")
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	method, ok := mergekitMethods[c.Method]
	if !ok {
		if c.Method == "" {
			return nil, p.errorf(root, "merge_method", "missing (one of %s)", strings.Join(MergekitMethods(), ", "))
		}
		return nil, p.errorf(p.keyNode(root, "merge_method"), "merge_method", "unknown or unsupported method %q (supported: %s)",
			c.Method, strings.Join(MergekitMethods(), ", "))
	}
	if (models == nil) == (slicesNode == nil) {
		return nil, p.errorf(root, "", "exactly one of models and slices must be given")
	}
	if c.Parameters, err = p.parameters(params, method, true); err != nil {
		return nil, err
	}
	if models != nil {
		err = p.sequence(models, "models", func(n *yaml.Node) error {
			src, err := p.source(n, method, false)
			c.Models = append(c.Models, src)
			return err
		})
	} else {
		err = p.sequence(slicesNode, "slices", func(n *yaml.Node) error {
			s, err := p.slice(n, method)
			c.Slices = append(c.Slices, s)
			return err
		})
	}
	if err != nil {
		return nil, err
	}
	if _, set := c.Parameters["int8_mask"]; set {
		c.Notes = append(c.Notes, "int8_mask: ignored; it only changes the memory mergekit uses for the sign mask")
	}
	if method.needsBase && c.BaseModel == "" && !slices.ContainsFunc(c.Slices, func(s MergekitSlice) bool { return s.BaseModel != "" }) {
		return nil, p.errorf(root, "base_model", "%s needs a base_model", c.Method)
	}
	return c, nil
}

// configParser walks the YAML node tree, so that every error can name its line.
type configParser struct{ file string }

func (p *configParser) errorf(n *yaml.Node, key, format string, args ...any) error {
	return &MergekitConfigError{File: p.file, Line: n.Line, Key: key, Err: fmt.Errorf(format, args...)}
}

// keyNode returns the key node of field in mapping n, for the line of an error about its value.
func (p *configParser) keyNode(n *yaml.Node, field string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == field {
			return n.Content[i]
		}
	}
	return n
}

// mapping calls fn for each key of n in order; aliases and merge keys are refused rather than expanded, so that
// a small file cannot stand for a huge configuration.
func (p *configParser) mapping(n *yaml.Node, what string, fn func(key string, k, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return p.errorf(n, "", "%s: expected a mapping", what)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
			return p.errorf(k, "", "%s: keys must be plain names", what)
		}
		if v.Kind == yaml.AliasNode {
			return p.errorf(v, k.Value, "YAML aliases are not supported")
		}
		if seen[k.Value] {
			return p.errorf(k, k.Value, "given twice")
		}
		seen[k.Value] = true
		if err := fn(k.Value, k, v); err != nil {
			return err
		}
	}
	return nil
}

func (p *configParser) sequence(n *yaml.Node, what string, fn func(n *yaml.Node) error) error {
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		return p.errorf(n, what, "expected a non-empty list")
	}
	for _, e := range n.Content {
		if e.Kind == yaml.AliasNode {
			return p.errorf(e, what, "YAML aliases are not supported")
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

func (p *configParser) str(n *yaml.Node, key string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Value == "" || n.Tag == "!!null" {
		return "", p.errorf(n, key, "expected a non-empty string")
	}
	return n.Value, nil
}

// dtype reads a torch dtype name as mergekit's dtype_from_name accepts it.
func (p *configParser) dtype(n *yaml.Node, key string) (tensor.DType, error) {
	s, err := p.str(n, key)
	if err != nil {
		return tensor.Invalid, err
	}
	switch strings.TrimPrefix(s, "torch.") {
	case "float32", "float", "fp32":
		return tensor.F32, nil
	case "float16", "half", "fp16":
		return tensor.F16, nil
	case "bfloat16", "bf16":
		return tensor.BF16, nil
	}
	return tensor.Invalid, p.errorf(n, key, "unsupported dtype %q (expected float32, float16 or bfloat16)", s)
}

func (p *configParser) source(n *yaml.Node, method mergekitMethod, slice bool) (MergekitSource, error) {
	src := MergekitSource{line: n.Line}
	var params *yaml.Node
	hasRange := false
	err := p.mapping(n, "model entry", func(key string, k, v *yaml.Node) error {
		var err error
		switch key {
		case "model":
			src.Model, err = p.str(v, key)
		case "parameters":
			params = v
		case "layer_range":
			if !slice {
				return p.errorf(k, key, "only allowed in slices' sources")
			}
			hasRange = true
			src.LayerRange, err = p.layerRange(v)
		default:
			want := "model or parameters"
			if slice {
				want = "model, layer_range or parameters"
			}
			err = p.errorf(k, key, "unknown key (expected %s)", want)
		}
		return err
	})
	if err != nil {
		return src, err
	}
	if src.Model == "" {
		return src, p.errorf(n, "model", "missing")
	}
	if slice && !hasRange {
		return src, p.errorf(n, "layer_range", "missing")
	}
	src.Parameters, err = p.parameters(params, method, false)
	return src, err
}

func (p *configParser) layerRange(n *yaml.Node) ([2]int, error) {
	var r [2]int
	if n.Kind != yaml.SequenceNode || len(n.Content) != 2 {
		return r, p.errorf(n, "layer_range", "expected [first, end]")
	}
	for i, e := range n.Content {
		v, err := strconv.Atoi(e.Value)
		if e.Kind != yaml.ScalarNode || err != nil || v < 0 || v > 1<<20 {
			return r, p.errorf(e, "layer_range", "expected a layer index, got %q", e.Value)
		}
		r[i] = v
	}
	if r[1] <= r[0] {
		return r, p.errorf(n, "layer_range", "[%d, %d] is empty; the end is exclusive", r[0], r[1])
	}
	return r, nil
}

func (p *configParser) slice(n *yaml.Node, method mergekitMethod) (MergekitSlice, error) {
	s := MergekitSlice{line: n.Line}
	var params *yaml.Node
	err := p.mapping(n, "slice", func(key string, k, v *yaml.Node) error {
		var err error
		switch key {
		case "sources":
			err = p.sequence(v, key, func(e *yaml.Node) error {
				src, err := p.source(e, method, true)
				s.Sources = append(s.Sources, src)
				return err
			})
		case "base_model":
			s.BaseModel, err = p.str(v, key)
		case "parameters":
			params = v
		case "residual_weight":
			err = p.errorf(k, key, "not supported by lathe")
		default:
			err = p.errorf(k, key, "unknown key (expected sources, base_model or parameters)")
		}
		return err
	})
	if err != nil {
		return s, err
	}
	if len(s.Sources) == 0 {
		return s, p.errorf(n, "sources", "missing")
	}
	s.Parameters, err = p.parameters(params, method, true)
	return s, err
}

// parameters reads a parameters mapping. Method-level parameters (t, normalize, ...) are refused inside a model's
// parameters, where mergekit never looks for them (ConfigReader.parameter with model=None skips the sources).
func (p *configParser) parameters(n *yaml.Node, method mergekitMethod, methodLevel bool) (MergekitParameters, error) {
	if n == nil {
		return nil, nil
	}
	ps := MergekitParameters{}
	err := p.mapping(n, "parameters", func(key string, k, v *yaml.Node) error {
		_, isModel := method.perModel[key]
		_, isGlobal := method.global[key]
		switch {
		case isGlobal && !methodLevel:
			return p.errorf(k, key, "is a method parameter; set it under the top-level or slice parameters")
		case !isModel && !isGlobal:
			return p.errorf(k, key, "unknown parameter for this method (expected one of %s)", strings.Join(method.names(methodLevel), ", "))
		}
		s, err := p.setting(v, key, 0)
		ps[key] = s
		return err
	})
	return ps, err
}

func (m mergekitMethod) names(methodLevel bool) []string {
	var names []string
	for k := range m.perModel {
		names = append(names, k)
	}
	if methodLevel {
		for k := range m.global {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	if len(names) == 0 {
		names = []string{"none"}
	}
	return names
}

// setting reads a ParameterSetting: a number or boolean, a list of them, a list of {filter, value} entries
// (mergekit's ConditionalParameter), or one such entry.
func (p *configParser) setting(n *yaml.Node, key string, depth int) (*Setting, error) {
	s := &Setting{line: n.Line}
	switch n.Kind {
	case yaml.ScalarNode:
		v, err := p.number(n, key)
		s.Scalar = v
		return s, err
	case yaml.MappingNode:
		if depth > 0 {
			return nil, p.errorf(n, key, "a filtered value cannot hold further filters")
		}
		f, err := p.filtered(n, key)
		s.Filters = []FilteredSetting{f}
		return s, err
	case yaml.SequenceNode:
		if len(n.Content) == 0 {
			return nil, p.errorf(n, key, "expected a number, a list of numbers or a list of {filter, value}")
		}
		if n.Content[0].Kind == yaml.MappingNode {
			if depth > 0 {
				return nil, p.errorf(n, key, "a filtered value cannot hold further filters")
			}
			for _, e := range n.Content {
				if e.Kind != yaml.MappingNode {
					return nil, p.errorf(e, key, "expected {filter, value} like the entries before it")
				}
				f, err := p.filtered(e, key)
				if err != nil {
					return nil, err
				}
				s.Filters = append(s.Filters, f)
			}
			return s, nil
		}
		for _, e := range n.Content {
			if e.Kind != yaml.ScalarNode {
				return nil, p.errorf(e, key, "expected a number in the gradient")
			}
			v, err := p.number(e, key)
			if err != nil {
				return nil, err
			}
			s.Gradient = append(s.Gradient, v)
		}
		return s, nil
	}
	return nil, p.errorf(n, key, "expected a number, a list of numbers or a list of {filter, value}")
}

func (p *configParser) filtered(n *yaml.Node, key string) (FilteredSetting, error) {
	var f FilteredSetting
	err := p.mapping(n, key, func(k string, kn, v *yaml.Node) error {
		var err error
		switch k {
		case "filter":
			f.Filter, err = p.str(v, key+".filter")
		case "value":
			f.Value, err = p.setting(v, key, 1)
		default:
			err = p.errorf(kn, key+"."+k, "unknown key (expected filter or value)")
		}
		return err
	})
	if err == nil && f.Value == nil {
		err = p.errorf(n, key, "filtered entry has no value")
	}
	return f, err
}

// number reads a finite number or a boolean (true is 1, as Python's bool is an int).
func (p *configParser) number(n *yaml.Node, key string) (float64, error) {
	if n.Tag == "!!bool" {
		var b bool
		if err := n.Decode(&b); err != nil {
			return 0, p.errorf(n, key, "%v", err)
		}
		if b {
			return 1, nil
		}
		return 0, nil
	}
	v, err := strconv.ParseFloat(n.Value, 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, p.errorf(n, key, "expected a finite number or a boolean, got %q", n.Value)
	}
	return v, nil
}

// errMissingParameter is returned (wrapped) when a required parameter has no value for some tensor and model.
var errMissingParameter = errors.New("missing required parameter")
