package adapter

import (
	"errors"
	"testing"
)

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig("c.json", []byte(`{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "use_rslora": true,
		"target_modules": ["q_proj", "v_proj"],
		"rank_pattern": {"layers\\.1\\..*": 4, "q_proj": 2},
		"alpha_pattern": {"v_proj": 3.5}}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		module string
		r      int
		alpha  float64
	}{
		{"model.layers.0.self_attn.q_proj", 2, 16},  // second pattern
		{"model.layers.1.self_attn.q_proj", 4, 16},  // first pattern wins, as in PEFT's dict order
		{"model.layers.0.self_attn.v_proj", 8, 3.5}, // alpha pattern only
		{"model.layers.0.self_attn.xq_proj", 8, 16}, // a pattern matches whole dotted components
		{"model.layers.10.self_attn.k_proj", 8, 16}, // "layers\.1\." does not match layers.10
	} {
		r, a := cfg.RankAlpha(c.module)
		if r != c.r || a != c.alpha {
			t.Errorf("%s: r %d α %g, want %d %g", c.module, r, a, c.r, c.alpha)
		}
	}
	// rsLoRA: α/√r; plain LoRA: α/r (§8.7: r = 4, α = 8 → 4 and 2).
	if s := cfg.Scale(4, 8); s != 4 {
		t.Errorf("rsLoRA scale(4, 8) = %g, want 4", s)
	}
	cfg.UseRSLoRA = false
	if s := cfg.Scale(4, 8); s != 2 {
		t.Errorf("LoRA scale(4, 8) = %g, want 2", s)
	}
	if !cfg.Targets("model.layers.0.self_attn.q_proj") || cfg.Targets("model.layers.0.self_attn.k_proj") || cfg.Targets("xq_proj") {
		t.Error("list target_modules: suffix matching wrong")
	}

	re, err := ParseConfig("c.json", []byte(`{"target_modules": ".*\\.(q|v)_proj"}`))
	if err != nil {
		t.Fatal(err)
	}
	if !re.Targets("model.layers.0.self_attn.q_proj") || re.Targets("model.layers.0.self_attn.q_proj.extra") || re.R != 8 || re.LoraAlpha != 8 {
		t.Errorf("regex target_modules or defaults wrong: %+v", re)
	}
	all, _ := ParseConfig("c.json", []byte(`{"target_modules": "all-linear"}`))
	if !all.Targets("anything") {
		t.Error("all-linear does not select a module")
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, c := range []struct{ json, field string }{
		{`[]`, ""},
		{`{"peft_type": "IA3"}`, "peft_type"},
		{`{"r": 0}`, "r"},
		{`{"r": 2.5}`, "r"},
		{`{"lora_alpha": "x"}`, "lora_alpha"},
		{`{"r": "8"}`, "r"},
		{`{"target_modules": "(unclosed"}`, "target_modules"},
		{`{"target_modules": 5}`, "target_modules"},
		{`{"rank_pattern": {"q": 0}}`, "rank_pattern"},
		{`{"rank_pattern": {"q": 1.5}}`, "rank_pattern"},
		{`{"rank_pattern": []}`, "rank_pattern"},
		{`{"alpha_pattern": {"(?=x)": 2}}`, "alpha_pattern"},
		{`{"alpha_pattern": {"q": "2"}}`, "alpha_pattern"},
	} {
		_, err := ParseConfig("c.json", []byte(c.json))
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != c.field || ce.File != "c.json" {
			t.Errorf("%s: err = %v, want a ConfigError on field %q", c.json, err, c.field)
		}
	}
	if _, err := ParseConfig("c.json", []byte(`{"lora_alpha": 1e400}`)); err == nil {
		t.Error("infinite lora_alpha accepted")
	}
}
