package main

import (
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/commands and docs/lathe.1 from the command definitions")

// TestDocs fails when the reference documentation is not what the command definitions produce: a command added,
// removed or changed without `go generate ./cmd/lathe` (which runs this test with -update).
func TestDocs(t *testing.T) {
	root := filepath.Join("..", "..")
	files := generateDocs(newApp())
	pages, err := filepath.Glob(filepath.Join(root, "docs", "commands", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	var stale []string
	for _, p := range pages {
		rel := filepath.ToSlash(strings.TrimPrefix(p, root+string(filepath.Separator)))
		if _, ok := files[rel]; !ok {
			stale = append(stale, p)
		}
	}
	if *update {
		if err := os.MkdirAll(filepath.Join(root, "docs", "commands"), 0o755); err != nil {
			t.Fatal(err)
		}
		for rel, content := range files {
			if err := os.WriteFile(filepath.Join(root, filepath.FromSlash(rel)), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range stale {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	for _, rel := range slices.Sorted(maps.Keys(files)) {
		got, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
		if err != nil || string(got) != files[rel] {
			t.Errorf("%s is not what the command definitions produce; run: go generate ./cmd/lathe", rel)
		}
	}
	for _, p := range stale {
		t.Errorf("%s documents no command; run: go generate ./cmd/lathe", p)
	}
}
