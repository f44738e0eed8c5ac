package train

import (
	"fmt"
	"math"
	"strings"
	"unsafe"

	"github.com/lathe-ml/lathe/adapter"
	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/internal/kernels"
)

// loraFactors is one adapter on one matrix: ΔW = scale·B·A with A rank×cols and B rows×rank, kept apart so that
// x·ΔWᵀ costs two thin products instead of a dense update. On the token embedding they are an embedding LoRA in
// PEFT's layout, ΔE = scale·(B·A)ᵀ with A rank×vocab and B Embd×rank, which embedRows adds at lookup.
type loraFactors struct {
	a, b  []float32
	rank  int
	scale float32
	// rowScale is DoRA's m/‖W + scale·B·A‖ of each output row, which multiplies the row's output (base and
	// update alike); nil for a plain LoRA.
	rowScale []float32
}

// ApplyAdapter adds a LoRA adapter without merging it, as llama.cpp's --lora does: every adapted matrix computes
// x·Wᵀ + s·(x·Aᵀ)·Bᵀ, where s is the adapter's own scale (lora_alpha/r, or what its configuration says) times mult.
// A DoRA module (PEFT's use_dora, lora_magnitude_vector m) then multiplies each output row by m/‖W + s·B·A‖, as
// PEFT's DoraLinearLayer does in evaluation; an adapter applied after it adds to the rescaled output. A LoRA of the
// token embedding (PEFT's lora_embedding_A/B on embed_tokens, GGUF's token_embd.weight.lora_a/b) adds
// s·B·A[:, t] to the row of token t at lookup, as llama.cpp's build_inp_embd does; a tied head keeps the base table.
// PEFT and GGUF adapters both apply to GGUF and Hugging Face models: the rotary row order of the q and k factors is
// converted when the adapter and the model differ. The adapter's files may be closed afterwards.
func (m *Model) ApplyAdapter(a *adapter.Adapter, mult float64) error {
	if len(a.Extra) > 0 {
		return fmt.Errorf("train: adapter %s has tensors other than LoRA factors (%s), which lathe does not apply",
			a.Path, strings.Join(a.Extra, ", "))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	type pending struct {
		w *matrix
		f loraFactors
	}
	var all []pending
	var embeds []loraFactors
	for i := range a.Modules {
		mod := &a.Modules[i]
		name := mod.Target
		if a.Format == adapter.PEFT {
			var err error
			if name, err = convert.GGUFName(mod.Target, m.Config.Layers); err != nil {
				return fmt.Errorf("train: adapter %s: %w", a.Path, err)
			}
		}
		if name == m.embd.name {
			f, err := m.embedModule(mod, mult)
			if err != nil {
				return fmt.Errorf("train: adapter %s: module %s: %w", a.Path, mod.Name, err)
			}
			embeds = append(embeds, f)
			continue
		}
		w := m.matrix(name)
		if w == nil {
			return fmt.Errorf("train: adapter %s: module %s adapts %s, which this model does not have as a "+
				"projection matrix", a.Path, mod.Name, name)
		}
		if mod.Layout != adapter.Linear {
			return fmt.Errorf("train: adapter %s: module %s is not a linear LoRA (fan-in-fan-out adapters are not "+
				"supported unmerged; embedding LoRAs only on the token embedding)", a.Path, mod.Name)
		}
		r := mod.Rank
		if len(mod.A.Shape) != 2 || len(mod.B.Shape) != 2 || mod.A.Shape[0] != int64(r) ||
			mod.A.Shape[1] != int64(w.cols) || mod.B.Shape[0] != int64(w.rows) || mod.B.Shape[1] != int64(r) {
			return fmt.Errorf("train: adapter %s: module %s has A %v and B %v, want [%d %d] and [%d %d] for %s",
				a.Path, mod.Name, mod.A.Shape, mod.B.Shape, r, w.cols, w.rows, r, name)
		}
		f := loraFactors{a: make([]float32, r*w.cols), b: make([]float32, w.rows*r), rank: r,
			scale: float32(mod.Scale * mult)}
		if err := decode(mod.A.DType, f.a, mod.A.Data); err != nil {
			return fmt.Errorf("train: adapter %s: %s: %w", a.Path, mod.A.Name, err)
		}
		if err := decode(mod.B.DType, f.b, mod.B.Data); err != nil {
			return fmt.Errorf("train: adapter %s: %s: %w", a.Path, mod.B.Name, err)
		}
		var mag []float32
		if mod.Magnitude != nil { // adapter.Open checked that it has one value per row of B
			mag = make([]float32, w.rows)
			if err := decode(mod.Magnitude.DType, mag, mod.Magnitude.Data); err != nil {
				return fmt.Errorf("train: adapter %s: %s: %w", a.Path, mod.Magnitude.Name, err)
			}
		}
		// PEFT factors follow Hugging Face's row order, GGUF ones (convert_lora_to_gguf permutes lora_b) GGUF's.
		if heads := m.rotaryHeads(name); heads > 0 && (a.Format == adapter.PEFT) != m.Config.RopeNeoX {
			permuted := make([]float32, len(f.b))
			convert.PermuteRotary(floatBytes(permuted), floatBytes(f.b), heads, 4*r, a.Format == adapter.PEFT)
			f.b = permuted
			if mag != nil {
				permuted := make([]float32, len(mag))
				convert.PermuteRotary(floatBytes(permuted), floatBytes(mag), heads, 4, a.Format == adapter.PEFT)
				mag = permuted
			}
		}
		if mag != nil {
			f.rowScale = make([]float32, w.rows)
			var buf []float32
			doraNorms(f.rowScale, w, f.a, f.b, r, f.scale, &buf)
			for i, v := range mag {
				f.rowScale[i] = v / f.rowScale[i]
			}
		}
		all = append(all, pending{w, f})
	}
	for _, p := range all {
		p.w.adapters = append(p.w.adapters, p.f)
	}
	m.embd.adapters = append(m.embd.adapters, embeds...)
	return nil
}

// embedModule decodes a LoRA of the token embedding — PEFT's lora_embedding_A/B or GGUF's token_embd lora_a/lora_b
// — into the factors embedRows adds at lookup (embedlora.go), scaled by the module's scale times mult.
func (m *Model) embedModule(mod *adapter.Module, mult float64) (loraFactors, error) {
	if mod.Layout != adapter.Transposed && mod.Layout != adapter.GGUFEmbedding {
		return loraFactors{}, fmt.Errorf("a LoRA of %s must be an embedding LoRA (PEFT lora_embedding_A/B, GGUF "+
			"token_embd.weight.lora_a/b), not a linear one", m.embd.name)
	}
	if mod.Magnitude != nil {
		return loraFactors{}, fmt.Errorf("DoRA on the token embedding is not supported unmerged")
	}
	r, vocab, d := mod.Rank, m.Config.Vocab, m.Config.Embd
	gguf := mod.Layout == adapter.GGUFEmbedding
	if err := checkEmbedShapes(mod.A.Shape, mod.B.Shape, gguf, r, vocab, d); err != nil {
		return loraFactors{}, err
	}
	a, b := make([]float32, r*vocab), make([]float32, d*r)
	if err := decode(mod.A.DType, a, mod.A.Data); err != nil {
		return loraFactors{}, fmt.Errorf("%s: %w", mod.A.Name, err)
	}
	if err := decode(mod.B.DType, b, mod.B.Data); err != nil {
		return loraFactors{}, fmt.Errorf("%s: %w", mod.B.Name, err)
	}
	return loraFactors{a: embedFactors(a, gguf, r, vocab), b: b, rank: r, scale: float32(mod.Scale * mult)}, nil
}

// doraNorms sets dst to the norm of each row of W + scale·B·A (A rank×cols, B rows×rank): DoRA's denominator,
// PEFT's DoraLinearLayer.get_weight_norm (torch.linalg.norm over dim 1 of the out×in weight), in float32 over the
// weight as stored, decoded a block of rows at a time into buf.
func doraNorms(dst []float32, w *matrix, a, b []float32, rank int, scale float32, buf *[]float32) {
	w.blocks(buf, func(r0, nr int, wb []float32) {
		kernels.Sgemm(false, false, nr, w.cols, rank, scale, b[r0*rank:], rank, a, w.cols, 1, wb, w.cols)
		for i := range nr {
			row := wb[i*w.cols : (i+1)*w.cols]
			dst[r0+i] = float32(math.Sqrt(float64(kernels.SumSquares(row))))
		}
	})
}

// matrix finds a projection by GGUF name.
func (m *Model) matrix(name string) *matrix {
	for i := range m.layers {
		l := &m.layers[i]
		for _, w := range []*matrix{&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down} {
			if w.name == name {
				return w
			}
		}
	}
	if m.output.name == name {
		return m.output
	}
	return nil
}

// rotaryHeads is the head count whose rows rope rotates for q and k projections, 0 for other matrices.
func (m *Model) rotaryHeads(name string) int {
	switch {
	case strings.HasSuffix(name, ".attn_q.weight"):
		return m.Config.Heads
	case strings.HasSuffix(name, ".attn_k.weight"):
		return m.Config.HeadsKV
	}
	return 0
}

func floatBytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f))
}
