//go:build !noasm

#include "textflag.h"

// GEMM micro-kernels. Each computes one MR×NR tile of C from a packed A micro-panel (k steps of MR values, one
// per row) and a packed B micro-panel (k steps of NR values):
//
//	C[0:MR, 0:NR] = alpha·(Ap·Bp) + beta·C   (C is not read when beta == ±0, so NaNs there are ignored)
//
// C is row-major with row stride ldc (elements). Vectors run along the columns of C, A values are broadcast: the
// BLIS "SkylakeX" layout mirrored for row-major C. Accumulators live in registers for the whole k loop; every
// broadcast goes into a register once and feeds the two or more FMAs of its row (an embedded-broadcast memory
// operand per FMA would double the load-port traffic). The signature is shared by all kernels:
//
//	func(k int, a, b, c *T, ldc int, alpha, beta T)

// ---------------------------------------------------------------------------------------------------------------
// The float32 direct kernels' arguments: k in CX, A's first row in SI and its sixth (SI + 5·lda) in R11, B in DI,
// C in DX, ldc in R8 and lda in R10 (bytes), 3·lda in R13.
#define DIRECT_ARGS \
	MOVQ k+0(FP), CX; \
	MOVQ a+8(FP), SI; \
	MOVQ lda+16(FP), R10; \
	MOVQ b+24(FP), DI; \
	MOVQ c+32(FP), DX; \
	MOVQ ldc+40(FP), R8; \
	SHLQ $2, R8; \
	SHLQ $2, R10; \
	LEAQ (R10)(R10*2), R13; \
	LEAQ (SI)(R10*4), R11; \
	ADDQ R10, R11

// ---------------------------------------------------------------------------------------------------------------
// float32, AVX-512: 12×32 tile, accumulators Z8–Z31, B in Z0/Z1, broadcasts alternate Z2/Z3. Two kernels share
// the register plan: one reads the packed A micro-panel, the other reads A in place from 12 rows of a row-major
// matrix (row r at SI + r·lda, addressed from three bases so that every row is base + index·scale).

#define S512_ROW(mem, bc, acc0, acc1) \
	VBROADCASTSS mem, bc; \
	VFMADD231PS  Z0, bc, acc0; \
	VFMADD231PS  Z1, bc, acc1

#define S512_B(boff) \
	VMOVUPS boff(DI), Z0; \
	VMOVUPS boff+64(DI), Z1

#define S512_STEP(aoff, boff) \
	S512_B(boff); \
	S512_ROW(aoff+0(SI), Z2, Z8, Z9); \
	S512_ROW(aoff+4(SI), Z3, Z10, Z11); \
	S512_ROW(aoff+8(SI), Z2, Z12, Z13); \
	S512_ROW(aoff+12(SI), Z3, Z14, Z15); \
	S512_ROW(aoff+16(SI), Z2, Z16, Z17); \
	S512_ROW(aoff+20(SI), Z3, Z18, Z19); \
	S512_ROW(aoff+24(SI), Z2, Z20, Z21); \
	S512_ROW(aoff+28(SI), Z3, Z22, Z23); \
	S512_ROW(aoff+32(SI), Z2, Z24, Z25); \
	S512_ROW(aoff+36(SI), Z3, Z26, Z27); \
	S512_ROW(aoff+40(SI), Z2, Z28, Z29); \
	S512_ROW(aoff+44(SI), Z3, Z30, Z31)

// Rows 0–4 from SI, 5–9 from R11, 10–11 from R12; R10 = lda and R13 = 3·lda in bytes.
#define S512_STEP_ROWS(aoff, boff) \
	S512_B(boff); \
	S512_ROW(aoff(SI), Z2, Z8, Z9); \
	S512_ROW(aoff(SI)(R10*1), Z3, Z10, Z11); \
	S512_ROW(aoff(SI)(R10*2), Z2, Z12, Z13); \
	S512_ROW(aoff(SI)(R13*1), Z3, Z14, Z15); \
	S512_ROW(aoff(SI)(R10*4), Z2, Z16, Z17); \
	S512_ROW(aoff(R11), Z3, Z18, Z19); \
	S512_ROW(aoff(R11)(R10*1), Z2, Z20, Z21); \
	S512_ROW(aoff(R11)(R10*2), Z3, Z22, Z23); \
	S512_ROW(aoff(R11)(R13*1), Z2, Z24, Z25); \
	S512_ROW(aoff(R11)(R10*4), Z3, Z26, Z27); \
	S512_ROW(aoff(R12), Z2, Z28, Z29); \
	S512_ROW(aoff(R12)(R10*1), Z3, Z30, Z31)

