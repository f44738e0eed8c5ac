//go:build !noasm

#include "textflag.h"

// func fp4IndexAVX2(idx *byte, x *float32, grid *fp4Grid, n int)
// best_index_mxfp4 for n elements (a multiple of 8), 8 per iteration, written as one byte each: the first of
// the grid values nearest |x| (strictly nearer replaces, in index order, as in C), plus 8 for negative x unless
// it is code 0. NaN compares false everywhere and stays at code 0, as in C.
TEXT ·fp4IndexAVX2(SB), NOSPLIT, $0-32
	MOVQ idx+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ grid+16(FP), DX
	MOVQ n+24(FP), CX
	SHRQ $3, CX
	JZ   done

	MOVL         $0x7fffffff, AX
	VMOVD        AX, X15
	VPBROADCASTD X15, Y15
	MOVL         $1, AX
	VMOVD        AX, X8
	VPBROADCASTD X8, Y8
	VPADDD       Y8, Y8, Y9
	VPADDD       Y8, Y9, Y10
	VPADDD       Y8, Y10, Y11
	VPADDD       Y8, Y11, Y12
	VPADDD       Y8, Y12, Y13
	VPADDD       Y8, Y13, Y14

loop:
	VMOVUPS      (SI), Y0
	VANDPS       Y15, Y0, Y1       // |x|
	VBROADCASTSS (DX), Y2
	VSUBPS       Y1, Y2, Y2
	VANDPS       Y15, Y2, Y2       // best distance: code 0
	VPXOR        Y3, Y3, Y3        // best code

#define STEP(off, code) \
	VBROADCASTSS off(DX), Y4; \
	VSUBPS       Y1, Y4, Y4; \
	VANDPS       Y15, Y4, Y4; \
	VCMPPS       $1, Y2, Y4, Y5; \
	VBLENDVPS    Y5, Y4, Y2, Y2; \
	VBLENDVPS    Y5, code, Y3, Y3

	STEP(4, Y8)
	STEP(8, Y9)
	STEP(12, Y10)
	STEP(16, Y11)
	STEP(20, Y12)
	STEP(24, Y13)
	STEP(28, Y14)

	// negative x takes the mirrored code, i+8, except for code 0
	VXORPS       Y6, Y6, Y6
	VCMPPS       $1, Y6, Y0, Y5    // x < 0
	VPCMPEQD     Y6, Y3, Y7        // code == 0
	VPANDN       Y5, Y7, Y5
	VPSLLD       $3, Y8, Y7
	VPAND        Y7, Y5, Y5
	VPADDD       Y5, Y3, Y3
	VEXTRACTI128 $1, Y3, X4
	VPACKUSDW    X4, X3, X3
	VPACKUSWB    X3, X3, X3
	MOVQ         X3, (DI)

	ADDQ $32, SI
	ADDQ $8, DI
	DECQ CX
	JNZ  loop

done:
	VZEROUPPER
	RET
