package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lathe-ml/lathe/train"
	"github.com/lathe-ml/lathe/train/lossplot"
	"github.com/urfave/cli/v2"
)

// compareFlags are train's flags of a comparison.
func compareFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "compare", Usage: "M1,M2,...: train each method with the same trainable-parameter " +
			"budget and print a table (validation loss, trainable values, tokens/s, peak memory)"},
		&cli.IntFlag{Name: "budget", Usage: "--compare: trainable values per method (default: what --method lora " +
			"trains at --rank)"},
		&cli.BoolFlag{Name: "json", Usage: "--compare: machine-readable table"},
	}
}

// comparedRun is one row of a comparison.
type comparedRun struct {
	Method    string   `json:"method"`
	Rank      int      `json:"rank"`
	Trainable int      `json:"trainable"`
	Fixed     bool     `json:"fixed_size,omitempty"` // the method's size does not depend on --rank
	ValLoss   *float64 `json:"val_loss"`
	TokensSec float64  `json:"tokens_per_s"`
	PeakRSS   int64    `json:"peak_rss_bytes"`
	Seconds   float64  `json:"seconds"`
	Output    string   `json:"output,omitempty"`
	logs      []train.StepLog
}

// notForwarded are the flags a comparison sets itself for each method's run, or that only it reads.
var notForwarded = []string{"compare", "budget", "json", "method", "rank", "method-arg", "output", "log", "plot",
	"merge-out", "gguf-out", "checkpoint", "save-every", "resume", "dylora-rank", "quiet"}

// compareMethods runs lathe train once per method of --compare, each in a child process so that its peak memory is
// its own, at the rank that brings its trainable values closest to the budget. --method-arg values apply to the
// method they name: M:KEY=VALUE.
func compareMethods(c *cli.Context, modelPath string) error {
	names := strings.Split(c.String("compare"), ",")
	if c.String("val") == "" {
		return fmt.Errorf("train: --compare needs --val: validation loss is what the methods are compared on")
	}
	margs := map[string][]string{}
	for _, kv := range c.StringSlice("method-arg") {
		method, arg, ok := strings.Cut(kv, ":")
		if !ok || !slices.Contains(names, method) {
			return fmt.Errorf("train: --method-arg %q: with --compare, write METHOD:KEY=VALUE for one of %s", kv,
				strings.Join(names, ","))
		}
		margs[method] = append(margs[method], arg)
	}
	m, err := train.Open(modelPath)
	if err != nil {
		return err
	}
	defer m.Close()
	base := train.TrainOptions{Rank: c.Int("rank"), Alpha: c.Float64("alpha"), RSLoRA: c.Bool("rslora"),
		Targets: strings.Split(c.String("target"), ","), Init: c.String("init"), Seed: c.Uint64("seed"),
		Steps: c.Int("steps")}
	budget := c.Int("budget")
	if budget == 0 {
		if budget, err = train.TrainableCount(m, base); err != nil {
			return err
		}
	}
	outDir := c.String("output")
	if outDir == "" {
		if outDir, err = os.MkdirTemp("", "lathe-compare-"); err != nil {
			return err
		}
		defer os.RemoveAll(outDir)
	} else if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	// Every method's size is settled before the first run, so that a method that cannot run fails at once.
	var runs []comparedRun
	for _, name := range names {
		opts := base
		opts.Method, opts.MethodArgs = name, map[string]string{}
		for _, kv := range margs[name] {
			k, v, _ := strings.Cut(kv, "=")
			opts.MethodArgs[k] = v
		}
		if name == train.MethodLoRA || name == train.MethodDyLoRA {
			opts.Init = base.Init
		} else {
			opts.Init = ""
		}
		rank, count, fixed, err := train.RankForBudget(m, opts, budget)
		if err != nil {
			return err
		}
		runs = append(runs, comparedRun{Method: name, Rank: rank, Trainable: count, Fixed: fixed})
	}
	for i := range runs {
		if err := runs[i].train(c, exe, outDir, modelPath, margs[runs[i].Method]); err != nil {
			return err
		}
	}
	if p := c.String("plot"); p != "" {
		var curves []lossplot.Run
		for _, r := range runs {
			curves = append(curves, lossplot.Run{Name: r.Method, Logs: r.logs})
		}
		pl, err := lossplot.Compare(fmt.Sprintf("%s, %d trainable values", filepath.Base(modelPath), budget), curves)
		if err != nil {
			return err
		}
		if err := lossplot.Save(pl, p); err != nil {
			return err
		}
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, map[string]any{"budget": budget, "runs": runs})
	}
	fmt.Fprintf(c.App.Writer, "budget %d trainable values, %d steps of %d×%d tokens\n", budget, c.Int("steps"),
		c.Int("batch"), c.Int("ctx"))
	tw := newTable(c.App.Writer)
	fmt.Fprintln(tw, "method\trank\ttrainable\tval loss\ttokens/s\tpeak RSS\ttime")
	for _, r := range runs {
		rank := strconv.Itoa(r.Rank)
		if r.Fixed {
			rank = "-"
		}
		val := "-"
		if r.ValLoss != nil {
			val = fmt.Sprintf("%.4f", *r.ValLoss)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%.0f\t%s\t%.1f s\n", r.Method, rank, r.Trainable, val, r.TokensSec,
			humanBytes(r.PeakRSS), r.Seconds)
	}
	return tw.Flush()
}

