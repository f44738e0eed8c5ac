//go:build !noasm

#include "textflag.h"

// AVX2+FMA row kernels. Each processes n elements with n a positive multiple of 8; the Go wrappers do the tail.

// Constants for exp, as 8 copies each so they can be FMA memory operands (AVX2 has no embedded broadcast).
#define CONST8(name, bits) \
	DATA name+0(SB)/4, $bits; \
	DATA name+4(SB)/4, $bits; \
	DATA name+8(SB)/4, $bits; \
	DATA name+12(SB)/4, $bits; \
	DATA name+16(SB)/4, $bits; \
	DATA name+20(SB)/4, $bits; \
	DATA name+24(SB)/4, $bits; \
	DATA name+28(SB)/4, $bits; \
	GLOBL name(SB), RODATA|NOPTR, $32

CONST8(expHi<>, 0x42b0c0a5)
CONST8(expLo<>, 0xc2aeac50)
CONST8(expLog2e<>, 0x3fb8aa3b)
CONST8(expC1<>, 0x3f318000)
CONST8(expC2<>, 0xb95e8083)
CONST8(expP0<>, 0x39506967)
CONST8(expP1<>, 0x3ab743ce)
CONST8(expP2<>, 0x3c088908)
CONST8(expP3<>, 0x3d2aa9c1)
CONST8(expP4<>, 0x3e2aaaaa)
CONST8(expP5<>, 0x3f000000)
CONST8(expOne<>, 0x3f800000)
CONST8(expBias<>, 0x0000007f)
CONST8(signBit<>, 0x80000000)

// EXP_INIT loads the constants EXP uses into Y9–Y15.
#define EXP_INIT \
	VMOVUPS expHi<>(SB), Y15; \
	VMOVUPS expLo<>(SB), Y14; \
	VMOVUPS expLog2e<>(SB), Y13; \
	VMOVUPS expC1<>(SB), Y12; \
	VMOVUPS expC2<>(SB), Y11; \
	VMOVUPS expOne<>(SB), Y10; \
	VMOVUPS expBias<>(SB), Y9

// EXP sets X = e^X for 8 lanes, the same steps as expf in vector.go: clamp, n = round(x·log2e), r = x − n·ln2 in
// two parts, degree-6 polynomial, scale by 2^n built in the exponent field. T1–T3 are scratch.
#define EXP(X, T1, T2, T3) \
	VMINPS       Y15, X, X; \
	VMAXPS       Y14, X, X; \
	VMULPS       Y13, X, T1; \
	VROUNDPS     $0, T1, T1; \
	VFNMADD231PS Y12, T1, X; \
	VFNMADD231PS Y11, T1, X; \
	VMOVUPS      expP0<>(SB), T2; \
	VFMADD213PS  expP1<>(SB), X, T2; \
	VFMADD213PS  expP2<>(SB), X, T2; \
	VFMADD213PS  expP3<>(SB), X, T2; \
	VFMADD213PS  expP4<>(SB), X, T2; \
	VFMADD213PS  expP5<>(SB), X, T2; \
	VMULPS       X, X, T3; \
	VFMADD213PS  X, T3, T2; \
	VADDPS       Y10, T2, T2; \
	VCVTPS2DQ    T1, T1; \
	VPADDD       Y9, T1, T1; \
	VPSLLD       $23, T1, T1; \
	VMULPS       T1, T2, X

// HSUM reduces the 8 lanes of Y0 into X0's low lane.
#define HSUM \
	VEXTRACTF128 $1, Y0, X1; \
	VADDPS       X1, X0, X0; \
	VMOVHLPS     X0, X1, X1; \
	VADDPS       X1, X0, X0; \
	VMOVSHDUP    X0, X1; \
	VADDSS       X1, X0, X0

// func dotAVX2(x, y *float32, n int) float32
TEXT ·dotAVX2(SB), NOSPLIT, $0-28
	MOVQ   x+0(FP), SI
	MOVQ   y+8(FP), DI
	MOVQ   n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	CMPQ   CX, $32
	JB     dot8

dot32:
	VMOVUPS     (SI), Y4
	VMOVUPS     32(SI), Y5
	VMOVUPS     64(SI), Y6
	VMOVUPS     96(SI), Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ        $128, SI
	ADDQ        $128, DI
	SUBQ        $32, CX
	CMPQ        CX, $32
	JAE         dot32

dot8:
	TESTQ CX, CX
	JZ    dotsum

dot8loop:
	VMOVUPS     (SI), Y4
	VFMADD231PS (DI), Y4, Y0
	ADDQ        $32, SI
	ADDQ        $32, DI
	SUBQ        $8, CX
	JNZ         dot8loop

dotsum:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	HSUM
	VMOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// func sumSquaresAVX2(x *float32, n int) float32
