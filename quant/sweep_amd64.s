//go:build !noasm

#include "textflag.h"

// Candidate sweeps: one candidate scale per lane of a YMM register, elements broadcast one at a time, so each
// lane accumulates its sums in the element order of the C loop. Only VMULPS/VADDPS/VSUBPS (never FMA), the
// same single roundings as the scalar code. Candidate counts are multiples of 8.

// BCAST32 broadcasts a 32-bit constant into a YMM register.
#define BCAST32(val, y, x) \
	MOVL         $val, AX; \
	VMOVD        AX, x; \
	VPBROADCASTD x, y

// BCASTQ broadcasts the low 32 bits of an int argument.
#define BCASTQ(arg, y, x) \
	MOVQ         arg, AX; \
	VMOVD        AX, x; \
	VPBROADCASTD x, y

// NEAREST turns the products in y into nearest_int codes clamped to [Y3, Y4] and back to float32: adding
// 1.5·2^23 (Y5) leaves the rounded integer in the low mantissa bits (masked by Y6, offset by Y7).
#define NEAREST(y) \
	VADDPS    Y5, y, y; \
	VPAND     Y6, y, y; \
	VPSUBD    Y7, y, y; \
	VPMINSD   Y4, y, y; \
	VPMAXSD   Y3, y, y; \
	VCVTDQ2PS y, y

#define NEAREST_CONSTS \
	BCAST32(0x4b400000, Y5, X5); \
	BCAST32(0x007fffff, Y6, X6); \
	BCAST32(0x00400000, Y7, X7)

// func qxSweepAVX2(x, w, wx *float32, n int, iscale, sumlx, suml2 *float32, nc, lo, hi int)
TEXT ·qxSweepAVX2(SB), NOSPLIT, $0-80
	MOVQ iscale+32(FP), R8
	MOVQ sumlx+40(FP), R9
	MOVQ suml2+48(FP), R10
	MOVQ nc+56(FP), R11
	BCASTQ(lo+64(FP), Y3, X3)
	BCASTQ(hi+72(FP), Y4, X4)
	NEAREST_CONSTS

qxGroup:
	VMOVUPS (R8), Y0
	VXORPS  Y1, Y1, Y1
	VXORPS  Y2, Y2, Y2
	MOVQ    x+0(FP), SI
	MOVQ    w+8(FP), DI
	MOVQ    wx+16(FP), DX
	MOVQ    n+24(FP), CX

qxElem:
	VBROADCASTSS (SI), Y8
	VMULPS       Y8, Y0, Y8    // iscale·x
	NEAREST(Y8)                // l
	VBROADCASTSS (DX), Y9
	VMULPS       Y8, Y9, Y9    // (w·x)·l
	VADDPS       Y9, Y1, Y1
	VBROADCASTSS (DI), Y10
	VMULPS       Y8, Y10, Y10  // w·l
	VMULPS       Y8, Y10, Y10  // (w·l)·l
	VADDPS       Y10, Y2, Y2
	ADDQ         $4, SI
	ADDQ         $4, DI
	ADDQ         $4, DX
	DECQ         CX
	JNZ          qxElem

	VMOVUPS Y1, (R9)
	VMOVUPS Y2, (R10)
	ADDQ    $32, R8
	ADDQ    $32, R9
	ADDQ    $32, R10
	SUBQ    $8, R11
	JNZ     qxGroup
	VZEROUPPER
	RET

