package train

import (
	"math"
	"sync/atomic"

	"github.com/lathe-ml/lathe/internal/kernels"
)

// The training pass, in llm.c's manner: each operation is a forward function that keeps what its backward needs
// and, next to it, a backward function that turns the gradient of its output into that of its input, over buffers
// the caller allocated once. Backward functions add into their input gradients (dx += …) unless they say otherwise,
// because in a residual network most inputs feed two paths. Unlike Forward, these run in plain float32: no KV
// cache, no rounding of activations to the weight's dot type, so that the gradient is that of the function computed.

// rmsNormForward normalizes each row of d values of x into y and records 1/rms of each row in rstd.
func rmsNormForward(y, rstd, x, w []float32, d int, eps float32) {
	rowsParallel(len(rstd), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			rstd[r] = kernels.RMSNormRow(y[r*d:(r+1)*d], x[r*d:(r+1)*d], w, eps)
		}
	})
}

// rmsNormBackward adds to dx the gradient through y = x·w·s, s = (mean(x²)+eps)^-½:
// dx_j = s·w_j·dy_j − s³·x_j/d · Σᵢ dyᵢ·wᵢ·xᵢ. The weight's own gradient, when it is trained, is
// rmsNormWeightGrad's.
func rmsNormBackward(dx, dy, x, w, rstd []float32, d int) {
	rowsParallel(len(rstd), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			xr, dyr, dxr := x[r*d:(r+1)*d], dy[r*d:(r+1)*d], dx[r*d:(r+1)*d]
			var dot float64
			for i, v := range xr {
				dot += float64(dyr[i] * w[i] * v)
			}
			s := rstd[r]
			c := float32(dot) * s * s * s / float32(d)
			for i, v := range xr {
				dxr[i] += s*w[i]*dyr[i] - c*v
			}
		}
	})
}

// rmsNormWeightGrad adds to dw the gradient of the RMSNorm weight, y = x·w·s: dw_j += Σ_r dy_rj·x_rj·s_r, each
// column summed over the rows in order (columns split between threads), so that the sum does not depend on the
// thread count.
func rmsNormWeightGrad(dw, dy, x, rstd []float32, d int) {
	parallel(d, func(lo, hi int) {
		for r, s := range rstd {
			xr, dyr := x[r*d+lo:r*d+hi], dy[r*d+lo:r*d+hi]
			for j, v := range xr {
				dw[lo+j] += dyr[j] * v * s
			}
		}
	})
}

// ropeBackward turns the gradient of rotated rows into that of the rows before rotation, in place: a rotation's
// transpose is the rotation by the opposite angle, so it is rope with the sines negated (negSin).
func ropeBackward(dx, cos, negSin []float32, n, heads int, c Config) {
	rope(dx, cos, negSin, n, heads, c)
}

// attentionForward is causal grouped-query attention over B sequences of T rows each: per sequence and head,
// P = softmax(q·kᵀ·scale) over the visible prefix of each row (kept in probs, B·Heads·T·T values, zero where
// masked) and out = P·v. pos, when not nil, holds each row's rotary position (B·T values), which confines the
// attention to samples: a row at position p sees only the p rows before it, back to its sample's first row (where
// the position is 0), as flash-attention's varlen kernels confine packed sequences. Queries go in blocks of up to
// queryBlock rows of one sample (see queryBlocks) against only the keys from the sample's start to the block's
// last row, so the products skip the masked part of P: the upper triangle and, with pos, every earlier sample.
func attentionForward(out, probs, q, k, v []float32, pos []int32, B, T int, c Config) {
	hd, qDim, kvDim, H := c.HeadDim, c.Heads*c.HeadDim, c.HeadsKV*c.HeadDim, c.Heads
	group := H / c.HeadsKV
	scale := float32(1 / math.Sqrt(float64(hd)))
	parallelUnits(B*H, func(_, u int) {
		b, h := u/H, u%H
		qo, ko := b*T*qDim+h*hd, b*T*kvDim+(h/group)*hd
		p := probs[u*T*T : (u+1)*T*T]
		queryBlocks(pos, b, T, func(t0, nq, lo int) {
			W := t0 + nq - lo
			pb := p[t0*T:]
			kernels.SgemmSerial(false, true, nq, W, hd, scale, q[qo+t0*qDim:], qDim, k[ko+lo*kvDim:], kvDim, 0,
				pb[lo:], T)
			for t := range nq {
				row := pb[t*T : (t+1)*T]
				clear(row[:lo])
				// Masked columns up to the next multiple of 8 join the row as −∞ (e⁻∞ is 0 to float32 rounding
				// in the sum, and they are zeroed after), so the vector kernel takes the whole row.
				end := min(lo+(t0+t+1-lo+7)&^7, T)
				for j := t0 + t + 1; j < end; j++ {
					row[j] = float32(math.Inf(-1))
				}
				kernels.Softmax(row[lo:end])
				clear(row[t0+t+1:])
			}
			kernels.SgemmSerial(false, false, nq, hd, W, 1, pb[lo:], T, v[ko+lo*kvDim:], kvDim, 0, out[qo+t0*qDim:],
				qDim)
		})
	})
}

