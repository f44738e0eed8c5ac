package train

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// MethodDoRA is DoRA (S.-Y. Liu et al., "DoRA: Weight-Decomposed Low-Rank Adaptation", ICML 2024, arXiv
// 2402.09353) as PEFT computes it (LoraConfig use_dora=True): each adapted weight is W' = m ⊙ (W + s·B·A) /
// ‖W + s·B·A‖, the norm taken over each output row, with a trainable magnitude m (one value per row, initialised
// to the row norms of W) beside LoRA factors A and B. Its result is a PEFT DoRA adapter.
const MethodDoRA = "dora"

func init() {
	registerMethod(MethodDoRA, methodSpec{
		summary: "DoRA: trainable magnitude per output row times the direction of W + B·A (PEFT use_dora)",
		args:    map[string]string{},
		build:   func(LoRAConfig, methodArgs) (method, error) { return doraMethod{}, nil },
		peft:    true,
	})
}

type doraMethod struct{}

func (doraMethod) project(s site) (projection, error) {
	rows := s.w.rows
	p := &doraLinear{lora: newPlainLoRA(s, float32(s.cfg.Scale())), m: make([]float32, rows),
		dm: make([]float32, rows), norm: make([]float32, rows), g: make([]float32, rows),
		z: make([]float32, s.rows*rows)}
	// PEFT's dora_init: m = ‖W + s·B·A‖ with B = 0, so that the first forward pass is the base model's.
	var buf []float32
	doraNorms(p.m, s.w, p.lora.lin.a, p.lora.lin.b, s.cfg.Rank, p.lora.lin.scale, &buf)
	return p, nil
}

// doraLinear is DoRA on one projection: y = g ⊙ (x·Wᵀ + s·(x·Aᵀ)·Bᵀ) with g = m / ‖W + s·B·A‖ per output row.
// As PEFT does (DoraLinearLayer.forward, weight_norm.detach(), following §4.3 of the paper), the norm is a constant
// in the backward pass: the gradient flows to m through g and to A and B through the product only, which saves
// the norm's gradient and, per the paper, changes little.
type doraLinear struct {
	lora  *plainLoRA // the product x·(W + s·B·A)ᵀ and its backward pass
	m, dm []float32  // the magnitude and its gradient
	norm  []float32  // ‖W + s·B·A‖ of each row, at the last forward pass
	g     []float32  // m / norm
	// z is x·(W + s·B·A)ᵀ of the last forward pass (site.rows × rows); the backward pass turns it into its gradient.
	z []float32
}

func (p *doraLinear) forward(y, x []float32, n int, buf *[]float32) {
	lin := &p.lora.lin
	rows := lin.w.rows
	doraNorms(p.norm, lin.w, lin.a, lin.b, lin.rank, lin.scale, buf)
	for r, v := range p.m {
		p.g[r] = v / p.norm[r]
	}
	z := p.z[:n*rows]
	p.lora.forward(z, x, n, buf)
	parallel(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			for r, g := range p.g {
				y[i*rows+r] = g * z[i*rows+r]
			}
		}
	})
}

// backward: dm_r += Σᵢ dyᵢᵣ·zᵢᵣ/‖·‖ᵣ, then the product's backward pass with dz = g ⊙ dy. Each thread sums its own
// rows of dm over the n rows of dy in order, so that the sum does not depend on the thread count.
func (p *doraLinear) backward(dx, dy, x []float32, n int, buf *[]float32) {
	rows := p.lora.lin.w.rows
	z := p.z[:n*rows]
	parallel(rows, func(lo, hi int) {
		for i := range n {
			for r := lo; r < hi; r++ {
				k := i*rows + r
				p.dm[r] += dy[k] * z[k] / p.norm[r]
				z[k] = dy[k] * p.g[r]
			}
		}
	})
	p.lora.backward(dx, z, x, n, buf)
}

func (p *doraLinear) params() ([][]float32, [][]float32) {
	a, da := p.lora.params()
	return append(a, p.m), append(da, p.dm)
}

// writeAdapter writes a PEFT DoRA adapter: the LoRA adapter of the factors (r and lora_alpha as trained) with
// use_dora true and each module's lora_magnitude_vector, the name PEFT ≥ 0.14 saves it under (adapter.Open reads
// the older .weight suffix too). A GGUF model's q and k magnitudes are put back in Hugging Face's row order, like B.
func (doraMethod) writeAdapter(l *LoRA, dir string) error {
	var factors [][]float32
	var ranks []int
	var mags []tensor.View
	for i := range l.layers {
		for j, lin := range l.layers[i].linears() {
			if !lin.trained() {
				continue
			}
			p := lin.proj.(*doraLinear)
			factors, ranks = append(factors, p.lora.lin.a, p.lora.lin.b), append(ranks, p.lora.lin.rank)
			m := p.m
			if heads := l.m.rotaryHeads(lin.w.name); heads > 0 && !l.m.Config.RopeNeoX {
				m = make([]float32, len(p.m))
				convert.PermuteRotary(floatBytes(m), floatBytes(p.m), heads, 4, false)
			}
			name := fmt.Sprintf("base_model.model.model.layers.%d.%s.lora_magnitude_vector", i, peftModules[j])
			mags = append(mags, floatView(name, tensor.Shape{int64(len(m))}, m))
		}
	}
	if err := l.writeLoRA(dir, factors, ranks, l.Alpha, l.RSLoRA); err != nil {
		return err
	}
	return addDoRA(dir, mags)
}

// addDoRA turns the PEFT LoRA adapter in dir into a DoRA one: mags join the factors and use_dora is set.
func addDoRA(dir string, mags []tensor.View) error {
	path := filepath.Join(dir, adapter.WeightsName)
	f, err := safetensors.Open(path)
	if err != nil {
		return err
	}
	var views []tensor.View
	for _, t := range f.Tensors() {
		v, err := f.Tensor(t.Name)
		if err != nil {
			f.Close()
			return err
		}
		v.Data = slices.Clone(v.Data) // the file is replaced below
		views = append(views, v)
	}
	f.Close()
	if err := safetensors.WriteFile(path, append(views, mags...), map[string]string{"format": "pt"}); err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, adapter.ConfigName)
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("%s: %w", cfgPath, err)
	}
	cfg["use_dora"] = json.RawMessage("true")
	if data, err = json.MarshalIndent(cfg, "", "  "); err != nil {
		return err
	}
	return atomicfile.WriteFile(cfgPath, data)
}
