package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/tensor"
)

// completeIn runs bash's completion for the words of a command line (the last one being completed) with the
// script of `lathe completion bash`, against the real lathe binary.
func completeIn(t *testing.T, dir string, words ...string) []string {
	t.Helper()
	script := filepath.Join(dir, "lathe.bash")
	if err := os.WriteFile(script, []byte(bashCompletion), 0o644); err != nil {
		t.Fatal(err)
	}
	var quoted []string
	for _, w := range words {
		quoted = append(quoted, "'"+w+"'")
	}
	return strings.Fields(strings.Join(shellLines(t, dir, "bash", "--norc", "-c", `source "$1"; COMP_WORDS=(`+
		strings.Join(quoted, " ")+`); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _lathe_complete; `+
		`printf '%s\n' "${COMPREPLY[@]}"`, "bash", script), " "))
}

// shellDir returns a directory holding a "lathe" that runs this test binary as the lathe command, skipping the test
// when shell is not installed.
func shellDir(t *testing.T, shell string) string {
	if _, err := exec.LookPath(shell); err != nil {
		t.Skipf("%s is not installed", shell)
	}
	dir := t.TempDir()
	wrapper := "#!/bin/sh\nLATHE_RUN_MAIN=1 exec '" + os.Args[0] + "' \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "lathe"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// shellLines runs a script in shell with dir first on PATH and returns its output lines.
func shellLines(t *testing.T, dir string, shell ...string) []string {
	t.Helper()
	cmd := exec.Command(shell[0], shell[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", shell[0], err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

func TestBashCompletion(t *testing.T) {
	dir := shellDir(t, "bash")
	in := filepath.Join(dir, "in.safetensors")
	writeModel(t, in, f32View("w", tensor.Shape{1}, 1))

	if got := completeIn(t, dir, "lathe", "ins"); !slices.Equal(got, []string{"inspect"}) {
		t.Errorf("lathe ins<TAB>: %q", got)
	}
	if got := completeIn(t, dir, "lathe", "inspect", "--js"); !slices.Equal(got, []string{"--json"}) {
		t.Errorf("lathe inspect --js<TAB>: %q", got)
	}
	// Completing after the arguments of a command that writes must list its flags and not run it.
	got := completeIn(t, dir, "lathe", "cast", in, "out.safetensors", "--dtype", "f16", "--")
	if !slices.Contains(got, "--compress") {
		t.Errorf("lathe cast in out --dtype f16 --<TAB>: %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "out.safetensors")); !os.IsNotExist(err) {
		t.Error("completing a cast command line ran the cast")
	}
}

// The zsh script, loaded as in a user's shell, with zsh's _describe and _files replaced by stand-ins that print
// what they were given.
func TestZshCompletion(t *testing.T) {
	dir := shellDir(t, "zsh")
	if err := os.WriteFile(filepath.Join(dir, "_lathe"), []byte(zshCompletion), 0o644); err != nil {
		t.Fatal(err)
	}
	got := shellLines(t, dir, "zsh", "-f", "-c", `autoload -Uz compinit && compinit -u -d ./zcompdump && `+
		`source ./_lathe && _describe() { print -l -- "${(@P)2}" }; _files() { print FILES };`+
		`words=(lathe ins); _lathe; words=(lathe inspect --js); _lathe`)
	if !slices.Contains(got, "inspect") || !slices.Contains(got, "cast") || !slices.Contains(got, "--json") {
		t.Errorf("zsh completions %q", got)
	}
}

// The fish script is static: fish's own completion engine answers from it.
func TestFishCompletion(t *testing.T) {
	dir := shellDir(t, "fish")
	script, _ := run(t, "completion", "fish")
	if err := os.WriteFile(filepath.Join(dir, "lathe.fish"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	got := shellLines(t, dir, "fish", "--no-config", "-c", `source ./lathe.fish; complete -C "lathe ins"; `+
		`complete -C "lathe diff --ma"`)
	if len(got) != 2 || !strings.HasPrefix(got[0], "inspect\t") || !strings.HasPrefix(got[1], "--map\t") ||
		strings.Contains(got[1], "`") {
		t.Errorf("fish completions %q", got)
	}
}

func TestCompletionScripts(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		out, code := run(t, "completion", shell)
		if code != 0 || !strings.Contains(out, "lathe") {
			t.Errorf("%s: exit %d\n%s", shell, code, out)
		}
	}
	// fish completions are generated from the definitions: every command and its flags are in them.
	out, _ := run(t, "completion", "fish")
	for _, want := range []string{"-a 'inspect'", "-a 'diff'", "-l json", "-l map"} {
		if !strings.Contains(out, want) {
			t.Errorf("fish script lacks %q", want)
		}
	}
	for _, args := range [][]string{{"completion"}, {"completion", "powershell"}} {
		if out, code := run(t, args...); code != 2 {
			t.Errorf("%v: exit %d\n%s", args, code, out)
		}
	}
}

func TestManCommand(t *testing.T) {
	out, code := run(t, "man")
	if code != 0 || !strings.HasPrefix(out, `.\"`) || !strings.Contains(out, ".SH COMMANDS") ||
		!strings.Contains(out, `.SS lathe diff`) || !strings.Contains(out, `.B \-\-rel\-tol REL`) ||
		strings.Contains(out, "lathe man help") || strings.Contains(out, `.B \-\-help`) {
		t.Errorf("exit %d\n%s", code, out)
	}
}

func TestRoffEscapes(t *testing.T) {
	if got := roff(".start\n'quote\nback\\slash --flag → ‖"); got != "\\&.start\n\\&'quote\nback\\eslash \\-\\-flag \\[u2192] \\[u2016]" {
		t.Errorf("%q", got)
	}
}

func TestPermuteArgsForCompletion(t *testing.T) {
	app := newApp()
	for _, tc := range []struct{ in, want []string }{
		{[]string{"lathe", "cast", "a", "b", "--dtype", "f16", completionFlag}, []string{"lathe", "cast", completionFlag}},
		{[]string{"lathe", "inspect", "--js", completionFlag}, []string{"lathe", "inspect", completionFlag}},
		{[]string{"lathe", "ins", completionFlag}, []string{"lathe", "ins", completionFlag}},
		{[]string{"lathe", completionFlag}, []string{"lathe", completionFlag}},
	} {
		if got := permuteArgs(app, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("%q: %q, want %q", tc.in, got, tc.want)
		}
	}
}
