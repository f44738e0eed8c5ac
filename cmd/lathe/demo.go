package main

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/audit"
	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/demo"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/prune"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/sparsity"
	"github.com/lathe-ml/lathe/tensor"
	"github.com/lathe-ml/lathe/tokenizer"
	"github.com/lathe-ml/lathe/train"
	"github.com/urfave/cli/v2"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "a tour of lathe on a tiny model embedded in the binary",
		Description: "Writes the embedded model (a 164K-parameter Llama in Hugging Face layout, untrained) to a directory and\n" +
			"runs lathe's main jobs on it, printing what each step did. Nothing outside that directory is touched.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Usage: "work in this directory and keep the files (default: a temporary directory, removed at the end)"},
		},
		Action: func(c *cli.Context) error {
			dir := c.String("dir")
			if dir == "" {
				tmp, err := os.MkdirTemp("", "lathe-demo-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				dir = tmp
			}
			return runDemo(c.App.Writer, dir)
		},
	}
}

// demoTour runs each step of the demo in dir; its files are named relative to dir in what it prints, which is
// exactly the command a user would type there.
type demoTour struct {
	out  io.Writer
	dir  string
	step int
}

func (d *demoTour) say(command, what string) {
	d.step++
	fmt.Fprintf(d.out, "\n%d. %s\n   $ %s\n", d.step, what, command)
}

func (d *demoTour) path(name string) string { return filepath.Join(d.dir, name) }

func runDemo(out io.Writer, dir string) error {
	d := &demoTour{out: out, dir: dir}

	d.say("(embedded)", "write the embedded model in Hugging Face layout")
	if err := extract(d.path("tiny-llama"), "tiny"); err != nil {
		return err
	}
	fmt.Fprintln(out, "   tiny-llama/: config.json, model.safetensors (BF16), tokenizer.model, tokenizer_config.json")

	d.say("lathe inspect tiny-llama", "inspect it: only the header is read")
	if err := d.describe("tiny-llama"); err != nil {
		return err
	}

	d.say("lathe cast tiny-llama f32.safetensors --dtype f32", "widen BF16 to F32")
	if err := castFile(d.path("tiny-llama/model.safetensors"), d.path("f32.safetensors"), tensor.F32); err != nil {
		return err
	}
	if err := d.describe("f32.safetensors"); err != nil {
		return err
	}

	d.say("lathe cast f32.safetensors bf16.safetensors --dtype bf16", "narrow back to BF16: every BF16 value is exact in F32")
	if err := castFile(d.path("f32.safetensors"), d.path("bf16.safetensors"), tensor.BF16); err != nil {
		return err
	}
	if err := sameFiles(d.path("tiny-llama/model.safetensors"), d.path("bf16.safetensors")); err != nil {
		return err
	}
	fmt.Fprintln(out, "   bf16.safetensors is byte-identical to tiny-llama/model.safetensors")

	d.say("lathe convert tiny-llama -o tiny.gguf", "convert to GGUF for llama.cpp: tensor names, Q/K row permutation, tokenizer")
	if err := hfToGGUFFile(d.path("tiny-llama"), d.path("tiny.gguf")); err != nil {
		return err
	}
	if err := d.describe("tiny.gguf"); err != nil {
		return err
	}

	for _, typ := range []string{"Q8_0", "Q4_K_M"} {
		name := "tiny-" + strings.ToLower(typ) + ".gguf"
		d.say("lathe quantize tiny.gguf "+name+" --type "+typ+" --report",
			"quantize with llama-quantize's "+typ+" recipe, its per-tensor types and shape fallbacks included")
		report, err := quantizeFile(d.path("tiny.gguf"), d.path(name), typ)
		if err != nil {
			return err
		}
		if err := d.describe(name); err != nil {
			return err
		}
		fmt.Fprintf(out, "   error against the source: SNR %.1f dB, cosine %.6f, max abs %.4g\n",
			report.Total.SNR, report.Total.Cosine, report.Total.MaxAbs)
	}

	d.say("lathe convert tiny-q8_0.gguf -o back", "and back to a Hugging Face directory: Q/K rows un-permuted, blocks decoded")
	if err := ggufToHF(d.path("tiny-q8_0.gguf"), d.path("back")); err != nil {
		return err
	}
	if err := d.describe("back"); err != nil {
		return err
	}

	if err := d.runtimeSteps(); err != nil {
		return err
	}

	d.say("lathe inspect --stats tiny-llama; lathe inspect --stats tiny-q4_k_m.gguf", "statistics of one tensor before and after Q4_K_M")
	for _, path := range []string{"tiny-llama", "tiny-q4_k_m.gguf"} {
		m, err := modelfile.Open(d.path(path))
		if err != nil {
			return err
		}
		name := "model.layers.0.mlp.down_proj.weight"
		if m.Format == modelfile.GGUF {
			name = "blk.0.ffn_down.weight"
		}
		st, err := m.Stats(name)
		m.Close()
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "   %-18s %-36s mean %+.6f  std %.6f  absmax %.6f\n", path, name, st.Mean, st.Std, st.AbsMax)
	}
	fmt.Fprintln(out, "\ndone: each step is one lathe command; `lathe help` lists them all.")
	return nil
}

