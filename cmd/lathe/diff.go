package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/tensor"
	"github.com/urfave/cli/v2"
)

func diffCommand() *cli.Command {
	return &cli.Command{
		Name: "diff",
		// Without it urfave/cli gives the command a "help" subcommand, which shell completion would offer
		// where a file name is expected.
		HideHelpCommand: true,
		Usage:           "compare the tensors of two models: names, dtypes, shapes and values",
		ArgsUsage:       "A B",
		Description: "A and B are files, directories or URLs in any format lathe reads, of any dtypes: values are\n" +
			"decoded to float32 (block types dequantized) and compared in float64. For each tensor in both it\n" +
			"reports the largest absolute difference, the relative error ‖a−b‖/‖a‖ (Frobenius norms) and the\n" +
			"cosine similarity; tensors are paired by name, or with --map llama across Hugging Face and GGUF names.\n" +
			"Exits 1 when the models differ beyond the tolerance: a tensor in one model only, a shape change, a\n" +
			"NaN or Inf in one model only, or values further apart than --tol (and, if given, --rel-tol).",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output"},
			&cli.Float64Flag{Name: "tol", Usage: "accept a tensor whose largest absolute difference is at most `TOL` (0: identical values)"},
			&cli.Float64Flag{Name: "rel-tol", Usage: "also accept a tensor whose relative error is at most `REL`, whatever --tol says"},
			&cli.StringFlag{Name: "map", Usage: "pair tensors across naming schemes: `NAME` is llama (a Hugging Face checkpoint " +
				"against its GGUF conversion, undoing the q/k row permutation)"},
			&cli.IntFlag{Name: "threads", Usage: "compare `N` tensors at once (default: all cores)"},
		}, httpFlags()...),
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return fmt.Errorf("diff: expected two models A and B, got %d arguments", c.NArg())
			}
			a, err := openModel(c, c.Args().Get(0))
			if err != nil {
				return err
			}
			defer a.Close()
			b, err := openModel(c, c.Args().Get(1))
			if err != nil {
				return err
			}
			defer b.Close()
			opts := modelfile.DiffOptions{Tol: c.Float64("tol"), RelTol: c.Float64("rel-tol"), Threads: c.Int("threads")}
			switch m := c.String("map"); m {
			case "":
			case "llama":
				if opts.Map, err = modelfile.LlamaMapping(a, b); err != nil {
					return fmt.Errorf("diff: --map llama: %w", err)
				}
			default:
				return fmt.Errorf("diff: --map %q: the only mapping is llama", m)
			}
			if !c.Bool("json") {
				opts.Progress = progress("diff")
			}
			r, err := modelfile.Diff(a, b, opts)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				err = writeJSON(c.App.Writer, r)
			} else {
				printDiff(c.App.Writer, r, a, b)
			}
			if err == nil && r.Differs {
				err = checkFailed{fmt.Sprintf("%s and %s differ (%s)", r.A, r.B, diffSummary(r))}
			}
			return err
		},
	}
}

func printDiff(out io.Writer, r *modelfile.DiffReport, a, b *modelfile.Model) {
	fmt.Fprintf(out, "a: %s (%s, %d tensors)\nb: %s (%s, %d tensors)\n", r.A, a.Format, len(a.Tensors), r.B, b.Format,
		len(b.Tensors))
	if len(r.OnlyInA) > 0 {
		fmt.Fprintf(out, "only in a: %s\n", strings.Join(printableAll(r.OnlyInA), ", "))
	}
	if len(r.OnlyInB) > 0 {
		fmt.Fprintf(out, "only in b: %s\n", strings.Join(printableAll(r.OnlyInB), ", "))
	}
	// Identical tensors are only counted: the table is for what changed.
	var changed []modelfile.TensorDiff
	for _, d := range r.Tensors {
		if !d.Identical || d.DTypeA != d.DTypeB {
			changed = append(changed, d)
		}
	}
	if len(changed) > 0 {
		fmt.Fprintln(out)
		w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "name\tdtype\tshape\tmax abs diff\trel error\tcosine\t")
		for _, d := range changed {
			name := printable(d.Name)
			if d.NameB != "" {
				name += " ~ " + printable(d.NameB)
			}
			dtype := d.DTypeA.String()
			if d.DTypeB != d.DTypeA {
				dtype += " → " + d.DTypeB.String()
			}
			if !d.Compared {
				fmt.Fprintf(w, "%s\t%s\t%v → %v\tshape changed\t\t\t\n", name, dtype, d.ShapeA, d.ShapeB)
				continue
			}
			status := ""
			switch {
			case d.NonFinite > 0:
				status = fmt.Sprintf("%d NaN/Inf in one model only", d.NonFinite)
			case !d.Within:
				status = "beyond tolerance"
			}
			fmt.Fprintf(w, "%s\t%s\t%v\t%.4g\t%.4g\t%.6f\t%s\n", name, dtype, tensor.Shape(d.ShapeA), d.MaxAbsDiff,
				d.RelError, d.Cosine, status)
		}
		w.Flush()
	}
	fmt.Fprintf(out, "\n%s\n", diffSummary(r))
}

// diffSummary counts what Diff found: "57 tensors in both: 40 identical, 15 within tolerance, 2 beyond".
func diffSummary(r *modelfile.DiffReport) string {
	var identical, within, beyond int
	for _, d := range r.Tensors {
		switch {
		case d.Identical:
			identical++
		case d.Within:
			within++
		default:
			beyond++
		}
	}
	s := fmt.Sprintf("%d tensors in both: %d identical, %d within tolerance, %d beyond (tol %g", len(r.Tensors),
		identical, within, beyond, r.Tol)
	if r.RelTol > 0 {
		s += fmt.Sprintf(", rel-tol %g", r.RelTol)
	}
	s += ")"
	if n := len(r.OnlyInA) + len(r.OnlyInB); n > 0 {
		s += fmt.Sprintf("; %d only in a, %d only in b", len(r.OnlyInA), len(r.OnlyInB))
	}
	return s
}

func printableAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = printable(n)
	}
	return out
}
