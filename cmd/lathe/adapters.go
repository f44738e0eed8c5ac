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
		Subcommands: []*cli.Command{adaptersCombineCommand(), adaptersResizeCommand(), adaptersExtractCommand(),
			adaptersConvertPiSSACommand()},
	}
}

func adaptersCombineCommand() *cli.Command {
	return &cli.Command{
		Name:      "combine",
		Usage:     "combine LoRA adapters into one",
		ArgsUsage: "ADAPTER... -o OUT_DIR",
		Description: "Writes a PEFT adapter directory combining the inputs (PEFT or mlx-lm adapter directories) module by\n" +
			"module, each input's scaling (α/r, α/√r, patterns) applied once; the result has scale 1 (lora_alpha = r).\n" +
			"Methods:\n" +
			"  linear   exactly Σ wᵢ·ΔWᵢ: factors concatenated along the rank, wᵢsᵢ folded into B; rank Σ rᵢ. PEFT's\n" +
			"           \"linear\" sums √w-weighted factors instead, with cross terms BᵢAⱼ (--factor-wise reproduces it).\n" +
			"  cat      PEFT's cat: the same update with wᵢsᵢ folded into A.\n" +
			"  svd      Σ wᵢ·ΔWᵢ truncated to --rank by SVD (computed from the factors, exactly).\n" +
			"  ties, dare_linear, dare_ties, magnitude_prune\n" +
			"           the task-vector method on the dense ΔWᵢ, then truncated to --rank by SVD (PEFT's *_svd types).\n" +
			"           --semantics peft: DARE keeps entries with probability --density and divides by it; TIES trims\n" +
			"           to the top --density by magnitude, elects the sign on the unweighted ΔWᵢ and divides by the\n" +
			"           number of agreeing adapters. --semantics mergekit: DARE rescales to the L1 norm of ΔWᵢ; TIES\n" +
			"           elects on wᵢ·ΔWᵢ and divides by the sum of the agreeing weights (dare_ties: no division);\n" +
			"           magnitude_prune is mergekit's magnitude sparsification with a plain weighted sum.\n" +
			"  lego     rank-wise k-means merge after LoRA-LEGO into --rank units per module (weights 1; the feature\n" +
			"           vector and reweighting chosen are documented at adapter.CombineLEGO).\n" +
			"SVD factors: peft B = U·S, A = Vh (PEFT's svd; --clamp is its svd_clamp quantile); mergekit B = U·√S,\n" +
			"A = √S·Vh (mergekit-extract-lora). --rank defaults to the largest input rank of each module.\n" +
			"Differences from PEFT kept deliberately: its svd types apply each scaling twice when α ≠ r, and its result\n" +
			"inherits use_rslora; lathe applies scalings once and writes use_rslora false. --factor-wise (peft only)\n" +
			"applies linear/ties/dare_*/magnitude_prune to the A and B factors separately as PEFT's non-svd types do\n" +
			"(equal ranks required, lossy by design). DARE masks are seeded by --seed: module m of adapter i draws from\n" +
			"PCG(seed, FNV-1a-64(m, i)), independent of thread count. DoRA and GGUF adapters are refused.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "output adapter directory"},
			&cli.StringFlag{Name: "method", Value: adapter.CombineLinear, Usage: "combination method: " + strings.Join(adapter.CombineMethods, ", ") + ", lego"},
			&cli.StringFlag{Name: "weights", Usage: "comma-separated weight per adapter (default 1 each)"},
			&cli.Float64Flag{Name: "density", Usage: "fraction of each ΔW kept by ties, dare_*, magnitude_prune, in (0, 1]"},
			&cli.IntFlag{Name: "rank", Usage: "output rank for svd and the task-vector methods (default: largest input rank)"},
			&cli.StringFlag{Name: "semantics", Value: "peft", Usage: "whose definitions to follow: peft or mergekit"},
			&cli.StringFlag{Name: "majority-sign", Value: "total", Usage: "TIES sign election: total (sum) or frequency (count)"},
			&cli.BoolFlag{Name: "factor-wise", Usage: "PEFT semantics: combine the A and B factors separately, as PEFT's non-svd types do"},
			&cli.Float64Flag{Name: "clamp", Usage: "PEFT's svd_clamp: clamp SVD factors to this quantile of their entries"},
			&cli.Uint64Flag{Name: "seed", Usage: "seed of the DARE masks"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 {
				return fmt.Errorf("adapters combine: expected at least one adapter")
			}
			sem, err := adapter.ParseSemantics(c.String("semantics"))
			if err != nil {
				return fmt.Errorf("adapters combine: --semantics: %w", err)
			}
			consensus, err := adapter.ParseConsensus(c.String("majority-sign"))
			if err != nil {
				return fmt.Errorf("adapters combine: --majority-sign: %w", err)
			}
			opts := adapter.CombineOptions{Method: c.String("method"), Density: c.Float64("density"), Rank: c.Int("rank"),
				Semantics: sem, Consensus: consensus, FactorWise: c.Bool("factor-wise"), Clamp: c.Float64("clamp"),
				Seed: c.Uint64("seed")}
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
					opts.Weights = append(opts.Weights, w)
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
			if opts.Method == "lego" {
				if opts.Weights != nil {
					return fmt.Errorf("adapters combine: --method lego takes no --weights")
				}
				return adapter.CombineLEGO(c.String("output"), in, opts.Rank, opts.Seed)
			}
			return adapter.Combine(c.String("output"), in, opts)
		},
	}
}
