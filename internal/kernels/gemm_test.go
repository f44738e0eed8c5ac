package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// refGemm computes op(A)·op(B)·alpha + beta·C in float64, together with the magnitude |alpha|·|op(A)|·|op(B)| +
// |beta|·|C| that bounds the rounding error of any float32 evaluation order (Higham, "Accuracy and Stability of
// Numerical Algorithms", §3.5: |error| <= γ_k·|A||B|).
func refGemm[T float](transA, transB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T,
	ldc int) (want, mag []float64) {
	want = make([]float64, m*n)
	mag = make([]float64, m*n)
	// Row i of op(A) and column j of op(B) are copied out once as float64, so that the inner loop is a plain dot
	// product: under the fuzzer's instrumentation a branch per element made the reference the cost of FuzzSgemm.
	ai, bj := make([]float64, k), make([]float64, k*n)
	for j := 0; j < n; j++ {
		for p := 0; p < k; p++ {
			if transB {
				bj[j*k+p] = float64(b[j*ldb+p])
			} else {
				bj[j*k+p] = float64(b[p*ldb+j])
			}
		}
	}
	for i := 0; i < m; i++ {
		for p := 0; p < k; p++ {
			if transA {
				ai[p] = float64(a[p*lda+i])
			} else {
				ai[p] = float64(a[i*lda+p])
			}
		}
		for j := 0; j < n; j++ {
			var s, sa float64
			if alpha != 0 {
				for p, y := range bj[j*k : (j+1)*k] {
					xy := ai[p] * y
					s += xy
					sa += math.Abs(xy)
				}
			}
			w := float64(alpha) * s
			g := math.Abs(float64(alpha)) * sa
			if beta != 0 {
				w += float64(beta) * float64(c[i*ldc+j])
				g += math.Abs(float64(beta) * float64(c[i*ldc+j]))
			}
			want[i*n+j], mag[i*n+j] = w, g
		}
	}
	return want, mag
}

// randMatrix fills a rows×cols matrix with stride ld (ld > cols leaves poisoned gaps that must stay untouched).
func randMatrix[T float](r *rand.Rand, rows, cols, ld int) []T {
	x := make([]T, max(0, (rows-1)*ld+cols))
	for i := range x {
		x[i] = T(gapPoison)
	}
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			x[i*ld+j] = T(r.Float64()*2 - 1)
		}
	}
	return x
}

// gapPoison marks elements between rows of a strided view; a kernel that reads them produces huge errors and one
// that writes them is caught by checkGaps.
const gapPoison = 1e30

type gemmCase struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float64
	pad            int // extra stride beyond the logical row length
}

func (tc gemmCase) String() string {
	return fmt.Sprintf("tA=%v,tB=%v,m=%d,n=%d,k=%d,alpha=%g,beta=%g,pad=%d", tc.transA, tc.transB, tc.m, tc.n,
		tc.k, tc.alpha, tc.beta, tc.pad)
}

// runGemmCase runs one case through impl and checks every element against the float64 reference, the NaN rule
// for beta == 0, and that strided gaps are untouched; it returns C for cross-implementation comparisons.
func runGemmCase[T float](t testing.TB, im *gemmImpl[T], tc gemmCase, seed uint64) []T {
	t.Helper()
	return newGemmRun[T](tc, seed).check(t, im)
}

// gemmRun holds a case's inputs and its float64 reference, so that several implementations can be checked against
// one computation of the reference.
type gemmRun[T float] struct {
	tc            gemmCase
	a, b, c       []T
	lda, ldb, ldc int
	want, mag     []float64
}

