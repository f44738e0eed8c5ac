package convert

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/tensor"
)

// ImatrixStats are the raw sums an importance matrix is made of, as llama-imatrix accumulates them before saving
// (tools/imatrix/imatrix.cpp, IMatrixCollector::save_imatrix): per tensor, the sum over tokens of the squared input
// activation of every column, and the number of tokens summed.
type ImatrixStats struct {
	Sums      map[string][]float64
	Counts    map[string]int64
	Datasets  []string
	Chunks    int // chunks evaluated (imatrix.chunk_count)
	ChunkSize int // tokens per chunk (imatrix.chunk_size)
}

// WriteImatrix writes s at path in llama-imatrix's GGUF layout: general.type "imatrix", the imatrix.* keys, and per
// tensor, in name order, <name>.in_sum2 (F32, ne = [columns, 1]) and <name>.counts (F32, ne = [1, 1]). The sums are
// stored raw, not divided by the count, so that files can be combined as llama-imatrix --in-file does.
func WriteImatrix(path string, s *ImatrixStats) error {
	if len(s.Sums) == 0 {
		return fmt.Errorf("%s: imatrix: no tensors to write", path)
	}
	if s.Chunks < 0 || s.Chunks > math.MaxUint32 || s.ChunkSize < 0 || s.ChunkSize > math.MaxUint32 {
		return fmt.Errorf("%s: imatrix: chunk count %d or size %d out of range", path, s.Chunks, s.ChunkSize)
	}
	md := &gguf.Metadata{}
	md.Set("general.type", gguf.ValueOf("imatrix"))
	md.Set(keyImatrixDatasets, gguf.ArrayOf(s.Datasets))
	md.Set(keyImatrixChunkCount, gguf.ValueOf(uint32(s.Chunks)))
	md.Set(keyImatrixChunkSize, gguf.ValueOf(uint32(s.ChunkSize)))

	names := make([]string, 0, len(s.Sums))
	for n := range s.Sums {
		names = append(names, n)
	}
	sort.Strings(names) // deterministic output
	views := make([]tensor.View, 0, 2*len(names))
	for _, n := range names {
		sums := s.Sums[n]
		count, ok := s.Counts[n]
		if !ok || len(sums) == 0 {
			return fmt.Errorf("%s: imatrix: tensor %q has %d sums and no count", path, n, len(sums))
		}
		views = append(views,
			tensor.View{Name: n + ".in_sum2", DType: tensor.F32, Shape: tensor.Shape{1, int64(len(sums))},
				Data: f32Bytes(sums)},
			tensor.View{Name: n + ".counts", DType: tensor.F32, Shape: tensor.Shape{1, 1},
				Data: f32Bytes([]float64{float64(count)})})
	}
	return gguf.WriteFile(path, md, views)
}

// f32Bytes stores values as little-endian float32, the type llama-imatrix saves in.
func f32Bytes(xs []float64) []byte {
	b := make([]byte, 0, 4*len(xs))
	for _, x := range xs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(x)))
	}
	return b
}
