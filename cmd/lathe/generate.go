package main

import (
	"fmt"
	"io"

	"github.com/lathe-ml/lathe/tokenizer"
	"github.com/lathe-ml/lathe/train"
	"github.com/urfave/cli/v2"
)

func generateCommand() *cli.Command {
	return &cli.Command{
		Name:      "generate",
		Usage:     "continue a prompt, streaming the tokens to standard output",
		ArgsUsage: "MODEL",
		Description: "MODEL is a GGUF file or a Hugging Face model directory. The prompt is printed, then each token as it\n" +
			"is generated. --temp 0 (the default) is greedy; otherwise top-k, top-p and min-p filter the candidates\n" +
			"in llama.cpp's order before a draw that --seed makes reproducible.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "prompt", Required: true, Usage: "text to continue"},
			&cli.IntFlag{Name: "n", Value: 48, Usage: "tokens to generate at most"},
			&cli.IntFlag{Name: "ctx", Usage: "context size (default: the model's)"},
			&cli.Float64Flag{Name: "temp", Usage: "sampling temperature; 0 picks the most likely token"},
			&cli.IntFlag{Name: "top-k", Value: 40, Usage: "keep the K most likely tokens (0: all)"},
			&cli.Float64Flag{Name: "top-p", Value: 0.95, Usage: "keep the most likely tokens up to this total probability"},
			&cli.Float64Flag{Name: "min-p", Value: 0.05, Usage: "drop tokens less likely than this fraction of the best"},
			&cli.Uint64Flag{Name: "seed", Usage: "random seed of the draws"},
		}, runtimeFlags()...),
		Action: func(c *cli.Context) error {
			m, err := openRuntime(c, "generate")
			if err != nil {
				return err
			}
			defer m.Close()
			w := c.App.Writer
			prompt := c.String("prompt")
			opts := train.GenerateOptions{MaxTokens: c.Int("n"), Ctx: c.Int("ctx"), Sample: train.SampleOptions{
				Temp: float32(c.Float64("temp")), TopK: c.Int("top-k"), TopP: float32(c.Float64("top-p")),
				MinP: float32(c.Float64("min-p")), Seed: c.Uint64("seed"),
			}}
			if _, err := io.WriteString(w, prompt); err != nil {
				return err
			}
			_, err = m.Generate(m.Tokenizer.Encode(prompt, tokenizer.AddSpecial), opts, func(id int32) error {
				_, err := io.WriteString(w, m.Tokenizer.Piece(id))
				return err
			})
			fmt.Fprintln(w)
			return err
		},
	}
}
