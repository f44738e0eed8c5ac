//go:build !unix

package mmap

import (
	"errors"
	"os"
)

// Elsewhere Open falls back to reading the file into memory.
func mapFile(*os.File, int) ([]byte, func() error, error) {
	return nil, nil, errors.New("mmap not supported on this platform")
}
