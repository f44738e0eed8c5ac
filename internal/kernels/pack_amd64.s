//go:build !noasm

#include "textflag.h"

// Packing loops for the GEMM driver (full panels only; the Go code handles zero-padded edge panels). Plain SSE2
// and integer moves, so they run on every amd64 CPU.

// func copyRows(dst, src unsafe.Pointer, ldBytes, rowBytes, rows int)
// Copies rows rows of rowBytes bytes (a multiple of 8) from src (stride ldBytes) to dst (stride rowBytes).
TEXT ·copyRows(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ ldBytes+16(FP), R8
	MOVQ rowBytes+24(FP), R9
	MOVQ rows+32(FP), CX
	TESTQ CX, CX
	JZ   crdone

crrow:
	XORQ AX, AX
	MOVQ R9, BX
	CMPQ BX, $32
	JB   cr16

cr32:
	MOVUPS (SI)(AX*1), X0
	MOVUPS 16(SI)(AX*1), X1
	MOVUPS X0, (DI)(AX*1)
	MOVUPS X1, 16(DI)(AX*1)
	ADDQ   $32, AX
	SUBQ   $32, BX
	CMPQ   BX, $32
	JAE    cr32

cr16:
	CMPQ   BX, $16
	JB     cr8
	MOVUPS (SI)(AX*1), X0
	MOVUPS X0, (DI)(AX*1)
	ADDQ   $16, AX
	SUBQ   $16, BX

cr8:
	TESTQ BX, BX
	JZ    crnext
	MOVQ  (SI)(AX*1), DX
	MOVQ  DX, (DI)(AX*1)

crnext:
	ADDQ R8, SI
	ADDQ R9, DI
	DECQ CX
	JNZ  crrow

crdone:
	RET

// Transposes of 4-byte elements in 8×8 (and 4×8) blocks held in YMM registers: dst[p*w+r] = src[r*ld+p]. The
// classic unpack/shuffle/permute sequence: 24 shuffles per 64 elements instead of 64 scalar load/store pairs
// into scattered destination lines. Needs AVX, which every CPU running the vector GEMM kernels has.

// func transpose8x8s(dst, src unsafe.Pointer, ld, w, rows, k int)
// rows and k are multiples of 8; transposes src rows 0..rows-1, columns 0..k-1.
TEXT ·transpose8x8s(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ ld+16(FP), R8
	SHLQ $2, R8           // source row stride, bytes
	MOVQ w+24(FP), R9
	SHLQ $2, R9           // destination step stride, bytes
	MOVQ rows+32(FP), R10
	MOVQ k+40(FP), R11
	SHRQ $3, R10
	JZ   t8done
	SHRQ $3, R11
	JZ   t8done
	LEAQ (R8)(R8*2), R12  // 3·ld
	LEAQ (R9)(R9*2), R13  // 3·w

t8rowblock:
	MOVQ SI, AX           // source of this 8-row block, column 0
	MOVQ DI, BX           // destination lane r0, step 0
	MOVQ R11, CX

t8colblock:
	MOVQ    AX, DX
	VMOVUPS (DX), Y0
	VMOVUPS (DX)(R8*1), Y1
	VMOVUPS (DX)(R8*2), Y2
	VMOVUPS (DX)(R12*1), Y3
	LEAQ    (DX)(R8*4), DX
	VMOVUPS (DX), Y4
	VMOVUPS (DX)(R8*1), Y5
	VMOVUPS (DX)(R8*2), Y6
	VMOVUPS (DX)(R12*1), Y7

	VUNPCKLPS Y1, Y0, Y8
	VUNPCKHPS Y1, Y0, Y9
	VUNPCKLPS Y3, Y2, Y10
	VUNPCKHPS Y3, Y2, Y11
	VUNPCKLPS Y5, Y4, Y12
	VUNPCKHPS Y5, Y4, Y13
	VUNPCKLPS Y7, Y6, Y14
	VUNPCKHPS Y7, Y6, Y15

	VSHUFPS $0x44, Y10, Y8, Y0
	VSHUFPS $0xEE, Y10, Y8, Y1
	VSHUFPS $0x44, Y11, Y9, Y2
	VSHUFPS $0xEE, Y11, Y9, Y3
	VSHUFPS $0x44, Y14, Y12, Y4
	VSHUFPS $0xEE, Y14, Y12, Y5
	VSHUFPS $0x44, Y15, Y13, Y6
	VSHUFPS $0xEE, Y15, Y13, Y7

	VPERM2F128 $0x20, Y4, Y0, Y8
	VPERM2F128 $0x20, Y5, Y1, Y9
	VPERM2F128 $0x20, Y6, Y2, Y10
	VPERM2F128 $0x20, Y7, Y3, Y11
	VPERM2F128 $0x31, Y4, Y0, Y12
	VPERM2F128 $0x31, Y5, Y1, Y13
	VPERM2F128 $0x31, Y6, Y2, Y14
	VPERM2F128 $0x31, Y7, Y3, Y15

	MOVQ    BX, DX
	VMOVUPS Y8, (DX)
	VMOVUPS Y9, (DX)(R9*1)
	VMOVUPS Y10, (DX)(R9*2)
	VMOVUPS Y11, (DX)(R13*1)
	LEAQ    (DX)(R9*4), DX
	VMOVUPS Y12, (DX)
	VMOVUPS Y13, (DX)(R9*1)
	VMOVUPS Y14, (DX)(R9*2)
	VMOVUPS Y15, (DX)(R13*1)

	ADDQ $32, AX          // next 8 source columns
	LEAQ (BX)(R9*8), BX   // next 8 destination steps
	DECQ CX
	JNZ  t8colblock

	LEAQ (SI)(R8*8), SI   // next 8 source rows
	ADDQ $32, DI          // next 8 destination lanes
	DECQ R10
	JNZ  t8rowblock

t8done:
	VZEROUPPER
	RET

// func transpose4x8s(dst, src unsafe.Pointer, ld, w, k int)
// One block of 4 source rows; k is a multiple of 8.
TEXT ·transpose4x8s(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ ld+16(FP), R8
	SHLQ $2, R8
	MOVQ w+24(FP), R9
	SHLQ $2, R9
	MOVQ k+32(FP), CX
	SHRQ $3, CX
	JZ   t4done
	LEAQ (R8)(R8*2), R12
	LEAQ (R9)(R9*2), R13

t4colblock:
	VMOVUPS (SI), Y0
	VMOVUPS (SI)(R8*1), Y1
	VMOVUPS (SI)(R8*2), Y2
	VMOVUPS (SI)(R12*1), Y3

	VUNPCKLPS Y1, Y0, Y8
	VUNPCKHPS Y1, Y0, Y9
	VUNPCKLPS Y3, Y2, Y10
	VUNPCKHPS Y3, Y2, Y11
	VSHUFPS   $0x44, Y10, Y8, Y4
	VSHUFPS   $0xEE, Y10, Y8, Y5
	VSHUFPS   $0x44, Y11, Y9, Y6
	VSHUFPS   $0xEE, Y11, Y9, Y7

	MOVQ         DI, DX
	VMOVUPS      X4, (DX)
	VMOVUPS      X5, (DX)(R9*1)
	VMOVUPS      X6, (DX)(R9*2)
	VMOVUPS      X7, (DX)(R13*1)
	LEAQ         (DX)(R9*4), DX
	VEXTRACTF128 $1, Y4, (DX)
	VEXTRACTF128 $1, Y5, (DX)(R9*1)
	VEXTRACTF128 $1, Y6, (DX)(R9*2)
	VEXTRACTF128 $1, Y7, (DX)(R13*1)

	ADDQ $32, SI
	LEAQ (DI)(R9*8), DI
	DECQ CX
	JNZ  t4colblock

t4done:
	VZEROUPPER
	RET

// func transpose64(dst, src unsafe.Pointer, ld, w, k int)
// dst[p*w+r] = src[r*ld+p] for r < w, p < k, on 8-byte elements, with scalar moves (float64 GEMM is used for
// small factorisation work, where this is not the bottleneck).
TEXT ·transpose64(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ ld+16(FP), R8
	SHLQ $3, R8
	MOVQ w+24(FP), R9
	MOVQ k+32(FP), R10
	MOVQ R9, R11
	SHLQ $3, R11
	TESTQ R10, R10
	JZ    t64done

t64row:
	MOVQ SI, AX
	MOVQ DI, BX
	MOVQ R10, CX
	SHRQ $2, CX
	JZ   t64tail

t64loop4:
	MOVQ (AX), DX
	MOVQ 8(AX), R12
	MOVQ 16(AX), R13
	MOVQ 24(AX), R14
	MOVQ DX, (BX)
	ADDQ R11, BX
	MOVQ R12, (BX)
	ADDQ R11, BX
	MOVQ R13, (BX)
	ADDQ R11, BX
	MOVQ R14, (BX)
	ADDQ R11, BX
	ADDQ $32, AX
	DECQ CX
	JNZ  t64loop4

t64tail:
	MOVQ R10, CX
	ANDQ $3, CX
	JZ   t64next

t64loop1:
	MOVQ (AX), DX
	MOVQ DX, (BX)
	ADDQ R11, BX
	ADDQ $8, AX
	DECQ CX
	JNZ  t64loop1

t64next:
	ADDQ R8, SI
	ADDQ $8, DI
	DECQ R9
	JNZ  t64row

t64done:
	RET