// func qkxStepsAVX2(dx, w, x *float32, n, first, nmax, mad int, rmin, rdelta, fmax, rng, sumW, sumX float32, lanes *qkxLanes) int
// Lane j is step first+j of make_qkx2_quants: inverse scale, the three sums, the least-squares fit and its
// error, stored in lanes (iscale, scale, min, cur at offsets 0, 32, 64, 96); the result has bit j set when D > 0.
TEXT ·qkxStepsAVX2(SB), NOSPLIT, $0-96
	// iscale = (rmin + rdelta·is + nmax) / (max - min)
	MOVQ         first+32(FP), AX
	VMOVD        AX, X0
	VPBROADCASTD X0, Y0
	VPADDD       qkxIota<>(SB), Y0, Y0
	VCVTDQ2PS    Y0, Y0
	VBROADCASTSS rdelta+60(FP), Y1
	VMULPS       Y0, Y1, Y0
	VBROADCASTSS rmin+56(FP), Y1
	VADDPS       Y0, Y1, Y0
	VBROADCASTSS fmax+64(FP), Y1
	VADDPS       Y1, Y0, Y0
	VBROADCASTSS rng+68(FP), Y1
	VDIVPS       Y1, Y0, Y0
	MOVQ         lanes+80(FP), R8
	VMOVUPS      Y0, (R8)

	VPXOR Y3, Y3, Y3
	BCASTQ(nmax+40(FP), Y4, X4)
	NEAREST_CONSTS

	// Σ w·l, Σ (w·l)·l, Σ (w·l)·x
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y13, Y13, Y13
	MOVQ   dx+0(FP), SI
	MOVQ   w+8(FP), DI
	MOVQ   x+16(FP), DX
	MOVQ   n+24(FP), CX

qkxSums:
	VBROADCASTSS (SI), Y8
	VMULPS       Y8, Y0, Y8    // iscale·(x-min)
	NEAREST(Y8)                // l
	VBROADCASTSS (DI), Y9
	VMULPS       Y8, Y9, Y9    // w·l
	VADDPS       Y9, Y1, Y1
	VMULPS       Y8, Y9, Y10   // (w·l)·l
	VADDPS       Y10, Y2, Y2
	VBROADCASTSS (DX), Y11
	VMULPS       Y11, Y9, Y11  // (w·l)·x
	VADDPS       Y11, Y13, Y13
	ADDQ         $4, SI
	ADDQ         $4, DI
	ADDQ         $4, DX
	DECQ         CX
	JNZ          qkxSums

	// D = Σw·Σwl² - (Σwl)²; scale = (Σw·Σwlx - Σwx·Σwl)/D; min = (Σwl²·Σwx - Σwl·Σwlx)/D;
	// a positive min becomes 0 with scale Σwlx/Σwl².
	VBROADCASTSS sumW+72(FP), Y8
	VBROADCASTSS sumX+76(FP), Y9
	VMULPS       Y2, Y8, Y10
	VMULPS       Y1, Y1, Y11
	VSUBPS       Y11, Y10, Y10  // D
	VMULPS       Y13, Y8, Y11
	VMULPS       Y1, Y9, Y12
	VSUBPS       Y12, Y11, Y11
	VDIVPS       Y10, Y11, Y11  // scale
	VMULPS       Y9, Y2, Y12
	VMULPS       Y13, Y1, Y14
	VSUBPS       Y14, Y12, Y12
	VDIVPS       Y10, Y12, Y12  // min
	VXORPS       Y14, Y14, Y14
	VCMPPS       $0x1e, Y14, Y12, Y15 // min > 0
	VDIVPS       Y2, Y13, Y8
	VBLENDVPS    Y15, Y8, Y11, Y11
	VANDNPS      Y12, Y15, Y12
	VCMPPS       $0x1e, Y14, Y10, Y10 // D > 0
	VMOVMSKPS    Y10, AX
	MOVQ         AX, ret+88(FP)
	VMOVUPS      Y11, 32(R8)
	VMOVUPS      Y12, 64(R8)

	// Σ w·e, e = |scale·l + min - x| or its square
	MOVQ   mad+48(FP), R13
	BCAST32(0x7fffffff, Y15, X15)
	VXORPS Y13, Y13, Y13
	MOVQ   dx+0(FP), SI
	MOVQ   w+8(FP), DI
	MOVQ   x+16(FP), DX
	MOVQ   n+24(FP), CX

