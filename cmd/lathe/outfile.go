package main

import (
	"bufio"
	"io"
	"os"

	"github.com/lathe-ml/lathe/internal/atomicfile"
)

// output is a command's destination: standard output for "-", otherwise a temporary file in the target directory
// that replaces the target only on commit, so a failed or killed run never leaves a partial file behind.
type output struct {
	*bufio.Writer
	file *atomicfile.File
}

func createOutput(path string) (*output, error) {
	if path == "-" {
		return &output{Writer: bufio.NewWriterSize(os.Stdout, 1<<20)}, nil
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
