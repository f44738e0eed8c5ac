//go:build amd64 || 386

package kernels

// x86 has 16 (8 on 386) XMM registers: a 2×4 scalar tile is the largest that stays in registers.
var (
	goSgemm = portableImpl[float32](2)
	goDgemm = portableImpl[float64](2)
)
