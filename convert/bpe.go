package convert

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// This file handles Hugging Face tokenizers' tokenizer.json for byte-level BPE models (GGUF tokenizer "gpt2") and
// SentencePiece-style BPE models shipped without tokenizer.model (llama.cpp's LlamaHfVocab).

// tokenizerJSON is the part of a tokenizer.json that conversion reads.
type tokenizerJSON struct {
	path          string
	modelType     string
	byteFallback  *bool
	ignoreMerges  bool
	decoderType   string
	vocab         map[string]int64
	merges        []string
	added         []addedToken
	lowercase     bool
	preTokenizer  json.RawMessage
	postProcessor any
}

// addedToken is an entry of tokenizer.json's added_tokens.
type addedToken struct {
	ID         int64  `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// openTokenizerJSON reads path; a missing file gives nil and no error.
func openTokenizerJSON(path string) (*tokenizerJSON, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	t, err := parseTokenizerJSON(b)
	if err != nil {
		return nil, fmt.Errorf("convert: %s: %w", path, err)
	}
	t.path = path
	return t, nil
}

func parseTokenizerJSON(b []byte) (*tokenizerJSON, error) {
	var raw struct {
		AddedTokens   []addedToken    `json:"added_tokens"`
		Normalizer    json.RawMessage `json:"normalizer"`
		PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
		PostProcessor json.RawMessage `json:"post_processor"`
		Decoder       json.RawMessage `json:"decoder"`
		Model         struct {
			Type         string          `json:"type"`
			ByteFallback *bool           `json:"byte_fallback"`
			IgnoreMerges bool            `json:"ignore_merges"`
			Vocab        json.RawMessage `json:"vocab"`
			Merges       json.RawMessage `json:"merges"`
		} `json:"model"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, jsonError(err)
	}
	t := &tokenizerJSON{modelType: raw.Model.Type, byteFallback: raw.Model.ByteFallback,
		ignoreMerges: raw.Model.IgnoreMerges, added: raw.AddedTokens, preTokenizer: raw.PreTokenizer}
	var dec struct {
		Type string `json:"type"`
	}
	if len(raw.Decoder) > 0 && json.Unmarshal(raw.Decoder, &dec) == nil {
		t.decoderType = dec.Type
	}
	if t.modelType == "BPE" {
		if err := json.Unmarshal(raw.Model.Vocab, &t.vocab); err != nil {
			return nil, fmt.Errorf("model.vocab: want an object of token ids: %w", jsonError(err))
		}
		merges, err := parseMerges(raw.Model.Merges)
		if err != nil {
			return nil, err
		}
		t.merges = merges
	}
	if len(raw.Normalizer) > 0 {
		var n any
		if err := json.Unmarshal(raw.Normalizer, &n); err != nil {
			return nil, fmt.Errorf("normalizer: %w", jsonError(err))
		}
		t.lowercase = lowercases(n)
	}
	if len(raw.PostProcessor) > 0 {
		if err := json.Unmarshal(raw.PostProcessor, &t.postProcessor); err != nil {
			return nil, fmt.Errorf("post_processor: %w", jsonError(err))
		}
	}
	return t, nil
}

func jsonError(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("invalid JSON at offset %d: %w", se.Offset, err)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("field %q at offset %d is a JSON %s, want %s", te.Field, te.Offset, te.Value, te.Type)
	}
	return err
}

// parseMerges reads model.merges: "a b" strings, or (since transformers 4.45) [a, b] pairs, which gguf-py turns
// into strings with spaces inside a part written as U+0120, byte-level BPE's space.
func parseMerges(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		return strs, nil
	}
	var pairs [][]string
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return nil, errors.New(`model.merges: want "a b" strings or [a, b] pairs (unknown tokenizer merges format)`)
	}
	out := make([]string, len(pairs))
	for i, p := range pairs {
		if len(p) != 2 {
			return nil, fmt.Errorf("model.merges[%d]: want a pair, got %d strings", i, len(p))
		}
		out[i] = strings.ReplaceAll(p[0], " ", "\u0120") + " " + strings.ReplaceAll(p[1], " ", "\u0120")
	}
	return out, nil
}

