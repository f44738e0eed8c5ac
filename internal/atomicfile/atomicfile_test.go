package atomicfile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// entries lists dir, so that a test can check that no temporary file is left.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestCommitReplacesTarget(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "model.gguf")
	if err := os.WriteFile(target, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Create(target)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort()
	tmp := filepath.Base(f.Name())
	if !strings.HasPrefix(tmp, ".model.gguf.") || !strings.HasSuffix(tmp, ".tmp") {
		t.Errorf("temporary file %q: want .model.gguf.*.tmp", tmp)
	}
	if _, err := f.WriteString("new "); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadFrom(strings.NewReader("contents")); err != nil {
		t.Fatal(err)
	}
	// Until Commit, readers of the target see the old file.
	if b, _ := os.ReadFile(target); string(b) != "old" {
		t.Fatalf("target changed before Commit: %q", b)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "new contents" {
		t.Errorf("target holds %q after Commit", b)
	}
	if st, err := os.Stat(target); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("target mode %v (%v), want 0644", st.Mode(), err)
	}
	if got := entries(t, dir); len(got) != 1 {
		t.Errorf("directory holds %v after Commit, want only the target", got)
	}
	if err := f.Commit(); err == nil {
		t.Error("a second Commit succeeded")
	}
	f.Abort() // after Commit: does nothing
	if _, err := os.Stat(target); err != nil {
		t.Errorf("Abort after Commit removed the target: %v", err)
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	f, err := Create(filepath.Join(dir, "out.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 1<<16)); err != nil {
		t.Fatal(err)
	}
	f.Abort()
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("directory holds %v after Abort", got)
	}
	if err := f.Commit(); err == nil {
		t.Error("Commit after Abort succeeded")
	}
}

func TestCreateInMissingDirectory(t *testing.T) {
	_, err := Create(filepath.Join(t.TempDir(), "no", "such", "out.gguf"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v, want a not-exist error", err)
	}
}

// TestWriteFile covers the helper for small outputs, and that a failed rename (the target is a directory) leaves
// no temporary file.
func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "config.json")
	if err := WriteFile(target, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); !bytes.Equal(b, []byte(`{}`)) {
		t.Errorf("got %q", b)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sub, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(sub, []byte("x")); err == nil {
		t.Error("renaming over a non-empty directory succeeded")
	}
	if got := entries(t, dir); len(got) != 2 {
		t.Errorf("directory holds %v, want config.json and sub", got)
	}
}
