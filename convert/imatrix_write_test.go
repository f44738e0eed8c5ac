package convert

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestWriteImatrixRoundTrip: what WriteImatrix writes, OpenImatrix (llama-quantize's load_imatrix) reads back as
// sum/count per column, with the dataset and chunk count; a tensor that saw no token reads as all ones.
func TestWriteImatrixRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "im.gguf")
	s := &ImatrixStats{
		Sums: map[string][]float64{
			"blk.0.attn_q.weight":   {4, 8, 12, 2},
			"blk.0.ffn_down.weight": {3, 1.5},
			"blk.1.ffn_up.weight":   {7, 7},
		},
		Counts:    map[string]int64{"blk.0.attn_q.weight": 4, "blk.0.ffn_down.weight": 3, "blk.1.ffn_up.weight": 0},
		Datasets:  []string{"val.txt"},
		Chunks:    5,
		ChunkSize: 256,
	}
	if err := WriteImatrix(path, s); err != nil {
		t.Fatal(err)
	}
	im, err := OpenImatrix(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]float32{
		"blk.0.attn_q.weight":   {1, 2, 3, 0.5},
		"blk.0.ffn_down.weight": {1, 0.5},
		"blk.1.ffn_up.weight":   {1, 1},
	}
	if !reflect.DeepEqual(im.Entries, want) || im.Chunks != 5 || !reflect.DeepEqual(im.Datasets, []string{"val.txt"}) {
		t.Errorf("read back %+v", im)
	}
	// Same input, same bytes.
	again := filepath.Join(t.TempDir(), "im2.gguf")
	if err := WriteImatrix(again, s); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(path)
	b, _ := os.ReadFile(again)
	if !reflect.DeepEqual(a, b) {
		t.Error("two writes of the same statistics differ")
	}
}

func TestWriteImatrixRejects(t *testing.T) {
	dir := t.TempDir()
	if err := WriteImatrix(filepath.Join(dir, "a.gguf"), &ImatrixStats{}); err == nil {
		t.Error("empty statistics written")
	}
	s := &ImatrixStats{Sums: map[string][]float64{"x.weight": {1}}}
	if err := WriteImatrix(filepath.Join(dir, "b.gguf"), s); err == nil {
		t.Error("sums without a count written")
	}
}
