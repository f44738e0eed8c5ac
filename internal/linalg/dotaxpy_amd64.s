//go:build amd64 && !noasm

#include "textflag.h"

// func dotAxpyAVX2(a, x, y *float64, n int, xr float64) float64
//
// Returns Σ a[j]·x[j] and adds a[j]·xr to y[j] for j < n, reading a once: sixteen elements per step in four
// independent FMA chains for the sum, then four at a time, then one.
TEXT ·dotAxpyAVX2(SB), NOSPLIT, $0-48
	MOVQ         a+0(FP), SI
	MOVQ         x+8(FP), DI
	MOVQ         y+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSD xr+32(FP), Y15
	VXORPD       Y0, Y0, Y0
	VXORPD       Y1, Y1, Y1
	VXORPD       Y2, Y2, Y2
	VXORPD       Y3, Y3, Y3

loop16:
	CMPQ        CX, $16
	JL          loop4
	VMOVUPD     0(SI), Y4
	VMOVUPD     32(SI), Y5
	VMOVUPD     64(SI), Y6
	VMOVUPD     96(SI), Y7
	VFMADD231PD 0(DI), Y4, Y0
	VFMADD231PD 32(DI), Y5, Y1
	VFMADD231PD 64(DI), Y6, Y2
	VFMADD231PD 96(DI), Y7, Y3
	VMOVUPD     0(DX), Y8
	VMOVUPD     32(DX), Y9
	VMOVUPD     64(DX), Y10
	VMOVUPD     96(DX), Y11
	VFMADD231PD Y4, Y15, Y8
	VFMADD231PD Y5, Y15, Y9
	VFMADD231PD Y6, Y15, Y10
	VFMADD231PD Y7, Y15, Y11
	VMOVUPD     Y8, 0(DX)
	VMOVUPD     Y9, 32(DX)
	VMOVUPD     Y10, 64(DX)
	VMOVUPD     Y11, 96(DX)
	ADDQ        $128, SI
	ADDQ        $128, DI
	ADDQ        $128, DX
	SUBQ        $16, CX
	JMP         loop16

loop4:
	CMPQ        CX, $4
	JL          reduce
	VMOVUPD     0(SI), Y4
	VFMADD231PD 0(DI), Y4, Y0
	VMOVUPD     0(DX), Y8
	VFMADD231PD Y4, Y15, Y8
	VMOVUPD     Y8, 0(DX)
	ADDQ        $32, SI
	ADDQ        $32, DI
	ADDQ        $32, DX
	SUBQ        $4, CX
	JMP         loop4

reduce:
	VADDPD       Y1, Y0, Y0
	VADDPD       Y3, Y2, Y2
	VADDPD       Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPD       X1, X0, X0
	VHADDPD      X0, X0, X0

tail:
	TESTQ       CX, CX
	JE          done
	VMOVSD      0(SI), X4
	VFMADD231SD 0(DI), X4, X0
	VMOVSD      0(DX), X8
	VFMADD231SD X4, X15, X8
	VMOVSD      X8, 0(DX)
	ADDQ        $8, SI
	ADDQ        $8, DI
	ADDQ        $8, DX
	DECQ        CX
	JMP         tail

done:
	VZEROUPPER
	VMOVSD X0, ret+40(FP)
	RET
