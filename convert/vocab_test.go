package convert

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
)

// tokenizerKVs returns the tokenizer.* keys of a GGUF in order.
func tokenizerKVs(f *gguf.File) []gguf.KV {
	var out []gguf.KV
	for _, kv := range f.Metadata.KVs() {
		if strings.HasPrefix(kv.Key, "tokenizer.") {
			out = append(out, kv)
		}
	}
	return out
}

type wantKV struct {
	key string
	val any
}

func checkKVs(t *testing.T, got []gguf.KV, want []wantKV) {
	t.Helper()
	if len(got) != len(want) {
		var keys []string
		for _, kv := range got {
			keys = append(keys, kv.Key)
		}
		t.Fatalf("got keys %v, want %d keys", keys, len(want))
	}
	for i, w := range want {
		if got[i].Key != w.key || !reflect.DeepEqual(got[i].Value.Any(), w.val) {
			t.Errorf("key %d: %s = %#v, want %s = %#v", i, got[i].Key, got[i].Value.Any(), w.key, w.val)
		}
	}
}

// llama3Tokenizer is a byte-level BPE tokenizer.json shaped like Llama 3's: the Llama 3 split regex, merges as
// pairs, special tokens only in added_tokens, a BOS template.
const llama3Tokenizer = `{
  "version": "1.0",
  "added_tokens": [
    {"id": 10, "content": "<|begin_of_text|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 11, "content": "<|end_of_text|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 12, "content": "<|eot_id|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false},
    {"id": 13, "content": "hello\u2581world", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": false}
  ],
  "normalizer": null,
  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
  "post_processor": {"type": "Sequence", "processors": [
    {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
    {"type": "TemplateProcessing",
     "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
     "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
              {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
     "special_tokens": {}}]},
  "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
  "model": {"type": "BPE", "dropout": null, "unk_token": null, "fuse_unk": false, "byte_fallback": false,
    "ignore_merges": true,
    "vocab": {"a": 0, "b": 1, "c": 2, "\u0120": 3, "ab": 4, "\u0120a": 5, "abc": 6},
    "merges": [["a", "b"], ["\u0120", "a"], ["ab", "c"]]}
}`

