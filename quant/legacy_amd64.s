//go:build !noasm

#include "textflag.h"

// Row kernels for the two most used legacy types, one 32-element block per iteration: quantize_row_q4_0_ref and
// quantize_row_q8_0_ref with the same float32 operations (VMULPS/VADDPS/VDIVSS, no FMA). The F16 block scale is
// converted with VCVTPS2PH, which rounds to nearest even like GGML_FP32_TO_FP16 (the scale is never NaN here).

#define BCAST32(val, y, x) \
	MOVL         $val, AX; \
	VMOVD        AX, x; \
	VPBROADCASTD x, y

// LOADABS loads the block into Y0–Y3 and the bits of |x| into Y4–Y7, with NaN lanes set to 0 and Y8 set to
// the lanes that were NaN (Y15 = 0x7fffffff, Y14 = 0x7f800000).
#define LOADABS \
	VMOVUPS   (SI), Y0; \
	VMOVUPS   32(SI), Y1; \
	VMOVUPS   64(SI), Y2; \
	VMOVUPS   96(SI), Y3; \
	VPAND     Y15, Y0, Y4; \
	VPAND     Y15, Y1, Y5; \
	VPAND     Y15, Y2, Y6; \
	VPAND     Y15, Y3, Y7; \
	VPCMPGTD  Y14, Y4, Y9; \
	VPCMPGTD  Y14, Y5, Y10; \
	VPCMPGTD  Y14, Y6, Y11; \
	VPCMPGTD  Y14, Y7, Y12; \
	VPANDN    Y4, Y9, Y4; \
	VPANDN    Y5, Y10, Y5; \
	VPANDN    Y6, Y11, Y6; \
	VPANDN    Y7, Y12, Y7; \
	VPOR      Y9, Y10, Y8; \
	VPOR      Y11, Y8, Y8; \
	VPOR      Y12, Y8, Y8

// AMAX leaves in Y8 (every lane) the largest of Y4–Y7, as unsigned integers (non-negative floats order the same).
#define AMAX \
	VPMAXUD      Y4, Y5, Y8; \
	VPMAXUD      Y6, Y7, Y9; \
	VPMAXUD      Y9, Y8, Y8; \
	VEXTRACTI128 $1, Y8, X9; \
	VPMAXUD      X9, X8, X8; \
	VPSHUFD      $0x4e, X8, X9; \
	VPMAXUD      X9, X8, X8; \
	VPSHUFD      $0xb1, X8, X9; \
	VPMAXUD      X9, X8, X8; \
	VPBROADCASTD X8, Y8

// func q4_0RowAVX2(dst *byte, src *float32, nb int)
TEXT ·q4_0RowAVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ nb+16(FP), CX
	BCAST32(0x7fffffff, Y15, X15)
	BCAST32(0x7f800000, Y14, X14)
	BCAST32(0x41080000, Y13, X13) // 8.5

q40Block:
	LOADABS
	AMAX
	// max = the first x whose |x| reaches amax, +0 when amax is 0 (every |x| zero or NaN).
	VXORPS    X10, X10, X10
	VMOVD     X8, AX
	TESTL     AX, AX
	JZ        q40Scale
	VPCMPEQD  Y8, Y4, Y9
	VMOVMSKPS Y9, AX
	VPCMPEQD  Y8, Y5, Y9
	VMOVMSKPS Y9, BX
	SHLL      $8, BX
	ORL       BX, AX
	VPCMPEQD  Y8, Y6, Y9
	VMOVMSKPS Y9, BX
	SHLL      $16, BX
	ORL       BX, AX
	VPCMPEQD  Y8, Y7, Y9
	VMOVMSKPS Y9, BX
	SHLL      $24, BX
	ORL       BX, AX
	BSFL      AX, AX
	VMOVSS    (SI)(AX*4), X10

q40Scale:
	// d = max / -8 (exact as a product by -1/8); id = d ? 1/d : 0.
	MOVL      $0xbe000000, AX
	VMOVD     AX, X11
	VMULSS    X11, X10, X10
	VCVTPS2PH $0, X10, X11
	VMOVD     X11, AX
	MOVW      AX, (DI)
	VXORPS    X12, X12, X12
	VUCOMISS  X12, X10
	JNE       q40Inv
	JP        q40Inv
	JMP       q40Codes

q40Inv:
	MOVL   $0x3f800000, AX
	VMOVD  AX, X12
	VDIVSS X10, X12, X12

