//go:build !noasm

#include "textflag.h"

// Row kernels for the legacy types without an importance matrix, one 32-element block per iteration, with the
// float32 operations of quantize_row_q{4,5}_{0,1}_ref and quantize_row_q8_0_ref (VMULPS/VADDPS/VDIVSS, no FMA). The F16 block scale is
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

// PACK4 stores the 4-bit codes in Y0–Y3 (elements 0-7, 8-15, 16-23, 24-31) at off(DI): byte j is
// code j | code j+16 << 4, each code cut to a byte as the C assignment does.
#define PACK4(off) \
	VPSLLD       $4, Y2, Y2; \
	VPSLLD       $4, Y3, Y3; \
	VPOR         Y2, Y0, Y0; \
	VPOR         Y3, Y1, Y1; \
	BCAST32(0xff, Y9, X9); \
	VPAND        Y9, Y0, Y0; \
	VPAND        Y9, Y1, Y1; \
	VPACKUSDW    Y1, Y0, Y0; \
	VPERMQ       $0xd8, Y0, Y0; \
	VEXTRACTI128 $1, Y0, X1; \
	VPACKUSWB    X1, X0, X0; \
	VMOVDQU      X0, off(DI)

// PACK5 stores 5-bit codes from Y0–Y3: bit 4 of code j in bit j of the u32 at qh(DI), the low nibbles as PACK4
// at qs(DI).
#define PACK5(qh, qs) \
	VPSLLD    $27, Y0, Y9; \
	VMOVMSKPS Y9, AX; \
	VPSLLD    $27, Y1, Y9; \
	VMOVMSKPS Y9, BX; \
	SHLL      $8, BX; \
	ORL       BX, AX; \
	VPSLLD    $27, Y2, Y9; \
	VMOVMSKPS Y9, BX; \
	SHLL      $16, BX; \
	ORL       BX, AX; \
	VPSLLD    $27, Y3, Y9; \
	VMOVMSKPS Y9, BX; \
	SHLL      $24, BX; \
	ORL       BX, AX; \
	MOVL      AX, qh(DI); \
	BCAST32(0x0f, Y9, X9); \
	VPAND     Y9, Y0, Y0; \
	VPAND     Y9, Y1, Y1; \
	VPAND     Y9, Y2, Y2; \
	VPAND     Y9, Y3, Y3; \
	PACK4(qs)

// CODES: Y0–Y3 = (int32)(int8_t)(Yk·Y12 + Y13) after subtracting sub (a register holding 0 or the block min).
#define CODES(sub) \
	VSUBPS     sub, Y0, Y0; \
	VSUBPS     sub, Y1, Y1; \
	VSUBPS     sub, Y2, Y2; \
	VSUBPS     sub, Y3, Y3; \
	VMULPS     Y12, Y0, Y0; \
	VMULPS     Y12, Y1, Y1; \
	VMULPS     Y12, Y2, Y2; \
	VMULPS     Y12, Y3, Y3; \
	VADDPS     Y13, Y0, Y0; \
	VADDPS     Y13, Y1, Y1; \
	VADDPS     Y13, Y2, Y2; \
	VADDPS     Y13, Y3, Y3; \
	VCVTTPS2DQ Y0, Y0; \
	VCVTTPS2DQ Y1, Y1; \
	VCVTTPS2DQ Y2, Y2; \
	VCVTTPS2DQ Y3, Y3; \
	VPSLLD     $24, Y0, Y0; \
	VPSLLD     $24, Y1, Y1; \
	VPSLLD     $24, Y2, Y2; \
	VPSLLD     $24, Y3, Y3; \
	VPSRAD     $24, Y0, Y0; \
	VPSRAD     $24, Y1, Y1; \
	VPSRAD     $24, Y2, Y2; \
	VPSRAD     $24, Y3, Y3

// MINCODE clamps Y0–Y3 to at most y.
#define MINCODE(y) \
	VPMINSD y, Y0, Y0; \
	VPMINSD y, Y1, Y1; \
	VPMINSD y, Y2, Y2; \
	VPMINSD y, Y3, Y3

// INVERSE sets X12 = X10 ? 1/X10 : 0, using X9.
#define INVERSE(skip) \
	VXORPS   X12, X12, X12; \
	VUCOMISS X12, X10; \
	JNE      2(PC); \
	JNP      skip; \
	MOVL     $0x3f800000, AX; \
	VMOVD    AX, X12; \
	VDIVSS   X10, X12, X12

// F16AT stores x as F16 at off(DI).
#define F16AT(x, off) \
	VCVTPS2PH $0, x, X9; \
	VMOVD     X9, AX; \
	MOVW      AX, off(DI)

// func symRowAVX2(dst *byte, src *float32, nb int, q5 bool)
// quantize_row_q4_0_ref, or quantize_row_q5_0_ref when q5: d = max/-8 (-16), where max is the first element
// of largest magnitude; q = MIN(15 (31), (int8_t)(x/d + 8.5 (16.5))).
TEXT ·symRowAVX2(SB), NOSPLIT, $0-25
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ nb+16(FP), CX
	MOVB q5+24(FP), R8
	BCAST32(0x7fffffff, Y15, X15)
	BCAST32(0x7f800000, Y14, X14)
	MOVL $0xbe000000, R9             // -1/8
	MOVL $0x41080000, AX             // 8.5
	MOVL $15, R10
	TESTB R8, R8
	JZ    symConsts
	MOVL $0xbd800000, R9             // -1/16
	MOVL $0x41840000, AX             // 16.5
	MOVL $31, R10

