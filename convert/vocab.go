package convert

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/lathe-ml/lathe/gguf"
)

// GGUF tokenizer keys (gguf-py constants.py, Keys.Tokenizer). "seperator" is spelled as GGUF spells it.
const (
	keyTokModel        = "tokenizer.ggml.model"
	keyTokPre          = "tokenizer.ggml.pre"
	keyTokens          = "tokenizer.ggml.tokens"
	keyTokTypes        = "tokenizer.ggml.token_type"
	keyTokScores       = "tokenizer.ggml.scores"
	keyTokMerges       = "tokenizer.ggml.merges"
	keyTokSpacePrefix  = "tokenizer.ggml.add_space_prefix"
	keyTokLowercase    = "tokenizer.ggml.normalizer.lowercase"
	keyChatTemplate    = "tokenizer.chat_template"
	keyChatTemplates   = "tokenizer.chat_templates"
	keyChatTemplateFmt = "tokenizer.chat_template.%s"
)

// specialIDKeys are the special-token ids gguf-py's GGUFWriter has an add_<typ>_token_id method for; SpecialVocab
// skips the others ("No handler for special token type").
var specialIDKeys = map[string]string{
	"bos": "tokenizer.ggml.bos_token_id", "eos": "tokenizer.ggml.eos_token_id",
	"unk": "tokenizer.ggml.unknown_token_id", "sep": "tokenizer.ggml.seperator_token_id",
	"pad": "tokenizer.ggml.padding_token_id", "mask": "tokenizer.ggml.mask_token_id",
	"eot": "tokenizer.ggml.eot_token_id", "eom": "tokenizer.ggml.eom_token_id",
}

// addFlagKeys are the add_<typ>_token flags GGUFWriter can write.
var addFlagKeys = map[string]string{
	"bos": "tokenizer.ggml.add_bos_token", "eos": "tokenizer.ggml.add_eos_token",
	"sep": "tokenizer.ggml.add_sep_token",
}

// specialTypes is SpecialVocab's default special_token_types, in its order.
var specialTypes = []string{"bos", "eos", "unk", "sep", "pad", "cls", "mask"}

// vocab is a tokenizer as tokenizer.ggml.* stores it.
type vocab struct {
	model          string // "llama" (SentencePiece) or "gpt2" (byte-level BPE)
	pre            string
	tokens         []string
	scores         []float32 // nil when the model has none (gpt2)
	types          []int32
	addSpacePrefix *bool // tokenizer_config.json add_prefix_space, which LlamaModel.set_vocab copies first
	special        specialVocab
}

// ordered is an insertion-ordered map, the behaviour of the Python dicts whose order decides the key order.
type ordered[V any] struct {
	keys []string
	vals map[string]V
}

func (o *ordered[V]) set(k string, v V) {
	if o.vals == nil {
		o.vals = map[string]V{}
	}
	if _, ok := o.vals[k]; !ok {
		o.keys = append(o.keys, k)
	}
	o.vals[k] = v
}

func (o *ordered[V]) get(k string) (V, bool) {
	v, ok := o.vals[k]
	return v, ok
}

// namedTemplate is one entry of a list-valued chat_template.
type namedTemplate struct{ name, template string }

// specialVocab reproduces gguf-py's SpecialVocab: merges, special token ids, add_*_token flags and the chat
// template, gathered from tokenizer.json, tokenizer_config.json and config.json.
type specialVocab struct {
	merges    []string
	ids       ordered[int64]
	add       ordered[bool]
	template  *string
	templates []namedTemplate
	lowercase bool
	types     []string
}

// loadSpecialVocab follows SpecialVocab._load. nVocab bounds the ids (0: no bound); loadMerges also reads merges.
func loadSpecialVocab(m *HFModel, tok *tokenizerJSON, nVocab int64, loadMerges bool) (*specialVocab, error) {
	sv := &specialVocab{types: slices.Clone(specialTypes)}
	if err := sv.fromTokenizerJSON(m.Dir, tok, m.tokenizerConfig(), nVocab, loadMerges); err != nil {
		return nil, err
	}
	config := m.config()
	// _try_load_from_config_json: ids from config.json (or its text_config) for the types not found yet.
	for _, typ := range sv.types {
		id, ok := config.int(typ + "_token_id")
		if !config.has(typ+"_token_id") || config[typ+"_token_id"] == nil {
			id, ok = config.object("text_config").int(typ + "_token_id")
		}
		if ok {
			if err := sv.setID(typ, id, nVocab); err != nil {
				return nil, fmt.Errorf("config.json: %w", err)
			}
		}
	}
	if loadMerges && len(sv.merges) == 0 {
		var err error
		if sv.merges, err = readMergesTxt(filepath.Join(m.Dir, "merges.txt")); err != nil {
			return nil, err
		}
	}
	return sv, nil
}