// queryBlocks calls fn on the query blocks of sequence b: rows t0…t0+nq-1, at most queryBlock of them and, with
// pos, none past a sample's start, so that every row of a block sees the keys from lo (its sample's first row, 0
// without pos) to itself.
func queryBlocks(pos []int32, b, T int, fn func(t0, nq, lo int)) {
	for t0 := 0; t0 < T; {
		end, lo := min(t0+queryBlock, T), 0
		if pos != nil {
			p := pos[b*T : (b+1)*T]
			lo = t0 - int(p[t0])
			for t := t0 + 1; t < end; t++ {
				if p[t] == 0 {
					end = t
					break
				}
			}
		}
		fn(t0, end-t0, lo)
		t0 = end
	}
}

// attentionBackward sets dq and adds to dk and dv the gradients of attentionForward given dout (pos as there).
// With dP = dout·vᵀ, the softmax gives dS = P⊙(dP − rowsum(P⊙dP)) (zero where masked, since P is), then
// dq = scale·dS·k, dk += scale·dSᵀ·q, dv += Pᵀ·dout. Like the forward pass it goes by blocks of queries, each
// against the keys it sees. Heads of one key/value group run on one thread, in order, as they add into the same dk
// and dv. scratch holds Threads()·T·T values.
func attentionBackward(dq, dk, dv, dout, probs, q, k, v []float32, pos []int32, scratch []float32, B, T int,
	c Config) {
	hd, qDim, kvDim, H := c.HeadDim, c.Heads*c.HeadDim, c.HeadsKV*c.HeadDim, c.Heads
	group := H / c.HeadsKV
	scale := float32(1 / math.Sqrt(float64(hd)))
	parallelUnits(B*c.HeadsKV, func(worker, u int) {
		dp := scratch[worker*T*T : (worker+1)*T*T]
		b, g := u/c.HeadsKV, u%c.HeadsKV
		ko := b*T*kvDim + g*hd
		for h := g * group; h < (g+1)*group; h++ {
			p := probs[(b*H+h)*T*T : (b*H+h+1)*T*T]
			queryBlocks(pos, b, T, func(t0, nq, lo int) {
				W := t0 + nq - lo
				qo := b*T*qDim + h*hd + t0*qDim
				pb, kb, vb := p[t0*T+lo:], k[ko+lo*kvDim:], v[ko+lo*kvDim:]
				kernels.SgemmSerial(false, true, nq, W, hd, 1, dout[qo:], qDim, vb, kvDim, 0, dp, W)
				kernels.SgemmSerial(true, false, W, hd, nq, 1, pb, T, dout[qo:], qDim, 1, dv[ko+lo*kvDim:], kvDim)
				for t := range nq {
					seen := t0 + t + 1 - lo
					pr, dr := pb[t*T:t*T+seen], dp[t*W:t*W+seen]
					s := kernels.Dot(pr, dr)
					for j, pj := range pr {
						dr[j] = pj * (dr[j] - s)
					}
					clear(dp[t*W+seen : (t+1)*W])
				}
				kernels.SgemmSerial(false, false, nq, hd, W, scale, dp, W, kb, kvDim, 0, dq[qo:], qDim)
				kernels.SgemmSerial(true, false, W, hd, nq, scale, dp, W, q[qo:], qDim, 1, dk[ko+lo*kvDim:], kvDim)
			})
		}
	})
}

// parallelUnits runs fn on units 0…n-1, which the threads claim one at a time: attention's units are many and
// equal, and a thread that loses its core to another process then simply does fewer of them. Each unit runs
// entirely on one thread, whose index (below kernels.Threads()) fn gets for scratch space, so results do not
// depend on the split. The products inside a unit should use SgemmSerial.
func parallelUnits(n int, fn func(worker, u int)) {
	var next atomic.Int32
	parallelIndexed(min(n, kernels.Threads()), func(worker, _, _ int) {
		for u := int(next.Add(1) - 1); u < n; u = int(next.Add(1) - 1) {
			fn(worker, u)
		}
	})
}

// swigluBackward sets dg and du from dh for h = silu(g)·u: du = dh·silu(g), dg = dh·u·σ(g)·(1 + g·(1−σ(g))).
func swigluBackward(dg, du, dh, g, u []float32) {
	if len(g) < 1<<12 {
		kernels.SiLUMulGrad(dg, du, dh, g, u)
		return
	}
	parallel(len(g), func(lo, hi int) { kernels.SiLUMulGrad(dg[lo:hi], du[lo:hi], dh[lo:hi], g[lo:hi], u[lo:hi]) })
}

