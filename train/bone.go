package train

import (
	"fmt"

	"github.com/lathe-ml/lathe/internal/kernels"
)

// MethodBone (J. Kang, "Bone: Block-Affine Adaptation of Large Language Models", arXiv 2409.15371; PEFT's
// BoneConfig) cuts each weight into shards of b columns that all share one trainable block, initialised to zero.
// PEFT's two structures are both here, chosen by init_weights as in BoneConfig:
//   - bone (PEFT's default, init_weights=True): the out×in weight's columns go in groups of b, and every group gets
//     the same b×out block added: ΔW[o][c] = D[c mod b][o] (D is b×out; a last partial group takes D's first rows).
//   - bat, Block Affine Transformation: the weight is cut into b×b blocks W_ij; row block i has its own b×b
//     matrix D_i, shared by the blocks of that row, and ΔW_ij = W_ij·D_i + D_i — the update is guided by the
//     weight itself, and full-rank. Both dimensions must be multiples of b. Rows are blocked in the order the
//     model holds them: on a GGUF model, q_proj and k_proj rows are in llama.cpp's rotary order, so their blocks
//     differ from those PEFT forms on the Hugging Face checkpoint.
//
// Both train out·b values. The method writes a merged model: bat's update is full-rank; bone's is of rank ≤ b
// (Dᵀ times b×b identities side by side), but one method has one kind of output.
const MethodBone = "bone"

func init() {
	registerMethod(MethodBone, methodSpec{
		summary: "Bone: one zero-initialised block shared by every shard of b columns (bat: W-guided; writes a merged model)",
		args:    map[string]string{"r": "0", "init_weights": "bone"},
		dense:   true,
		build: func(cfg LoRAConfig, args methodArgs) (method, error) {
			b := args.Int("r", 0)
			if b == 0 {
				b = cfg.Rank
			}
			return boneMethod{b: b, bat: args.String("init_weights", "bone", "bat") == "bat"}, nil
		},
	})
}

type boneMethod struct {
	b   int // PEFT's r: the shard (block) size
	bat bool
}

func (m boneMethod) project(s site) (projection, error) {
	w, b := s.w, m.b
	if m.bat {
		if w.rows%b != 0 || w.cols%b != 0 {
			return nil, fmt.Errorf("bat blocks of %d×%d do not tile the %d×%d weight (method argument r)", b, b,
				w.rows, w.cols)
		}
		return &batLinear{w: w, b: b, d: make([]float32, w.rows*b), dd: make([]float32, w.rows*b)}, nil
	}
	if b > w.cols {
		return nil, fmt.Errorf("shards of %d columns are wider than the weight's %d (method argument r)", b, w.cols)
	}
	return &boneLinear{w: w, b: b, d: make([]float32, b*w.rows), dd: make([]float32, b*w.rows),
		sum: make([]float32, s.rows*b), g: make([]float32, s.rows*b)}, nil
}

// boneLinear is the bone structure: y = x·Wᵀ + S·D, where S (n×b) sums each row of x over its column groups
// (PEFT pads x with zeros to whole groups).
type boneLinear struct {
	w      *matrix
	b      int
	d, dd  []float32 // D, b×rows, and its gradient
	sum, g []float32 // S of the last forward, and backward's scratch dy·Dᵀ: rows·b values each
}

func (p *boneLinear) forward(y, x []float32, n int, buf *[]float32) {
	cols, b := p.w.cols, p.b
	s := p.sum[:n*b]
	clear(s)
	for i := range n {
		row, si := x[i*cols:(i+1)*cols], s[i*b:(i+1)*b]
		for c0 := 0; c0 < cols; c0 += b {
			kernels.Axpy(1, row[c0:min(c0+b, cols)], si)
		}
	}
	frozenForward(p.w, y, x, n, buf)
	kernels.Sgemm(false, false, n, p.w.rows, b, 1, s, b, p.d, p.w.rows, 1, y, p.w.rows)
}

// backward: dD += Sᵀ·dy; every column group of dx gets G = dy·Dᵀ.
func (p *boneLinear) backward(dx, dy, x []float32, n int, buf *[]float32) {
	rows, cols, b := p.w.rows, p.w.cols, p.b
	kernels.Sgemm(true, false, b, rows, n, 1, p.sum, b, dy, rows, 1, p.dd, rows)
	g := p.g[:n*b]
	kernels.Sgemm(false, true, n, b, rows, 1, dy, rows, p.d, rows, 0, g, b)
	for i := range n {
		row, gi := dx[i*cols:(i+1)*cols], g[i*b:(i+1)*b]
		for c0 := 0; c0 < cols; c0 += b {
			kernels.Axpy(1, gi[:min(b, cols-c0)], row[c0:])
		}
	}
	frozenBackward(p.w, dx, dy, n, buf)
}

