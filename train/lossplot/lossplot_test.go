package lossplot

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/train"
)

// TestPlotSave draws a run with two validation points and checks what is written for each extension: an SVG with
// both curves' legend entries, a PNG by its signature, and an error for a format it does not write.
func TestPlotSave(t *testing.T) {
	v0, v2 := 4.2, 3.9
	logs := []train.StepLog{{Step: 0, ValLoss: &v0}, {Step: 1, Loss: 4.1}, {Step: 2, Loss: 3.8, ValLoss: &v2}}
	p, err := Plot("run", logs)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, c := range []struct{ name, want string }{{"loss.svg", "validation"}, {"loss.png", "\x89PNG"}} {
		path := filepath.Join(dir, c.name)
		if err := Save(p, path); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(c.want)) {
			t.Errorf("%s does not contain %q", c.name, c.want)
		}
	}
	if err := Save(p, filepath.Join(dir, "loss.jpg")); err == nil || !strings.Contains(err.Error(), "loss.jpg") {
		t.Errorf("saving loss.jpg: error %v, want one naming the file", err)
	}
	if _, err := Plot("empty", logs[:1]); err == nil {
		t.Error("a log without training steps was plotted")
	}
}

// TestCompare draws validation curves when every run has two or more validation points and training curves
// otherwise, with one legend entry per run.
func TestCompare(t *testing.T) {
	v := []float64{4.2, 3.9, 4.1, 3.7}
	a := []train.StepLog{{Step: 0, ValLoss: &v[0]}, {Step: 1, Loss: 4.1}, {Step: 2, Loss: 3.8, ValLoss: &v[1]}}
	b := []train.StepLog{{Step: 0, ValLoss: &v[2]}, {Step: 1, Loss: 4.0}, {Step: 2, Loss: 3.6, ValLoss: &v[3]}}
	for _, c := range []struct {
		runs []Run
		want string
	}{
		{[]Run{{"lora", a}, {"dora", b}}, "validation loss"},
		{[]Run{{"lora", a}, {"dora", b[1:]}}, "training batch loss"},
	} {
		p, err := Compare("methods", c.runs)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "cmp.svg")
		if err := Save(p, path); err != nil {
			t.Fatal(err)
		}
		svg, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{c.want, ">lora<", ">dora<"} {
			if !bytes.Contains(svg, []byte(w)) {
				t.Errorf("the comparison plot does not contain %q", w)
			}
		}
	}
	if _, err := Compare("none", nil); err == nil {
		t.Error("an empty comparison was plotted")
	}
}
