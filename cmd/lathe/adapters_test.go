package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/internal/testshared"
)

// TestAdaptersCombineMethods runs every method of `adapters combine` on the shared adapter with itself: each writes
// an adapter that adapter.Open reads back with the requested rank, a DARE run repeats byte for byte with its seed,
// and bad options exit 2 naming what is wrong.
func TestAdaptersCombineMethods(t *testing.T) {
	lora := filepath.Join(testshared.Path(t, "models", "tiny-llama-a"), "lora-shakespeare-a")
	dir := t.TempDir()
	for i, c := range []struct {
		args []string
		rank int
	}{
		{[]string{"--method", "cat", "--weights", "0.5,0.5"}, 16},
		{[]string{"--method", "svd", "--rank", "4"}, 4},
		{[]string{"--method", "ties", "--density", "0.5", "--semantics", "mergekit", "--majority-sign", "frequency"}, 8},
		{[]string{"--method", "dare_ties", "--density", "0.3", "--seed", "5"}, 8},
		{[]string{"--method", "magnitude_prune", "--density", "0.5", "--factor-wise"}, 8},
		{[]string{"--method", "lego", "--rank", "8"}, 8},
	} {
		out := filepath.Join(dir, c.args[1]+string(rune('a'+i)))
		if msg, code := run(t, append([]string{"adapters", "combine", lora, lora, "-o", out}, c.args...)...); code != 0 {
			t.Fatalf("%v: exit %d: %s", c.args, code, msg)
		}
		a, err := adapter.Open(out)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if r := a.Modules[0].Rank; r != c.rank || a.Modules[0].Scale != 1 {
			t.Errorf("%v: rank %d scale %g, want rank %d scale 1", c.args, r, a.Modules[0].Scale, c.rank)
		}
		a.Close()
	}
	again := filepath.Join(dir, "again")
	if msg, code := run(t, "adapters", "combine", lora, lora, "-o", again, "--method", "dare_ties", "--density", "0.3", "--seed", "5"); code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	x, _ := os.ReadFile(filepath.Join(dir, "dare_tiesd", adapter.WeightsName))
	y, _ := os.ReadFile(filepath.Join(again, adapter.WeightsName))
	if len(x) == 0 || !bytes.Equal(x, y) {
		t.Error("dare_ties with the same seed: different files")
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--method", "ties", "--density", "1.5"}, "density 1.5"},
		{[]string{"--method", "ties"}, "density 0"},
		{[]string{"--method", "svd", "--semantics", "torch"}, "--semantics"},
		{[]string{"--method", "ties", "--density", "0.5", "--majority-sign", "most"}, "--majority-sign"},
		{[]string{"--method", "blend"}, `"blend"`},
		{[]string{"--method", "lego", "--rank", "4", "--weights", "1,2"}, "weights"},
	} {
		out := filepath.Join(dir, "bad")
		msg, code := run(t, append([]string{"adapters", "combine", lora, lora, "-o", out}, c.args...)...)
		if code != 2 || !strings.Contains(msg, c.want) {
			t.Errorf("%v: exit %d, %q: want exit 2 mentioning %q", c.args, code, msg, c.want)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%v: output left behind", c.args)
		}
	}
}
