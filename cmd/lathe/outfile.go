package main

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/urfave/cli/v2"
)

// output is a command's destination: standard output for "-", otherwise a temporary file in the target directory
// that replaces the target only on commit, so a failed or killed run never leaves a partial file behind.
type output struct {
	*bufio.Writer
	file *atomicfile.File
}

func createOutput(path string, force bool, inputs ...string) (*output, error) {
	if path == "-" {
		return &output{Writer: bufio.NewWriterSize(os.Stdout, 1<<20)}, nil
	}
	if !force {
		if err := refuseInput(path, inputs); err != nil {
			return nil, err
		}
	}
	f, err := atomicfile.Create(path)
	if err != nil {
		return nil, err
	}
	return &output{Writer: bufio.NewWriterSize(f, 1<<20), file: f}, nil
}

var _ io.Writer = (*output)(nil)

// commit flushes and, for a file, renames it into place.
func (o *output) commit() error {
	if err := o.Flush(); err != nil {
		o.abort()
		return err
	}
	if o.file != nil {
		return o.file.Commit()
	}
	return nil
}

// abort discards a file output; safe to defer after commit.
func (o *output) abort() {
	if o.file != nil {
		o.file.Abort()
	}
}

// forceFlag lets a command replace one of its own inputs. Even then the input is never written in place: the new
// file is renamed over it at the end, and the command keeps reading the old one until then.
func forceFlag() cli.Flag {
	return &cli.BoolFlag{Name: "force", Usage: "allow the output to replace an input file"}
}

// refuseInput fails when path names the same file as one of the inputs, so that a typo cannot destroy a model.
func refuseInput(path string, inputs []string) error {
	out, err := os.Stat(path)
	if err != nil {
		return nil // nothing there yet
	}
	for _, in := range inputs {
		if st, err := os.Stat(in); err == nil && os.SameFile(st, out) {
			return fmt.Errorf("refusing to overwrite the input %s; choose another output or pass --force", in)
		}
	}
	return nil
}

// outputFlag is the -o/--output flag of every command that writes a model; commands that also take OUT as their
// last positional argument (as llama-quantize does) accept either form.
func outputFlag() cli.Flag {
	return &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output file, or - for standard output"}
}

// inputOutput reads "IN OUT" or "IN -o OUT".
func inputOutput(c *cli.Context) (in, out string, err error) {
	args := c.Args().Slice()
	switch o := c.String("output"); {
	case o != "" && len(args) == 1:
		return args[0], o, nil
	case o == "" && len(args) == 2:
		return args[0], args[1], nil
	}
	return "", "", fmt.Errorf("%s: expected IN OUT or IN -o OUT, got %d arguments", c.Command.Name, len(args))
}
