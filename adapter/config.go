package adapter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// Config is the part of PEFT's adapter_config.json (LoraConfig, peft/tuners/lora/config.py;
// ../shared/reference/formats-quant.md §5.1) that decides what an adapter's tensors mean. Raw keeps the file's bytes
// so that an adapter rewritten by lathe carries its configuration unchanged.
type Config struct {
	PeftType      string   `json:"peft_type"`
	BaseModel     string   `json:"base_model_name_or_path"`
	R             int      `json:"r"`
	LoraAlpha     float64  `json:"lora_alpha"`
	UseRSLoRA     bool     `json:"use_rslora"`
	UseDoRA       bool     `json:"use_dora"`
	FanInFanOut   bool     `json:"fan_in_fan_out"`
	TargetModules []string `json:"target_modules"` // a list; a single regular expression is in TargetRegexp
	TargetRegexp  string   `json:"target_regexp,omitempty"`
	RankPattern   Patterns `json:"rank_pattern"`
	AlphaPattern  Patterns `json:"alpha_pattern"`
	Raw           []byte   `json:"-"`

	targetRE *regexp.Regexp
}

// Pattern is one entry of rank_pattern or alpha_pattern: a regular expression over module names and its value.
type Pattern struct {
	Key   string  `json:"key"`
	Value float64 `json:"value"`
	re    *regexp.Regexp
}

// Patterns keep the order of the JSON object, because PEFT takes the first key that matches (get_pattern_key
// iterates the dict in insertion order).
type Patterns []Pattern

// ConfigError reports a field of adapter_config.json that lathe cannot use.
type ConfigError struct {
	File  string
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return fmt.Sprintf("%s: field %q: %v", e.File, e.Field, e.Err) }
func (e *ConfigError) Unwrap() error { return e.Err }

