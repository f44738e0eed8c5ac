//go:build !amd64 || noasm

package kernels

func copyRowsFast[T float](d, s []T, ld, w, k int) bool  { return false }
func transposeFast[T float](d, s []T, ld, w, k int) bool { return false }

func transposeBlocks32[T float](d, s []T, ld, w, n, k int) (rows, k8 int) { return 0, 0 }
