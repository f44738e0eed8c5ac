package main

import (
	"fmt"
	"os"
	"runtime"

	"github.com/lathe-ml/lathe/tokenizer"
	"github.com/lathe-ml/lathe/train"
	"github.com/urfave/cli/v2"
)

func trainCommand() *cli.Command {
	return &cli.Command{
		Name:      "train",
		Usage:     "fine-tune a LoRA adapter on a text file",
		ArgsUsage: "MODEL",
		Description: "MODEL is a GGUF file (any weight type: quantized weights are decoded on the fly, QLoRA-style) or a\n" +
			"Hugging Face model directory. The text is tokenized once with BOS; each step takes --batch windows of\n" +
			"--ctx+1 consecutive tokens at random offsets and lowers their mean next-token loss with AdamW at a\n" +
			"constant learning rate. LoRA factors go on q, k, v, o, gate, up and down of every layer (A\n" +
			"Kaiming-uniform, B zero, scale alpha/rank, as PEFT initialises them). The result is a PEFT adapter\n" +
			"directory, which lathe eval --adapter, PEFT and lathe adapters convert read. The same flags and data give\n" +
			"the same adapter.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data", Required: true, Usage: "training text file"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "adapter directory to write"},
			&cli.IntFlag{Name: "rank", Value: 8, Usage: "LoRA rank"},
			&cli.Float64Flag{Name: "alpha", Value: 16, Usage: "LoRA alpha (the update is scaled by alpha/rank)"},
			&cli.IntFlag{Name: "steps", Value: 100, Usage: "optimizer steps"},
			&cli.Float64Flag{Name: "lr", Value: 1e-3, Usage: "AdamW learning rate"},
			&cli.Float64Flag{Name: "weight-decay", Usage: "AdamW decoupled weight decay"},
			&cli.IntFlag{Name: "batch", Value: 8, Usage: "windows per step"},
			&cli.IntFlag{Name: "ctx", Value: 256, Usage: "tokens per window"},
			&cli.Uint64Flag{Name: "seed", Usage: "seed of the initialisation and of the window offsets"},
			&cli.IntFlag{Name: "threads", Usage: "threads to use (default: all cores)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("train: expected MODEL, got %d arguments", c.NArg())
			}
			if n := c.Int("threads"); n > 0 {
				runtime.GOMAXPROCS(n)
			}
			for _, f := range []string{"rank", "steps", "batch", "ctx"} {
				if c.Int(f) <= 0 {
					return fmt.Errorf("train: --%s %d: must be positive", f, c.Int(f))
				}
			}
			m, err := train.Open(c.Args().Get(0))
			if err != nil {
				return err
			}
			defer m.Close()
			text, err := os.ReadFile(c.String("data"))
			if err != nil {
				return err
			}
			tokens := m.Tokenizer.Encode(string(text), tokenizer.AddSpecial)
			w := c.App.ErrWriter
			opts := train.TrainOptions{Rank: c.Int("rank"), Alpha: c.Float64("alpha"), Steps: c.Int("steps"),
				LR: c.Float64("lr"), WeightDecay: c.Float64("weight-decay"), Batch: c.Int("batch"),
				Ctx: c.Int("ctx"), Seed: c.Uint64("seed"),
				Log: func(s train.StepLog) {
					fmt.Fprintf(w, "step %d/%d: loss %.4f, %.0f tokens/s\n", s.Step, c.Int("steps"), s.Loss, s.TokensSec)
				}}
			l, _, err := train.Train(m, &train.Stream{Tokens: tokens}, opts)
			if err != nil {
				return fmt.Errorf("train: %s: %w", c.String("data"), err)
			}
			if err := l.WritePEFT(c.String("output")); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "wrote %s (rank %d, alpha %g, %d steps on %d tokens)\n", c.String("output"),
				opts.Rank, opts.Alpha, opts.Steps, len(tokens))
			return nil
		},
	}
}
