package train

import (
	"bytes"
	"errors"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/safetensors"
)

// truncate cuts factors (or their gradients) of rank r to their first b ranks: A's first b rows, B's first b
// columns — the DyLoRA slice.
func (f factors64) truncate(r, b int) factors64 {
	var c factors64
	for i := range f.a {
		var a, bb [7][]float64
		for j := range f.a[i] {
			if len(f.a[i][j]) == 0 {
				continue
			}
			cols, rows := len(f.a[i][j])/r, len(f.b[i][j])/r
			a[j] = slices.Clone(f.a[i][j][:b*cols])
			bb[j] = make([]float64, rows*b)
			for row := range rows {
				copy(bb[j][row*b:(row+1)*b], f.b[i][j][row*r:])
			}
		}
		c.a, c.b = append(c.a, a), append(c.b, bb)
	}
	return c
}

// TestDyLoRAGradient64: with SetRank(b) the training pass computes the LoRA of the first b ranks at scale α/b — its
// loss is the float64 oracle's on the truncated factors — and its gradient is the oracle's with respect to those
// factors, the other ranks getting none.
func TestDyLoRAGradient64(t *testing.T) {
	m := tinyLlamaHF(t)
	const B, T, r, b = 2, 8, 4, 2
	l, err := NewLoRA(m, r, 8, B, T, 1)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(23, 24))
	randomB(l, rng)
	if err := l.SetRank(b); err != nil {
		t.Fatal(err)
	}
	if got := l.layers[0].q.scale; got != 8.0/b {
		t.Fatalf("scale at rank %d is %v, want α/b = %v", b, got, 8.0/b)
	}
	windows := windowsOf(t, shakespeare(t, m, "shakespeare_val.txt"), B, T)
	loss32, err := l.Step(windows, nil)
	if err != nil {
		t.Fatal(err)
	}
	w64 := newModel64(t, m)
	f := l.factors64().truncate(r, b)
	loss64 := w64.loss64(l, f, windows, nil)
	full := w64.loss64(l, l.factors64(), windows, nil)
	t.Logf("loss at rank %d: float32 pass %.7f, float64 oracle on the truncated factors %.7f (all %d ranks at the "+
		"same scale: %.7f)", b, loss32, loss64, r, full)
	if math.Abs(loss32-loss64) > 1e-5*loss64 || math.Abs(full-loss64) < 1e-4 {
		t.Errorf("the truncated pass's loss %.7f is not the oracle's %.7f on the first %d ranks", loss32, loss64, b)
	}
	for i := range l.layers {
		for _, lin := range l.layers[i].adapted() {
			nonzero := slices.ContainsFunc(lin.da[b*lin.w.cols:], func(v float32) bool { return v != 0 })
			for row := range lin.w.rows {
				nonzero = nonzero || slices.ContainsFunc(lin.db[row*r+b:(row+1)*r], func(v float32) bool { return v != 0 })
			}
			if nonzero {
				t.Fatalf("layer %d %s: ranks beyond %d have a gradient", i, lin.w.name, b)
			}
		}
	}
	checkGradients64(t, l, w64, f, l.grads64().truncate(r, b), windows, nil, rng)

	// The frozen update keeps the gradient of rank b alone.
	_, grads := l.Params()
	want := slices.Clone(l.layers[0].q.db)
	l.freezeBelow(grads, b)
	q := &l.layers[0].q
	for row := range q.w.rows {
		if q.db[row*r] != 0 || q.db[row*r+1] != want[row*r+1] {
			t.Fatalf("frozen update, row %d of B's gradient: %v, want [0 %v 0 0]", row, q.db[row*r:(row+1)*r],
				want[row*r+1])
		}
	}
	if slices.ContainsFunc(q.da[:q.w.cols], func(v float32) bool { return v != 0 }) ||
		!slices.ContainsFunc(q.da[q.w.cols:2*q.w.cols], func(v float32) bool { return v != 0 }) {
		t.Error("frozen update: A's gradient is not zero in rank 1 and set in rank 2")
	}
	if err := l.SetRank(r + 1); err == nil {
		t.Errorf("SetRank(%d) of a rank-%d LoRA: no error", r+1, r)
	}
}

// TestDyLoRAParams: a DyLoRA adapter has the trainable parameters of the LoRA of its largest rank, r·(in+out) per
// adapted projection (Valipour et al., §3: no parameter is added for the smaller ranks), counted here from the
// model's dimensions.
func TestDyLoRAParams(t *testing.T) {
	m := tinyLlamaHF(t)
	c := m.Config
	const r = 4
	l, err := NewLoRAConfig(m, LoRAConfig{Rank: r, Alpha: 8}, 1, 8, 1)
	if err != nil {
		t.Fatal(err)
	}
	params, _ := l.Params()
	got := 0
	for _, p := range params {
		got += len(p)
	}
	d, q, kv := c.Embd, c.Heads*c.HeadDim, c.HeadsKV*c.HeadDim
	perLayer := (d + q) + 2*(d+kv) + (q + d) + 2*(d+c.FF) + (c.FF + d)
	if want := c.Layers * r * perLayer; got != want {
		t.Errorf("%d trainable parameters, want r·Σ(in+out) = %d", got, want)
	}
	t.Logf("rank %d: %d trainable parameters", r, got)
}

