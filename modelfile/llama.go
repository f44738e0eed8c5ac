package modelfile

import (
	"fmt"

	"github.com/lathe-ml/lathe/convert"
)

// llamaMapping pairs a Hugging Face llama checkpoint with its GGUF conversion.
type llamaMapping struct {
	names map[string]string // A's name → B's
	heads map[string]int64  // A's name → heads whose rotary rows the converter interleaved
	hfIsA bool
}

// LlamaMapping returns the Mapping between a Hugging Face llama checkpoint and a GGUF llama file, in either order:
// tensor names as llama.cpp's convert_hf_to_gguf.py maps them, and the rows of the q and k projections matched
// across the rotary permutation it applies (LlamaModel.permute; formats-quant.md §1.3). The pairing is the plan of
// convert.PlanHF, so that diff and convert can never disagree about it.
func LlamaMapping(a, b *Model) (Mapping, error) {
	g, hfIsA := b, true
	switch {
	case a.GGUF != nil && b.GGUF == nil:
		g, hfIsA = a, false
	case a.GGUF == nil && b.GGUF != nil:
	default:
		return nil, fmt.Errorf("the llama mapping pairs a Hugging Face checkpoint with a GGUF file; %s is %s and %s is %s",
			a.Path, a.Format, b.Path, b.Format)
	}
	plan, err := convert.PlanHF(g.GGUF, convert.HFOptions{})
	if err != nil {
		return nil, err
	}
	m := &llamaMapping{names: map[string]string{}, heads: map[string]int64{}, hfIsA: hfIsA}
	for _, e := range plan {
		from, to := e.Source, e.Name // GGUF → HF
		if hfIsA {
			from, to = to, from
		}
		m.names[from] = to
		if e.PermuteHeads > 0 {
			m.heads[from] = e.PermuteHeads
		}
	}
	return m, nil
}

// Pair implements Mapping. Within each head of 2·half rows, HF row j·half+i is GGUF row 2i+j
// (w.reshape(n_head, 2, half, cols).swapaxes(1, 2)).
func (m *llamaMapping) Pair(a string, rows int64) (string, []int64) {
	b, ok := m.names[a]
	if !ok {
		return a, nil
	}
	heads := m.heads[a]
	if heads == 0 || rows%(2*heads) != 0 {
		return b, nil
	}
	headRows := rows / heads
	half := headRows / 2
	rowOf := make([]int64, rows)
	for h := int64(0); h < rows; h += headRows {
		for i := range half {
			for j := range int64(2) {
				hf, gg := h+j*half+i, h+2*i+j
				if m.hfIsA {
					rowOf[gg] = hf
				} else {
					rowOf[hf] = gg
				}
			}
		}
	}
	return b, rowOf
}
