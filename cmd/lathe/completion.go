package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
)

// completionFlag is the flag urfave/cli answers with the words that can come next (see permuteArgs).
const completionFlag = "--generate-bash-completion"

// The bash and zsh scripts ask lathe itself what can come next, so they never go stale as commands and flags are
// added. When lathe has nothing to offer (a file argument), both fall back to file names.
const bashCompletion = `# bash completion for lathe. Load it with
#   source <(lathe completion bash)
# in ~/.bashrc, or save it as /etc/bash_completion.d/lathe.
_lathe_complete() {
  local cur="${COMP_WORDS[COMP_CWORD]}"
  local -a words=("${COMP_WORDS[@]:0:COMP_CWORD}")
  if [[ "$cur" == -* ]]; then
    words+=("$cur")
  fi
  local IFS=$'\n'
  COMPREPLY=($(compgen -W "$("${words[@]}" ` + completionFlag + ` 2>/dev/null)" -- "$cur"))
}
complete -o bashdefault -o default -F _lathe_complete lathe
`

const zshCompletion = `#compdef lathe
# zsh completion for lathe. Save it as _lathe in a directory of $fpath, e.g.
#   lathe completion zsh > "${fpath[1]}/_lathe"
# or load it with: source <(lathe completion zsh)
_lathe() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == -* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} "$cur" ` + completionFlag + ` 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ` + completionFlag + ` 2>/dev/null)}")
  fi
  if [[ -n "${opts[1]}" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
if [[ "$funcstack[1]" == "_lathe" ]]; then
  _lathe "$@"
else
  compdef _lathe lathe
fi
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:            "completion",
		HideHelpCommand: true,
		Usage:           "print a shell completion script for bash, zsh or fish",
		ArgsUsage:       "bash|zsh|fish",
		Description: "Install the script for your shell:\n\n" +
			"    bash:  source <(lathe completion bash)    # in ~/.bashrc\n" +
			"    zsh:   lathe completion zsh > \"${fpath[1]}/_lathe\"\n" +
			"    fish:  lathe completion fish > ~/.config/fish/completions/lathe.fish\n\n" +
			"bash and zsh ask lathe for commands and flags as you type, so they follow upgrades; the fish script\n" +
			"lists them and needs regenerating after one.",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("completion: expected one shell: bash, zsh or fish")
			}
			return writeCompletion(c.App.Writer, c.App, c.Args().First())
		},
	}
}

func writeCompletion(w io.Writer, app *cli.App, shell string) error {
	var script string
	switch shell {
	case "bash":
		script = bashCompletion
	case "zsh":
		script = zshCompletion
	case "fish":
		// fish completions are static: generated from the command and flag definitions of this binary. The
		// generator copies flag usages verbatim, so the `quotes` marking value placeholders are removed here.
		s, err := app.ToFishCompletion()
		if err != nil {
			return err
		}
		script = strings.ReplaceAll(s, "`", "")
	default:
		return fmt.Errorf("completion: unknown shell %q: want bash, zsh or fish", shell)
	}
	_, err := io.WriteString(w, script)
	return err
}

func manCommand() *cli.Command {
	return &cli.Command{
		Name:            "man",
		HideHelpCommand: true,
		Usage:           "print lathe's manual page (roff)",
		Description:     "The same page is docs/lathe.1 in the repository. To read it: lathe man | man -l -",
		Action: func(c *cli.Context) error {
			_, err := io.WriteString(c.App.Writer, manPage(c.App))
			return err
		},
	}
}
