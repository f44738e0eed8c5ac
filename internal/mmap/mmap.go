// Package mmap maps files read-only so that format readers can hand out tensor views without copying.
package mmap

import (
	"fmt"
	"io"
	"os"
)

// File is a read-only mapping of a whole file. Data must not be written to (the pages are PROT_READ) and must not
// be used after Close.
type File struct {
	Data  []byte
	f     *os.File
	unmap func() error
}

// Open maps path. Empty files and files that cannot be mapped (pipes, some network file systems) are read into
// memory instead, so callers never need a second code path.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		data, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return &File{Data: data}, nil
	}
	size := st.Size()
	if size == 0 {
		f.Close()
		return &File{Data: []byte{}}, nil
	}
	if int64(int(size)) != size {
		f.Close()
		return nil, fmt.Errorf("%s: %d bytes do not fit in the address space", path, size)
	}
	data, unmap, err := mapFile(f, int(size))
	if err != nil {
		data = make([]byte, size)
		if _, rerr := io.ReadFull(f, data); rerr != nil {
			f.Close()
			return nil, fmt.Errorf("%s: mmap failed (%v) and reading failed: %w", path, err, rerr)
		}
		unmap = nil
	}
	return &File{Data: data, f: f, unmap: unmap}, nil
}

// ReadAt makes a mapping usable wherever an io.ReaderAt is expected.
func (m *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(m.Data)) {
		return 0, fmt.Errorf("read at offset %d outside a %d-byte file", off, len(m.Data))
	}
	n := copy(p, m.Data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Close unmaps the file.
func (m *File) Close() error {
	var err error
	if m.unmap != nil {
		err = m.unmap()
		m.unmap = nil
	}
	if m.f != nil {
		if cerr := m.f.Close(); err == nil {
			err = cerr
		}
		m.f = nil
	}
	m.Data = nil
	return err
}
