package train

import (
	"fmt"
	"math"
	"sync"

	"github.com/lathe-ml/lathe/internal/kernels"
	"github.com/lathe-ml/lathe/tensor"
)

// Sequence is one stream of tokens for Forward: the tokens continue what Cache already holds.
type Sequence struct {
	Cache  *KVCache
	Tokens []int32
	// Out is the first token whose logits are wanted; Logits receives those of Tokens[Out:], one row of
	// Config.Vocab values per token. A nil Logits asks for none (the tokens only fill the cache).
	Out    int
	Logits []float32
}

// workspace holds the activations of one Forward call, kept between calls.
type workspace struct {
	x, xn, q, k, v, att, tmp, gate, up []float32
	scores                             []float32 // attention weights, scoreLen per thread
	scoreHalf                          []byte
	scoreLen                           int
	block                              []float32 // decoded weight rows
	in                                 input
	qh                                 []float32 // queries rounded to F16
	half                               []byte
	lora                               []float32
	cos, sin                           []float32
}

func grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}

// gemvRows is the most activation rows a product takes as matrix-vector products.
const gemvRows = 2

// blockValues is how many weight values a matrix product decodes at a time: 1 MiB of float32, small enough to stay
// in cache next to the activations and large enough for the GEMM to run at speed.
const blockValues = 1 << 18

// Forward runs the model over the sequences side by side: the linear layers see all their tokens as one batch,
// attention runs per sequence over its cache. Each cache grows by its tokens; a cache belongs to one sequence and
// must not be used by two calls at once.
func (m *Model) Forward(seqs ...Sequence) error {
	c := m.Config
	n, maxTL := 0, 0
	for i, s := range seqs {
		if err := m.checkSequence(s); err != nil {
			return fmt.Errorf("train: sequence %d: %w", i, err)
		}
		for j := range i {
			if seqs[j].Cache == s.Cache {
				return fmt.Errorf("train: sequences %d and %d share a KV cache", j, i)
			}
		}
		n += len(s.Tokens)
		maxTL = max(maxTL, min(queryBlock, len(s.Tokens))*(s.Cache.n+len(s.Tokens)))
	}
	if n == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	d, qDim, kvDim := c.Embd, c.Heads*c.HeadDim, c.HeadsKV*c.HeadDim
	ws := &m.ws
	ws.x, ws.xn = grow(ws.x, n*d), grow(ws.xn, n*d)
	ws.q, ws.att = grow(ws.q, n*qDim), grow(ws.att, n*qDim)
	ws.k, ws.v = grow(ws.k, n*kvDim), grow(ws.v, n*kvDim)
	ws.tmp = grow(ws.tmp, n*d)
	ws.gate, ws.up = grow(ws.gate, n*c.FF), grow(ws.up, n*c.FF)
	ws.scoreLen = maxTL
	ws.scores = grow(ws.scores, kernels.Threads()*maxTL)
	ws.scoreHalf = growBytes(ws.scoreHalf, 2*kernels.Threads()*maxTL)
	ws.cos, ws.sin = grow(ws.cos, n*c.RopeDims/2), grow(ws.sin, n*c.RopeDims/2)

	row := 0
	for _, s := range seqs {
		m.embedRows(ws.x[row*d:], s.Tokens, &ws.lora)
		for t := range s.Tokens {
			ropeAngles(ws.cos[(row+t)*c.RopeDims/2:], ws.sin[(row+t)*c.RopeDims/2:], s.Cache.n+t, c, m.ropeFreqs)
		}
		row += len(s.Tokens)
	}
	scale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	for li := range m.layers {
		l := &m.layers[li]
		rmsNorm(ws.xn, ws.x, l.attnNorm, d, c.NormEps)
		in := ws.input(ws.xn, n)
		m.mul(&l.q, ws.q, in)
		m.mul(&l.k, ws.k, in)
		m.mul(&l.v, ws.v, in)
		rope(ws.q, ws.cos, ws.sin, n, c.Heads, c)
		rope(ws.k, ws.cos, ws.sin, n, c.HeadsKV, c)
		row := 0
		for _, s := range seqs {
			m.attention(li, s.Cache, len(s.Tokens), ws.q[row*qDim:], ws.k[row*kvDim:], ws.v[row*kvDim:],
				ws.att[row*qDim:], scale)
			row += len(s.Tokens)
		}
		m.mul(&l.o, ws.tmp, ws.input(ws.att, n))
		kernels.Axpy(1, ws.tmp, ws.x)

		rmsNorm(ws.xn, ws.x, l.ffnNorm, d, c.NormEps)
		in = ws.input(ws.xn, n)
		m.mul(&l.gate, ws.gate, in)
		m.mul(&l.up, ws.up, in)
		kernels.SiLUMul(ws.gate, ws.gate, ws.up)
		m.mul(&l.down, ws.tmp, ws.input(ws.gate, n))
		kernels.Axpy(1, ws.tmp, ws.x)
	}
	row = 0
	for _, s := range seqs {
		s.Cache.n += len(s.Tokens)
		if s.Logits != nil && s.Out < len(s.Tokens) {
			k := len(s.Tokens) - s.Out
			rmsNorm(ws.xn[:k*d], ws.x[(row+s.Out)*d:(row+len(s.Tokens))*d], m.outNorm, d, c.NormEps)
			m.mul(m.output, s.Logits[:k*c.Vocab], ws.input(ws.xn[:k*d], k))
		}
		row += len(s.Tokens)
	}
	return nil
}