// Z0 = alpha, Z1 = beta; DX walks the rows of C, R8 = ldc in bytes.
#define S512_STORE0(acc0, acc1) \
	VMULPS  Z0, acc0, acc0; \
	VMULPS  Z0, acc1, acc1; \
	VMOVUPS acc0, (DX); \
	VMOVUPS acc1, 64(DX); \
	ADDQ    R8, DX

#define S512_STORE(acc0, acc1) \
	VMULPS      Z0, acc0, acc0; \
	VMULPS      Z0, acc1, acc1; \
	VFMADD231PS (DX), Z1, acc0; \
	VFMADD231PS 64(DX), Z1, acc1; \
	VMOVUPS     acc0, (DX); \
	VMOVUPS     acc1, 64(DX); \
	ADDQ        R8, DX

#define PREFETCH_ROW2 \
	PREFETCHT0 (R9); \
	PREFETCHT0 64(R9); \
	ADDQ       R8, R9

// C is touched only after the k loop; fetching its rows first hides the misses behind the FMAs.
#define S512_BEGIN \
	MOVQ DX, R9; \
	PREFETCH_ROW2; PREFETCH_ROW2; PREFETCH_ROW2; PREFETCH_ROW2; \
	PREFETCH_ROW2; PREFETCH_ROW2; PREFETCH_ROW2; PREFETCH_ROW2; \
	PREFETCH_ROW2; PREFETCH_ROW2; PREFETCH_ROW2; PREFETCH_ROW2; \
	VPXORD Z8, Z8, Z8; VPXORD Z9, Z9, Z9; VPXORD Z10, Z10, Z10; VPXORD Z11, Z11, Z11; \
	VPXORD Z12, Z12, Z12; VPXORD Z13, Z13, Z13; VPXORD Z14, Z14, Z14; VPXORD Z15, Z15, Z15; \
	VPXORD Z16, Z16, Z16; VPXORD Z17, Z17, Z17; VPXORD Z18, Z18, Z18; VPXORD Z19, Z19, Z19; \
	VPXORD Z20, Z20, Z20; VPXORD Z21, Z21, Z21; VPXORD Z22, Z22, Z22; VPXORD Z23, Z23, Z23; \
	VPXORD Z24, Z24, Z24; VPXORD Z25, Z25, Z25; VPXORD Z26, Z26, Z26; VPXORD Z27, Z27, Z27; \
	VPXORD Z28, Z28, Z28; VPXORD Z29, Z29, Z29; VPXORD Z30, Z30, Z30; VPXORD Z31, Z31, Z31

// C = alpha·acc + beta·C, never loading C when beta is ±0.
#define S512_END(alphaarg, betaarg) \
	VBROADCASTSS alphaarg(FP), Z0; \
	MOVL         betaarg(FP), AX; \
	ANDL         $0x7fffffff, AX; \
	JZ           s512beta0; \
	VBROADCASTSS betaarg(FP), Z1; \
	S512_STORE(Z8, Z9); S512_STORE(Z10, Z11); S512_STORE(Z12, Z13); S512_STORE(Z14, Z15); \
	S512_STORE(Z16, Z17); S512_STORE(Z18, Z19); S512_STORE(Z20, Z21); S512_STORE(Z22, Z23); \
	S512_STORE(Z24, Z25); S512_STORE(Z26, Z27); S512_STORE(Z28, Z29); S512_STORE(Z30, Z31); \
	VZEROUPPER; \
	RET; \
s512beta0: \
	S512_STORE0(Z8, Z9); S512_STORE0(Z10, Z11); S512_STORE0(Z12, Z13); S512_STORE0(Z14, Z15); \
	S512_STORE0(Z16, Z17); S512_STORE0(Z18, Z19); S512_STORE0(Z20, Z21); S512_STORE0(Z22, Z23); \
	S512_STORE0(Z24, Z25); S512_STORE0(Z26, Z27); S512_STORE0(Z28, Z29); S512_STORE0(Z30, Z31); \
	VZEROUPPER; \
	RET