func (p *boneLinear) params() ([][]float32, [][]float32) { return [][]float32{p.d}, [][]float32{p.dd} }

// delta is ΔW[o][c] = D[c mod b][o].
func (p *boneLinear) delta(dst []float32) {
	rows, cols := p.w.rows, p.w.cols
	for o := range rows {
		for c := range cols {
			dst[o*cols+c] = p.d[(c%p.b)*rows+o]
		}
	}
}

// batLinear is the bat structure: y = x·W'ᵀ with W'_ij = W_ij·(I + D_i) + D_i, W' formed in the shared decode
// buffer for each pass (2·rows·cols values), so that only D is kept.
type batLinear struct {
	w     *matrix
	b     int
	d, dd []float32 // D_i, row block after row block: (rows/b)·b·b values, and the gradient
}

// decodeAll writes the whole weight as float32 into dst.
func (p *batLinear) decodeAll(dst []float32) {
	w := p.w
	parallel(w.rows, func(lo, hi int) {
		_ = w.decodeRows(dst[lo*w.cols:hi*w.cols], lo, hi-lo) // the type was checked by loadMatrix
	})
}

// affine sets dst = W·D + D blockwise (plus W when addW), from the decoded weight wf. A row block of the
// row-major weight, b×cols, read with leading dimension b is the (cols×b) stack of its blocks' rows, so one product
// per row block gives all of its W_ij·D_i in the same layout; tmp holds rows·cols values. dst may be wf.
func (p *batLinear) affine(dst, wf, tmp []float32, addW bool) {
	rows, cols, b := p.w.rows, p.w.cols, p.b
	parallel(rows/b, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			o := i * b * cols
			ws, ts, ds, di := wf[o:o+b*cols], tmp[o:o+b*cols], dst[o:o+b*cols], p.d[i*b*b:(i+1)*b*b]
			kernels.SgemmSerial(false, false, cols, b, b, 1, ws, b, di, b, 0, ts, b)
			for k := range ds {
				v := ts[k] + di[(k/cols)*b+k%b]
				if addW {
					v += ws[k]
				}
				ds[k] = v
			}
		}
	})
}

func (p *batLinear) forward(y, x []float32, n int, buf *[]float32) {
	rc := p.w.rows * p.w.cols
	*buf = grow(*buf, 2*rc)
	wf, tmp := (*buf)[:rc], (*buf)[rc:2*rc]
	p.decodeAll(wf)
	p.affine(wf, wf, tmp, true)
	kernels.Sgemm(false, true, n, p.w.rows, p.w.cols, 1, x, p.w.cols, wf, p.w.cols, 0, y, p.w.rows)
}

// backward: with G = dyᵀ·x the gradient of W', dD_i += Σ_j W_ijᵀ·G_ij + Σ_j G_ij, and dx += dy·W'.
func (p *batLinear) backward(dx, dy, x []float32, n int, buf *[]float32) {
	rows, cols, b := p.w.rows, p.w.cols, p.b
	rc := rows * cols
	*buf = grow(*buf, 2*rc)
	wf, gw := (*buf)[:rc], (*buf)[rc:2*rc]
	p.decodeAll(wf)
	kernels.Sgemm(true, false, rows, cols, n, 1, dy, rows, x, cols, 0, gw, cols)
	parallel(rows/b, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			o := i * b * cols
			ws, gs, dd := wf[o:o+b*cols], gw[o:o+b*cols], p.dd[i*b*b:(i+1)*b*b]
			kernels.SgemmSerial(true, false, b, b, cols, 1, ws, b, gs, b, 1, dd, b)
			for k, g := range gs {
				dd[(k/cols)*b+k%b] += g
			}
		}
	})
	p.affine(wf, wf, gw, true)
	kernels.Sgemm(false, false, n, cols, rows, 1, dy, rows, wf, cols, 1, dx, cols)
}

func (p *batLinear) params() ([][]float32, [][]float32) { return [][]float32{p.d}, [][]float32{p.dd} }

func (p *batLinear) delta(dst []float32) {
	wf := make([]float32, 2*len(dst))
	p.decodeAll(wf[:len(dst)])
	p.affine(dst, wf[:len(dst)], wf[len(dst):], false)
}
