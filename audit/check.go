package audit

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/spectral"
	"github.com/lathe-ml/lathe/tensor"
)

// Policy holds the limits `lathe check` enforces beyond the structural rules. A negative limit (intruders) or a
// zero one (the others) is not checked.
type Policy struct {
	MaxIntrudersPerLayer int     `json:"max_intruders_per_layer"` // most intruder dimensions (the paper's left count) in one layer
	MaxIntrudersTotal    int     `json:"max_intruders"`           // most intruder dimensions over all layers
	AlphaMin             float64 `json:"alpha_min"`               // allowed power-law α of each layer: of W + ΔW with a base,
	AlphaMax             float64 `json:"alpha_max"`               // of ΔW without
	MaxDeltaNormRatio    float64 `json:"max_delta_norm"`          // largest ‖ΔW‖₂/‖W‖₂ of any layer
	MaxBytes             int64   `json:"max_size"`                // largest adapter size on disk, in bytes
}

// NoPolicy checks nothing beyond the structural rules.
func NoPolicy() Policy { return Policy{MaxIntrudersPerLayer: -1, MaxIntrudersTotal: -1} }

// Rules, as named in findings.
const (
	RuleTargets   = "targets"    // every module is selected by target_modules
	RuleRank      = "rank"       // factor shapes agree with r / rank_pattern
	RuleScaling   = "scaling"    // alpha, patterns and DoRA vectors agree with the configuration
	RuleDType     = "dtype"      // factors are F32, F16 or BF16, A and B alike
	RuleFinite    = "finite"     // no NaN or Inf in any tensor
	RuleZero      = "zero"       // the update is not all zeros
	RuleBase      = "base"       // every target exists in the base with the update's shape
	RuleIntruders = "intruders"  // intruder dimensions per layer and in total
	RuleAlpha     = "alpha"      // power-law α within the allowed range
	RuleDelta     = "delta_norm" // ‖ΔW‖₂/‖W‖₂ within the limit
	RuleSize      = "size"       // the adapter's size on disk
)

// Severities of findings: errors fail the check, warnings and notices do not.
const (
	Error   = "error"
	Warning = "warning"
	Notice  = "notice"
)

// Finding is one result of a rule that did not simply pass.
type Finding struct {
	Rule     string `json:"rule"`
	Severity string `json:"severity"`
	Subject  string `json:"subject,omitempty"` // module, tensor or pattern concerned
	File     string `json:"file"`
	Message  string `json:"message"`
}

// CheckReport is the outcome of Check.
type CheckReport struct {
	Adapter  string    `json:"adapter"`
	Base     string    `json:"base,omitempty"`
	Format   string    `json:"format"`
	Modules  int       `json:"modules"`
	Bytes    int64     `json:"bytes"`
	Passed   bool      `json:"passed"`
	Rules    []string  `json:"rules"` // the rules that ran
	Findings []Finding `json:"findings"`
	Spectrum *Report   `json:"spectrum,omitempty"`
}

// Check verifies an adapter for CI: that it is internally consistent (factor shapes, ranks and scaling agree with
// adapter_config.json, supported dtypes, no NaN or Inf, a nonzero update), that it fits the base model if one is
// given (every target present, shapes equal), and the policy's limits on intruder dimensions, α, relative update
// norm and size. The error is for inputs that cannot be read; a failed rule is a finding and clears Passed.
func Check(adapterPath, basePath string, policy Policy, opts Options) (*CheckReport, error) {
	a, base, err := openAdapter(adapterPath, basePath)
	if err != nil {
		return nil, err
	}
	defer closeAdapter(a, base)
	c := &checker{a: a, rep: &CheckReport{Adapter: adapterPath, Base: basePath, Format: string(a.Format),
		Modules: len(a.Modules), Bytes: a.Bytes, Findings: []Finding{}}}
	c.weights = a.Files[len(a.Files)-1]
	if err := c.structure(base); err != nil {
		return nil, err
	}
	spec, err := Adapter(adapterPath, basePath, opts)
	if err != nil {
		return nil, err
	}
	c.rep.Spectrum = spec
	c.policy(policy, spec, base != nil, opts.Intruders)
	c.rep.Passed = !slices.ContainsFunc(c.rep.Findings, func(f Finding) bool { return f.Severity == Error })
	return c.rep, nil
}

type checker struct {
	a       *adapter.Adapter
	rep     *CheckReport
	weights string // the file holding the tensors, for findings
}

func (c *checker) add(rule, severity, subject, file, format string, args ...any) {
	c.rep.Findings = append(c.rep.Findings, Finding{Rule: rule, Severity: severity, Subject: subject, File: file,
		Message: fmt.Sprintf(format, args...)})
}

func (c *checker) ran(rules ...string) { c.rep.Rules = append(c.rep.Rules, rules...) }

