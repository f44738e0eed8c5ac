package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
	"github.com/lathe-ml/lathe/train"
	"github.com/lathe-ml/lathe/train/lossplot"
	"github.com/urfave/cli/v2"
)

func trainCommand() *cli.Command {
	return &cli.Command{
		Name:      "train",
		Usage:     "fine-tune a LoRA adapter on a text or JSONL dataset",
		ArgsUsage: "MODEL",
		Description: "MODEL is a GGUF file (any weight type: quantized weights are decoded on the fly, QLoRA-style) or a\n" +
			"Hugging Face model directory. --data is a text file (tokenized once with BOS) or JSONL/JSON records, each\n" +
			"sample BOS + text + EOS with prompts left out of the loss (docs/training-data.md); each step takes --grad-accum micro-batches\n" +
			"of --batch windows of --ctx+1 consecutive tokens at random offsets and lowers their mean next-token loss\n" +
			"with AdamW (torch.optim.AdamW; the gradient is the mean of the micro-batches' gradients, as the Hugging Face\n" +
			"Trainer accumulates), optionally clipped to --max-grad-norm, at a learning rate shaped by --lr-schedule\n" +
			"after --warmup-steps (transformers' get_scheduler formulas). LoRA factors go on the --target projections of\n" +
			"every layer (A Kaiming-uniform, B zero, scale alpha/rank or alpha/√rank with --rslora, as PEFT; --init pissa or\n" +
			"milora starts them from the largest or smallest singular triplets of each weight and trains against the\n" +
			"residual weight, then writes the plain rank-2·rank LoRA that applies to MODEL itself, as PEFT's\n" +
			"path_initial_model_for_weight_conversion; not for quantized MODELs). --method dylora draws a rank b in\n" +
			"1..--rank each step and trains the first b ranks at scale alpha/b, so that the first b ranks of the result\n" +
			"are a LoRA of rank b (--dylora-rank writes those alone; docs/methods.md). --val is\n" +
			"scored before training, every --eval-every steps and at the end: the mean loss over non-overlapping chunks\n" +
			"of --ctx tokens, BOS first. --save-every writes the whole training state to --checkpoint atomically; --resume\n" +
			"continues such a run, with the same flags, to the bytes an uninterrupted run writes. The result is a PEFT\n" +
			"adapter directory (and, if asked, a llama.cpp GGUF adapter and a merged model). The same flags and data\n" +
			"give the same bytes, whatever --threads.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "data", Required: true,
				Usage: "training data: a text file, or JSONL/JSON records (text, prompt/completion, alpaca, chat messages)"},
			&cli.StringFlag{Name: "data-format", Value: "auto", Usage: "format of --data and --val: auto, text, jsonl or json"},
			&cli.StringFlag{Name: "chat-template",
				Usage: "render chat records with this template (" + strings.Join(train.ChatTemplateNames(), ", ") + ") instead of the model's"},
			&cli.BoolFlag{Name: "train-on-prompt", Usage: "score prompts and non-assistant turns too"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "adapter directory to write (required but for full-rank methods, which write --merge-out)"},
			&cli.IntFlag{Name: "rank", Value: 8, Usage: "LoRA rank"},
			&cli.Float64Flag{Name: "alpha", Value: 16, Usage: "LoRA alpha (the update is scaled by alpha/rank)"},
			&cli.BoolFlag{Name: "rslora", Usage: "scale the update by alpha/√rank (rank-stabilised LoRA)"},
			&cli.StringFlag{Name: "init", Usage: "initialise the factors with pissa or milora (SVD of each weight) instead of PEFT's default"},
			&cli.StringFlag{Name: "method", Value: train.MethodLoRA, Usage: "training method: " + methodNames() +
				" (docs/methods.md)"},
			&cli.StringSliceFlag{Name: "method-arg", Usage: "KEY=VALUE: an argument of --method (repeat the flag; " +
				"docs/methods.md lists each method's)"},
			&cli.BoolFlag{Name: "dylora-frozen",
				Usage: "dylora: train only the drawn rank's own row and column (the paper's frozen mode)"},
			&cli.IntFlag{Name: "dylora-rank",
				Usage: "dylora: write only the first N ranks, a LoRA of rank N with the same alpha (default: all --rank)"},
			&cli.StringFlag{Name: "target", Value: "all-linear",
				Usage: "modules to adapt: all-linear or a comma-separated list of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,embed_tokens (the token embedding; all-linear,embed_tokens adds it to the seven)"},
			&cli.IntFlag{Name: "steps", Value: 100, Usage: "optimizer steps"},
			&cli.Float64Flag{Name: "lr", Value: 1e-3, Usage: "AdamW peak learning rate"},
			&cli.StringFlag{Name: "lr-schedule", Value: "constant", Usage: "constant, linear or cosine"},
			&cli.IntFlag{Name: "warmup-steps", Usage: "steps of linear learning-rate warmup"},
			&cli.Float64Flag{Name: "weight-decay", Value: 0.01, Usage: "AdamW decoupled weight decay (torch's default)"},
			&cli.Float64Flag{Name: "max-grad-norm", Usage: "clip the gradient to this global L2 norm (0: no clipping)"},
			&cli.IntFlag{Name: "grad-accum", Value: 1, Usage: "micro-batches per optimizer step"},
			&cli.IntFlag{Name: "batch", Value: 8, Usage: "windows per micro-batch"},
			&cli.IntFlag{Name: "ctx", Value: 256, Usage: "tokens per window"},
			&cli.StringFlag{Name: "packing", Value: train.PackingConcat, Usage: "concat: attention crosses the " +
				"samples a window holds (the recorded PyTorch recipe); confined: each token attends only to its own " +
				"sample, positions from 0 at each sample's start (docs/training-data.md)"},
			&cli.Uint64Flag{Name: "seed", Usage: "seed of the initialisation and of the window offsets"},
			&cli.StringFlag{Name: "val", Usage: "validation data, in the format of --data, scored as --data is (prompts left out unless --train-on-prompt)"},
			&cli.IntFlag{Name: "eval-every", Usage: "score --val every N steps (besides before and after training)"},
			&cli.StringFlag{Name: "log", Usage: "write one JSON object per step to this file (JSON Lines) as the run goes, or - for standard output; --resume appends"},
			&cli.StringFlag{Name: "plot", Usage: "draw the loss curves to this .svg or .png file"},
			&cli.StringFlag{Name: "checkpoint", Usage: "directory for checkpoints"},
			&cli.IntFlag{Name: "save-every", Usage: "write a checkpoint every N steps"},
			&cli.StringFlag{Name: "resume", Usage: "continue the run whose checkpoint directory this is"},
			&cli.StringFlag{Name: "gguf-out", Usage: "also write the adapter as a llama.cpp LoRA GGUF file"},
			&cli.StringFlag{Name: "merge-out", Usage: "also write MODEL with the adapter merged (one file of MODEL's format)"},
			&cli.StringFlag{Name: "sparse-delta-out", Usage: "lift: also write the sparse update (compressed-tensors " +
				"sparse-bitmask safetensors)"},
			&cli.Float64Flag{Name: "lora-dropout", Usage: "drop each adapter input value with this probability in " +
				"training (PEFT's lora_dropout; lora and dylora)"},
			&cli.BoolFlag{Name: "recompute", Usage: "recompute each layer's activations in the backward pass: " +
				"activation memory of one layer instead of all, about one more forward pass, the same result"},
			&cli.IntFlag{Name: "threads", Usage: "threads to use (default: all cores)"},
		}, compareFlags()...),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("train: expected MODEL, got %d arguments", c.NArg())
			}
			for _, f := range []string{"rank", "steps", "batch", "ctx", "grad-accum"} {
				if c.Int(f) <= 0 {
					return fmt.Errorf("train: --%s %d: must be positive", f, c.Int(f))
				}
			}
			for _, f := range []string{"warmup-steps", "eval-every", "save-every"} {
				if c.Int(f) < 0 {
					return fmt.Errorf("train: --%s %d: must not be negative", f, c.Int(f))
				}
			}
			if c.Int("save-every") > 0 && c.String("checkpoint") == "" {
				return fmt.Errorf("train: --save-every needs --checkpoint DIR")
			}
			if c.String("compare") != "" {
				return compareMethods(c, c.Args().Get(0))
			}
			result, err := train.MethodOutput(c.String("method"))
			if err != nil {
				return fmt.Errorf("train: --method %q: want one of %s", c.String("method"), methodNames())
			}
			writesAdapter := result != train.OutputMerged
			switch {
			case result == train.OutputPEFT && c.String("gguf-out") != "":
				return fmt.Errorf("train: --method %s writes a PEFT %s adapter, which llama.cpp does not load: "+
					"drop --gguf-out, or give --merge-out for a merged model", c.String("method"), c.String("method"))
			case c.String("sparse-delta-out") != "" && c.String("method") != train.MethodLIFT:
				return fmt.Errorf("train: --sparse-delta-out is the sparse update of --method %s", train.MethodLIFT)
			case writesAdapter && c.String("output") == "":
				return fmt.Errorf("train: --output DIR is required: the adapter directory to write")
			case !writesAdapter && (c.String("output") != "" || c.String("gguf-out") != ""):
				return fmt.Errorf("train: --method %s updates the weights at full rank, which no adapter holds: "+
					"give --merge-out FILE (the merged model) instead of --output and --gguf-out", c.String("method"))
			case !writesAdapter && c.String("merge-out") == "":
				return fmt.Errorf("train: --method %s writes a merged model: give --merge-out FILE", c.String("method"))
			}
			methodArgs := map[string]string{}
			for _, kv := range c.StringSlice("method-arg") {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("train: --method-arg %q: want KEY=VALUE", kv)
				}
				methodArgs[k] = v
			}
			if n := c.Int("dylora-rank"); n < 0 || n > c.Int("rank") || n > 0 && c.String("method") != train.MethodDyLoRA {
				return fmt.Errorf("train: --dylora-rank %d: want 1..--rank (%d) with --method %s", n, c.Int("rank"),
					train.MethodDyLoRA)
			}
			if p := c.String("packing"); p != train.PackingConcat && p != train.PackingConfined {
				return fmt.Errorf("train: --packing %q: want %s or %s", p, train.PackingConcat, train.PackingConfined)
			}
			if p := c.Float64("lora-dropout"); !(p >= 0 && p < 1) {
				return fmt.Errorf("train: --lora-dropout %g: want a probability in [0, 1)", p)
			}
			if i := c.String("init"); i != "" && i != train.InitPiSSA && i != train.InitMiLoRA {
				return fmt.Errorf("train: --init %q: want %s or %s", i, train.InitPiSSA, train.InitMiLoRA)
			}
			schedule, err := train.ParseSchedule(c.String("lr-schedule"))
			if err != nil {
				return fmt.Errorf("train: --lr-schedule: %w", err)
			}
			modelPath := c.Args().Get(0)
			m, err := train.Open(modelPath)
			if err != nil {
				return err
			}
			defer m.Close()
			data, err := loadStream(c, m, c.String("data"))
			if err != nil {
				return err
			}
			opts := train.TrainOptions{Rank: c.Int("rank"), Alpha: c.Float64("alpha"), RSLoRA: c.Bool("rslora"),
				Targets: strings.Split(c.String("target"), ","), Init: c.String("init"), Method: c.String("method"),
				MethodArgs:   methodArgs,
				DyLoRAFrozen: c.Bool("dylora-frozen"), Steps: c.Int("steps"), LR: c.Float64("lr"),
				Schedule: schedule, WarmupSteps: c.Int("warmup-steps"), WeightDecay: c.Float64("weight-decay"),
				MaxGradNorm: c.Float64("max-grad-norm"), GradAccum: c.Int("grad-accum"), Batch: c.Int("batch"),
				Ctx: c.Int("ctx"), Seed: c.Uint64("seed"), EvalEvery: c.Int("eval-every"),
				Checkpoint: c.String("checkpoint"), SaveEvery: c.Int("save-every"), ResumeFrom: c.String("resume")}
			opts.Packing = c.String("packing")
			opts.Dropout, opts.Recompute = c.Float64("lora-dropout"), c.Bool("recompute")
			if v := c.String("val"); v != "" {
				val, err := loadStream(c, m, v)
				if err != nil {
					return err
				}
				opts.Val, opts.ValScored = val.Tokens, val.Scored
			}
			var log *stepLog
			if p := c.String("log"); p != "" {
				if log, err = newStepLog(p, opts.ResumeFrom != "", false, modelPath, c.String("data")); err != nil {
					return err
				}
			}
			show := !quiet && isTerminal(os.Stderr)
			start, first := time.Now(), 0
			opts.Log = func(s train.StepLog) {
				if log != nil {
					log.write(s) // a write error surfaces at close
				}
				if !show || s.Step == 0 {
					return
				}
				if first == 0 { // a resumed run starts past step 1
					first = s.Step
				}
				done := s.Step - first + 1
				eta := time.Since(start) / time.Duration(done) * time.Duration(opts.Steps-s.Step)
				fmt.Fprintf(os.Stderr, "\r\033[Kstep %d/%d  loss %.4f  %.0f tokens/s  ETA %s", s.Step, opts.Steps,
					s.Loss, s.TokensSec, eta.Round(time.Second))
				if s.Step == opts.Steps {
					fmt.Fprint(os.Stderr, "\r\033[K")
				}
			}
			l, logs, err := train.Train(m, data, opts)
			if err != nil {
				if log != nil {
					log.close()
				}
				return fmt.Errorf("train: %s: %w", c.String("data"), err)
			}
			if log != nil {
				if err := log.close(); err != nil {
					return err
				}
			}
			out := c.String("output")
			switch n := c.Int("dylora-rank"); {
			case !writesAdapter:
				out = c.String("merge-out")
				err = mergeDeltas(l, modelPath, out)
			case n > 0:
				err = l.WritePEFTRank(out, n)
			default:
				err = l.WritePEFT(out)
			}
			if err != nil {
				return err
			}
			if p := c.String("plot"); p != "" {
				pl, err := lossplot.Plot(filepath.Base(out), logs)
				if err != nil {
					return err
				}
				if err := lossplot.Save(pl, p); err != nil {
					return err
				}
			}
			if writesAdapter {
				if err := adapterOutputs(c, modelPath, out); err != nil {
					return err
				}
			}
			if p := c.String("sparse-delta-out"); p != "" {
				if err := l.WriteSparseDelta(p); err != nil {
					return err
				}
			}
			summary := fmt.Sprintf("wrote %s (rank %d, alpha %g, %d steps on %d tokens", out, opts.Rank,
				opts.Alpha, opts.Steps, len(data.Tokens))
			if opts.Method != train.MethodLoRA && opts.Method != train.MethodDyLoRA {
				summary = fmt.Sprintf("wrote %s (%s, %d steps on %d tokens", out, opts.Method, opts.Steps,
					len(data.Tokens))
				if !writesAdapter {
					summary = fmt.Sprintf("wrote %s (MODEL with the %s update merged; %d steps on %d tokens", out,
						opts.Method, opts.Steps, len(data.Tokens))
				}
			}
			if opts.Init != "" {
				summary = fmt.Sprintf("wrote %s (%s rank %d, alpha %g, converted to a plain LoRA of rank %d; %d "+
					"steps on %d tokens", out, opts.Init, opts.Rank, opts.Alpha, 2*opts.Rank, opts.Steps, len(data.Tokens))
			}
			if n := c.Int("dylora-rank"); n > 0 {
				summary = fmt.Sprintf("wrote %s (the first %d ranks of a dylora rank %d, alpha %g; %d steps on %d tokens",
					out, n, opts.Rank, opts.Alpha, opts.Steps, len(data.Tokens))
			} else if opts.Method == train.MethodDyLoRA {
				summary = fmt.Sprintf("wrote %s (dylora rank %d, alpha %g: its first b ranks are a LoRA of rank b; %d "+
					"steps on %d tokens", out, opts.Rank, opts.Alpha, opts.Steps, len(data.Tokens))
			}
			if len(logs) > 0 {
				last := logs[len(logs)-1]
				summary += fmt.Sprintf("; last batch loss %.4f", last.Loss)
				if last.ValLoss != nil {
					summary += fmt.Sprintf(", validation loss %.4f", *last.ValLoss)
				}
			}
			if c.String("log") == "-" {
				fmt.Fprintln(os.Stderr, summary+")") // standard output holds the log's JSON lines
				return nil
			}
			fmt.Fprintln(c.App.Writer, summary+")")
			return nil
		},
	}
}

