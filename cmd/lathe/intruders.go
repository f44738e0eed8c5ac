package main

import (
	"fmt"
	"io"

	"github.com/lathe-ml/lathe/audit"
	"github.com/lathe-ml/lathe/spectral"
	"github.com/urfave/cli/v2"
)

func reduceIntrudersCommand() *cli.Command {
	d := spectral.DefaultMitigationOptions()
	return &cli.Command{
		Name:      "reduce-intruders",
		Usage:     "damp a LoRA adapter's intruder dimensions and write the result as a new adapter",
		ArgsUsage: "ADAPTER",
		Description: "PEFT's reduce_intruder_dimension: for each module, the top --k singular vectors of W + ΔW whose best |cos|\n" +
			"with the base's singular vectors is below --epsilon are scaled by --lambda, and the new update is refactored\n" +
			"to the adapter's rank. ADAPTER must be a PEFT directory; the output directory gets the same\n" +
			"adapter_config.json and an adapter_model.safetensors with the same names, shapes and dtypes.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "base", Required: true, Usage: "the base model the adapter is for"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "directory for the new adapter"},
			&cli.Float64Flag{Name: "lambda", Value: d.Lambda, Usage: "fraction of each intruder direction kept"},
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output"},
		}, analysisFlags()...),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("reduce-intruders: expected one ADAPTER, got %d arguments", c.NArg())
			}
			opts, err := analysisOptions(c)
			if err != nil {
				return fmt.Errorf("reduce-intruders: %w", err)
			}
			opts.Progress = progress("reduce-intruders")
			mo := spectral.MitigationOptions{IntruderOptions: opts.Intruders, Lambda: c.Float64("lambda")}
			r, err := audit.ReduceIntruders(c.Args().First(), c.String("base"), c.String("output"), mo, opts)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return writeJSON(c.App.Writer, r)
			}
			printMitigation(c.App.Writer, r)
			return nil
		},
	}
}

func printMitigation(out io.Writer, r *audit.Mitigation) {
	changed := 0
	for _, m := range r.Modules {
		switch {
		case m.Skipped != "":
			fmt.Fprintf(out, "%s: copied unchanged (%s)\n", printable(m.Name), m.Skipped)
		case len(m.Intruders) > 0:
			changed++
			fmt.Fprintf(out, "%s: %d intruder dimensions %v scaled by %g\n", printable(m.Name), len(m.Intruders), m.Intruders, r.Lambda)
		}
	}
	fmt.Fprintf(out, "%d intruder dimensions in %d of %d modules (k = %d, ε = %g); wrote %s\n", r.Intruders, changed,
		len(r.Modules), r.K, r.Epsilon, r.Out)
}
