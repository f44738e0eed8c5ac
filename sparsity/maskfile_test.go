package sparsity

import (
	"bytes"
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/prune"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// part is one tensor of a hand-made mask file.
type part struct {
	name  string
	dtype tensor.DType
	shape tensor.Shape
	data  []byte
}

func i64Data(v ...int64) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, uint64(x))
	}
	return b
}

func rawFile(t testing.TB, parts ...part) []byte {
	t.Helper()
	var buf bytes.Buffer
	decls := make([]safetensors.TensorInfo, len(parts))
	data := map[string][]byte{}
	for i, p := range parts {
		decls[i] = safetensors.TensorInfo{Name: p.name, DType: p.dtype, Shape: p.shape}
		data[p.name] = p.data
	}
	w, err := safetensors.NewWriter(&buf, decls, map[string]string{"method": "magnitude"})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range w.Tensors() {
		if err := w.WriteTensor(d.Name, data[d.Name]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// validMask is a 2×9 mask of weight "w": row 0 is §8.6's [1,0,1,1,0,0,0,0,1].
func validParts() []part {
	return []part{
		{"w.bitmask", tensor.U8, tensor.Shape{2, 2}, []byte{13, 1, 0, 0}},
		{"w.shape", tensor.I64, tensor.Shape{2}, i64Data(2, 9)},
	}
}

// TestReadMasksRejects is one case per rule of the mask file reader; each must fail with a MaskError (or, for a
// broken container, the safetensors error) naming the tensor.
func TestReadMasksRejects(t *testing.T) {
	valid := validParts()
	with := func(i int, p part) []part {
		ps := append([]part(nil), valid...)
		ps[i] = p
		return ps
	}
	for _, c := range []struct {
		name  string
		parts []part
		want  string
	}{
		{"stray tensor", append(append([]part(nil), valid...), part{"w.weight", tensor.F32, tensor.Shape{1}, make([]byte, 4)}), `"w.weight": not a mask tensor`},
		{"bitmask without shape", valid[:1], `"w.bitmask": no w.shape`},
		{"shape without bitmask", valid[1:], `"w.shape": no w.bitmask`},
		{"shape dtype", with(1, part{"w.shape", tensor.I32, tensor.Shape{2}, make([]byte, 8)}), `"w.shape": I32`},
		{"one dimension", with(1, part{"w.shape", tensor.I64, tensor.Shape{1}, i64Data(18)}), `"w.shape": I64 [1]`},
		{"negative dimension", with(1, part{"w.shape", tensor.I64, tensor.Shape{2}, i64Data(-2, 9)}), `dimension 0 is -2`},
		{"huge shape", with(1, part{"w.shape", tensor.I64, tensor.Shape{2}, i64Data(1<<40, 1<<40)}), `"w.shape"`},
		{"zero columns", with(1, part{"w.shape", tensor.I64, tensor.Shape{2}, i64Data(2, 0)}), `no columns`},
		{"bitmask too narrow", with(1, part{"w.shape", tensor.I64, tensor.Shape{2}, i64Data(2, 17)}), `"w.bitmask": U8 [2, 2]; a mask of shape [2, 17] needs U8 [2 3]`},
		{"bitmask rows", with(1, part{"w.shape", tensor.I64, tensor.Shape{2}, i64Data(3, 9)}), `needs U8 [3 2]`},
		{"bitmask dtype", with(0, part{"w.bitmask", tensor.I8, tensor.Shape{2, 2}, make([]byte, 4)}), `"w.bitmask": I8`},
		{"padding bit", with(0, part{"w.bitmask", tensor.U8, tensor.Shape{2, 2}, []byte{13, 3, 0, 0}}), `row 0 has bits set past column 8`},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := rawFile(t, c.parts...)
			_, err := ReadMasks(bytes.NewReader(data), int64(len(data)), "bad.masks")
			var me *MaskError
			if !errors.As(err, &me) || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "bad.masks: ") {
				t.Errorf("error %v, want a MaskError containing %s", err, c.want)
			}
		})
	}
	data := rawFile(t, valid...)
	if _, err := ReadMasks(bytes.NewReader(data[:len(data)-1]), int64(len(data)-1), "cut.masks"); err == nil ||
		!strings.Contains(err.Error(), "cut.masks") {
		t.Errorf("truncated file: %v", err)
	}
}

// TestMaskFileRoundTrip writes masks to a file and reads them back: same masks, same metadata, and the bytes of
// §8.6's bitmask oracle in the file.
func TestMaskFileRoundTrip(t *testing.T) {
	m := prune.NewMask(2, 9)
	for _, j := range []int{0, 2, 3, 8} {
		m.Set(0, j, true)
	}
	m3 := prune.NewMask(6, 4) // a 3-D weight: rows are the first two dimensions
	m3.Set(5, 3, true)
	set := &MaskSet{
		Tensors:  []TensorMask{{"a.weight", tensor.Shape{2, 9}, m}, {"b.weight", tensor.Shape{2, 3, 4}, m3}},
		Metadata: map[string]string{"method": "principal", "rank": "128"},
	}
	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := WriteMaskFile(path, set); err != nil {
		t.Fatal(err)
	}
	back, err := OpenMasks(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Tensors) != 2 || back.Metadata["rank"] != "128" {
		t.Fatalf("read %+v", back)
	}
	for i, tm := range set.Tensors {
		b := back.Tensors[i]
		if b.Name != tm.Name || !b.Shape.Equal(tm.Shape) || !b.Mask.Equal(tm.Mask) {
			t.Errorf("%s: round trip changed the mask", tm.Name)
		}
	}
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v, err := f.Tensor("a.weight.bitmask")
	if err != nil || !bytes.Equal(v.Data, []byte{13, 1, 0, 0}) || v.DType != tensor.U8 {
		t.Errorf("a.weight.bitmask = %v %v (%v)", v.DType, v.Data, err)
	}
	if err := WriteMaskFile(path, &MaskSet{Tensors: []TensorMask{{"c", tensor.Shape{2, 9}, prune.NewMask(2, 8)}}}); err == nil {
		t.Error("mask of the wrong size written without error")
	}
}

func FuzzReadMasks(f *testing.F) {
	f.Add(rawFile(f, validParts()...))
	f.Add(rawFile(f, part{"x.bitmask", tensor.U8, tensor.Shape{1, 1}, []byte{5}}, part{"x.shape", tensor.I64, tensor.Shape{3}, i64Data(1, 1, 3)}))
	f.Add(rawFile(f, validParts()[:1]...))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ReadMasks(bytes.NewReader(data), int64(len(data)), "fuzz")
		if err != nil {
			return
		}
		// Whatever reads must write, and read back to the same masks.
		var buf bytes.Buffer
		if err := WriteMasks(&buf, s); err != nil {
			t.Fatalf("read but cannot write: %v", err)
		}
		back, err := ReadMasks(bytes.NewReader(buf.Bytes()), int64(buf.Len()), "again")
		if err != nil {
			t.Fatal(err)
		}
		for i, tm := range s.Tensors {
			if b := back.Tensors[i]; b.Name != tm.Name || !b.Mask.Equal(tm.Mask) || b.Mask.Kept() != tm.Mask.Kept() {
				t.Fatalf("%s changed in the round trip", tm.Name)
			}
		}
	})
}
