package kernels

import (
	"sync/atomic"
	"unsafe"
)

// Skinny products: C with at most skinnyWidth columns (A·B with B k×8: a LoRA down-projection x·Aᵀ, the gradient
// dy·B). The packed GEMM would copy all of A into micro-panels (a transpose, unless A is stored transposed) to
// use it for 8 columns of output, and run a 12×32 micro-kernel on 8 useful columns: for these shapes packing
// costs as much as the arithmetic. Here A is read in place, and only B (k×8 values) is repacked. (C with at most
// 8 rows, such as the LoRA weight gradient gᵀ·x, stays on the packed path: packing B is a plain copy there, and
// the 12×32 kernel on 8 of its rows still beats the 8×8 tile on AVX-512.)
//
// The tile kernel adds to an 8×8 tile t[r][0:8] the sum Σ_p x[p·xs + r·xr] · y[p·ys + 0:8]: broadcasts from
// eight strided streams of x against one row of packed B per step. x is eight rows of A (xr = lda, xs = 1) or,
// when A is stored transposed, eight of its columns (xr = 1, xs = lda). The latter reads A 32 bytes per row, one
// row after another: going through all k rows for one tile before the next would miss the cache (and the TLB) on
// every row, so a thread takes a group of tiles and runs them side by side, skinnyDepth rows of A at a time.

// skinnyWidth is the largest narrow dimension the skinny path takes.
const skinnyWidth = 8

// tileKernel adds k steps to one full 8×8 tile t (row-major, stride 8); k > 0.
type tileKernel[T float] func(k int, x *T, xr, xs int, y *T, ys int, t *T)

// skinnyTileGo is the portable tile for rows×cols ≤ 8×8, reading only those rows of x and columns of y.
func skinnyTileGo[T float](k int, x []T, xr, xs int, y []T, ys int, t []T, rows, cols int) {
	for r := 0; r < rows; r++ {
		tr := t[r*8 : r*8+cols]
		for p := 0; p < k; p++ {
			xv := x[p*xs+r*xr]
			for j, v := range y[p*ys : p*ys+cols] {
				tr[j] += xv * v
			}
		}
	}
}

// tileGo is the portable tileKernel: skinnyTileGo on a full tile.
func tileGo[T float](k int, x *T, xr, xs int, y *T, ys int, t *T) {
	skinnyTileGo(k, unsafe.Slice(x, (k-1)*xs+7*xr+1), xr, xs, unsafe.Slice(y, (k-1)*ys+8), ys, unsafe.Slice(t, 64),
		8, 8)
}

// skinnyJob is one skinny call; it lives in a sync.Pool with its buffers.
type skinnyJob[T float] struct {
	im            *gemmImpl[T]
	transA        bool
	m, n, k       int
	alpha, beta   T
	a, b, c       []T
	lda, ldb, ldc int
	narrow        []T // op(B) packed k×8, zero-padded
	acc           []T // 8×8 accumulators, one per block of 8 rows of C
	next          atomic.Int32
	units, group  int // tiles, and tiles per claim
}

// skinnyGroup is the most tiles a thread claims at a time (fewer when that would leave a thread without about four
// claims), and skinnyDepth how many steps of k it runs on each before going to the next: with A transposed, a
// group spans 512 bytes of each row of A, and skinnyDepth rows of that (16 KiB) stay in L1 while the group's tiles
// go through them. Neither changes the order in which a tile sums its k products.
const (
	skinnyGroup = 16
	skinnyDepth = 32
)

// skinny runs C = alpha·op(A)·op(B) + beta·C on the skinny path, on at most maxThreads threads, and reports whether
// the shape suits it: n ≤ 8 and m ≥ n. alpha ≠ 0 and k > 0.
func skinny[T float](im *gemmImpl[T], maxThreads int, transA, transB bool, m, n, k int, alpha T, a []T, lda int,
	b []T, ldb int, beta T, c []T, ldc int) bool {
	if im.tile == nil || n > skinnyWidth || m < n {
		return false
	}
	j, _ := im.skinnyJobs.Get().(*skinnyJob[T])
	if j == nil {
		j = &skinnyJob[T]{im: im}
	}
	j.transA, j.m, j.n, j.k, j.alpha, j.beta = transA, m, n, k, alpha, beta
	j.a, j.b, j.c, j.lda, j.ldb, j.ldc = a, b, c, lda, ldb, ldc
	j.narrow = grow(j.narrow, 8*k)
	j.next.Store(0)
	for p := 0; p < k; p++ {
		row := j.narrow[p*8 : p*8+8]
		clear(row)
		for jj := 0; jj < n; jj++ {
			if transB {
				row[jj] = b[jj*ldb+p]
			} else {
				row[jj] = b[p*ldb+jj]
			}
		}
	}
	j.units = ceilDiv(m, 8)
	j.acc = grow(j.acc, 64*j.units)
	threads := 1
	if float64(m)*float64(n)*float64(k) >= parallelMin {
		threads = pool.acquire(min(maxThreads, j.units))
	}
	j.group = min(skinnyGroup, max(1, j.units/(4*threads)))
	if threads > 1 {
		pool.runOn(j, threads)
		pool.release()
	} else {
		j.run(0)
	}
	j.a, j.b, j.c = nil, nil, nil
	im.skinnyJobs.Put(j)
	return true
}

// run claims groups of tiles and computes them, each tile by one thread from start to end, so the result does not
// depend on the thread count.
func (j *skinnyJob[T]) run(int) {
	for {
		u0 := int(j.next.Add(1)-1) * j.group
		if u0 >= j.units {
			return
		}
		u1 := min(u0+j.group, j.units)
		clear(j.acc[64*u0 : 64*u1])
		for p0 := 0; p0 < j.k; p0 += skinnyDepth {
			for u := u0; u < u1; u++ {
				j.tile(u, p0, min(skinnyDepth, j.k-p0))
			}
		}
		for u := u0; u < u1; u++ {
			mergeTile(j.c[u*8*j.ldc:], j.ldc, j.acc[64*u:64*u+64], 8, min(8, j.m-u*8), j.n, j.alpha, j.beta)
		}
	}
}

// tile adds steps p0…p0+kc of tile u (rows 8u… of C) to its accumulator.
func (j *skinnyJob[T]) tile(u, p0, kc int) {
	i0, rows := u*8, min(8, j.m-u*8)
	var x []T
	xr, xs := j.lda, 1
	if j.transA {
		x, xr, xs = j.a[p0*j.lda+i0:], 1, j.lda
	} else {
		x = j.a[i0*j.lda+p0:]
	}
	y := j.narrow[p0*8:]
	t := j.acc[64*u : 64*u+64]
	// The assembly tile reads 8 full rows of x: only whole blocks of 8 rows qualify.
	if rows == 8 {
		j.im.tile(kc, &x[0], xr, xs, &y[0], 8, &t[0])
	} else {
		skinnyTileGo(kc, x, xr, xs, y, 8, t, rows, j.n)
	}
}
