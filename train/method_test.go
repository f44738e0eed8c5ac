package train

import (
	"bytes"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// methodRun is what checkMethod measured of a method's short run.
type methodRun struct {
	l               *LoRA
	logs            []StepLog
	before, after   float64 // validation loss of the base model and of the trained one
	trainable       int     // entries of the trainable tensors
	output, written string  // what was written (adapter directory or merged model) and its path
}

// checkMethod trains tiny-llama-a (the Hugging Face checkpoint, or the GGUF file when gguf is set) with opts for a
// short run on Shakespeare and checks what every method must do:
//   - validation loss (8 windows of held-out text) drops below the base model's;
//   - the output loads and computes what the trainer computes: the adapter (WritePEFT, applied unmerged by the
//     runtime) or, for a full-rank method, the merged model (Deltas through adapter.MergeDeltas*), gives the
//     validation loss of the trained parameters to 1e-4;
//   - a run stopped at a checkpoint and resumed ends with the same parameters, bit for bit, as an uninterrupted one.
//
// Tests of each method add its own checks (parameter count, the method's defining property).
func checkMethod(t *testing.T, opts TrainOptions, fromGGUF bool) methodRun {
	t.Helper()
	var m *Model
	if fromGGUF {
		m = openModel(t, testshared.Path(t, "models", "tiny-llama-a", "gguf", "tiny-llama-a-f32.gguf"))
	} else {
		m = tinyLlamaHF(t)
	}
	tokens := shakespeare(t, m, "shakespeare_train.txt")
	val := windowsOf(t, shakespeare(t, m, "shakespeare_val.txt"), 8, opts.Ctx)
	data := &Stream{Tokens: tokens}
	base, err := MeanLossTokens(m, val, opts.Ctx+1)
	if err != nil {
		t.Fatal(err)
	}
	l, logs, err := Train(m, data, opts)
	if err != nil {
		t.Fatal(err)
	}
	after, err := l.Loss(val)
	if err != nil {
		t.Fatal(err)
	}
	run := methodRun{l: l, logs: logs, before: base.Loss, after: after}
	params, _ := l.Params()
	for _, p := range params {
		run.trainable += len(p)
	}
	t.Logf("%s: %d trainable values; validation loss %.4f → %.4f after %d steps", opts.Method, run.trainable,
		base.Loss, after, opts.Steps)
	if !(after < base.Loss) {
		t.Errorf("%s: validation loss %.4f, not below the base model's %.4f", opts.Method, after, base.Loss)
	}

	dir := t.TempDir()
	output, err := MethodOutput(opts.Method)
	if err != nil {
		t.Fatal(err)
	}
	writesAdapter := output != OutputMerged
	var loaded *Model
	if writesAdapter {
		run.output, run.written = "adapter", filepath.Join(dir, "adapter")
		if err := l.WritePEFT(run.written); err != nil {
			t.Fatal(err)
		}
		a, err := adapter.Open(run.written)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if loaded, err = Open(m.Path); err != nil {
			t.Fatal(err)
		}
		if err := loaded.ApplyAdapter(a, 1); err != nil {
			t.Fatal(err)
		}
	} else {
		run.output, run.written = "merged model", mergedModel(t, l, m.Path, dir)
		if loaded, err = Open(run.written); err != nil {
			t.Fatal(err)
		}
		if err := l.WritePEFT(filepath.Join(dir, "adapter")); err == nil ||
			!strings.Contains(err.Error(), "merge") {
			t.Errorf("%s: WritePEFT of a full-rank method: error %v, want one pointing to the merged model",
				opts.Method, err)
		}
	}
	defer loaded.Close()
	if err := loaded.SetCacheType(tensor.F32); err != nil {
		t.Fatal(err)
	}
	got, err := MeanLossTokens(loaded, val, opts.Ctx+1)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(got.Loss-after) > 1e-4*after {
		t.Errorf("%s: the %s written gives validation loss %.6f through the runtime, the trainer %.6f",
			opts.Method, run.output, got.Loss, after)
	}

	// Resume: stop at a checkpoint halfway and continue.
	ckpt := filepath.Join(dir, "ckpt")
	half := opts
	half.Steps, half.Checkpoint, half.SaveEvery = opts.Steps, ckpt, max(1, opts.Steps/2)
	if err := os.MkdirAll(filepath.Join(dir, "kept"), 0o755); err != nil {
		t.Fatal(err)
	}
	half.Log = keepCheckpoint(t, ckpt, filepath.Join(dir, "kept"), half.SaveEvery)
	full := mustTrain(t, m, data, half)
	resumed := opts
	resumed.ResumeFrom = filepath.Join(dir, "kept")
	again := mustTrain(t, m, data, resumed)
	a, _ := full.Params()
	b, _ := again.Params()
	p0, _ := l.Params()
	for i := range a {
		if !slices.Equal(a[i], b[i]) || !slices.Equal(a[i], p0[i]) {
			t.Fatalf("%s: parameter tensor %d differs between an uninterrupted run, one with checkpoints and one "+
				"resumed at step %d", opts.Method, i, half.SaveEvery)
		}
	}
	return run
}

// mergedModel writes m's file (GGUF or Hugging Face directory) with l's updates merged into dir and returns its
// path (see mergeModelFile).
func mergedModel(t *testing.T, l *LoRA, path, dir string) string {
	t.Helper()
	deltas, err := l.Deltas()
	if err != nil {
		t.Fatal(err)
	}
	return mergeModelFile(t, path, dir,
		func(w io.Writer, base *gguf.File) error {
			return adapter.MergeDeltasGGUF(w, base, deltas, adapter.MergeOptions{})
		},
		func(w io.Writer, base safetensors.Set) error {
			return adapter.MergeDeltasSafetensors(w, base, deltas, adapter.MergeOptions{})
		})
}

// mergeModelFile writes the model at path merged by mergeGGUF or mergeST into dir and returns the merged model's
// path: a GGUF file, or a directory holding the merged model.safetensors beside copies of the checkpoint's other
// files.
func mergeModelFile(t *testing.T, path, dir string, mergeGGUF func(io.Writer, *gguf.File) error,
	mergeST func(io.Writer, safetensors.Set) error) string {
	t.Helper()
	if st, err := os.Stat(path); err == nil && !st.IsDir() {
		base, err := gguf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer base.Close()
		out := filepath.Join(dir, "merged.gguf")
		var buf bytes.Buffer
		if err := mergeGGUF(&buf, base); err != nil {
			t.Fatal(err)
		}
		if err := atomicfile.WriteFile(out, buf.Bytes()); err != nil {
			t.Fatal(err)
		}
		return out
	}
	out := filepath.Join(dir, "merged")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(path, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if e.Name() == "model.safetensors" {
			base, err := safetensors.Open(filepath.Join(path, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			err = mergeST(&buf, base)
			base.Close()
			if err != nil {
				t.Fatal(err)
			}
			b = buf.Bytes()
		}
		if err := os.WriteFile(filepath.Join(out, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestMethodArgsChecked: unknown methods and arguments are refused with the names that are accepted.
func TestMethodArgsChecked(t *testing.T) {
	m := tinyLlamaHF(t)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_val.txt")[:2000]}
	for _, c := range []struct {
		opts TrainOptions
		want string
	}{
		{TrainOptions{Method: "nope"}, "want one of"},
		{TrainOptions{Method: MethodFull, MethodArgs: map[string]string{"rank": "3"}}, "has no argument"},
		{TrainOptions{Method: MethodLoRA, MethodArgs: map[string]string{"x": "1"}}, "takes no arguments"},
		{TrainOptions{Method: MethodFull, Init: InitPiSSA}, "--init"},
	} {
		c.opts.Steps, c.opts.Batch, c.opts.Ctx = 1, 1, 16
		if _, _, err := Train(m, data, c.opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("method %q args %v init %q: error %v, want one saying %q", c.opts.Method, c.opts.MethodArgs,
				c.opts.Init, err, c.want)
		}
	}
}
