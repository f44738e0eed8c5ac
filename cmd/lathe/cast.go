package main

import (
	"fmt"
	"strings"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
	"github.com/urfave/cli/v2"
)

func castCommand() *cli.Command {
	return &cli.Command{
		Name:      "cast",
		Usage:     "convert the floating-point tensors of a safetensors model to another dtype",
		ArgsUsage: "IN OUT | IN -o OUT",
		Description: "IN is a safetensors file, a directory of shards, or -; OUT is a file or - for standard output.\n" +
			"Integer and boolean tensors and the metadata are copied unchanged. Rounding is to nearest even.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dtype", Required: true, Usage: "target type: f32, f16, bf16 (also f64, f8_e4m3, f8_e5m2)"},
			outputFlag(),
			forceFlag(),
			&cli.StringFlag{Name: "compress", Usage: "zstd to compress the output (implied by an OUT ending in .zst)"},
		},
		Action: func(c *cli.Context) error {
			inPath, outPath, err := inputOutput(c)
			if err != nil {
				return err
			}
			dtype, err := tensor.ParseDType(c.String("dtype"))
			if err != nil {
				return fmt.Errorf("cast: --dtype: %w", err)
			}
			var opts convert.CastOptions
			switch comp := c.String("compress"); {
			case comp == "zstd" || comp == "" && strings.HasSuffix(outPath, ".zst"):
				opts.Writer = append(opts.Writer, safetensors.Zstd())
			case comp != "":
				return fmt.Errorf("cast: --compress %q: only zstd is supported", comp)
			}
			in, err := modelfile.Open(inPath)
			if err != nil {
				return err
			}
			defer in.Close()
			if in.Safetensors == nil {
				return fmt.Errorf("cast: %s is %s; cast works on safetensors (use convert for GGUF)", in.Path, in.Format)
			}
			out, err := createOutput(outPath, c.Bool("force"), inPath)
			if err != nil {
				return err
			}
			defer out.abort()
			opts.Progress = progress("cast")
			if err := convert.Cast(out, in.Safetensors, dtype, opts); err != nil {
				return err
			}
			return out.commit()
		},
	}
}
