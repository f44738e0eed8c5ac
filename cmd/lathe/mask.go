package main

import (
	"errors"
	"fmt"
	"io"
	"regexp"
	"runtime"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/prune"
	"github.com/lathe-ml/lathe/sparsity"
	"github.com/lathe-ml/lathe/tensor"
	"github.com/urfave/cli/v2"
)

func maskCommand() *cli.Command {
	return &cli.Command{
		Name:      "mask",
		Usage:     "compute masks of a model's linear weights (LIFT principal weights, magnitude, Wanda, random)",
		ArgsUsage: "MODEL",
		Description: "Writes one packed bitmask per weight matrix to a safetensors mask file (compressed-tensors'\n" +
			"bitmask layout, bit set = entry kept or selected), e.g. LIFT's sparse fine-tuning mask:\n" +
			"  lathe mask MODEL -o mask.safetensors --method principal --rank 128 --budget lora:128\n" +
			"LIFT's paper selects the largest entries of the rank-r approximation; the authors' released configs select\n" +
			"the smallest (--select smallest). `lathe mask report` and `lathe mask combine` read mask files.",
		Flags: append(selectionFlags("principal"),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "mask file to write (- for standard output)"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			forceFlag(),
		),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 || c.String("output") == "" {
				return errors.New("mask: expected MODEL and -o MASK")
			}
			opts, err := maskOptions(c)
			if err != nil {
				return fmt.Errorf("mask: %w", err)
			}
			m, err := modelfile.Open(c.Args().First())
			if err != nil {
				return err
			}
			defer m.Close()
			opts.Progress = progress("mask")
			set, err := sparsity.ComputeMasks(m, opts)
			if err != nil {
				return err
			}
			if err := writeMaskOutput(c, set, c.Args().First()); err != nil {
				return err
			}
			return printMaskReport(c, reportWriter(c), set.Report())
		},
		Subcommands: []*cli.Command{
			{
				Name:      "report",
				Usage:     "print what a mask file keeps, per tensor and in total",
				ArgsUsage: "MASK",
				Flags:     []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"}},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return errors.New("mask report: expected one MASK file")
					}
					set, err := sparsity.OpenMasks(c.Args().First())
					if err != nil {
						return err
					}
					return printMaskReport(c, c.App.Writer, set.Report())
				},
			},
			{
				Name:      "combine",
				Usage:     "intersect (and) or unite (or) mask files covering the same weights",
				ArgsUsage: "MASK MASK...",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "op", Value: "and", Usage: "and: kept by every mask; or: kept by any"},
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "mask file to write (- for standard output)"},
					&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
					forceFlag(),
				},
				Action: func(c *cli.Context) error {
					if c.NArg() < 2 || c.String("output") == "" {
						return errors.New("mask combine: expected two or more MASK files and -o OUT")
					}
					var sets []*sparsity.MaskSet
					for _, p := range c.Args().Slice() {
						s, err := sparsity.OpenMasks(p)
						if err != nil {
							return err
						}
						sets = append(sets, s)
					}
					out, err := sparsity.Combine(sparsity.CombineOp(c.String("op")), sets...)
					if err != nil {
						return err
					}
					if err := writeMaskOutput(c, out, c.Args().Slice()...); err != nil {
						return err
					}
					return printMaskReport(c, reportWriter(c), out.Report())
				},
			},
		},
	}
}

// selectionFlags are the flags that choose how masks are scored and selected, shared by mask and prune.
func selectionFlags(defaultMethod string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "method", Value: defaultMethod, Usage: "score: principal (|rank-r approximation|, LIFT), magnitude, wanda (needs --imatrix), random"},
		&cli.StringFlag{Name: "keep", Aliases: []string{"budget"}, Usage: "entries kept per group: 0.5, 50%, count:N, or lora:R (min((m+n)·R, m·n) per matrix, LIFT's budget)"},
		&cli.StringFlag{Name: "drop", Usage: "entries removed per group instead: 0.5, 50% or count:N"},
		&cli.StringFlag{Name: "structure", Usage: "N:M: keep N of every M entries along the input dimension (2:4, 4:8)"},
		&cli.StringFlag{Name: "group", Usage: "rank entries per matrix or per output row (default: row for wanda, matrix otherwise)"},
		&cli.StringFlag{Name: "select", Value: "largest", Usage: "keep the largest scores, or the smallest (LIFT's released lift_sparse configs)"},
		&cli.IntFlag{Name: "rank", Value: prune.DefaultRank, Usage: "rank r of the principal score's approximation (capped by the matrix size)"},
		&cli.StringFlag{Name: "svd", Value: "randomized", Usage: "principal score's SVD: randomized (q = 2r samples) or full (exact, slow)"},
		&cli.IntFlag{Name: "power-iters", Value: prune.DefaultPowerIters, Usage: "subspace iterations of the randomized SVD"},
		&cli.Uint64Flag{Name: "seed", Usage: "seed of random scores and of the randomized SVD"},
		&cli.StringFlag{Name: "imatrix", Usage: "llama.cpp importance matrix (GGUF or legacy .dat) giving Wanda's activation norms"},
		&cli.StringFlag{Name: "include", Usage: "mask the 2-D tensors whose name matches this regular expression, instead of the linear layers"},
		&cli.StringFlag{Name: "exclude", Usage: "leave out tensors whose name matches this regular expression"},
		&cli.IntFlag{Name: "threads", Usage: "threads to use (default: all cores)"},
	}
}

