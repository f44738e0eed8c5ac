package convert

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/lathe-ml/lathe/gguf"
)

// GGUF → Hugging Face tokenizer files. The aim is that converting the result back gives the same tokenizer.ggml.*
// keys: SentencePiece vocabularies become tokenizer.model, byte-level BPE ones tokenizer.json, and flags, special
// tokens and added tokens go where the HF → GGUF direction reads them.

// ggufVocab is the tokenizer read back from GGUF keys.
type ggufVocab struct {
	model  string
	pre    string
	tokens []string
	scores []float32
	types  []int32
	merges []string
}

func readGGUFVocab(md *gguf.Metadata) (*ggufVocab, error) {
	v := &ggufVocab{}
	var err error
	if v.model, err = md.String(keyTokModel); err != nil {
		return nil, err
	}
	v.pre, _ = md.String(keyTokPre)
	if v.tokens, err = md.Strings(keyTokens); err != nil {
		return nil, err
	}
	n := len(v.tokens)
	if n == 0 {
		return nil, fmt.Errorf("%s is empty", keyTokens)
	}
	if v.scores, err = gguf.Values[float32](md, keyTokScores); err != nil {
		if !errors.Is(err, gguf.ErrKeyNotFound) {
			return nil, err
		}
		v.scores = make([]float32, n)
	}
	if v.types, err = gguf.Values[int32](md, keyTokTypes); err != nil {
		if !errors.Is(err, gguf.ErrKeyNotFound) {
			return nil, err
		}
		v.types = make([]int32, n)
		for i := range v.types {
			v.types[i] = int32(TokenNormal)
		}
	}
	if len(v.scores) != n || len(v.types) != n {
		return nil, fmt.Errorf("%d tokens but %d scores and %d token types", n, len(v.scores), len(v.types))
	}
	if v.merges, err = md.Strings(keyTokMerges); err != nil && !errors.Is(err, gguf.ErrKeyNotFound) {
		return nil, err
	}
	return v, nil
}

// tokenizerFiles adds tokenizer.model or tokenizer.json to raw and tokenizer_config.json and
// special_tokens_map.json to files. A GGUF without a vocabulary gets no tokenizer files.
func (h *ggufLlama) tokenizerFiles(files map[string]any, raw map[string][]byte) error {
	md := h.md
	if _, ok := md.Get(keyTokModel); !ok {
		return nil
	}
	v, err := readGGUFVocab(md)
	if err != nil {
		return fmt.Errorf("convert: tokenizer: %w", err)
	}
	tcfg := map[string]any{"clean_up_tokenization_spaces": false}
	smap := map[string]any{}
	ids := map[string]int{}
	for _, typ := range []string{"bos", "eos", "unk", "sep", "pad", "mask"} {
		id, err := md.Uint32(specialIDKeys[typ])
		if err != nil || int(id) >= len(v.tokens) {
			continue
		}
		ids[typ] = int(id)
		tcfg[typ+"_token"] = v.tokens[id]
		smap[typ+"_token"] = v.tokens[id]
	}
	for typ, key := range addFlagKeys {
		if b, err := md.Bool(key); err == nil {
			tcfg["add_"+typ+"_token"] = b
		}
	}
	if b, err := md.Bool(keyTokSpacePrefix); err == nil {
		tcfg["add_prefix_space"] = b
	}
	if ctx, err := md.Uint32(llamaArch + ".context_length"); err == nil {
		tcfg["model_max_length"] = ctx
	}
	if t := chatTemplates(md); t != nil {
		tcfg["chat_template"] = t
	}
	switch v.model {
	case "llama":
		tcfg["tokenizer_class"] = "LlamaTokenizer"
		tcfg["added_tokens_decoder"] = v.addedTokens(func(i int) bool { return v.scores[i] == -1000 })
		raw["tokenizer.model"] = v.sentencePiece(md).Marshal()
	case "gpt2":
		tcfg["tokenizer_class"] = "PreTrainedTokenizerFast"
		tcfg["added_tokens_decoder"] = v.addedTokens(func(int) bool { return true })
		b, err := v.tokenizerJSON(md, ids)
		if err != nil {
			return fmt.Errorf("convert: tokenizer: %w", err)
		}
		raw["tokenizer.json"] = b
	default:
		return fmt.Errorf("convert: tokenizer model %q cannot be written for Hugging Face (lathe writes llama and "+
			"gpt2 vocabularies)", v.model)
	}
	files["tokenizer_config.json"] = tcfg
	files["special_tokens_map.json"] = smap
	return nil
}

