package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/tensor"
	"github.com/urfave/cli/v2"
)

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "describe a model file: tensors, types, shapes, sizes, metadata",
		ArgsUsage: "FILE|DIR|URL|-",
		Description: "Reads only the header unless --stats is given. FILE may be safetensors (also .zst), GGUF (the first\n" +
			"file of a split set opens the whole set), a directory of safetensors shards, or - for standard input.\n" +
			"A URL (http or https) of a safetensors or GGUF file, or of a sharded checkpoint's index, is read with\n" +
			"range requests: only the header bytes are fetched.",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output (schema in docs/inspect.md)"},
			&cli.BoolFlag{Name: "stats", Usage: "per-tensor min/max/mean/std/absmax and NaN/Inf counts (reads all data)"},
			&cli.BoolFlag{Name: "full", Usage: "print long metadata arrays in full"},
		}, httpFlags()...),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("inspect: expected one FILE, DIR or -, got %d arguments", c.NArg())
			}
			m, err := openModel(c, c.Args().First())
			if err != nil {
				return err
			}
			defer m.Close()
			r, err := m.Report(modelfile.ReportOptions{Stats: c.Bool("stats"), Full: c.Bool("full"),
				Progress: progress("stats")})
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return writeJSON(c.App.Writer, r)
			}
			printReport(c.App.Writer, r, c.Bool("full"))
			return nil
		},
	}
}

func printReport(out io.Writer, r *modelfile.Report, full bool) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "file\t%s (%s, %s bytes, header %s bytes)\n", r.Path, r.Format, thousands(r.FileBytes), thousands(r.HeaderBytes))
	if len(r.Files) > 1 {
		fmt.Fprintf(w, "files\t%d: %s\n", len(r.Files), strings.Join(r.Files, ", "))
	}
	fmt.Fprintf(w, "tensors\t%d\n", r.TensorCount)
	fmt.Fprintf(w, "parameters\t%s (%s)\n", humanCount(r.Parameters), thousands(r.Parameters))
	fmt.Fprintf(w, "data\t%s (%s bytes, %.3f bits per weight)\n", humanBytes(r.TensorBytes), thousands(r.TensorBytes), r.BitsPerWeight)
	for _, d := range r.DTypes {
		fmt.Fprintf(w, "  %s\t%d tensors, %s parameters, %s\n", d.DType, d.Tensors, thousands(d.Parameters), humanBytes(d.Bytes))
	}
	if g := r.GGUF; g != nil {
		fmt.Fprintf(w, "gguf\tversion %d, alignment %d\n", g.Version, g.Alignment)
		if g.Architecture != "" {
			fmt.Fprintf(w, "architecture\t%s\n", printable(g.Architecture))
		}
		if g.Name != "" {
			fmt.Fprintf(w, "name\t%s\n", printable(g.Name))
		}
		if g.FileType != "" {
			fmt.Fprintf(w, "file type\t%s\n", g.FileType)
		}
		if t := g.Tokenizer; t != nil {
			fmt.Fprintf(w, "tokenizer\t%s", printable(t.Model))
			if t.Pre != "" {
				fmt.Fprintf(w, " (pre %s)", printable(t.Pre))
			}
			fmt.Fprintf(w, ", %d tokens", t.Tokens)
			if t.Merges > 0 {
				fmt.Fprintf(w, ", %d merges", t.Merges)
			}
			if t.BOS != nil {
				fmt.Fprintf(w, ", bos %d", *t.BOS)
			}
			if t.EOS != nil {
				fmt.Fprintf(w, ", eos %d", *t.EOS)
			}
			fmt.Fprintln(w)
		}
	}
	w.Flush()
	if len(r.Metadata) > 0 {
		fmt.Fprintln(out, "\nmetadata")
		for _, k := range slices.Sorted(maps.Keys(r.Metadata)) {
			fmt.Fprintf(out, "  %s = %s\n", printable(k), printable(r.Metadata[k]))
		}
	}
	if r.GGUF != nil && len(r.GGUF.KV) > 0 {
		fmt.Fprintln(out, "\nmetadata")
		w = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		for _, kv := range r.GGUF.KV {
			text := kv.Text
			if full && kv.Len != nil {
				text = fullArray(kv.Value)
			}
			fmt.Fprintf(w, "  %s\t%s\t%s\n", printable(kv.Key), kv.Type, text)
		}
		w.Flush()
	}
	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := "name\tdtype\tshape\tparameters\tbytes\t"
	hasStats := len(r.Tensors) > 0 && r.Tensors[0].Stats != nil
	if hasStats {
		header += "min\tmax\tmean\tstd\tabsmax\tnan\tinf\t"
	}
	// Right alignment suits the numbers; names are padded to one width first so that they read left-aligned.
	width := len("name")
	for _, t := range r.Tensors {
		width = max(width, len(printable(t.Name)))
	}
	fmt.Fprintf(w, "%-*s%s\n", width, "name", header[len("name"):])
	for _, t := range r.Tensors {
		fmt.Fprintf(w, "%-*s\t%s\t%v\t%s\t%s\t", width, printable(t.Name), t.DType, tensor.Shape(t.Shape), thousands(t.Parameters), thousands(t.Bytes))
		if s := t.Stats; s != nil {
			fmt.Fprintf(w, "%.4g\t%.4g\t%.4g\t%.4g\t%.4g\t%d\t%d\t", s.Min, s.Max, s.Mean, s.Std, s.AbsMax, s.NaN, s.Inf)
		}
		fmt.Fprintln(w)
	}
	w.Flush()
}

// printable quotes a string from a file if it holds control or invalid characters, so that metadata written by a
// stranger cannot move the cursor, clear the screen or hide text in the user's terminal.
func printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) < 0 && utf8.ValidString(s) {
		return s
	}
	return strconv.Quote(s)
}

// fullArray prints every element of a metadata array, strings quoted as the abbreviated form quotes them.
func fullArray(v any) string {
	strs, ok := v.([]string)
	if !ok {
		return fmt.Sprint(v)
	}
	quoted := make([]string, len(strs))
	for i, s := range strs {
		quoted[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(quoted, ", ") + "]"
}