// train runs lathe train for one method in a child process with the comparison's other flags, and reads its log.
func (r *comparedRun) train(c *cli.Context, exe, outDir, modelPath string, methodArgs []string) error {
	output, err := train.MethodOutput(r.Method)
	if err != nil {
		return err
	}
	writesAdapter := output != train.OutputMerged
	logPath := filepath.Join(outDir, r.Method+".jsonl")
	args := []string{"train", modelPath, "--quiet", "--method", r.Method, "--rank", strconv.Itoa(r.Rank),
		"--log", logPath}
	for _, kv := range methodArgs {
		args = append(args, "--method-arg", kv)
	}
	if writesAdapter {
		r.Output = filepath.Join(outDir, r.Method)
		args = append(args, "--output", r.Output)
	} else {
		r.Output = filepath.Join(outDir, r.Method+"-merged"+modelExt(modelPath))
		args = append(args, "--merge-out", r.Output)
	}
	for _, f := range c.Command.Flags {
		name := f.Names()[0]
		if !c.IsSet(name) || slices.Contains(notForwarded, name) {
			continue
		}
		if name == "lora-dropout" && r.Method != train.MethodLoRA && r.Method != train.MethodDyLoRA {
			continue // the other methods compute their projections whole, without PEFT's dropout on x
		}
		if name == "recompute" && r.Method == train.MethodEVA {
			continue // EVA's initialisation reads every layer's activations at once
		}
		switch f.(type) {
		case *cli.StringSliceFlag:
			for _, v := range c.StringSlice(name) {
				args = append(args, "--"+name, v)
			}
		case *cli.BoolFlag:
			args = append(args, "--"+name+"="+strconv.FormatBool(c.Bool(name)))
		default:
			args = append(args, "--"+name, fmt.Sprint(c.Value(name)))
		}
	}
	cmd := exec.Command(exe, args...)
	// LATHE_RUN_MAIN makes a test binary run lathe (see TestMain); the real binary ignores it.
	cmd.Env = append(os.Environ(), "LATHE_RUN_MAIN=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if !quiet && isTerminal(os.Stderr) {
		fmt.Fprintf(os.Stderr, "training %s at rank %d (%d trainable values)\n", r.Method, r.Rank, r.Trainable)
	}
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("train: --compare: method %s: %v: %s", r.Method, err, strings.TrimSpace(stderr.String()))
	}
	r.Seconds = time.Since(start).Seconds()
	if u, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.PeakRSS = u.Maxrss * 1024 // Linux reports kilobytes
	}
	f, err := os.Open(logPath)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var tokens, secs float64
	for sc.Scan() {
		var s train.StepLog
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			return fmt.Errorf("train: --compare: %s: %w", logPath, err)
		}
		r.logs = append(r.logs, s)
		if s.ValLoss != nil {
			r.ValLoss = s.ValLoss
		}
		if s.Step > 0 && s.TokensSec > 0 {
			n := float64(c.Int("grad-accum") * c.Int("batch") * c.Int("ctx"))
			tokens, secs = tokens+n, secs+n/s.TokensSec
		}
	}
	if secs > 0 {
		r.TokensSec = tokens / secs
	}
	return sc.Err()
}

// modelExt is the extension of a merged model written for MODEL: .gguf for a GGUF file, .safetensors for a
// Hugging Face directory.
func modelExt(modelPath string) string {
	if st, err := os.Stat(modelPath); err == nil && st.IsDir() {
		return ".safetensors"
	}
	return ".gguf"
}
