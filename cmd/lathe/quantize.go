package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
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
			&cli.StringFlag{Name: "type", Usage: "recipe: Q4_K_M, Q8_0, IQ4_XS, ... (llama-quantize names or numbers), or per-group datatypes: bitmod4, bitmod3, bitmod4nl, bitmod4-paper, bitmod3-paper; required, except with --target-bpw/--target-size, whose plan starts from Q4_K_M's rules unless --type names another recipe"},
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
			&cli.IntFlag{Name: "group", Value: 128, Usage: "bitmod types: weights per group along a row"},
			&cli.IntFlag{Name: "scale-search", Value: 7, Usage: "bitmod types: least-squares scale trials on each side of the absmax scale (0: the paper's absmax)"},
			&cli.BoolFlag{Name: "id-in-scale", Value: true, Usage: "bitmod types: keep each group's type id in its scale's low mantissa bits"},
			&cli.StringFlag{Name: "fake-quant", Usage: "bitmod types: write the dequantized values as f16, bf16 or f32 instead of packed storage"},
			&cli.BoolFlag{Name: "lower", Usage: "bitmod types, GGUF in and out: give each tensor the ggml type whose error is nearest the per-group datatypes' at no more bits (others as Q4_K_M)"},
			&cli.StringFlag{Name: "budget-bitmod", Usage: "with --target-bpw/--target-size: offer these per-group datatypes (bitmod4, bitmod4nl, ...) as candidates too, at --group and --scale-search (with --lower, lowered to ggml types)"},
		},
		Action: func(c *cli.Context) error {
			dry := c.Bool("dry-run")
			if n := c.NArg(); n != 2 && !(dry && n == 1) {
				return fmt.Errorf("quantize: expected IN and OUT, got %d arguments", n)
			}
			if n := c.Int("threads"); n > 0 {
				runtime.GOMAXPROCS(n)
			}
			if !c.IsSet("type") {
				if !c.IsSet("target-bpw") && !c.IsSet("target-size") {
					return fmt.Errorf("quantize: --type is required (or --target-bpw/--target-size)")
				}
				c.Set("type", "Q4_K_M")
			}
			if types, ok := convert.ParseBitMoDType(c.String("type")); ok {
				return quantizeBitMoD(c, types)
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
				if opts, err = b.Apply(opts); err != nil {
					return err
				}
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
	bo := convert.BudgetOptions{Quantize: opts, Progress: progress("measure")}
	if name := c.String("budget-bitmod"); name != "" {
		cand, err := bitmodCandidate(c, name)
		if err != nil {
			return nil, err
		}
		bo.BitMoD = []convert.BitMoDCandidate{cand}
	}
	b, err := convert.MeasureBudget(src.gguf, bo)
	if err != nil {
		return nil, err
	}
	if c.IsSet("target-bpw") {
		target = b.BPWBytes(bpw)
	}
	if err := b.Allocate(target); err != nil {
		return nil, err
	}
	if c.Bool("lower") {
		b.Lower()
	}
	return b, nil
}

// bitmodCandidate is the per-group datatype set name at --group, --scale-search and --id-in-scale.
func bitmodCandidate(c *cli.Context, name string) (convert.BitMoDCandidate, error) {
	types, ok := convert.ParseBitMoDType(name)
	if !ok {
		return convert.BitMoDCandidate{}, fmt.Errorf("quantize: %q is not a per-group datatype set; want bitmod4, bitmod3, bitmod4nl, bitmod4-paper or bitmod3-paper", name)
	}
	g := c.Int("group")
	return convert.BitMoDCandidate{Name: fmt.Sprintf("%s-g%d", strings.ToLower(name), g), Types: types, Group: g,
		ScaleSearch: c.Int("scale-search"), IDInScale: c.Bool("id-in-scale") && quant.TypeIDBits(types) <= 4}, nil
}

// printBudget shows the budgeted plan beside the recipe's, tensor by tensor, with bits per weight and errors.
func printBudget(out io.Writer, b *convert.Budget) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "tensor\trecipe\tbpw\terror\tbudget\tbpw\terror\t")
	for _, t := range b.Tensors {
		r, o := t.Options[t.Recipe], t.Options[t.Chosen]
		bpw := func(n int64) float64 { return 8 * float64(n) / float64(max(t.Elements, 1)) }
		fmt.Fprintf(w, "%s\t%s\t%.2f\t%.4g\t%s\t%.2f\t%.4g\t\n", t.Name, r.Name(), bpw(r.Bytes), r.Error, o.Name(), bpw(o.Bytes), o.Error)
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

// quantizeBitMoD writes per-group datatypes (docs/bitmod.md) as safetensors: a Hugging Face directory gives a
// directory, a safetensors file a file.
func quantizeBitMoD(c *cli.Context, types []quant.Datatype) error {
	if c.NArg() != 2 {
		return fmt.Errorf("quantize: --type %s: expected IN and OUT, got %d arguments", c.String("type"), c.NArg())
	}
	opts := convert.BitMoDOptions{Types: types, Group: c.Int("group"), ScaleSearch: c.Int("scale-search"),
		IDInScale: c.Bool("id-in-scale") && quant.TypeIDBits(types) <= 4, Progress: progress("quantize")}
	if s := c.String("fake-quant"); s != "" {
		var err error
		if opts.FakeQuant, err = tensor.ParseDType(s); err != nil {
			return fmt.Errorf("quantize: --fake-quant: %w", err)
		}
	}
	var err error
	if path := c.String("imatrix"); path != "" {
		if opts.Imatrix, err = convert.OpenImatrix(path); err != nil {
			return err
		}
	}
	inPath, outPath := c.Args().Get(0), c.Args().Get(1)
	if c.Bool("lower") {
		return lowerBitMoD(c, inPath, outPath, opts.Imatrix)
	}
	var r *convert.BitMoDReport
	if st, err := os.Stat(inPath); err == nil && st.IsDir() {
		m, err := convert.OpenHF(inPath)
		if err != nil {
			return err
		}
		defer m.Close()
		if r, err = convert.WriteBitMoDDir(outPath, m, opts); err != nil {
			return err
		}
	} else {
		m, err := modelfile.Open(inPath)
		if err != nil {
			return err
		}
		defer m.Close()
		if m.Safetensors == nil {
			return fmt.Errorf("quantize: --type %s reads safetensors (a file or a Hugging Face directory); %s is %s", c.String("type"), m.Path, m.Format)
		}
		err = writeModelOutput(c, inPath, outPath, func(w io.Writer) (err error) {
			r, err = convert.WriteBitMoD(w, m.Safetensors, opts)
			return err
		})
		if err != nil {
			return err
		}
	}
	w := statusWriter(c, outPath)
	if c.Bool("json") {
		return writeJSON(w, r)
	}
	if c.Bool("report") {
		t := newTable(w)
		fmt.Fprintf(t, "tensor\tshape\terror\t%s\t\n", strings.Join(r.Types, "\t"))
		for _, bt := range r.Tensors {
			fmt.Fprintf(t, "%s\t%v\t%.4g\t", bt.Name, bt.Shape, bt.Error)
			for _, n := range bt.TypeCounts {
				fmt.Fprintf(t, "%d\t", n)
			}
			fmt.Fprintln(t)
		}
		t.Flush()
	}
	kind := "squared error"
	if r.Weighted {
		kind = "importance-weighted squared error"
	}
	fmt.Fprintf(w, "%s: %d tensors, %s weights at %.4f bpw (group %d), %s %.6g; %d tensors unchanged\n",
		strings.Join(r.Types, "+"), len(r.Tensors), humanCount(r.Elements), r.BPW, r.Group, kind, r.Error, len(r.Unchanged))
	return nil
}

// lowerBitMoD writes a GGUF in which every tensor the per-group datatypes apply to gets the ggml type nearest to
// their error (Budget.Lower), and every other tensor Q4_K_M's type.
func lowerBitMoD(c *cli.Context, inPath, outPath string, im *convert.Imatrix) error {
	src, err := openQuantizeInput(inPath)
	if err != nil {
		return err
	}
	defer src.close()
	if src.gguf == nil {
		return fmt.Errorf("quantize: --lower reads GGUF; convert the model first")
	}
	cand, err := bitmodCandidate(c, c.String("type"))
	if err != nil {
		return err
	}
	base := convert.QuantizeOptions{Type: gguf.FileType(15), Imatrix: im} // LLAMA_FTYPE_MOSTLY_Q4_K_M
	b, err := convert.MeasureBudget(src.gguf, convert.BudgetOptions{Quantize: base, BitMoD: []convert.BitMoDCandidate{cand},
		Types: append(slices.Clone(convert.DefaultBudgetTypes), tensor.IQ4_NL), Progress: progress("measure")})
	if err != nil {
		return err
	}
	b.ChooseBitMoD(cand.Name)
	bitmodPlan := *b
	bitmodPlan.Tensors = slices.Clone(b.Tensors)
	b.Target, _, _, _ = bitmodPlan.Totals() // the lowered plan is no larger
	b.Lower()
	opts, err := b.Apply(base)
	if err != nil {
		return err
	}
	opts.Progress = progress("quantize")
	if err := writeModelOutput(c, inPath, outPath, func(w io.Writer) error { return src.quantize(w, opts) }); err != nil {
		return err
	}
	w := statusWriter(c, outPath)
	if c.Bool("json") {
		return writeJSON(w, b)
	}
	if c.Bool("report") {
		printBudget(w, b)
	}
	_, perGroupErr, _, _ := bitmodPlan.Totals()
	bytes, lowered, _, _ := b.Totals()
	fmt.Fprintf(w, "lowered %s to ggml types: %s, error %.6g (per-group datatypes: %.6g)\n", cand.Name, humanBytes(bytes), lowered, perGroupErr)
	return nil
}

// writeModelOutput writes OUT through write and commits it only if write succeeds.
func writeModelOutput(c *cli.Context, inPath, outPath string, write func(io.Writer) error) error {
	out, err := createOutput(outPath, c.Bool("force"), inPath)
	if err != nil {
		return err
	}
	defer out.abort()
	if err := write(out); err != nil {
		return err
	}
	return out.commit()
}

// statusWriter is where a report goes: standard error when standard output holds the model.
func statusWriter(c *cli.Context, outPath string) io.Writer {
	if outPath == "-" {
		return c.App.ErrWriter
	}
	return c.App.Writer
}
