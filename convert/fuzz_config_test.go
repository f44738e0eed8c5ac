package convert

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/safetensors"
)

// hfFuzz converts the demo model under fuzzed JSON files. The weights are opened once and the JSON is parsed from
// memory (parseConfigs is OpenHF without the disk): a temporary directory per input made the conversion targets
// the slowest of all.
type hfFuzz struct {
	dir     string
	weights *safetensors.Model
	// The demo's own files, the fixed side of each target.
	config, tokenizerConfig []byte
	embeddings              []byte // model.embed_tokens.weight
	// sideDirs are directories holding the demo's tokenizer.model, or a tokenizer.json of each kind (see
	// sideTokenizers), beside which FuzzSideFiles writes the optional files it fuzzes; written holds what each
	// directory's side files hold now (nil: absent), so that only the files an input changes are rewritten.
	sideDirs [len(sideTokenizers)]string
	written  [len(sideTokenizers)][len(sideFiles)][]byte
	// out receives every conversion: grown once, not for each input.
	out bytes.Buffer
}

func newHFFuzz(f *testing.F) *hfFuzz {
	dir, err := filepath.Abs(filepath.Join("..", "internal", "demo", "tiny"))
	if err != nil {
		f.Fatal(err)
	}
	h := &hfFuzz{dir: dir}
	if h.config, err = os.ReadFile(filepath.Join(dir, "config.json")); err != nil {
		f.Fatal(err)
	}
	if h.tokenizerConfig, err = os.ReadFile(filepath.Join(dir, "tokenizer_config.json")); err != nil {
		f.Fatal(err)
	}
	// A Model opened once serves every input: the conversion only reads it, and Close is never called.
	if h.weights, err = safetensors.OpenDir(dir); err != nil {
		f.Fatal(err)
	}
	emb, err := h.weights.Tensor("model.embed_tokens.weight")
	if err != nil {
		f.Fatal(err)
	}
	h.embeddings = emb.Data
	spm, err := os.ReadFile(filepath.Join(dir, "tokenizer.model"))
	if err != nil {
		f.Fatal(err)
	}
	for i, tok := range sideTokenizers {
		h.sideDirs[i] = filepath.Join(f.TempDir(), tok.name)
		body := []byte(tok.json)
		if tok.file == "tokenizer.model" {
			body = spm
		}
		if err := os.MkdirAll(h.sideDirs[i], 0o755); err != nil {
			f.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(h.sideDirs[i], tok.file), body, 0o644); err != nil {
			f.Fatal(err)
		}
	}
	return h
}

// sharedConfigs adds the named JSON files of the real Hugging Face directories in ../shared as seeds.
func sharedConfigs(name string) [][]byte {
	dir, ok := testshared.Dir()
	if !ok {
		return nil
	}
	var seeds [][]byte
	for _, model := range []string{"models/tiny-llama-a/hf", "models/tiny-llama-a/merged-lora-shakespeare-a",
		"data/safetensors/smollm135m-medical-lora"} {
		if b, err := os.ReadFile(filepath.Join(dir, model, name)); err == nil {
			seeds = append(seeds, b)
		}
	}
	return seeds
}

// convert parses the three files and converts the demo's weights, with the other files of dir. A file that does
// not parse must be refused with an error naming it, and one that parses must survive a marshal and parse round
// trip unchanged; a conversion that succeeds must give a GGUF file that reads back, which convert returns (with
// the conversion's error, or nil and nil when the three files were refused).
func (h *hfFuzz) convert(t *testing.T, dir string, config, generation, tokenizerConfig []byte) (*gguf.File, error) {
	for i, b := range [3][]byte{config, generation, tokenizerConfig} {
		if b != nil {
			checkJSONObject(t, hfConfigFiles[i], b)
		}
	}
	m := &HFModel{Dir: dir, Weights: h.weights}
	if err := m.parseConfigs(config, generation, tokenizerConfig); err != nil {
		if !strings.Contains(err.Error(), ".json") {
			t.Fatalf("error names no file: %v", err)
		}
		return nil, nil
	}
	h.out.Reset()
	if err := ToGGUF(&h.out, m, GGUFOptions{}); err != nil {
		return nil, err
	}
	g, err := gguf.NewReader(bytes.NewReader(h.out.Bytes()), int64(h.out.Len()))
	if err != nil {
		t.Fatalf("converted file does not read back: %v", err)
	}
	// Whatever the JSON said, the weights are the demo's: BF16 embeddings are copied byte for byte.
	if arch, err := g.Metadata.String("general.architecture"); err != nil || arch != "llama" {
		t.Fatalf("general.architecture %q (%v), want llama", arch, err)
	}
	got, err := g.Tensor("token_embd.weight")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Data, h.embeddings) {
		t.Fatalf("token_embd.weight (%v %v) is not the demo's embeddings", got.DType, got.Shape)
	}
	return g, nil
}

