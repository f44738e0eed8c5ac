package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/lathe-ml/lathe/audit"
	"github.com/lathe-ml/lathe/spectral"
	"github.com/lathe-ml/lathe/spectral/esdplot"
	"github.com/urfave/cli/v2"
)

// analysisFlags are the options spectrum, check and reduce-intruders share.
func analysisFlags() []cli.Flag {
	d := audit.DefaultOptions()
	return []cli.Flag{
		&cli.IntFlag{Name: "k", Value: d.Intruders.K, Usage: "intruder dimensions: top singular vectors of the tuned weight examined"},
		&cli.Float64Flag{Name: "epsilon", Value: d.Intruders.Epsilon, Usage: "intruder dimensions: a vector whose best |cos| with the base's is below this intrudes"},
		&cli.IntFlag{Name: "min-evals", Value: d.MinEvals, Usage: "skip layers whose smaller dimension is below this (0: no limit)"},
		&cli.IntFlag{Name: "max-evals", Value: d.MaxEvals, Usage: "skip layers whose smaller dimension is above this (0: no limit)"},
		&cli.IntFlag{Name: "max-n", Value: d.MaxN, Usage: "skip layers whose larger dimension is above this (0: no limit)"},
		&cli.StringFlag{Name: "include", Usage: "analyze only tensors (or adapter targets) whose name matches this regular expression"},
		&cli.IntFlag{Name: "threads", Usage: "layers analyzed at once (default: all cores)"},
	}
}

// analysisOptions reads analysisFlags.
func analysisOptions(c *cli.Context) (audit.Options, error) {
	o := audit.DefaultOptions()
	o.Intruders.K, o.Intruders.Epsilon = c.Int("k"), c.Float64("epsilon")
	o.MinEvals, o.MaxEvals, o.MaxN, o.Workers = c.Int("min-evals"), c.Int("max-evals"), c.Int("max-n"), c.Int("threads")
	if o.Intruders.K < 1 {
		return o, fmt.Errorf("--k %d: need at least 1", o.Intruders.K)
	}
	if re := c.String("include"); re != "" {
		rx, err := regexp.Compile(re)
		if err != nil {
			return o, fmt.Errorf("--include: %w", err)
		}
		o.Include = rx.MatchString
	}
	return o, nil
}

func spectrumCommand() *cli.Command {
	return &cli.Command{
		Name:      "spectrum",
		Usage:     "spectral analysis of weights, fine-tunes and LoRA adapters: WeightWatcher's metrics, intruder dimensions",
		ArgsUsage: "MODEL|ADAPTER",
		Description: "For every weight matrix of MODEL (safetensors or GGUF, any dtype, block types dequantized): the power-law α\n" +
			"of its empirical spectral density λ = σ² (WeightWatcher's fit and warnings: α < 2 over-trained, α > 6\n" +
			"under-trained), α̂ = α·log10 λmax, log norms, stable rank, entropy and effective rank; with --mp-fit the\n" +
			"Marchenko–Pastur fit, with --randomize the element-shuffled ESD and its correlation traps.\n" +
			"ADAPTER (a PEFT directory or a GGUF LoRA) is analyzed through its updates ΔW = scale·B·A, from the factors.\n" +
			"With --base, a model is analyzed as a fine-tune (ΔW = W − W_base) and an adapter is also merged: both then\n" +
			"report the tuned weight's α, its intruder dimensions against the base and ‖ΔW‖₂/‖W‖₂.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "base", Usage: "the base model of a fine-tune or an adapter"},
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output"},
			&cli.BoolFlag{Name: "csv", Usage: "one CSV row per layer"},
			&cli.StringFlag{Name: "plot", Usage: "write per-layer ESD plots and an α-per-layer chart (SVG and PNG) to this directory"},
			&cli.BoolFlag{Name: "mp-fit", Usage: "fit the Marchenko–Pastur law: sigma_mp, bulk edges, spikes, mp_softrank"},
			&cli.BoolFlag{Name: "randomize", Usage: "compare with the element-shuffled ESD: distance, correlation traps"},
			&cli.Uint64Flag{Name: "seed", Usage: "seed of the shuffles"},
			&cli.BoolFlag{Name: "ww-compat", Usage: "reproduce WeightWatcher's quirks: JS distance on sorted eigenvalue vectors, failed fits averaged into the summary"},
		}, analysisFlags()...),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("spectrum: expected one MODEL or ADAPTER, got %d arguments", c.NArg())
			}
			if c.Bool("json") && c.Bool("csv") {
				return fmt.Errorf("spectrum: --json and --csv exclude each other")
			}
			opts, err := analysisOptions(c)
			if err != nil {
				return fmt.Errorf("spectrum: %w", err)
			}
			opts.Spectral = spectral.Options{MPFit: c.Bool("mp-fit"), Randomize: c.Bool("randomize"), Seed: c.Uint64("seed"),
				WWCompat: c.Bool("ww-compat")}
			opts.Progress = progress("spectrum")
			r, err := audit.Spectrum(c.Args().First(), c.String("base"), opts)
			if err != nil {
				return err
			}
			if dir := c.String("plot"); dir != "" {
				if err := plotReport(dir, r); err != nil {
					return fmt.Errorf("spectrum: --plot: %w", err)
				}
			}
			switch {
			case c.Bool("json"):
				return writeJSON(c.App.Writer, r)
			case c.Bool("csv"):
				return writeSpectrumCSV(c.App.Writer, r)
			}
			printSpectrum(c.App.Writer, r)
			return nil
		},
	}
}

