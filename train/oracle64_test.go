package train

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// A float64 oracle of the training forward pass, written from the definitions (Llama's RMSNorm, rotary embedding,
// causal grouped-query attention, SwiGLU, LoRA projections, mean cross-entropy over scored targets) and sharing no
// code with the float32 runtime. The gradient checks differentiate it numerically in float64, where central
// differences are accurate to about 1e-9, so the relative error they report is the float32 backward pass's own.

func widen(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}

// linear64 returns x·Wᵀ for n rows of x (n×cols) and W (rows×cols).
func linear64(x []float64, n int, w []float64, rows, cols int) []float64 {
	y := make([]float64, n*rows)
	for i := range n {
		xi := x[i*cols : (i+1)*cols]
		for r := range rows {
			var s float64
			for j, wv := range w[r*cols : (r+1)*cols] {
				s += xi[j] * wv
			}
			y[i*rows+r] = s
		}
	}
	return y
}

func rmsNorm64(x, w []float64, d int, eps float64) []float64 {
	y := make([]float64, len(x))
	for i := 0; i < len(x); i += d {
		var ss float64
		for _, v := range x[i : i+d] {
			ss += v * v
		}
		inv := 1 / math.Sqrt(ss/float64(d)+eps)
		for j := range d {
			y[i+j] = x[i+j] * inv * w[j]
		}
	}
	return y
}

// rope64 rotates every head of n rows in place, row r being at position r mod T: the pair (a, b) of frequency i
// turns by pos·base^(−2i/RopeDims)·RopeScale, the pairs adjacent or, with RopeNeoX, half a rotation apart.
func rope64(x []float64, n, T, heads int, c Config) {
	half := c.RopeDims / 2
	for r := range n {
		pos := float64(r % T)
		for h := range heads {
			v := x[(r*heads+h)*c.HeadDim:]
			for i := range half {
				angle := pos * math.Pow(c.RopeBase, -2*float64(i)/float64(c.RopeDims)) * c.RopeScale
				a, b := 2*i, 2*i+1
				if c.RopeNeoX {
					a, b = i, i+half
				}
				cs, sn := math.Cos(angle), math.Sin(angle)
				v[a], v[b] = v[a]*cs-v[b]*sn, v[a]*sn+v[b]*cs
			}
		}
	}
}

// attention64 is causal attention within each of B sequences of T rows; query head h reads key/value head
// h/(Heads/HeadsKV), scores scaled by 1/√HeadDim.
func attention64(q, k, v []float64, B, T int, c Config) []float64 {
	hd, qDim, kvDim := c.HeadDim, c.Heads*c.HeadDim, c.HeadsKV*c.HeadDim
	out := make([]float64, B*T*qDim)
	scores := make([]float64, T)
	for b := range B {
		for h := range c.Heads {
			g := h / (c.Heads / c.HeadsKV)
			for t := range T {
				qi := q[(b*T+t)*qDim+h*hd:][:hd]
				maxS := math.Inf(-1)
				for s := 0; s <= t; s++ {
					kj := k[(b*T+s)*kvDim+g*hd:][:hd]
					var dot float64
					for i := range hd {
						dot += qi[i] * kj[i]
					}
					scores[s] = dot / math.Sqrt(float64(hd))
					maxS = max(maxS, scores[s])
				}
				var sum float64
				for s := 0; s <= t; s++ {
					scores[s] = math.Exp(scores[s] - maxS)
					sum += scores[s]
				}
				o := out[(b*T+t)*qDim+h*hd:][:hd]
				for s := 0; s <= t; s++ {
					vj := v[(b*T+s)*kvDim+g*hd:][:hd]
					for i := range hd {
						o[i] += scores[s] / sum * vj[i]
					}
				}
			}
		}
	}
	return out
}