// func sgemm12x32AVX512(k int, a, b, c *float32, ldc int, alpha, beta float32)
TEXT ·sgemm12x32AVX512(SB), NOSPLIT, $0-48
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ c+24(FP), DX
	MOVQ ldc+32(FP), R8
	SHLQ $2, R8
	S512_BEGIN

	// Unrolled by 4 so the loop overhead is 3 instructions per 96 FMAs.
	MOVQ CX, BX
	SHRQ $2, BX
	JZ   s512tail

s512loop4:
	PREFETCHT0 768(DI)
	S512_STEP(0, 0)
	PREFETCHT0 896(DI)
	S512_STEP(48, 128)
	PREFETCHT0 1024(DI)
	S512_STEP(96, 256)
	PREFETCHT0 1152(DI)
	S512_STEP(144, 384)
	ADDQ $192, SI
	ADDQ $512, DI
	DECQ BX
	JNZ  s512loop4

s512tail:
	ANDQ $3, CX
	JZ   s512store

s512loop1:
	S512_STEP(0, 0)
	ADDQ $48, SI
	ADDQ $128, DI
	DECQ CX
	JNZ  s512loop1

s512store:
	S512_END(alpha+40, beta+44)

// func sgemm12x32AVX512Direct(k int, a *float32, lda int, b, c *float32, ldc int, alpha, beta float32)
TEXT ·sgemm12x32AVX512Direct(SB), NOSPLIT, $0-56
	DIRECT_ARGS
	LEAQ (R11)(R10*4), R12
	ADDQ R10, R12
	S512_BEGIN

	MOVQ CX, BX
	SHRQ $2, BX
	JZ   rowstail

rowsloop4:
	PREFETCHT0 768(DI)
	S512_STEP_ROWS(0, 0)
	PREFETCHT0 896(DI)
	S512_STEP_ROWS(4, 128)
	PREFETCHT0 1024(DI)
	S512_STEP_ROWS(8, 256)
	PREFETCHT0 1152(DI)
	S512_STEP_ROWS(12, 384)
	ADDQ $16, SI
	ADDQ $16, R11
	ADDQ $16, R12
	ADDQ $512, DI
	DECQ BX
	JNZ  rowsloop4

rowstail:
	ANDQ $3, CX
	JZ   rowsstore

rowsloop1:
	S512_STEP_ROWS(0, 0)
	ADDQ $4, SI
	ADDQ $4, R11
	ADDQ $4, R12
	ADDQ $128, DI
	DECQ CX
	JNZ  rowsloop1

rowsstore:
	S512_END(alpha+48, beta+52)

// ---------------------------------------------------------------------------------------------------------------
// float64, AVX-512: 12×16 tile, same register plan as the float32 kernel with 8-lane vectors.

#define D512_ROW(off, bc, acc0, acc1) \
	VBROADCASTSD off(SI), bc; \
	VFMADD231PD  Z0, bc, acc0; \
	VFMADD231PD  Z1, bc, acc1

#define D512_STEP(aoff, boff) \
	VMOVUPD boff(DI), Z0; \
	VMOVUPD boff+64(DI), Z1; \
	D512_ROW(aoff+0, Z2, Z8, Z9); \
	D512_ROW(aoff+8, Z3, Z10, Z11); \
	D512_ROW(aoff+16, Z2, Z12, Z13); \
	D512_ROW(aoff+24, Z3, Z14, Z15); \
	D512_ROW(aoff+32, Z2, Z16, Z17); \
	D512_ROW(aoff+40, Z3, Z18, Z19); \
	D512_ROW(aoff+48, Z2, Z20, Z21); \
	D512_ROW(aoff+56, Z3, Z22, Z23); \
	D512_ROW(aoff+64, Z2, Z24, Z25); \
	D512_ROW(aoff+72, Z3, Z26, Z27); \
	D512_ROW(aoff+80, Z2, Z28, Z29); \
	D512_ROW(aoff+88, Z3, Z30, Z31)

#define D512_STORE0(acc0, acc1) \
	VMULPD  Z0, acc0, acc0; \
	VMULPD  Z0, acc1, acc1; \
	VMOVUPD acc0, (DX); \
	VMOVUPD acc1, 64(DX); \
	ADDQ    R8, DX