// loadStream reads a training or validation file into a token stream with its loss mask (train.LoadStream; see
// docs/training-data.md).
func loadStream(c *cli.Context, m *train.Model, path string) (*train.Stream, error) {
	template := m.ChatTemplate
	if name := c.String("chat-template"); name != "" {
		template = name
	}
	s, _, err := train.LoadStream(path, m.Tokenizer, train.DataOptions{Format: c.String("data-format"),
		ChatTemplate: template, TrainOnPrompt: c.Bool("train-on-prompt")})
	return s, err
}

// adapterOutputs writes --gguf-out (the adapter as llama.cpp loads it) and --merge-out (the model with the adapter
// merged) from the PEFT directory written.
func adapterOutputs(c *cli.Context, modelPath, dir string) error {
	ggufOut, mergeOut := c.String("gguf-out"), c.String("merge-out")
	if ggufOut == "" && mergeOut == "" {
		return nil
	}
	a, err := adapter.Open(dir)
	if err != nil {
		return err
	}
	defer a.Close()
	if ggufOut != "" {
		base, err := adapter.OpenGGUFBase(modelPath)
		if err != nil {
			return fmt.Errorf("train: --gguf-out: %w", err)
		}
		o, err := createOutput(ggufOut, false, modelPath)
		if err != nil {
			return err
		}
		defer o.abort()
		if err := a.WriteGGUF(o, base, adapter.GGUFOptions{Type: tensor.F32}); err != nil {
			return fmt.Errorf("train: --gguf-out: %w", err)
		}
		if err := o.commit(); err != nil {
			return err
		}
	}
	if mergeOut != "" {
		return writeMerged(modelPath, mergeOut,
			func(w io.Writer, base *gguf.File) error {
				return adapter.MergeGGUF(w, base, a, adapter.MergeOptions{Scale: 1})
			},
			func(w io.Writer, base safetensors.Set) error {
				return adapter.MergeSafetensors(w, base, a, adapter.MergeOptions{Scale: 1})
			})
	}
	return nil
}

