package main

import (
	"fmt"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/tensor"
	"github.com/urfave/cli/v2"
)

func dequantizeCommand() *cli.Command {
	return &cli.Command{
		Name:      "dequantize",
		Usage:     "expand the quantized tensors of a GGUF model to f32, f16 or bf16",
		ArgsUsage: "IN OUT | IN -o OUT",
		Description: "IN is a GGUF file or - for standard input; OUT is a GGUF file or - for standard output. Quantized\n" +
			"tensors are decoded exactly as ggml does; other tensors are kept or converted as llama-quantize's F32, F16\n" +
			"or BF16 recipe would.",
		Flags: []cli.Flag{
			outputFlag(),
			forceFlag(),
			&cli.StringFlag{Name: "dtype", Value: "f32", Usage: "target type: f32, f16 or bf16"},
		},
		Action: func(c *cli.Context) error {
			inPath, outPath, err := inputOutput(c)
			if err != nil {
				return err
			}
			dtype, err := tensor.ParseDType(c.String("dtype"))
			if err != nil {
				return fmt.Errorf("dequantize: --dtype: %w", err)
			}
			in, err := modelfile.Open(inPath)
			if err != nil {
				return err
			}
			defer in.Close()
			if in.GGUF == nil {
				return fmt.Errorf("dequantize: %s is %s; dequantize reads GGUF", in.Path, in.Format)
			}
			out, err := createOutput(outPath, c.Bool("force"), inPath)
			if err != nil {
				return err
			}
			defer out.abort()
			if err := convert.Dequantize(out, in.GGUF, dtype); err != nil {
				return err
			}
			return out.commit()
		},
	}
}
