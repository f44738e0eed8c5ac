// Package atomicfile writes outputs so that a reader never sees a partial file: bytes go to a temporary file in the
// target directory, which replaces the target only when Commit succeeds. A crash or kill leaves the target as it was.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// File is an output in progress. Write to it, then Commit; Abort (safe to defer) removes the temporary file if
// Commit was not reached.
type File struct {
	*os.File
	target string
	done   bool
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

// Commit flushes the data to stable storage and renames it over the target.
func (f *File) Commit() error {
	if f.done {
		return errors.New("atomicfile: already finished")
	}
	f.done = true
	name := f.Name()
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