// chatTemplates rebuilds tokenizer_config.json's chat_template: a string, or a list of named templates.
func chatTemplates(md *gguf.Metadata) any {
	def, defErr := md.String(keyChatTemplate)
	names, _ := md.Strings(keyChatTemplates)
	if len(names) == 0 {
		if defErr != nil {
			return nil
		}
		return def
	}
	var list []map[string]string
	if defErr == nil {
		list = append(list, map[string]string{"name": "default", "template": def})
	}
	for _, n := range names {
		if t, err := md.String(fmt.Sprintf(keyChatTemplateFmt, n)); err == nil {
			list = append(list, map[string]string{"name": n, "template": t})
		}
	}
	return list
}

// addedTokens lists control and user-defined tokens for tokenizer_config.json's added_tokens_decoder; keep selects
// which (for SentencePiece, those llama.cpp's converter took from there: score -1000).
func (v *ggufVocab) addedTokens(keep func(i int) bool) map[string]any {
	out := map[string]any{}
	for i, t := range v.types {
		if (TokenType(t) == TokenControl || TokenType(t) == TokenUserDefined) && keep(i) {
			out[strconv.Itoa(i)] = map[string]any{"content": v.tokens[i], "lstrip": false, "normalized": false,
				"rstrip": false, "single_word": false, "special": TokenType(t) == TokenControl}
		}
	}
	return out
}

// sentencePiece builds a tokenizer.model holding the GGUF vocabulary. The model type is not stored in GGUF: BPE
// models (Llama, Mistral) have integral scores (minus the merge rank), unigram models log-probabilities.
func (v *ggufVocab) sentencePiece(md *gguf.Metadata) *SentencePiece {
	sp := &SentencePiece{ModelType: SPMBPE, VocabSize: int32(len(v.tokens)), UnkID: -1, BOSID: -1, EOSID: -1,
		PadID: -1, NormalizerName: "identity", AddDummyPrefix: true, EscapeWhitespaces: true}
	for i, t := range v.tokens {
		typ := TokenType(v.types[i])
		if typ < TokenNormal || typ > TokenByte {
			typ = TokenNormal
		}
		s := v.scores[i]
		if typ == TokenNormal && float32(int64(s)) != s {
			sp.ModelType = SPMUnigram
		}
		if typ == TokenByte {
			sp.ByteFallback = true
		}
		if typ == TokenUnknown && sp.UnkID < 0 {
			sp.UnkID = int32(i)
		}
		sp.Pieces = append(sp.Pieces, Piece{Text: t, Score: s, Type: typ})
	}
	for typ, dst := range map[string]*int32{"unk": &sp.UnkID, "bos": &sp.BOSID, "eos": &sp.EOSID, "pad": &sp.PadID} {
		if id, err := md.Uint32(specialIDKeys[typ]); err == nil && int(id) < len(v.tokens) {
			*dst = int32(id)
		}
	}
	// sentencepiece refuses a model without an unknown piece ("unk is not defined"); vocabularies that came from a
	// tokenizer.json (LlamaHfVocab) mark <unk> as a control token.
	if sp.UnkID < 0 {
		sp.UnkID = 0
	}
	if !slices.ContainsFunc(sp.Pieces, func(p Piece) bool { return p.Type == TokenUnknown }) {
		sp.Pieces[sp.UnkID].Type = TokenUnknown
	}
	if b, err := md.Bool(keyTokSpacePrefix); err == nil {
		sp.AddDummyPrefix = b
	}
	if b, err := md.Bool("tokenizer.ggml.remove_extra_whitespaces"); err == nil {
		sp.RemoveExtraWhitespaces = b
	}
	return sp
}

