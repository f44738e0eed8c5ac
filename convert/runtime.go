package convert

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/lathe-ml/lathe/gguf"
)

// What a runtime needs to run a Hugging Face checkpoint as if it were its GGUF conversion: the header
// convert_hf_to_gguf.py would write, the GGUF name of each weight, and the rotary row order. Reading the model through
// the converter's own mapping keeps one definition of names, hyper-parameters and tokenizer keys.

// Header is what ToGGUF writes before the tensor data: the metadata (general.*, llama.* and tokenizer.ggml.* keys)
// and the tensors in output order, each naming its source tensor.
type Header struct {
	Metadata *gguf.Metadata
	Tensors  []PlanEntry
	// Computed holds the little-endian data of tensors the converter makes itself (rope_freqs.weight for Llama 3
	// rope scaling), by GGUF name.
	Computed map[string][]byte
}

// PlanHeader returns the header ToGGUF would write for m, without converting any weight.
func PlanHeader(m *HFModel, opts GGUFOptions) (*Header, error) {
	job, err := planGGUF(m, opts)
	if err != nil {
		return nil, err
	}
	return &Header{Metadata: job.md, Tensors: job.entries, Computed: job.extra}, nil
}

// TokenizerMetadata returns the tokenizer.ggml.* keys convert_hf_to_gguf.py writes for the tokenizer files in dir:
// tokenizer.model (SentencePiece) or tokenizer.json, with tokenizer_config.json, special_tokens_map.json and
// config.json when present. Without config.json the vocabulary size is the tokenizer's own.
func TokenizerMetadata(dir string) (*gguf.Metadata, error) {
	m := &HFModel{Dir: dir}
	var err error
	if m.Config, err = readJSONObject(filepath.Join(dir, "config.json")); err != nil {
		return nil, err
	}
	if m.TokenizerConfig, err = readJSONObject(filepath.Join(dir, "tokenizer_config.json")); err != nil {
		return nil, err
	}
	p := &llamaParams{cfg: m.Config}
	if n, ok := m.config().int("vocab_size"); ok {
		p.vocab = n
	} else if p.vocab, err = tokenizerSize(dir); err != nil {
		return nil, err
	}
	if p.vocab <= 0 || p.vocab > maxVocab {
		return nil, fmt.Errorf("convert: %s: vocabulary size %d is out of range (1..%d)", dir, p.vocab, maxVocab)
	}
	v, err := loadVocab(m, p, "")
	if err != nil {
		return nil, err
	}
	md := &gguf.Metadata{}
	v.setKVs(md)
	return md, nil
}

// tokenizerSize is the number of ids the tokenizer files in dir define: the pieces of tokenizer.model, or one past
// the largest id of tokenizer.json's vocabulary and added tokens.
func tokenizerSize(dir string) (int64, error) {
	spmPath := filepath.Join(dir, "tokenizer.model")
	if _, err := os.Stat(spmPath); err == nil {
		sp, err := OpenSentencePiece(spmPath)
		if err != nil {
			return 0, err
		}
		return int64(len(sp.Pieces)), nil
	}
	tok, err := openTokenizerJSON(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return 0, err
	}
	if tok == nil {
		return 0, fmt.Errorf("convert: %s: no tokenizer.model or tokenizer.json", dir)
	}
	var n int64
	for _, id := range tok.fullVocab() {
		n = max(n, id+1)
	}
	return n, nil
}

// GGUFName maps a Llama-family Hugging Face tensor name ("model.layers.3.mlp.up_proj.weight") to its GGUF name
// ("blk.3.ffn_up.weight"); the layer index must be below blocks.
func GGUFName(hfName string, blocks int) (string, error) { return hfToGGUF(hfName, int64(blocks)) }

// PermuteRotary reorders the rows of a q or k projection (or of a LoRA B factor of one) between the two rotary
// layouts: Hugging Face keeps each head's rotary pairs as two halves (rotate_half), GGUF as adjacent rows, because
// llama.cpp's LlamaModel.permute converts them for ggml's rope. src holds whole heads (heads·2·half rows of rowBytes
// bytes); toGGUF false undoes the permutation. dst and src must not overlap.
func PermuteRotary(dst, src []byte, heads, rowBytes int, toGGUF bool) {
	if heads <= 0 || rowBytes <= 0 {
		return
	}
	permuteRows(dst, src, len(src)/rowBytes/heads, rowBytes, !toGGUF)
}
