package main

//go:generate go test . -run ^TestDocs$ -update

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"unicode"

	"github.com/urfave/cli/v2"
)

// The reference documentation — docs/commands/*.md and the manual page docs/lathe.1 — is generated from the
// command definitions, so that every registered command is documented and no page outlives its command.
// TestDocs fails when the committed files differ from what this produces.

// docsHeader marks generated Markdown; the man page says the same in a roff comment.
const docsHeader = "<!-- Generated from the command definitions by `go generate ./cmd/lathe`; do not edit. -->\n\n"

// exitStatus documents the exit codes main assigns (see exitCode).
var exitStatus = [][2]string{
	{"0", "success"},
	{"1", "a check ran and failed (diff found differences beyond tolerance, …)"},
	{"2", "usage or input error: bad flags, an unreadable or malformed file, a network error"},
}

// environment documents the variables lathe reads.
var environment = [][2]string{
	{"LATHE_HTTP_TOKEN", "bearer token sent with every HTTP(S) request for a model URL (https, or a loopback host)"},
	{"HF_TOKEN", "bearer token sent to huggingface.co only, when LATHE_HTTP_TOKEN is not set"},
}

// commandDoc is what the documentation says about one command.
type commandDoc struct {
	path     string // "lathe diff"
	cmd      *cli.Command
	synopsis string
	flags    []flagDoc
	subs     []commandDoc
}

type flagDoc struct {
	names    string // "-o, --output FILE"
	usage    string
	def      string // default value, "" when none worth saying
	required bool
}

func documentCommands(parent string, cmds []*cli.Command) []commandDoc {
	var docs []commandDoc
	for _, c := range cmds {
		// urfave/cli adds a help subcommand and a --help flag to a command when it runs (so they are in `lathe
		// man`'s app but not in a fresh one); they are documented once, in general terms.
		if c.Hidden || c.Name == "help" {
			continue
		}
		d := commandDoc{path: parent + " " + c.Name, cmd: c}
		for _, f := range c.VisibleFlags() {
			if !slices.Contains(f.Names(), "help") {
				d.flags = append(d.flags, documentFlag(f))
			}
		}
		d.subs = documentCommands(d.path, c.Subcommands)
		d.synopsis = d.path
		if len(d.flags) > 0 {
			d.synopsis += " [flags]"
		}
		if len(d.subs) > 0 {
			d.synopsis += " command"
		}
		if c.ArgsUsage != "" {
			d.synopsis += " " + c.ArgsUsage
		}
		docs = append(docs, d)
	}
	return docs
}

func documentFlag(f cli.Flag) flagDoc {
	var names []string
	for _, n := range f.Names() {
		if len(n) == 1 {
			names = append(names, "-"+n)
		} else {
			names = append(names, "--"+n)
		}
	}
	fd := flagDoc{names: strings.Join(names, ", ")}
	if r, ok := f.(cli.RequiredFlag); ok {
		fd.required = r.IsRequired()
	}
	d, ok := f.(cli.DocGenerationFlag)
	if !ok {
		return fd
	}
	placeholder, usage := unquoteUsage(d.GetUsage())
	fd.usage = usage
	if d.TakesValue() {
		fd.names += " " + cmp.Or(placeholder, "value")
		if def := d.GetDefaultText(); def != "" && def != "0" && def != `""` {
			fd.def = def
		}
	}
	return fd
}

// unquoteUsage takes the first `quoted` word of a flag's usage as its value's placeholder, as urfave/cli's help
// does.
func unquoteUsage(usage string) (placeholder, text string) {
	before, rest, ok := strings.Cut(usage, "`")
	if !ok {
		return "", usage
	}
	name, after, ok := strings.Cut(rest, "`")
	if !ok {
		return "", usage
	}
	return name, before + name + after
}

// generateDocs returns the documentation files by path relative to the repository root.
func generateDocs(app *cli.App) map[string]string {
	docs := documentCommands(app.Name, app.Commands)
	files := map[string]string{"docs/commands/README.md": markdownIndex(app, docs)}
	for _, d := range docs {
		files["docs/commands/"+d.cmd.Name+".md"] = docsHeader + markdownCommand(d, 1)
	}
	files["docs/lathe.1"] = manPage(app)
	return files
}

