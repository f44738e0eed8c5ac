package main

import (
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/audit"
	"github.com/lathe-ml/lathe/internal/testshared"
)

func TestSpectrumAdapterJSON(t *testing.T) {
	smol := testshared.Path(t, "data", "safetensors", "smollm135m-medical-lora")
	out, code := run(t, "spectrum", smol, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	var r audit.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Kind != audit.KindAdapter || len(r.Layers) != 60 || r.Layers[0].Metrics == nil || r.Layers[0].Metrics.NumEvals != 16 {
		t.Errorf("report: kind %s, %d layers", r.Kind, len(r.Layers))
	}
}

func TestSpectrumCSVAndPlots(t *testing.T) {
	model := testshared.Path(t, "models", "tiny-llama-a", "hf")
	dir := filepath.Join(t.TempDir(), "plots")
	out, code := run(t, "spectrum", model, "--csv", "--plot", dir, "--include", `layers\.0\.`, "--mp-fit",
		"--randomize", "--seed", "3")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 8 || rows[0][0] != "name" || !strings.Contains(strings.Join(rows[0], ","), "correlation_traps") {
		t.Fatalf("CSV: %d rows, header %v", len(rows), rows[0])
	}
	for _, ext := range []string{".svg", ".png"} {
		esd, _ := filepath.Glob(filepath.Join(dir, "esd_*"+ext))
		if len(esd) != 7 {
			t.Errorf("%d ESD plots %s, want 7", len(esd), ext)
		}
		if _, err := os.Stat(filepath.Join(dir, "alpha"+ext)); err != nil {
			t.Error(err)
		}
	}
	again, _ := run(t, "spectrum", model, "--csv", "--include", `layers\.0\.`, "--mp-fit", "--randomize", "--seed", "3")
	if again != out {
		t.Error("same seed, different output")
	}
}

func TestSpectrumTableWithBase(t *testing.T) {
	tiny := testshared.Path(t, "models", "tiny-llama-a")
	out, code := run(t, "spectrum", filepath.Join(tiny, "lora-shakespeare-a"), "--base", filepath.Join(tiny, "hf"),
		"--include", `layers\.0\.self_attn`)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	for _, want := range []string{"LoRA updates", "tuned_alpha", "intruders", "model.layers.0.self_attn.q_proj.weight",
		"4 layers analyzed", "intruder dimensions:"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestCheckCommand(t *testing.T) {
	smol := testshared.Path(t, "data", "safetensors", "smollm135m-medical-lora")
	if out, code := run(t, "check", smol); code != 0 || !strings.Contains(out, "PASS") {
		t.Errorf("structural check: exit %d\n%s", code, out)
	}
	out, code := run(t, "check", smol, "--alpha-max", "1.01", "--format", "github")
	if code != 1 {
		t.Fatalf("α ≤ 1.01: exit %d\n%s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], "::error file=") || !strings.Contains(lines[0], "title=lathe check%3A alpha::") {
		t.Errorf("GitHub annotation: %q", lines[0])
	}
	if out, code := run(t, "check", smol, "--max-intruders", "0", "--json"); code != 0 || !strings.Contains(out, `"severity": "notice"`) {
		t.Errorf("intruder limit without base: exit %d\n%s", code, out)
	}
	rules := filepath.Join(t.TempDir(), "rules.json")
	os.WriteFile(rules, []byte(`{"max_size": 1000}`), 0o644)
	if out, code := run(t, "check", smol, "--rules", rules); code != 1 || !strings.Contains(out, "size") {
		t.Errorf("size rule from a rules file: exit %d\n%s", code, out)
	}
	if _, code := run(t, "check", smol, "--rules", rules, "--max-size", "10M"); code != 0 {
		t.Errorf("--max-size 10M overriding the rules file: exit %d", code)
	}
	os.WriteFile(rules, []byte(`{"max_sise": 1000}`), 0o644)
	if _, code := run(t, "check", smol, "--rules", rules); code != 2 {
		t.Errorf("misspelt rule: exit %d, want 2", code)
	}
	if _, code := run(t, "check", filepath.Join(t.TempDir(), "nothing")); code != 2 {
		t.Errorf("missing adapter: exit %d, want 2", code)
	}
}

func TestReduceIntrudersCommand(t *testing.T) {
	tiny := testshared.Path(t, "models", "tiny-llama-a")
	out := filepath.Join(t.TempDir(), "reduced")
	base := filepath.Join(tiny, "hf")
	msg, code := run(t, "reduce-intruders", filepath.Join(tiny, "lora-shakespeare-a"), "--base", base, "-o", out,
		"--include", `layers\.0\.self_attn`)
	if code != 0 || !strings.Contains(msg, "intruder dimensions in") {
		t.Fatalf("exit %d\n%s", code, msg)
	}
	if msg, code := run(t, "check", out, "--base", base, "--include", `layers\.0\.self_attn`); code != 0 {
		t.Errorf("check of the mitigated adapter: exit %d\n%s", code, msg)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"123": 123, "64K": 64 << 10, "10M": 10 << 20, "2GiB": 2 << 30, "5mb": 5 << 20} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "K", "-1", "1T", "9999999999G"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q): no error", in)
		}
	}
}
