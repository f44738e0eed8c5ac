package convert

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/tensor"
)

// legacyFile builds a legacy imatrix file the way llama-imatrix's save_imatrix_legacy laid it out.
type legacyFile struct{ b []byte }

func (l *legacyFile) i32(v int32) *legacyFile {
	l.b = binary.LittleEndian.AppendUint32(l.b, uint32(v))
	return l
}

func (l *legacyFile) str(s string) *legacyFile {
	l.i32(int32(len(s)))
	l.b = append(l.b, s...)
	return l
}

func (l *legacyFile) entry(name string, ncall int32, values ...float32) *legacyFile {
	l.str(name).i32(ncall).i32(int32(len(values)))
	for _, v := range values {
		l.b = binary.LittleEndian.AppendUint32(l.b, math.Float32bits(v))
	}
	return l
}

func validLegacy() []byte {
	return new(legacyFile).i32(2).
		entry("blk.0.attn_q.weight", 4, 4, 8, 12).
		entry("blk.0.ffn_up.weight", 0, 5, 6).
		i32(7).str("wiki.train.raw").b
}

func TestReadLegacyImatrix(t *testing.T) {
	im, err := ReadImatrix(bytes.NewReader(validLegacy()), int64(len(validLegacy())), "x.dat")
	if err != nil {
		t.Fatal(err)
	}
	// Values are stored as (sum/count)·ncall; the reader divides ncall out, and leaves them when ncall is 0.
	want := map[string][]float32{"blk.0.attn_q.weight": {1, 2, 3}, "blk.0.ffn_up.weight": {5, 6}}
	if !reflect.DeepEqual(im.Entries, want) || im.Chunks != 7 || !reflect.DeepEqual(im.Datasets, []string{"wiki.train.raw"}) ||
		im.Name != "x.dat" {
		t.Errorf("got %+v", im)
	}
	// Older files end after the entries.
	short := new(legacyFile).i32(1).entry("a", 2, 3).b
	im, err = ReadImatrix(bytes.NewReader(short), int64(len(short)), "old.dat")
	if err != nil || im.Chunks != 0 || im.Datasets != nil || im.Entries["a"][0] != 1.5 {
		t.Errorf("old format: %+v, %v", im, err)
	}
}

// TestLegacyImatrixMalformed: every case is rejected with an ImatrixError at the offending field.
func TestLegacyImatrixMalformed(t *testing.T) {
	valid := validLegacy()
	huge := new(legacyFile).i32(1).i32(1 << 30).b
	for _, tc := range []struct {
		name   string
		b      []byte
		offset int64
		msg    string
	}{
		{"empty", nil, 0, "entry count needs 4 bytes"},
		{"no entries", new(legacyFile).i32(0).b, 0, "holds no data"},
		{"negative count", new(legacyFile).i32(-5).b, 0, "holds no data"},
		{"zero name", new(legacyFile).i32(1).i32(0).b, 4, "name length 0"},
		{"name past end", huge, 8, "entry name needs 1073741824 bytes, 0 are left"},
		{"no values", new(legacyFile).i32(1).str("a").i32(1).i32(0).b, 13, "value count 0"},
		{"values truncated", valid[:40], 35, "values of blk.0.attn_q.weight needs 12 bytes"},
		{"more entries than data", new(legacyFile).i32(3).entry("a", 1, 1).b, 21, "name length needs 4 bytes"},
		{"duplicate", new(legacyFile).i32(2).entry("a", 1, 1).entry("a", 1, 2).b, 21, `"a" appears twice`},
		{"dataset truncated", valid[:len(valid)-3], 94, "dataset name needs 14 bytes, 11 are left"},
		{"chunk count only", valid[:90], 90, "dataset name length needs 4 bytes"},
		{"negative dataset", append(append([]byte{}, valid[:90]...), 0xff, 0xff, 0xff, 0xff), 90, "dataset name length -1"},
		{"trailing bytes", append(append([]byte{}, valid...), 0), 108, "1 bytes after the dataset name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadImatrix(bytes.NewReader(tc.b), int64(len(tc.b)), "bad.dat")
			var ie *ImatrixError
			if !errors.As(err, &ie) || ie.Offset != tc.offset || !strings.Contains(err.Error(), tc.msg) ||
				!strings.HasPrefix(err.Error(), "bad.dat:") {
				t.Errorf("err = %v, want an ImatrixError at offset %d containing %q", err, tc.offset, tc.msg)
			}
		})
	}
}

