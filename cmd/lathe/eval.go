package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/lathe-ml/lathe/train"
	"github.com/urfave/cli/v2"
)

func evalCommand() *cli.Command {
	return &cli.Command{
		Name:      "eval",
		Usage:     "perplexity of a model on a text, scored exactly as llama-perplexity scores it",
		ArgsUsage: "MODEL",
		Description: "MODEL is a GGUF file or a Hugging Face model directory. The text is tokenized once with BOS and cut\n" +
			"into chunks of --ctx tokens; each chunk starts with BOS and only its second half is scored. The running\n" +
			"estimate is printed after each chunk, as llama-perplexity prints it. A --data file ending in .jsonl is\n" +
			"read as one {\"text\": ...} record per line and gets the plain mean next-token loss instead.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "data", Required: true, Usage: "text file (or .jsonl of {\"text\": ...} records)"},
			&cli.IntFlag{Name: "ctx", Value: 256, Usage: "tokens per chunk"},
			&cli.IntFlag{Name: "chunks", Usage: "evaluate only the first N chunks"},
			&cli.IntFlag{Name: "batch", Value: 2048, Usage: "tokens per forward pass (chunks are batched)"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
		}, runtimeFlags()...),
		Action: func(c *cli.Context) error {
			m, err := openRuntime(c, "eval")
			if err != nil {
				return err
			}
			defer m.Close()
			data := c.String("data")
			if strings.HasSuffix(data, ".jsonl") {
				texts, err := train.LoadTexts(data)
				if err != nil {
					return err
				}
				r, err := train.MeanLoss(m, texts, c.Int("ctx"))
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, r)
				}
				fmt.Fprintf(c.App.Writer, "mean loss = %.4f nats/token (perplexity %.4f) over %d tokens of %d texts\n",
					r.Loss, r.PPL, r.Scored, r.Texts)
				return nil
			}
			text, err := os.ReadFile(data)
			if err != nil {
				return err
			}
			opts := train.PerplexityOptions{Ctx: c.Int("ctx"), Chunks: c.Int("chunks"), Batch: c.Int("batch")}
			w := c.App.Writer
			if !c.Bool("json") {
				opts.Progress = func(chunk int, ppl float64) { fmt.Fprintf(w, "[%d]%.4f,", chunk, ppl) }
			}
			r, err := train.Perplexity(m, string(text), opts)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return writeJSON(w, r)
			}
			fmt.Fprintf(w, "\nFinal estimate: PPL = %.4f +/- %.5f (%d chunks of %d tokens, %d predictions)\n",
				r.PPL, r.Err, r.Chunks, r.Ctx, r.Scored)
			return nil
		},
	}
}