func markdownIndex(app *cli.App, docs []commandDoc) string {
	var b strings.Builder
	b.WriteString(docsHeader)
	fmt.Fprintf(&b, "# %s commands\n\n%s.\n\n", app.Name, app.Usage)
	b.WriteString("| command | what it does |\n|---|---|\n")
	for _, d := range docs {
		fmt.Fprintf(&b, "| [%s](%s.md) | %s |\n", d.cmd.Name, d.cmd.Name, mdCell(d.cmd.Usage))
	}
	b.WriteString("\nEvery command takes `--help`. Flags may come before or after the arguments; `-` stands for standard " +
		"input or output where a command can stream.\n\n## Exit status\n\n| code | meaning |\n|---|---|\n")
	for _, e := range exitStatus {
		fmt.Fprintf(&b, "| %s | %s |\n", e[0], mdCell(e[1]))
	}
	b.WriteString("\n## Environment\n\n| variable | meaning |\n|---|---|\n")
	for _, e := range environment {
		fmt.Fprintf(&b, "| `%s` | %s |\n", e[0], mdCell(e[1]))
	}
	return b.String()
}

func markdownCommand(d commandDoc, level int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n\n%s\n\n```\n%s\n```\n", strings.Repeat("#", level), d.path, d.cmd.Usage, d.synopsis)
	if d.cmd.Description != "" {
		fmt.Fprintf(&b, "\n%s\n", d.cmd.Description)
	}
	if len(d.flags) > 0 {
		b.WriteString("\n| flag | default | meaning |\n|---|---|---|\n")
		for _, f := range d.flags {
			usage := mdCell(f.usage)
			if f.required {
				usage = "**required.** " + usage
			}
			def := ""
			if f.def != "" {
				def = "`" + f.def + "`"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", f.names, def, usage)
		}
	}
	for _, s := range d.subs {
		b.WriteString("\n" + markdownCommand(s, level+1))
	}
	return b.String()
}

// mdCell escapes text for a Markdown table cell.
func mdCell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// manPage renders the manual page, section 1, in roff (man(7) macros).
func manPage(app *cli.App) string {
	var b strings.Builder
	b.WriteString(`.\" Generated from the command definitions by go generate ./cmd/lathe; do not edit.` + "\n")
	fmt.Fprintf(&b, ".TH %s 1 \"\" \"%s %s\" \"User Commands\"\n", strings.ToUpper(app.Name), app.Name, roff(app.Version))
	fmt.Fprintf(&b, ".SH NAME\n%s \\- %s\n", app.Name, roff(app.Usage))
	fmt.Fprintf(&b, ".SH SYNOPSIS\n.B %s\n.I command\n[flags] [arguments]\n", app.Name)
	b.WriteString(".SH DESCRIPTION\nFlags may come before or after the arguments; \\fB\\-\\fR stands for standard input or " +
		"output where a command can stream. Every command takes \\fB\\-\\-help\\fR.\n.SH COMMANDS\n")
	docs := documentCommands(app.Name, app.Commands)
	var walk func(ds []commandDoc)
	walk = func(ds []commandDoc) {
		for _, d := range ds {
			fmt.Fprintf(&b, ".SS %s\n%s\n.PP\n.B %s\n", roff(d.path), roff(d.cmd.Usage), roff(d.synopsis))
			if d.cmd.Description != "" {
				fmt.Fprintf(&b, ".PP\n.nf\n%s\n.fi\n", roff(d.cmd.Description))
			}
			for _, f := range d.flags {
				usage := f.usage
				if f.def != "" {
					usage += " (default: " + f.def + ")"
				}
				if f.required {
					usage = "Required. " + usage
				}
				fmt.Fprintf(&b, ".TP\n.B %s\n%s\n", roff(f.names), roff(usage))
			}
			walk(d.subs)
		}
	}
	walk(docs)
	b.WriteString(".SH EXIT STATUS\n")
	for _, e := range exitStatus {
		fmt.Fprintf(&b, ".TP\n.B %s\n%s\n", e[0], roff(e[1]))
	}
	b.WriteString(".SH ENVIRONMENT\n")
	for _, e := range environment {
		fmt.Fprintf(&b, ".TP\n.B %s\n%s\n", e[0], roff(e[1]))
	}
	return b.String()
}

// roff escapes text for man(7): backslashes, hyphens (so that options print and search as ASCII minus), characters
// beyond ASCII (as \[uXXXX], which groff and mandoc read without a preprocessor), and a dot or quote at the start
// of a line, which roff would read as a request.
func roff(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\e`)
		case r == '-':
			b.WriteString(`\-`)
		case r > unicode.MaxASCII:
			fmt.Fprintf(&b, `\[u%04X]`, r)
		default:
			b.WriteRune(r)
		}
	}
	s = b.String()
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			lines[i] = `\&` + l
		}
	}
	return strings.Join(lines, "\n")
}
