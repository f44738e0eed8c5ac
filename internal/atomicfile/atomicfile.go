// Package atomicfile writes outputs so that a reader never sees a partial file: bytes go to a temporary file in the
// target directory, which replaces the target only when Commit succeeds. A crash or kill leaves the target as it was.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// File is an output in progress. Write to it, then Commit; Abort (safe to defer) removes the temporary file if
// Commit was not reached.
type File struct {
	*os.File
	target string
	done   bool
	// failed is the first error a write returned. Commit refuses to rename a file that missed bytes, so that a
	// caller who drops a write error (a full disk) cannot replace a good target with a truncated one.
	failed error
}

// Write, WriteString, WriteAt and ReadFrom are those of the temporary file, with the first error remembered.
func (f *File) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	return n, f.fail(err)
}

func (f *File) WriteString(s string) (int, error) {
	n, err := f.File.WriteString(s)
	return n, f.fail(err)
}

func (f *File) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.File.WriteAt(p, off)
	return n, f.fail(err)
}

func (f *File) ReadFrom(r io.Reader) (int64, error) {
	n, err := f.File.ReadFrom(r)
	return n, f.fail(err)
}

// fail records a write error; errors of the source in ReadFrom are recorded too, as the copy is then incomplete.
// An error of the temporary file is reported on the target, the name the user gave ("write out.gguf: no space left
// on device"); the temporary file is removed anyway.
func (f *File) fail(err error) error {
	if pe, ok := err.(*fs.PathError); ok && pe.Path == f.Name() {
		err = &fs.PathError{Op: pe.Op, Path: f.target, Err: pe.Err}
	}
	if err != nil && f.failed == nil {
		f.failed = err
	}
	return err
}

// Create starts writing path. The temporary name starts with a dot and ends in .tmp so that a leftover after a
// power loss is easy to recognise and never matches a model file pattern.
func Create(path string) (*File, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return nil, err
	}
	return &File{File: f, target: path}, nil
}

// Commit flushes the data to stable storage and renames it over the target. If a write failed, it removes the
// temporary file and returns that error instead.
func (f *File) Commit() error {
	if f.done {
		return errors.New("atomicfile: already finished")
	}
	f.done = true
	name := f.Name()
	if f.failed != nil {
		f.File.Close()
		os.Remove(name)
		return fmt.Errorf("not committed after a failed write: %w", f.failed)
	}
	if err := f.Sync(); err != nil {
		f.File.Close()
		os.Remove(name)
		return fmt.Errorf("%s: %w", f.target, err)
	}
	if err := f.File.Close(); err != nil {
		os.Remove(name)
		return fmt.Errorf("%s: %w", f.target, err)
	}
	if err := os.Chmod(name, 0o644); err != nil {
		os.Remove(name)
		return err
	}
	if err := os.Rename(name, f.target); err != nil {
		os.Remove(name)
		return err
	}
	return nil
}

// Abort discards the output; after Commit it does nothing.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.File.Close()
	os.Remove(f.Name())
}

// WriteFile writes data to path atomically, for small outputs such as JSON sidecars held in memory.
func WriteFile(path string, data []byte) error {
	f, err := Create(path)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Commit()
}