// structure runs the rules that need no spectrum.
func (c *checker) structure(base *modelfile.Model) error {
	a, cfg := c.a, c.a.Config
	cfgFile := c.weights
	if a.Format == adapter.PEFT {
		cfgFile = a.Files[0]
		c.ran(RuleTargets, RuleRank)
	}
	c.ran(RuleScaling, RuleDType, RuleFinite)
	if len(a.Modules) == 0 {
		c.add(RuleTargets, Error, "", c.weights, "no LoRA modules (no lora_A/lora_B pairs)")
	}
	for i := range a.Modules {
		m := &a.Modules[i]
		if a.Format == adapter.PEFT {
			if !cfg.Targets(m.Name) {
				c.add(RuleTargets, Error, m.Name, cfgFile, "module is not selected by target_modules %s: PEFT would not load it", targetsText(cfg))
			}
			if m.Rank != m.ConfigRank {
				c.add(RuleRank, Error, m.Name, c.weights, "factors have rank %d but %s gives r = %d", m.Rank, filepath.Base(cfgFile), m.ConfigRank)
			}
		}
		if m.Alpha == 0 && a.Format == adapter.PEFT {
			c.add(RuleScaling, Error, m.Name, cfgFile, "lora_alpha is 0: the update is scaled to nothing")
		}
		switch {
		case cfg.UseDoRA && m.Magnitude == nil:
			c.add(RuleScaling, Error, m.Name, c.weights, "use_dora is set but the module has no lora_magnitude_vector")
		case !cfg.UseDoRA && m.Magnitude != nil:
			c.add(RuleScaling, Error, m.Name, c.weights, "the module has a lora_magnitude_vector but use_dora is not set: it would be ignored")
		}
		if m.A.DType != m.B.DType {
			c.add(RuleDType, Error, m.Name, c.weights, "lora_A is %s but lora_B is %s", m.A.DType, m.B.DType)
		}
		for _, v := range []tensor.View{m.A, m.B} {
			if v.DType != tensor.F32 && v.DType != tensor.F16 && v.DType != tensor.BF16 {
				c.add(RuleDType, Error, v.Name, c.weights, "dtype %s: PEFT and llama.cpp expect F32, F16 or BF16 factors", v.DType)
			}
		}
		if zero, err := allZero(m.B); err != nil {
			return err
		} else if zero {
			c.add(RuleZero, Warning, m.Name, c.weights, "lora_B is all zeros: the module changes nothing (untrained?)")
		}
	}
	if a.Format == adapter.GGUF {
		if cfg.LoraAlpha == 0 {
			c.add(RuleScaling, Warning, "", c.weights, "adapter.lora.alpha is missing or 0: llama.cpp applies the factors with scale 1")
		}
	} else {
		for _, ps := range []struct {
			field string
			pats  adapter.Patterns
		}{{"rank_pattern", cfg.RankPattern}, {"alpha_pattern", cfg.AlphaPattern}} {
			for _, p := range ps.pats {
				if !slices.ContainsFunc(a.Modules, func(m adapter.Module) bool { return p.Matches(m.Name) }) {
					c.add(RuleScaling, Warning, p.Key, cfgFile, "%s key matches no module of the adapter", ps.field)
				}
			}
		}
	}
	for _, name := range a.TensorNames() {
		v, err := a.Tensor(name)
		if err != nil {
			return err
		}
		if !v.DType.IsFloat() || math.Mod(v.DType.Bits(), 8) != 0 {
			continue // integers hold no NaN; packed 4- and 6-bit floats have no NaN encodings to look for here
		}
		if n, err := nonFinite(v); err != nil {
			return err
		} else if n > 0 {
			c.add(RuleFinite, Error, name, c.weights, "%d NaN or Inf values", n)
		}
	}
	if base == nil {
		return nil
	}
	c.ran(RuleBase)
	for i := range a.Modules {
		m := &a.Modules[i]
		if reason := baseMismatch(base, m); reason != "" {
			c.add(RuleBase, Error, m.Name, c.weights, "%s (base %s)", reason, base.Path)
		}
	}
	for _, name := range a.Extra {
		target := strings.TrimPrefix(name, "base_model.model.")
		bt, ok := base.Lookup(target)
		v, err := a.Tensor(name)
		if err != nil {
			return err
		}
		switch {
		case !ok:
			c.add(RuleBase, Warning, name, c.weights, "extra tensor (not a LoRA factor) has no counterpart %q in the base", target)
		case !bt.Shape.Equal(v.Shape):
			c.add(RuleBase, Error, name, c.weights, "replaces base tensor %q of shape %v with shape %v (resized vocabulary?)", target, bt.Shape, v.Shape)
		}
	}
	return nil
}

