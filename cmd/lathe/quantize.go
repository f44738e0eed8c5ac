package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/tensor"
	"github.com/urfave/cli/v2"
)

func quantizeCommand() *cli.Command {
	return &cli.Command{
		Name:      "quantize",
		Usage:     "quantize a GGUF model (or a Hugging Face checkpoint) with llama-quantize's recipes, byte for byte",
		ArgsUsage: "IN OUT",
		Description: "IN is a GGUF file (the first of a split set opens the set), - for standard input, or a Hugging Face\n" +
			"model directory, converted and quantized in one pass. OUT is a file or - for standard output; it is\n" +
			"not needed with --dry-run. Types, tensor order and metadata follow llama-quantize.",
		Flags: []cli.Flag{
			forceFlag(),
			&cli.StringFlag{Name: "type", Required: true, Usage: "recipe: Q4_K_M, Q8_0, IQ4_XS, ... (llama-quantize names or numbers)"},
			&cli.GenericFlag{Name: "tensor-type", Value: &stringList{}, Usage: "REGEX=TYPE for tensors whose name matches (repeatable; first match wins)"},
			&cli.StringFlag{Name: "output-tensor-type", Usage: "type of output.weight"},
			&cli.StringFlag{Name: "token-embedding-type", Usage: "type of token_embd.weight"},
			&cli.BoolFlag{Name: "pure", Usage: "no mixture: every quantizable tensor gets the recipe's base type"},
			&cli.BoolFlag{Name: "leave-output-tensor", Usage: "keep output.weight in its type"},
			&cli.BoolFlag{Name: "allow-requantize", Usage: "accept quantized inputs (dequantized first; loses quality)"},
			&cli.StringFlag{Name: "imatrix", Usage: "importance matrix from llama-imatrix (GGUF or legacy .dat)"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print the per-tensor plan (types, sizes, bits per weight) and stop"},
			&cli.BoolFlag{Name: "report", Usage: "print each tensor's error against its source: RMSE, max, SNR, cosine"},
			&cli.BoolFlag{Name: "json", Usage: "print the plan or the report as JSON"},
			&cli.IntFlag{Name: "threads", Usage: "threads to use (default: all cores)"},
			&cli.Float64Flag{Name: "target-bpw", Usage: "choose each tensor's type from measured error for this many bits per weight (GGUF input)"},
			&cli.StringFlag{Name: "target-size", Usage: "as --target-bpw for a size of tensor data: bytes, or a whole number with K, M or G (powers of 1024)"},
		},
		Action: func(c *cli.Context) error {
			dry := c.Bool("dry-run")
			if n := c.NArg(); n != 2 && !(dry && n == 1) {
				return fmt.Errorf("quantize: expected IN and OUT, got %d arguments", n)
			}
			if n := c.Int("threads"); n > 0 {
				runtime.GOMAXPROCS(n)
			}
			opts, err := quantizeOptions(c)
			if err != nil {
				return err
			}
			src, err := openQuantizeInput(c.Args().Get(0))
			if err != nil {
				return err
			}
			defer src.close()
			if c.IsSet("target-bpw") || c.IsSet("target-size") {
				b, err := budgetPlan(c, src, opts)
				if err != nil {
					return err
				}
				if dry {
					if c.Bool("json") {
						return writeJSON(c.App.Writer, b)
					}
					printBudget(c.App.Writer, b)
					return nil
				}
				opts = b.Apply(opts)
			}
			if dry {
				plan, err := src.plan(opts)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, plan)
				}
				printPlan(c.App.Writer, plan)
				return nil
			}
			outPath := c.Args().Get(1)
			out, err := createOutput(outPath, c.Bool("force"), c.Args().Get(0))
			if err != nil {
				return err
			}
			defer out.abort()
			var report convert.QuantReport
			if c.Bool("report") {
				opts.Report = &report
			}
			opts.Progress = progress("quantize")
			if err := src.quantize(out, opts); err != nil {
				return err
			}
			if err := out.commit(); err != nil {
				return err
			}
			if !c.Bool("report") {
				return nil
			}
			w := c.App.Writer
			if outPath == "-" { // standard output holds the model
				w = c.App.ErrWriter
			}
			if c.Bool("json") {
				return writeJSON(w, report)
			}
			printQuantReport(w, &report)
			return nil
		},
	}
}

