package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/adapter"
)

// TestTrainDyLoRACommand runs `lathe train --method dylora` twice with the same seed, writing all ranks and then
// --dylora-rank 2: the second adapter is the first one's leading two ranks (A's first rows, B's first columns) with
// the same alpha, hence scale alpha/2, and the log records the rank each step drew. --dylora-rank without dylora
// or beyond --rank, and an unknown method, are refused.
func TestTrainDyLoRACommand(t *testing.T) {
	dir := t.TempDir()
	full, cut, log := filepath.Join(dir, "full"), filepath.Join(dir, "cut"), filepath.Join(dir, "log.jsonl")
	msg, code := run(t, trainArgs(t, full, "--steps", "3", "--method", "dylora", "--target", "v_proj", "--log", log)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	if !strings.Contains(msg, "dylora rank 4") {
		t.Errorf("summary: %q", msg)
	}
	if n := strings.Count(string(readFile(t, log)), `"rank":`); n != 3 {
		t.Errorf("the log records %d drawn ranks for 3 steps", n)
	}
	msg, code = run(t, trainArgs(t, cut, "--steps", "3", "--method", "dylora", "--target", "v_proj",
		"--dylora-rank", "2")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	a, err := adapter.Open(full)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := adapter.Open(cut)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if len(a.Modules) != len(b.Modules) || a.Modules[0].Rank != 4 || a.Modules[0].Scale != 2 ||
		b.Modules[0].Rank != 2 || b.Modules[0].Scale != 4 {
		t.Fatalf("adapters of %d and %d modules, ranks %d and %d, scales %v and %v; want ranks 4 and 2, scales 2 "+
			"and 4", len(a.Modules), len(b.Modules), a.Modules[0].Rank, b.Modules[0].Rank, a.Modules[0].Scale,
			b.Modules[0].Scale)
	}
	for i, m := range a.Modules {
		c := b.Modules[i]
		cols, rows := int(m.A.Shape[1]), int(m.B.Shape[0])
		same := bytes.Equal(c.A.Data, m.A.Data[:2*cols*4])
		for r := range rows {
			same = same && bytes.Equal(c.B.Data[r*2*4:(r+1)*2*4], m.B.Data[r*4*4:r*4*4+2*4])
		}
		if !same {
			t.Errorf("%s: the rank-2 adapter is not the first two ranks of the rank-4 one", m.Name)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--dylora-rank", "2"}, "--dylora-rank"},
		{[]string{"--method", "dylora", "--dylora-rank", "5"}, "--dylora-rank"},
		{[]string{"--method", "nonesuch"}, "--method"},
	} {
		msg, code := run(t, trainArgs(t, filepath.Join(dir, "bad"), append([]string{"--steps", "1"}, c.args...)...)...)
		if code != 2 || !strings.Contains(msg, c.want) {
			t.Errorf("%v: exit %d, %q; want 2 and a message naming %s", c.args, code, msg, c.want)
		}
	}
}
