package esdplot

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/spectral"
)

// TestPlots draws the ESD of a heavy-tailed random layer and an α chart, saves both formats twice and checks that
// the files are well-formed and byte-identical across runs (determinism).
func TestPlots(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	w := spectral.NewMatrix(300, 150)
	for i := range w.Data {
		w.Data[i] = r.NormFloat64() / (r.Float64() + 0.05)
	}
	m, err := spectral.AnalyzeMatrix(w, spectral.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for run := range 2 {
		p, err := ESD("layer 0", m.ESD, m.PowerLaw)
		if err != nil {
			t.Fatal(err)
		}
		if err := Save(p, filepath.Join(dir, "esd"+string(rune('a'+run)))); err != nil {
			t.Fatal(err)
		}
		a, err := Alphas("model", []float64{m.PowerLaw.Alpha, 3, -1, 7.5})
		if err != nil {
			t.Fatal(err)
		}
		if err := Save(a, filepath.Join(dir, "alpha"+string(rune('a'+run)))); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"esd", "alpha"} {
		for _, ext := range []string{".svg", ".png"} {
			a, err := os.ReadFile(filepath.Join(dir, name+"a"+ext))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(filepath.Join(dir, name+"b"+ext))
			if !bytes.Equal(a, b) {
				t.Errorf("%s%s differs between two runs", name, ext)
			}
			if ext == ".png" && !bytes.HasPrefix(a, []byte("\x89PNG\r\n\x1a\n")) || ext == ".svg" && !bytes.Contains(a, []byte("<svg")) {
				t.Errorf("%s%s is not a %s file", name, ext, ext)
			}
		}
	}
	if _, err := ESD("empty", []float64{0, 1}, spectral.PowerLaw{Status: spectral.StatusFailed}); err == nil {
		t.Error("plotting one positive eigenvalue: no error")
	}
	if _, err := Alphas("none", []float64{-1, -1}); err == nil {
		t.Error("α chart without any fit: no error")
	}
}