// checkJSONObject checks parseJSONObject on one input: what it accepts marshals and parses back to the same
// object (numbers keep their text, as json.Number).
func checkJSONObject(t *testing.T, name string, b []byte) {
	obj, err := parseJSONObject(b)
	if err != nil {
		return
	}
	again, err := json.Marshal(obj)
	if err != nil {
		t.Fatalf("%s: parsed object does not marshal: %v", name, err)
	}
	back, err := parseJSONObject(again)
	if err != nil || !reflect.DeepEqual(back, obj) {
		t.Fatalf("%s: %v marshals to %s, which parses to %v (%v)", name, obj, again, back, err)
	}
}

// FuzzConfig converts the demo model under arbitrary config.json files. config.json decides head counts, sizes and
// token ids that the converter divides by and indexes with, so a stranger's config must give an error, never a
// panic; a config that converts must give a GGUF file that reads back.
func FuzzConfig(f *testing.F) {
	h := newHFFuzz(f)
	f.Add(h.config)
	for _, s := range []string{`{}`, `null`, `{"architectures":["LlamaForCausalLM"]}`,
		`{"architectures":["LlamaForCausalLM"],"num_attention_heads":0,"num_key_value_heads":0,"hidden_size":64}`,
		`{"architectures":["LlamaForCausalLM"],"num_attention_heads":-4,"head_dim":1e400,"rope_scaling":{"type":"linear","factor":"x"}}`,
	} {
		f.Add([]byte(s))
	}
	for _, b := range sharedConfigs("config.json") {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, config []byte) {
		h.convert(t, h.dir, config, nil, h.tokenizerConfig)
	})
}

// FuzzSideConfigs converts the demo model under arbitrary generation_config.json and tokenizer_config.json files:
// the first gives the sampling keys, the second the special tokens, chat template and added tokens, and either
// may hold any JSON. An empty input stands for an absent file.
func FuzzSideConfigs(f *testing.F) {
	h := newHFFuzz(f)
	gens := append(sharedConfigs("generation_config.json"), []byte(`{"top_k":50,"top_p":0.9,"temperature":0.7}`),
		[]byte(`{"top_k":1e10,"temperature":"hot","sequence":[1]}`), nil)
	toks := append(sharedConfigs("tokenizer_config.json"), h.tokenizerConfig,
		[]byte(`{"chat_template":[{"name":"default","template":"{{x}}"}],"add_bos_token":"yes","bos_token":{"content":7}}`),
		[]byte(`{"added_tokens_decoder":{"-1":{"content":"x"},"99999999999":{},"3":null}}`), nil)
	for i := range max(len(gens), len(toks)) {
		f.Add(gens[i%len(gens)], toks[i%len(toks)])
	}
	f.Fuzz(func(t *testing.T, generation, tokenizerConfig []byte) {
		h.convert(t, h.dir, h.config, orNil(generation), orNil(tokenizerConfig))
	})
}