TEXT ·sumSquaresAVX2(SB), NOSPLIT, $0-20
	MOVQ   x+0(FP), SI
	MOVQ   n+8(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	CMPQ   CX, $32
	JB     ss8

ss32:
	VMOVUPS     (SI), Y4
	VMOVUPS     32(SI), Y5
	VMOVUPS     64(SI), Y6
	VMOVUPS     96(SI), Y7
	VFMADD231PS Y4, Y4, Y0
	VFMADD231PS Y5, Y5, Y1
	VFMADD231PS Y6, Y6, Y2
	VFMADD231PS Y7, Y7, Y3
	ADDQ        $128, SI
	SUBQ        $32, CX
	CMPQ        CX, $32
	JAE         ss32

ss8:
	TESTQ CX, CX
	JZ    sssum

ss8loop:
	VMOVUPS     (SI), Y4
	VFMADD231PS Y4, Y4, Y0
	ADDQ        $32, SI
	SUBQ        $8, CX
	JNZ         ss8loop

sssum:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	HSUM
	VMOVSS X0, ret+16(FP)
	VZEROUPPER
	RET

// func axpyAVX2(alpha float32, x, y *float32, n int)
TEXT ·axpyAVX2(SB), NOSPLIT, $0-32
	VBROADCASTSS alpha+0(FP), Y15
	MOVQ         x+8(FP), SI
	MOVQ         y+16(FP), DI
	MOVQ         n+24(FP), CX
	CMPQ         CX, $32
	JB           axpy8

axpy32:
	VMOVUPS     (SI), Y0
	VMOVUPS     32(SI), Y1
	VMOVUPS     64(SI), Y2
	VMOVUPS     96(SI), Y3
	VFMADD213PS (DI), Y15, Y0
	VFMADD213PS 32(DI), Y15, Y1
	VFMADD213PS 64(DI), Y15, Y2
	VFMADD213PS 96(DI), Y15, Y3
	VMOVUPS     Y0, (DI)
	VMOVUPS     Y1, 32(DI)
	VMOVUPS     Y2, 64(DI)
	VMOVUPS     Y3, 96(DI)
	ADDQ        $128, SI
	ADDQ        $128, DI
	SUBQ        $32, CX
	CMPQ        CX, $32
	JAE         axpy32

axpy8:
	TESTQ CX, CX
	JZ    axpydone

axpy8loop:
	VMOVUPS     (SI), Y0
	VFMADD213PS (DI), Y15, Y0
	VMOVUPS     Y0, (DI)
	ADDQ        $32, SI
	ADDQ        $32, DI
	SUBQ        $8, CX
	JNZ         axpy8loop

axpydone:
	VZEROUPPER
	RET

// func scaleAVX2(alpha float32, x *float32, n int)
TEXT ·scaleAVX2(SB), NOSPLIT, $0-24
	VBROADCASTSS alpha+0(FP), Y15
	MOVQ         x+8(FP), SI
	MOVQ         n+16(FP), CX
	CMPQ         CX, $32
	JB           scale8

scale32:
	VMULPS  (SI), Y15, Y0
	VMULPS  32(SI), Y15, Y1
	VMULPS  64(SI), Y15, Y2
	VMULPS  96(SI), Y15, Y3
	VMOVUPS Y0, (SI)
	VMOVUPS Y1, 32(SI)
	VMOVUPS Y2, 64(SI)
	VMOVUPS Y3, 96(SI)
	ADDQ    $128, SI
	SUBQ    $32, CX
	CMPQ    CX, $32
	JAE     scale32

scale8:
	TESTQ CX, CX
	JZ    scaledone

scale8loop:
	VMULPS  (SI), Y15, Y0
	VMOVUPS Y0, (SI)
	ADDQ    $32, SI
	SUBQ    $8, CX
	JNZ     scale8loop

scaledone:
	VZEROUPPER
	RET

// func maxAVX2(x *float32, n int) float32
TEXT ·maxAVX2(SB), NOSPLIT, $0-20
	MOVQ    x+0(FP), SI
	MOVQ    n+8(FP), CX
	VMOVUPS (SI), Y0
	VMOVUPS Y0, Y1
	ADDQ    $32, SI
	SUBQ    $8, CX
	JZ      maxreduce

max8loop:
	VMAXPS (SI), Y0, Y0
	ADDQ   $32, SI
	SUBQ   $8, CX
	JNZ    max8loop

maxreduce:
	VEXTRACTF128 $1, Y0, X1
	VMAXPS       X1, X0, X0
	VMOVHLPS     X0, X1, X1
	VMAXPS       X1, X0, X0
	VMOVSHDUP    X0, X1
	VMAXSS       X1, X0, X0
	VMOVSS       X0, ret+16(FP)
	VZEROUPPER
	RET

// func expShiftSumAVX2(x *float32, n int, m float32) float32
// x[i] = e^(x[i]−m), returning the sum of the new values.
TEXT ·expShiftSumAVX2(SB), NOSPLIT, $0-28
	MOVQ         x+0(FP), SI
	MOVQ         n+8(FP), CX
	VBROADCASTSS m+16(FP), Y8
	EXP_INIT
	VXORPS       Y7, Y7, Y7

esloop:
	VMOVUPS (SI), Y0
	VSUBPS  Y8, Y0, Y0
	EXP(Y0, Y1, Y2, Y3)
	VMOVUPS Y0, (SI)
	VADDPS  Y0, Y7, Y7
	ADDQ    $32, SI
	SUBQ    $8, CX
	JNZ     esloop

	VMOVUPS Y7, Y0
	HSUM
	VMOVSS  X0, ret+24(FP)
	VZEROUPPER
	RET

// func siluMulAVX2(dst, gate, up *float32, n int)
// dst[i] = g[i]·u[i]/(1+e^−g[i]).
TEXT ·siluMulAVX2(SB), NOSPLIT, $0-32
	MOVQ    dst+0(FP), DI
	MOVQ    gate+8(FP), SI
	MOVQ    up+16(FP), DX
	MOVQ    n+24(FP), CX
	EXP_INIT
	VMOVUPS signBit<>(SB), Y8

siluloop:
	VMOVUPS (SI), Y4
	VXORPS  Y8, Y4, Y0
	EXP(Y0, Y1, Y2, Y3)
	VADDPS  Y10, Y0, Y0
	VMULPS  (DX), Y4, Y4
	VDIVPS  Y0, Y4, Y4
	VMOVUPS Y4, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DX
	ADDQ    $32, DI
	SUBQ    $8, CX
	JNZ     siluloop

	VZEROUPPER
	RET

// func siluMulGradAVX2(dg, du, dh, gate, up *float32, n int)
// s = 1/(1+e^−g), d = dh·s: du = d·g, dg = d·u·(1 + g·(1−s)).
TEXT ·siluMulGradAVX2(SB), NOSPLIT, $0-48
	MOVQ    dg+0(FP), DI
	MOVQ    du+8(FP), R8
	MOVQ    dh+16(FP), R9
	MOVQ    gate+24(FP), SI
	MOVQ    up+32(FP), DX
	MOVQ    n+40(FP), CX
	EXP_INIT
	VMOVUPS signBit<>(SB), Y8

silugradloop:
	VMOVUPS     (SI), Y4
	VXORPS      Y8, Y4, Y0
	EXP(Y0, Y1, Y2, Y3)
	VADDPS      Y10, Y0, Y0
	VDIVPS      Y0, Y10, Y5
	VMULPS      (R9), Y5, Y6
	VMULPS      Y6, Y4, Y7
	VMOVUPS     Y7, (R8)
	VSUBPS      Y5, Y10, Y1
	VFMADD213PS Y10, Y4, Y1
	VMULPS      (DX), Y6, Y6
	VMULPS      Y1, Y6, Y6
	VMOVUPS     Y6, (DI)
	ADDQ        $32, SI
	ADDQ        $32, DX
	ADDQ        $32, DI
	ADDQ        $32, R8
	ADDQ        $32, R9
	SUBQ        $8, CX
	JNZ         silugradloop

	VZEROUPPER
	RET

// func mulScaleAVX2(dst, x, w *float32, n int, s float32)
// dst[i] = (x[i]·s)·w[i].
TEXT ·mulScaleAVX2(SB), NOSPLIT, $0-36
	MOVQ         dst+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         w+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSS s+32(FP), Y15

msloop:
	VMULPS  (SI), Y15, Y0
	VMULPS  (DX), Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DX
	ADDQ    $32, DI
	SUBQ    $8, CX
	JNZ     msloop

	VZEROUPPER
	RET

// func f16ToF32F16C(dst *float32, src *byte, n int)
TEXT ·f16ToF32F16C(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX

f16loop:
	VCVTPH2PS (SI), Y0
	VMOVUPS   Y0, (DI)
	ADDQ      $16, SI
	ADDQ      $32, DI
	SUBQ      $8, CX
	JNZ       f16loop

	VZEROUPPER
	RET

// func f32ToF16F16C(dst *byte, src *float32, n int)
// Immediate 0 rounds to nearest even regardless of MXCSR.
TEXT ·f32ToF16F16C(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX

f32f16loop:
	VMOVUPS   (SI), Y0
	VCVTPS2PH $0, Y0, X1
	VMOVDQU   X1, (DI)
	ADDQ      $32, SI
	ADDQ      $16, DI
	SUBQ      $8, CX
	JNZ       f32f16loop

	VZEROUPPER
	RET

// func bf16ToF32AVX2(dst *float32, src *byte, n int)
// bfloat16 is the high half of a float32: zero-extend each 16-bit value and shift it up.
TEXT ·bf16ToF32AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX

bf16loop:
	VPMOVZXWD (SI), Y0
	VPSLLD    $16, Y0, Y0
	VMOVUPS   Y0, (DI)
	ADDQ      $16, SI
	ADDQ      $32, DI
	SUBQ      $8, CX
	JNZ       bf16loop

	VZEROUPPER
	RET