#define D512_STORE(acc0, acc1) \
	VMULPD      Z0, acc0, acc0; \
	VMULPD      Z0, acc1, acc1; \
	VFMADD231PD (DX), Z1, acc0; \
	VFMADD231PD 64(DX), Z1, acc1; \
	VMOVUPD     acc0, (DX); \
	VMOVUPD     acc1, 64(DX); \
	ADDQ        R8, DX

// func dgemm12x16AVX512(k int, a, b, c *float64, ldc int, alpha, beta float64)
TEXT ·dgemm12x16AVX512(SB), NOSPLIT, $0-56
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ c+24(FP), DX
	MOVQ ldc+32(FP), R8
	SHLQ $3, R8

	MOVQ DX, R9
	PREFETCH_ROW2; PREFETCH_ROW2; PREFETCH_ROW2; PREFETCH_ROW2
	PREFETCH_ROW2; PREFETCH_ROW2; PREFETCH_ROW2; PREFETCH_ROW2
	PREFETCH_ROW2; PREFETCH_ROW2; PREFETCH_ROW2; PREFETCH_ROW2

	VPXORQ Z8, Z8, Z8
	VPXORQ Z9, Z9, Z9
	VPXORQ Z10, Z10, Z10
	VPXORQ Z11, Z11, Z11
	VPXORQ Z12, Z12, Z12
	VPXORQ Z13, Z13, Z13
	VPXORQ Z14, Z14, Z14
	VPXORQ Z15, Z15, Z15
	VPXORQ Z16, Z16, Z16
	VPXORQ Z17, Z17, Z17
	VPXORQ Z18, Z18, Z18
	VPXORQ Z19, Z19, Z19
	VPXORQ Z20, Z20, Z20
	VPXORQ Z21, Z21, Z21
	VPXORQ Z22, Z22, Z22
	VPXORQ Z23, Z23, Z23
	VPXORQ Z24, Z24, Z24
	VPXORQ Z25, Z25, Z25
	VPXORQ Z26, Z26, Z26
	VPXORQ Z27, Z27, Z27
	VPXORQ Z28, Z28, Z28
	VPXORQ Z29, Z29, Z29
	VPXORQ Z30, Z30, Z30
	VPXORQ Z31, Z31, Z31

	MOVQ CX, BX
	SHRQ $2, BX
	JZ   d512tail

d512loop4:
	PREFETCHT0 768(DI)
	D512_STEP(0, 0)
	PREFETCHT0 896(DI)
	D512_STEP(96, 128)
	PREFETCHT0 1024(DI)
	D512_STEP(192, 256)
	PREFETCHT0 1152(DI)
	D512_STEP(288, 384)
	ADDQ $384, SI
	ADDQ $512, DI
	DECQ BX
	JNZ  d512loop4

d512tail:
	ANDQ $3, CX
	JZ   d512store

d512loop1:
	D512_STEP(0, 0)
	ADDQ $96, SI
	ADDQ $128, DI
	DECQ CX
	JNZ  d512loop1

d512store:
	VBROADCASTSD alpha+40(FP), Z0
	MOVQ         beta+48(FP), AX
	SHLQ         $1, AX
	JZ           d512beta0
	VBROADCASTSD beta+48(FP), Z1
	D512_STORE(Z8, Z9)
	D512_STORE(Z10, Z11)
	D512_STORE(Z12, Z13)
	D512_STORE(Z14, Z15)
	D512_STORE(Z16, Z17)
	D512_STORE(Z18, Z19)
	D512_STORE(Z20, Z21)
	D512_STORE(Z22, Z23)
	D512_STORE(Z24, Z25)
	D512_STORE(Z26, Z27)
	D512_STORE(Z28, Z29)
	D512_STORE(Z30, Z31)
	VZEROUPPER
	RET

d512beta0:
	D512_STORE0(Z8, Z9)
	D512_STORE0(Z10, Z11)
	D512_STORE0(Z12, Z13)
	D512_STORE0(Z14, Z15)
	D512_STORE0(Z16, Z17)
	D512_STORE0(Z18, Z19)
	D512_STORE0(Z20, Z21)
	D512_STORE0(Z22, Z23)
	D512_STORE0(Z24, Z25)
	D512_STORE0(Z26, Z27)
	D512_STORE0(Z28, Z29)
	D512_STORE0(Z30, Z31)
	VZEROUPPER
	RET