func newGemmRun[T float](tc gemmCase, seed uint64) *gemmRun[T] {
	r := rand.New(rand.NewPCG(seed, 7))
	ar, ac := tc.m, tc.k
	if tc.transA {
		ar, ac = tc.k, tc.m
	}
	br, bc := tc.k, tc.n
	if tc.transB {
		br, bc = tc.n, tc.k
	}
	g := &gemmRun[T]{tc: tc, lda: max(1, ac) + tc.pad, ldb: max(1, bc) + tc.pad, ldc: max(1, tc.n) + tc.pad}
	g.a = randMatrix[T](r, ar, ac, g.lda)
	g.b = randMatrix[T](r, br, bc, g.ldb)
	g.c = randMatrix[T](r, tc.m, tc.n, g.ldc)
	if tc.beta == 0 {
		for i := 0; i < tc.m; i++ {
			for j := 0; j < tc.n; j++ {
				g.c[i*g.ldc+j] = T(math.NaN())
			}
		}
	}
	g.want, g.mag = refGemm(tc.transA, tc.transB, tc.m, tc.n, tc.k, T(tc.alpha), g.a, g.lda, g.b, g.ldb, T(tc.beta),
		g.c, g.ldc)
	return g
}

// check runs im on a copy of C and checks the result.
func (g *gemmRun[T]) check(t testing.TB, im *gemmImpl[T]) []T {
	t.Helper()
	tc, a, b, lda, ldb, ldc, want, mag := g.tc, g.a, g.b, g.lda, g.ldb, g.ldc, g.want, g.mag
	c := append([]T(nil), g.c...)
	gemm(im, tc.transA, tc.transB, tc.m, tc.n, tc.k, T(tc.alpha), a, lda, b, ldb, T(tc.beta), c, ldc)

	eps := epsilon[T]()
	out := make([]T, tc.m*tc.n)
	bad := 0
	for i := 0; i < tc.m; i++ {
		for j := 0; j < tc.n; j++ {
			got := float64(c[i*ldc+j])
			out[i*tc.n+j] = c[i*ldc+j]
			tol := 2*float64(tc.k+2)*eps*mag[i*tc.n+j] + 1e-30
			if !(math.Abs(got-want[i*tc.n+j]) <= tol) {
				if bad < 3 {
					t.Errorf("%s %v: C[%d][%d] = %g, want %g (tol %.3g)", im.name, tc, i, j, got, want[i*tc.n+j], tol)
				}
				bad++
			}
		}
		if i+1 < tc.m {
			for j := tc.n; j < ldc; j++ {
				if c[i*ldc+j] != T(gapPoison) {
					t.Fatalf("%s %v: gap C[%d][%d] overwritten with %g", im.name, tc, i, j, c[i*ldc+j])
				}
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s %v: %d of %d elements wrong", im.name, tc, bad, tc.m*tc.n)
	}
	return out
}

func epsilon[T float]() float64 {
	var x T
	if _, ok := any(x).(float32); ok {
		return 0x1p-24
	}
	return 0x1p-53
}

// gemmCases covers every transpose combination over edge sizes around the tile sizes (1, 7, 17, 255, 257 and
// multiples of 4/6/12/16/32 plus or minus one), alpha/beta special values and strided views.
func gemmCases() []gemmCase {
	type shape struct{ m, n, k int }
	shapes := []shape{
		{1, 1, 1}, {1, 7, 17}, {7, 1, 3}, {17, 17, 1}, {12, 32, 5}, {13, 33, 9}, {11, 31, 40}, {24, 64, 385},
		{6, 16, 257}, {25, 47, 7}, {255, 17, 33}, {17, 257, 31}, {64, 3, 255}, {3, 100, 64}, {130, 97, 389},
	}
	ab := [][2]float64{{1, 0}, {1, 1}, {-0.5, 0.75}, {2, 0}, {0, 0.5}, {0, 0}}
	var cs []gemmCase
	for si, s := range shapes {
		for tr := 0; tr < 4; tr++ {
			v := ab[(si+tr)%len(ab)]
			cs = append(cs, gemmCase{transA: tr&1 != 0, transB: tr&2 != 0, m: s.m, n: s.n, k: s.k,
				alpha: v[0], beta: v[1], pad: (si + tr) % 3 * 5})
		}
	}
	return cs
}

// testImpls is every implementation this CPU runs plus both portable tiles (only one is the fallback on a given
// architecture, but both must be right).
func testImpls[T float](impls []*gemmImpl[T]) []*gemmImpl[T] {
	l := append([]*gemmImpl[T](nil), impls[:len(impls)-1]...)
	return append(l, portableImpl[T](2), portableImpl[T](4))
}

func TestSgemm(t *testing.T) {
	for _, im := range testImpls(sgemmImpls) {
		for i, tc := range gemmCases() {
			runGemmCase(t, im, tc, uint64(i))
		}
	}
}

func TestDgemm(t *testing.T) {
	for _, im := range testImpls(dgemmImpls) {
		for i, tc := range gemmCases() {
			runGemmCase(t, im, tc, uint64(i))
		}
	}
}

// TestGemmImplsAgree runs every implementation on the same inputs and checks they agree with each other to
// float32 rounding (each is also checked against the float64 reference).
func TestGemmImplsAgree(t *testing.T) {
	tcs := []gemmCase{
		{m: 97, n: 131, k: 300, alpha: 1, beta: 0},
		{transA: true, m: 64, n: 40, k: 129, alpha: 1, beta: 1, pad: 3},
		{transB: true, m: 255, n: 33, k: 70, alpha: -1, beta: 0.5},
		{transA: true, transB: true, m: 50, n: 257, k: 17, alpha: 0.25, beta: 0, pad: 1},
	}
	impls := testImpls(sgemmImpls)
	for i, tc := range tcs {
		ref := runGemmCase(t, impls[len(impls)-1], tc, uint64(100+i))
		for _, im := range impls[:len(impls)-1] {
			got := runGemmCase(t, im, tc, uint64(100+i))
			for e := range got {
				d := math.Abs(float64(got[e] - ref[e]))
				if d > 1e-5*float64(tc.k)*max(1, math.Abs(float64(ref[e]))) {
					t.Fatalf("%v: %s and %s differ at %d: %g vs %g", tc, im.name, impls[len(impls)-1].name, e,
						got[e], ref[e])
				}
			}
		}
	}
}

// TestGemmThreads checks the parallel path: 1 and 2 (and 3) threads give bit-identical results, because the
// tiling does not depend on the thread count, and they are correct on shapes big enough to be split either way.
func TestGemmThreads(t *testing.T) {
	defer SetThreads(SetThreads(0))
	tcs := []gemmCase{
		{m: 300, n: 200, k: 500, alpha: 1, beta: 0},
		{transB: true, m: 1000, n: 40, k: 70, alpha: 1, beta: 1},   // few column panels: rows are split
		{transA: true, m: 20, n: 1100, k: 90, alpha: 0.5, beta: 0}, // many column panels
	}
	for i, tc := range tcs {
		for _, im := range testImpls(sgemmImpls) {
			var first []float32
			for _, th := range []int{1, 2, 3, 8} {
				SetThreads(th)
				got := runGemmCase(t, im, tc, uint64(200+i))
				if first == nil {
					first = got
					continue
				}
				if e := firstBitDiff(got, first); e >= 0 {
					t.Fatalf("%s %v: %d threads differ from 1 thread at %d: %g vs %g", im.name, tc, th, e,
						got[e], first[e])
				}
			}
		}
	}
}

// TestGemmManyIterations shrinks the blocks so one call has dozens of (row panel, depth block) iterations, which
// threads overlap without a barrier: results must still be right and identical for any thread count (8 threads
// on fewer cores forces preemption in the middle of iterations).
func TestGemmManyIterations(t *testing.T) {
	defer SetThreads(SetThreads(0))
	for _, base := range testImpls(sgemmImpls) {
		im := &gemmImpl[float32]{name: base.name + " small blocks", mr: base.mr, nr: base.nr, kc: 16,
			mc: 3 * base.mr, nc: 2 * base.nr, micro: base.micro, direct: base.direct, portable: base.portable}
		for i, tc := range []gemmCase{
			{m: 200, n: 150, k: 100, alpha: 1, beta: 0.5},
			{transA: true, transB: true, m: 300, n: 40, k: 61, alpha: -1, beta: 0}, // row mode
		} {
			var first []float32
			for _, th := range []int{1, 2, 8} {
				SetThreads(th)
				got := runGemmCase(t, im, tc, uint64(400+i))
				if first == nil {
					first = got
					continue
				}
				if e := firstBitDiff(got, first); e >= 0 {
					t.Fatalf("%s %v: %d threads differ from 1 thread at %d", im.name, tc, th, e)
				}
			}
		}
	}
}

// TestGemmDirectA checks that reading A in place (the direct kernel) gives the same bits as packing it, with short
// last micro-panels (packed even then), several row panels and depth blocks, strided A, both column and row mode,
// and any thread count.
func TestGemmDirectA(t *testing.T) {
	defer SetThreads(SetThreads(0))
	for _, base := range sgemmImpls {
		if base.direct == nil {
			continue
		}
		for _, blocks := range [][2]int{{base.kc, base.mc}, {40, 5 * base.mr}} {
			direct := &gemmImpl[float32]{name: base.name, mr: base.mr, nr: base.nr, kc: blocks[0], mc: blocks[1],
				nc: base.nc, wholeB: base.wholeB, micro: base.micro, direct: base.direct}
			packed := &gemmImpl[float32]{name: base.name + " packed", mr: base.mr, nr: base.nr, kc: blocks[0],
				mc: blocks[1], nc: base.nc, wholeB: base.wholeB, micro: base.micro}
			for i, tc := range []gemmCase{
				{m: 12, n: 32, k: 1, alpha: 1, beta: 0},
				{m: 131, n: 97, k: 300, alpha: 1, beta: 0, pad: 3},
				{transB: true, m: 300, n: 70, k: 77, alpha: -0.5, beta: 0.75, pad: 5}, // row mode
				{m: 36, n: 600, k: 129, alpha: 2, beta: 1},
			} {
				for _, th := range []int{1, 2, 3} {
					SetThreads(th)
					got := runGemmCase(t, direct, tc, uint64(500+i))
					want := runGemmCase(t, packed, tc, uint64(500+i))
					if e := firstBitDiff(got, want); e >= 0 {
						t.Fatalf("%s kc=%d mc=%d %v, %d threads: in place %g, packed %g at %d", direct.name,
							blocks[0], blocks[1], tc, th, got[e], want[e], e)
					}
				}
			}
		}
	}
}

// TestGemmRowModeBlocks covers the row-split path when B is wider than one B block: a portable implementation with
// a tiny nc forces several blocks per unit.
func TestGemmRowModeBlocks(t *testing.T) {
	defer SetThreads(SetThreads(2))
	im := portableImpl[float32](4)
	im.nc = 8
	runGemmCase(t, im, gemmCase{transB: true, m: 400, n: 13, k: 30, alpha: 1, beta: 0.5}, 300)
}

func TestGemmPanics(t *testing.T) {
	a := make([]float32, 12)
	for _, c := range []struct {
		name string
		f    func()
	}{
		{"negative", func() { Sgemm(false, false, -1, 2, 2, 1, a, 2, a, 2, 0, a, 2) }},
		{"lda", func() { Sgemm(false, false, 2, 2, 3, 1, a, 2, a, 2, 0, a, 2) }},
		{"short C", func() { Sgemm(false, false, 4, 4, 1, 1, a, 1, a, 4, 0, a, 4) }},
		{"short A trans", func() { Sgemm(true, false, 3, 2, 5, 1, a, 3, a, 2, 0, a, 2) }},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", c.name)
				}
			}()
			c.f()
		}()
	}
}

