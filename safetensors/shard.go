package safetensors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/tensor"
)

// IndexName is the index file of a sharded checkpoint written by transformers (model.safetensors.index.json).
const IndexName = "model.safetensors.index.json"

// Model is a checkpoint made of one or more safetensors files (shards), seen as one set of tensors. Its methods are
// safe for concurrent use.
type Model struct {
	shards   []*File
	tensors  []TensorInfo // shard by shard, each in offset order
	shardOf  []int        // shard index of each tensor
	index    map[string]int
	metadata map[string]string
}

// OpenIndex opens a sharded checkpoint from its index, {"metadata": {...}, "weight_map": {tensor: shard file}}.
// Every shard must hold exactly the tensors the index assigns to it: a tensor missing from its shard, stored in
// another shard, stored twice or not listed is an error. Shard names must be plain file names beside the index.
// metadata.total_size is not checked: producers disagree on its meaning (formats-quant.md §4.2).
func OpenIndex(indexPath string) (*Model, error) {
	index, err := readFileLimited(indexPath)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(indexPath)
	return OpenIndexFunc(indexPath, index, func(shard string) (*File, error) { return Open(filepath.Join(dir, shard)) })
}

// OpenIndexFunc is OpenIndex for an index whose bytes the caller has read and whose shards open calls for, given
// their names in the weight_map: for checkpoints that are not in a local directory (lathe reads them over HTTP).
// indexName is used in messages. The checks are those of OpenIndex.
func OpenIndexFunc(indexName string, index []byte, open func(shard string) (*File, error)) (*Model, error) {
	weightMap, err := parseIndex(indexName, index)
	if err != nil {
		return nil, err
	}
	m, err := openShards(slices.Compact(slices.Sorted(maps.Values(weightMap))), open)
	if err != nil {
		return nil, err
	}
	for i, info := range m.tensors {
		shard := m.shards[m.shardOf[i]].Name()
		want, listed := weightMap[info.Name]
		if !listed {
			m.Close()
			return nil, fmt.Errorf("safetensors: %s: tensor %q of shard %s is not in the weight_map", indexName, info.Name, filepath.Base(shard))
		}
		if want != filepath.Base(shard) {
			m.Close()
			return nil, fmt.Errorf("safetensors: %s: weight_map puts tensor %q in %s, but it is in %s", indexName, info.Name, want, filepath.Base(shard))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(weightMap)) {
		if _, ok := m.index[name]; !ok {
			m.Close()
			return nil, fmt.Errorf("safetensors: %s: weight_map puts tensor %q in %s, which does not contain it", indexName, name, weightMap[name])
		}
	}
	return m, nil
}

func readFileLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxHeaderSize+1))
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	return b, nil
}

// parseIndex parses the weight_map of an index file with the header's strict scanner, so that a tensor listed twice
// is an error rather than silently the last entry.
func parseIndex(path string, b []byte) (map[string]string, error) {
	fail := func(err error) error { return withFile(err, path) }
	if len(b) > MaxHeaderSize {
		return nil, &FormatError{File: path, Offset: MaxHeaderSize, Rule: fmt.Sprintf("index is larger than %d bytes", MaxHeaderSize)}
	}
	if !utf8.Valid(b) {
		return nil, &FormatError{File: path, Rule: "index is not valid UTF-8"}
	}
	s := &scanner{b: b}
	var weightMap map[string]string
	if err := s.expect('{', "an index object"); err != nil {
		return nil, fail(err)
	}
	seen := map[string]bool{}
	if s.peek() == '}' {
		s.pos++
	} else {
		for {
			pos := s.pos
			key, err := s.str()
			if err != nil {
				return nil, fail(err)
			}
			if seen[key] {
				return nil, fail(s.errorAt(pos, "duplicate key %q", key))
			}
			seen[key] = true
			if err := s.expect(':', "':'"); err != nil {
				return nil, fail(err)
			}
			if key == "weight_map" {
				weightMap, err = s.weightMap()
			} else {
				err = s.skip(maxDepth - 1)
			}
			if err != nil {
				return nil, fail(err)
			}
			more, err := s.more('}')
			if err != nil {
				return nil, fail(err)
			}
			if !more {
				break
			}
		}
	}
	if s.peek() != 0 {
		return nil, fail(s.errorf("unexpected %s after the index object", s.found()))
	}
	if weightMap == nil {
		return nil, &FormatError{File: path, Rule: "index has no weight_map"}
	}
	return weightMap, nil
}