// ggufImatrix writes an imatrix GGUF like llama-imatrix's save_imatrix: per tensor <name>.in_sum2 [experts, cols]
// and <name>.counts [experts, 1] (row-major), and the imatrix.* keys.
func ggufImatrix(t testing.TB, md *gguf.Metadata, tensors map[string][]float32, shapes map[string]tensor.Shape,
	order []string) []byte {
	t.Helper()
	decl := make([]gguf.TensorInfo, len(order))
	for i, n := range order {
		decl[i] = gguf.TensorInfo{Name: n, DType: tensor.F32, Shape: shapes[n]}
	}
	var buf bytes.Buffer
	w, err := gguf.NewWriter(&buf, md, decl)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range order {
		b := make([]byte, 4*len(tensors[n]))
		if err := tensor.FromFloat32(b, tensors[n], tensor.F32); err != nil {
			t.Fatal(err)
		}
		if err := w.WriteTensor(n, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func imatrixMetadata() *gguf.Metadata {
	md := &gguf.Metadata{}
	md.Set("general.type", gguf.ValueOf("imatrix"))
	md.Set(keyImatrixDatasets, gguf.ArrayOf([]string{"calib.txt", "more.txt"}))
	md.Set(keyImatrixChunkCount, gguf.ValueOf(uint32(100)))
	md.Set(keyImatrixChunkSize, gguf.ValueOf(uint32(512)))
	return md
}

func validGGUFImatrix(t testing.TB) []byte {
	return ggufImatrix(t, imatrixMetadata(), map[string][]float32{
		"blk.0.exps.weight.in_sum2":   {2, 4, 6, 8, 9, 9, 9, 9},
		"blk.0.exps.weight.counts":    {2, 0},
		"blk.0.attn_q.weight.in_sum2": {3, 6},
		"blk.0.attn_q.weight.counts":  {3},
		"unrelated":                   {1},
	}, map[string]tensor.Shape{
		"blk.0.exps.weight.in_sum2": {2, 4}, "blk.0.exps.weight.counts": {2, 1},
		"blk.0.attn_q.weight.in_sum2": {2}, "blk.0.attn_q.weight.counts": {1},
		"unrelated": {1},
	}, []string{"blk.0.exps.weight.counts", "unrelated", "blk.0.exps.weight.in_sum2", "blk.0.attn_q.weight.in_sum2",
		"blk.0.attn_q.weight.counts"})
}

func TestReadGGUFImatrix(t *testing.T) {
	b := validGGUFImatrix(t)
	im, err := ReadImatrix(bytes.NewReader(b), int64(len(b)), "m.gguf")
	if err != nil {
		t.Fatal(err)
	}
	// in_sum2 / counts per expert row; an expert that saw no tokens gets ones.
	want := map[string][]float32{"blk.0.exps.weight": {1, 2, 3, 4, 1, 1, 1, 1}, "blk.0.attn_q.weight": {1, 2}}
	if !reflect.DeepEqual(im.Entries, want) || im.Chunks != 100 ||
		!reflect.DeepEqual(im.Datasets, []string{"calib.txt", "more.txt"}) {
		t.Errorf("got %+v", im)
	}

	for _, tc := range []struct {
		name    string
		md      func(*gguf.Metadata)
		tensors map[string][]float32
		shapes  map[string]tensor.Shape
		msg     string
	}{
		{"no datasets", func(md *gguf.Metadata) { md.Delete(keyImatrixDatasets) }, nil, nil,
			"missing key imatrix.datasets"},
		{"no chunk size", func(md *gguf.Metadata) { md.Delete(keyImatrixChunkSize) }, nil, nil,
			"missing key imatrix.chunk_size"},
		{"sums only", nil, map[string][]float32{"a.in_sum2": {1}}, map[string]tensor.Shape{"a.in_sum2": {1}},
			`"a" has only one of in_sum2 and counts`},
		{"no pairs", nil, map[string][]float32{"a": {1}}, map[string]tensor.Shape{"a": {1}}, "no <tensor>.in_sum2"},
		{"count length", nil, map[string][]float32{"a.in_sum2": {1, 2}, "a.counts": {1, 1}},
			map[string]tensor.Shape{"a.in_sum2": {2}, "a.counts": {2}}, "has 2 counts for 1 experts"},
		{"3-D sums", nil, map[string][]float32{"a.in_sum2": {1, 2}, "a.counts": {1}},
			map[string]tensor.Shape{"a.in_sum2": {2, 1, 1}, "a.counts": {1}}, "has 3 dimensions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			md := imatrixMetadata()
			if tc.md != nil {
				tc.md(md)
			}
			tensors, shapes := tc.tensors, tc.shapes
			if tensors == nil {
				tensors = map[string][]float32{"a.in_sum2": {1}, "a.counts": {1}}
				shapes = map[string]tensor.Shape{"a.in_sum2": {1}, "a.counts": {1}}
			}
			var order []string
			for n := range tensors {
				order = append(order, n)
			}
			b := ggufImatrix(t, md, tensors, shapes, order)
			_, err := ReadImatrix(bytes.NewReader(b), int64(len(b)), "bad.gguf")
			var ie *ImatrixError
			if !errors.As(err, &ie) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %v, want an ImatrixError containing %q", err, tc.msg)
			}
		})
	}
	// A file that is not GGUF after all fails as GGUF, with the GGUF reader's error.
	bad := append([]byte("GGUF"), 9, 0, 0, 0)
	var fe *gguf.FormatError
	if _, err := ReadImatrix(bytes.NewReader(bad), int64(len(bad)), "v9.gguf"); !errors.As(err, &fe) {
		t.Errorf("GGUF version 9: err = %v, want a gguf.FormatError", err)
	}
}

func TestOpenImatrix(t *testing.T) {
	dir := t.TempDir()
	for name, b := range map[string][]byte{"a.dat": validLegacy(), "a.gguf": validGGUFImatrix(t)} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		im, err := OpenImatrix(path)
		if err != nil || im.Name != path || len(im.Entries) != 2 {
			t.Errorf("%s: %+v, %v", name, im, err)
		}
	}
	if _, err := OpenImatrix(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file opened")
	}
}

// FuzzReadImatrix: any input either reads or fails with an error; nothing panics or allocates beyond the input.
func FuzzReadImatrix(f *testing.F) {
	f.Add(validLegacy())
	f.Add(validLegacy()[:30])
	f.Add(validGGUFImatrix(f))
	f.Add(new(legacyFile).i32(1).entry("a", -1, 1, 2).b)
	f.Fuzz(func(t *testing.T, b []byte) {
		im, err := ReadImatrix(bytes.NewReader(b), int64(len(b)), "fuzz")
		if err != nil {
			return
		}
		var n int
		for name, e := range im.Entries {
			if len(e) == 0 && !strings.HasPrefix(string(b), "GGUF") {
				t.Errorf("entry %q is empty", name)
			}
			n += len(e)
		}
		if 4*n > len(b) {
			t.Errorf("%d values from %d bytes", n, len(b))
		}
	})
}