// tokenizerJSON writes a byte-level BPE tokenizer.json: normal tokens in model.vocab, control and user-defined
// ones in added_tokens, the pre-tokenizer that tokenizer.ggml.pre names, and a post-processor adding BOS/EOS as
// the add_*_token flags say.
func (v *ggufVocab) tokenizerJSON(md *gguf.Metadata, ids map[string]int) ([]byte, error) {
	var pre json.RawMessage
	for _, p := range preTokenizers {
		if p.name == v.pre {
			pre = json.RawMessage(p.json)
		}
	}
	if pre == nil {
		return nil, fmt.Errorf("pre-tokenizer %q has no tokenizer.json equivalent in lathe's table", v.pre)
	}
	var vocab orderedVocab
	var added []addedToken
	for i, t := range v.tokens {
		switch TokenType(v.types[i]) {
		case TokenControl, TokenUserDefined:
			special := TokenType(v.types[i]) == TokenControl
			added = append(added, addedToken{ID: int64(i), Content: t, Normalized: !special, Special: special})
		case TokenUnused:
			if t == fmt.Sprintf("[PAD%d]", i) {
				continue // a hole in the original vocabulary
			}
			vocab = append(vocab, vocabEntry{t, i})
		default:
			vocab = append(vocab, vocabEntry{t, i})
		}
	}
	merges := v.merges
	if merges == nil {
		merges = []string{}
	}
	if added == nil {
		added = []addedToken{}
	}
	doc := struct {
		Version       string          `json:"version"`
		Truncation    any             `json:"truncation"`
		Padding       any             `json:"padding"`
		AddedTokens   []addedToken    `json:"added_tokens"`
		Normalizer    any             `json:"normalizer"`
		PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
		PostProcessor any             `json:"post_processor"`
		Decoder       json.RawMessage `json:"decoder"`
		Model         any             `json:"model"`
	}{
		Version: "1.0", AddedTokens: added, PreTokenizer: pre,
		PostProcessor: postProcessor(md, v.tokens, ids),
		Decoder:       json.RawMessage(`{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true}`),
		Model: struct {
			Type         string       `json:"type"`
			Dropout      any          `json:"dropout"`
			UnkToken     any          `json:"unk_token"`
			Prefix       any          `json:"continuing_subword_prefix"`
			Suffix       any          `json:"end_of_word_suffix"`
			FuseUnk      bool         `json:"fuse_unk"`
			ByteFallback bool         `json:"byte_fallback"`
			IgnoreMerges bool         `json:"ignore_merges"`
			Vocab        orderedVocab `json:"vocab"`
			Merges       []string     `json:"merges"`
		}{Type: "BPE", IgnoreMerges: v.pre == "llama-bpe", Vocab: vocab, Merges: merges},
	}
	var buf bytes.Buffer
	if err := encodeJSON(&buf, doc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// postProcessor adds BOS and/or EOS around sequences as a TemplateProcessing, or is a plain ByteLevel step.
func postProcessor(md *gguf.Metadata, tokens []string, ids map[string]int) any {
	type piece = map[string]any
	special := func(typ string, typeID int) piece {
		return piece{"SpecialToken": piece{"id": tokens[ids[typ]], "type_id": typeID}}
	}
	var single, pair []piece
	specials := piece{}
	addBOS, _ := md.Bool(addFlagKeys["bos"])
	addEOS, _ := md.Bool(addFlagKeys["eos"])
	_, hasBOS := ids["bos"]
	_, hasEOS := ids["eos"]
	if addBOS && hasBOS {
		single = append(single, special("bos", 0))
		pair = append(pair, special("bos", 0))
		t := tokens[ids["bos"]]
		specials[t] = piece{"id": t, "ids": []int{ids["bos"]}, "tokens": []string{t}}
	}
	single = append(single, piece{"Sequence": piece{"id": "A", "type_id": 0}})
	pair = append(pair, piece{"Sequence": piece{"id": "A", "type_id": 0}}, piece{"Sequence": piece{"id": "B", "type_id": 1}})
	if addEOS && hasEOS {
		single = append(single, special("eos", 0))
		pair = append(pair, special("eos", 1))
		t := tokens[ids["eos"]]
		specials[t] = piece{"id": t, "ids": []int{ids["eos"]}, "tokens": []string{t}}
	}
	if len(single) == 1 {
		return piece{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}
	}
	return piece{"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials}
}

// orderedVocab marshals model.vocab in id order, as the tokenizers library writes it.
type orderedVocab []vocabEntry

type vocabEntry struct {
	text string
	id   int
}

func (o orderedVocab) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(quoteJSON(e.text))
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.id))
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