func (s *scanner) weightMap() (map[string]string, error) {
	if err := s.expect('{', "weight_map to be an object"); err != nil {
		return nil, err
	}
	m := map[string]string{}
	if s.peek() == '}' {
		s.pos++
		return m, nil
	}
	for {
		pos := s.pos
		name, err := s.str()
		if err != nil {
			return nil, err
		}
		if _, dup := m[name]; dup {
			return nil, s.errorAt(pos, "tensor %q is listed twice in weight_map", name)
		}
		if err := s.expect(':', "':'"); err != nil {
			return nil, err
		}
		fpos := s.pos
		file, err := s.str()
		if err != nil {
			return nil, err
		}
		// A shard must be a file beside the index: a path could reach outside the checkpoint.
		if file == "" || file == "." || file == ".." || strings.ContainsAny(file, `/\`) || filepath.Base(file) != file {
			return nil, s.errorAt(fpos, "weight_map entry %q: shard %q is not a plain file name", name, file)
		}
		m[name] = file
		more, err := s.more('}')
		if err != nil {
			return nil, err
		}
		if !more {
			return m, nil
		}
	}
}

// OpenDir opens the checkpoint in dir: through its index (model.safetensors.index.json, or else the only
// *.safetensors.index.json) when there is one, otherwise as the union of every *.safetensors and *.safetensors.zst
// file in it, in name order, where a tensor stored in two files is an error.
func OpenDir(dir string) (*Model, error) {
	if _, err := os.Stat(filepath.Join(dir, IndexName)); err == nil {
		return OpenIndex(filepath.Join(dir, IndexName))
	}
	indexes, err := filepath.Glob(filepath.Join(dir, "*.safetensors.index.json"))
	if err != nil {
		return nil, err
	}
	switch len(indexes) {
	case 0:
	case 1:
		return OpenIndex(indexes[0])
	default:
		return nil, fmt.Errorf("safetensors: %s: several index files and no %s: %v", dir, IndexName, indexes)
	}
	plain, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if err != nil {
		return nil, err
	}
	compressed, err := filepath.Glob(filepath.Join(dir, "*.safetensors.zst"))
	if err != nil {
		return nil, err
	}
	paths := append(plain, compressed...)
	if len(paths) == 0 {
		return nil, fmt.Errorf("safetensors: %s: no .safetensors files", dir)
	}
	slices.Sort(paths)
	return openShards(paths, func(p string) (*File, error) { return Open(p) })
}

// openShards opens the files and merges their tensors, refusing a tensor that is in two of them.
func openShards(names []string, open func(string) (*File, error)) (*Model, error) {
	m := &Model{index: map[string]int{}}
	for _, p := range names {
		f, err := open(p)
		if err != nil {
			m.Close()
			return nil, err
		}
		m.shards = append(m.shards, f)
		for _, info := range f.h.tensors {
			if j, dup := m.index[info.Name]; dup {
				m.Close()
				return nil, fmt.Errorf("safetensors: tensor %q is stored in both %s and %s", info.Name, m.shards[m.shardOf[j]].Name(), f.Name())
			}
			m.index[info.Name] = len(m.tensors)
			m.tensors = append(m.tensors, info)
			m.shardOf = append(m.shardOf, len(m.shards)-1)
		}
		for k, v := range f.h.metadata {
			if m.metadata == nil {
				m.metadata = map[string]string{}
			}
			if _, ok := m.metadata[k]; !ok {
				m.metadata[k] = v
			}
		}
	}
	return m, nil
}

// Shards returns the files of the model in name order.
func (m *Model) Shards() []*File { return slices.Clone(m.shards) }

// Tensors lists the tensors shard by shard, each shard in offset order. Offsets are within the tensor's shard.
func (m *Model) Tensors() []TensorInfo { return slices.Clone(m.tensors) }

// Lookup returns the description of the named tensor.
func (m *Model) Lookup(name string) (TensorInfo, bool) {
	i, ok := m.index[name]
	if !ok {
		return TensorInfo{}, false
	}
	return m.tensors[i], true
}

// Shard returns the file that holds the named tensor.
func (m *Model) Shard(name string) (*File, error) {
	i, ok := m.index[name]
	if !ok {
		return nil, fmt.Errorf("safetensors: tensor %q: %w", name, ErrNotFound)
	}
	return m.shards[m.shardOf[i]], nil
}

// Tensor returns the named tensor from its shard.
func (m *Model) Tensor(name string) (tensor.View, error) {
	f, err := m.Shard(name)
	if err != nil {
		return tensor.View{}, err
	}
	return f.Tensor(name)
}

// Section returns a reader over the named tensor's bytes.
func (m *Model) Section(name string) (*io.SectionReader, error) {
	f, err := m.Shard(name)
	if err != nil {
		return nil, err
	}
	return f.Section(name)
}

// Metadata returns the union of the shards' __metadata__ maps; where shards disagree on a key, the first shard in
// name order wins. It is nil when no shard has metadata.
func (m *Model) Metadata() map[string]string { return maps.Clone(m.metadata) }

// MetadataKeys returns the metadata keys in sorted order.
func (m *Model) MetadataKeys() []string { return slices.Sorted(maps.Keys(m.metadata)) }

// Close closes every shard.
func (m *Model) Close() error {
	var errs []error
	for _, f := range m.shards {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}

// Shard is one file of a sharded checkpoint: its file name and its tensors in write order.
type Shard struct {
	Name    string
	Tensors []TensorInfo
}

// PlanShards lays the declared tensors out as NewWriter would and cuts them greedily into shards holding at most
// maxShardSize bytes of tensor data each (a larger tensor gets a shard of its own; maxShardSize <= 0 means one
// shard), named model-00001-of-0000K.safetensors as transformers' save_pretrained names them, or model.safetensors
// when everything fits in one. With Zstd the names end in .zst. Writing each shard's Tensors with NewWriter (same
// metadata and options) keeps them in this order.
func PlanShards(decls []TensorInfo, metadata map[string]string, maxShardSize int64, opts ...Option) ([]Shard, error) {
	o := collect(opts)
	layout, _, err := prepare(decls, metadata, o.keepOrder)
	if err != nil {
		return nil, err
	}
	var shards []Shard
	var filled int64
	for _, t := range layout {
		if len(shards) == 0 || maxShardSize > 0 && filled > 0 && filled+t.Size > maxShardSize {
			shards = append(shards, Shard{})
			filled = 0
		}
		shards[len(shards)-1].Tensors = append(shards[len(shards)-1].Tensors, t)
		filled += t.Size
	}
	if len(shards) == 0 {
		shards = append(shards, Shard{})
	}
	ext := ".safetensors"
	if o.zstd {
		ext += ".zst"
	}
	for i := range shards {
		shards[i].Name = "model" + ext
		if len(shards) > 1 {
			shards[i].Name = fmt.Sprintf("model-%05d-of-%05d%s", i+1, len(shards), ext)
		}
	}
	return shards, nil
}

// WriteIndex writes model.safetensors.index.json for a checkpoint of several shards, as transformers writes it
// (json.dumps(index, indent=2, sort_keys=True) + "\n"; total_size is the sum of tensor bytes), atomically. A
// single shard needs no index, and none is written. It reports whether it wrote one.
func WriteIndex(dir string, shards []Shard) (bool, error) {
	if len(shards) < 2 {
		return false, nil
	}
	weightMap := map[string]string{}
	var total int64
	for _, sh := range shards {
		for _, t := range sh.Tensors {
			weightMap[t.Name] = sh.Name
			total += t.Size
		}
	}
	index := struct {
		Metadata  map[string]int64  `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}{map[string]int64{"total_size": total}, weightMap}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(index); err != nil {
		return false, err
	}
	return true, atomicfile.WriteFile(filepath.Join(dir, IndexName), buf.Bytes())
}

// WriteShards writes the views to dir as PlanShards cuts them, each file atomically, and then the index. It returns
// the names of the files written.
func WriteShards(dir string, views []tensor.View, metadata map[string]string, maxShardSize int64, opts ...Option) ([]string, error) {
	if maxShardSize <= 0 {
		return nil, fmt.Errorf("safetensors: shard size %d must be positive", maxShardSize)
	}
	decls := make([]TensorInfo, len(views))
	byName := make(map[string]tensor.View, len(views))
	for i, v := range views {
		decls[i] = TensorInfo{Name: v.Name, DType: v.DType, Shape: v.Shape}
		byName[v.Name] = v
	}
	shards, err := PlanShards(decls, metadata, maxShardSize, opts...)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, sh := range shards {
		shardViews := make([]tensor.View, len(sh.Tensors))
		for i, t := range sh.Tensors {
			shardViews[i] = byName[t.Name]
		}
		if err := WriteFile(filepath.Join(dir, sh.Name), shardViews, metadata, opts...); err != nil {
			return names, err
		}
		names = append(names, sh.Name)
	}
	wrote, err := WriteIndex(dir, shards)
	if wrote {
		names = append(names, IndexName)
	}
	return names, err
}