// ---------------------------------------------------------------------------------------------------------------
// float32, AVX2+FMA: 6×16 tile, accumulators Y4–Y15, B in Y0/Y1, broadcasts alternate Y2/Y3 (all 16 registers).
// As for AVX-512, one kernel reads the packed A micro-panel and the other reads 6 rows of A in place.

#define S256_ROW(mem, bc, acc0, acc1) \
	VBROADCASTSS mem, bc; \
	VFMADD231PS  Y0, bc, acc0; \
	VFMADD231PS  Y1, bc, acc1

#define S256_B(boff) \
	VMOVUPS boff(DI), Y0; \
	VMOVUPS boff+32(DI), Y1

#define S256_STEP(aoff, boff) \
	S256_B(boff); \
	S256_ROW(aoff+0(SI), Y2, Y4, Y5); \
	S256_ROW(aoff+4(SI), Y3, Y6, Y7); \
	S256_ROW(aoff+8(SI), Y2, Y8, Y9); \
	S256_ROW(aoff+12(SI), Y3, Y10, Y11); \
	S256_ROW(aoff+16(SI), Y2, Y12, Y13); \
	S256_ROW(aoff+20(SI), Y3, Y14, Y15)

// Rows 0–4 from SI, row 5 from R11; R10 = lda and R13 = 3·lda in bytes.
#define S256_STEP_ROWS(aoff, boff) \
	S256_B(boff); \
	S256_ROW(aoff(SI), Y2, Y4, Y5); \
	S256_ROW(aoff(SI)(R10*1), Y3, Y6, Y7); \
	S256_ROW(aoff(SI)(R10*2), Y2, Y8, Y9); \
	S256_ROW(aoff(SI)(R13*1), Y3, Y10, Y11); \
	S256_ROW(aoff(SI)(R10*4), Y2, Y12, Y13); \
	S256_ROW(aoff(R11), Y3, Y14, Y15)

#define S256_STORE0(acc0, acc1) \
	VMULPS  Y0, acc0, acc0; \
	VMULPS  Y0, acc1, acc1; \
	VMOVUPS acc0, (DX); \
	VMOVUPS acc1, 32(DX); \
	ADDQ    R8, DX

#define S256_STORE(acc0, acc1) \
	VMULPS      Y0, acc0, acc0; \
	VMULPS      Y0, acc1, acc1; \
	VFMADD231PS (DX), Y1, acc0; \
	VFMADD231PS 32(DX), Y1, acc1; \
	VMOVUPS     acc0, (DX); \
	VMOVUPS     acc1, 32(DX); \
	ADDQ        R8, DX

#define PREFETCH_ROW1 \
	PREFETCHT0 (R9); \
	ADDQ       R8, R9

#define S256_BEGIN \
	MOVQ DX, R9; \
	PREFETCH_ROW1; PREFETCH_ROW1; PREFETCH_ROW1; PREFETCH_ROW1; PREFETCH_ROW1; PREFETCH_ROW1; \
	VXORPS Y4, Y4, Y4; VXORPS Y5, Y5, Y5; VXORPS Y6, Y6, Y6; VXORPS Y7, Y7, Y7; \
	VXORPS Y8, Y8, Y8; VXORPS Y9, Y9, Y9; VXORPS Y10, Y10, Y10; VXORPS Y11, Y11, Y11; \
	VXORPS Y12, Y12, Y12; VXORPS Y13, Y13, Y13; VXORPS Y14, Y14, Y14; VXORPS Y15, Y15, Y15

#define S256_END(alphaarg, betaarg) \
	VBROADCASTSS alphaarg(FP), Y0; \
	MOVL         betaarg(FP), AX; \
	ANDL         $0x7fffffff, AX; \
	JZ           s256beta0; \
	VBROADCASTSS betaarg(FP), Y1; \
	S256_STORE(Y4, Y5); S256_STORE(Y6, Y7); S256_STORE(Y8, Y9); \
	S256_STORE(Y10, Y11); S256_STORE(Y12, Y13); S256_STORE(Y14, Y15); \
	VZEROUPPER; \
	RET; \
s256beta0: \
	S256_STORE0(Y4, Y5); S256_STORE0(Y6, Y7); S256_STORE0(Y8, Y9); \
	S256_STORE0(Y10, Y11); S256_STORE0(Y12, Y13); S256_STORE0(Y14, Y15); \
	VZEROUPPER; \
	RET

