package safetensors

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"testing"
)

// namedReader gives an in-memory shard a file name, as a shard opened from disk or over HTTP has.
type namedReader struct {
	*bytes.Reader
	name string
}

func (r namedReader) Name() string { return r.name }

// FuzzIndex feeds arbitrary index files to OpenIndexFunc over two fixed shards. A malformed index is refused with a
// *FormatError inside it; a well-formed one is accepted exactly when its weight_map matches the shards, which the
// test works out on its own from the shards' tensor lists, and then the model holds exactly the weight_map's tensors.
func FuzzIndex(f *testing.F) {
	shards := map[string][]string{
		"model-00001-of-00002.safetensors": {"a", "b"},
		"model-00002-of-00002.safetensors": {"c"},
	}
	// The shards are parsed once: a File from NewReader holds no resource, so the Model's Close leaves it usable,
	// and each input then costs only its own parsing.
	files := map[string]*File{}
	for name, tensors := range shards {
		var h bytes.Buffer
		h.WriteByte('{')
		for i, t := range tensors {
			if i > 0 {
				h.WriteByte(',')
			}
			fmt.Fprintf(&h, `%q:{"dtype":"U8","shape":[1],"data_offsets":[%d,%d]}`, t, i, i+1)
		}
		h.WriteByte('}')
		b := []byte(file(h.String(), string(make([]byte, len(tensors)))))
		var err error
		if files[name], err = NewReader(namedReader{bytes.NewReader(b), name}, int64(len(b))); err != nil {
			f.Fatal(err)
		}
	}
	good := `{"metadata":{"total_size":3},"weight_map":{"a":"model-00001-of-00002.safetensors",` +
		`"b":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}}`
	f.Add([]byte(good))
	for _, s := range []string{
		`{"weight_map":{}}`,
		`{"weight_map":{"a":"model-00002-of-00002.safetensors"}}`,
		`{"weight_map":{"a":"../model-00001-of-00002.safetensors"}}`,
		`{"weight_map":{"a":"x","a":"x"}}`,
		`{"metadata":{"nested":[1,{"x":[null,true,false,-1.5e3]}]},"weight_map":{"a\u0000":"b"}}`,
		`{"weight_map":`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		open := func(shard string) (*File, error) {
			if f, ok := files[shard]; ok {
				return f, nil
			}
			return nil, fmt.Errorf("%s: %w", shard, os.ErrNotExist)
		}
		m, err := OpenIndexFunc("index.json", data, open)
		weightMap, perr := parseIndex("index.json", data)
		if perr != nil {
			var fe *FormatError
			if err == nil || !errors.As(perr, &fe) || fe.Offset < 0 || fe.Offset > int64(len(data)) {
				t.Fatalf("malformed index: OpenIndexFunc %v, parse error %v not a FormatError within the file", err, perr)
			}
			return
		}
		// The index parses: it must be accepted exactly when every shard it names exists and the tensors it lists
		// are, shard by shard, the tensors stored there.
		wantOK := true
		listed := map[string]string{}
		for _, shard := range slices.Compact(slices.Sorted(maps.Values(weightMap))) {
			tensors, ok := shards[shard]
			if !ok {
				wantOK = false
				break
			}
			for _, name := range tensors {
				listed[name] = shard
			}
		}
		wantOK = wantOK && maps.Equal(listed, weightMap)
		if (err == nil) != wantOK {
			t.Fatalf("weight_map %v: accepted %v, want %v (%v)", weightMap, err == nil, wantOK, err)
		}
		if err != nil {
			return
		}
		defer m.Close()
		var got []string
		for _, info := range m.Tensors() {
			got = append(got, info.Name)
		}
		if want := slices.Sorted(maps.Keys(weightMap)); !slices.Equal(slices.Sorted(slices.Values(got)), want) {
			t.Fatalf("model holds %v, weight_map lists %v", got, want)
		}
	})
}
