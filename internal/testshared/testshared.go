// Package testshared locates the project's reference material (../shared beside the repository: goldens, real
// model files, peers' numbers) for tests, so that every package finds it the same way.
package testshared

import (
	"os"
	"path/filepath"
	"testing"
)

// Dir returns the shared folder: $LATHE_SHARED if set, else "shared" beside the module root.
func Dir() (string, bool) {
	if d := os.Getenv("LATHE_SHARED"); d != "" {
		return d, isDir(d)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			s := filepath.Join(filepath.Dir(d), "shared")
			return s, isDir(s)
		}
		if filepath.Dir(d) == d {
			return "", false
		}
	}
}

// Path joins elems onto the shared folder, skipping the test with a clear message when the folder is absent.
func Path(t testing.TB, elems ...string) string {
	t.Helper()
	d, ok := Dir()
	if !ok {
		t.Skip("reference material ../shared is absent (set LATHE_SHARED to its location to run this test)")
	}
	return filepath.Join(append([]string{d}, elems...)...)
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
