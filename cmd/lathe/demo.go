package main

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/demo"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
	"github.com/urfave/cli/v2"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "a tour of lathe on a tiny model embedded in the binary",
		Description: "Writes the embedded model (a 164K-parameter Llama in Hugging Face layout, untrained) to a directory and\n" +
			"runs lathe's main jobs on it, printing what each step did. Nothing outside that directory is touched.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Usage: "work in this directory and keep the files (default: a temporary directory, removed at the end)"},
		},
		Action: func(c *cli.Context) error {
			dir := c.String("dir")
			if dir == "" {
				tmp, err := os.MkdirTemp("", "lathe-demo-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				dir = tmp
			}
			return runDemo(c.App.Writer, dir)
		},
	}
}

// demoTour runs each step of the demo in dir; its files are named relative to dir in what it prints, which is
// exactly the command a user would type there.
type demoTour struct {
	out  io.Writer
	dir  string
	step int
}

func (d *demoTour) say(command, what string) {
	d.step++
	fmt.Fprintf(d.out, "\n%d. %s\n   $ %s\n", d.step, what, command)
}

func (d *demoTour) path(name string) string { return filepath.Join(d.dir, name) }

func runDemo(out io.Writer, dir string) error {
	d := &demoTour{out: out, dir: dir}

	d.say("(embedded)", "write the embedded model in Hugging Face layout")
	if err := extract(d.path("tiny-llama")); err != nil {
		return err
	}
	fmt.Fprintln(out, "   tiny-llama/: config.json, model.safetensors (BF16), tokenizer.model, tokenizer_config.json")

	d.say("lathe inspect tiny-llama", "inspect it: only the header is read")
	if err := d.describe("tiny-llama"); err != nil {
		return err
	}

	d.say("lathe cast tiny-llama f32.safetensors --dtype f32", "widen BF16 to F32")
	if err := castFile(d.path("tiny-llama/model.safetensors"), d.path("f32.safetensors"), tensor.F32); err != nil {
		return err
	}
	if err := d.describe("f32.safetensors"); err != nil {
		return err
	}

	d.say("lathe cast f32.safetensors bf16.safetensors --dtype bf16", "narrow back to BF16: every BF16 value is exact in F32")
	if err := castFile(d.path("f32.safetensors"), d.path("bf16.safetensors"), tensor.BF16); err != nil {
		return err
	}
	if err := sameFiles(d.path("tiny-llama/model.safetensors"), d.path("bf16.safetensors")); err != nil {
		return err
	}
	fmt.Fprintln(out, "   bf16.safetensors is byte-identical to tiny-llama/model.safetensors")

	d.say("lathe convert tiny-llama -o tiny.gguf", "convert to GGUF for llama.cpp: tensor names, Q/K row permutation, tokenizer")
	if err := hfToGGUFFile(d.path("tiny-llama"), d.path("tiny.gguf")); err != nil {
		return err
	}
	if err := d.describe("tiny.gguf"); err != nil {
		return err
	}

	for _, typ := range []string{"Q8_0", "Q4_K_M"} {
		name := "tiny-" + strings.ToLower(typ) + ".gguf"
		d.say("lathe quantize tiny.gguf "+name+" --type "+typ+" --report",
			"quantize with llama-quantize's "+typ+" recipe, its per-tensor types and shape fallbacks included")
		report, err := quantizeFile(d.path("tiny.gguf"), d.path(name), typ)
		if err != nil {
			return err
		}
		if err := d.describe(name); err != nil {
			return err
		}
		fmt.Fprintf(out, "   error against the source: SNR %.1f dB, cosine %.6f, max abs %.4g\n",
			report.Total.SNR, report.Total.Cosine, report.Total.MaxAbs)
	}

	d.say("lathe convert tiny-q8_0.gguf -o back", "and back to a Hugging Face directory: Q/K rows un-permuted, blocks decoded")
	if err := ggufToHF(d.path("tiny-q8_0.gguf"), d.path("back")); err != nil {
		return err
	}
	if err := d.describe("back"); err != nil {
		return err
	}

	d.say("lathe inspect --stats tiny-llama; lathe inspect --stats tiny-q4_k_m.gguf", "statistics of one tensor before and after Q4_K_M")
	for _, path := range []string{"tiny-llama", "tiny-q4_k_m.gguf"} {
		m, err := modelfile.Open(d.path(path))
		if err != nil {
			return err
		}
		name := "model.layers.0.mlp.down_proj.weight"
		if m.Format == modelfile.GGUF {
			name = "blk.0.ffn_down.weight"
		}
		st, err := m.Stats(name)
		m.Close()
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "   %-18s %-36s mean %+.6f  std %.6f  absmax %.6f\n", path, name, st.Mean, st.Std, st.AbsMax)
	}
	fmt.Fprintln(out, "\ndone: each step is one lathe command; `lathe help` lists them all.")
	return nil
}

func (d *demoTour) describe(name string) error {
	m, err := modelfile.Open(d.path(name))
	if err != nil {
		return err
	}
	defer m.Close()
	r, err := m.Report(modelfile.ReportOptions{})
	if err != nil {
		return err
	}
	var types []string
	for _, t := range r.DTypes {
		types = append(types, fmt.Sprintf("%d %s", t.Tensors, t.DType))
	}
	fmt.Fprintf(d.out, "   %s: %s, %d tensors (%s), %s parameters, %.2f bits per weight, %s bytes\n", name, r.Format,
		r.TensorCount, strings.Join(types, ", "), thousands(r.Parameters), r.BitsPerWeight, thousands(r.FileBytes))
	return nil
}

// extract writes the embedded model files into dir.
func extract(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return fs.WalkDir(demo.Files, "tiny", func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		data, err := demo.Files.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, filepath.Base(path)), data, 0o644)
	})
}

func castFile(in, out string, dtype tensor.DType) error {
	m, err := safetensors.Open(in)
	if err != nil {
		return err
	}
	defer m.Close()
	return writeOutput(out, func(w io.Writer) error { return convert.Cast(w, m, dtype, convert.CastOptions{}) })
}

func hfToGGUFFile(in, out string) error {
	m, err := convert.OpenHF(in)
	if err != nil {
		return err
	}
	defer m.Close()
	return writeOutput(out, func(w io.Writer) error { return convert.ToGGUF(w, m, convert.GGUFOptions{}) })
}

func quantizeFile(in, out, typ string) (*convert.QuantReport, error) {
	ft, err := convert.ParseQuantType(typ)
	if err != nil {
		return nil, err
	}
	f, err := gguf.Open(in)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var report convert.QuantReport
	err = writeOutput(out, func(w io.Writer) error {
		return convert.Quantize(w, f, convert.QuantizeOptions{Type: ft, Report: &report})
	})
	return &report, err
}

func ggufToHF(in, dir string) error {
	f, err := gguf.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	return convert.ToHF(dir, f, convert.HFOptions{})
}

// writeOutput runs write against a new output file that only appears once write has succeeded.
func writeOutput(path string, write func(io.Writer) error) error {
	o, err := createOutput(path, false)
	if err != nil {
		return err
	}
	defer o.abort()
	if err := write(o); err != nil {
		return err
	}
	return o.commit()
}

func sameFiles(a, b string) error {
	x, err := os.ReadFile(a)
	if err != nil {
		return err
	}
	y, err := os.ReadFile(b)
	if err != nil {
		return err
	}
	if !bytes.Equal(x, y) {
		return fmt.Errorf("demo: %s and %s differ", a, b)
	}
	return nil
}