func (m *Model) checkSequence(s Sequence) error {
	c := m.Config
	if s.Cache == nil || len(s.Cache.k) != c.Layers || s.Cache.kvDim != c.HeadsKV*c.HeadDim {
		return fmt.Errorf("the KV cache was not made by this model's NewKVCache")
	}
	if s.Cache.n+len(s.Tokens) > s.Cache.size {
		return fmt.Errorf("%d cached and %d new tokens exceed the cache size %d", s.Cache.n, len(s.Tokens),
			s.Cache.size)
	}
	for i, tok := range s.Tokens {
		if tok < 0 || int(tok) >= c.Vocab {
			return fmt.Errorf("token %d at position %d is outside the vocabulary of %d", tok, i, c.Vocab)
		}
	}
	if s.Out < 0 || s.Out > len(s.Tokens) {
		return fmt.Errorf("Out = %d is outside the %d tokens", s.Out, len(s.Tokens))
	}
	if s.Logits != nil && len(s.Logits) < (len(s.Tokens)-s.Out)*c.Vocab {
		return fmt.Errorf("Logits holds %d values, %d tokens need %d", len(s.Logits), len(s.Tokens)-s.Out,
			(len(s.Tokens)-s.Out)*c.Vocab)
	}
	return nil
}

// rmsNorm normalizes each row of d values of x into dst (ggml_rms_norm followed by the weight).
func rmsNorm(dst, x, w []float32, d int, eps float32) {
	rowsParallel(len(x)/d, func(lo, hi int) {
		for i := lo * d; i < hi*d; i += d {
			kernels.RMSNormRow(dst[i:i+d], x[i:i+d], w, eps)
		}
	})
}

// rowsParallel is parallel for row-wise work, which only pays for the goroutines from a few dozen rows up.
func rowsParallel(n int, fn func(lo, hi int)) {
	if n < 64 {
		fn(0, n)
		return
	}
	parallel(n, fn)
}

// ropeAngles fills the cosines and sines of one position the way ggml_rope_cache_init does: the angle starts at the
// position and is multiplied by base^(-2/n_dims) from pair to pair in float32, each pair's angle divided by its
// frequency factor and scaled by the linear factor.
func ropeAngles(cos, sin []float32, pos int, c Config, factors []float32) {
	thetaScale := float32(math.Pow(c.RopeBase, -2/float64(c.RopeDims)))
	theta := float32(pos)
	for i := 0; i < c.RopeDims/2; i++ {
		t := theta
		if factors != nil {
			t /= factors[i]
		}
		t *= float32(c.RopeScale)
		cos[i] = float32(math.Cos(float64(t)))
		sin[i] = float32(math.Sin(float64(t)))
		theta *= thetaScale
	}
}

// rope rotates the first RopeDims values of every head of n rows: adjacent pairs (ggml's normal mode, for GGUF's
// permuted rows) or pairs half a rotation apart (NeoX mode, Hugging Face's rotate_half).
func rope(x, cos, sin []float32, n, heads int, c Config) {
	rowsParallel(n, func(lo, hi int) { ropeRows(x, cos, sin, lo, hi, heads, c) })
}

func ropeRows(x, cos, sin []float32, lo, hi, heads int, c Config) {
	hd, half := c.HeadDim, c.RopeDims/2
	for r := lo; r < hi; r++ {
		cs, sn := cos[r*half:(r+1)*half], sin[r*half:(r+1)*half]
		for h := 0; h < heads; h++ {
			v := x[(r*heads+h)*hd : (r*heads+h+1)*hd]
			for i := 0; i < half; i++ {
				a, b := 2*i, 2*i+1
				if c.RopeNeoX {
					a, b = i, i+half
				}
				x0, x1 := v[a], v[b]
				v[a] = x0*cs[i] - x1*sn[i]
				v[b] = x0*sn[i] + x1*cs[i]
			}
		}
	}
}

