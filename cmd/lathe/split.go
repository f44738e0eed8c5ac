package main

import (
	"fmt"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/tensor"
	"github.com/urfave/cli/v2"
)

func splitCommand() *cli.Command {
	return &cli.Command{
		Name:      "split",
		Usage:     "split a GGUF model into PREFIX-0000i-of-0000N.gguf files as gguf-split does, or --merge a split set",
		ArgsUsage: "IN.gguf PREFIX | --merge FIRST.gguf OUT.gguf",
		Description: "The files carry gguf-split's split.no, split.count and split.tensors.count keys, so llama.cpp and\n" +
			"lathe open the first file as the whole model. --merge joins a set (opened from its first file) into one file.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "max-size", Usage: "at most this much tensor data per file: bytes, or with a K, M or G suffix (powers of 1024; gguf-split counts in 1000s)"},
			&cli.IntFlag{Name: "max-tensors", Usage: "at most this many tensors per file"},
			&cli.BoolFlag{Name: "merge", Usage: "join a split set into one file"},
			forceFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return fmt.Errorf("split: expected IN and PREFIX (or FIRST and OUT with --merge), got %d arguments", c.NArg())
			}
			in, out := c.Args().Get(0), c.Args().Get(1)
			f, err := gguf.Open(in)
			if err != nil {
				return err
			}
			defer f.Close()
			var views []tensor.View
			for _, t := range f.Tensors() {
				v, err := f.Tensor(t.Name)
				if err != nil {
					return err
				}
				views = append(views, v)
			}
			md := f.Metadata.Clone()
			for _, k := range []string{gguf.KeySplitNo, gguf.KeySplitCount, gguf.KeySplitTensorsCount} {
				md.Delete(k)
			}
			if c.Bool("merge") {
				if err := refuseInput(out, append([]string{in}, f.Splits()...)); err != nil && !c.Bool("force") {
					return err
				}
				return gguf.WriteFile(out, md, views)
			}
			lim := gguf.SplitLimits{MaxTensors: c.Int("max-tensors")}
			if s := c.String("max-size"); s != "" {
				if lim.MaxBytes, err = parseSize(s); err != nil {
					return fmt.Errorf("split: --max-size: %w", err)
				}
			}
			if lim.MaxBytes == 0 && lim.MaxTensors == 0 {
				return fmt.Errorf("split: give --max-size or --max-tensors")
			}
			files, err := gguf.WriteSplit(out, md, views, lim)
			if err != nil {
				return err
			}
			for _, name := range files {
				fmt.Fprintln(c.App.Writer, name)
			}
			return nil
		},
	}
}