// ParseConfig reads adapter_config.json; name is used in errors.
func ParseConfig(name string, data []byte) (*Config, error) {
	var raw struct {
		PeftType      *string         `json:"peft_type"`
		BaseModel     string          `json:"base_model_name_or_path"`
		R             json.RawMessage `json:"r"`
		LoraAlpha     json.RawMessage `json:"lora_alpha"`
		UseRSLoRA     bool            `json:"use_rslora"`
		UseDoRA       bool            `json:"use_dora"`
		FanInFanOut   bool            `json:"fan_in_fan_out"`
		TargetModules json.RawMessage `json:"target_modules"`
		RankPattern   json.RawMessage `json:"rank_pattern"`
		AlphaPattern  json.RawMessage `json:"alpha_pattern"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, &ConfigError{File: name, Field: "", Err: fmt.Errorf("not a JSON object of the expected shape: %w", err)}
	}
	c := &Config{BaseModel: raw.BaseModel, UseRSLoRA: raw.UseRSLoRA, UseDoRA: raw.UseDoRA, FanInFanOut: raw.FanInFanOut,
		Raw: append([]byte(nil), data...)}
	bad := func(field string, err error) error { return &ConfigError{File: name, Field: field, Err: err} }
	// PEFT's LoraConfig defaults: peft_type LORA, r = 8, lora_alpha = 8.
	c.PeftType, c.R, c.LoraAlpha = "LORA", 8, 8
	if raw.PeftType != nil {
		c.PeftType = *raw.PeftType
	}
	if c.PeftType != "LORA" {
		return nil, bad("peft_type", fmt.Errorf("%q: only LORA adapters are supported", c.PeftType))
	}
	if len(raw.R) > 0 {
		r, err := number(raw.R)
		if err != nil || r <= 0 || r != math.Trunc(r) || r > math.MaxInt32 {
			return nil, bad("r", fmt.Errorf("%s: want a positive integer", raw.R))
		}
		c.R = int(r)
	}
	if len(raw.LoraAlpha) > 0 {
		a, err := number(raw.LoraAlpha)
		if err != nil {
			return nil, bad("lora_alpha", fmt.Errorf("%s: want a finite number", raw.LoraAlpha))
		}
		c.LoraAlpha = a
	}
	if err := c.parseTargets(raw.TargetModules); err != nil {
		return nil, bad("target_modules", err)
	}
	var err error
	if c.RankPattern, err = parsePatterns(raw.RankPattern, true); err != nil {
		return nil, bad("rank_pattern", err)
	}
	if c.AlphaPattern, err = parsePatterns(raw.AlphaPattern, false); err != nil {
		return nil, bad("alpha_pattern", err)
	}
	return c, nil
}

func (c *Config) parseTargets(msg json.RawMessage) error {
	msg = bytes.TrimSpace(msg)
	if len(msg) == 0 || string(msg) == "null" {
		return nil
	}
	if msg[0] == '"' {
		var s string
		if err := json.Unmarshal(msg, &s); err != nil {
			return err
		}
		if s == "all-linear" {
			c.TargetModules = []string{s}
			return nil
		}
		// PEFT uses re.fullmatch for a string target.
		re, err := regexp.Compile(`^(?:` + s + `)$`)
		if err != nil {
			return fmt.Errorf("regular expression %q: %w", s, err)
		}
		c.TargetRegexp, c.targetRE = s, re
		return nil
	}
	return json.Unmarshal(msg, &c.TargetModules)
}

// parsePatterns reads a JSON object of pattern → number in file order.
func parsePatterns(msg json.RawMessage, integer bool) (Patterns, error) {
	msg = bytes.TrimSpace(msg)
	if len(msg) == 0 || string(msg) == "null" {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(msg))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("want a JSON object of pattern → number")
	}
	var ps Patterns
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key := tok.(string) // object keys are always strings
		var n json.RawMessage
		if err := dec.Decode(&n); err != nil {
			return nil, fmt.Errorf("key %q: %w", key, err)
		}
		v, err := number(n)
		if err != nil {
			return nil, fmt.Errorf("key %q: %s is not a finite number", key, n)
		}
		if integer && (v <= 0 || v != math.Trunc(v) || v > math.MaxInt32) {
			return nil, fmt.Errorf("key %q: rank %s is not a positive integer", key, n)
		}
		// peft.utils.other.get_pattern_key: re.match(rf"(.*\.)?({key})$", module_name)
		re, err := regexp.Compile(`^(?:.*\.)?(?:` + key + `)$`)
		if err != nil {
			return nil, fmt.Errorf("key %q is not a regular expression lathe can run: %w", key, err)
		}
		ps = append(ps, Pattern{Key: key, Value: v, re: re})
	}
	return ps, nil
}

// Matches reports whether the pattern selects a module, by PEFT's rule: the key matches a dotted suffix of the name.
func (p Pattern) Matches(module string) bool { return p.re.MatchString(module) }

// number reads a JSON number literal (not a string holding one, which PEFT would not accept either) as a finite
// float64.
func number(msg json.RawMessage) (float64, error) {
	v, err := strconv.ParseFloat(string(bytes.TrimSpace(msg)), 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("%s is not a finite number", msg)
	}
	return v, nil
}

// match returns the value of the first pattern matching module, as PEFT's get_pattern_key chooses it.
func (ps Patterns) match(module string) (float64, bool) {
	for _, p := range ps {
		if p.Matches(module) {
			return p.Value, true
		}
	}
	return 0, false
}

// RankAlpha returns r and lora_alpha for one module (its name in the base model, e.g.
// "model.layers.0.self_attn.q_proj"), after rank_pattern and alpha_pattern.
func (c *Config) RankAlpha(module string) (int, float64) {
	r, alpha := c.R, c.LoraAlpha
	if v, ok := c.RankPattern.match(module); ok {
		r = int(v)
	}
	if v, ok := c.AlphaPattern.match(module); ok {
		alpha = v
	}
	return r, alpha
}

// Scale is PEFT's scaling for a module of rank r: lora_alpha/r, or lora_alpha/√r with use_rslora (§5.1 of
// spectral-prune-merge.md).
func (c *Config) Scale(r int, alpha float64) float64 {
	if c.UseRSLoRA {
		return alpha / math.Sqrt(float64(r))
	}
	return alpha / float64(r)
}

// Targets reports whether target_modules selects module: PEFT's check_target_module_exists — a list matches the
// whole name or its last dotted components, a string is a regular expression over the whole name, "all-linear"
// (resolved by PEFT against the model's layers, which lathe does not see) and an absent field accept everything.
func (c *Config) Targets(module string) bool {
	if c.targetRE != nil {
		return c.targetRE.MatchString(module)
	}
	if len(c.TargetModules) == 0 {
		return true
	}
	for _, t := range c.TargetModules {
		if t == "all-linear" || module == t || strings.HasSuffix(module, "."+t) {
			return true
		}
	}
	return false
}