// crossEntropyForward replaces each row of V logits by its softmax and returns the summed negative log-likelihood
// of the targets and how many there are; a negative target (the ignore index) is not scored.
func crossEntropyForward(logits []float32, targets []int32, V int) (float64, int) {
	nll := make([]float64, len(targets))
	rowsParallel(len(targets), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row := logits[r*V : (r+1)*V]
			var target float32
			if targets[r] >= 0 {
				target = row[targets[r]]
			}
			lse := kernels.SoftmaxRow(row)
			if targets[r] >= 0 {
				nll[r] = float64(lse - target)
			}
		}
	})
	var sum float64
	count := 0
	for r, v := range nll { // in order, so that the loss does not depend on the thread count
		if targets[r] >= 0 {
			sum += v
			count++
		}
	}
	return sum, count
}

// crossEntropyBackward turns the probabilities crossEntropyForward left into the gradient of scale·Σ nll with
// respect to the logits, in place: scale·(p − onehot(target)), zero for ignored rows.
func crossEntropyBackward(probs []float32, targets []int32, V int, scale float32) {
	rowsParallel(len(targets), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row := probs[r*V : (r+1)*V]
			if targets[r] < 0 {
				clear(row)
				continue
			}
			kernels.Scale(scale, row)
			row[targets[r]] -= scale
		}
	})
}

// frozenForward sets y = x·Wᵀ for n rows, decoding the stored weight a block of rows at a time into buf.
func frozenForward(w *matrix, y, x []float32, n int, buf *[]float32) {
	if w.f32 != nil {
		kernels.Sgemm(false, true, n, w.rows, w.cols, 1, x, w.cols, w.f32, w.cols, 0, y, w.rows)
		return
	}
	w.blocks(buf, func(r0, nr int, wb []float32) {
		kernels.Sgemm(false, true, n, nr, w.cols, 1, x, w.cols, wb, w.cols, 0, y[r0:], w.rows)
	})
}

// frozenBackward adds dy·W to dx: the input gradient of a frozen weight (QLoRA-style, the weight decoded again
// rather than kept in float32).
func frozenBackward(w *matrix, dx, dy []float32, n int, buf *[]float32) {
	if w.f32 != nil {
		kernels.Sgemm(false, false, n, w.cols, w.rows, 1, dy, w.rows, w.f32, w.cols, 1, dx, w.cols)
		return
	}
	w.blocks(buf, func(r0, nr int, wb []float32) {
		kernels.Sgemm(false, false, n, w.cols, nr, 1, dy[r0:], w.rows, wb, w.cols, 1, dx, w.cols)
	})
}

// blocks decodes the weight in blocks of rows (in parallel) and calls fn on each.
func (w *matrix) blocks(buf *[]float32, fn func(r0, nr int, wb []float32)) {
	w.blocksOf(w.blockRows(), buf, fn)
}

// blockRows is how many rows of the weight one decoded block holds: blockValues values, at least a row.
func (w *matrix) blockRows() int { return min(w.rows, max(1, blockValues/w.cols)) }

// blocksOf is blocks with rows rows per block.
func (w *matrix) blocksOf(rows int, buf *[]float32, fn func(r0, nr int, wb []float32)) {
	*buf = grow(*buf, rows*w.cols)
	for r0 := 0; r0 < w.rows; r0 += rows {
		nr := min(rows, w.rows-r0)
		wb := (*buf)[:nr*w.cols]
		parallel(nr, func(lo, hi int) {
			// The type was checked by loadMatrix, so decoding cannot fail.
			_ = w.decodeRows(wb[lo*w.cols:hi*w.cols], r0+lo, hi-lo)
		})
		fn(r0, nr, wb)
	}
}

// loraLinear is a frozen projection with a trainable LoRA update: y = x·Wᵀ + scale·(dropout(x)·Aᵀ)·Bᵀ, A
// rank×cols and B rows×rank, as PEFT's lora.Linear computes it.
type loraLinear struct {
	w      *matrix
	a, b   []float32
	da, db []float32
	rank   int
	// active is the number of leading ranks the pass uses, rank but during a DyLoRA step (see LoRA.SetRank): the
	// first active rows of A and columns of B, B read with its full row stride.
	active int
	scale  float32
	// proj, when set, is a registered method's projection, which replaces the factors above.
	proj projection
	// drop is the LoRA's dropout state, nil without dropout; site (layer·7 + module index) picks this
	// projection's masks.
	drop *dropout
	site int
}

// dropping says whether this pass drops the adapter's input.
func (l *loraLinear) dropping() bool { return l.drop != nil && l.drop.on }

