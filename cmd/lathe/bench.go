package main

import (
	"fmt"
	"runtime"
	"time"

	"github.com/lathe-ml/lathe/internal/kernels"
	"github.com/urfave/cli/v2"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure this machine: GEMM speed on the shapes lathe runs, against the CPU's FMA peak",
		Description: "Runs each shape for --time, interleaved with an FMA-loop probe of the machine's peak, and prints the\n" +
			"best rate. The figures are what docs/BENCHMARKS.md reports for the project's machine.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "threads", Usage: "threads to use (default: all cores)"},
			&cli.DurationFlag{Name: "time", Value: 2 * time.Second, Usage: "time spent per shape"},
			&cli.BoolFlag{Name: "json", Usage: "machine-readable results"},
		},
		Action: func(c *cli.Context) error {
			threads := c.Int("threads")
			if threads <= 0 {
				threads = runtime.GOMAXPROCS(0)
			}
			results := kernels.Bench(kernels.BenchShapes, threads, c.Duration("time"))
			if c.Bool("json") {
				return writeJSON(c.App.Writer, results)
			}
			fmt.Fprintf(c.App.Writer, "%d threads\n", threads)
			for _, r := range results {
				fmt.Fprintln(c.App.Writer, r)
			}
			return nil
		},
	}
}