// methodNames lists the training methods for --method's usage.
func methodNames() string {
	var names []string
	for _, m := range train.Methods() {
		names = append(names, m[0])
	}
	return strings.Join(names, ", ")
}

// mergeDeltas writes MODEL with the full-rank update of a method merged (one file of MODEL's format).
func mergeDeltas(l *train.LoRA, modelPath, path string) error {
	deltas, err := l.Deltas()
	if err != nil {
		return err
	}
	return writeMerged(modelPath, path,
		func(w io.Writer, base *gguf.File) error {
			return adapter.MergeDeltasGGUF(w, base, deltas, adapter.MergeOptions{})
		},
		func(w io.Writer, base safetensors.Set) error {
			return adapter.MergeDeltasSafetensors(w, base, deltas, adapter.MergeOptions{})
		})
}

// writeMerged writes --merge-out: MODEL (a GGUF file or a Hugging Face directory) through mergeGGUF or mergeST,
// one file of MODEL's format.
func writeMerged(modelPath, path string, mergeGGUF func(io.Writer, *gguf.File) error,
	mergeST func(io.Writer, safetensors.Set) error) error {
	base, err := modelfile.Open(modelPath)
	if err != nil {
		return err
	}
	defer base.Close()
	o, err := createOutput(path, false, base.Files...)
	if err != nil {
		return err
	}
	defer o.abort()
	if base.GGUF != nil {
		err = mergeGGUF(o, base.GGUF)
	} else {
		err = mergeST(o, base.Safetensors)
	}
	if err != nil {
		return fmt.Errorf("train: --merge-out: %w", err)
	}
	return o.commit()
}
