package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/lathe-ml/lathe/audit"
	"github.com/urfave/cli/v2"
)

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:      "check",
		Usage:     "CI gate for a LoRA adapter: structure, fit to the base, intruder dimensions, α, update size",
		ArgsUsage: "ADAPTER",
		Description: "ADAPTER is a PEFT directory or a GGUF LoRA. Structural rules always run: factor shapes, ranks and scaling\n" +
			"agree with adapter_config.json (r, lora_alpha, rank_pattern, alpha_pattern, use_dora, target_modules),\n" +
			"factors are F32, F16 or BF16, no tensor holds NaN or Inf, the update is not all zeros; with --base, every\n" +
			"target exists in the base with the update's shape. Policy limits come from the flags or a --rules JSON file\n" +
			"(keys max_intruders_per_layer, max_intruders, alpha_min, alpha_max, max_delta_norm, max_size; flags\n" +
			"override it); intruder and ‖ΔW‖/‖W‖ limits need --base. Exits 0 when every rule passes, 1 when one fails,\n" +
			"2 when an input cannot be read. See docs/check.md for a CI setup.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "base", Usage: "the base model the adapter is for"},
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output, including the full spectrum"},
			&cli.StringFlag{Name: "format", Value: "text", Usage: "text, or github for GitHub Actions annotations"},
			&cli.StringFlag{Name: "rules", Usage: "JSON file of policy limits"},
			&cli.IntFlag{Name: "max-intruders-per-layer", Value: -1, Usage: "most intruder dimensions allowed in one layer (-1: no limit)"},
			&cli.IntFlag{Name: "max-intruders", Value: -1, Usage: "most intruder dimensions allowed in total (-1: no limit)"},
			&cli.Float64Flag{Name: "alpha-min", Usage: "smallest power-law α allowed per layer (of W+ΔW with --base, else of ΔW)"},
			&cli.Float64Flag{Name: "alpha-max", Usage: "largest power-law α allowed per layer"},
			&cli.Float64Flag{Name: "max-delta-norm", Usage: "largest ‖ΔW‖₂/‖W‖₂ allowed per layer"},
			&cli.StringFlag{Name: "max-size", Usage: "largest adapter size on disk: bytes, or with a K, M or G (binary) suffix"},
		}, analysisFlags()...),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("check: expected one ADAPTER, got %d arguments", c.NArg())
			}
			format := c.String("format")
			if format != "text" && format != "github" {
				return fmt.Errorf("check: --format %q: want text or github", format)
			}
			policy, err := checkPolicy(c)
			if err != nil {
				return fmt.Errorf("check: %w", err)
			}
			opts, err := analysisOptions(c)
			if err != nil {
				return fmt.Errorf("check: %w", err)
			}
			if !c.Bool("json") && format == "text" {
				opts.Progress = progress("check")
			}
			r, err := audit.Check(c.Args().First(), c.String("base"), policy, opts)
			if err != nil {
				return err
			}
			switch {
			case c.Bool("json"):
				err = writeJSON(c.App.Writer, r)
			case format == "github":
				printGitHub(c.App.Writer, r)
			default:
				printCheck(c.App.Writer, r)
			}
			if err == nil && !r.Passed {
				err = checkFailed{fmt.Sprintf("check: %s failed %s", r.Adapter, countFindings(r))}
			}
			return err
		},
	}
}

// checkPolicy reads --rules, then lets the flags that were set override it.
func checkPolicy(c *cli.Context) (audit.Policy, error) {
	p := audit.NoPolicy()
	if path := c.String("rules"); path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return p, err
		}
		if p, err = audit.ParsePolicy(path, data); err != nil {
			return p, fmt.Errorf("--rules %w", err)
		}
	}
	if c.IsSet("max-intruders-per-layer") {
		p.MaxIntrudersPerLayer = c.Int("max-intruders-per-layer")
	}
	if c.IsSet("max-intruders") {
		p.MaxIntrudersTotal = c.Int("max-intruders")
	}
	if c.IsSet("alpha-min") {
		p.AlphaMin = c.Float64("alpha-min")
	}
	if c.IsSet("alpha-max") {
		p.AlphaMax = c.Float64("alpha-max")
	}
	if c.IsSet("max-delta-norm") {
		p.MaxDeltaNormRatio = c.Float64("max-delta-norm")
	}
	if s := c.String("max-size"); s != "" {
		n, err := parseSize(s)
		if err != nil {
			return p, fmt.Errorf("--max-size: %w", err)
		}
		p.MaxBytes = n
	}
	if p.AlphaMin > 0 && p.AlphaMax > 0 && p.AlphaMin > p.AlphaMax {
		return p, fmt.Errorf("alpha range [%g, %g] is empty", p.AlphaMin, p.AlphaMax)
	}
	return p, nil
}

// parseSize reads 123, 64K, 10M or 2G (powers of 1024; a trailing B or iB is allowed).
func parseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMG", t[n-1]); i >= 0 {
			mult, t = int64(1)<<(10*(i+1)), t[:n-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (bytes, or a number with K, M or G)", s)
	}
	return n * mult, nil
}

func countFindings(r *audit.CheckReport) string {
	n := map[string]int{}
	for _, f := range r.Findings {
		n[f.Severity]++
	}
	return fmt.Sprintf("%d errors, %d warnings", n[audit.Error], n[audit.Warning])
}

func printCheck(out io.Writer, r *audit.CheckReport) {
	fmt.Fprintf(out, "adapter %s (%s, %d modules, %s)", r.Adapter, r.Format, r.Modules, humanBytes(r.Bytes))
	if r.Base != "" {
		fmt.Fprintf(out, ", base %s", r.Base)
	}
	fmt.Fprintf(out, "\nrules: %s\n", strings.Join(r.Rules, ", "))
	if len(r.Findings) > 0 {
		fmt.Fprintln(out)
		w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		for _, f := range r.Findings {
			subject := f.Subject
			if subject == "" {
				subject = "-"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", f.Severity, f.Rule, printable(subject), printable(f.Message))
		}
		w.Flush()
	}
	if s := r.Spectrum; s != nil && s.TunedSummary != nil {
		fmt.Fprintf(out, "\nintruder dimensions: %d in total over %d layers\n", s.Intruders, len(s.Layers))
	}
	verdict := "PASS"
	if !r.Passed {
		verdict = "FAIL"
	}
	fmt.Fprintf(out, "\n%s (%s)\n", verdict, countFindings(r))
}

// printGitHub prints workflow commands that GitHub Actions turns into annotations
// (docs.github.com, "Workflow commands for GitHub Actions": ::error file=…,title=…::message).
func printGitHub(out io.Writer, r *audit.CheckReport) {
	for _, f := range r.Findings {
		msg := f.Message
		if f.Subject != "" {
			msg = f.Subject + ": " + msg
		}
		fmt.Fprintf(out, "::%s file=%s,title=%s::%s\n", f.Severity, ghProperty(f.File), ghProperty("lathe check: "+f.Rule), ghData(msg))
	}
	verdict := "passed"
	if !r.Passed {
		verdict = "failed"
	}
	fmt.Fprintf(out, "lathe check %s: %s\n", verdict, countFindings(r))
}

// ghData and ghProperty escape text for workflow commands as the Actions toolkit does (escapeData, escapeProperty).
func ghData(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A").Replace(s)
}

func ghProperty(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A", ":", "%3A", ",", "%2C").Replace(s)
}
