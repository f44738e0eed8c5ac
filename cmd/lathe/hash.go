package main

import (
	"fmt"

	"github.com/lathe-ml/lathe/modelfile"
	"github.com/urfave/cli/v2"
)

func hashCommand() *cli.Command {
	return &cli.Command{
		Name: "hash",
		// Without it urfave/cli gives the command a "help" subcommand, which shell completion would offer
		// where a file name is expected.
		HideHelpCommand: true,
		Usage:           "hash the tensors of models, independently of file format and layout",
		ArgsUsage:       "FILE|DIR|URL|-...",
		Description: "Prints HASH  FILE for each model, like sha256sum; a GGUF file and a safetensors file holding the\n" +
			"same tensors (names, dtypes, shapes, bytes) hash the same, whatever their order, alignment, metadata\n" +
			"or sharding. A tensor's hash is H(record) with, as little-endian uint64 lengths and dimensions,\n" +
			"record = len(name) name len(dtype) dtype ndim dim[0]...dim[ndim-1] data, where dtype is lathe's\n" +
			"name of the type (F32, BF16, Q4_K), dims are outermost first (row-major) and data the stored bytes.\n" +
			"The model's hash is H of its tensors' hashes in byte order of their names. H is SHA-256, or XXH64\n" +
			"(seed 0; hashes as 16 hex digits) with --fast: about three times faster, for change detection only.",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output: one object per model"},
			&cli.BoolFlag{Name: "fast", Usage: "XXH64 instead of SHA-256"},
			&cli.BoolFlag{Name: "tensors", Usage: "also print HASH  NAME for every tensor, before the model's line"},
			&cli.IntFlag{Name: "threads", Usage: "hash `N` tensors at once (default: all cores)"},
		}, httpFlags()...),
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return fmt.Errorf("hash: expected at least one FILE, DIR, URL or -")
			}
			opts := modelfile.HashOptions{Algorithm: modelfile.SHA256, Threads: c.Int("threads")}
			if c.Bool("fast") {
				opts.Algorithm = modelfile.XXH64
			}
			for _, path := range c.Args().Slice() {
				if err := hashOne(c, path, opts); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func hashOne(c *cli.Context, path string, opts modelfile.HashOptions) error {
	m, err := openModel(c, path)
	if err != nil {
		return err
	}
	defer m.Close()
	if !c.Bool("json") {
		opts.Progress = progress("hash")
	}
	r, err := modelfile.Hash(m, opts)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, r)
	}
	if c.Bool("tensors") {
		for _, t := range r.Tensors {
			fmt.Fprintf(c.App.Writer, "%s  %s\n", t.Hash, printable(t.Name))
		}
	}
	_, err = fmt.Fprintf(c.App.Writer, "%s  %s\n", r.Model, printable(r.Path))
	return err
}