func swiglu64(g, u []float64) []float64 {
	h := make([]float64, len(g))
	for i := range g {
		h[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
	}
	return h
}

// crossEntropy64 is the mean negative log-likelihood of the targets that are not negative.
func crossEntropy64(logits []float64, targets []int32, V int) float64 {
	var sum float64
	count := 0
	for r, tg := range targets {
		if tg < 0 {
			continue
		}
		row := logits[r*V : (r+1)*V]
		maxL := math.Inf(-1)
		for _, v := range row {
			maxL = max(maxL, v)
		}
		var z float64
		for _, v := range row {
			z += math.Exp(v - maxL)
		}
		sum += maxL + math.Log(z) - row[tg]
		count++
	}
	return sum / float64(count)
}

// model64 holds a model's frozen weights in float64.
type model64 struct {
	embd, output []float64
	outNorm      []float64
	layers       []layer64
	// mask, when set, gives the input of an adapter (layer, module in loraLayer.linears order) from the
	// projection's input x: LoRA dropout's masks applied.
	mask func(layer, module int, x []float64) []float64
}

type layer64 struct {
	attnNorm, ffnNorm []float64
	w                 [7][]float64 // q, k, v, o, gate, up, down
}

func decode64(t *testing.T, w *matrix) []float64 {
	t.Helper()
	f := make([]float32, w.rows*w.cols)
	if err := w.decodeRows(f, 0, w.rows); err != nil {
		t.Fatal(err)
	}
	return widen(f)
}

func newModel64(t *testing.T, m *Model) *model64 {
	o := &model64{embd: decode64(t, &m.embd), output: decode64(t, m.output), outNorm: widen(m.outNorm)}
	for i := range m.layers {
		ml := &m.layers[i]
		l := layer64{attnNorm: widen(ml.attnNorm), ffnNorm: widen(ml.ffnNorm)}
		for j, w := range []*matrix{&ml.q, &ml.k, &ml.v, &ml.o, &ml.gate, &ml.up, &ml.down} {
			l.w[j] = decode64(t, w)
		}
		o.layers = append(o.layers, l)
	}
	return o
}

// factors64 are LoRA factors in float64, indexed [layer][module], A (rank×cols) and B (rows×rank).
type factors64 struct{ a, b [][7][]float64 }

func (l *LoRA) factors64() factors64 {
	return l.collect64(func(lin *loraLinear) (a, b []float32) { return lin.a, lin.b })
}

// grads64 are the gradients of l's factors in float64, as factors64.
func (l *LoRA) grads64() factors64 {
	return l.collect64(func(lin *loraLinear) (a, b []float32) { return lin.da, lin.db })
}

func (l *LoRA) collect64(pick func(*loraLinear) (a, b []float32)) factors64 {
	var f factors64
	for i := range l.layers {
		var a, b [7][]float64
		for j, lin := range l.layers[i].linears() {
			fa, fb := pick(lin)
			a[j], b[j] = widen(fa), widen(fb)
		}
		f.a, f.b = append(f.a, a), append(f.b, b)
	}
	return f
}

// randomB fills every B with small normal values, so that the gradients of A are not zero.
func randomB(l *LoRA, rng *rand.Rand) {
	for i := range l.layers {
		for _, lin := range l.layers[i].linears() {
			for j := range lin.b {
				lin.b[j] = float32(rng.NormFloat64() * 0.05)
			}
		}
	}
}

// loss64 is the training loss of l's model with the factors f on the windows (targets masked as Step masks them).
func (w *model64) loss64(l *LoRA, f factors64, windows [][]int32, scored [][]bool) float64 {
	c := l.m.Config
	B, T := len(windows), len(windows[0])-1
	n, d := B*T, c.Embd
	x := make([]float64, n*d)
	targets := make([]int32, n)
	for b, win := range windows {
		for t := range T {
			copy(x[(b*T+t)*d:(b*T+t+1)*d], w.embd[int(win[t])*d:(int(win[t])+1)*d])
			targets[b*T+t] = win[t+1]
			if scored != nil && !scored[b][t] {
				targets[b*T+t] = -1
			}
		}
	}
	eps := float64(c.NormEps)
	for li, ly := range w.layers {
		proj := func(j int, in []float64) []float64 {
			lin := l.layers[li].linears()[j]
			rows, cols := lin.w.rows, lin.w.cols
			y := linear64(in, n, ly.w[j], rows, cols)
			rank := len(f.a[li][j]) / cols // factors cut to fewer ranks than lin's are a DyLoRA slice
			ain := in
			if w.mask != nil {
				ain = w.mask(li, j, in)
			}
			h := linear64(ain, n, f.a[li][j], rank, cols)
			delta := linear64(h, n, f.b[li][j], rows, rank)
			for i := range y {
				y[i] += float64(lin.scale) * delta[i]
			}
			return y
		}
		xn := rmsNorm64(x, ly.attnNorm, d, eps)
		q, k, v := proj(0, xn), proj(1, xn), proj(2, xn)
		rope64(q, n, T, c.Heads, c)
		rope64(k, n, T, c.HeadsKV, c)
		att := proj(3, attention64(q, k, v, B, T, c))
		for i := range x {
			x[i] += att[i]
		}
		xn = rmsNorm64(x, ly.ffnNorm, d, eps)
		down := proj(6, swiglu64(proj(4, xn), proj(5, xn)))
		for i := range x {
			x[i] += down[i]
		}
	}
	logits := linear64(rmsNorm64(x, w.outNorm, d, eps), n, w.output, c.Vocab, d)
	return crossEntropy64(logits, targets, c.Vocab)
}

// TestLoRAWholeModelGradient64 checks the gradient of the whole training pass — embedding, six layers of RMSNorm,
// LoRA projections, RoPE, causal GQA attention and SwiGLU, output norm and projection, cross-entropy with masked
// targets — against central differences of the float64 oracle's loss, one module kind and factor at a time, along a
// direction mixing the gradient's own (for signal) and a random one (so that a gradient wrong in direction but not
// size cannot pass). B starts random rather than zero so that the gradients of A are not zero.
func TestLoRAWholeModelGradient64(t *testing.T) {
	m := tinyLlamaHF(t)
	const B, T = 2, 8
	l, err := NewLoRA(m, 4, 8, B, T, 1)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(21, 22))
	randomB(l, rng)
	windows := windowsOf(t, shakespeare(t, m, "shakespeare_val.txt"), B, T)
	scored := [][]bool{
		{false, false, true, true, true, true, true, true}, // a prompt of two tokens
		{true, true, true, true, true, false, true, true},
	}
	loss32, err := l.Step(windows, scored)
	if err != nil {
		t.Fatal(err)
	}
	w64 := newModel64(t, m)
	f := l.factors64()
	loss64 := w64.loss64(l, f, windows, scored)
	t.Logf("loss: float32 pass %.7f, float64 oracle %.7f", loss32, loss64)
	if math.Abs(loss32-loss64) > 1e-5*loss64 {
		t.Errorf("the training pass's loss %.7f differs from the oracle's %.7f", loss32, loss64)
	}
	checkGradients64(t, l, w64, f, l.grads64(), windows, scored, rng)
}

