package kernels

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

type float interface{ ~float32 | ~float64 }

// microKernel computes one mr×nr tile: C = alpha·(Ap·Bp) + beta·C, where Ap holds k steps of mr values (one per
// row of the tile) and Bp k steps of nr values; C is row-major with stride ldc and is not read when beta == 0.
type microKernel[T float] func(k int, a, b, c *T, ldc int, alpha, beta T)

// directKernel is a microKernel that reads A in place: mr rows of a row-major matrix with stride lda, k values
// each, instead of a packed micro-panel. It must compute exactly what the packed kernel computes.
type directKernel[T float] func(k int, a *T, lda int, b, c *T, ldc int, alpha, beta T)

// gemmImpl is one micro-kernel with the block sizes that suit it (Goto and van de Geijn, "Anatomy of
// high-performance matrix multiplication", 2008; BLIS's loop order). The packed A micro-panel (mr×kc) stays in
// L1 while the kernel sweeps the B block (kc×nc, in L2, private to each thread); the A panel (mc×kc) is shared by
// all threads and lives in L3.
type gemmImpl[T float] struct {
	name   string
	mr, nr int
	kc     int // depth of one packed block
	mc     int // rows of the shared packed A panel
	nc     int // columns of one per-thread packed B block
	// wholeB is the largest packed B (bytes) that row mode keeps whole when B is too wide for its narrow case:
	// about half of L2. Zero leaves row mode to narrow B alone.
	wholeB int
	micro  microKernel[T]
	// direct, when set, multiplies full-height tiles straight from op(A) = A (not transposed), whose rows are
	// contiguous: the A panel is then not packed, apart from a last micro-panel shorter than mr. Packing A costs
	// about 5 % of a training-shape product, and the packed panel, written half by each core, is read by both,
	// so the first unit of every iteration waits on lines in the other core's cache. A transposed A keeps the
	// packing: in place, each k step of a micro-panel would sit in a different row of memory (a new line and,
	// for wide matrices, a new page per step).
	direct directKernel[T]
	// portable makes the packing loops pure Go too, so this implementation is exactly what a noasm build runs.
	portable bool
	jobs     sync.Pool // *gemmJob[T] with their packing buffers, reused across calls
	// tile, when set, enables the skinny path (skinny.go) for products with at most 8 rows or columns.
	tile       tileKernel[T]
	skinnyJobs sync.Pool // *skinnyJob[T]
}

// directMaxN is the widest product whose A is read in place by gemmImpl.direct.
const directMaxN = 768

// parallelMin is the m·n·k below which a GEMM runs on the calling goroutine alone: waking a helper costs a few
// microseconds, about what 2·64³ flops take on one AVX-512 core.
const parallelMin = 1 << 18