// lowercases is SpecialVocab._parse_normalizer: a Lowercase normalizer, alone, in a Sequence, or as
// BertNormalizer's lowercase option (default true).
func lowercases(n any) bool {
	m, _ := n.(map[string]any)
	switch m["type"] {
	case "Lowercase":
		return true
	case "BertNormalizer":
		lc, ok := m["lowercase"].(bool)
		return lc || !ok
	case "Sequence":
		list, _ := m["normalizers"].([]any)
		for _, e := range list {
			if lowercases(e) {
				return true
			}
		}
	}
	return false
}

// isLlamaHF tells LlamaHfVocab's tokenizer.json (a SentencePiece-style BPE with byte fallback) from a byte-level
// BPE. Llama 3 (BPE, ignore_merges, no byte fallback) is byte-level.
func (t *tokenizerJSON) isLlamaHF() bool {
	isLlama3 := t.modelType == "BPE" && t.ignoreMerges && (t.byteFallback != nil && !*t.byteFallback)
	return !isLlama3 && t.modelType == "BPE" && t.byteFallback != nil && *t.byteFallback &&
		t.decoderType == "Sequence"
}

// fullVocab is the fast tokenizer's get_vocab(): the model vocabulary with added tokens over it.
func (t *tokenizerJSON) fullVocab() map[string]int64 {
	v := make(map[string]int64, len(t.vocab)+len(t.added))
	for k, id := range t.vocab {
		v[k] = id
	}
	for _, a := range t.added {
		v[a.Content] = a.ID
	}
	return v
}

func reverse(v map[string]int64) map[int64]string {
	r := make(map[int64]string, len(v))
	for k, id := range v {
		r[id] = k
	}
	return r
}

// postProcess applies SpecialVocab's reading of post_processor to sv and the tokenizer_config tcfg (which it may
// edit): RobertaProcessing adds BOS, EOS and SEP; a TemplateProcessing's single template decides add_bos and
// add_eos (a trailing token other than EOS becomes the new EOS and the old one EOT), its pair template add_sep.
func (t *tokenizerJSON) postProcess(sv *specialVocab, tcfg jsonObject) {
	pp, _ := t.postProcessor.(map[string]any)
	if pp == nil {
		return
	}
	str := func(k string) string { s, _ := tcfg.string(k); return s }
	bos, cls, eos, sep := str("bos_token"), str("cls_token"), str("eos_token"), str("sep_token")
	haveCfg := len(tcfg) > 0
	if bos == "" && cls != "" && haveCfg {
		tcfg["bos_token"], bos = cls, cls
	}
	if eos == "" && sep != "" && haveCfg {
		tcfg["eos_token"], eos = sep, sep
	}
	processors, ok := pp["processors"].([]any)
	if !ok {
		processors = []any{pp}
	}
	for _, p := range processors {
		proc, _ := p.(map[string]any)
		switch proc["type"] {
		case "RobertaProcessing":
			sv.add.set("bos", true)
			sv.add.set("eos", true)
			sv.add.set("sep", true)
			if cls == "" && haveCfg {
				cls = firstOf(proc["cls"], bos)
				tcfg["cls_token"] = cls
			}
			if sep == "" && haveCfg {
				sep = firstOf(proc["sep"], eos)
				tcfg["sep_token"] = sep
			}
		case "TemplateProcessing":
			single, _ := proc["single"].([]any)
			pair, _ := proc["pair"].([]any)
			var first, last string
			if len(single) > 1 {
				if first = specialID(single[0]); first != "" {
					if !haveCfg {
						bos = first
					}
					sv.add.set("bos", first == bos || first == cls)
				}
				if last = specialID(single[len(single)-1]); last != "" {
					if !haveCfg {
						eos = last
					} else if last != eos {
						if !containsStr(sv.types, "eot") {
							sv.types = append(sv.types, "eot")
							tcfg["eot_token"] = eos
						} else if !containsStr(sv.types, "eom") {
							sv.types = append(sv.types, "eom")
							tcfg["eom_token"] = eos
						}
						tcfg["eos_token"], eos = last, last
					}
					sv.add.set("eos", last == eos)
				}
			}
			if len(pair) == 0 {
				continue
			}
			lo, hi := 0, len(pair)
			if first != "" && specialID(pair[0]) == first {
				lo = 1
			}
			if last != "" && specialID(pair[len(pair)-1]) == last {
				hi--
			}
			if lo >= hi {
				continue
			}
			mid := pair[lo:hi]
			if sequenceID(mid[0]) != "A" || sequenceID(mid[len(mid)-1]) != "B" || len(mid) <= 2 {
				continue
			}
			mid = mid[1 : len(mid)-1]
			addSep := false
			if e := specialID(mid[0]); e != "" && (e == sep || e == eos) && last == "" {
				addSep = true
			}
			if len(mid) == 2 {
				if e := specialID(mid[1]); e != "" && (e == sep || e == eos) {
					addSep = true
				}
			}
			sv.add.set("sep", addSep)
			if addSep && sep == "" && haveCfg {
				tcfg["sep_token"] = eos
			}
		}
	}
}

