package main

import (
	"fmt"
	"strings"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/urfave/cli/v2"
)

// adaptersExtractCommand is `lathe adapters extract`.
func adaptersExtractCommand() *cli.Command {
	return &cli.Command{
		Name:      "extract",
		Usage:     "extract a LoRA adapter from a fine-tuned model and its base",
		ArgsUsage: "FINETUNED --base BASE --rank R -o OUT_DIR",
		Description: "For every projection weight (2-D, not an embedding) that differs between FINETUNED and BASE, the truncated\n" +
			"SVD of ΔW = W_ft − W_base at rank R becomes a PEFT LoRA module (B = U·√S, A = √S·Vᵀ, lora_alpha = r, so the\n" +
			"scale is 1), as mergekit-extract-lora does. The SVD is randomized subspace iteration by default (R+10 columns,\n" +
			"4 power iterations: exact to rounding when the spectrum has a gap after R), a full SVD with --exact. Unchanged\n" +
			"tensors are skipped; changed embeddings, norms and biases cannot be expressed as LoRA and are listed, or\n" +
			"written in full as modules_to_save with --modules-to-save. Both models are HF safetensors (file or directory).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "output adapter directory"},
			&cli.StringFlag{Name: "base", Required: true, Usage: "the base model"},
			&cli.IntFlag{Name: "rank", Aliases: []string{"r"}, Required: true, Usage: "rank of each module"},
			&cli.BoolFlag{Name: "exact", Usage: "full SVD instead of randomized"},
			&cli.BoolFlag{Name: "modules-to-save", Usage: "write changed embeddings and norms in full"},
			&cli.Uint64Flag{Name: "seed", Usage: "seed of the randomized SVD"},
			&cli.BoolFlag{Name: "json", Usage: "machine-readable report"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("adapters extract: expected one FINETUNED model, got %d arguments", c.NArg())
			}
			var sets [2]*modelfile.Model
			for i, path := range []string{c.String("base"), c.Args().First()} {
				m, err := modelfile.Open(path)
				if err != nil {
					return err
				}
				defer m.Close()
				if m.Safetensors == nil {
					return fmt.Errorf("adapters extract: %s: want a safetensors model (PEFT names), got %s", path, m.Format)
				}
				sets[i] = m
			}
			rep, err := adapter.Extract(c.String("output"), sets[0].Safetensors, sets[1].Safetensors, adapter.ExtractOptions{
				Rank: c.Int("rank"), Exact: c.Bool("exact"), ModulesToSave: c.Bool("modules-to-save"),
				Seed: c.Uint64("seed"), BaseModel: c.String("base"),
			})
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return writeJSON(c.App.Writer, rep)
			}
			if err := printEnergy(c, &rep.EnergyReport); err != nil {
				return err
			}
			if n := len(rep.NotExtractable); n > 0 {
				verb := "not extractable as LoRA (pass --modules-to-save to keep them in full)"
				if len(rep.Saved) > 0 {
					verb = "written in full as modules_to_save"
				}
				fmt.Fprintf(c.App.Writer, "%d changed tensors %s: %s\n", n, verb, strings.Join(rep.NotExtractable, ", "))
			}
			return nil
		},
	}
}

// adaptersConvertPiSSACommand is `lathe adapters convert-pissa`.
func adaptersConvertPiSSACommand() *cli.Command {
	return &cli.Command{
		Name:      "convert-pissa",
		Usage:     "turn a PiSSA/OLoRA-style adapter (trained on a mutated base) into a plain LoRA of the original base",
		ArgsUsage: "ADAPTER --initial INIT_ADAPTER -o OUT_DIR",
		Description: "Adapters initialized by PiSSA, OLoRA, CorDA or LoRA-GA were trained against W_res = W − s₀·B₀·A₀, not W.\n" +
			"Given the trained ADAPTER and the adapter as initialized (INIT_ADAPTER, saved before training), writes a PEFT\n" +
			"adapter of the original base with update s·B·A − s₀·B₀·A₀ at rank 2r (scales folded into B, lora_alpha = r),\n" +
			"as PEFT's path_initial_model_for_weight_conversion does.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "output adapter directory"},
			&cli.StringFlag{Name: "initial", Required: true, Usage: "the adapter as initialized, before training"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("adapters convert-pissa: expected one ADAPTER, got %d arguments", c.NArg())
			}
			var in [2]*adapter.Adapter
			for i, path := range []string{c.Args().First(), c.String("initial")} {
				a, err := adapter.Open(path)
				if err != nil {
					return err
				}
				defer a.Close()
				in[i] = a
			}
			return adapter.ConvertMutated(c.String("output"), in[0], in[1])
		},
	}
}
