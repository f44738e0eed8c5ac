package train

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
)

// confinedAttention64 is the float64 oracle of confined attention: attention64 run on each sample alone, a sample
// being a run of rows whose positions count up from 0.
func confinedAttention64(q, k, v []float64, pos []int32, B, T int, c Config) []float64 {
	qDim, kvDim := c.Heads*c.HeadDim, c.HeadsKV*c.HeadDim
	out := make([]float64, B*T*qDim)
	for b := range B {
		for t0 := 0; t0 < T; {
			t1 := t0 + 1
			for t1 < T && pos[b*T+t1] != 0 {
				t1++
			}
			r0, r1 := b*T+t0, b*T+t1
			copy(out[r0*qDim:], attention64(q[r0*qDim:r1*qDim], k[r0*kvDim:r1*kvDim], v[r0*kvDim:r1*kvDim], 1, t1-t0, c))
			t0 = t1
		}
	}
	return out
}

// positionsOf gives the positions of T rows whose samples start at the given rows (0 implied).
func positionsOf(T int, starts ...int) []int32 {
	pos := make([]int32, T)
	for t := 1; t < T; t++ {
		pos[t] = pos[t-1] + 1
		if slices.Contains(starts, t) {
			pos[t] = 0
		}
	}
	return pos
}

// TestAttentionConfined checks the attention confined to samples against the float64 oracle, forward and backward:
// on a small problem every component of each gradient against central differences, and on sequences of several
// query blocks, with samples that start inside a block, on a block boundary and at the first row, the directional
// derivative along random directions over each block of rows the pass takes. Positions counting through a whole
// sequence must give the plain causal pass bit for bit.
func TestAttentionConfined(t *testing.T) {
	c := tinyConfig
	qDim, kvDim := c.Heads*c.HeadDim, c.HeadsKV*c.HeadDim
	for _, tc := range []struct {
		name string
		T    int
		pos  []int32 // B·T
	}{
		{"small", 9, slices.Concat(positionsOf(9, 3, 4, 8), positionsOf(9, 5))},
		{"blocks", 2*queryBlock + 7, slices.Concat(positionsOf(2*queryBlock+7, 5, 70, 100),
			positionsOf(2*queryBlock+7, queryBlock, 130), positionsOf(2*queryBlock+7))},
	} {
		T, pos := tc.T, tc.pos
		B := len(pos) / T
		rng := rand.New(rand.NewPCG(31, uint64(T)))
		q, k, v := randVec(rng, B*T*qDim, 1), randVec(rng, B*T*kvDim, 1), randVec(rng, B*T*kvDim, 1)
		r := randVec(rng, B*T*qDim, 1)
		out, probs := make([]float32, B*T*qDim), make([]float32, B*c.Heads*T*T)
		for i := range probs {
			probs[i] = float32(math.NaN()) // stale values of an earlier pass must not leak into the masked entries
		}
		attentionForward(out, probs, q, k, v, pos, B, T, c)
		q64, k64, v64 := widen(q), widen(k), widen(v)
		want := confinedAttention64(q64, k64, v64, pos, B, T, c)
		var maxErr float64
		for i, w := range want {
			maxErr = max(maxErr, math.Abs(float64(out[i])-w)/(1+math.Abs(w)))
		}
		t.Logf("%s: B %d, T %d: forward max error %.2e", tc.name, B, T, maxErr)
		if maxErr > 1e-5 {
			t.Errorf("%s: forward differs from the oracle by %.2e", tc.name, maxErr)
		}
		dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
		attentionBackward(dq, dk, dv, r, probs, q, k, v, pos, make([]float32, 8*T*T), B, T, c)
		oracle := func(q, k, v []float64) []float64 { return confinedAttention64(q, k, v, pos, B, T, c) }
		if tc.name == "small" {
			loss := func(q, k, v []float64) float64 { return dot64(r, oracle(q, k, v)) }
			fdError(t, "confined attention dq", q, dq, func(x []float64) float64 { return loss(x, k64, v64) })
			fdError(t, "confined attention dk", k, dk, func(x []float64) float64 { return loss(q64, x, v64) })
			fdError(t, "confined attention dv", v, dv, func(x []float64) float64 { return loss(q64, k64, x) })
			continue
		}
		checkAttentionBlocks(t, rng, c, pos, B, T, r, [3][]float32{q, k, v}, [3][]float32{dq, dk, dv}, oracle)

		// One sample per sequence: the plain causal pass, bit for bit.
		whole := slices.Concat(slices.Repeat([][]int32{positionsOf(T)}, B)...)
		plain, plainProbs := make([]float32, len(out)), make([]float32, len(probs))
		attentionForward(plain, plainProbs, q, k, v, nil, B, T, c)
		attentionForward(out, probs, q, k, v, whole, B, T, c)
		pdq, pdk, pdv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
		attentionBackward(pdq, pdk, pdv, r, plainProbs, q, k, v, nil, make([]float32, 8*T*T), B, T, c)
		clear(dq)
		clear(dk)
		clear(dv)
		attentionBackward(dq, dk, dv, r, probs, q, k, v, whole, make([]float32, 8*T*T), B, T, c)
		if !slices.Equal(out, plain) || !slices.Equal(probs, plainProbs) || !slices.Equal(dq, pdq) ||
			!slices.Equal(dk, pdk) || !slices.Equal(dv, pdv) {
			t.Errorf("%s: positions 0…T-1 do not give the plain causal pass bit for bit", tc.name)
		}
	}
}

