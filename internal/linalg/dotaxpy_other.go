//go:build !amd64 || noasm

package linalg

func dotAxpy(a, x, y []float64, xr float64) float64 { return dotAxpyGo(a, x, y, xr) }