func TestSyrk(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, tc := range []struct {
		trans       bool
		n, k, pad   int
		alpha, beta float64
	}{
		{true, 1, 1, 0, 1, 0}, {true, 7, 33, 2, 1, 0}, {false, 17, 5, 0, 0.5, 1}, {true, 300, 40, 3, 1, 0},
		{false, 257, 64, 1, -1, 0.25}, {true, 513, 9, 0, 2, 0},
	} {
		ar, ac := tc.n, tc.k
		if tc.trans {
			ar, ac = tc.k, tc.n
		}
		lda, ldc := ac+tc.pad, tc.n+tc.pad
		a := randMatrix[float32](r, ar, ac, lda)
		c := randMatrix[float32](r, tc.n, tc.n, ldc)
		for i := 0; i < tc.n; i++ { // the upper triangle is the symmetric input
			for j := 0; j < i; j++ {
				c[i*ldc+j] = c[j*ldc+i]
			}
			if tc.beta == 0 {
				for j := 0; j < tc.n; j++ {
					c[i*ldc+j] = float32(math.NaN())
				}
			}
		}
		want, mag := refGemm(tc.trans, !tc.trans, tc.n, tc.n, tc.k, float32(tc.alpha), a, lda, a, lda,
			float32(tc.beta), c, ldc)
		Ssyrk(tc.trans, tc.n, tc.k, float32(tc.alpha), a, lda, float32(tc.beta), c, ldc)
		for i := 0; i < tc.n; i++ {
			for j := 0; j < tc.n; j++ {
				got := float64(c[i*ldc+j])
				if math.Abs(got-want[i*tc.n+j]) > 2*float64(tc.k+2)*eps32*mag[i*tc.n+j]+1e-30 {
					t.Fatalf("%+v: C[%d][%d] = %g, want %g", tc, i, j, got, want[i*tc.n+j])
				}
				if c[i*ldc+j] != c[j*ldc+i] {
					t.Fatalf("%+v: C not symmetric at %d,%d", tc, i, j)
				}
			}
		}
	}
	// Dsyrk: the Gram matrix of an orthogonal-columns matrix is diagonal.
	const n, k = 6, 40
	a := make([]float64, k*n)
	for p := 0; p < k; p++ {
		for j := 0; j < n; j++ {
			a[p*n+j] = math.Cos(math.Pi * float64((2*p+1)*j) / (2 * k)) // DCT-II basis, orthogonal columns
		}
	}
	g := make([]float64, n*n)
	Dsyrk(true, n, k, 1, a, n, 0, g, n)
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			want := 0.0
			if i == j {
				want = k / 2
				if i == 0 {
					want = k
				}
			}
			if math.Abs(g[i*n+j]-want) > 1e-12 {
				t.Errorf("DCT Gram [%d][%d] = %g, want %g", i, j, g[i*n+j], want)
			}
		}
	}
}