// quantizeOptions turns the flags into convert.QuantizeOptions.
func quantizeOptions(c *cli.Context) (convert.QuantizeOptions, error) {
	var opts convert.QuantizeOptions
	var err error
	if opts.Type, err = convert.ParseQuantType(c.String("type")); err != nil {
		return opts, fmt.Errorf("quantize: --type: %w", err)
	}
	for _, s := range *c.Generic("tensor-type").(*stringList) {
		rule, err := quant.ParseTensorTypeRule(s)
		if err != nil {
			return opts, fmt.Errorf("quantize: --tensor-type: %w", err)
		}
		opts.TensorTypes = append(opts.TensorTypes, rule)
	}
	for _, f := range []struct {
		flag string
		dst  *tensor.DType
	}{{"output-tensor-type", &opts.OutputType}, {"token-embedding-type", &opts.TokenEmbeddingType}} {
		if s := c.String(f.flag); s != "" {
			if *f.dst, err = quant.ParseTargetType(s); err != nil {
				return opts, fmt.Errorf("quantize: --%s: %w", f.flag, err)
			}
		}
	}
	opts.Pure, opts.LeaveOutput, opts.AllowRequantize = c.Bool("pure"), c.Bool("leave-output-tensor"), c.Bool("allow-requantize")
	if path := c.String("imatrix"); path != "" {
		if opts.Imatrix, err = convert.OpenImatrix(path); err != nil {
			return opts, err
		}
	}
	return opts, nil
}

// quantizeInput is a GGUF model or a Hugging Face directory, behind the two calls the command makes.
type quantizeInput struct {
	gguf     *gguf.File // nil for a Hugging Face directory
	plan     func(convert.QuantizeOptions) (*convert.QuantPlan, error)
	quantize func(io.Writer, convert.QuantizeOptions) error
	close    func() error
}

func openQuantizeInput(path string) (*quantizeInput, error) {
	if _, err := os.Stat(filepath.Join(path, "config.json")); err == nil {
		m, err := convert.OpenHF(path)
		if err != nil {
			return nil, err
		}
		var conv convert.GGUFOptions
		return &quantizeInput{
			plan: func(o convert.QuantizeOptions) (*convert.QuantPlan, error) { return convert.PlanQuantizeHF(m, conv, o) },
			quantize: func(w io.Writer, o convert.QuantizeOptions) error {
				return convert.QuantizeHF(w, m, conv, o)
			},
			close: m.Close,
		}, nil
	}
	m, err := modelfile.Open(path)
	if err != nil {
		return nil, err
	}
	if m.GGUF == nil {
		m.Close()
		return nil, fmt.Errorf("quantize: %s is %s; quantize reads GGUF files and Hugging Face model directories", m.Path, m.Format)
	}
	return &quantizeInput{
		gguf:     m.GGUF,
		plan:     func(o convert.QuantizeOptions) (*convert.QuantPlan, error) { return convert.PlanQuantize(m.GGUF, o) },
		quantize: func(w io.Writer, o convert.QuantizeOptions) error { return convert.Quantize(w, m.GGUF, o) },
		close:    m.Close,
	}, nil
}

func printPlan(out io.Writer, p *convert.QuantPlan) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "tensor\tshape\tfrom\tto\tsize\tbpw\t")
	for _, t := range p.Tensors {
		note := ""
		if t.Fallback {
			note += " (fallback)"
		}
		if t.RequiresImatrix {
			note += " (needs imatrix)"
		}
		fmt.Fprintf(w, "%s\t%v\t%s\t%s\t%s\t%.2f\t%s\n", t.Name, t.Shape, t.From, t.To, humanBytes(t.Bytes), t.BPW, note)
	}
	w.Flush()
	fmt.Fprintf(out, "%s: %d tensors, %s parameters: %s (%.2f bpw) -> %s (%.2f bpw)\n", p.FileTypeName,
		len(p.Tensors), humanCount(p.Elements), humanBytes(p.InputBytes), p.InputBPW, humanBytes(p.OutputBytes), p.OutputBPW)
	if p.Fallbacks > 0 {
		fmt.Fprintf(out, "%d tensors fell back to another type: their rows are not whole blocks\n", p.Fallbacks)
	}
	if p.NeedsImatrix {
		fmt.Fprintln(out, "quantizing will need an importance matrix (--imatrix)")
	}
}