// attention appends one sequence's keys and values to its cache and computes causal grouped-query attention for its
// T new queries over the cached positions: per head, S = q·Kᵀ/√d, softmax over the visible prefix of each row,
// then S·V. Query head h reads key/value head h/(Heads/HeadsKV). Queries go in blocks of queryBlock rows, each
// against only the keys its last row can see, which skips most of the masked half of S.
//
// With an F16 cache (llama.cpp's default cache type) the keys and values are stored rounded to F16, and, as ggml's
// products with F16 operands convert the other operand to F16 too, so are the queries and the attention weights.
func (m *Model) attention(li int, cache *KVCache, T int, q, k, v, out []float32, scale float32) {
	c := m.Config
	hd, qDim, kvDim := c.HeadDim, c.Heads*c.HeadDim, c.HeadsKV*c.HeadDim
	n0 := cache.n
	ck, cv := cache.k[li][n0*kvDim:(n0+T)*kvDim], cache.v[li][n0*kvDim:(n0+T)*kvDim]
	half := cache.half
	if half {
		m.ws.half = growBytes(m.ws.half, 2*T*qDim)
		roundF16(ck, k[:T*kvDim], m.ws.half)
		roundF16(cv, v[:T*kvDim], m.ws.half)
		m.ws.qh = grow(m.ws.qh, T*qDim)
		roundF16(m.ws.qh, q[:T*qDim], m.ws.half)
		q = m.ws.qh
	} else {
		copy(ck, k[:T*kvDim])
		copy(cv, v[:T*kvDim])
	}
	ck, cv = cache.k[li], cache.v[li]
	group := c.Heads / c.HeadsKV
	// Heads are independent: the threads take a share each, every GEMM on its own thread (SgemmSerial).
	// A single new token (generation) is too little work to hand out.
	workers := c.Heads
	if T*(n0+T) < 1<<12 {
		workers = 1
	}
	parallelIndexed(workers, func(worker, lo, hi int) {
		lo, hi = lo*c.Heads/workers, hi*c.Heads/workers
		scratch := m.ws.scores[worker*m.ws.scoreLen : (worker+1)*m.ws.scoreLen]
		tmp := m.ws.scoreHalf[worker*2*m.ws.scoreLen : (worker+1)*2*m.ws.scoreLen]
		for h := lo; h < hi; h++ {
			g := h / group
			for t0 := 0; t0 < T; t0 += queryBlock {
				nq := min(queryBlock, T-t0)
				L := n0 + t0 + nq
				s := scratch[:nq*L]
				kernels.SgemmSerial(false, true, nq, L, hd, scale, q[t0*qDim+h*hd:], qDim, ck[g*hd:], kvDim, 0, s, L)
				for t := 0; t < nq; t++ {
					visible := n0 + t0 + t + 1
					kernels.SoftmaxRow(s[t*L : t*L+visible])
					clear(s[t*L+visible : (t+1)*L])
				}
				if half {
					roundF16(s, s, tmp)
				}
				kernels.SgemmSerial(false, false, nq, hd, L, 1, s, L, cv[g*hd:], kvDim, 0, out[t0*qDim+h*hd:], qDim)
			}
		}
	})
}

// roundF16 sets dst to the values of x rounded to half precision (round to nearest even); tmp holds 2·len(x) bytes.
func roundF16(dst, x []float32, tmp []byte) {
	tensor.Float32ToF16(tmp[:2*len(x)], x)
	kernels.F16ToF32Row(dst[:len(x)], tmp)
}