// Sgemm computes C = alpha·op(A)·op(B) + beta·C for row-major float32 matrices, where op(X) is X or Xᵀ, op(A) is
// m×k, op(B) is k×n and C is m×n. A is stored m×k (transA false) or k×m (transA true) with row stride lda, and B
// k×n or n×k with stride ldb, as in the CBLAS row-major interface. When beta is zero C is only written, so NaNs
// in it do not propagate; when alpha is zero or k is zero A and B are not read.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int,
	beta float32, c []float32, ldc int) {
	gemm(sgemmImpl, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// SgemmSerial is Sgemm on the calling goroutine alone, for callers that already keep every core busy with
// products of their own (attention heads side by side): waking the pool's helpers there would put three threads
// on two cores, with the GEMM's threads waiting on each other. The result is bit-identical to Sgemm's.
func SgemmSerial(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int,
	beta float32, c []float32, ldc int) {
	gemmOn(sgemmImpl, 1, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// Dgemm is Sgemm for float64.
func Dgemm(transA, transB bool, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int,
	beta float64, c []float64, ldc int) {
	gemm(dgemmImpl, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func gemm[T float](im *gemmImpl[T], transA, transB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int,
	beta T, c []T, ldc int) {
	gemmOn(im, Threads(), transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// gemmOn is gemm on at most maxThreads threads.
func gemmOn[T float](im *gemmImpl[T], maxThreads int, transA, transB bool, m, n, k int, alpha T, a []T, lda int,
	b []T, ldb int, beta T, c []T, ldc int) {
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("kernels: gemm: negative dimension m=%d n=%d k=%d", m, n, k))
	}
	checkMatrix("A", a, ar, ac, lda)
	checkMatrix("B", b, br, bc, ldb)
	checkMatrix("C", c, m, n, ldc)
	if m == 0 || n == 0 {
		return
	}
	if alpha == 0 || k == 0 {
		scaleMatrix(c, m, n, ldc, beta)
		return
	}

	if skinny(im, maxThreads, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
		return
	}
	threads := 1
	if float64(m)*float64(n)*float64(k) >= parallelMin { // float64: the product overflows int on 32-bit targets
		threads = pool.acquire(maxThreads)
	}
	j := im.job(threads)
	j.transA, j.transB = transA, transB
	j.m, j.n, j.k = m, n, k
	j.alpha, j.beta = alpha, beta
	j.a, j.lda, j.b, j.ldb, j.c, j.ldc = a, lda, b, ldb, c, ldc
	j.plan(threads)
	if threads > 1 {
		pool.runOn(j, threads)
		pool.release()
	} else {
		j.run(0)
	}
	j.a, j.b, j.c = nil, nil, nil // do not keep caller memory alive from the pool
	im.jobs.Put(j)
}

// checkMatrix panics unless x holds a rows×cols row-major matrix with stride ld.
func checkMatrix[T float](name string, x []T, rows, cols, ld int) {
	if ld < max(1, cols) {
		panic(fmt.Sprintf("kernels: leading dimension of %s is %d, want >= %d", name, ld, max(1, cols)))
	}
	if rows > 0 && cols > 0 && (rows-1 > (math.MaxInt-cols)/ld || len(x) < (rows-1)*ld+cols) {
		panic(fmt.Sprintf("kernels: %s has %d elements, too few for a %d×%d matrix with stride %d",
			name, len(x), rows, cols, ld))
	}
}

// scaleMatrix sets C = beta·C, writing zeros (not 0·NaN) when beta is zero.
func scaleMatrix[T float](c []T, m, n, ldc int, beta T) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		switch beta {
		case 1:
		case 0:
			clear(row)
		default:
			for j := range row {
				row[j] *= beta
			}
		}
	}
}

// gemmJob is one GEMM call's plan plus the packing buffers, which survive in im.jobs between calls.
type gemmJob[T float] struct {
	im             *gemmImpl[T]
	transA, transB bool
	m, n, k        int
	alpha, beta    T
	a, b, c        []T
	lda, ldb, ldc  int

	kc, mc  int  // block sizes for this shape, balanced so that the last block is not a sliver
	directA bool // full A micro-panels are read in place by im.direct; only a short last one is packed
	rowMode bool // units split the A micro-panels (B is narrow) instead of the columns
	ustep   int  // columns (column mode) or A micro-panels (row mode) per unit of work
	nc      int  // row mode: columns of one packed B block

	apanel [2][]T // shared packed A panel, double-buffered so threads can pack the next one while others compute
	bblock [][]T  // per-thread packed B block
	tile   [][]T  // per-thread mr×nr scratch for edge tiles

	iters    []iterState    // one per (row panel, depth block) iteration
	unitLast []atomic.Int32 // the last iteration in which each unit of work was completed
}

// iterState hands out the packing chunks and the units of work of one iteration to whichever thread asks first,
// so a thread slowed by another process on its core simply takes fewer of them. There is no barrier: a thread
// that runs out of units moves on to packing the next A panel. Three waits keep this correct: computing needs the
// whole A panel packed; a unit needs the same unit (the same C tiles) finished in the previous iteration, so each
// C element is still accumulated block after block in order; and packing into a buffer needs the iteration that
// last used it finished. Every wait points to an earlier iteration, so none can deadlock. Which thread computes a
// tile never changes how the tile is computed.
type iterState struct {
	packNext, packDone, unitNext, unitDone atomic.Int32
	units                                  int // set by plan before the threads start
}

// spinUntil waits for another thread's progress: normally microseconds, so it spins with yields, then backs off to
// short sleeps when a partner has lost its core to another process.
func spinUntil(done func() bool) {
	for spins := 0; !done(); spins++ {
		switch {
		case spins > 1<<12:
			time.Sleep(20 * time.Microsecond)
		case spins > 64:
			runtime.Gosched()
		}
	}
}

// packChunk is how many A micro-panels one packing claim covers.
const packChunk = 4

func (im *gemmImpl[T]) job(threads int) *gemmJob[T] {
	j, _ := im.jobs.Get().(*gemmJob[T])
	if j == nil {
		j = &gemmJob[T]{im: im}
	}
	for len(j.bblock) < threads {
		j.bblock = append(j.bblock, nil)
		j.tile = append(j.tile, make([]T, im.mr*im.nr))
	}
	return j
}

// plan picks block sizes and the unit of work for the shape and sizes the buffers.
func (j *gemmJob[T]) plan(threads int) {
	im := j.im
	j.kc = balance(j.k, im.kc, 1)
	j.mc = balance(j.m, im.mc, im.mr)
	// Packing A costs the same whatever n is, so it weighs most on narrow products; reading A in place is a little
	// slower per flop (mr row streams instead of one), and much slower when rows sit a multiple of 4 KiB apart,
	// all in one L1 set. Measured with per-call alternation on 2 threads: 1.02–1.11× for n ≤ 768, 0.99 at n = 1536,
	// 0.91–0.95 for the 1024² and 2048² squares (rows 4 and 8 KiB apart).
	j.directA = im.direct != nil && !j.transA && j.n <= directMaxN && j.lda*int(unsafe.Sizeof(T(0)))%4096 != 0
	// Units of columns let every thread share one packed A panel and pack only its own B blocks. About four
	// units per thread balance the load; when B has too few column panels for that, the units split the A
	// micro-panels instead and each thread packs all of the (narrow) B.
	npn := ceilDiv(j.n, im.nr)
	colUnits := ceilDiv(j.n, im.nc)
	if threads > 1 {
		colUnits = max(colUnits, min(npn, 4*threads))
	}
	// When all of B fits in about half of L2 and the A panel does not, row mode wins too: each thread packs the
	// whole B once per depth block, and every A micro-panel, loaded into L1 once, meets all of it. Split by
	// columns, a narrow B (the 256–1024 outputs of a small model's projections, against thousands of tokens) would
	// make every unit stream the whole A panel from L3 against one or two B micro-panels. With a small A panel
	// the columns split stays: A stays in L2 anyway, and each thread packs only its part of B.
	size := int(unsafe.Sizeof(T(0)))
	wholeB := j.kc*roundUp(j.n, im.nr)*size <= im.wholeB && j.mc*j.kc*size > im.wholeB
	j.rowMode = threads > 1 && (npn < 2*threads || wholeB) && ceilDiv(j.mc, im.mr) > npn
	bcols := 0
	if j.rowMode {
		j.ustep = ceilDiv(ceilDiv(j.mc, im.mr), 4*threads)
		j.nc = roundUp(im.nc, im.nr)
		if wholeB {
			j.nc = roundUp(j.n, im.nr)
		}
		bcols = min(roundUp(j.n, im.nr), j.nc)
	} else {
		j.ustep = roundUp(ceilDiv(j.n, colUnits), im.nr)
		bcols = j.ustep
	}
	iters := ceilDiv(j.m, j.mc) * ceilDiv(j.k, j.kc)
	if cap(j.iters) < iters {
		j.iters = make([]iterState, iters)
	}
	j.iters = j.iters[:iters]
	for i := range j.iters {
		st := &j.iters[i]
		st.packNext.Store(0)
		st.packDone.Store(0)
		st.unitNext.Store(0)
		st.unitDone.Store(0)
		ic := i / ceilDiv(j.k, j.kc) * j.mc
		st.units = j.units(ceilDiv(min(j.mc, j.m-ic), im.mr))
	}
	if cap(j.unitLast) < j.iters[0].units {
		j.unitLast = make([]atomic.Int32, j.iters[0].units)
	}
	j.unitLast = j.unitLast[:j.iters[0].units]
	for i := range j.unitLast {
		j.unitLast[i].Store(-1)
	}

	asize := ceilDiv(j.mc, im.mr) * im.mr * j.kc
	for i := range j.apanel {
		j.apanel[i] = grow(j.apanel[i], asize)
	}
	for i := 0; i < threads; i++ {
		j.bblock[i] = grow(j.bblock[i], bcols*j.kc)
	}
}

// units is the number of units of work in an iteration whose row panel has npm A micro-panels.
func (j *gemmJob[T]) units(npm int) int {
	if j.rowMode {
		return ceilDiv(npm, j.ustep)
	}
	return ceilDiv(j.n, j.ustep)
}

// balance splits n into blocks of at most about size (a multiple of unit) of near-equal length.
func balance(n, size, unit int) int {
	blocks := ceilDiv(n, size)
	return roundUp(ceilDiv(n, blocks), unit)
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }
func roundUp(a, b int) int { return ceilDiv(a, b) * b }

func grow[T float](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// run is one thread's part of the five-loop GEMM. The iterations are (row panel of mc rows) × (depth block of kc);
// in each the threads pack the shared A panel in chunks, then claim units of work (a range of columns, or of A
// micro-panels when B is narrow). Inside a unit, B is packed in blocks of up to nc columns and swept by the
// micro-kernel, A micro-panel outer, B micro-panel inner. See iterState for how threads overlap iterations.
func (j *gemmJob[T]) run(tid int) {
	im := j.im
	mr := im.mr
	i := 0
	for ic := 0; ic < j.m; ic += j.mc {
		mc := min(j.mc, j.m-ic)
		npm := ceilDiv(mc, mr)
		first := 0 // the first A micro-panel to pack
		if j.directA {
			first = mc / mr
		}
		chunks := ceilDiv(npm-first, packChunk)
		for pc := 0; pc < j.k; pc += j.kc {
			kc := min(j.kc, j.k-pc)
			st := &j.iters[i]
			ap := j.apanel[i&1]
			if i >= 2 {
				old := &j.iters[i-2] // the last iteration that used this A buffer
				spinUntil(func() bool { return int(old.unitDone.Load()) == old.units })
			}
			for {
				q := first + int(st.packNext.Add(1)-1)*packChunk
				if q >= npm {
					break
				}
				im.packA(ap, j.a, j.lda, j.transA, ic, pc, mc, kc, q, min(q+packChunk, npm))
				st.packDone.Add(1)
			}
			spinUntil(func() bool { return int(st.packDone.Load()) == chunks })

			beta := j.beta
			if pc > 0 {
				beta = 1
			}
			packed := false // row mode: this thread's B block already holds all of this iteration's columns
			for {
				u := int(st.unitNext.Add(1) - 1)
				if u >= st.units {
					break
				}
				if i > 0 {
					last := &j.unitLast[u]
					spinUntil(func() bool { return int(last.Load()) >= i-1 })
				}
				if j.rowMode {
					p0 := u * j.ustep
					for jc := 0; jc < j.n; jc += j.nc {
						ncur := min(j.nc, j.n-jc)
						if !packed {
							im.packB(j.bblock[tid], j.b, j.ldb, j.transB, pc, jc, kc, ncur)
							packed = ncur == j.n
						}
						j.sweep(tid, ap, ic, mc, p0, min(p0+j.ustep, npm), pc, jc, ncur, kc, beta)
					}
				} else {
					jc := u * j.ustep
					ncur := min(j.ustep, j.n-jc)
					im.packB(j.bblock[tid], j.b, j.ldb, j.transB, pc, jc, kc, ncur)
					j.sweep(tid, ap, ic, mc, 0, npm, pc, jc, ncur, kc, beta)
				}
				j.unitLast[u].Store(int32(i))
				st.unitDone.Add(1)
			}
			i++
		}
	}
}

// sweep multiplies A micro-panels p0..p1 of the packed panel ap (rows ic…ic+mc and depth pc…pc+kc of op(A)) by
// this thread's packed B block (columns jc…jc+ncur) into C. With directA, full micro-panels come from A itself.
func (j *gemmJob[T]) sweep(tid int, ap []T, ic, mc, p0, p1, pc, jc, ncur, kc int, beta T) {
	im := j.im
	mr, nr := im.mr, im.nr
	bp := j.bblock[tid]
	for ir := p0; ir < p1; ir++ {
		rows := min(mr, mc-ir*mr)
		direct := j.directA && rows == mr
		apanel := &ap[ir*mr*kc]
		if direct {
			apanel = &j.a[(ic+ir*mr)*j.lda+pc]
		}
		tile := func(b, c *T, ldc int, alpha, beta T) {
			if direct {
				im.direct(kc, apanel, j.lda, b, c, ldc, alpha, beta)
			} else {
				im.micro(kc, apanel, b, c, ldc, alpha, beta)
			}
		}
		ci := (ic+ir*mr)*j.ldc + jc
		for jr := 0; jr < ncur; jr += nr {
			cols := min(nr, ncur-jr)
			bpanel := &bp[jr*kc]
			if rows == mr && cols == nr {
				tile(bpanel, &j.c[ci+jr], j.ldc, j.alpha, beta)
				continue
			}
			t := j.tile[tid]
			tile(bpanel, &t[0], nr, 1, 0)
			mergeTile(j.c[ci+jr:], j.ldc, t, nr, rows, cols, j.alpha, beta)
		}
	}
}

// mergeTile writes the rows×cols corner of an edge tile t (stride ldt) into C as alpha·t + beta·C.
func mergeTile[T float](c []T, ldc int, t []T, ldt, rows, cols int, alpha, beta T) {
	for i := 0; i < rows; i++ {
		cr := c[i*ldc : i*ldc+cols]
		tr := t[i*ldt : i*ldt+cols]
		if beta == 0 {
			for j, v := range tr {
				cr[j] = alpha * v
			}
			continue
		}
		for j, v := range tr {
			cr[j] = alpha*v + beta*cr[j]
		}
	}
}

// packA copies micro-panels lo..hi of the mc×kc block of op(A) at (i0, p0) into dst: panel q holds rows
// i0+q·mr … as kc steps of mr values, zero-padded past the last row.
func (im *gemmImpl[T]) packA(dst, a []T, lda int, trans bool, i0, p0, mc, kc, lo, hi int) {
	mr := im.mr
	for q := lo; q < hi; q++ {
		r0 := i0 + q*mr
		rows := min(mr, i0+mc-r0)
		d := dst[q*mr*kc : (q+1)*mr*kc]
		if trans {
			// op(A)[i][p] = a[p*lda+i]: each step is a contiguous run of a stored row.
			im.copyPanel(d, a[p0*lda+r0:], lda, mr, rows, kc)
		} else {
			im.transposePanel(d, a[r0*lda+p0:], lda, mr, rows, kc)
		}
	}
}

// packB copies the kc×nc block of op(B) at (p0, j0) into dst as micro-panels of nr columns: panel q holds kc
// steps of nr values, zero-padded past the last column.
func (im *gemmImpl[T]) packB(dst, b []T, ldb int, trans bool, p0, j0, kc, nc int) {
	nr := im.nr
	for q := 0; q*nr < nc; q++ {
		c0 := j0 + q*nr
		cols := min(nr, j0+nc-c0)
		d := dst[q*nr*kc : (q+1)*nr*kc]
		if trans {
			// op(B)[p][j] = b[j*ldb+p]: the panel is a transpose of cols stored rows.
			im.transposePanel(d, b[c0*ldb+p0:], ldb, nr, cols, kc)
		} else {
			im.copyPanel(d, b[p0*ldb+c0:], ldb, nr, cols, kc)
		}
	}
}

// copyPanel sets d[p*w+r] = s[p*ld+r] for p < k, r < n, and zeroes lanes n..w-1.
func (im *gemmImpl[T]) copyPanel(d, s []T, ld, w, n, k int) {
	d = d[:w*k]
	if k == 0 {
		return
	}
	_ = s[(k-1)*ld+n-1]
	if n == w && !im.portable && copyRowsFast(d, s, ld, w, k) {
		return
	}
	for p := 0; p < k; p++ {
		copy(d[p*w:p*w+n], s[p*ld:p*ld+n])
		clear(d[p*w+n : (p+1)*w])
	}
}

// transposePanel sets d[p*w+r] = s[r*ld+p] for r < n, p < k, and zeroes lanes n..w-1.
func (im *gemmImpl[T]) transposePanel(d, s []T, ld, w, n, k int) {
	d = d[:w*k]
	if k == 0 {
		return
	}
	_ = s[(n-1)*ld+k-1]
	if im.portable {
		transposeRect(d, s, ld, w, 0, n, 0, k)
	} else if n < w || !transposeFast(d, s, ld, w, k) {
		rows, k8 := transposeBlocks32(d, s, ld, w, n, k)
		transposeRect(d, s, ld, w, rows, n, 0, k8)
		transposeRect(d, s, ld, w, 0, n, k8, k)
	}
	if n < w {
		for p := 0; p < k; p++ {
			clear(d[p*w+n : (p+1)*w])
		}
	}
}

// transposeRect sets d[p*w+r] = s[r*ld+p] for r in [r0, r1), p in [p0, p1). Four source rows at a time, so each
// destination line is written in runs rather than one element per visit.
func transposeRect[T float](d, s []T, ld, w, r0, r1, p0, p1 int) {
	if p0 >= p1 {
		return
	}
	r := r0
	for ; r+4 <= r1; r += 4 {
		s0 := s[r*ld+p0 : r*ld+p1]
		s1 := s[(r+1)*ld+p0 : (r+1)*ld+p1]
		s2 := s[(r+2)*ld+p0 : (r+2)*ld+p1]
		s3 := s[(r+3)*ld+p0 : (r+3)*ld+p1]
		for i := range s0 {
			o := d[(p0+i)*w+r : (p0+i)*w+r+4]
			o[0], o[1], o[2], o[3] = s0[i], s1[i], s2[i], s3[i]
		}
	}
	for ; r < r1; r++ {
		for i, v := range s[r*ld+p0 : r*ld+p1] {
			d[(p0+i)*w+r] = v
		}
	}
}