symConsts:
	VMOVD        AX, X13
	VPBROADCASTD X13, Y13

symBlock:
	LOADABS
	AMAX
	// max = the first x whose |x| reaches amax, +0 when amax is 0 (every |x| zero or NaN).
	VXORPS    X10, X10, X10
	VMOVD     X8, AX
	TESTL     AX, AX
	JZ        symScale
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

symScale:
	VMOVD  R9, X9
	VMULSS X9, X10, X10              // d = max/-8 (-16): a product by a power of two is the same division
	F16AT(X10, 0)
	INVERSE(symCodes)

symCodes:
	VBROADCASTSS X12, Y12
	VXORPS       Y8, Y8, Y8
	CODES(Y8)
	VMOVD        R10, X9
	VPBROADCASTD X9, Y9
	MINCODE(Y9)
	TESTB        R8, R8
	JNZ          symQ5
	PACK4(2)
	ADDQ         $18, DI
	JMP          symNext

symQ5:
	PACK5(2, 6)
	ADDQ $22, DI

symNext:
	ADDQ $128, SI
	DECQ CX
	JNZ  symBlock
	VZEROUPPER
	RET

// REDUCE leaves op of the 8 lanes of Y8 in every lane, using Y9.
#define REDUCE(op) \
	VPERM2F128 $1, Y8, Y8, Y9; \
	op         Y9, Y8, Y8; \
	VPERMILPS  $0x4e, Y8, Y9; \
	op         Y9, Y8, Y8; \
	VPERMILPS  $0xb1, Y8, Y9; \
	op         Y9, Y8, Y8

// FIRSTZERO sets x to the first element of the block equal to zero (with its sign), using Y9, AX, BX.
#define FIRSTZERO(x) \
	VXORPS    Y9, Y9, Y9; \
	VCMPPS    $0, Y9, Y0, Y9; \
	VMOVMSKPS Y9, AX; \
	VXORPS    Y9, Y9, Y9; \
	VCMPPS    $0, Y9, Y1, Y9; \
	VMOVMSKPS Y9, BX; \
	SHLL      $8, BX; \
	ORL       BX, AX; \
	VXORPS    Y9, Y9, Y9; \
	VCMPPS    $0, Y9, Y2, Y9; \
	VMOVMSKPS Y9, BX; \
	SHLL      $16, BX; \
	ORL       BX, AX; \
	VXORPS    Y9, Y9, Y9; \
	VCMPPS    $0, Y9, Y3, Y9; \
	VMOVMSKPS Y9, BX; \
	SHLL      $24, BX; \
	ORL       BX, AX; \
	BSFL      AX, AX; \
	VMOVSS    (SI)(AX*4), x

// func asymRowAVX2(dst *byte, src *float32, nb int, q5 bool)
// quantize_row_q4_1_ref, or quantize_row_q5_1_ref when q5: min and max from FLT_MAX/-FLT_MAX seeds with NaN
// skipped, d = (max-min)/15 (31), q = MIN(15, (int8_t)((x-min)/d + 0.5)) or (uint8_t)((x-min)/d + 0.5).
// Lane-parallel minima give the sequential loop's value; only the sign of a zero result depends on the order,
// so a zero min or max is replaced by the block's first zero, the one the C loop keeps.
TEXT ·asymRowAVX2(SB), NOSPLIT, $0-25
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ nb+16(FP), CX
	MOVB q5+24(FP), R8
	BCAST32(0x3f000000, Y13, X13)    // 0.5
	BCAST32(15, Y11, X11)
	MOVL $0x41700000, R9             // 15
	TESTB R8, R8
	JZ    asymBlock
	MOVL $0x41f80000, R9             // 31

asymBlock:
	VMOVUPS (SI), Y0
	VMOVUPS 32(SI), Y1
	VMOVUPS 64(SI), Y2
	VMOVUPS 96(SI), Y3
	BCAST32(0x7f7fffff, Y8, X8)
	VMINPS  Y8, Y0, Y8               // lo = x < lo ? x : lo
	VMINPS  Y8, Y1, Y8
	VMINPS  Y8, Y2, Y8
	VMINPS  Y8, Y3, Y8
	REDUCE(VMINPS)
	VMOVAPS X8, X14                  // min
	BCAST32(0xff7fffff, Y8, X8)
	VMAXPS  Y8, Y0, Y8               // hi = x > hi ? x : hi
	VMAXPS  Y8, Y1, Y8
	VMAXPS  Y8, Y2, Y8
	VMAXPS  Y8, Y3, Y8
	REDUCE(VMAXPS)
	VMOVAPS X8, X15                  // max
	VXORPS  X9, X9, X9
	VUCOMISS X9, X14
	JNE     asymMax
	FIRSTZERO(X14)

asymMax:
	VXORPS   X9, X9, X9
	VUCOMISS X9, X15
	JNE      asymScale
	FIRSTZERO(X15)

asymScale:
	VSUBSS X14, X15, X10             // max - min
	VMOVD  R9, X9
	VDIVSS X9, X10, X10              // d
	F16AT(X10, 0)
	F16AT(X14, 2)
	INVERSE(asymCodes)

asymCodes:
	VBROADCASTSS X12, Y12
	VBROADCASTSS X14, Y14
	CODES(Y14)
	TESTB        R8, R8
	JNZ          asymQ5
	MINCODE(Y11)
	PACK4(4)
	ADDQ         $20, DI
	JMP          asymNext

asymQ5:
	PACK5(4, 8)
	ADDQ $24, DI

asymNext:
	ADDQ $128, SI
	DECQ CX
	JNZ  asymBlock
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