// demoText is the text the demo scores.
const demoText = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. " +
	"One day, she saw a big red ball in the park. She ran to it and said, \"Can I play with you?\" The ball did " +
	"not answer, but Lily did not mind. She kicked it high into the sky and laughed. Her mom called her home for " +
	"dinner, and Lily said goodbye to the ball. The end."

// runtimeSteps evaluates, generates, analyses and prunes the converted model.
func (d *demoTour) runtimeSteps() error {
	if err := os.WriteFile(d.path("story.txt"), []byte(demoText), 0o644); err != nil {
		return err
	}
	d.say("lathe eval tiny.gguf --data story.txt --ctx 64; lathe eval tiny-q4_k_m.gguf ...",
		"perplexity with llama-perplexity's scoring (untrained weights, so no better than guessing among 320 tokens)")
	for _, name := range []string{"tiny.gguf", "tiny-q4_k_m.gguf"} {
		ppl, err := demoPerplexity(d.path(name))
		if err != nil {
			return err
		}
		fmt.Fprintf(d.out, "   %-18s PPL = %.2f over %d chunks\n", name, ppl.PPL, ppl.Chunks)
	}

	d.say("lathe eval tiny.gguf --adapter tiny-lora ...; lathe merge tiny.gguf tiny-lora -o tiny-merged.gguf; lathe eval tiny-merged.gguf ...",
		"a LoRA adapter applied unmerged, then merged into the weights (which rounds them back to BF16)")
	if err := extract(d.path("tiny-lora"), "tiny-lora"); err != nil {
		return err
	}
	unmerged, merged, err := d.adapterPerplexities()
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "   unmerged PPL = %.4f, merged PPL = %.4f\n", unmerged, merged)

	d.say("lathe train tiny.gguf --data story.txt -o story-lora --rank 16 --alpha 32 --steps 300 --lr 5e-3 --ctx 64 --batch 4",
		"fine-tune a LoRA adapter on the text, with lathe's own trainer")
	first, last, tunedPPL, err := d.trainStep()
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "   loss %.3f → %.3f over %d steps; story.txt perplexity with the adapter: %.2f\n", first, last,
		demoTraining.Steps, tunedPPL)

	d.say(`lathe generate tiny.gguf --adapter story-lora --prompt "Once upon a time" --n 40`,
		"greedy generation with a KV cache, through the fresh adapter: the model has learnt the story")
	m, err := train.Open(d.path("tiny.gguf"))
	if err != nil {
		return err
	}
	defer m.Close()
	a, err := adapter.Open(d.path("story-lora"))
	if err != nil {
		return err
	}
	err = m.ApplyAdapter(a, 1)
	a.Close()
	if err != nil {
		return err
	}
	prompt := m.Tokenizer.Encode("Once upon a time", tokenizer.AddSpecial)
	gen, err := m.Generate(prompt, train.GenerateOptions{MaxTokens: 40}, func(int32) error { return nil })
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "   Once upon a time%s\n", printable(m.Tokenizer.Decode(gen)))

	d.say("lathe spectrum tiny-llama", "WeightWatcher's metrics per layer: power-law α of the eigenvalue spectrum, stable rank")
	rep, err := audit.Spectrum(d.path("tiny-llama"), "", audit.DefaultOptions())
	if err != nil {
		return err
	}
	under := 0
	for _, l := range rep.Layers {
		if l.Metrics != nil && l.Metrics.PowerLaw.Alpha > 6 {
			under++
		}
	}
	fmt.Fprintf(d.out, "   %d layers, mean α %.2f, %d with α > 6 (\"under-trained\"), mean stable rank %.1f\n",
		rep.Summary.Layers, rep.Summary.Alpha, under, rep.Summary.StableRank)

	d.say("lathe prune tiny.gguf -o tiny-pruned.gguf --method principal --rank 16 --keep 0.5",
		"prune half of every linear weight, keeping LIFT's principal weights")
	pruned, err := demoPrune(d.path("tiny.gguf"), d.path("tiny-pruned.gguf"))
	if err != nil {
		return err
	}
	ppl, err := demoPerplexity(d.path("tiny-pruned.gguf"))
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "   %.1f%% of %s weights zeroed, relative error %.3f; PPL = %.2f\n", 100*pruned.Total.Sparsity,
		thousands(pruned.Total.Elements), pruned.Total.RelError, ppl.PPL)
	return nil
}

