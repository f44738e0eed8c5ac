package kernels

import (
	"fmt"
	"unsafe"
)

// goMicro4x4 and goMicro2x4 are the portable micro-kernels, used under the noasm tag, on other architectures and
// on x86 CPUs without AVX2+FMA (tests compare them with the assembly kernels). The Go compiler keeps scalar
// accumulators in registers only while they fit: amd64 has 15 allocatable XMM registers (X15 is Go's zero
// register), so its tile is 2×4 (8 accumulators, 2 A values, one B value and one product); arm64, riscv64, ppc64
// and the rest have 32 floating-point registers, room for 4×4. Where the target has fused multiply-add (arm64,
// GOAMD64=v3) the compiler fuses c += a*b.
func goMicro4x4[T float](k int, a, b, c *T, ldc int, alpha, beta T) {
	as := unsafe.Slice(a, 4*k)
	bs := unsafe.Slice(b, 4*k)
	var c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33 T
	for len(as) >= 4 && len(bs) >= 4 {
		a0, a1, a2, a3 := as[0], as[1], as[2], as[3]
		b0, b1, b2, b3 := bs[0], bs[1], bs[2], bs[3]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		c20 += a2 * b0
		c21 += a2 * b1
		c22 += a2 * b2
		c23 += a2 * b3
		c30 += a3 * b0
		c31 += a3 * b1
		c32 += a3 * b2
		c33 += a3 * b3
		as, bs = as[4:], bs[4:]
	}
	cs := unsafe.Slice(c, 3*ldc+4)
	storeRow4(cs[0:4], c00, c01, c02, c03, alpha, beta)
	storeRow4(cs[ldc:ldc+4], c10, c11, c12, c13, alpha, beta)
	storeRow4(cs[2*ldc:2*ldc+4], c20, c21, c22, c23, alpha, beta)
	storeRow4(cs[3*ldc:3*ldc+4], c30, c31, c32, c33, alpha, beta)
}

// goMicro2x4 is shaped by the Go compiler rather than by the CPU. The SSA scheduler (cmd/compile/internal/ssa,
// schedule.go) issues values used inside their own block first. In a plain `for len(as) >= 2 { … }` loop the
// sums feed only the header block's phis, so every multiply of a step is issued before any add: eight products
// live beside eight accumulators, plus the copies SSE's two-operand MULSS needs, and six values spill to the
// stack on every step. Here the body is the loop header (`for { …; if done { break } }` behind a k > 0 guard),
// the phis that read the sums sit in the same block, every value has an in-block use and ties go by source
// line: each add follows its multiply, and the loop holds 8 accumulators, 2 A values, one B value and one
// product without a spill (go build -gcflags=-S). Four steps per iteration amortise the loop overhead and most
// of the register moves the allocator adds at the back edge; the pointers advance only when another iteration
// follows, so none points past the packed panel. A 12-accumulator tile (3×4, 4×3) needs 17 registers in this
// form and spills again.
func goMicro2x4[T float](k int, a, b, c *T, ldc int, alpha, beta T) {
	var c00, c01, c02, c03, c10, c11, c12, c13 T
	pa, pb := unsafe.Pointer(a), unsafe.Pointer(b)
	size := unsafe.Sizeof(*a)
	if n := k / 4; n > 0 {
		for {
			p, q := (*[8]T)(pa), (*[16]T)(pb)
			a0, a1 := p[0], p[1]
			b := q[0]
			c00 += a0 * b
			c10 += a1 * b
			b = q[1]
			c01 += a0 * b
			c11 += a1 * b
			b = q[2]
			c02 += a0 * b
			c12 += a1 * b
			b = q[3]
			c03 += a0 * b
			c13 += a1 * b
			a0, a1 = p[2], p[3]
			b = q[4]
			c00 += a0 * b
			c10 += a1 * b
			b = q[5]
			c01 += a0 * b
			c11 += a1 * b
			b = q[6]
			c02 += a0 * b
			c12 += a1 * b
			b = q[7]
			c03 += a0 * b
			c13 += a1 * b
			a0, a1 = p[4], p[5]
			b = q[8]
			c00 += a0 * b
			c10 += a1 * b
			b = q[9]
			c01 += a0 * b
			c11 += a1 * b
			b = q[10]
			c02 += a0 * b
			c12 += a1 * b
			b = q[11]
			c03 += a0 * b
			c13 += a1 * b
			a0, a1 = p[6], p[7]
			b = q[12]
			c00 += a0 * b
			c10 += a1 * b
			b = q[13]
			c01 += a0 * b
			c11 += a1 * b
			b = q[14]
			c02 += a0 * b
			c12 += a1 * b
			b = q[15]
			c03 += a0 * b
			c13 += a1 * b
			if n--; n == 0 {
				break
			}
			pa, pb = unsafe.Add(pa, 8*size), unsafe.Add(pb, 16*size)
		}
		if k%4 != 0 {
			pa, pb = unsafe.Add(pa, 8*size), unsafe.Add(pb, 16*size)
		}
	}
	// The last k mod 4 steps: at most three, so the spills of a plain loop cost little.
	for i := range uintptr(k % 4) {
		p, q := (*[2]T)(unsafe.Add(pa, 2*i*size)), (*[4]T)(unsafe.Add(pb, 4*i*size))
		a0, a1 := p[0], p[1]
		c00 += a0 * q[0]
		c01 += a0 * q[1]
		c02 += a0 * q[2]
		c03 += a0 * q[3]
		c10 += a1 * q[0]
		c11 += a1 * q[1]
		c12 += a1 * q[2]
		c13 += a1 * q[3]
	}
	cs := unsafe.Slice(c, ldc+4)
	storeRow4(cs[0:4], c00, c01, c02, c03, alpha, beta)
	storeRow4(cs[ldc:ldc+4], c10, c11, c12, c13, alpha, beta)
}

func storeRow4[T float](c []T, v0, v1, v2, v3, alpha, beta T) {
	c = c[:4]
	if beta == 0 {
		c[0], c[1], c[2], c[3] = alpha*v0, alpha*v1, alpha*v2, alpha*v3
		return
	}
	c[0] = alpha*v0 + beta*c[0]
	c[1] = alpha*v1 + beta*c[1]
	c[2] = alpha*v2 + beta*c[2]
	c[3] = alpha*v3 + beta*c[3]
}

// portableImpl builds the pure-Go implementation with an mr×4 tile.
func portableImpl[T float](mr int) *gemmImpl[T] {
	micro := goMicro4x4[T]
	if mr == 2 {
		micro = goMicro2x4[T]
	}
	im := &gemmImpl[T]{name: fmt.Sprintf("go %dx4", mr), mr: mr, nr: 4, kc: 256, mc: 512, nc: 256, micro: micro,
		portable: true}
	if _, ok := any(T(0)).(float32); ok {
		im.tile = tileGo[T]
	}
	return im
}
