//go:build !noasm

package quant

//go:noescape
func fp4IndexAVX2(idx *byte, x *float32, grid *fp4Grid, n int)

// fp4Indices sets idx[i] to g.bestIndex(x[i]), 8 elements per instruction with AVX2.
func fp4Indices(idx []uint8, x []float32, g *fp4Grid) {
	n := len(x)
	if !hasAVX2 || n%8 != 0 || n == 0 {
		fp4IndicesGo(idx, x, g)
		return
	}
	_ = idx[n-1]
	fp4IndexAVX2(&idx[0], &x[0], g, n)
}