// adapterPerplexities scores tiny.gguf with tiny-lora applied unmerged, then the model with the adapter merged in.
func (d *demoTour) adapterPerplexities() (unmerged, merged float64, err error) {
	a, err := adapter.Open(d.path("tiny-lora"))
	if err != nil {
		return 0, 0, err
	}
	defer a.Close()
	m, err := train.Open(d.path("tiny.gguf"))
	if err != nil {
		return 0, 0, err
	}
	defer m.Close()
	if err := m.ApplyAdapter(a, 1); err != nil {
		return 0, 0, err
	}
	r, err := train.Perplexity(m, demoText, train.PerplexityOptions{Ctx: 64})
	if err != nil {
		return 0, 0, err
	}
	base, err := gguf.Open(d.path("tiny.gguf"))
	if err != nil {
		return 0, 0, err
	}
	defer base.Close()
	err = writeOutput(d.path("tiny-merged.gguf"), func(w io.Writer) error {
		return adapter.MergeGGUF(w, base, a, adapter.MergeOptions{})
	})
	if err != nil {
		return 0, 0, err
	}
	rm, err := demoPerplexity(d.path("tiny-merged.gguf"))
	if err != nil {
		return 0, 0, err
	}
	return r.PPL, rm.PPL, nil
}

// demoTraining is enough for the tiny model to learn demoText by heart, in a few seconds on 2 cores.
var demoTraining = train.TrainOptions{Rank: 16, Alpha: 32, Steps: 300, LR: 5e-3, Batch: 4, Ctx: 64}

// trainStep fine-tunes a LoRA adapter on demoText, writes it as a PEFT directory, and scores the text with it.
func (d *demoTour) trainStep() (first, last, ppl float64, err error) {
	m, err := train.Open(d.path("tiny.gguf"))
	if err != nil {
		return 0, 0, 0, err
	}
	defer m.Close()
	tokens := m.Tokenizer.Encode(demoText, tokenizer.AddSpecial)
	lora, log, err := train.Train(m, &train.Stream{Tokens: tokens}, demoTraining)
	if err != nil {
		return 0, 0, 0, err
	}
	if err := lora.WritePEFT(d.path("story-lora")); err != nil {
		return 0, 0, 0, err
	}
	a, err := adapter.Open(d.path("story-lora"))
	if err != nil {
		return 0, 0, 0, err
	}
	defer a.Close()
	scored, err := train.Open(d.path("tiny.gguf"))
	if err != nil {
		return 0, 0, 0, err
	}
	defer scored.Close()
	if err := scored.ApplyAdapter(a, 1); err != nil {
		return 0, 0, 0, err
	}
	r, err := train.Perplexity(scored, demoText, train.PerplexityOptions{Ctx: 64})
	if err != nil {
		return 0, 0, 0, err
	}
	return log[0].Loss, log[len(log)-1].Loss, r.PPL, nil
}

