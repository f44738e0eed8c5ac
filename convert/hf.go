package convert

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/lathe-ml/lathe/safetensors"
)

// HFModel is a Hugging Face model directory opened for conversion: its JSON configuration files and its safetensors
// weights (one file or an indexed set of shards).
type HFModel struct {
	Dir string
	// Arch is config.json's architectures[0], e.g. "LlamaForCausalLM".
	Arch string
	// Config, Generation and TokenizerConfig are config.json, generation_config.json and tokenizer_config.json as
	// parsed JSON objects (numbers as json.Number). The last two are nil when the file is absent.
	Config          map[string]any
	Generation      map[string]any
	TokenizerConfig map[string]any
	Weights         *safetensors.Model
}

// OpenHF opens the model in dir. It fails on a missing or malformed config.json, on an architecture lathe cannot
// convert, and on missing or malformed weights.
func OpenHF(dir string) (*HFModel, error) {
	var files [3][]byte
	for i, name := range hfConfigFiles {
		var err error
		if files[i], err = readOptional(filepath.Join(dir, name)); err != nil {
			return nil, err
		}
	}
	m := &HFModel{Dir: dir}
	if err := m.parseConfigs(files[0], files[1], files[2]); err != nil {
		return nil, err
	}
	var err error
	if m.Weights, err = safetensors.OpenDir(dir); err != nil {
		return nil, err
	}
	if m.Weights, err = decodedIfBitMoD(m.Weights); err != nil {
		return nil, err
	}
	return m, nil
}

// hfConfigFiles are the JSON files OpenHF reads, in the order parseConfigs takes them.
var hfConfigFiles = [...]string{"config.json", "generation_config.json", "tokenizer_config.json"}

// parseConfigs sets Config, Generation, TokenizerConfig and Arch from the bytes of config.json,
// generation_config.json and tokenizer_config.json (nil for a file that is absent). It is OpenHF without the disk,
// so that the parsing can be fuzzed from memory.
func (m *HFModel) parseConfigs(config, generation, tokenizerConfig []byte) error {
	if config == nil {
		return fmt.Errorf("convert: %s: no config.json; not a Hugging Face model directory", m.Dir)
	}
	var objs [3]jsonObject
	for i, b := range [3][]byte{config, generation, tokenizerConfig} {
		if b == nil {
			continue
		}
		var err error
		if objs[i], err = parseJSONObject(b); err != nil {
			return fmt.Errorf("convert: %s: %w", filepath.Join(m.Dir, hfConfigFiles[i]), err)
		}
	}
	m.Config, m.Generation, m.TokenizerConfig = objs[0], objs[1], objs[2]
	var err error
	if m.Arch, err = architecture(m.Config); err != nil {
		return fmt.Errorf("convert: %s: %w", filepath.Join(m.Dir, "config.json"), err)
	}
	return nil
}

// Close releases the weights.
func (m *HFModel) Close() error { return m.Weights.Close() }

// The JSON files with Python-like accessors.
func (m *HFModel) config() jsonObject          { return m.Config }
func (m *HFModel) generation() jsonObject      { return m.Generation }
func (m *HFModel) tokenizerConfig() jsonObject { return m.TokenizerConfig }

// architecture finds config.json's model class, the way llama.cpp's get_model_architecture does (architectures[0]),
// and checks that lathe can convert it.
func architecture(cfg jsonObject) (string, error) {
	archs, _ := cfg["architectures"].([]any)
	if len(archs) == 0 {
		return "", errors.New(`no "architectures" list`)
	}
	arch, ok := archs[0].(string)
	if !ok {
		return "", fmt.Errorf(`"architectures"[0] is %s, want a string`, jsonKind(archs[0]))
	}
	if !slices.Contains(llamaClasses, arch) {
		return "", fmt.Errorf("architecture %q is not supported; lathe converts %v", arch, llamaClasses)
	}
	return arch, nil
}

// jsonObject is a parsed JSON object whose numbers are json.Number, so that integers stay exact and floats keep
// the text they were written with.
type jsonObject map[string]any

// readJSONObject parses a JSON file holding one object; a missing file gives nil and no error.
func readJSONObject(path string) (jsonObject, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	obj, err := parseJSONObject(b)
	if err != nil {
		return nil, fmt.Errorf("convert: %s: %w", path, err)
	}
	return obj, nil
}

func parseJSONObject(b []byte) (jsonObject, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var obj map[string]any
	if err := d.Decode(&obj); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("invalid JSON at offset %d: %w", se.Offset, err)
		}
		return nil, fmt.Errorf("want a JSON object: %w", err)
	}
	if obj == nil {
		return nil, errors.New("want a JSON object, got null")
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("invalid JSON: data after the object at offset %d", d.InputOffset())
	}
	return obj, nil
}

// Accessors follow Python semantics where llama.cpp's converter relies on them: a key that is present with a null
// value counts as present (find_hparam stops at it) and yields nothing.

// has reports whether key is present, even as null.
func (o jsonObject) has(key string) bool {
	_, ok := o[key]
	return ok
}

// int returns an integer value; ok is false when the key is absent, null or not an integer (as isinstance(x, int)).
func (o jsonObject) int(key string) (int64, bool) {
	n, isNum := o[key].(json.Number)
	if !isNum {
		return 0, false
	}
	i, err := strconv.ParseInt(string(n), 10, 64)
	return i, err == nil
}

// float returns a numeric value, integer or not.
func (o jsonObject) float(key string) (float64, bool) {
	n, isNum := o[key].(json.Number)
	if !isNum {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(n), 64)
	return f, err == nil
}

func (o jsonObject) string(key string) (string, bool) {
	s, ok := o[key].(string)
	return s, ok
}

func (o jsonObject) bool(key string) (bool, bool) {
	b, ok := o[key].(bool)
	return b, ok
}

func (o jsonObject) object(key string) jsonObject {
	m, _ := o[key].(map[string]any)
	return m
}

// first returns the first of keys that is present, as find_hparam(keys, optional=True) does.
func (o jsonObject) first(keys ...string) (string, bool) {
	for _, k := range keys {
		if o.has(k) {
			return k, true
		}
	}
	return "", false
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
