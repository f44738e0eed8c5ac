package atomicfile

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// fillDisk makes every later write to f fail as on a full disk: the temporary file's descriptor is replaced by one
// on /dev/full, whose writes fail with ENOSPC, while f keeps its name in the target directory.
func fillDisk(t *testing.T, f *File) {
	t.Helper()
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	defer full.Close()
	if err := syscall.Dup3(int(full.Fd()), int(f.Fd()), syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
}

// A full disk in the middle of an output leaves the target as it was (absent, or the previous file) and no
// temporary file, whether the caller stops at the write error, or drops it and calls Commit.
func TestFullDisk(t *testing.T) {
	for _, tc := range []struct {
		name     string
		previous bool // a previous file is at the target
		commit   bool // the caller ignores the write error and commits
	}{
		{"abort", false, false},
		{"abort over previous", true, false},
		{"commit after failure", false, true},
		{"commit after failure over previous", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			target := filepath.Join(dir, "model.gguf")
			if tc.previous {
				if err := os.WriteFile(target, []byte("previous"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			f, err := Create(target)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Abort()
			w := bufio.NewWriterSize(f, 4096)
			if _, err := w.WriteString("GGUF"); err != nil {
				t.Fatal(err)
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			fillDisk(t, f)
			_, err = w.Write(make([]byte, 10000)) // more than the buffer: reaches the file
			if err == nil {
				err = w.Flush()
			}
			if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "no space left on device") ||
				!strings.Contains(err.Error(), "write "+target+":") {
				t.Fatalf("write to a full disk: %v, want ENOSPC naming the target", err)
			}
			if tc.commit {
				err := f.Commit()
				if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), target) {
					t.Fatalf("Commit after a failed write: %v, want the ENOSPC naming the target", err)
				}
			} else {
				f.Abort()
			}
			got := entries(t, dir)
			b, err := os.ReadFile(target)
			switch {
			case tc.previous && (len(got) != 1 || string(b) != "previous"):
				t.Errorf("directory %v, target %q (%v); want only the previous file", got, b, err)
			case !tc.previous && len(got) != 0:
				t.Errorf("directory holds %v, want nothing", got)
			}
		})
	}
}