// orNil makes an empty input stand for an absent file; a present but empty file is FuzzConfig's case.
func orNil(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// sideTokenizers are the tokenizers beside which each optional file is read: added_tokens.json only with a
// SentencePiece tokenizer.model, special_tokens_map.json only with LlamaHfVocab's tokenizer.json, merges.txt only
// with a byte-level BPE tokenizer.json that has no merges of its own, chat_template.json with any of them when
// tokenizer_config.json (the demo's) has no chat_template.
var sideTokenizers = [...]struct{ name, file, json string }{
	{"spm", "tokenizer.model", ""},
	{"llama-hf", "tokenizer.json", llamaHFSideTokenizer()},
	{"bpe", "tokenizer.json", strings.Replace(llama3Tokenizer, `"merges": [["a", "b"], ["\u0120", "a"], ["ab", "c"]]`,
		`"merges": []`, 1)},
}

// llamaHFSideTokenizer is a SentencePiece-style BPE tokenizer.json with the demo's 320 ids: <unk>, <s> and </s>
// (special added tokens), the 256 byte pieces, pieces ▁t3..▁t61, and [MASK] and <|im_start|>, which only
// special_tokens_map.json can make control tokens.
func llamaHFSideTokenizer() string {
	vocab := []string{`"<unk>": 0`, `"<s>": 1`, `"</s>": 2`}
	for b := range 256 {
		vocab = append(vocab, fmt.Sprintf(`"<0x%02X>": %d`, b, 3+b))
	}
	for id := 259; id < 318; id++ {
		vocab = append(vocab, fmt.Sprintf(`"\u2581t%d": %d`, id-256, id))
	}
	vocab = append(vocab, `"[MASK]": 318`, `"<|im_start|>": 319`)
	return `{"added_tokens": [{"id": 0, "content": "<unk>", "special": true},
	    {"id": 1, "content": "<s>", "special": true}, {"id": 2, "content": "</s>", "special": true}],
	  "decoder": {"type": "Sequence", "decoders": []},
	  "model": {"type": "BPE", "byte_fallback": true, "vocab": {` + strings.Join(vocab, ",") + `}, "merges": []}}`
}

// sideFiles are the optional files FuzzSideFiles writes, in the order of its arguments.
var sideFiles = [...]string{"special_tokens_map.json", "added_tokens.json", "merges.txt", "chat_template.json"}

// FuzzSideFiles converts the demo model with arbitrary special_tokens_map.json, added_tokens.json, merges.txt and
// chat_template.json beside each kind of tokenizer (an empty input stands for an absent file). A JSON file that
// is read and does not parse must fail the conversion with an error naming it; a conversion that succeeds must
// show what each file said: control tokens only where special_tokens_map.json (or the tokenizer itself) names
// them, each added_tokens.json id holding the last text in byte order that claims it, merges.txt's merges as
// "a b" pairs in file order, chat_template.json's template.
func FuzzSideFiles(f *testing.F) {
	h := newHFFuzz(f)
	smaps := append(sharedConfigs("special_tokens_map.json"),
		[]byte(`{"pad_token": "<|im_start|>", "additional_special_tokens": ["[MASK]", {"content": "<s>"}]}`),
		[]byte(`{"mask_token": {"content": 7}, "additional_special_tokens": "[MASK]"}`), []byte(`[1]`), nil)
	added := [][]byte{[]byte(`{"<extra>": 300, "<x>": 319, "<y>": 319, "neg": -1, "big": 1e3, "str": "5", "huge": 99999999999999999999}`),
		[]byte(`{"<extra>": 300`), nil}
	merges := [][]byte{[]byte("#version: 0.2\na b\n\u0120 a\r\nab c\n\n  too many parts\nx\n"),
		[]byte("a b\rc d\x1ce f\n"), []byte("\xff\xfe a\n"), nil}
	chats := [][]byte{[]byte(`{"chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"}`),
		[]byte(`{"chat_template": [{"name": "tool use", "template": "x"}, {"name": "default", "template": "y"}]}`),
		[]byte(`{"chat_template": 3}`), []byte(`{}{}`), nil}
	n := max(len(smaps), len(added), len(merges), len(chats))
	for kind := range len(sideTokenizers) {
		for i := range n {
			f.Add(byte(kind), smaps[i%len(smaps)], added[i%len(added)], merges[i%len(merges)], chats[i%len(chats)])
		}
	}
	f.Fuzz(func(t *testing.T, kind byte, smap, added, merges, chat []byte) {
		k := int(kind) % len(sideTokenizers)
		dir := h.sideDirs[k]
		files := [len(sideFiles)][]byte{orNil(smap), orNil(added), orNil(merges), orNil(chat)}
		for i, name := range sideFiles {
			if bytes.Equal(files[i], h.written[k][i]) && (files[i] == nil) == (h.written[k][i] == nil) {
				continue
			}
			path := filepath.Join(dir, name)
			var err error
			if files[i] == nil {
				err = os.Remove(path)
			} else {
				err = os.WriteFile(path, files[i], 0o644)
			}
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Fatal(err)
			}
			h.written[k][i] = bytes.Clone(files[i])
		}
		// The JSON files this tokenizer reads.
		read := map[string]bool{"chat_template.json": true, "added_tokens.json": k == 0,
			"special_tokens_map.json": k == 1}
		g, err := h.convert(t, dir, h.config, nil, h.tokenizerConfig)
		var bad []string // the files read that must be refused; the conversion names the first it reads
		for i, name := range sideFiles {
			if !read[name] || files[i] == nil {
				continue
			}
			checkJSONObject(t, name, files[i])
			if _, perr := parseJSONObject(files[i]); perr != nil {
				bad = append(bad, name)
			}
		}
		// gguf-py opens merges.txt as UTF-8 text.
		if k == 2 && files[2] != nil && !utf8.Valid(files[2]) {
			bad = append(bad, "merges.txt")
		}
		if len(bad) > 0 && (err == nil || !slices.ContainsFunc(bad, func(name string) bool {
			return strings.Contains(err.Error(), name)
		})) {
			t.Fatalf("%v must be refused, but the conversion gave %v", bad, err)
		}
		if g == nil {
			return
		}
		h.checkSideFiles(t, g, k, files)
	})
}