// TestTrainDyLoRA trains tiny-llama-a on Shakespeare with DyLoRA and, the same way, with plain LoRA: every leading
// slice of the DyLoRA factors lowers the base model's validation loss, the slice written by WritePEFTRank gives in
// the runtime the loss the trainer computes, and the rank-1 slice beats that of the plain LoRA.
func TestTrainDyLoRA(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two adapters for a few dozen steps")
	}
	m := tinyLlamaHF(t)
	const ctx, r, alpha = 128, 8, 16
	val := windowsOf(t, shakespeare(t, m, "shakespeare_val.txt"), 8, ctx)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_train.txt")}
	opts := TrainOptions{Rank: r, Alpha: alpha, Steps: 40, LR: 1e-3, Batch: 4, Ctx: ctx, Seed: 42, Method: MethodDyLoRA}
	dy, logs, err := Train(m, data, opts)
	if err != nil {
		t.Fatal(err)
	}
	drawn := map[int]int{}
	for _, s := range logs {
		if s.Rank < 1 || s.Rank > r {
			t.Fatalf("step %d drew rank %d, want 1..%d", s.Step, s.Rank, r)
		}
		drawn[s.Rank]++
	}
	opts.DyLoRAFrozen = true
	frozen := mustTrain(t, m, data, opts)
	opts.Method, opts.DyLoRAFrozen = MethodLoRA, false
	plain := mustTrain(t, m, data, opts)
	base, err := MeanLossTokens(m, val, ctx+1)
	if err != nil {
		t.Fatal(err)
	}
	// lossAt is the validation loss of l's first b ranks at scale α/b, or, with keep, at l's own scale α/r (plain
	// LoRA's ranks simply dropped).
	lossAt := func(l *LoRA, b int, keep bool) float64 {
		if err := l.SetRank(b); err != nil {
			t.Fatal(err)
		}
		defer l.SetRank(r)
		if keep {
			for i := range l.layers {
				for _, lin := range l.layers[i].adapted() {
					lin.scale = alpha / r
				}
			}
		}
		v, err := l.Loss(val)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	t.Logf("ranks drawn in %d steps: %v; base model validation loss %.4f", opts.Steps, drawn, base.Loss)
	type curve struct {
		name string
		l    *LoRA
		keep bool
		loss []float64
		gap  float64 // the largest excess of a smaller rank's loss over rank r's
	}
	curves := []*curve{{name: "DyLoRA", l: dy}, {name: "DyLoRA frozen", l: frozen},
		{name: "LoRA cut, α/b", l: plain}, {name: "LoRA cut, α/r", l: plain, keep: true}}
	for _, c := range curves {
		c.loss = make([]float64, r+1)
		for b := 1; b <= r; b++ {
			c.loss[b] = lossAt(c.l, b, c.keep)
		}
		for b := 1; b < r; b++ {
			c.gap = max(c.gap, c.loss[b]-c.loss[r])
		}
		t.Logf("%-14s by rank 1..%d: %.4f; worst rank's excess over rank %d: %.4f", c.name, r, c.loss[1:], r, c.gap)
	}
	dyLoss := curves[0].loss
	// Nestedness: DyLoRA's smaller slices stay closer to its full rank than a plain LoRA's (cut at α/b, the more
	// favourable of the two cuts), and its single first rank beats plain LoRA's.
	if dy, cut := curves[0], curves[2]; dy.gap >= cut.gap || dy.loss[1] >= cut.loss[1] {
		t.Errorf("DyLoRA's ranks are not better nested than a plain LoRA's: worst excess %.4f vs %.4f, rank 1 "+
			"%.4f vs %.4f", dy.gap, cut.gap, dy.loss[1], cut.loss[1])
	}
	for _, c := range curves[:2] {
		for b := 1; b <= r; b++ {
			if c.loss[b] >= base.Loss {
				t.Errorf("%s: the slice of rank %d has validation loss %.4f, not below the base model's %.4f",
					c.name, b, c.loss[b], base.Loss)
			}
		}
	}

	// For comparison, not asserted: `lathe adapters resize` (the SVD's best rank-b approximation of the full
	// update) of each rank-r adapter to rank 1.
	for i, c := range curves[:3] {
		full, small := filepath.Join(t.TempDir(), "full"), filepath.Join(t.TempDir(), "small")
		if err := c.l.WritePEFT(full); err != nil {
			t.Fatal(err)
		}
		a, err := adapter.Open(full)
		if err != nil {
			t.Fatal(err)
		}
		_, err = adapter.Resize(small, a, 1)
		a.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%-14s resized to rank 1 by SVD: %.4f", []string{"DyLoRA", "DyLoRA frozen", "plain LoRA"}[i],
			adapterLoss(t, small, val))
	}

	const b = 3
	dir := t.TempDir()
	if err := dy.WritePEFTRank(dir, b); err != nil {
		t.Fatal(err)
	}
	a, err := adapter.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if len(a.Modules) != 7*m.Config.Layers || a.Modules[0].Scale != alpha/float64(b) || a.Modules[0].Rank != b {
		t.Fatalf("the rank-%d adapter has %d modules of rank %d, scale %v; want %d of rank %d, scale %v", b,
			len(a.Modules), a.Modules[0].Rank, a.Modules[0].Scale, 7*m.Config.Layers, b, alpha/float64(b))
	}
	applied := adapterLoss(t, dir, val)
	t.Logf("rank-%d adapter through ApplyAdapter: %.6f, trainer: %.6f", b, applied, dyLoss[b])
	if math.Abs(applied-dyLoss[b]) > 1e-4 {
		t.Errorf("the written rank-%d adapter gives loss %.6f in the runtime, the trainer %.6f", b, applied,
			dyLoss[b])
	}
}

