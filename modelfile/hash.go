package modelfile

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/internal/xxh64"
)

// HashAlgorithm names the function Hash uses.
type HashAlgorithm string

const (
	SHA256 HashAlgorithm = "sha256"
	// XXH64 is xxHash's 64-bit hash: several times faster, for change detection, not for integrity against an
	// adversary.
	XXH64 HashAlgorithm = "xxh64"
)

// HashOptions tune Hash.
type HashOptions struct {
	Algorithm HashAlgorithm // "" for SHA256
	Threads   int           // tensors hashed at once; 0 for GOMAXPROCS
	Progress  func(done, total int)
}

// HashReport is what `lathe hash` prints; its JSON form is a stable schema (fields are only ever added).
type HashReport struct {
	Path      string        `json:"path"`
	Algorithm HashAlgorithm `json:"algorithm"`
	Model     string        `json:"model"`   // hex
	Tensors   []TensorHash  `json:"tensors"` // in byte order of names
}

// TensorHash is the hash of one tensor.
type TensorHash struct {
	Name  string  `json:"name"`
	DType string  `json:"dtype"`
	Shape []int64 `json:"shape"`
	Hash  string  `json:"hash"` // hex
}

// Hash computes hashes of the tensors of m that depend only on each tensor's name, dtype, shape and bytes, not on
// the file format, the order of tensors, alignment, metadata or sharding: a GGUF file and a safetensors file holding
// the same tensors hash the same.
//
// A tensor's hash is H(record), with every integer a little-endian uint64:
//
//	record = len(name) ‖ name ‖ len(dtype) ‖ dtype ‖ ndim ‖ dim[0] ‖ … ‖ dim[ndim−1] ‖ data
//
// where name is the UTF-8 tensor name, dtype its type as lathe names it (tensor.DType.String: "F32", "BF16",
// "Q4_K"), dims are outermost first (row-major: GGUF's ne reversed), and data is the tensor's bytes as stored
// (little-endian elements or ggml blocks). The model's hash is H of the tensors' hashes (32 bytes each for SHA-256,
// 8 bytes big-endian for XXH64) concatenated in byte order of the names. H is SHA-256, or XXH64 with seed 0.
// Tensors are hashed in parallel.
func Hash(m *Model, opts HashOptions) (*HashReport, error) {
	alg := cmp.Or(opts.Algorithm, SHA256)
	newHash := func() hash.Hash { return sha256.New() }
	switch alg {
	case SHA256:
	case XXH64:
		newHash = func() hash.Hash { return xxh64.New() }
	default:
		return nil, fmt.Errorf("unknown hash algorithm %q (want %s or %s)", alg, SHA256, XXH64)
	}
	ts := slices.Clone(m.Tensors)
	slices.SortFunc(ts, func(a, b Tensor) int { return strings.Compare(a.Name, b.Name) })
	sums := make([][]byte, len(ts))
	err := forEach(len(ts), func(i int) int64 { return ts[i].Size }, opts.Threads, opts.Progress, newHash,
		func(h hash.Hash, i int) error {
			v, err := m.View(ts[i].Name)
			if err != nil {
				return err
			}
			h.Reset()
			writeRecordHeader(h, ts[i])
			h.Write(v.Data)
			sums[i] = h.Sum(nil)
			return nil
		})
	if err != nil {
		return nil, err
	}
	r := &HashReport{Path: m.Path, Algorithm: alg, Tensors: make([]TensorHash, len(ts))}
	whole := newHash()
	for i, t := range ts {
		whole.Write(sums[i])
		r.Tensors[i] = TensorHash{Name: t.Name, DType: t.DType.String(), Shape: slices.Clone(t.Shape),
			Hash: hex.EncodeToString(sums[i])}
	}
	r.Model = hex.EncodeToString(whole.Sum(nil))
	return r, nil
}

// writeRecordHeader writes the part of a tensor's hashed record before its data.
func writeRecordHeader(h hash.Hash, t Tensor) {
	var b []byte
	b = binary.LittleEndian.AppendUint64(b, uint64(len(t.Name)))
	b = append(b, t.Name...)
	dt := t.DType.String()
	b = binary.LittleEndian.AppendUint64(b, uint64(len(dt)))
	b = append(b, dt...)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(t.Shape)))
	for _, d := range t.Shape {
		b = binary.LittleEndian.AppendUint64(b, uint64(d))
	}
	h.Write(b)
}