// func sgemm6x16AVX2(k int, a, b, c *float32, ldc int, alpha, beta float32)
TEXT ·sgemm6x16AVX2(SB), NOSPLIT, $0-48
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ c+24(FP), DX
	MOVQ ldc+32(FP), R8
	SHLQ $2, R8
	S256_BEGIN

	MOVQ CX, BX
	SHRQ $2, BX
	JZ   s256tail

s256loop4:
	PREFETCHT0 384(DI)
	S256_STEP(0, 0)
	S256_STEP(24, 64)
	PREFETCHT0 448(DI)
	S256_STEP(48, 128)
	S256_STEP(72, 192)
	ADDQ $96, SI
	ADDQ $256, DI
	DECQ BX
	JNZ  s256loop4

s256tail:
	ANDQ $3, CX
	JZ   s256store

s256loop1:
	S256_STEP(0, 0)
	ADDQ $24, SI
	ADDQ $64, DI
	DECQ CX
	JNZ  s256loop1

s256store:
	S256_END(alpha+40, beta+44)

// func sgemm6x16AVX2Direct(k int, a *float32, lda int, b, c *float32, ldc int, alpha, beta float32)
TEXT ·sgemm6x16AVX2Direct(SB), NOSPLIT, $0-56
	DIRECT_ARGS
	S256_BEGIN

	MOVQ CX, BX
	SHRQ $2, BX
	JZ   rowstail

rowsloop4:
	PREFETCHT0 384(DI)
	S256_STEP_ROWS(0, 0)
	S256_STEP_ROWS(4, 64)
	PREFETCHT0 448(DI)
	S256_STEP_ROWS(8, 128)
	S256_STEP_ROWS(12, 192)
	ADDQ $16, SI
	ADDQ $16, R11
	ADDQ $256, DI
	DECQ BX
	JNZ  rowsloop4

rowstail:
	ANDQ $3, CX
	JZ   rowsstore

rowsloop1:
	S256_STEP_ROWS(0, 0)
	ADDQ $4, SI
	ADDQ $4, R11
	ADDQ $64, DI
	DECQ CX
	JNZ  rowsloop1

rowsstore:
	S256_END(alpha+48, beta+52)

// ---------------------------------------------------------------------------------------------------------------
// float64, AVX2+FMA: 6×8 tile.

#define D256_ROW(off, bc, acc0, acc1) \
	VBROADCASTSD off(SI), bc; \
	VFMADD231PD  Y0, bc, acc0; \
	VFMADD231PD  Y1, bc, acc1

#define D256_STEP(aoff, boff) \
	VMOVUPD boff(DI), Y0; \
	VMOVUPD boff+32(DI), Y1; \
	D256_ROW(aoff+0, Y2, Y4, Y5); \
	D256_ROW(aoff+8, Y3, Y6, Y7); \
	D256_ROW(aoff+16, Y2, Y8, Y9); \
	D256_ROW(aoff+24, Y3, Y10, Y11); \
	D256_ROW(aoff+32, Y2, Y12, Y13); \
	D256_ROW(aoff+40, Y3, Y14, Y15)

#define D256_STORE0(acc0, acc1) \
	VMULPD  Y0, acc0, acc0; \
	VMULPD  Y0, acc1, acc1; \
	VMOVUPD acc0, (DX); \
	VMOVUPD acc1, 32(DX); \
	ADDQ    R8, DX

#define D256_STORE(acc0, acc1) \
	VMULPD      Y0, acc0, acc0; \
	VMULPD      Y0, acc1, acc1; \
	VFMADD231PD (DX), Y1, acc0; \
	VFMADD231PD 32(DX), Y1, acc1; \
	VMOVUPD     acc0, (DX); \
	VMOVUPD     acc1, 32(DX); \
	ADDQ        R8, DX

