package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/sparsity"
	"github.com/urfave/cli/v2"
)

func pruneCommand() *cli.Command {
	return &cli.Command{
		Name:      "prune",
		Usage:     "prune the linear weights of a model (principal, magnitude, Wanda, random; unstructured or N:M)",
		ArgsUsage: "MODEL",
		Description: "Writes the model in its own format and types with pruned entries set to zero (quantized GGUF tensors are\n" +
			"re-encoded to their type), or with --format sparse-bitmask in compressed-tensors' sparse layout. Masks are\n" +
			"computed from the selection flags, or read from a mask file with --mask. Examples:\n" +
			"  lathe prune model.gguf -o pruned.gguf --method magnitude --keep 0.5\n" +
			"  lathe prune hf/ -o pruned.safetensors --method wanda --imatrix imatrix.gguf --structure 2:4",
		Flags: append(selectionFlags(""),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "pruned model to write (- for standard output)"},
			&cli.StringFlag{Name: "mask", Usage: "apply the masks of this mask file instead of computing them"},
			&cli.StringFlag{Name: "mask-out", Usage: "also write the masks to this mask file"},
			&cli.StringFlag{Name: "format", Value: "dense", Usage: "dense (zeros in the input's format) or sparse-bitmask (compressed-tensors, safetensors input)"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			forceFlag(),
		),
		Action: func(c *cli.Context) error {
			outPath := c.String("output")
			if c.NArg() != 1 || outPath == "" {
				return errors.New("prune: expected MODEL and -o OUT")
			}
			write := sparsity.Prune
			switch f := c.String("format"); f {
			case "dense":
			case "sparse-bitmask":
				write = sparsity.ExportSparseBitmask
			default:
				return fmt.Errorf("prune: --format %q: want dense or sparse-bitmask", f)
			}
			m, err := modelfile.Open(c.Args().First())
			if err != nil {
				return err
			}
			defer m.Close()
			masks, wopts, err := pruneMasks(c, m)
			if err != nil {
				return err
			}
			if p := c.String("mask-out"); p == "-" {
				return errors.New("prune: --mask-out needs a file; standard output is for the model")
			} else if p != "" {
				mo, err := createOutput(p, c.Bool("force"), c.Args().First())
				if err != nil {
					return err
				}
				defer mo.abort()
				if err := sparsity.WriteMasks(mo, masks); err != nil {
					return err
				}
				if err := mo.commit(); err != nil {
					return err
				}
			}
			out, err := createOutput(outPath, c.Bool("force"), c.Args().First(), c.String("mask"))
			if err != nil {
				return err
			}
			defer out.abort()
			wopts.Progress = progress("prune")
			report, err := write(out, m, masks, wopts)
			if err != nil {
				return err
			}
			if err := out.commit(); err != nil {
				return err
			}
			w := reportWriter(c)
			if c.Bool("json") {
				return writeJSON(w, report)
			}
			return printPruneReport(w, report)
		},
	}
}

// pruneMasks reads the --mask file or computes masks from the selection flags.
func pruneMasks(c *cli.Context, m *modelfile.Model) (*sparsity.MaskSet, sparsity.WriteOptions, error) {
	var wopts sparsity.WriteOptions
	p := c.String("mask")
	if p == "" {
		if c.String("method") == "" {
			return nil, wopts, errors.New("prune: give --method (or --mask)")
		}
		opts, err := maskOptions(c)
		if err != nil {
			return nil, wopts, fmt.Errorf("prune: %w", err)
		}
		opts.Progress = progress("score")
		wopts.Imatrix = opts.Imatrix
		set, err := sparsity.ComputeMasks(m, opts)
		return set, wopts, err
	}
	for _, f := range []string{"method", "keep", "drop", "structure", "group", "select", "rank", "svd", "include", "exclude"} {
		if c.IsSet(f) {
			return nil, wopts, fmt.Errorf("prune: --mask gives the masks; --%s does not apply", f)
		}
	}
	if im := c.String("imatrix"); im != "" { // still used to re-encode quantized tensors
		var err error
		if wopts.Imatrix, err = convert.OpenImatrix(im); err != nil {
			return nil, wopts, err
		}
	}
	set, err := sparsity.OpenMasks(p)
	return set, wopts, err
}

func printPruneReport(out io.Writer, r *sparsity.PruneReport) error {
	w := newTable(out)
	fmt.Fprintln(w, "tensor\tshape\ttype\tsparsity\trel. error\t")
	for _, t := range r.Tensors {
		fmt.Fprintf(w, "%s\t%v\t%s\t%.2f%%\t%.4f\t\n", t.Name, t.Shape, t.DType, 100*t.Sparsity, t.RelError)
	}
	fmt.Fprintf(w, "total\t%s pruned\t\t%.2f%%\t%.4f\t\n", thousands(r.Total.Elements-r.Total.Kept),
		100*r.Total.Sparsity, r.Total.RelError)
	if err := w.Flush(); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(out, "model: %.2f%% of %s parameters pruned\n", 100*r.ModelSparsity,
		humanCount(r.ModelElements)); err != nil {
		return err
	}
	if pruned := r.Total.Elements - r.Total.Kept; r.Total.Zeros < pruned {
		_, err := fmt.Fprintf(out, "note: only %s entries are exactly zero: re-encoding ggml types with a block minimum "+
			"(Q4_K, Q5_K, Q4_1, ...) cannot represent 0 in every block\n", thousands(r.Total.Zeros))
		return err
	}
	return nil
}