q40Codes:
	// q = MIN(15, (int8_t)(x*id + 8.5f)); byte j = q[j] | q[j+16]<<4.
	VBROADCASTSS X12, Y12
	VMULPS       Y12, Y0, Y0
	VMULPS       Y12, Y1, Y1
	VMULPS       Y12, Y2, Y2
	VMULPS       Y12, Y3, Y3
	VADDPS       Y13, Y0, Y0
	VADDPS       Y13, Y1, Y1
	VADDPS       Y13, Y2, Y2
	VADDPS       Y13, Y3, Y3
	VCVTTPS2DQ   Y0, Y0
	VCVTTPS2DQ   Y1, Y1
	VCVTTPS2DQ   Y2, Y2
	VCVTTPS2DQ   Y3, Y3
	VPSLLD       $24, Y0, Y0
	VPSLLD       $24, Y1, Y1
	VPSLLD       $24, Y2, Y2
	VPSLLD       $24, Y3, Y3
	VPSRAD       $24, Y0, Y0
	VPSRAD       $24, Y1, Y1
	VPSRAD       $24, Y2, Y2
	VPSRAD       $24, Y3, Y3
	BCAST32(15, Y9, X9)
	VPMINSD      Y9, Y0, Y0
	VPMINSD      Y9, Y1, Y1
	VPMINSD      Y9, Y2, Y2
	VPMINSD      Y9, Y3, Y3
	VPSLLD       $4, Y2, Y2
	VPSLLD       $4, Y3, Y3
	VPOR         Y2, Y0, Y0
	VPOR         Y3, Y1, Y1
	BCAST32(0xff, Y9, X9)
	VPAND        Y9, Y0, Y0
	VPAND        Y9, Y1, Y1
	VPACKUSDW    Y1, Y0, Y0
	VPERMQ       $0xd8, Y0, Y0
	VEXTRACTI128 $1, Y0, X1
	VPACKUSWB    X1, X0, X0
	VMOVDQU      X0, 2(DI)

	ADDQ $128, SI
	ADDQ $18, DI
	DECQ CX
	JNZ  q40Block
	VZEROUPPER
	RET

// func q8_0RowAVX2(dst *byte, src *float32, nb int) int
// It stops before the first block holding a NaN, whose MAX(amax, fabsf(v)) chain the caller replays, and
// returns the number of blocks done.
TEXT ·q8_0RowAVX2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ nb+16(FP), CX
	XORQ DX, DX
	BCAST32(0x7fffffff, Y15, X15)
	BCAST32(0x7f800000, Y14, X14)
	BCAST32(0x3effffff, Y13, X13) // the float below 0.5

q80Block:
	CMPQ DX, CX
	JEQ  q80Done
	LOADABS
	VPTEST Y8, Y8
	JNZ    q80Done
	AMAX
	// d = amax / 127; id = d ? 1/d : 0.
	MOVL      $0x42fe0000, AX
	VMOVD     AX, X11
	VDIVSS    X11, X8, X10
	VCVTPS2PH $0, X10, X11
	VMOVD     X11, AX
	MOVW      AX, (DI)
	VXORPS    X12, X12, X12
	VUCOMISS  X12, X10
	JNE       q80Inv
	JP        q80Inv
	JMP       q80Codes

q80Inv:
	MOVL   $0x3f800000, AX
	VMOVD  AX, X12
	VDIVSS X10, X12, X12

q80Codes:
	// q = (int8_t)roundf(x*id): add the float below 0.5 with the product's sign, truncate, keep the low byte.
	VBROADCASTSS X12, Y12
	VMULPS       Y12, Y0, Y0
	VMULPS       Y12, Y1, Y1
	VMULPS       Y12, Y2, Y2
	VMULPS       Y12, Y3, Y3
	VPANDN       Y0, Y15, Y4
	VPANDN       Y1, Y15, Y5
	VPANDN       Y2, Y15, Y6
	VPANDN       Y3, Y15, Y7
	VPOR         Y13, Y4, Y4
	VPOR         Y13, Y5, Y5
	VPOR         Y13, Y6, Y6
	VPOR         Y13, Y7, Y7
	VADDPS       Y4, Y0, Y0
	VADDPS       Y5, Y1, Y1
	VADDPS       Y6, Y2, Y2
	VADDPS       Y7, Y3, Y3
	VCVTTPS2DQ   Y0, Y0
	VCVTTPS2DQ   Y1, Y1
	VCVTTPS2DQ   Y2, Y2
	VCVTTPS2DQ   Y3, Y3
	VPSLLD       $24, Y0, Y0
	VPSLLD       $24, Y1, Y1
	VPSLLD       $24, Y2, Y2
	VPSLLD       $24, Y3, Y3
	VPSRAD       $24, Y0, Y0
	VPSRAD       $24, Y1, Y1
	VPSRAD       $24, Y2, Y2
	VPSRAD       $24, Y3, Y3
	VPACKSSDW    Y1, Y0, Y0
	VPACKSSDW    Y3, Y2, Y2
	VPACKSSWB    Y2, Y0, Y0
	LEAQ         q80Order<>(SB), AX
	VMOVDQU      (AX), Y1
	VPERMD       Y0, Y1, Y0
	VMOVDQU      Y0, 2(DI)

	ADDQ $128, SI
	ADDQ $34, DI
	INCQ DX
	JMP  q80Block

q80Done:
	MOVQ DX, ret+24(FP)
	VZEROUPPER
	RET

// After the in-lane packs the dwords of Y0 hold elements 0-3, 8-11, 16-19, 24-27, 4-7, 12-15, 20-23, 28-31.
DATA q80Order<>+0(SB)/4, $0
DATA q80Order<>+4(SB)/4, $4
DATA q80Order<>+8(SB)/4, $1
DATA q80Order<>+12(SB)/4, $5
DATA q80Order<>+16(SB)/4, $2
DATA q80Order<>+20(SB)/4, $6
DATA q80Order<>+24(SB)/4, $3
DATA q80Order<>+28(SB)/4, $7
GLOBL q80Order<>(SB), RODATA|NOPTR, $32
