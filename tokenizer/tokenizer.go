// Package tokenizer turns text into token ids and back exactly as llama.cpp does (src/llama-vocab.cpp): SentencePiece
// vocabularies (tokenizer.ggml.model "llama") with llm_tokenizer_spm's score-ordered bigram merges and byte fallback,
// and byte-level BPE vocabularies ("gpt2") with merge ranks and the pre-tokenizer llama.cpp picks by
// tokenizer.ggml.pre.
//
// A Tokenizer is built from GGUF tokenizer.ggml.* keys. Hugging Face tokenizer files (tokenizer.model,
// tokenizer.json) are first turned into those keys by convert, exactly as convert_hf_to_gguf.py would write them, so
// a checkpoint and its GGUF conversion tokenize identically by construction.
package tokenizer

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/gguf"
)

// Kind is the tokenizer algorithm (llama_vocab_type).
type Kind uint8

const (
	// SPM is SentencePiece with BPE-style merges by piece score and <0xXX> byte fallback (tokenizer.ggml.model "llama").
	SPM Kind = iota + 1
	// BPE is byte-level BPE: GPT-2's byte-to-unicode alphabet, a regex pre-tokenizer and ranked merges ("gpt2").
	BPE
)

func (k Kind) String() string {
	switch k {
	case SPM:
		return "SPM"
	case BPE:
		return "BPE"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// attr is llama_token_attr: what a token is, and how the special-token splitter treats its surroundings.
type attr uint16

const (
	attrUnknown attr = 1 << iota
	attrUnused
	attrNormal
	attrControl
	attrUserDefined
	attrByte
	attrNormalized
	attrLStrip
	attrRStrip
	attrSingleWord
)

// GGUF token types (llama_token_type), as tokenizer.ggml.token_type stores them.
const (
	typeNormal      = 1
	typeUnknown     = 2
	typeControl     = 3
	typeUserDefined = 4
	typeUnused      = 5
	typeByte        = 6
)

// Flag selects Encode's handling of special tokens (llama_tokenize's add_special and parse_special).
type Flag uint8

const (
	// AddSpecial adds BOS and/or EOS as the vocabulary's add_bos/add_eos flags say.
	AddSpecial Flag = 1 << iota
	// ParseSpecial turns the text of control tokens (such as "<s>") into those tokens; without it only
	// user-defined tokens are matched in the text.
	ParseSpecial
)

// ErrUnsupported is matched (errors.Is) by errors for vocabularies lathe cannot tokenize: other tokenizer models
// (bert, t5, rwkv, ...) and BPE pre-tokenizers lathe does not implement.
var ErrUnsupported = errors.New("tokenizer: not supported")

// Tokenizer is a loaded vocabulary. It is immutable and safe for concurrent use.
type Tokenizer struct {
	kind   Kind
	pre    string
	tokens []string
	scores []float32
	attrs  []attr
	ids    map[string]int32
	ranks  map[pair]int32
	split  []preStep // BPE pre-tokenizer

	bos, eos, unk, eot int32
	addBOS, addEOS     bool
	addSpacePrefix     bool
	escapeSpaces       bool // SentencePiece's "▁" for spaces
	ignoreMerges       bool
	cleanSpaces        bool // clean_up_tokenization_spaces when decoding

	specials []int32 // tokens the special-token splitter looks for, longest text first
	eog      map[int32]bool
}

// pair is one BPE merge.
type pair struct{ left, right string }

// GGUF tokenizer keys (gguf-py constants.py, Keys.Tokenizer).
const (
	keyModel       = "tokenizer.ggml.model"
	keyPre         = "tokenizer.ggml.pre"
	keyTokens      = "tokenizer.ggml.tokens"
	keyScores      = "tokenizer.ggml.scores"
	keyTypes       = "tokenizer.ggml.token_type"
	keyMerges      = "tokenizer.ggml.merges"
	keyAddBOS      = "tokenizer.ggml.add_bos_token"
	keyAddEOS      = "tokenizer.ggml.add_eos_token"
	keySpacePrefix = "tokenizer.ggml.add_space_prefix"
	keyBOS         = "tokenizer.ggml.bos_token_id"
	keyEOS         = "tokenizer.ggml.eos_token_id"
	keyEOT         = "tokenizer.ggml.eot_token_id"
	keyUNK         = "tokenizer.ggml.unknown_token_id"
)

// Open loads a tokenizer from a GGUF file's metadata, or from Hugging Face tokenizer files: a model directory, or
// a tokenizer.model or tokenizer.json file (read with the other tokenizer files beside it).
func Open(path string) (*Tokenizer, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	dir := path
	if !st.IsDir() {
		switch filepath.Base(path) {
		case "tokenizer.model", "tokenizer.json":
			dir = filepath.Dir(path)
		default:
			f, err := gguf.Open(path)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			t, err := FromGGUF(f.Metadata)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			return t, nil
		}
	}
	md, err := convert.TokenizerMetadata(dir)
	if err != nil {
		return nil, err
	}
	t, err := FromGGUF(md)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// FromGGUF builds a tokenizer from tokenizer.ggml.* keys, with llama.cpp's defaults for absent keys
// (llama_vocab::impl::load).
func FromGGUF(md *gguf.Metadata) (*Tokenizer, error) {
	model, err := md.String(keyModel)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t := &Tokenizer{bos: -1, eos: -1, unk: -1, eot: -1}
	switch model {
	case "llama":
		t.kind = SPM
		t.bos, t.eos, t.unk = 1, 2, 0
		t.addBOS, t.addSpacePrefix, t.escapeSpaces = true, true, true
	case "gpt2":
		t.kind = BPE
		t.bos, t.eos = 11, 11
		t.cleanSpaces = true
	default:
		return nil, fmt.Errorf("%w: %s = %q (lathe tokenizes \"llama\" and \"gpt2\" vocabularies)", ErrUnsupported,
			keyModel, model)
	}
	if err := t.loadTokens(md); err != nil {
		return nil, err
	}
	if t.kind == BPE {
		pre, _ := md.String(keyPre)
		if err := t.setPre(pre); err != nil {
			return nil, err
		}
		if err := t.loadMerges(md); err != nil {
			return nil, err
		}
	}
	if b, err := md.Bool(keySpacePrefix); err == nil {
		t.addSpacePrefix = b
	}
	for _, s := range []struct {
		key string
		id  *int32
	}{{keyBOS, &t.bos}, {keyEOS, &t.eos}, {keyEOT, &t.eot}, {keyUNK, &t.unk}} {
		if int(*s.id) >= len(t.tokens) { // a default outside the vocabulary is disabled
			*s.id = -1
		}
		if id, err := md.Uint32(s.key); err == nil && int64(id) < int64(len(t.tokens)) {
			*s.id = int32(id)
		}
	}
	if b, err := md.Bool(keyAddBOS); err == nil {
		t.addBOS = b
	}
	if b, err := md.Bool(keyAddEOS); err == nil {
		t.addEOS = b
	}
	if t.addBOS && t.bos < 0 {
		return nil, fmt.Errorf("tokenizer: %s is true, but %s is not set", keyAddBOS, keyBOS)
	}
	if t.addEOS && t.eos < 0 {
		return nil, fmt.Errorf("tokenizer: %s is true, but %s is not set", keyAddEOS, keyEOS)
	}
	t.findEOG()
	name, _ := md.String("general.name")
	t.cacheSpecials(strings.ToLower(name))
	return t, nil
}

// loadTokens reads the token texts, scores and types. Like llama.cpp, an empty token becomes "[EMPTY_<id>]" and a
// token text that appears twice is an error.
func (t *Tokenizer) loadTokens(md *gguf.Metadata) error {
	tokens, err := md.Strings(keyTokens)
	if err != nil {
		return fmt.Errorf("tokenizer: %w", err)
	}
	n := len(tokens)
	if n == 0 {
		return fmt.Errorf("tokenizer: %s is empty", keyTokens)
	}
	if n > 1<<31-1 {
		return fmt.Errorf("tokenizer: %s has %d tokens, more than token ids can address", keyTokens, n)
	}
	var scores []float32
	if _, ok := md.Get(keyScores); ok {
		if scores, err = gguf.Values[float32](md, keyScores); err != nil {
			ints, ierr := gguf.Values[int32](md, keyScores)
			if ierr != nil {
				return fmt.Errorf("tokenizer: %s: want f32 or i32 values: %w", keyScores, err)
			}
			scores = make([]float32, len(ints))
			for i, v := range ints {
				scores[i] = float32(v)
			}
		}
		if len(scores) < n {
			return fmt.Errorf("tokenizer: %s has %d values for %d tokens", keyScores, len(scores), n)
		}
	}
	var types []int32
	if _, ok := md.Get(keyTypes); ok {
		if types, err = gguf.Values[int32](md, keyTypes); err != nil {
			return fmt.Errorf("tokenizer: %s: %w", keyTypes, err)
		}
		if len(types) < n {
			return fmt.Errorf("tokenizer: %s has %d values for %d tokens", keyTypes, len(types), n)
		}
	}
	t.tokens = make([]string, n)
	t.scores = make([]float32, n)
	t.attrs = make([]attr, n)
	t.ids = make(map[string]int32, n)
	for i, s := range tokens {
		if s == "" {
			s = fmt.Sprintf("[EMPTY_%d]", i)
		}
		if prev, dup := t.ids[s]; dup {
			return fmt.Errorf("tokenizer: %s: token %q has ids %d and %d", keyTokens, s, prev, i)
		}
		t.ids[s] = int32(i)
		t.tokens[i] = s
		if scores != nil {
			t.scores[i] = scores[i]
		}
		t.attrs[i] = attrNormal
		if types != nil {
			t.attrs[i] = typeAttr(types[i])
		}
	}
	return nil
}

// typeAttr maps a GGUF token type to its attribute; unknown types are undefined (no attribute).
func typeAttr(typ int32) attr {
	switch typ {
	case typeNormal:
		return attrNormal
	case typeUnknown:
		return attrUnknown
	case typeControl:
		return attrControl
	case typeUserDefined:
		return attrUserDefined
	case typeUnused:
		return attrUnused
	case typeByte:
		return attrByte
	}
	return 0
}

// loadMerges reads the BPE merges; the rank of a merge is its index, and the first of two equal merges wins.
func (t *Tokenizer) loadMerges(md *gguf.Metadata) error {
	merges, err := md.Strings(keyMerges)
	if err != nil {
		return fmt.Errorf("tokenizer: a BPE vocabulary needs merges: %w", err)
	}
	t.ranks = make(map[pair]int32, len(merges))
	for i, m := range merges {
		var p pair
		// The separator is the first space after the first byte, so that a merge may start with a space.
		if len(m) > 1 {
			if j := strings.IndexByte(m[1:], ' '); j >= 0 {
				p = pair{m[:j+1], m[j+2:]}
			}
		}
		if _, dup := t.ranks[p]; !dup {
			t.ranks[p] = int32(i)
		}
	}
	return nil
}

// eogTexts are the token texts llama.cpp treats as end of generation whatever their type (special_eog_ids); it
// also marks them as control tokens.
var eogTexts = []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>",
	"<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
	"<｜end▁of▁sentence｜>"}

func (t *Tokenizer) findEOG() {
	t.eog = map[int32]bool{}
	for _, s := range eogTexts {
		if id, ok := t.ids[s]; ok {
			t.eog[id] = true
			t.attrs[id] |= attrControl
		}
	}
	for _, id := range []int32{t.eos, t.eot} {
		if id >= 0 {
			t.eog[id] = true
		}
	}
}

// cacheSpecials lists the tokens the special-token splitter matches (control, user-defined and unknown ones),
// longest first, and applies llama.cpp's per-model strip attributes, which GGUF does not store.
func (t *Tokenizer) cacheSpecials(modelName string) {
	for id, a := range t.attrs {
		if a&(attrControl|attrUserDefined|attrUnknown) != 0 {
			t.specials = append(t.specials, int32(id))
		}
	}
	slices.SortStableFunc(t.specials, func(a, b int32) int {
		return cmp.Compare(len(t.tokens[b]), len(t.tokens[a]))
	})
	set := func(text string, a attr, on bool) {
		if id, ok := t.ids[text]; ok {
			if on {
				t.attrs[id] |= a
			} else {
				t.attrs[id] &^= a
			}
		}
	}
	switch {
	case strings.Contains(t.pre, "jina-v2-de") || strings.Contains(t.pre, "jina-v2-es") ||
		strings.Contains(t.pre, "jina-v2-code"):
		set("<mask>", attrLStrip, true)
	case strings.Contains(modelName, "phi-3") || strings.Contains(modelName, "phi3"):
		for _, id := range t.specials {
			t.attrs[id] |= attrRStrip
		}
		set("</s>", attrRStrip, true)
		for _, s := range []string{"<unk>", "<s>", "<|endoftext|>"} {
			set(s, attrRStrip, false)
		}
	}
}

// Kind reports the algorithm.
func (t *Tokenizer) Kind() Kind { return t.kind }

// Pre is the BPE pre-tokenizer name (tokenizer.ggml.pre), empty for SentencePiece.
func (t *Tokenizer) Pre() string { return t.pre }

// Size is the number of tokens.
func (t *Tokenizer) Size() int { return len(t.tokens) }

// Token returns the stored text of a token ("▁Hello", "<0x0A>", "Ġworld").
func (t *Tokenizer) Token(id int32) string {
	if id < 0 || int(id) >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}

// ID returns the id of a token text, if the vocabulary has it.
func (t *Tokenizer) ID(text string) (int32, bool) {
	id, ok := t.ids[text]
	return id, ok
}

// BOS and EOS return the beginning- and end-of-sequence tokens, -1 if the vocabulary has none.
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS returns the end-of-sequence token, -1 if none.
func (t *Tokenizer) EOS() int32 { return t.eos }

// AddsBOS reports whether Encode with AddSpecial starts with BOS.
func (t *Tokenizer) AddsBOS() bool { return t.addBOS }

// AddsEOS reports whether Encode with AddSpecial ends with EOS.
func (t *Tokenizer) AddsEOS() bool { return t.addEOS }

// IsEOG reports whether a generated token ends generation: EOS, EOT and the texts llama.cpp recognises.
func (t *Tokenizer) IsEOG(id int32) bool { return t.eog[id] }