// checkAttentionBlocks checks the gradients grads (dq, dk, dv) of Σ r·oracle(q, k, v) at x (q, k, v) with
// checkDirection over each block of query rows the pass takes (queryBlocks): a wrong term in any block moves the
// projection by a large fraction of the gradient's size there.
func checkAttentionBlocks(t *testing.T, rng *rand.Rand, c Config, pos []int32, B, T int, r []float32,
	x, grads [3][]float32, oracle func(q, k, v []float64) []float64) {
	t.Helper()
	x64 := [3][]float64{widen(x[0]), widen(x[1]), widen(x[2])}
	dims := [3]int{c.Heads * c.HeadDim, c.HeadsKV * c.HeadDim, c.HeadsKV * c.HeadDim}
	for i, name := range []string{"dq", "dk", "dv"} {
		eval := func(xi []float64) float64 {
			in := x64
			in[i] = xi
			return dot64(r, oracle(in[0], in[1], in[2]))
		}
		for b := range B {
			queryBlocks(pos, b, T, func(t0, nq, _ int) {
				msg := checkDirection(rng, x64[i], grads[i], (b*T+t0)*dims[i], (b*T+t0+nq)*dims[i], eval)
				if msg != "" {
					t.Errorf("%s, sequence %d, rows %d…%d: %s", name, b, t0, t0+nq-1, msg)
				}
			})
		}
	}
}

// checkDirection compares the gradient grad of eval at x along a random direction over components lo…hi-1 with
// the central difference of eval, and describes the failure when they differ by more than 1e-4 of |grad|·|dir|
// there (or the gradient is zero there, which would prove nothing).
func checkDirection(rng *rand.Rand, x []float64, grad []float32, lo, hi int, eval func([]float64) float64) string {
	dir := make([]float64, len(x))
	var an, gNorm, dNorm float64
	for i := lo; i < hi; i++ {
		dir[i] = rng.NormFloat64()
		an += float64(grad[i]) * dir[i]
		gNorm += float64(grad[i]) * float64(grad[i])
		dNorm += dir[i] * dir[i]
	}
	const eps = 1e-5
	xp, xm := slices.Clone(x), slices.Clone(x)
	for i := lo; i < hi; i++ {
		xp[i] += eps * dir[i]
		xm[i] -= eps * dir[i]
	}
	fd := (eval(xp) - eval(xm)) / (2 * eps)
	if rel := math.Abs(fd-an) / math.Sqrt(gNorm*dNorm); gNorm == 0 || rel > 1e-4 {
		return fmt.Sprintf("directional derivative %g, analytic %g (error %.2e of |grad|·|dir|, |grad| %.3g)", fd,
			an, rel, math.Sqrt(gNorm))
	}
	return ""
}

