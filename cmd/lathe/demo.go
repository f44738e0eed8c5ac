package main

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/lathe-ml/lathe/convert"
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
		Description: "Writes the embedded model (a 125K-parameter Llama in Hugging Face layout) to a directory and runs\n" +
			"lathe's main jobs on it, printing what each step did. Nothing outside that directory is touched.",
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

func runDemo(out io.Writer, dir string) error {
	step := 0
	say := func(format string, args ...any) {
		step++
		fmt.Fprintf(out, "\n%d. "+format+"\n", append([]any{step}, args...)...)
	}

	hf := filepath.Join(dir, "tiny-llama")
	say("write the embedded model (Hugging Face layout) to %s", hf)
	if err := extract(hf); err != nil {
		return err
	}
	src := filepath.Join(hf, "model.safetensors")
	m, err := modelfile.Open(src)
	if err != nil {
		return err
	}
	r, err := m.Report(modelfile.ReportOptions{})
	m.Close()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "   config.json + model.safetensors, %s bytes\n", thousands(r.FileBytes))

	say("inspect it: lathe inspect %s", src)
	fmt.Fprintf(out, "   %d tensors, %s parameters, %s (header %s bytes)\n", r.TensorCount, thousands(r.Parameters),
		dtypeList(r.DTypes), thousands(r.HeaderBytes))

	f32 := filepath.Join(dir, "model-f32.safetensors")
	say("widen BF16 to F32: lathe cast %s %s --dtype f32", src, f32)
	if err := castFile(src, f32, tensor.F32); err != nil {
		return err
	}
	if err := describe(out, f32); err != nil {
		return err
	}

	back := filepath.Join(dir, "model-bf16-again.safetensors")
	say("narrow F32 back to BF16 and compare with the original: every BF16 value is exact in F32")
	if err := castFile(f32, back, tensor.BF16); err != nil {
		return err
	}
	same, err := sameFile(src, back)
	if err != nil {
		return err
	}
	if !same {
		return fmt.Errorf("demo: %s differs from %s after a BF16 → F32 → BF16 round trip", back, src)
	}
	fmt.Fprintln(out, "   byte-identical to the original file")

	f16 := filepath.Join(dir, "model-f16.safetensors.zst")
	say("cast to F16, compressed with zstd: lathe cast %s %s --dtype f16", src, f16)
	if err := castFile(src, f16, tensor.F16); err != nil {
		return err
	}
	if err := describe(out, f16); err != nil {
		return err
	}

	name := "model.layers.0.mlp.down_proj.weight"
	say("statistics of one tensor in BF16 and F16: lathe inspect --stats")
	for _, path := range []string{src, f16} {
		m, err := modelfile.Open(path)
		if err != nil {
			return err
		}
		st, err := m.Stats(name)
		m.Close()
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "   %-28s mean %+.6f  std %.6f  absmax %.6f\n", filepath.Base(path), st.Mean, st.Std, st.AbsMax)
	}
	fmt.Fprintln(out, "\ndone: every step above is one lathe command; see README.md for the full list.")
	return nil
}

// extract writes the embedded model files into dir.
func extract(dir string) error {
	return fs.WalkDir(demo.Files, "tiny", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := demo.Files.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
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
	o, err := createOutput(out)
	if err != nil {
		return err
	}
	defer o.abort()
	var opts convert.CastOptions
	if filepath.Ext(out) == ".zst" {
		opts.Writer = append(opts.Writer, safetensors.Zstd())
	}
	if err := convert.Cast(o, m, dtype, opts); err != nil {
		return err
	}
	return o.commit()
}

func describe(out io.Writer, path string) error {
	m, err := modelfile.Open(path)
	if err != nil {
		return err
	}
	defer m.Close()
	r, err := m.Report(modelfile.ReportOptions{})
	if err != nil {
		return err
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "   %s: %s, %s bytes on disk\n", filepath.Base(path), dtypeList(r.DTypes), thousands(st.Size()))
	return nil
}

func dtypeList(ds []modelfile.DTypeSummary) string {
	var b bytes.Buffer
	for i, d := range ds {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d %s tensors", d.Tensors, d.DType)
	}
	return b.String()
}

func sameFile(a, b string) (bool, error) {
	x, err := os.ReadFile(a)
	if err != nil {
		return false, err
	}
	y, err := os.ReadFile(b)
	if err != nil {
		return false, err
	}
	return bytes.Equal(x, y), nil
}
