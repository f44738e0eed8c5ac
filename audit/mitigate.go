package audit

import (
	"fmt"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/spectral"
	"github.com/lathe-ml/lathe/tensor"
)

// Mitigation reports what ReduceIntruders did.
type Mitigation struct {
	Adapter   string            `json:"adapter"`
	Base      string            `json:"base"`
	Out       string            `json:"out"`
	Lambda    float64           `json:"lambda"`
	K         int               `json:"k"`
	Epsilon   float64           `json:"epsilon"`
	Modules   []MitigatedModule `json:"modules"`
	Intruders int               `json:"intruders"` // directions scaled, over all modules
}

// MitigatedModule is one module's outcome: the ranks of the intruder directions of W + ΔW that were scaled by λ, or
// why the module was copied unchanged.
type MitigatedModule struct {
	Name      string `json:"name"`
	Intruders []int  `json:"intruders"`
	Skipped   string `json:"skipped,omitempty"`
}

// ReduceIntruders writes to outDir a copy of a PEFT adapter whose intruder dimensions against its base are damped,
// as PEFT's reduce_intruder_dimension does (spectral.ReduceIntruders, per module): same configuration, same tensor
// names, ranks and dtypes. Modules without intruders, embedding and fan_in_fan_out modules (whose update PEFT
// transposes), modules that do not fit the base and those opts.Include rejects are copied unchanged. As in PEFT, a DoRA module's magnitude
// vector is kept and only its low-rank part is changed.
func ReduceIntruders(adapterPath, basePath, outDir string, mo spectral.MitigationOptions, opts Options) (*Mitigation, error) {
	a, err := adapter.Open(adapterPath)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	if a.Format != adapter.PEFT {
		return nil, fmt.Errorf("%s: intruder mitigation writes PEFT adapters and needs one as input (got %s)", adapterPath, a.Format)
	}
	base, err := modelfile.Open(basePath)
	if err != nil {
		return nil, err
	}
	defer base.Close()
	rep := &Mitigation{Adapter: adapterPath, Base: basePath, Out: outDir, Lambda: mo.Lambda, K: mo.K, Epsilon: mo.Epsilon,
		Modules: make([]MitigatedModule, len(a.Modules))}
	replaced := make([][2]tensor.View, len(a.Modules))
	err = forEach(len(a.Modules), opts, func(i int) error {
		m := &a.Modules[i]
		out := &rep.Modules[i]
		out.Name, out.Intruders = m.Name, []int{}
		if opts.Include != nil && !opts.Include(m.Target) {
			out.Skipped = "not selected"
			return nil
		}
		if m.Layout != adapter.Linear {
			out.Skipped = "embedding or fan_in_fan_out module"
			return nil
		}
		if out.Skipped = baseMismatch(base, m); out.Skipped != "" {
			return nil
		}
		w, err := loadMatrix(base, m.Target)
		if err != nil {
			return err
		}
		b, aa, err := m.Factors()
		if err != nil {
			return err
		}
		nb, na, found, err := spectral.ReduceIntruders(w, b, aa, m.Scale, mo)
		if err != nil {
			return fmt.Errorf("module %s: %w", m.Name, err)
		}
		out.Intruders = found.Left
		if len(found.Left) == 0 {
			return nil
		}
		if replaced[i][0], err = encode(m.B, nb); err != nil {
			return err
		}
		replaced[i][1], err = encode(m.A, na)
		return err
	})
	if err != nil {
		return nil, err
	}
	replace := map[string]tensor.View{}
	for i, r := range replaced {
		if r[0].Name != "" {
			replace[r[0].Name], replace[r[1].Name] = r[0], r[1]
			rep.Intruders += len(rep.Modules[i].Intruders)
		}
	}
	if err := a.WritePEFT(outDir, replace); err != nil {
		return nil, err
	}
	return rep, nil
}

// encode stores m in like's name, dtype and (two-dimensional) shape.
func encode(like tensor.View, m *spectral.Matrix) (tensor.View, error) {
	f := make([]float32, len(m.Data))
	for i, v := range m.Data {
		f[i] = float32(v)
	}
	shape := tensor.Shape{int64(m.Rows), int64(m.Cols)}
	size, err := shape.Bytes(like.DType)
	if err != nil {
		return tensor.View{}, err
	}
	data := make([]byte, size)
	if err := tensor.FromFloat32(data, f, like.DType); err != nil {
		return tensor.View{}, fmt.Errorf("tensor %q: %w", like.Name, err)
	}
	return tensor.NewView(like.Name, like.DType, shape, data)
}
