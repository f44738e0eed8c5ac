package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/train"
	"github.com/urfave/cli/v2"
)

func imatrixCommand() *cli.Command {
	return &cli.Command{
		Name:      "imatrix",
		Usage:     "compute an importance matrix from a text, as llama-imatrix does",
		ArgsUsage: "MODEL",
		Description: "MODEL is a GGUF file or a Hugging Face model directory. The text is tokenized once with BOS and cut\n" +
			"into chunks of --ctx tokens, each starting with BOS; for every weight matrix the squared input activation\n" +
			"of each column is summed over all tokens. The output is llama-imatrix's GGUF format, which\n" +
			"'lathe quantize --imatrix', 'lathe prune --method wanda --imatrix' and llama-quantize read.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "data", Required: true, Usage: "text file"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "imatrix file to write (GGUF)"},
			&cli.IntFlag{Name: "ctx", Value: 512, Usage: "tokens per chunk"},
			&cli.IntFlag{Name: "chunks", Usage: "use only the first N chunks"},
			forceFlag(),
		}, runtimeFlags()...),
		Action: func(c *cli.Context) error {
			out := c.String("output")
			if !c.Bool("force") {
				if err := refuseInput(out, []string{c.Args().First(), c.String("data")}); err != nil {
					return err
				}
			}
			m, err := openRuntime(c, "imatrix")
			if err != nil {
				return err
			}
			defer m.Close()
			data := c.String("data")
			text, err := os.ReadFile(data)
			if err != nil {
				return err
			}
			w := c.App.ErrWriter
			s, err := train.Imatrix(m, string(text), train.ImatrixOptions{
				Ctx: c.Int("ctx"), Chunks: c.Int("chunks"),
				Progress: func(chunk, chunks int) { fmt.Fprintf(w, "\rchunk %d/%d", chunk, chunks) },
			})
			fmt.Fprintln(w)
			if err != nil {
				return err
			}
			s.Datasets = []string{filepath.Base(data)}
			if err := convert.WriteImatrix(out, s); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "wrote %s: %d tensors, %d chunks of %d tokens\n", out, len(s.Sums), s.Chunks, s.ChunkSize)
			return nil
		},
	}
}