// spectrumColumns returns the header and one row per layer; exact selects full precision (CSV) over short (table).
func spectrumColumns(r *audit.Report, exact bool) ([]string, [][]string) {
	num := func(x float64) string {
		if exact {
			return strconv.FormatFloat(x, 'g', -1, 64)
		}
		return strconv.FormatFloat(x, 'g', 4, 64)
	}
	var mp, random, tuned bool
	for _, l := range r.Layers {
		if m := l.Metrics; m != nil {
			mp, random = mp || m.MP != nil, random || m.Random != nil
		}
		tuned = tuned || l.Tuned != nil
	}
	head := []string{"name", "shape", "dtype", "alpha", "xmin", "D", "alpha_weighted", "log_norm", "log_spectral_norm",
		"stable_rank", "effective_rank", "entropy", "num_evals", "warning"}
	if r.Kind == audit.KindAdapter {
		head = append(head, "rank", "scale")
	}
	if mp {
		head = append(head, "sigma_mp", "num_spikes", "mp_softrank")
	}
	if random {
		head = append(head, "rand_distance", "correlation_traps")
	}
	if tuned {
		head = append(head, "tuned_alpha", "intruders", "delta_norm_ratio")
	}
	head = append(head, "skipped")
	var rows [][]string
	for _, l := range r.Layers {
		row := []string{l.Name, fmt.Sprintf("%dx%d", l.Rows, l.Cols), l.DType}
		m := l.Metrics
		if m == nil {
			row = append(row, make([]string, len(head)-len(row)-1)...)
			rows = append(rows, append(row, l.Skipped))
			continue
		}
		pl := m.PowerLaw
		row = append(row, num(pl.Alpha), num(pl.XMin), num(pl.D), num(m.AlphaWeighted), num(m.LogNorm),
			num(m.LogSpectralNorm), num(m.StableRank), num(m.EffectiveRank), num(m.Entropy), strconv.Itoa(m.NumEvals), pl.Warning)
		if r.Kind == audit.KindAdapter {
			row = append(row, strconv.Itoa(l.Rank), num(l.Scale))
		}
		if mp {
			if m.MP != nil {
				row = append(row, num(m.MP.SigmaMP), strconv.Itoa(m.MP.NumSpikes), num(m.MP.MPSoftRank))
			} else {
				row = append(row, "", "", "")
			}
		}
		if random {
			if m.Random != nil {
				row = append(row, num(m.Random.Distance), strconv.Itoa(m.Random.CorrTraps))
			} else {
				row = append(row, "", "")
			}
		}
		if tuned {
			if l.Tuned != nil && l.Intruders != nil {
				row = append(row, num(l.Tuned.PowerLaw.Alpha), strconv.Itoa(len(l.Intruders.Left)), num(l.DeltaNormRatio))
			} else {
				row = append(row, "", "", "")
			}
		}
		rows = append(rows, append(row, l.Skipped))
	}
	return head, rows
}

func writeSpectrumCSV(w io.Writer, r *audit.Report) error {
	head, rows := spectrumColumns(r, true)
	cw := csv.NewWriter(w)
	cw.Write(head)
	cw.WriteAll(rows)
	return cw.Error()
}

func printSpectrum(out io.Writer, r *audit.Report) {
	what := map[string]string{audit.KindModel: "weights", audit.KindDelta: "fine-tune minus base",
		audit.KindAdapter: "LoRA updates ΔW = scale·B·A"}[r.Kind]
	fmt.Fprintf(out, "%s: %s", r.Path, what)
	if r.Base != "" {
		fmt.Fprintf(out, " (base %s)", r.Base)
	}
	fmt.Fprintln(out)
	head, rows := spectrumColumns(r, false)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, strings.Join(head, "\t"))
	for _, row := range rows {
		row[0] = printable(row[0])
		fmt.Fprintln(w, strings.Join(row, "\t"))
	}
	w.Flush()
	s := r.Summary
	fmt.Fprintf(out, "\n%d layers analyzed, %d power-law fits: mean α %.3f, α̂ %.3f, log_norm %.3f, log_spectral_norm %.3f, stable rank %.4g\n",
		s.Layers, s.Fitted, s.Alpha, s.AlphaWeighted, s.LogNorm, s.LogSpectralNorm, s.StableRank)
	if t := r.TunedSummary; t != nil {
		fmt.Fprintf(out, "tuned weights: mean α %.3f, α̂ %.3f; intruder dimensions: %d in total\n", t.Alpha, t.AlphaWeighted, r.Intruders)
	}
}

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// plotReport writes esd_NNN_<name>.{svg,png} for each analyzed layer and alpha.{svg,png}.
func plotReport(dir string, r *audit.Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var alphas []float64
	fitted := false
	for i, l := range r.Layers {
		if l.Metrics == nil {
			continue
		}
		alphas = append(alphas, l.Metrics.PowerLaw.Alpha)
		fitted = fitted || l.Metrics.PowerLaw.Status == spectral.StatusSuccess
		p, err := esdplot.ESD(l.Name, l.Metrics.ESD, l.Metrics.PowerLaw)
		if err != nil {
			continue // fewer than two positive eigenvalues: nothing to draw
		}
		name := fmt.Sprintf("esd_%03d_%s", i, unsafeFileChars.ReplaceAllString(l.Name, "_"))
		if err := esdplot.Save(p, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	if !fitted {
		return nil
	}
	p, err := esdplot.Alphas(fmt.Sprintf("α per layer: %s", filepath.Base(r.Path)), alphas)
	if err != nil {
		return err
	}
	return esdplot.Save(p, filepath.Join(dir, "alpha"))
}
