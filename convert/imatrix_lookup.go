package convert

import "math"

// Lookup returns the mean squared input of every column recorded for a tensor. The file names tensors as GGUF
// does (blk.0.attn_q.weight); a Hugging Face llama name (model.layers.0.self_attn.q_proj.weight) is looked up under
// the name the converter gives it. That is sound for the columns: the converter's rotary permutation reorders the
// rows of q and k, never their columns, which are what the importance describes.
func (im *Imatrix) Lookup(name string) ([]float32, bool) {
	if e, ok := im.entry(name); ok {
		return e, true
	}
	if g, err := hfToGGUF(name, math.MaxInt64); err == nil {
		return im.entry(g)
	}
	return nil, false
}