// clone is a deep copy of f.
func (f factors64) clone() factors64 {
	var c factors64
	for i := range f.a {
		var a, b [7][]float64
		for j := range f.a[i] {
			a[j], b[j] = slices.Clone(f.a[i][j]), slices.Clone(f.b[i][j])
		}
		c.a, c.b = append(c.a, a), append(c.b, b)
	}
	return c
}

// checkGradients64 checks grad, the gradient of the training loss at factors f, against central differences of the
// float64 oracle's loss, one module kind and factor at a time, along a direction mixing the gradient's own (for
// signal) and a random one (so that a gradient wrong in direction but not size cannot pass).
func checkGradients64(t *testing.T, l *LoRA, w64 *model64, f, grad factors64, windows [][]int32, scored [][]bool,
	rng *rand.Rand) {
	t.Helper()
	names := []string{"q", "k", "v", "o", "gate", "up", "down"}
	for kind, name := range names {
		for _, factor := range []string{"A", "B"} {
			params := func(f factors64) [][]float64 {
				var ps [][]float64
				for i := range f.a {
					if factor == "A" {
						ps = append(ps, f.a[i][kind])
					} else {
						ps = append(ps, f.b[i][kind])
					}
				}
				return ps
			}
			gs := params(grad)
			var gn, rn float64
			dir := make([][]float64, len(gs))
			for i, g := range gs {
				dir[i] = widen(randVec(rng, len(g), 1))
				for j := range g {
					gn += g[j] * g[j]
					rn += dir[i][j] * dir[i][j]
				}
			}
			gn, rn = math.Sqrt(gn), math.Sqrt(rn)
			var analytic float64
			for i, g := range gs {
				for j := range g {
					dir[i][j] = g[j]/gn + dir[i][j]/rn
					analytic += g[j] * dir[i][j]
				}
			}
			const eps = 1e-4
			at := func(s float64) float64 {
				shifted := f.clone()
				for i, p := range params(shifted) {
					for j := range p {
						p[j] += s * dir[i][j]
					}
				}
				return w64.loss64(l, shifted, windows, scored)
			}
			fd := (at(eps) - at(-eps)) / (2 * eps)
			rel := math.Abs(fd-analytic) / math.Abs(analytic)
			t.Logf("%-4s %s: directional derivative %.8g, float64 finite difference %.8g, relative error %.2e", name,
				factor, analytic, fd, rel)
			if rel > 1e-4 {
				t.Errorf("%s %s: relative error %.2e exceeds 1e-4", name, factor, rel)
			}
		}
	}
}
