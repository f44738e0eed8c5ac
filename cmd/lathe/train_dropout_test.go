package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/adapter"
)

// TestTrainDropoutRecompute: --lora-dropout is recorded in adapter_config.json and changes the adapter;
// --recompute writes the same adapter bytes as the run that keeps its activations; a dropout outside [0, 1) and
// dropout with a method that computes its projections whole are refused with exit 2, naming the flag or method.
func TestTrainDropoutRecompute(t *testing.T) {
	dir := t.TempDir()
	var got [][]byte
	for _, c := range []struct {
		name  string
		extra []string
	}{{"plain", nil}, {"dropout", []string{"--lora-dropout", "0.1"}},
		{"recompute", []string{"--lora-dropout", "0.1", "--recompute"}}} {
		out := filepath.Join(dir, c.name)
		if msg, code := run(t, trainArgs(t, out, append([]string{"--steps", "3", "--grad-accum", "2"}, c.extra...)...)...); code != 0 {
			t.Fatalf("%s: exit %d: %s", c.name, code, msg)
		}
		got = append(got, readFile(t, filepath.Join(out, adapter.WeightsName)))
		cfg := string(readFile(t, filepath.Join(out, adapter.ConfigName)))
		if want := `"lora_dropout": 0.1`; c.extra != nil && !strings.Contains(cfg, want) {
			t.Errorf("%s: adapter_config.json lacks %s:\n%s", c.name, want, cfg)
		}
	}
	if bytes.Equal(got[0], got[1]) {
		t.Error("--lora-dropout 0.1 wrote the adapter of the run without dropout")
	}
	if !bytes.Equal(got[1], got[2]) {
		t.Error("--recompute wrote a different adapter")
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--lora-dropout", "1"}, "--lora-dropout 1: want a probability in [0, 1)"},
		{[]string{"--lora-dropout", "0.1", "--method", "dora"}, "method dora computes its projections whole"},
	} {
		if msg, code := run(t, trainArgs(t, filepath.Join(dir, "refused"), append([]string{"--steps", "1"}, c.args...)...)...); code != 2 ||
			!strings.Contains(msg, c.want) {
			t.Errorf("%v: exit %d, %q; want 2 and a message containing %q", c.args, code, msg, c.want)
		}
	}
}
