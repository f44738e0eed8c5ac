package main

import (
	"fmt"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/urfave/cli/v2"
)

// adaptersResizeCommand is `lathe adapters resize`.
func adaptersResizeCommand() *cli.Command {
	return &cli.Command{
		Name:      "resize",
		Usage:     "change the rank of a LoRA adapter by SVD of each update",
		ArgsUsage: "ADAPTER --rank R -o OUT_DIR",
		Description: "Writes a PEFT adapter whose every module holds the best rank-R approximation of the input's update\n" +
			"ΔW = s·B·A (modules of lower rank keep theirs), the singular values split evenly onto both factors, with\n" +
			"lora_alpha = r (scale 1). The SVD comes from the factors (QR of B and Aᵀ, SVD of the r×r core), never from the\n" +
			"dense ΔW. Prints the energy (Σ kept σ² / Σ σ²) each module and the whole adapter retain. Input: a PEFT or\n" +
			"mlx-lm adapter directory; DoRA adapters are refused.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "output adapter directory"},
			&cli.IntFlag{Name: "rank", Aliases: []string{"r"}, Required: true, Usage: "new rank"},
			&cli.BoolFlag{Name: "json", Usage: "machine-readable report"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("adapters resize: expected one ADAPTER, got %d arguments", c.NArg())
			}
			a, err := adapter.Open(c.Args().First())
			if err != nil {
				return err
			}
			defer a.Close()
			rep, err := adapter.Resize(c.String("output"), a, c.Int("rank"))
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return writeJSON(c.App.Writer, rep)
			}
			return printEnergy(c, rep)
		},
	}
}

// printEnergy prints the energy table of a rank reduction.
func printEnergy(c *cli.Context, rep *adapter.EnergyReport) error {
	w := newTable(c.App.Writer)
	fmt.Fprintln(w, "module\trank\tnew rank\tenergy retained\t")
	for _, e := range rep.Modules {
		fmt.Fprintf(w, "%s\t%d\t%d\t%.6f\t\n", e.Module, e.Rank, e.NewRank, e.Retained)
	}
	fmt.Fprintf(w, "total\t\t\t%.6f\t\n", rep.Retained)
	return w.Flush()
}