// BenchmarkAttentionPacking times the forward and backward attention of 4 windows of 256 tokens, 6 heads of 48 (2
// key/value heads), plain causal and confined to samples of 32 tokens: confinement skips the masked blocks.
func BenchmarkAttentionPacking(b *testing.B) {
	c := Config{Heads: 6, HeadsKV: 2, HeadDim: 48}
	const B, T = 4, 256
	qDim, kvDim := c.Heads*c.HeadDim, c.HeadsKV*c.HeadDim
	rng := rand.New(rand.NewPCG(1, 1))
	q, k, v := randVec(rng, B*T*qDim, 1), randVec(rng, B*T*kvDim, 1), randVec(rng, B*T*kvDim, 1)
	out, probs := make([]float32, B*T*qDim), make([]float32, B*c.Heads*T*T)
	dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
	scratch := make([]float32, 8*T*T)
	var starts []int
	for s := 32; s < T; s += 32 {
		starts = append(starts, s)
	}
	for _, p := range []struct {
		name string
		pos  []int32
	}{{PackingConcat, nil}, {PackingConfined, slices.Concat(slices.Repeat([][]int32{positionsOf(T, starts...)}, B)...)}} {
		b.Run(p.name, func(b *testing.B) {
			for b.Loop() {
				attentionForward(out, probs, q, k, v, p.pos, B, T, c)
				attentionBackward(dq, dk, dv, out, probs, q, k, v, p.pos, scratch, B, T, c)
			}
		})
	}
}

// TestStreamConfinedWindows checks the windows, positions and loss masks ConfinedWindows cuts against a direct
// reading of the stream: the windows are Windows' from the same rng state; a token's position is its distance from
// the later of the window's start and its sample's start; the predictions of samples' first tokens are not scored.
func TestStreamConfinedWindows(t *testing.T) {
	const n, ctx = 500, 40
	tokens, scored := make([]int32, n), make([]bool, n)
	for i := range tokens {
		tokens[i] = int32(i) // a window's first token is its offset
		scored[i] = i%5 != 0
	}
	starts := []int{0, 3, 4, 60, 61, 62, 200, 240, 480}
	for _, s := range []*Stream{{Tokens: tokens, Starts: starts}, {Tokens: tokens, Scored: scored, Starts: starts}} {
		windows, masks, err := s.Windows(rand.New(rand.NewPCG(3, 4)), 64, ctx)
		if err != nil {
			t.Fatal(err)
		}
		cw, cmasks, positions, err := s.ConfinedWindows(rand.New(rand.NewPCG(3, 4)), 64, ctx)
		if err != nil {
			t.Fatal(err)
		}
		restarts := 0
		for i, w := range cw {
			if !slices.Equal(w, windows[i]) {
				t.Fatalf("window %d differs from Windows'", i)
			}
			o := int(w[0])
			for tt := range ctx {
				from := o
				for _, st := range starts {
					if st <= o+tt {
						from = max(from, st)
					}
				}
				if int(positions[i][tt]) != o+tt-from {
					t.Fatalf("window at %d: token %d has position %d, want %d", o, tt, positions[i][tt], o+tt-from)
				}
				want := (masks == nil || masks[i][tt]) && !slices.Contains(starts, o+tt+1)
				if cmasks[i][tt] != want {
					t.Fatalf("window at %d: prediction %d scored %v, want %v", o, tt, cmasks[i][tt], want)
				}
				if tt > 0 && positions[i][tt] == 0 {
					restarts++
				}
			}
		}
		if restarts == 0 {
			t.Error("no window holds a sample start: the test proves nothing")
		}
		if s.Scored != nil && !slices.Equal(s.Scored, scored) {
			t.Error("ConfinedWindows modified the stream's loss mask")
		}
	}
}