// checkSideFiles checks that the converted file g shows what the side files said.
func (h *hfFuzz) checkSideFiles(t *testing.T, g *gguf.File, kind int, files [len(sideFiles)][]byte) {
	tokens, err := g.Metadata.Strings(keyTokens)
	if err != nil {
		t.Fatal(err)
	}
	types, err := gguf.Values[int32](g.Metadata, keyTokTypes)
	if err != nil {
		t.Fatal(err)
	}
	switch kind {
	case 0: // added_tokens.json
		added, _ := parseJSONObject(files[1])
		claims := map[int64]string{}
		for text := range added {
			if id, ok := added.int(text); ok && id >= 0 && id < int64(len(tokens)) && text > claims[id] {
				claims[id] = text
			}
		}
		for id, text := range claims {
			if tokens[id] != text || TokenType(types[id]) != TokenUserDefined {
				t.Fatalf("token %d is %q of type %d, want %q, user-defined, from added_tokens.json", id, tokens[id],
					types[id], text)
			}
		}
	case 1: // special_tokens_map.json
		named := map[string]bool{"<unk>": true, "<s>": true, "</s>": true} // the tokenizer's own and the demo config's
		var walk func(v any)
		walk = func(v any) {
			switch v := v.(type) {
			case string:
				named[v] = true
			case []any:
				for _, e := range v {
					walk(e)
				}
			case map[string]any:
				for _, e := range v {
					walk(e)
				}
			}
		}
		smap, _ := parseJSONObject(files[0])
		walk(map[string]any(smap))
		for id, typ := range types {
			if TokenType(typ) == TokenControl && !named[tokens[id]] {
				t.Fatalf("token %d %q is a control token, but no special token file names it", id, tokens[id])
			}
		}
	case 2: // merges.txt
		got, _ := g.Metadata.Strings(keyTokMerges)
		lines := strings.Count(string(files[2]), "\n") + strings.Count(string(files[2]), "\r") + 1
		if len(got) > lines {
			t.Fatalf("%d merges from %d lines", len(got), lines)
		}
		for i, m := range got {
			a, b, ok := strings.Cut(m, " ")
			if !ok || a == "" || b == "" || strings.ContainsFunc(a+b, pythonSpace) || !utf8.ValidString(m) {
				t.Fatalf("merge %d is %q, want two UTF-8 tokens without white space, separated by a space", i, m)
			}
		}
	}
	obj, _ := parseJSONObject(files[3])
	if want, ok := obj["chat_template"].(string); ok {
		if got, err := g.Metadata.String("tokenizer.chat_template"); got != want {
			t.Fatalf("tokenizer.chat_template is %q (%v), want chat_template.json's %q", got, err, want)
		}
	}
}

// TestMergesTxt reads merges.txt files as gguf-py's SpecialVocab._try_load_merges_txt does; the expected merges
// are what that function, run with Python 3.12, gives for the same bytes.
func TestMergesTxt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "merges.txt")
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"#version: 0.2\na b\n\u0120 a\r\nab c\n\n  too many parts\nx\n", []string{"a b", "\u0120 a", "ab c"}},
		{"a b\rc d\x1ce f\n", []string{"a b"}}, // \r ends a line; \x1c is white space to str.split
		{"a\x1cb\n", []string{"a b"}},
		{"  # not version\na b", []string{"a b"}},
		{"\u00a0x\u3000y\u0085\n", []string{"x y"}},
		{"", nil},
		{"#only", nil},
	} {
		if err := os.WriteFile(path, []byte(c.in), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := readMergesTxt(path); err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("merges.txt %q: %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	if err := os.WriteFile(path, []byte("a b\n\xff\xfe a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := readMergesTxt(path); err == nil || !strings.Contains(err.Error(), path+": line 2 is not UTF-8") {
		t.Errorf("merges.txt with a byte 0xff on line 2: %q, %v; want an error naming the file and line", got, err)
	}
	if got, err := readMergesTxt(filepath.Join(dir, "absent.txt")); got != nil || err != nil {
		t.Errorf("absent merges.txt: %q, %v; want nothing", got, err)
	}
}