// trained says whether the projection has trainable parameters.
func (l *loraLinear) trained() bool { return l.rank > 0 || l.proj != nil }

// forward sets y and keeps h = dropout(x)·Aᵀ (n×active) for the backward pass; see merges for when y = x·W'ᵀ with
// the merged weight W' = W + scale·B·A.
func (l *loraLinear) forward(y, h, x []float32, n int, buf *[]float32) {
	rows, cols, r := l.w.rows, l.w.cols, l.active
	if l.merges(n, cols) {
		kernels.Sgemm(false, true, n, r, cols, 1, x, cols, l.a, cols, 0, h, r)
		l.merged(buf, func(r0, nr int, wb []float32) {
			kernels.Sgemm(false, true, n, nr, cols, 1, x, cols, wb, cols, 0, y[r0:], rows)
		})
		return
	}
	frozenForward(l.w, y, x, n, buf)
	if l.dropping() {
		xd := l.drop.buf[:n*cols]
		l.drop.draw(l.site, n, cols)
		l.drop.apply(xd, x, l.site, n, cols, false)
		x = xd
	}
	kernels.Sgemm(false, true, n, r, cols, 1, x, cols, l.a, cols, 0, h, r)
	kernels.Sgemm(false, true, n, rows, r, l.scale, h, r, l.b, l.rank, 1, y, rows)
}

// merges says whether a pass over n rows whose frozen product has depth k (cols forward, rows backward) uses the
// merged weight W' = W + scale·B·A: one product where the unmerged form takes two, the second of depth r rewriting
// the whole output (y, or dx backward: n values per unit of the other dimension), against merging once per pass,
// over rows·cols values and, for a float32 weight, a copy too. That pays from n ≈ 2k rows (a batch of 8 × 256
// tokens against a small model's widths); a weight that is decoded anyway merges at no extra pass. Dropout
// keeps the unmerged form, whose update sees the dropped input.
func (l *loraLinear) merges(n, k int) bool {
	return !l.dropping() && (l.w.f32 == nil || n >= 2*k)
}

// merged calls fn on blocks of rows of W + scale·B·A (the active ranks), decoded into buf. The block is the whole
// weight when it is stored in float32 (then copied, not decoded), as frozenForward takes it in one product.
func (l *loraLinear) merged(buf *[]float32, fn func(r0, nr int, wb []float32)) {
	w := l.w
	rows := w.blockRows()
	if w.f32 != nil {
		rows = w.rows
	}
	w.blocksOf(rows, buf, func(r0, nr int, wb []float32) {
		kernels.Sgemm(false, false, nr, w.cols, l.active, l.scale, l.b[r0*l.rank:], l.rank, l.a, w.cols, 1, wb,
			w.cols)
		fn(r0, nr, wb)
	})
}

// backward adds to dx, da and db (their first active ranks). With g = scale·dy·B (n×active): dB += scale·dyᵀ·h,
// dA += gᵀ·x, dx += dy·W + g·A, which is dy·W' with the merged weight (see merges); with dropout, x is the
// dropped input and g·A goes through the same mask. tmp holds n·active values.
func (l *loraLinear) backward(dx, dy, x, h, tmp []float32, n int, buf *[]float32) {
	rows, cols, r := l.w.rows, l.w.cols, l.active
	g := tmp[:n*r]
	kernels.Sgemm(false, false, n, r, rows, l.scale, dy, rows, l.b, l.rank, 0, g, r)
	kernels.Sgemm(true, false, rows, r, n, l.scale, dy, rows, h, r, 1, l.db, l.rank)
	if l.dropping() {
		// The dropped input is rebuilt from the mask rather than kept: one buffer serves every projection.
		xd := l.drop.buf[:n*cols]
		l.drop.apply(xd, x, l.site, n, cols, false)
		kernels.Sgemm(true, false, r, cols, n, 1, g, r, xd, cols, 1, l.da, cols)
		kernels.Sgemm(false, false, n, cols, r, 1, g, r, l.a, cols, 0, xd, cols)
		l.drop.apply(dx, xd, l.site, n, cols, true)
		frozenBackward(l.w, dx, dy, n, buf)
		return
	}
	kernels.Sgemm(true, false, r, cols, n, 1, g, r, x, cols, 1, l.da, cols)
	if l.merges(n, rows) {
		l.merged(buf, func(r0, nr int, wb []float32) {
			kernels.Sgemm(false, false, n, cols, nr, 1, dy[r0:], rows, wb, cols, 1, dx, cols)
		})
		return
	}
	kernels.Sgemm(false, false, n, cols, r, 1, g, r, l.a, cols, 1, dx, cols)
	frozenBackward(l.w, dx, dy, n, buf)
}