func growBytes(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// queryBlock is the number of queries attention handles at a time.
const queryBlock = 64

// input is the left operand of one or more products: n rows of activations, and the same rows rounded for the
// weight type of the last product that needed it, so that q, k and v (or gate and up) round their shared input
// once.
type input struct {
	x       []float32
	n       int
	rounded tensor.DType // type r holds x rounded for; F32 when r is not valid
	r       []float32
}

// input starts a new operand over x; any rounding of a previous operand is forgotten.
func (ws *workspace) input(x []float32, n int) *input {
	ws.in = input{x: x, n: n, rounded: tensor.F32, r: ws.in.r}
	return &ws.in
}

// mul sets y = x·Wᵀ (+ each adapter's scale·(x·Aᵀ)·Bᵀ, a DoRA adapter then rescaling the rows of y) for the rows
// of in. The activations are first rounded as ggml rounds them for W's type (see activationType); the F32 adapters
// see them unrounded, as in llama.cpp. Weights other than aligned F32 are decoded a block of rows at a time, in
// parallel, into a buffer the GEMM then reads.
func (m *Model) mul(w *matrix, y []float32, in *input) {
	n, x := in.n, in.x[:in.n*w.cols]
	if m.stats != nil {
		m.stats.add(w.name, x, n, w.cols)
	}
	xa := x
	if t := activationType(w.dtype); t != tensor.F32 {
		if in.rounded != t {
			in.r = grow(in.r, len(x))
			m.ws.half = growBytes(m.ws.half, 2*len(x))
			parallel(n, func(lo, hi int) {
				roundActivations(in.r[lo*w.cols:hi*w.cols], x[lo*w.cols:hi*w.cols], t, w.cols,
					m.ws.half[2*lo*w.cols:2*hi*w.cols])
			})
			in.rounded = t
		}
		xa = in.r
	}
	switch {
	case n <= gemvRows:
		// A matrix-vector product (generation): dot each weight row with the activations, decoding the rows a
		// thread's share at a time, rather than have the GEMM pack all of W for one row of output.
		rows := max(1, blockValues/kernels.Threads()/w.cols)
		m.ws.block = grow(m.ws.block, kernels.Threads()*rows*w.cols)
		parallelIndexed(w.rows, func(worker, lo, hi int) {
			buf := m.ws.block[worker*rows*w.cols : (worker+1)*rows*w.cols]
			for r0 := lo; r0 < hi; {
				nr := hi - r0
				var wr []float32
				if w.f32 != nil {
					wr = w.f32[r0*w.cols : hi*w.cols]
				} else {
					nr = min(nr, rows)
					wr = buf[:nr*w.cols]
					w.decodeRows(wr, r0, nr)
				}
				for j := range nr {
					for i := range n {
						y[i*w.rows+r0+j] = kernels.Dot(xa[i*w.cols:(i+1)*w.cols], wr[j*w.cols:(j+1)*w.cols])
					}
				}
				r0 += nr
			}
		})
	case w.f32 != nil:
		kernels.Sgemm(false, true, n, w.rows, w.cols, 1, xa, w.cols, w.f32, w.cols, 0, y, w.rows)
	default:
		rows := w.blockRows()
		m.ws.block = grow(m.ws.block, rows*w.cols)
		for r0 := 0; r0 < w.rows; r0 += rows {
			nr := min(rows, w.rows-r0)
			buf := m.ws.block[:nr*w.cols]
			parallel(nr, func(lo, hi int) {
				w.decodeRows(buf[lo*w.cols:hi*w.cols], r0+lo, hi-lo)
			})
			kernels.Sgemm(false, true, n, nr, w.cols, 1, xa, w.cols, buf, w.cols, 0, y[r0:], w.rows)
		}
	}
	if w == &m.embd {
		// A tied head multiplies by token_embd, whose adapters are embedding LoRAs of the lookup (embedRows): as in
		// PEFT, whose lm_head is not the adapted embedding module, the head keeps the base table.
		return
	}
	for _, a := range w.adapters {
		m.ws.lora = grow(m.ws.lora, n*a.rank)
		kernels.Sgemm(false, true, n, a.rank, w.cols, 1, x, w.cols, a.a, w.cols, 0, m.ws.lora, a.rank)
		kernels.Sgemm(false, true, n, w.rows, a.rank, a.scale, m.ws.lora, a.rank, a.b, a.rank, 1, y, w.rows)
		if a.rowScale != nil {
			for i := range n {
				for r, g := range a.rowScale {
					y[i*w.rows+r] *= g
				}
			}
		}
	}
}

// parallel splits [0, n) into one contiguous range per kernel thread and runs fn on each.
func parallel(n int, fn func(lo, hi int)) {
	parallelIndexed(n, func(_, lo, hi int) { fn(lo, hi) })
}

// parallelIndexed is parallel with the index of the range (below kernels.Threads()), for per-thread scratch space.
func parallelIndexed(n int, fn func(worker, lo, hi int)) {
	parts := min(kernels.Threads(), n)
	if parts <= 1 {
		fn(0, 0, n)
		return
	}
	var wg sync.WaitGroup
	for p := 0; p < parts; p++ {
		lo, hi := p*n/parts, (p+1)*n/parts
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(p, lo, hi)
		}()
	}
	wg.Wait()
}