// TestBPEVocab follows _set_vocab_gpt2 on a Llama-3-like tokenizer: holes become [PADn], added tokens control or
// user-defined, merges pairs become strings, the template gives add_bos_token and (from its pair form)
// add_sep_token = false. The GGUF then survives GGUF → HF → GGUF byte for byte.
func TestBPEVocab(t *testing.T) {
	cfg := defaultConfig()
	cfg["vocab_size"], cfg["bos_token_id"], cfg["eos_token_id"] = 16, 10, 11
	dir := writeSynth(t, "bpe-model", synthModel{config: cfg, files: map[string]string{
		"tokenizer.json": llama3Tokenizer,
		"tokenizer_config.json": `{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
			"chat_template": "{{ bos_token }}", "tokenizer_class": "PreTrainedTokenizerFast"}`,
	}})
	m, err := OpenHF(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	first := toGGUFBytes(t, m, GGUFOptions{Type: 0})
	f := readGGUF(t, first)
	checkKVs(t, tokenizerKVs(f), []wantKV{
		{"tokenizer.ggml.model", "gpt2"},
		{"tokenizer.ggml.pre", "llama-bpe"},
		{"tokenizer.ggml.tokens", []string{"a", "b", "c", "\u0120", "ab", "\u0120a", "abc", "[PAD7]", "[PAD8]",
			"[PAD9]", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "hello world", "[PAD14]", "[PAD15]"}},
		{"tokenizer.ggml.token_type", []int32{1, 1, 1, 1, 1, 1, 1, 5, 5, 5, 3, 3, 3, 4, 5, 5}},
		{"tokenizer.ggml.merges", []string{"a b", "\u0120 a", "ab c"}},
		{"tokenizer.ggml.bos_token_id", uint32(10)},
		{"tokenizer.ggml.eos_token_id", uint32(11)},
		{"tokenizer.ggml.add_bos_token", true},
		{"tokenizer.ggml.add_sep_token", false},
		{"tokenizer.chat_template", "{{ bos_token }}"},
	})
	hf := toHFDir(t, f, HFOptions{})
	m2, err := OpenHF(hf)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	second := toGGUFBytes(t, m2, GGUFOptions{Name: "Bpe Model"})
	if !bytes.Equal(first, second) {
		t.Error("GGUF → HF → GGUF changed the file")
		diffGGUF(t, readGGUF(t, second), f)
	}
}

// TestLlamaHFVocab follows LlamaHfVocab for a SentencePiece-style BPE tokenizer.json without tokenizer.model:
// scores -1000, <0xXX> bytes, the tokenizer's special tokens (<unk> included) as control tokens.
func TestLlamaHFVocab(t *testing.T) {
	var vocab []string
	vocab = append(vocab, `"<unk>": 0`, `"<s>": 1`, `"</s>": 2`)
	for b := range 4 {
		vocab = append(vocab, fmt.Sprintf(`"<0x%02X>": %d`, b, 3+b))
	}
	vocab = append(vocab, `"\u2581a": 7`, `"\u2581b": 8`)
	tok := `{"added_tokens": [
	    {"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true},
	    {"id": 2, "content": "</s>", "special": true}, {"id": 9, "content": "<|im_start|>", "special": true}],
	  "decoder": {"type": "Sequence", "decoders": []},
	  "model": {"type": "BPE", "byte_fallback": true, "vocab": {` + strings.Join(vocab, ",") + `}, "merges": []}}`
	cfg := defaultConfig()
	cfg["vocab_size"] = 10
	dir := writeSynth(t, "spm-json", synthModel{config: cfg, files: map[string]string{
		"tokenizer.json": tok,
		"tokenizer_config.json": `{"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
			"add_bos_token": true, "add_eos_token": false, "additional_special_tokens": ["<|im_start|>"]}`,
	}})
	m, err := OpenHF(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	f := readGGUF(t, toGGUFBytes(t, m, GGUFOptions{}))
	scores := make([]float32, 10)
	for i := range scores {
		scores[i] = -1000
	}
	checkKVs(t, tokenizerKVs(f), []wantKV{
		{"tokenizer.ggml.model", "llama"},
		{"tokenizer.ggml.pre", "default"},
		{"tokenizer.ggml.tokens", []string{"<unk>", "<s>", "</s>", "<0x00>", "<0x01>", "<0x02>", "<0x03>",
			"\u2581a", "\u2581b", "<|im_start|>"}},
		{"tokenizer.ggml.scores", scores},
		{"tokenizer.ggml.token_type", []int32{3, 3, 3, 6, 6, 6, 6, 1, 1, 3}},
		{"tokenizer.ggml.bos_token_id", uint32(1)},
		{"tokenizer.ggml.eos_token_id", uint32(2)},
		{"tokenizer.ggml.unknown_token_id", uint32(0)},
		{"tokenizer.ggml.add_bos_token", true},
		{"tokenizer.ggml.add_eos_token", false},
	})
	// Written back as tokenizer.model, <unk> must be the unknown piece sentencepiece requires.
	hf := toHFDir(t, f, HFOptions{})
	sp, err := OpenSentencePiece(hf + "/tokenizer.model")
	if err != nil {
		t.Fatal(err)
	}
	if sp.Pieces[0].Type != TokenUnknown || sp.UnkID != 0 || sp.ModelType != SPMBPE || !sp.ByteFallback {
		t.Errorf("tokenizer.model: unk %v (id %d), %v, byte fallback %v", sp.Pieces[0].Type, sp.UnkID,
			sp.ModelType, sp.ByteFallback)
	}
}

// TestSentencePieceAddedTokens: added_tokens.json and tokenizer_config.json's added_tokens_decoder override pieces
// (score -1000, control or user-defined with ▁ as a space), and ids past the model are padded as unused.
func TestSentencePieceAddedTokens(t *testing.T) {
	sp := spmModel(30) // 289 pieces
	cfg := defaultConfig()
	cfg["vocab_size"] = 292
	dir := writeSynth(t, "spm-added", synthModel{config: cfg, files: map[string]string{
		"tokenizer.model":   string(sp.Marshal()),
		"added_tokens.json": `{"<extra>": 289}`,
		"tokenizer_config.json": `{"add_bos_token": true, "add_prefix_space": false,
			"added_tokens_decoder": {"290": {"content": "<|tool|>", "special": false},
			"291": {"content": "my\u2581word", "special": false}}}`,
	}})
	m, err := OpenHF(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	f := readGGUF(t, toGGUFBytes(t, m, GGUFOptions{}))
	kvs := tokenizerKVs(f)
	if kvs[0].Key != keyTokSpacePrefix || kvs[0].Value.Any() != false {
		t.Errorf("first tokenizer key %s = %v, want add_space_prefix false before the vocabulary", kvs[0].Key,
			kvs[0].Value)
	}
	toks, _ := f.Metadata.Strings(keyTokens)
	types, _ := gguf.Values[int32](f.Metadata, keyTokTypes)
	scores, _ := gguf.Values[float32](f.Metadata, keyTokScores)
	for id, want := range map[int]struct {
		text  string
		typ   TokenType
		score float32
	}{
		0: {"<unk>", TokenUnknown, 0}, 1: {"<s>", TokenControl, 0}, 3: {"<0x00>", TokenByte, 0},
		260: {"\u2581p1", TokenNormal, -1}, 289: {"<extra>", TokenUserDefined, -1000},
		290: {"<|tool|>", TokenControl, -1000}, 291: {"my word", TokenUserDefined, -1000},
	} {
		if toks[id] != want.text || TokenType(types[id]) != want.typ || scores[id] != want.score {
			t.Errorf("token %d = %q %d %g, want %q %d %g", id, toks[id], types[id], scores[id], want.text, want.typ,
				want.score)
		}
	}
}

// TestPreTokenizerNames: the table recognises the pre-tokenizers it lists; anything else is a typed error naming
// the steps, which GGUFOptions.Pre overrides.
func TestPreTokenizerNames(t *testing.T) {
	for _, p := range preTokenizers {
		got, err := detectPre([]byte(p.json))
		if err != nil || got != p.name {
			t.Errorf("%s: detected %q, %v", p.name, got, err)
		}
	}
	_, err := detectPre([]byte(`{"type":"Metaspace","replacement":"\u2581"}`))
	if !errors.Is(err, ErrUnknownPreTokenizer) || !strings.Contains(err.Error(), "metaspace") {
		t.Errorf("unknown pre-tokenizer: %v", err)
	}
	cfg := defaultConfig()
	cfg["vocab_size"] = 16
	odd := strings.Replace(llama3Tokenizer, `"use_regex": false}]}`, `"use_regex": false},{"type":"Punctuation"}]}`, 1)
	dir := writeSynth(t, "odd-pre", synthModel{config: cfg, files: map[string]string{"tokenizer.json": odd}})
	m, err := OpenHF(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var buf bytes.Buffer
	if err := ToGGUF(&buf, m, GGUFOptions{}); !errors.Is(err, ErrUnknownPreTokenizer) {
		t.Fatalf("ToGGUF: %v, want ErrUnknownPreTokenizer", err)
	}
	f := readGGUF(t, toGGUFBytes(t, m, GGUFOptions{Pre: "llama-bpe"}))
	if pre, _ := f.Metadata.String(keyTokPre); pre != "llama-bpe" {
		t.Errorf("pre = %q with the override", pre)
	}
}