func demoPerplexity(path string) (*train.PerplexityResult, error) {
	m, err := train.Open(path)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	return train.Perplexity(m, demoText, train.PerplexityOptions{Ctx: 64})
}

func demoPrune(in, out string) (*sparsity.PruneReport, error) {
	m, err := modelfile.Open(in)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	budget, err := prune.ParseBudget("0.5", false)
	if err != nil {
		return nil, err
	}
	masks, err := sparsity.ComputeMasks(m, sparsity.Options{
		Score:     prune.ScoreOptions{Method: prune.Principal, Rank: 16},
		Selection: prune.Selection{Budget: budget},
	})
	if err != nil {
		return nil, err
	}
	var report *sparsity.PruneReport
	err = writeOutput(out, func(w io.Writer) error {
		report, err = sparsity.Prune(w, m, masks, sparsity.WriteOptions{})
		return err
	})
	return report, err
}

func (d *demoTour) describe(name string) error {
	m, err := modelfile.Open(d.path(name))
	if err != nil {
		return err
	}
	defer m.Close()
	r, err := m.Report(modelfile.ReportOptions{})
	if err != nil {
		return err
	}
	var types []string
	for _, t := range r.DTypes {
		types = append(types, fmt.Sprintf("%d %s", t.Tensors, t.DType))
	}
	fmt.Fprintf(d.out, "   %s: %s, %d tensors (%s), %s parameters, %.2f bits per weight, %s bytes\n", name, r.Format,
		r.TensorCount, strings.Join(types, ", "), thousands(r.Parameters), r.BitsPerWeight, thousands(r.FileBytes))
	return nil
}

// extract writes one embedded directory ("tiny" for the model, "tiny-lora" for its adapter) into dir.
func extract(dir, embedded string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return fs.WalkDir(demo.Files, embedded, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		data, err := demo.Files.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, filepath.Base(path)), data, 0o644)
	})
}

func castFile(in, out string, dtype tensor.DType) error {
	m, err := safetensors.Open(in)
	if err != nil {
		return err
	}
	defer m.Close()
	return writeOutput(out, func(w io.Writer) error { return convert.Cast(w, m, dtype, convert.CastOptions{}) })
}

func hfToGGUFFile(in, out string) error {
	m, err := convert.OpenHF(in)
	if err != nil {
		return err
	}
	defer m.Close()
	return writeOutput(out, func(w io.Writer) error { return convert.ToGGUF(w, m, convert.GGUFOptions{}) })
}

func quantizeFile(in, out, typ string) (*convert.QuantReport, error) {
	ft, err := convert.ParseQuantType(typ)
	if err != nil {
		return nil, err
	}
	f, err := gguf.Open(in)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var report convert.QuantReport
	err = writeOutput(out, func(w io.Writer) error {
		return convert.Quantize(w, f, convert.QuantizeOptions{Type: ft, Report: &report})
	})
	return &report, err
}

func ggufToHF(in, dir string) error {
	f, err := gguf.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	return convert.ToHF(dir, f, convert.HFOptions{})
}

// writeOutput runs write against a new output file that only appears once write has succeeded.
func writeOutput(path string, write func(io.Writer) error) error {
	o, err := createOutput(path, false)
	if err != nil {
		return err
	}
	defer o.abort()
	if err := write(o); err != nil {
		return err
	}
	return o.commit()
}

func sameFiles(a, b string) error {
	x, err := os.ReadFile(a)
	if err != nil {
		return err
	}
	y, err := os.ReadFile(b)
	if err != nil {
		return err
	}
	if !bytes.Equal(x, y) {
		return fmt.Errorf("demo: %s and %s differ", a, b)
	}
	return nil
}