// TestResumeDyLoRA: the rank generator is part of the checkpoint, so a DyLoRA run resumed halfway writes the adapter
// of the uninterrupted run; it differs from plain LoRA's with the same seed, and a checkpoint of one method does
// not resume the other.
func TestResumeDyLoRA(t *testing.T) {
	m := tinyLlamaHF(t)
	data := &Stream{Tokens: shakespeare(t, m, "shakespeare_val.txt")[:4000]}
	base := TrainOptions{Rank: 4, Alpha: 8, Steps: 6, LR: 3e-3, Batch: 2, Ctx: 16, GradAccum: 2, Seed: 5,
		Method: MethodDyLoRA, DyLoRAFrozen: true, Targets: []string{"q_proj", "down_proj"}}
	want := adapterBytes(t, mustTrain(t, m, data, base))
	ckpt, kept := t.TempDir(), t.TempDir()
	opts := base
	opts.Checkpoint, opts.SaveEvery = ckpt, 3
	opts.Log = keepCheckpoint(t, ckpt, kept, 3)
	mustTrain(t, m, data, opts)
	resumed := base
	resumed.ResumeFrom = kept
	if got := adapterBytes(t, mustTrain(t, m, data, resumed)); !bytes.Equal(got, want) {
		t.Error("the DyLoRA run resumed at step 3 wrote a different adapter from the uninterrupted run")
	}
	plain := base
	plain.Method, plain.DyLoRAFrozen = MethodLoRA, false
	if bytes.Equal(want, adapterBytes(t, mustTrain(t, m, data, plain))) {
		t.Error("DyLoRA and plain LoRA wrote the same adapter: the comparison cannot fail")
	}
	plain.ResumeFrom = kept
	if _, _, err := Train(m, data, plain); err == nil || !strings.Contains(err.Error(), "method") {
		t.Errorf("resuming a DyLoRA checkpoint as plain LoRA: error %v, want one naming the method", err)
	}
	for _, o := range []TrainOptions{{Method: "qlora-nonesuch"}, {Method: MethodDyLoRA, Init: InitPiSSA},
		{DyLoRAFrozen: true}} {
		o.Steps, o.Batch, o.Ctx = 1, 2, 16
		if _, _, err := Train(m, data, o); err == nil || !strings.Contains(err.Error(), "method") {
			t.Errorf("options %+v: error %v, want one naming the method", o, err)
		}
	}
}

// keepCheckpoint is a Log function that copies the checkpoint in ckpt to kept as a run killed after the given
// step would have left it; step must come before the run's last. At every step it checks that the checkpoint on
// disk is of an earlier step, already logged: Log runs before a step's checkpoint is written, so that a kill
// between the two cannot leave a checkpoint ahead of the log.
func keepCheckpoint(t testing.TB, ckpt, kept string, step int) func(StepLog) {
	return func(s StepLog) {
		path := filepath.Join(ckpt, CheckpointName)
		f, err := safetensors.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		saved, err := strconv.Atoi(f.Metadata()["step"])
		f.Close()
		if err != nil {
			t.Fatalf("%s: metadata step: %v", path, err)
		}
		if saved >= s.Step {
			t.Fatalf("step %d is logged after the checkpoint of step %d was written", s.Step, saved)
		}
		if s.Step == step+1 {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(kept, CheckpointName), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