func isAdded(added map[string]addedToken, text string) bool {
	_, ok := added[text]
	return ok
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// firstOf is processor.get(key, [fallback])[0] for a RobertaProcessing ["token", id] entry.
func firstOf(v any, fallback string) string {
	if list, ok := v.([]any); ok && len(list) > 0 {
		s, _ := list[0].(string)
		return s
	}
	return fallback
}

func specialID(piece any) string {
	m, _ := piece.(map[string]any)
	st, _ := m["SpecialToken"].(map[string]any)
	s, _ := st["id"].(string)
	return s
}

func sequenceID(piece any) string {
	m, _ := piece.(map[string]any)
	st, _ := m["Sequence"].(map[string]any)
	s, _ := st["id"].(string)
	return s
}

// llamaHFVocab is LlamaHfVocab: the vocabulary in id order with score -1000, <0xXX> pieces as bytes and the
// tokenizer's special tokens as control tokens, then added tokens past the base vocabulary.
func llamaHFVocab(m *HFModel, tok *tokenizerJSON) (*vocab, error) {
	full := tok.fullVocab()
	rev := reverse(full)
	base := int64(len(tok.vocab))
	names, err := specialTokenNames(m)
	if err != nil {
		return nil, err
	}
	specials := map[string]int64{}
	for _, name := range names {
		if id, ok := full[name]; ok {
			specials[name] = id
		}
	}
	specialIDs := map[int64]bool{}
	for _, id := range specials {
		specialIDs[id] = true
	}
	v := &vocab{model: "llama", pre: "default"}
	for id := range base {
		text, ok := rev[id]
		if !ok {
			return nil, fmt.Errorf("convert: %s: no token has id %d of the %d-token vocabulary", tok.path, id, base)
		}
		typ := TokenNormal
		switch {
		case bytePiece.MatchString(text):
			typ = TokenByte
		case specialIDs[id]:
			typ = TokenControl
		}
		v.tokens = append(v.tokens, text)
		v.scores = append(v.scores, -1000)
		v.types = append(v.types, int32(typ))
	}
	// Added tokens past the base vocabulary, in id order; they must follow it without gaps.
	extra := map[int64]string{}
	for _, a := range tok.added {
		if a.ID >= base {
			extra[a.ID] = a.Content
		}
	}
	for id := base; id < base+int64(len(extra)); id++ {
		text, ok := extra[id]
		if !ok {
			return nil, fmt.Errorf("convert: %s: added token ids must follow the vocabulary of %d without gaps; "+
				"%d is missing", tok.path, base, id)
		}
		typ := TokenUserDefined
		if _, ok := specials[text]; ok {
			typ = TokenControl
		}
		v.tokens = append(v.tokens, text)
		v.scores = append(v.scores, -1000)
		v.types = append(v.types, int32(typ))
	}
	sv, err := loadSpecialVocab(m, tok, int64(len(v.tokens)), false)
	if err != nil {
		return nil, err
	}
	v.special = *sv
	return v, nil
}

var bytePiece = regexp.MustCompile(`^<0x[0-9A-Fa-f]{2}>$`)

// specialTokenNames are the texts of transformers' all_special_tokens: the named special tokens and
// additional_special_tokens of tokenizer_config.json, else of special_tokens_map.json.
func specialTokenNames(m *HFModel) ([]string, error) {
	cfg := m.tokenizerConfig()
	smap, err := readJSONObject(filepath.Join(m.Dir, "special_tokens_map.json"))
	if err != nil {
		return nil, err
	}
	if smap != nil {
		merged := clone(smap)
		for k, v := range cfg {
			merged[k] = v
		}
		cfg = merged
	}
	var names []string
	text := func(v any) string {
		if s, ok := v.(string); ok {
			return s
		}
		if o, ok := v.(map[string]any); ok {
			s, _ := o["content"].(string)
			return s
		}
		return ""
	}
	for _, typ := range []string{"bos", "eos", "unk", "sep", "pad", "cls", "mask"} {
		if s := text(cfg[typ+"_token"]); s != "" {
			names = append(names, s)
		}
	}
	extra, _ := cfg["additional_special_tokens"].([]any)
	for _, e := range extra {
		if s := text(e); s != "" {
			names = append(names, s)
		}
	}
	return names, nil
}

// gpt2Vocab is get_vocab_base + _set_vocab_gpt2: ids up to vocab_size (holes become [PADn], unused), added tokens
// as control (special, or looking special) or user-defined tokens, merges and the pre-tokenizer name.
func gpt2Vocab(m *HFModel, p *llamaParams, tok *tokenizerJSON, pre string) (*vocab, error) {
	if tok.modelType != "BPE" {
		return nil, fmt.Errorf("convert: %s: tokenizer model %q is not supported (want BPE)", tok.path, tok.modelType)
	}
	full := tok.fullVocab()
	n := p.vocab
	for text, id := range full {
		if id >= n || id < 0 {
			return nil, fmt.Errorf("convert: %s: token %q has id %d, outside vocab_size %d", tok.path, text, id, n)
		}
	}
	if pre == "" {
		var err error
		if pre, err = detectPre(tok.preTokenizer); err != nil {
			return nil, fmt.Errorf("convert: %s: %w", tok.path, err)
		}
	}
	rev := reverse(full)
	addedByID := map[int64]addedToken{}
	addedByText := map[string]addedToken{}
	for _, a := range tok.added {
		addedByID[a.ID] = a
		addedByText[a.Content] = a
	}
	v := &vocab{model: "gpt2", pre: pre}
	for id := range n {
		text, ok := rev[id]
		typ := TokenNormal
		switch {
		case !ok:
			text, typ = fmt.Sprintf("[PAD%d]", id), TokenUnused
		case isAdded(addedByText, text):
			// added_tokens_decoder is keyed by id; the content lookup covers an added token that another id
			// shadows in the vocabulary.
			a, found := addedByID[id]
			if !found {
				a = addedByText[text]
			}
			if a.Special || looksSpecial(text) {
				typ = TokenControl
			} else {
				text = strings.ReplaceAll(text, "\u2581", " ")
				typ = TokenUserDefined
			}
		}
		v.tokens = append(v.tokens, text)
		v.types = append(v.types, int32(typ))
	}
	sv, err := loadSpecialVocab(m, tok, 0, true)
	if err != nil {
		return nil, err
	}
	v.special = *sv
	return v, nil
}

// Pre-tokenizers. llama.cpp names a BPE model's pre-tokenizer (tokenizer.ggml.pre) by tokenizing a check string
// with the model's own tokenizer and looking up the SHA-256 of the ids in a table of known models
// (get_vocab_base_pre). That needs the full tokenizer and the hash table; lathe instead recognises the
// pre-tokenizer's definition in tokenizer.json, which is what the name stands for. Each entry is the
// pre_tokenizer's signature (see preSignature) and its llama.cpp name; the regexes are those of tokenizer.json
// files of the named families (and of llama.cpp's llama-vocab.cpp for the same names).
var preTokenizers = []struct {
	name      string
	signature string
	json      string // the pre_tokenizer written back for GGUF → HF
}{
	{"llama-bpe", `split:` + llama3Regex + `|bytelevel:false`,
		`{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":` + quoteJSON(llama3Regex) +
			`},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,` +
			`"trim_offsets":true,"use_regex":false}]}`},
	{"smaug-bpe", `split:` + smaugRegex + `|bytelevel:false`,
		`{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":` + quoteJSON(smaugRegex) +
			`},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,` +
			`"trim_offsets":true,"use_regex":false}]}`},
	{"qwen2", `split:` + qwen2Regex + `|bytelevel:false`,
		`{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":` + quoteJSON(qwen2Regex) +
			`},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,` +
			`"trim_offsets":false,"use_regex":false}]}`},
	// SmolLM (a Llama) splits digits one by one before GPT-2's byte-level regex.
	{"smollm", `digits:true|bytelevel:true`,
		`{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},{"type":"ByteLevel",` +
			`"add_prefix_space":false,"trim_offsets":true,"use_regex":true}]}`},
	{"gpt-2", `bytelevel:true`,
		`{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}`},
}

const (
	llama3Regex = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	smaugRegex  = `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwen2Regex  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

func quoteJSON(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return strings.TrimSuffix(b.String(), "\n")
}

// ErrUnknownPreTokenizer is returned (wrapped) for a BPE pre-tokenizer lathe cannot name; GGUFOptions.Pre names it.
var ErrUnknownPreTokenizer = errors.New("BPE pre-tokenizer not recognised; set the pre-tokenizer name explicitly")

// detectPre names a tokenizer.json pre_tokenizer.
func detectPre(raw json.RawMessage) (string, error) {
	var pt any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &pt); err != nil {
			return "", fmt.Errorf("pre_tokenizer: %w", jsonError(err))
		}
	}
	sig := preSignature(pt)
	for _, p := range preTokenizers {
		if p.signature == sig {
			return p.name, nil
		}
	}
	return "", fmt.Errorf("%w (its steps: %s)", ErrUnknownPreTokenizer, sig)
}

// preSignature flattens a pre_tokenizer to its steps: split:<regex>, bytelevel:<use_regex>, digits:<individual>,
// or the step's type for anything else.
func preSignature(pt any) string {
	m, _ := pt.(map[string]any)
	if m == nil {
		return "none"
	}
	switch m["type"] {
	case "Sequence":
		list, _ := m["pretokenizers"].([]any)
		var parts []string
		for _, e := range list {
			parts = append(parts, preSignature(e))
		}
		return strings.Join(parts, "|")
	case "Split":
		pat, _ := m["pattern"].(map[string]any)
		if re, ok := pat["Regex"].(string); ok {
			return "split:" + re
		}
		s, _ := pat["String"].(string)
		return "splitstring:" + s
	case "ByteLevel":
		useRegex, ok := m["use_regex"].(bool)
		return fmt.Sprintf("bytelevel:%v", useRegex || !ok)
	case "Digits":
		ind, _ := m["individual_digits"].(bool)
		return fmt.Sprintf("digits:%v", ind)
	}
	t, _ := m["type"].(string)
	return strings.ToLower(t)
}
