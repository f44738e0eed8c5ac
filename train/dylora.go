package train

import (
	"fmt"
	"slices"
)

// Training methods: TrainOptions.Method.
const (
	MethodLoRA = "lora"
	// MethodDyLoRA (Valipour et al., EACL 2023, arXiv 2210.07558) trains the ranks of one LoRA as a nested
	// family: every optimizer step draws b uniformly from 1..Rank and computes with the first b rows of A and
	// columns of B scaled by α/b (the paper's forward pass), so that any leading slice of the trained factors is
	// itself a LoRA of rank b with the usual α/b scale. The step's gradient is that of the whole truncated pair,
	// the paper's update of W↓b; its "frozen" mode, where only the b-th row of A and column of B learn, is an
	// option (TrainOptions.DyLoRAFrozen).
	MethodDyLoRA = "dylora"
)

// SetRank makes the training and validation passes use only the first b ranks of every factor pair, with the scale
// LoRAConfig gives rank b (α/b, or α/√b with RSLoRA); SetRank(Rank) restores the full adapter. Gradients of the
// unused ranks are zero.
func (l *LoRA) SetRank(b int) error {
	if b < 1 || b > l.Rank {
		return fmt.Errorf("train: rank %d: want 1..%d", b, l.Rank)
	}
	cfg := l.LoRAConfig
	cfg.Rank = b
	scale := float32(cfg.Scale())
	for i := range l.layers {
		for _, lin := range l.layers[i].adapted() {
			lin.active, lin.scale = b, scale
		}
	}
	return nil
}

// freezeBelow zeroes, in grads (Params order), the gradients of the first b-1 ranks: DyLoRA's frozen update, which
// trains only the b-th row of A and column of B of a step that drew rank b.
func (l *LoRA) freezeBelow(grads [][]float32, b int) {
	for i := range l.layers {
		for _, lin := range l.layers[i].adapted() {
			da, db := grads[0], grads[1]
			grads = grads[2:]
			clear(da[:(b-1)*lin.w.cols])
			for r := range lin.w.rows {
				clear(db[r*l.Rank : r*l.Rank+b-1])
			}
		}
	}
}

// truncated returns copies of the factors (Params order) cut to their first b ranks.
func (l *LoRA) truncated(b int) [][]float32 {
	var out [][]float32
	for i := range l.layers {
		for _, lin := range l.layers[i].adapted() {
			tb := make([]float32, lin.w.rows*b)
			for r := range lin.w.rows {
				copy(tb[r*b:(r+1)*b], lin.b[r*l.Rank:])
			}
			out = append(out, slices.Clone(lin.a[:b*lin.w.cols]), tb)
		}
	}
	return out
}

// WritePEFTRank writes the first b ranks of the factors as a plain PEFT LoRA of rank b and the same alpha, whose
// scale α/b is the one a DyLoRA run trained that slice with (WritePEFT writes them all, rank Rank). Cutting a plain
// LoRA this way is not the best rank-b approximation of its update: that is `lathe adapters resize`.
func (l *LoRA) WritePEFTRank(dir string, b int) error {
	if b < 1 || b > l.Rank {
		return fmt.Errorf("train: write rank %d: want 1..%d", b, l.Rank)
	}
	if l.initial != nil {
		return fmt.Errorf("train: write rank %d: a %s adapter is written whole, against the original base", b, l.Init)
	}
	return l.writeFactorsRank(dir, l.truncated(b), b)
}
