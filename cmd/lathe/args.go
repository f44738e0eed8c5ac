package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// permuteArgs moves a command's flags in front of its positional arguments. urfave/cli v2 stops parsing flags at
// the first positional argument, but people type `lathe quantize in.gguf out.gguf --type Q4_K_M`. Rewriting the
// argument list once, from each command's own flag definitions, fixes that for every command. Arguments after a
// literal "--" stay positional, and "-" (stdin/stdout) is positional.
func permuteArgs(app *cli.App, args []string) []string {
	// Find the command: the first argument that is not a global flag.
	i := 1
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "-" && args[i] != "--" {
		i++
	}
	if i >= len(args) {
		return args
	}
	cmd := app.Command(args[i])
	if cmd == nil {
		return args
	}
	for i+1 < len(args) { // descend into subcommands named before any flag
		sub := cmd.Command(args[i+1])
		if sub == nil {
			break
		}
		cmd, i = sub, i+1
	}
	// Shell completion (completion.go) ends the line with completionFlag. urfave/cli completes only when that flag
	// is last and no "--" comes before it, and it reads the word being completed from os.Args itself; so the words
	// after the command are dropped, and completing can never run the command.
	if args[len(args)-1] == completionFlag {
		return append(args[:i+1:i+1], completionFlag)
	}
	takesValue := map[string]bool{}
	for _, f := range cmd.Flags {
		tv := true
		if d, ok := f.(cli.DocGenerationFlag); ok {
			tv = d.TakesValue()
		}
		for _, name := range f.Names() {
			takesValue[name] = tv
		}
	}
	var flags, positional []string
	rest := args[i+1:]
	for j := 0; j < len(rest); j++ {
		a := rest[j]
		switch {
		case a == "--":
			positional = append(positional, rest[j+1:]...)
			j = len(rest)
		case strings.HasPrefix(a, "-") && a != "-":
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && takesValue[name] && j+1 < len(rest) {
				j++
				flags = append(flags, rest[j])
			}
		default:
			positional = append(positional, a)
		}
	}
	out := append([]string{}, args[:i+1]...)
	out = append(out, flags...)
	if len(positional) > 0 {
		out = append(out, "--")
		out = append(out, positional...)
	}
	return out
}