// setID is SpecialVocab._set_special_token: the first id found for a type wins, ids past the vocabulary are
// skipped, negative ids are an error.
func (sv *specialVocab) setID(typ string, id, nVocab int64) error {
	if id < 0 {
		return fmt.Errorf("invalid value for special token type %s: %d", typ, id)
	}
	if nVocab > 0 && id >= nVocab {
		return nil
	}
	if _, ok := sv.ids.get(typ); !ok {
		sv.ids.set(typ, id)
	}
	return nil
}

// fromTokenizerJSON is SpecialVocab._try_load_from_tokenizer_json.
func (sv *specialVocab) fromTokenizerJSON(dir string, tok *tokenizerJSON, tcfg jsonObject, nVocab int64, loadMerges bool) error {
	if tok != nil {
		if loadMerges {
			sv.merges = tok.merges
		}
		sv.lowercase = tok.lowercase
	}
	if tcfg != nil {
		tcfg = clone(tcfg) // the post-processor rules below edit it
	}
	if tok != nil {
		tok.postProcess(sv, tcfg)
	}
	if len(tcfg) == 0 { // "if not tokenizer_config": absent or empty
		return nil
	}
	if err := sv.loadChatTemplate(dir, tcfg); err != nil {
		return err
	}
	for _, typ := range sv.types {
		if b, ok := tcfg.bool("add_" + typ + "_token"); ok {
			sv.add.set(typ, b)
		}
		content, ok := tcfg.string(typ + "_token")
		if !ok {
			if obj := tcfg.object(typ + "_token"); obj != nil {
				content, ok = obj.string("content")
			}
		}
		if !ok || tok == nil {
			continue
		}
		for _, at := range tok.added {
			if at.Content == content {
				if err := sv.setID(typ, at.ID, nVocab); err != nil {
					return fmt.Errorf("tokenizer_config.json: %w", err)
				}
				break
			}
		}
	}
	return nil
}

func clone(o jsonObject) jsonObject {
	c := make(jsonObject, len(o))
	for k, v := range o {
		c[k] = v
	}
	return c
}

// loadChatTemplate takes tokenizer_config.json's chat_template, else chat_template.jinja (with
// additional_chat_templates/*.jinja), else chat_template.json.
func (sv *specialVocab) loadChatTemplate(dir string, tcfg jsonObject) error {
	var alt any
	jinja, err := readOptional(filepath.Join(dir, "chat_template.jinja"))
	if err != nil {
		return err
	}
	if jinja != nil {
		alt = string(jinja)
		extra, _ := filepath.Glob(filepath.Join(dir, "additional_chat_templates", "*.jinja"))
		if len(extra) > 0 {
			list := []any{map[string]any{"name": "default", "template": string(jinja)}}
			for _, p := range extra {
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				list = append(list, map[string]any{"name": strings.TrimSuffix(filepath.Base(p), ".jinja"),
					"template": string(b)})
			}
			alt = list
		}
	} else {
		obj, err := readJSONObject(filepath.Join(dir, "chat_template.json"))
		if err != nil {
			return err
		}
		alt = obj["chat_template"]
	}
	ct, ok := tcfg["chat_template"]
	if !ok {
		ct = alt
	}
	switch t := ct.(type) {
	case string:
		sv.template = &t
	case []any:
		for _, e := range t {
			m, _ := e.(map[string]any)
			name, _ := m["name"].(string)
			tmpl, isStr := m["template"].(string)
			// GGUFWriter.add_chat_template keeps letters and digits of a name and maps the rest to '_'.
			name = strings.Map(func(r rune) rune {
				if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
					return r
				}
				return '_'
			}, name)
			if name != "" && isStr {
				sv.templates = append(sv.templates, namedTemplate{name, tmpl})
			}
		}
	}
	return nil
}

