package convert

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

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

// convert parses the three files and converts. A file that does not parse must be refused with an error naming
// it, and one that parses must survive a marshal and parse round trip unchanged; a conversion that succeeds must
// give a GGUF file that reads back.
func (h *hfFuzz) convert(t *testing.T, config, generation, tokenizerConfig []byte) {
	for i, b := range [3][]byte{config, generation, tokenizerConfig} {
		if b != nil {
			checkJSONObject(t, hfConfigFiles[i], b)
		}
	}
	m := &HFModel{Dir: h.dir, Weights: h.weights}
	if err := m.parseConfigs(config, generation, tokenizerConfig); err != nil {
		if !strings.Contains(err.Error(), ".json") {
			t.Fatalf("error names no file: %v", err)
		}
		return
	}
	var out bytes.Buffer
	if err := ToGGUF(&out, m, GGUFOptions{}); err != nil {
		return
	}
	g, err := gguf.NewReader(bytes.NewReader(out.Bytes()), int64(out.Len()))
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
		h.convert(t, config, nil, h.tokenizerConfig)
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
		h.convert(t, h.config, orNil(generation), orNil(tokenizerConfig))
	})
}

// orNil makes an empty input stand for an absent file; a present but empty file is FuzzConfig's case.
func orNil(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}