// func dgemm6x8AVX2(k int, a, b, c *float64, ldc int, alpha, beta float64)
TEXT ·dgemm6x8AVX2(SB), NOSPLIT, $0-56
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ c+24(FP), DX
	MOVQ ldc+32(FP), R8
	SHLQ $3, R8

	MOVQ DX, R9
	PREFETCH_ROW2; PREFETCH_ROW2; PREFETCH_ROW2
	PREFETCH_ROW2; PREFETCH_ROW2; PREFETCH_ROW2

	VXORPD Y4, Y4, Y4
	VXORPD Y5, Y5, Y5
	VXORPD Y6, Y6, Y6
	VXORPD Y7, Y7, Y7
	VXORPD Y8, Y8, Y8
	VXORPD Y9, Y9, Y9
	VXORPD Y10, Y10, Y10
	VXORPD Y11, Y11, Y11
	VXORPD Y12, Y12, Y12
	VXORPD Y13, Y13, Y13
	VXORPD Y14, Y14, Y14
	VXORPD Y15, Y15, Y15

	MOVQ CX, BX
	SHRQ $2, BX
	JZ   d256tail

d256loop4:
	PREFETCHT0 384(DI)
	D256_STEP(0, 0)
	D256_STEP(48, 64)
	PREFETCHT0 448(DI)
	D256_STEP(96, 128)
	D256_STEP(144, 192)
	ADDQ $192, SI
	ADDQ $256, DI
	DECQ BX
	JNZ  d256loop4

d256tail:
	ANDQ $3, CX
	JZ   d256store

d256loop1:
	D256_STEP(0, 0)
	ADDQ $48, SI
	ADDQ $64, DI
	DECQ CX
	JNZ  d256loop1

d256store:
	VBROADCASTSD alpha+40(FP), Y0
	MOVQ         beta+48(FP), AX
	SHLQ         $1, AX
	JZ           d256beta0
	VBROADCASTSD beta+48(FP), Y1
	D256_STORE(Y4, Y5)
	D256_STORE(Y6, Y7)
	D256_STORE(Y8, Y9)
	D256_STORE(Y10, Y11)
	D256_STORE(Y12, Y13)
	D256_STORE(Y14, Y15)
	VZEROUPPER
	RET

d256beta0:
	D256_STORE0(Y4, Y5)
	D256_STORE0(Y6, Y7)
	D256_STORE0(Y8, Y9)
	D256_STORE0(Y10, Y11)
	D256_STORE0(Y12, Y13)
	D256_STORE0(Y14, Y15)
	VZEROUPPER
	RET

// ---------------------------------------------------------------------------------------------------------------
// FMA throughput probes: n iterations of independent FMA chains (more chains than latency × ports), so the loop
// runs at the core's FMA issue rate. 24 chains × 16 lanes × 2 flops = 768 flops per AVX-512 iteration; 12 chains ×
// 8 lanes × 2 = 192 per AVX2 iteration. The accumulators start at zero and multiply zeros, so no denormals occur.

// func fmaPeakAVX512(n int)
TEXT ·fmaPeakAVX512(SB), NOSPLIT, $0-8
	MOVQ   n+0(FP), CX
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23
	VPXORD Z24, Z24, Z24
	VPXORD Z25, Z25, Z25
	VPXORD Z26, Z26, Z26
	VPXORD Z27, Z27, Z27
	VPXORD Z28, Z28, Z28
	VPXORD Z29, Z29, Z29
	VPXORD Z30, Z30, Z30
	VPXORD Z31, Z31, Z31

peak512:
	VFMADD231PS Z0, Z1, Z8
	VFMADD231PS Z0, Z1, Z9
	VFMADD231PS Z0, Z1, Z10
	VFMADD231PS Z0, Z1, Z11
	VFMADD231PS Z0, Z1, Z12
	VFMADD231PS Z0, Z1, Z13
	VFMADD231PS Z0, Z1, Z14
	VFMADD231PS Z0, Z1, Z15
	VFMADD231PS Z0, Z1, Z16
	VFMADD231PS Z0, Z1, Z17
	VFMADD231PS Z0, Z1, Z18
	VFMADD231PS Z0, Z1, Z19
	VFMADD231PS Z0, Z1, Z20
	VFMADD231PS Z0, Z1, Z21
	VFMADD231PS Z0, Z1, Z22
	VFMADD231PS Z0, Z1, Z23
	VFMADD231PS Z0, Z1, Z24
	VFMADD231PS Z0, Z1, Z25
	VFMADD231PS Z0, Z1, Z26
	VFMADD231PS Z0, Z1, Z27
	VFMADD231PS Z0, Z1, Z28
	VFMADD231PS Z0, Z1, Z29
	VFMADD231PS Z0, Z1, Z30
	VFMADD231PS Z0, Z1, Z31
	DECQ        CX
	JNZ         peak512
	VZEROUPPER
	RET