// TestLoadStreamStarts checks where LoadStream says the samples start: each record's sample is the stream of that
// record read alone, and consecutive samples tile the stream; plain text is one sample.
func TestLoadStreamStarts(t *testing.T) {
	tok := tinyTokenizer(t)
	records := []string{`{"text": "To be, or not to be"}`,
		`{"prompt": "Who wrote Hamlet?", "completion": " Shakespeare."}`,
		`{"instruction": "Name a play.", "output": "Macbeth"}`}
	s, st, err := ReadStream(strings.NewReader(strings.Join(records, "\n")), "d.jsonl", tok, DataOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Starts) != st.Samples || st.Samples != len(records) {
		t.Fatalf("%d starts for %d samples of %d records", len(s.Starts), st.Samples, len(records))
	}
	for i, rec := range records {
		one, _, err := ReadStream(strings.NewReader(rec), "d.jsonl", tok, DataOptions{})
		if err != nil {
			t.Fatal(err)
		}
		end := len(s.Tokens)
		if i+1 < len(s.Starts) {
			end = s.Starts[i+1]
		}
		if !slices.Equal(s.Tokens[s.Starts[i]:end], one.Tokens) {
			t.Errorf("record %d: tokens %d…%d of the stream are not the record's own %d tokens", i, s.Starts[i], end,
				len(one.Tokens))
		}
	}
	path := testshared.Path(t, "data", "datasets", "llama-factory", "alpaca_en_demo.json")
	a, ast, err := LoadStream(path, tok, DataOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Starts) != ast.Samples || !slices.IsSorted(a.Starts) || a.Starts[0] != 0 {
		t.Errorf("alpaca_en_demo.json: %d starts for %d samples (sorted %v)", len(a.Starts), ast.Samples,
			slices.IsSorted(a.Starts))
	}
	for _, st := range a.Starts {
		if a.Tokens[st] != tok.BOS() {
			t.Fatalf("alpaca_en_demo.json: the sample starting at token %d starts with %d, not BOS", st, a.Tokens[st])
		}
	}
	text, _, err := ReadStream(strings.NewReader("To be, or not to be.\n\nThat is the question."), "t.txt", tok,
		DataOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if text.Starts != nil {
		t.Errorf("plain text has sample starts %v, want none (one sample)", text.Starts)
	}
}

// TestStepConfinedSamples checks the confined training pass of tiny-llama-a against separate passes: a window
// packing samples [a|b] (a 70 tokens, over a query block boundary; b 40, starting inside the second block) must
// give the sum of the losses and of the gradients of a and b each in a window of its own, positions from 0 (the
// mean loss and gradients weighed by their scored counts); a window that is one sample gives Step's result bit for
// bit; bad positions are errors.
func TestStepConfinedSamples(t *testing.T) {
	m := tinyLlamaHF(t)
	tokens := shakespeare(t, m, "shakespeare_val.txt")
	const na, nb = 70, 40
	a, b := tokens[100:100+na], tokens[1000:1000+nb]
	T := na + nb - 1
	l, err := NewLoRA(m, 4, 8, 2, T, 1)
	if err != nil {
		t.Fatal(err)
	}
	randomB(l, rand.New(rand.NewPCG(41, 42)))
	_, grads := l.Params()
	step := func(windows [][]int32, scored [][]bool, positions [][]int32) (float64, [][]float32) {
		t.Helper()
		var loss float64
		if positions == nil {
			loss, err = l.Step(windows, scored)
		} else {
			loss, err = l.StepConfined(windows, scored, positions)
		}
		if err != nil {
			t.Fatal(err)
		}
		g := make([][]float32, len(grads))
		for i := range grads {
			g[i] = slices.Clone(grads[i])
		}
		return loss, g
	}
	packed := slices.Concat(a, b)
	mask := make([]bool, T)
	for i := range mask {
		mask[i] = i != na-1 // the prediction of b's first token from a
	}
	lab, gab := step([][]int32{packed}, [][]bool{mask}, [][]int32{positionsOf(T, na)})
	la, ga := step([][]int32{a}, nil, nil)
	lb, gb := step([][]int32{b}, nil, nil)
	sum, want := lab*float64(T-1), la*float64(na-1)+lb*float64(nb-1)
	t.Logf("summed loss: packed %.7f, separate %.7f", sum, want)
	if math.Abs(sum-want) > 1e-6*want {
		t.Errorf("the packed window's summed loss %.7f differs from the separate windows' %.7f", sum, want)
	}
	var worst float64
	for i := range gab {
		var maxDiff, maxGrad float64
		for j := range gab[i] {
			w := float64(ga[i][j])*(na-1) + float64(gb[i][j])*(nb-1)
			maxDiff = max(maxDiff, math.Abs(float64(gab[i][j])*float64(T-1)-w))
			maxGrad = max(maxGrad, math.Abs(w))
		}
		if maxGrad == 0 {
			t.Fatalf("gradient %d is zero: the comparison would prove nothing", i)
		}
		worst = max(worst, maxDiff/maxGrad)
	}
	t.Logf("summed gradients: largest difference %.2e of the largest component, over %d tensors", worst, len(gab))
	if worst > 5e-6 {
		t.Errorf("the packed window's gradients differ from the separate windows' sum by %.2e", worst)
	}
	// Without confinement b attends to a and starts at position 70: a different result, or the test proves nothing.
	if lc, _ := step([][]int32{packed}, [][]bool{mask}, nil); math.Abs(lc-lab) < 1e-4 {
		t.Errorf("concatenated and confined losses %.6f and %.6f are the same", lc, lab)
	}

	windows := [][]int32{tokens[:T+1], tokens[5000 : 5001+T]}
	ls, gs := step(windows, nil, nil)
	lw, gw := step(windows, nil, [][]int32{positionsOf(T), positionsOf(T)})
	if ls != lw || !slices.EqualFunc(gs, gw, slices.Equal) {
		t.Errorf("windows of one sample each: StepConfined (loss %v) is not Step (loss %v) bit for bit", lw, ls)
	}

	for _, c := range []struct {
		positions [][]int32
		want      string
	}{
		{[][]int32{positionsOf(T)}, "1 position lists for 2 windows"},
		{[][]int32{positionsOf(T), positionsOf(T - 1)}, fmt.Sprintf("window 1 has %d positions", T-1)},
		{[][]int32{positionsOf(T), slices.Concat([]int32{1}, positionsOf(T-1))}, "position 1 at token 0"},
		{[][]int32{positionsOf(T), slices.Concat(positionsOf(5), []int32{7}, positionsOf(T-6))}, "position 7 at token 5"},
	} {
		if _, err := l.StepConfined(windows, nil, c.positions); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("StepConfined: error %v, want one containing %q", err, c.want)
		}
	}
}

