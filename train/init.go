package train

import (
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/internal/linalg"
	"github.com/lathe-ml/lathe/tensor"
)

// The initialisations LoRAConfig.Init names besides PEFT's default ("": A Kaiming-uniform, B zero).
const (
	// InitPiSSA puts the principal part of each adapted weight into its factors (PiSSA, spectral-prune-merge.md
	// §3.2; PEFT's init_lora_weights="pissa", full SVD): W = U·S·Vᵀ, A = √(S_r/s)·V_rᵀ, B = U_r·√(S_r/s) over the
	// r largest singular triplets, so that s·B·A = U_r·S_r·V_rᵀ, and the frozen weight becomes W − s·B·A.
	InitPiSSA = "pissa"
	// InitMiLoRA is the same construction over the r smallest singular triplets (MiLoRA, §3.3, reproduce_lora's
	// svd_init mode "min"): the factors start in the minor directions and the principal ones stay frozen.
	InitMiLoRA = "milora"
)

// spectralInit sets the factors of every adapted projection from the SVD of its weight (PiSSA or MiLoRA) and points
// the projection at its residual W − s·B·A, a float32 copy: the model's own weights are not touched, so the model
// keeps computing with the original base, and only this LoRA's passes see the residual. It returns the initial
// factors in Params order, which WritePEFT needs to express the trained update against the original base.
//
// The SVD is LAPACK's exact one in float64 (PEFT's torch.linalg.svd is float32; MiLoRA needs the smallest triplets,
// which a randomized SVD does not resolve), one matrix per thread: its cost grows as rows·cols·min(rows,cols), about
// 2.7 s on 2 threads for the 42 matrices of tiny-llama-a (up to 768×256), so that models of billions of parameters
// take hours. The residuals take 4 bytes per weight of every adapted projection.
func (l *LoRA) spectralInit() ([][]float32, error) {
	var lins []*loraLinear
	for i := range l.layers {
		lins = append(lins, l.layers[i].adapted()...)
	}
	for _, lin := range lins {
		if w := lin.w; w.dtype.IsQuantized() {
			return nil, fmt.Errorf("train: %s initialisation: %s is %s; the residual W − s·B·A of a quantized "+
				"weight is not quantized the same way (use an F32, F16 or BF16 model)",
				l.Init, w.name, w.dtype)
		}
		if k := min(lin.w.rows, lin.w.cols); lin.rank > k {
			return nil, fmt.Errorf("train: %s initialisation: rank %d exceeds the %d singular values of %s "+
				"(%d×%d)", l.Init, lin.rank, k, lin.w.name, lin.w.rows, lin.w.cols)
		}
	}
	initial := make([][]float32, 2*len(lins))
	errs := make([]error, len(lins))
	parallelUnits(len(lins), func(_, i int) {
		lin := lins[i]
		errs[i] = lin.svdFactors(l.Init == InitMiLoRA)
		initial[2*i] = append([]float32(nil), lin.a...)
		initial[2*i+1] = append([]float32(nil), lin.b...)
	})
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("train: %s initialisation of %s: %w", l.Init, lins[i].w.name, err)
		}
	}
	return initial, nil
}

// svdFactors is spectralInit for one projection: the factors from the top (or, minor, bottom) rank singular
// triplets, as pissa_init divides S_r by the scaling before splitting its square root between A and B, and the
// residual W − s·B·A computed in float64 from the float32 factors the passes use, so that the residual plus the
// update is W to float32 rounding.
func (lin *loraLinear) svdFactors(minor bool) error {
	w := lin.w
	rows, cols, r := w.rows, w.cols, lin.rank
	wf, u, s, vt, err := w.svd()
	if err != nil {
		return err
	}
	k, first := len(s), 0
	if minor {
		first = k - r
	}
	scale := float64(lin.scale)
	for j := range r {
		root := math.Sqrt(s[first+j] / scale)
		for c := range cols {
			lin.a[j*cols+c] = float32(root * vt[(first+j)*cols+c])
		}
		for i := range rows {
			lin.b[i*r+j] = float32(root * u[i*k+first+j])
		}
	}
	for i := range rows {
		for c := range cols {
			var d float64
			for j := range r {
				d += float64(lin.b[i*r+j]) * float64(lin.a[j*cols+c])
			}
			wf[i*cols+c] = float32(float64(wf[i*cols+c]) - scale*d)
		}
	}
	lin.w = &matrix{name: w.name, dtype: tensor.F32, rows: rows, cols: cols, rowBytes: 4 * cols,
		data: floatBytes(wf), f32: wf}
	return nil
}

// svd decodes the weight and returns it (float32, rows×cols) with its exact thin SVD in float64 (linalg.SVD: u
// rows×k, s descending, vt k×cols, k = min(rows, cols)).
func (w *matrix) svd() (wf []float32, u, s, vt []float64, err error) {
	wf = make([]float32, w.rows*w.cols)
	if err := w.decodeRows(wf, 0, w.rows); err != nil {
		return nil, nil, nil, nil, err
	}
	a := make([]float64, len(wf))
	for i, v := range wf {
		a[i] = float64(v)
	}
	u, s, vt, err = linalg.SVD(w.rows, w.cols, a)
	return wf, u, s, vt, err
}

// writeConverted writes the trained factors of a PiSSA or MiLoRA run as a plain LoRA against the original base:
// the trained and the initial factors are written as adapters and adapter.ConvertMutated combines them into the
// rank-2r update s·B·A − s·B₀·A₀ (PEFT's path_initial_model_for_weight_conversion).
func (l *LoRA) writeConverted(dir string) error {
	tmp, err := os.MkdirTemp("", "lathe-"+l.Init+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	trainedDir, initialDir := filepath.Join(tmp, "trained"), filepath.Join(tmp, "initial")
	params, _ := l.Params()
	var opened []*adapter.Adapter
	defer func() {
		for _, a := range opened {
			a.Close()
		}
	}()
	for _, s := range []struct {
		dir     string
		factors [][]float32
	}{{trainedDir, params}, {initialDir, l.initial}} {
		if err := l.writeFactors(s.dir, s.factors); err != nil {
			return err
		}
		a, err := adapter.Open(s.dir)
		if err != nil {
			return err
		}
		opened = append(opened, a)
	}
	if err := adapter.ConvertMutated(dir, opened[0], opened[1]); err != nil {
		return fmt.Errorf("train: converting the %s adapter to a plain LoRA: %w", l.Init, err)
	}
	return nil
}