func readOptional(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

// readMergesTxt is SpecialVocab._try_load_merges_txt: one "a b" pair per line, an optional leading #version line,
// other lines skipped. gguf-py reads the file as UTF-8 text, so a file that is not UTF-8 is refused (open() fails
// on it), lines end at \n, \r\n or \r (universal newlines), and str.split() and str.strip() cut at pythonSpace.
func readMergesTxt(path string) ([]string, error) {
	b, err := readOptional(path)
	if b == nil || err != nil {
		return nil, err
	}
	lines := strings.Split(strings.ReplaceAll(strings.ReplaceAll(string(b), "\r\n", "\n"), "\r", "\n"), "\n")
	for i, l := range lines {
		if !utf8.ValidString(l) {
			return nil, fmt.Errorf("convert: %s: line %d is not UTF-8 text", path, i+1)
		}
	}
	if strings.HasPrefix(strings.TrimFunc(lines[0], pythonSpace), "#") {
		lines = lines[1:]
	}
	var merges []string
	for _, l := range lines {
		parts := strings.FieldsFunc(l, pythonSpace)
		if len(parts) == 2 {
			merges = append(merges, parts[0]+" "+parts[1])
		}
	}
	return merges, nil
}

// pythonSpace is Python's str.isspace for one character: Unicode white space, and the separators \x1c to \x1f.
func pythonSpace(r rune) bool { return unicode.IsSpace(r) || r >= 0x1c && r <= 0x1f }

// set writes the special vocabulary in SpecialVocab.add_to_gguf's order.
func (sv *specialVocab) set(md *gguf.Metadata) {
	if len(sv.merges) > 0 {
		md.Set(keyTokMerges, gguf.ArrayOf(sv.merges))
	}
	for _, typ := range sv.ids.keys {
		if key, ok := specialIDKeys[typ]; ok {
			md.Set(key, gguf.ValueOf(uint32(sv.ids.vals[typ])))
		}
	}
	for _, typ := range sv.add.keys {
		if key, ok := addFlagKeys[typ]; ok {
			md.Set(key, gguf.ValueOf(sv.add.vals[typ]))
		}
	}
	if len(sv.templates) > 0 {
		var names []string
		var def *string
		for _, t := range sv.templates {
			if t.name == "default" {
				def = &t.template
				continue
			}
			names = append(names, t.name)
			setString(md, fmt.Sprintf(keyChatTemplateFmt, t.name), t.template)
		}
		if len(names) > 0 {
			// Upstream lists a Python set, whose order varies from run to run; sorted is deterministic.
			slices.Sort(names)
			names = slices.Compact(names)
			md.Set(keyChatTemplates, gguf.ArrayOf(names))
		}
		if def != nil {
			setString(md, keyChatTemplate, *def)
		}
	} else if sv.template != nil {
		setString(md, keyChatTemplate, *sv.template)
	}
	if sv.lowercase {
		md.Set(keyTokLowercase, gguf.ValueOf(true))
	}
}

// setString is GGUFWriter.add_string, which skips empty strings.
func setString(md *gguf.Metadata, key, s string) {
	if s != "" {
		md.Set(key, gguf.ValueOf(s))
	}
}

// setKVs writes the tokenizer keys in the order LlamaModel.set_vocab and the _set_vocab_* helpers use.
func (v *vocab) setKVs(md *gguf.Metadata) {
	if v.addSpacePrefix != nil {
		md.Set(keyTokSpacePrefix, gguf.ValueOf(*v.addSpacePrefix))
	}
	setString(md, keyTokModel, v.model)
	setString(md, keyTokPre, v.pre)
	if len(v.tokens) > 0 {
		md.Set(keyTokens, gguf.ArrayOf(v.tokens))
	}
	if len(v.scores) > 0 {
		md.Set(keyTokScores, gguf.ArrayOf(v.scores))
	}
	if len(v.types) > 0 {
		md.Set(keyTokTypes, gguf.ArrayOf(v.types))
	}
	v.special.set(md)
}

// loadVocab reads the model's tokenizer the way LlamaModel.set_vocab tries them: tokenizer.model (SentencePiece),
// then a tokenizer.json holding a SentencePiece-style BPE (LlamaHfVocab), then a byte-level BPE tokenizer.json
// (_set_vocab_gpt2). pre overrides the detected BPE pre-tokenizer name.
func loadVocab(m *HFModel, p *llamaParams, pre string) (*vocab, error) {
	var v *vocab
	var err error
	spmPath := filepath.Join(m.Dir, "tokenizer.model")
	if _, statErr := os.Stat(spmPath); statErr == nil {
		v, err = sentencePieceVocab(m, p, spmPath)
	} else {
		var tok *tokenizerJSON
		if tok, err = openTokenizerJSON(filepath.Join(m.Dir, "tokenizer.json")); err != nil {
			return nil, err
		}
		if tok == nil {
			return nil, fmt.Errorf("convert: %s: no tokenizer.model or tokenizer.json", m.Dir)
		}
		if tok.isLlamaHF() {
			v, err = llamaHFVocab(m, tok)
		} else {
			v, err = gpt2Vocab(m, p, tok, pre)
		}
	}
	if err != nil {
		return nil, err
	}
	if b, ok := m.tokenizerConfig().bool("add_prefix_space"); ok {
		v.addSpacePrefix = &b
	}
	// LlamaModel.set_vocab: granite's small models must not get a BOS.
	if p.vocab == 49152 {
		v.special.add.set("bos", false)
	}
	return v, nil
}

// sentencePieceVocab is _create_vocab_sentencepiece + _set_vocab_sentencepiece: the model's pieces padded to the
// configured vocabulary size, then added tokens from added_tokens.json and tokenizer_config.json.
func sentencePieceVocab(m *HFModel, p *llamaParams, path string) (*vocab, error) {
	sp, err := OpenSentencePiece(path)
	if err != nil {
		return nil, err
	}
	n := p.vocab
	v := &vocab{model: "llama", pre: "default", tokens: make([]string, n), scores: make([]float32, n),
		types: make([]int32, n)}
	for i := range n {
		v.tokens[i] = fmt.Sprintf("[PAD%d]", i)
		v.scores[i] = -10000
		v.types[i] = int32(TokenUnused)
	}
	for i, piece := range sp.Pieces {
		if int64(i) >= n {
			break // upstream warns and ignores ids past vocab_size
		}
		typ := TokenNormal
		// Only these four are asked of the SentencePieceProcessor, so user-defined pieces count as normal.
		switch piece.Type {
		case TokenUnknown, TokenControl, TokenUnused, TokenByte:
			typ = piece.Type
		}
		v.tokens[i], v.scores[i], v.types[i] = piece.Text, piece.Score, int32(typ)
	}
	added, err := readJSONObject(filepath.Join(m.Dir, "added_tokens.json"))
	if err != nil {
		return nil, err
	}
	for _, text := range sortedKeys(added) {
		id, ok := added.int(text)
		if !ok || id < 0 || id >= n {
			continue
		}
		v.tokens[id], v.scores[id], v.types[id] = text, -1000, int32(TokenUserDefined)
	}
	decoder := m.tokenizerConfig().object("added_tokens_decoder")
	for _, key := range sortedKeys(decoder) {
		id, err := strconv.ParseInt(key, 10, 64)
		if err != nil || id < 0 || id >= n {
			continue
		}
		entry := jsonObject(decoder.object(key))
		content, ok := entry.string("content")
		if !ok {
			return nil, fmt.Errorf("convert: tokenizer_config.json: added_tokens_decoder[%q] has no content", key)
		}
		special, _ := entry.bool("special")
		if special || looksSpecial(content) {
			v.types[id] = int32(TokenControl)
		} else {
			content = strings.ReplaceAll(content, "\u2581", " ") // pre-normalize user-defined spaces
			v.types[id] = int32(TokenUserDefined)
		}
		v.tokens[id], v.scores[id] = content, -1000
	}
	sv, err := loadSpecialVocab(m, nil, n, false)
	if err != nil {
		return nil, err
	}
	v.special = *sv
	return v, nil
}

// sortedKeys gives a deterministic order where Python walks a dict in file order (encoding/json keeps no order).
// For added tokens it matters only when two texts claim the same id; then the last in byte order wins.
func sortedKeys(o jsonObject) []string {
	keys := make([]string, 0, len(o))
	for k := range o {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// looksSpecial is TextModel.does_token_look_special: added tokens that some models fail to mark special.
func looksSpecial(t string) bool {
	switch t {
	case "<pad>", "<mask>", "<2mass>", "[@BOS@]":
		return true
	}
	return strings.HasPrefix(t, "<|") && strings.HasSuffix(t, "|>") ||
		strings.HasPrefix(t, "<｜") && strings.HasSuffix(t, "｜>") ||
		strings.HasPrefix(t, "<unused") && strings.HasSuffix(t, ">")
}