// policy runs the spectral rules on the analysis.
func (c *checker) policy(p Policy, spec *Report, haveBase bool, io spectral.IntruderOptions) {
	intruderRule := p.MaxIntrudersPerLayer >= 0 || p.MaxIntrudersTotal >= 0
	alphaRule := p.AlphaMin > 0 || p.AlphaMax > 0
	if alphaRule {
		c.ran(RuleAlpha)
	}
	deltaRule := p.MaxDeltaNormRatio > 0
	if (intruderRule || deltaRule) && !haveBase {
		c.add(RuleIntruders, Notice, "", c.weights, "no --base given: intruder and ‖ΔW‖/‖W‖ limits were not checked")
		intruderRule, deltaRule = false, false
	}
	if intruderRule {
		c.ran(RuleIntruders)
	}
	if deltaRule {
		c.ran(RuleDelta)
	}
	for _, l := range spec.Layers {
		if l.Skipped != "" {
			if intruderRule || deltaRule || alphaRule {
				c.add(RuleAlpha, Notice, l.Name, c.weights, "not analyzed, spectral limits not checked: %s", l.Skipped)
			}
			continue
		}
		if intruderRule && p.MaxIntrudersPerLayer >= 0 && len(l.Intruders.Left) > p.MaxIntrudersPerLayer {
			c.add(RuleIntruders, Error, l.Name, c.weights, "%d intruder dimensions (ranks %v, best |cos| %s), limit %d per layer",
				len(l.Intruders.Left), l.Intruders.Left, cosText(l.Intruders), p.MaxIntrudersPerLayer)
		}
		if deltaRule && l.DeltaNormRatio > p.MaxDeltaNormRatio {
			c.add(RuleDelta, Error, l.Name, c.weights, "‖ΔW‖₂/‖W‖₂ = %.4g, limit %g", l.DeltaNormRatio, p.MaxDeltaNormRatio)
		}
		if alphaRule {
			met, what := l.Metrics, "ΔW"
			if l.Tuned != nil {
				met, what = l.Tuned, "W + ΔW"
			}
			pl := met.PowerLaw
			switch {
			case pl.Status != spectral.StatusSuccess:
				c.add(RuleAlpha, Warning, l.Name, c.weights, "power-law fit of %s failed (%d eigenvalues)", what, met.NumEvals)
			case p.AlphaMin > 0 && pl.Alpha < p.AlphaMin || p.AlphaMax > 0 && pl.Alpha > p.AlphaMax:
				c.add(RuleAlpha, Error, l.Name, c.weights, "α of %s = %.3f outside [%s, %s]", what, pl.Alpha, bound(p.AlphaMin), bound(p.AlphaMax))
			}
		}
	}
	if intruderRule && p.MaxIntrudersTotal >= 0 && spec.Intruders > p.MaxIntrudersTotal {
		c.add(RuleIntruders, Error, "", c.weights, "%d intruder dimensions in total (k = %d, ε = %g), limit %d",
			spec.Intruders, io.K, io.Epsilon, p.MaxIntrudersTotal)
	}
	if p.MaxBytes > 0 {
		c.ran(RuleSize)
		if c.rep.Bytes > p.MaxBytes {
			c.add(RuleSize, Error, "", c.weights, "adapter is %d bytes, limit %d", c.rep.Bytes, p.MaxBytes)
		}
	}
}

func targetsText(cfg *adapter.Config) string {
	if cfg.TargetRegexp != "" {
		return fmt.Sprintf("%q", cfg.TargetRegexp)
	}
	return fmt.Sprintf("%q", cfg.TargetModules)
}

func cosText(in *spectral.Intruders) string {
	parts := make([]string, len(in.Left))
	for i, j := range in.Left {
		parts[i] = fmt.Sprintf("%.3f", in.MaxCosLeft[j])
	}
	return strings.Join(parts, " ")
}

func bound(x float64) string {
	if x > 0 {
		return fmt.Sprint(x)
	}
	return "…"
}

// scanFloats decodes a float tensor of whole-byte elements in chunks and passes each value to f, without holding a second copy.
func scanFloats(v tensor.View, f func(x float32)) error {
	n := v.Elements()
	size := int64(v.DType.Bits()) / 8
	buf := make([]float32, min(n, 1<<16))
	for off := int64(0); off < n; off += int64(len(buf)) {
		cnt := min(n-off, int64(len(buf)))
		if err := tensor.ToFloat32(buf[:cnt], v.Data[off*size:(off+cnt)*size], v.DType); err != nil {
			return fmt.Errorf("tensor %q: %w", v.Name, err)
		}
		for _, x := range buf[:cnt] {
			f(x)
		}
	}
	return nil
}

func nonFinite(v tensor.View) (int, error) {
	n := 0
	err := scanFloats(v, func(x float32) {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			n++
		}
	})
	return n, err
}

func allZero(v tensor.View) (bool, error) {
	zero := true
	err := scanFloats(v, func(x float32) { zero = zero && x == 0 })
	return zero, err
}
