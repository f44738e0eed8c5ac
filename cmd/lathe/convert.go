package main

import (
	"fmt"
	"os"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/gguf"
	"github.com/urfave/cli/v2"
)

func convertCommand() *cli.Command {
	return &cli.Command{
		Name:      "convert",
		Usage:     "convert a Hugging Face model directory to GGUF, or a GGUF model back to a Hugging Face directory",
		ArgsUsage: "IN -o OUT",
		Description: "IN is a Hugging Face directory (config.json, safetensors shards, tokenizer.model or tokenizer.json) or a\n" +
			"GGUF file, or a PEFT or mlx-lm LoRA adapter directory (with --base), written as a llama.cpp GGUF adapter. HF → GGUF writes a file llama.cpp loads (- for standard output); GGUF → HF writes a directory\n" +
			"(config.json, model.safetensors, tokenizer files), dequantizing block types. The Llama family is supported.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "output GGUF file (or -), or output directory for GGUF → HF"},
			&cli.StringFlag{Name: "outtype", Value: "auto", Usage: "HF → GGUF: f32, f16, bf16, q8_0 or auto (f16 unless the weights are bf16); GGUF → HF: f32, f16, bf16 or auto (keep float types, decode blocks to f32)"},
			&cli.StringFlag{Name: "name", Usage: "general.name for the GGUF (default: from config.json or the directory name, as llama.cpp)"},
			&cli.StringFlag{Name: "pre", Usage: "tokenizer.ggml.pre for a BPE tokenizer lathe does not recognise"},
			&cli.StringFlag{Name: "base", Usage: "for an adapter directory IN (PEFT or mlx-lm): the model it applies to (GGUF file or HF directory), whose architecture and head counts the GGUF adapter needs"},
			&cli.StringFlag{Name: "to", Usage: "for an adapter IN (PEFT or mlx-lm directory, or GGUF adapter): peft, gguf or mlx (default: gguf when OUT ends in .gguf, else peft); --base is needed for gguf output and for GGUF input"},
			&cli.Int64Flag{Name: "shard-size", Usage: "GGUF → HF: cut the weights into shards of at most this many bytes"},
			forceFlag(),
			&cli.BoolFlag{Name: "dry-run", Usage: "print the tensor plan (names, shapes, types) without writing"},
			&cli.BoolFlag{Name: "json", Usage: "with --dry-run: machine-readable plan"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("convert: expected one input, got %d arguments", c.NArg())
			}
			outType, err := convert.ParseOutType(c.String("outtype"))
			if err != nil {
				return fmt.Errorf("convert: --outtype: %w", err)
			}
			in, out := c.Args().First(), c.String("output")
			st, err := os.Stat(in)
			if err != nil {
				return err
			}
			if isAdapter(in) || c.String("to") != "" {
				return convertAdapter(c, in, out, outType)
			}
			if st.IsDir() {
				return hfToGGUF(c, in, out, convert.GGUFOptions{Type: outType, Name: c.String("name"), Pre: c.String("pre"),
					Progress: progress("convert")})
			}
			f, err := gguf.Open(in)
			if err != nil {
				return err
			}
			defer f.Close()
			opts := convert.HFOptions{Type: outType, MaxShardSize: c.Int64("shard-size"), Progress: progress("convert")}
			if c.Bool("dry-run") {
				plan, err := convert.PlanHF(f, opts)
				if err != nil {
					return err
				}
				return printConvertPlan(c, plan)
			}
			return convert.ToHF(out, f, opts)
		},
	}
}

func hfToGGUF(c *cli.Context, in, out string, opts convert.GGUFOptions) error {
	m, err := convert.OpenHF(in)
	if err != nil {
		return err
	}
	defer m.Close()
	if c.Bool("dry-run") {
		plan, err := convert.PlanGGUF(m, opts)
		if err != nil {
			return err
		}
		return printConvertPlan(c, plan)
	}
	o, err := createOutput(out, c.Bool("force"), in)
	if err != nil {
		return err
	}
	defer o.abort()
	if err := convert.ToGGUF(o, m, opts); err != nil {
		return err
	}
	return o.commit()
}

func printConvertPlan(c *cli.Context, plan []convert.PlanEntry) error {
	if c.Bool("json") {
		return writeJSON(c.App.Writer, plan)
	}
	w := newTable(c.App.Writer)
	fmt.Fprintln(w, "output\tsource\tshape\tfrom\tto\t")
	for _, p := range plan {
		src := p.Source
		if p.PermuteHeads > 0 {
			src += fmt.Sprintf(" (rows permuted, %d heads)", p.PermuteHeads)
		}
		fmt.Fprintf(w, "%s\t%s\t%v\t%s\t%s\t\n", p.Name, src, p.Shape, p.From, p.To)
	}
	return w.Flush()
}
