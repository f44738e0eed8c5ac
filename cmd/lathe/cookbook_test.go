package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCookbook runs every ```sh block of docs/cookbook.md, in order, in a directory holding the demo model, its
// adapter and a text, so that the documented pipelines cannot go stale.
func TestCookbook(t *testing.T) {
	doc, err := os.Open(filepath.Join("..", "..", "docs", "cookbook.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer doc.Close()
	dir := t.TempDir()
	if err := extract(filepath.Join(dir, "tiny-llama"), "tiny"); err != nil {
		t.Fatal(err)
	}
	if err := extract(filepath.Join(dir, "tiny-lora"), "tiny-lora"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "story.txt"), []byte(demoText), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	inBlock, commands := false, 0
	sc := bufio.NewScanner(doc)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "```sh":
			inBlock = true
		case line == "```":
			inBlock = false
		case inBlock && line != "":
			args := strings.Fields(line)
			if args[0] != "lathe" {
				t.Fatalf("cookbook line is not a lathe command: %q", line)
			}
			if out, code := run(t, args[1:]...); code != 0 {
				t.Fatalf("%s\nexit %d:\n%s", line, code, out)
			}
			commands++
		}
	}
	if commands < 10 {
		t.Fatalf("ran only %d cookbook commands", commands)
	}
}