func printQuantReport(out io.Writer, r *convert.QuantReport) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "tensor\ttype\tRMSE\tmax error\tSNR dB\tcosine\t")
	row := func(e convert.QuantError, typ string) {
		fmt.Fprintf(w, "%s\t%s\t%.4g\t%.4g\t%.2f\t%.6f\t\n", e.Name, typ, e.RMSE, e.MaxAbs, e.SNR, e.Cosine)
	}
	for _, e := range r.Tensors {
		row(e, e.From.String()+" -> "+e.To.String())
	}
	row(r.Total, "")
	w.Flush()
}

// stringList is a repeatable string flag that, unlike cli.StringSliceFlag, does not split values at commas: a
// --tensor-type regular expression may contain them.
type stringList []string

func (l *stringList) Set(s string) error {
	*l = append(*l, s)
	return nil
}

func (l *stringList) String() string { return strings.Join(*l, " ") }

// budgetPlan measures every candidate type of every tensor and chooses the types for --target-bpw or --target-size.
func budgetPlan(c *cli.Context, src *quantizeInput, opts convert.QuantizeOptions) (*convert.Budget, error) {
	if c.IsSet("target-bpw") && c.IsSet("target-size") {
		return nil, fmt.Errorf("quantize: give --target-bpw or --target-size, not both")
	}
	if src.gguf == nil {
		return nil, fmt.Errorf("quantize: --target-bpw and --target-size read GGUF input; convert the model first")
	}
	var target int64
	if c.IsSet("target-size") {
		var err error
		if target, err = parseSize(c.String("target-size")); err != nil {
			return nil, fmt.Errorf("quantize: --target-size: %w", err)
		}
	}
	bpw := c.Float64("target-bpw")
	if c.IsSet("target-bpw") && !(bpw > 0 && bpw <= 32) {
		return nil, fmt.Errorf("quantize: --target-bpw %v: want a number of bits per weight in (0, 32]", bpw)
	}
	b, err := convert.MeasureBudget(src.gguf, convert.BudgetOptions{Quantize: opts, Progress: progress("measure")})
	if err != nil {
		return nil, err
	}
	if c.IsSet("target-bpw") {
		target = b.BPWBytes(bpw)
	}
	return b, b.Allocate(target)
}

// printBudget shows the budgeted plan beside the recipe's, tensor by tensor, with bits per weight and errors.
func printBudget(out io.Writer, b *convert.Budget) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "tensor\trecipe\tbpw\terror\tbudget\tbpw\terror\t")
	for _, t := range b.Tensors {
		r, o := t.Options[t.Recipe], t.Options[t.Chosen]
		bpw := func(n int64) float64 { return 8 * float64(n) / float64(max(t.Elements, 1)) }
		fmt.Fprintf(w, "%s\t%s\t%.2f\t%.4g\t%s\t%.2f\t%.4g\t\n", t.Name, r.Type, bpw(r.Bytes), r.Error, o.Type, bpw(o.Bytes), o.Error)
	}
	bytes, errSum, rBytes, rErr := b.Totals()
	bpw := func(n int64) float64 { return 8 * float64(n) / float64(max(b.Elements, 1)) }
	fmt.Fprintf(w, "total\t%s\t%.2f\t%.4g\t%s\t%.2f\t%.4g\t\n", humanBytes(rBytes), bpw(rBytes), rErr, humanBytes(bytes), bpw(bytes), errSum)
	w.Flush()
	kind := "squared error"
	if b.Weighted {
		kind = "importance-weighted squared error"
	}
	fmt.Fprintf(out, "budget %s: %s; recipe %s\n", humanBytes(b.Target), kind, humanBytes(rBytes))
}