// TestTrainPackingConfined checks confined packing through Train: on a stream that is one sample (plain text) it
// writes concat's adapter byte for byte; on a stream of samples it writes another, the same on every run; a run
// resumed from the checkpoint of step 2 of 4 writes the uninterrupted run's adapter, and resuming with the other
// packing is refused with a message naming it.
func TestTrainPackingConfined(t *testing.T) {
	m := tinyLlamaHF(t)
	tokens := shakespeare(t, m, "shakespeare_val.txt")[:4000]
	opts := TrainOptions{Rank: 2, Steps: 4, Batch: 2, Ctx: 48, Seed: 5, GradAccum: 2}
	confined := opts
	confined.Packing = PackingConfined
	text := &Stream{Tokens: tokens}
	concatText := adapterBytes(t, mustTrain(t, m, text, opts))
	if !bytes.Equal(adapterBytes(t, mustTrain(t, m, text, confined)), concatText) {
		t.Error("on a stream of one sample, confined packing wrote a different adapter from concat")
	}

	var starts []int
	for s := 0; s < len(tokens); s += 17 + s%23 {
		starts = append(starts, s)
	}
	samples := &Stream{Tokens: tokens, Starts: starts}
	want := adapterBytes(t, mustTrain(t, m, samples, confined))
	if bytes.Equal(want, adapterBytes(t, mustTrain(t, m, samples, opts))) {
		t.Error("on a stream of samples, confined and concat packing wrote the same adapter")
	}
	if !bytes.Equal(want, adapterBytes(t, mustTrain(t, m, samples, confined))) {
		t.Error("two confined runs with the same options wrote different adapters")
	}

	ckpt, kept := t.TempDir(), t.TempDir()
	run := confined
	run.Checkpoint, run.SaveEvery = ckpt, 2
	run.Log = keepCheckpoint(t, ckpt, kept, 2)
	mustTrain(t, m, samples, run)
	resumed := confined
	resumed.ResumeFrom = kept
	if !bytes.Equal(want, adapterBytes(t, mustTrain(t, m, samples, resumed))) {
		t.Error("the confined run resumed at step 2 wrote a different adapter from the uninterrupted run")
	}
	resumed.Packing = PackingConcat
	if _, _, err := Train(m, samples, resumed); err == nil || !strings.Contains(err.Error(), "packing") {
		t.Errorf("resume with concat packing: error %v, want one naming packing", err)
	}
	if _, _, err := Train(m, samples, TrainOptions{Packing: "padded"}); err == nil ||
		!strings.Contains(err.Error(), `packing "padded"`) {
		t.Errorf("unknown packing: error %v", err)
	}
}