// maskOptions turns the selection flags into sparsity.Options.
func maskOptions(c *cli.Context) (sparsity.Options, error) {
	var o sparsity.Options
	if n := c.Int("threads"); n > 0 {
		runtime.GOMAXPROCS(n)
	}
	var err error
	if o.Score.Method, err = prune.ParseMethod(c.String("method")); err != nil {
		return o, fmt.Errorf("--method: %w", err)
	}
	if o.Score.SVD, err = prune.ParseSVDMode(c.String("svd")); err != nil {
		return o, fmt.Errorf("--svd: %w", err)
	}
	o.Score.Rank, o.Score.PowerIters, o.Score.Seed = c.Int("rank"), c.Int("power-iters"), c.Uint64("seed")
	if o.Score.Rank < 1 || o.Score.PowerIters < 1 {
		return o, errors.New("--rank and --power-iters must be at least 1")
	}
	keep, drop := c.String("keep"), c.String("drop")
	switch {
	case keep != "" && drop != "":
		return o, errors.New("--keep and --drop exclude each other")
	case keep != "":
		o.Selection.Budget, err = prune.ParseBudget(keep, false)
	case drop != "":
		o.Selection.Budget, err = prune.ParseBudget(drop, true)
	}
	if err != nil {
		return o, err
	}
	if o.Selection.Structure, err = prune.ParseStructure(c.String("structure")); err != nil {
		return o, err
	}
	group := c.String("group")
	if group == "" {
		group = "matrix"
		if o.Score.Method == prune.Wanda {
			group = "row"
		}
	}
	if o.Selection.Group, err = prune.ParseGroup(group); err != nil {
		return o, err
	}
	switch c.String("select") {
	case "largest":
	case "smallest":
		o.Selection.Smallest = true
	default:
		return o, fmt.Errorf("--select %q: want largest or smallest", c.String("select"))
	}
	if err := o.Selection.Check(); err != nil {
		return o, err
	}
	if p := c.String("imatrix"); p != "" {
		if o.Imatrix, err = convert.OpenImatrix(p); err != nil {
			return o, err
		}
	}
	var include, exclude *regexp.Regexp
	for _, f := range []struct {
		flag string
		re   **regexp.Regexp
	}{{"include", &include}, {"exclude", &exclude}} {
		if s := c.String(f.flag); s != "" {
			if *f.re, err = regexp.Compile(s); err != nil {
				return o, fmt.Errorf("--%s: %w", f.flag, err)
			}
		}
	}
	if include != nil || exclude != nil {
		o.Targets = func(name string, shape tensor.Shape) bool {
			chosen := sparsity.DefaultTarget(name, shape)
			if include != nil {
				chosen = len(shape) == 2 && include.MatchString(name)
			}
			return chosen && (exclude == nil || !exclude.MatchString(name))
		}
	}
	return o, nil
}

// writeMaskOutput writes set to the --output of the command, refusing to replace an input unless --force.
func writeMaskOutput(c *cli.Context, set *sparsity.MaskSet, inputs ...string) error {
	out, err := createOutput(c.String("output"), c.Bool("force"), inputs...)
	if err != nil {
		return err
	}
	defer out.abort()
	if err := sparsity.WriteMasks(out, set); err != nil {
		return err
	}
	return out.commit()
}

// reportWriter is where a command prints its report: standard output, unless the output file went there.
func reportWriter(c *cli.Context) io.Writer {
	if c.String("output") == "-" {
		return c.App.ErrWriter
	}
	return c.App.Writer
}

func printMaskReport(c *cli.Context, out io.Writer, r sparsity.MaskReport) error {
	if c.Bool("json") {
		return writeJSON(out, r)
	}
	w := newTable(out)
	fmt.Fprintln(w, "tensor\tshape\tkept\tsparsity\t")
	for _, t := range r.Tensors {
		fmt.Fprintf(w, "%s\t%v\t%s\t%.2f%%\t\n", t.Name, t.Shape, thousands(t.Kept), 100*t.Sparsity)
	}
	fmt.Fprintf(w, "total\t\t%s of %s\t%.2f%%\t\n", thousands(r.Total.Kept), thousands(r.Total.Elements), 100*r.Total.Sparsity)
	return w.Flush()
}
