package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/urfave/cli/v2"
)

func mergeModelsCommand() *cli.Command {
	return &cli.Command{
		Name:      "merge-models",
		Usage:     "merge whole models as a mergekit YAML configuration describes",
		ArgsUsage: "--config merge.yaml -o OUT",
		Description: "The configuration has mergekit's shape: merge_method, base_model, models or slices, parameters (scalars,\n" +
			"layer gradients, {filter, value} lists), dtype, out_dtype. Methods: " + strings.Join(adapter.MergekitMethods(), ", ") + ".\n" +
			"Models are paths (relative to the current directory, as in mergekit) of safetensors files or directories, or of\n" +
			"GGUF files, all in one format. GGUF inputs give the GGUF file OUT; safetensors inputs give OUT/model.safetensors\n" +
			"with the base's config and tokenizer files, or one file when OUT ends in .safetensors. DARE masks are drawn\n" +
			"from --seed, so a merge is reproducible.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Required: true, Usage: "mergekit YAML configuration"},
			outputFlag(),
			&cli.Uint64Flag{Name: "seed", Usage: "seed of DARE's random masks"},
			forceFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 || c.String("output") == "" {
				return fmt.Errorf("merge-models: expected --config FILE -o OUT and no arguments")
			}
			name := c.String("config")
			f, err := os.Open(name)
			if err != nil {
				return err
			}
			data, err := io.ReadAll(io.LimitReader(f, 1<<20+1))
			f.Close()
			if err != nil {
				return err
			}
			cfg, err := adapter.ParseMergekitConfig(name, data)
			if err != nil {
				return err
			}
			for _, n := range cfg.Notes {
				fmt.Fprintln(c.App.ErrWriter, "note:", n)
			}
			m, err := adapter.OpenModelMerge(cfg, nil)
			if err != nil {
				return err
			}
			defer m.Close()
			path, dir := c.String("output"), ""
			if m.Reference.GGUF == nil && path != "-" && !strings.HasSuffix(path, ".safetensors") {
				dir, path = path, filepath.Join(path, "model.safetensors")
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
			}
			out, err := createOutput(path, c.Bool("force"), m.Files()...)
			if err != nil {
				return err
			}
			defer out.abort()
			opts := adapter.ModelMergeOptions{Seed: c.Uint64("seed"), Progress: progress("merging")}
			if err := m.Write(out, opts); err != nil {
				return fmt.Errorf("merge-models: %w", err)
			}
			if err := out.commit(); err != nil {
				return err
			}
			if dir != "" {
				_, err = m.WriteHFFiles(dir)
			}
			return err
		},
	}
}
