//go:build !amd64 || noasm

package kernels

var (
	sgemmImpls = []*gemmImpl[float32]{goSgemm}
	dgemmImpls = []*gemmImpl[float64]{goDgemm}
	sgemmImpl  = goSgemm
	dgemmImpl  = goDgemm
)

func fmaProbe() (func(n int), float64) { return nil, 0 }
