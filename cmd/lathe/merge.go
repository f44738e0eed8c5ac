package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/tensor"
	"github.com/urfave/cli/v2"
)

func mergeCommand() *cli.Command {
	return &cli.Command{
		Name:      "merge",
		Usage:     "merge LoRA adapters into a safetensors or GGUF model",
		ArgsUsage: "BASE ADAPTER... -o OUT",
		Description: "BASE is a safetensors file or directory, or a GGUF file; each ADAPTER a PEFT or mlx-lm directory or a\n" +
			"llama.cpp GGUF adapter (GGUF bases only). The adapters are applied in the order given: each adapted tensor\n" +
			"becomes W + s₁·ΔW₁ + s₂·ΔW₂ …, each with its adapter's own scaling (α/r, α/√r for rsLoRA,\n" +
			"rank_pattern/alpha_pattern; DoRA rescales rows after its update), computed in float64 and written once in the\n" +
			"tensor's original type (quantized tensors are re-encoded) or --outtype. A PEFT adapter's full copies of base\n" +
			"tensors (modules_to_save) replace them. Every other tensor is copied byte for byte. OUT is one file of BASE's\n" +
			"format (- for standard output).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "output file, or -"},
			&cli.Float64Flag{Name: "scale", Value: 1, Usage: "multiply every update by this factor"},
			&cli.StringFlag{Name: "scales", Usage: "comma-separated factor per adapter (multiplies --scale)"},
			&cli.StringFlag{Name: "outtype", Usage: "type of the merged tensors: f32, f16, bf16, or (GGUF) a block type such as q8_0 (default: each tensor's own)"},
			forceFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() < 2 {
				return fmt.Errorf("merge: expected BASE and at least one ADAPTER, got %d arguments", c.NArg())
			}
			if c.Float64("scale") == 0 {
				return fmt.Errorf("merge: --scale 0 would leave the model unchanged")
			}
			opts := adapter.MergeOptions{Scale: c.Float64("scale")}
			if s := c.String("scales"); s != "" {
				for i, p := range strings.Split(s, ",") {
					v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
					if err != nil {
						return fmt.Errorf("merge: --scales value %d %q: not a number", i+1, p)
					}
					opts.Scales = append(opts.Scales, v)
				}
				if len(opts.Scales) != c.NArg()-1 {
					return fmt.Errorf("merge: --scales has %d values for %d adapters", len(opts.Scales), c.NArg()-1)
				}
			}
			if s := c.String("outtype"); s != "" {
				t, err := tensor.ParseDType(s)
				if err != nil {
					return fmt.Errorf("merge: --outtype: %w", err)
				}
				opts.OutType = t
			}
			base, err := modelfile.Open(c.Args().Get(0))
			if err != nil {
				return err
			}
			defer base.Close()
			inputs := base.Files
			var adapters []*adapter.Adapter
			for _, path := range c.Args().Slice()[1:] {
				a, err := adapter.Open(path)
				if err != nil {
					return err
				}
				defer a.Close()
				adapters = append(adapters, a)
				inputs = append(inputs, a.Files...)
			}
			out, err := createOutput(c.String("output"), c.Bool("force"), inputs...)
			if err != nil {
				return err
			}
			defer out.abort()
			if base.GGUF != nil {
				err = adapter.MergeAllGGUF(out, base.GGUF, adapters, opts)
			} else {
				err = adapter.MergeAllSafetensors(out, base.Safetensors, adapters, opts)
			}
			if err != nil {
				return fmt.Errorf("merge: %w", err)
			}
			return out.commit()
		},
	}
}
