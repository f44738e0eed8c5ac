//go:build amd64 && !noasm

package kernels

import "unsafe"

// Implemented in pack_amd64.s.

//go:noescape
func copyRows(dst, src unsafe.Pointer, ldBytes, rowBytes, rows int)

//go:noescape
func transpose8x8s(dst, src unsafe.Pointer, ld, w, rows, k int)

//go:noescape
func transpose4x8s(dst, src unsafe.Pointer, ld, w, k int)

//go:noescape
func transpose64(dst, src unsafe.Pointer, ld, w, k int)

// copyRowsFast copies k rows of w elements (source stride ld) into d contiguously; the caller has checked the
// bounds. It reports false when the row size does not suit the assembly loop.
func copyRowsFast[T float](d, s []T, ld, w, k int) bool {
	size := int(unsafe.Sizeof(d[0]))
	if w*size%8 != 0 {
		return false
	}
	copyRows(unsafe.Pointer(&d[0]), unsafe.Pointer(&s[0]), ld*size, w*size, k)
	return true
}

// transposeFast writes the w×k matrix s (stride ld) transposed into d; the caller has checked the bounds. For
// 4-byte elements the assembly covers the 8×8 and 4×8 blocks and the rest (columns past a multiple of 8, the last
// w%4 rows) is left to the caller's loop, so it reports false unless it did everything.
func transposeFast[T float](d, s []T, ld, w, k int) bool {
	if unsafe.Sizeof(d[0]) == 8 {
		transpose64(unsafe.Pointer(&d[0]), unsafe.Pointer(&s[0]), ld, w, k)
		return true
	}
	return false
}

// transposeBlocks32 transposes the leading 8×8 and 4×8 blocks of the n×k matrix s (4-byte elements) into d
// (step stride w) and returns how many rows it covered, over columns 0..k8-1.
func transposeBlocks32[T float](d, s []T, ld, w, n, k int) (rows, k8 int) {
	k8 = k &^ 7
	if k8 == 0 || unsafe.Sizeof(d[0]) != 4 {
		return 0, 0
	}
	rows = n &^ 7
	if rows > 0 {
		transpose8x8s(unsafe.Pointer(&d[0]), unsafe.Pointer(&s[0]), ld, w, rows, k8)
	}
	if n-rows >= 4 {
		transpose4x8s(unsafe.Pointer(&d[rows]), unsafe.Pointer(&s[rows*ld]), ld, w, k8)
		rows += 4
	}
	return rows, k8
}
