package main

import (
	"fmt"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/urfave/cli/v2"
)

func mergeCommand() *cli.Command {
	return &cli.Command{
		Name:      "merge",
		Usage:     "merge a LoRA adapter into a safetensors or GGUF model",
		ArgsUsage: "BASE ADAPTER -o OUT",
		Description: "BASE is a safetensors file or directory, or a GGUF file; ADAPTER a PEFT directory or a llama.cpp GGUF\n" +
			"adapter (GGUF bases only). Each adapted tensor becomes W + s·ΔW with the adapter's own scaling (α/r, α/√r for\n" +
			"rsLoRA, rank_pattern/alpha_pattern; DoRA rescales rows), in its original type (quantized tensors are re-encoded);\n" +
			"every other tensor is copied byte for byte. OUT is one file of BASE's format (- for standard output).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "output file, or -"},
			&cli.Float64Flag{Name: "scale", Value: 1, Usage: "multiply every update by this factor"},
			forceFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return fmt.Errorf("merge: expected BASE and ADAPTER, got %d arguments", c.NArg())
			}
			if c.Float64("scale") == 0 {
				return fmt.Errorf("merge: --scale 0 would leave the model unchanged")
			}
			base, err := modelfile.Open(c.Args().Get(0))
			if err != nil {
				return err
			}
			defer base.Close()
			a, err := adapter.Open(c.Args().Get(1))
			if err != nil {
				return err
			}
			defer a.Close()
			out, err := createOutput(c.String("output"), c.Bool("force"), append(base.Files, a.Files...)...)
			if err != nil {
				return err
			}
			defer out.abort()
			opts := adapter.MergeOptions{Scale: c.Float64("scale")}
			if base.GGUF != nil {
				err = adapter.MergeGGUF(out, base.GGUF, a, opts)
			} else {
				err = adapter.MergeSafetensors(out, base.Safetensors, a, opts)
			}
			if err != nil {
				return fmt.Errorf("merge: %w", err)
			}
			return out.commit()
		},
	}
}