// func fmaPeakAVX2(n int)
TEXT ·fmaPeakAVX2(SB), NOSPLIT, $0-8
	MOVQ   n+0(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	VXORPS Y12, Y12, Y12
	VXORPS Y13, Y13, Y13
	VXORPS Y14, Y14, Y14
	VXORPS Y15, Y15, Y15

peak256:
	VFMADD231PS Y0, Y1, Y4
	VFMADD231PS Y0, Y1, Y5
	VFMADD231PS Y0, Y1, Y6
	VFMADD231PS Y0, Y1, Y7
	VFMADD231PS Y0, Y1, Y8
	VFMADD231PS Y0, Y1, Y9
	VFMADD231PS Y0, Y1, Y10
	VFMADD231PS Y0, Y1, Y11
	VFMADD231PS Y0, Y1, Y12
	VFMADD231PS Y0, Y1, Y13
	VFMADD231PS Y0, Y1, Y14
	VFMADD231PS Y0, Y1, Y15
	DECQ        CX
	JNZ         peak256
	VZEROUPPER
	RET

// ---------------------------------------------------------------------------------------------------------------
// float32, AVX2+FMA: the 8×8 tile of the skinny path (skinny.go), t[r][0:8] += Σ_p x[p·xs + r·xr] · y[p·ys + 0:8].
// Accumulators Y0–Y7, the row of y in Y8, broadcasts alternate Y9/Y10. Rows 0–3 of x are addressed from SI and
// rows 4–7 from DI = SI + 4·xr, with the offsets xr and 3·xr in R8 and R9.
//
// func skinny8x8AVX2(k int, x *float32, xr, xs int, y *float32, ys int, t *float32)
TEXT ·skinny8x8AVX2(SB), NOSPLIT, $0-56
	MOVQ k+0(FP), CX
	MOVQ x+8(FP), SI
	MOVQ xr+16(FP), R8
	MOVQ xs+24(FP), R10
	MOVQ y+32(FP), DX
	MOVQ ys+40(FP), R11
	SHLQ $2, R8
	SHLQ $2, R10
	SHLQ $2, R11
	LEAQ (R8)(R8*2), R9
	LEAQ (SI)(R8*4), DI
	MOVQ t+48(FP), AX
	VMOVUPS (AX), Y0
	VMOVUPS 32(AX), Y1
	VMOVUPS 64(AX), Y2
	VMOVUPS 96(AX), Y3
	VMOVUPS 128(AX), Y4
	VMOVUPS 160(AX), Y5
	VMOVUPS 192(AX), Y6
	VMOVUPS 224(AX), Y7

skinnyloop:
	VMOVUPS      (DX), Y8
	VBROADCASTSS (SI), Y9
	VFMADD231PS  Y8, Y9, Y0
	VBROADCASTSS (SI)(R8*1), Y10
	VFMADD231PS  Y8, Y10, Y1
	VBROADCASTSS (SI)(R8*2), Y9
	VFMADD231PS  Y8, Y9, Y2
	VBROADCASTSS (SI)(R9*1), Y10
	VFMADD231PS  Y8, Y10, Y3
	VBROADCASTSS (DI), Y9
	VFMADD231PS  Y8, Y9, Y4
	VBROADCASTSS (DI)(R8*1), Y10
	VFMADD231PS  Y8, Y10, Y5
	VBROADCASTSS (DI)(R8*2), Y9
	VFMADD231PS  Y8, Y9, Y6
	VBROADCASTSS (DI)(R9*1), Y10
	VFMADD231PS  Y8, Y10, Y7
	ADDQ         R10, SI
	ADDQ         R10, DI
	ADDQ         R11, DX
	DECQ         CX
	JNZ          skinnyloop

	VMOVUPS Y0, (AX)
	VMOVUPS Y1, 32(AX)
	VMOVUPS Y2, 64(AX)
	VMOVUPS Y3, 96(AX)
	VMOVUPS Y4, 128(AX)
	VMOVUPS Y5, 160(AX)
	VMOVUPS Y6, 192(AX)
	VMOVUPS Y7, 224(AX)
	VZEROUPPER
	RET
