//go:build !amd64 && !386

package kernels

// Every other Go target has 32 floating-point registers: room for a 4×4 scalar tile.
var (
	goSgemm = portableImpl[float32](4)
	goDgemm = portableImpl[float64](4)
)
