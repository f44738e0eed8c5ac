package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/urfave/cli/v2"
)

func adaptersCommand() *cli.Command {
	return &cli.Command{
		Name:  "adapters",
		Usage: "operate on LoRA adapters",
		Subcommands: []*cli.Command{{
			Name:      "combine",
			Usage:     "combine LoRA adapters into one",
			ArgsUsage: "ADAPTER... -o OUT_DIR",
			Description: "Writes a PEFT adapter directory whose update is exactly Σ wᵢ·ΔWᵢ (method linear: the factors are\n" +
				"concatenated along the rank, each adapter's scaling folded in, so the rank is the sum of the ranks and there\n" +
				"are no cross terms). Inputs are PEFT or mlx-lm adapter directories.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "output adapter directory"},
				&cli.StringFlag{Name: "method", Value: "linear", Usage: "combination method: linear"},
				&cli.StringFlag{Name: "weights", Usage: "comma-separated weight per adapter (default 1 each)"},
			},
			Action: func(c *cli.Context) error {
				if c.NArg() < 1 {
					return fmt.Errorf("adapters combine: expected at least one adapter")
				}
				if m := c.String("method"); m != "linear" {
					return fmt.Errorf("adapters combine: --method %q: only linear is implemented", m)
				}
				weights := make([]float64, c.NArg())
				for i := range weights {
					weights[i] = 1
				}
				if s := c.String("weights"); s != "" {
					parts := strings.Split(s, ",")
					if len(parts) != c.NArg() {
						return fmt.Errorf("adapters combine: --weights has %d values for %d adapters", len(parts), c.NArg())
					}
					for i, p := range parts {
						w, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
						if err != nil {
							return fmt.Errorf("adapters combine: --weights value %d %q: not a number", i+1, p)
						}
						weights[i] = w
					}
				}
				var in []*adapter.Adapter
				for _, path := range c.Args().Slice() {
					a, err := adapter.Open(path)
					if err != nil {
						return err
					}
					defer a.Close()
					in = append(in, a)
				}
				return adapter.CombineLinear(c.String("output"), in, weights)
			},
		}},
	}
}