// FuzzSgemm runs random shapes, transposes, strides and alpha/beta through the default implementation and the
// portable one, checking both against the float64 reference.
func FuzzSgemm(f *testing.F) {
	f.Add(uint8(0), uint16(1), uint16(1), uint16(1), uint8(0), uint8(0), uint64(1))
	f.Add(uint8(3), uint16(13), uint16(33), uint16(385), uint8(5), uint8(2), uint64(2))
	f.Add(uint8(1), uint16(255), uint16(17), uint16(7), uint8(1), uint8(1), uint64(3))
	f.Add(uint8(2), uint16(7), uint16(257), uint16(31), uint8(0), uint8(3), uint64(4))
	f.Fuzz(func(t *testing.T, tr uint8, m, n, k uint16, pad, ab uint8, seed uint64) {
		// Bounded so one input stays cheap for the float64 reference.
		m, n, k = m%300, n%300, k%400
		if int(m)*int(n)*int(k) > 4e6 {
			t.Skip()
		}
		v := [][2]float64{{1, 0}, {1, 1}, {-0.5, 0.75}, {0, 2}, {3, 0}}[int(ab)%5]
		tc := gemmCase{transA: tr&1 != 0, transB: tr&2 != 0, m: int(m), n: int(n), k: int(k), alpha: v[0],
			beta: v[1], pad: int(pad % 9)}
		run := newGemmRun[float32](tc, seed)
		run.check(t, sgemmImpl)
		run.check(t, goSgemm)
	})
}

// TestGemmNoAlloc checks that a warmed-up GEMM allocates nothing, single-threaded and on the worker pool: the
// packing buffers and the job come back from the implementation's pool.
func TestGemmNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under -race")
	}
	defer SetThreads(SetThreads(0))
	const m, n, k = 200, 300, 100 // above parallelMin
	a, b, c := make([]float32, m*k), make([]float32, k*n), make([]float32, m*n)
	for _, th := range []int{1, 2} {
		SetThreads(th)
		Sgemm(false, true, m, n, k, 1, a, k, b, k, 0, c, n)
		if got := testing.AllocsPerRun(50, func() { Sgemm(false, true, m, n, k, 1, a, k, b, k, 0, c, n) }); got != 0 {
			t.Errorf("%d threads: %v allocations per call, want 0", th, got)
		}
	}
}