qkxErr:
	VBROADCASTSS (SI), Y8
	VMULPS       Y8, Y0, Y8    // iscale·(x-min)
	NEAREST(Y8)                // l
	VMULPS       Y8, Y11, Y8   // scale·l
	VADDPS       Y12, Y8, Y8   // + min
	VBROADCASTSS (DX), Y9
	VSUBPS       Y9, Y8, Y8    // - x
	TESTQ        R13, R13
	JZ           qkxSquare
	VANDPS       Y15, Y8, Y8   // |e|
	JMP          qkxAdd

qkxSquare:
	VMULPS Y8, Y8, Y8          // e²

qkxAdd:
	VBROADCASTSS (DI), Y9
	VMULPS       Y8, Y9, Y9    // w·e
	VADDPS       Y9, Y13, Y13
	ADDQ         $4, SI
	ADDQ         $4, DI
	ADDQ         $4, DX
	DECQ         CX
	JNZ          qkxErr

	VMOVUPS Y13, 96(R8)
	VZEROUPPER
	RET

DATA qkxIota<>+0(SB)/4, $0
DATA qkxIota<>+4(SB)/4, $1
DATA qkxIota<>+8(SB)/4, $2
DATA qkxIota<>+12(SB)/4, $3
DATA qkxIota<>+16(SB)/4, $4
DATA qkxIota<>+20(SB)/4, $5
DATA qkxIota<>+24(SB)/4, $6
DATA qkxIota<>+28(SB)/4, $7
GLOBL qkxIota<>(SB), RODATA|NOPTR, $32

// IQ4STEP adds gap k to the codebook value in Y10 where best_index_int8 would choose index k or above, which it
// does exactly when !(x - v[k-1] < v[k] - x) (an unordered compare counts as not less, as in C).
#define IQ4STEP(k) \
	VSUBPS  ((k-1)*32)(R12), Y9, Y11; \
	VMOVUPS (k*32)(R12), Y12; \
	VSUBPS  Y9, Y12, Y12; \
	VCMPPS  $1, Y12, Y11, Y11; \
	VANDNPS ((15+k)*32)(R12), Y11, Y11; \
	VADDPS  Y11, Y10, Y10

// func iq4SweepAVX2(x, w *float32, n int, id, sumqx, sumq2 *float32, nc int, tab *[31][8]float32)
TEXT ·iq4SweepAVX2(SB), NOSPLIT, $0-64
	MOVQ id+24(FP), R8
	MOVQ sumqx+32(FP), R9
	MOVQ sumq2+40(FP), R10
	MOVQ nc+48(FP), R11
	MOVQ tab+56(FP), R12

iq4Group:
	VMOVUPS (R8), Y0
	VXORPS  Y1, Y1, Y1
	VXORPS  Y2, Y2, Y2
	MOVQ    x+0(FP), SI
	MOVQ    w+8(FP), DI
	MOVQ    n+16(FP), CX

iq4Elem:
	VBROADCASTSS (SI), Y8
	VMULPS       Y8, Y0, Y9    // id·x
	VMOVUPS      (R12), Y10    // q = v[0]
	IQ4STEP(1)
	IQ4STEP(2)
	IQ4STEP(3)
	IQ4STEP(4)
	IQ4STEP(5)
	IQ4STEP(6)
	IQ4STEP(7)
	IQ4STEP(8)
	IQ4STEP(9)
	IQ4STEP(10)
	IQ4STEP(11)
	IQ4STEP(12)
	IQ4STEP(13)
	IQ4STEP(14)
	IQ4STEP(15)
	VBROADCASTSS (DI), Y13
	VMULPS       Y10, Y13, Y13 // w·q
	VMULPS       Y8, Y13, Y14  // (w·q)·x
	VADDPS       Y14, Y1, Y1
	VMULPS       Y10, Y13, Y13 // (w·q)·q
	VADDPS       Y13, Y2, Y2
	ADDQ         $4, SI
	ADDQ         $4, DI
	DECQ         CX
	JNZ          iq4Elem

	VMOVUPS Y1, (R9)
	VMOVUPS Y2, (R10)
	ADDQ    $32, R8
	ADDQ    $32, R9
	ADDQ    $32, R10
	SUBQ    $8, R11
	JNZ     iq4Group
	VZEROUPPER
	RET
