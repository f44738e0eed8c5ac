// Command lathe reads, writes, converts, quantizes, analyses and fine-tunes model weight files.
//
// Exit codes: 0 success; 1 a check ran and failed; 2 usage or input error (bad flags, unreadable or malformed file).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/lathe-ml/lathe/internal/kernels"

	"github.com/urfave/cli/v2"
)

// version is set at release time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

func newApp() *cli.App {
	app := &cli.App{
		Name:                 "lathe",
		Usage:                "one binary for model weight files: safetensors, GGUF, quantization, analysis, adapters, training",
		Version:              version,
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		Commands: []*cli.Command{
			inspectCommand(),
			castCommand(),
			convertCommand(),
			quantizeCommand(),
			dequantizeCommand(),
			spectrumCommand(),
			checkCommand(),
			reduceIntrudersCommand(),
			evalCommand(),
			generateCommand(),
			trainCommand(),
			imatrixCommand(),
			pruneCommand(),
			maskCommand(),
			mergeCommand(),
			mergeModelsCommand(),
			adaptersCommand(),
			splitCommand(),
			benchCommand(),
			diffCommand(),
			hashCommand(),
			completionCommand(),
			manCommand(),
			demoCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {}, // main decides the exit code
	}
	for _, c := range app.Commands {
		// urfave/cli gives every command a "help" subcommand, which shell completion would then offer instead of
		// file names; `lathe help CMD` and `lathe CMD --help` still work.
		c.HideHelpCommand = true
		c.Flags = append(c.Flags, &cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress output"})
		if !hasFlag(c, "threads") {
			c.Flags = append(c.Flags, &cli.IntFlag{Name: "threads", Usage: "threads to use (default: all cores)"})
		}
		before := c.Before
		c.Before = func(ctx *cli.Context) error {
			// Progress never mixes with machine-readable output.
			quiet = ctx.Bool("quiet") || ctx.Bool("json")
			if n := ctx.Int("threads"); n > 0 {
				runtime.GOMAXPROCS(n)
				kernels.SetThreads(n)
			}
			if before != nil {
				return before(ctx)
			}
			return nil
		}
	}
	return app
}

func hasFlag(c *cli.Command, name string) bool {
	for _, f := range c.Flags {
		for _, n := range f.Names() {
			if n == name {
				return true
			}
		}
	}
	return false
}

func main() {
	app := newApp()
	err := app.Run(permuteArgs(app, os.Args))
	os.Exit(exitCode(os.Stderr, err))
}

// checkFailed marks an error as "the command ran and the check it performs failed" (exit 1), as opposed to a
// usage or input error (exit 2).
type checkFailed struct{ msg string }

func (e checkFailed) Error() string { return e.msg }

// exitCode prints err, if any, and maps it to the documented exit code.
func exitCode(stderr io.Writer, err error) int {
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "lathe:", err)
	var cf checkFailed
	if errors.As(err, &cf) {
		return 1
	}
	return 2
}
