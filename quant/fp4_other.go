//go:build !amd64 || noasm

package quant

func fp4Indices(idx []uint8, x []float32, g *fp4Grid) { fp4IndicesGo(idx, x, g) }
