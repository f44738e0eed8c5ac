package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"

	"github.com/lathe-ml/lathe/tensor"
)

// sharedDir returns ../shared or skips the test.
func sharedDir(t testing.TB) string { return testshared.Path(t) }

// realFiles lists every .safetensors file under shared/.
func realFiles(t testing.TB) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(sharedDir(t), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".safetensors") {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Skip("no .safetensors files under shared/")
	}
	return files
}

// rewrite copies every tensor of s through a Writer.
func rewrite(t testing.TB, s Set, opts ...Option) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, s.Tensors(), s.Metadata(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range w.Tensors() {
		sec, err := s.Section(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		tw, err := w.Create(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, sec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sameTensors checks that two sets hold the same tensors (names, types, shapes, bytes) and metadata.
func sameTensors(t *testing.T, label string, a, b Set) {
	t.Helper()
	ta, tb := a.Tensors(), b.Tensors()
	if len(ta) != len(tb) {
		t.Fatalf("%s: %d tensors, then %d", label, len(ta), len(tb))
	}
	for _, info := range ta {
		other, ok := b.Lookup(info.Name)
		if !ok || other.DType != info.DType || !other.Shape.Equal(info.Shape) || other.Size != info.Size {
			t.Fatalf("%s: tensor %q: %v %v, then %+v", label, info.Name, info.DType, info.Shape, other)
		}
		va, err := a.Tensor(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		vb, err := b.Tensor(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(va.Data, vb.Data) {
			t.Fatalf("%s: tensor %q: data differs", label, info.Name)
		}
	}
	if !maps.Equal(a.Metadata(), b.Metadata()) {
		t.Fatalf("%s: metadata %v, then %v", label, a.Metadata(), b.Metadata())
	}
}

// TestRealFiles opens every file in shared/, checks the mmap and io.ReaderAt paths agree with each other and with
// the file's own bytes, and rewrites it: the rewrite must re-open with identical tensors. Files written by the
// reference writer must come back byte for byte.
func TestRealFiles(t *testing.T) {
	files := realFiles(t)
	// Written by the Python safetensors package (Rust serialize): single-key metadata, reference order.
	byReference := map[string]bool{
		"models/tiny-llama-a/hf/model.safetensors":                           true,
		"models/tiny-llama-a/merged-lora-shakespeare-a/model.safetensors":    true,
		"models/tiny-llama-a/lora-shakespeare-a/adapter_model.safetensors":   true,
		"data/safetensors/peft-gpt2-lora/adapter_model.safetensors":          true,
		"data/safetensors/smollm135m-medical-lora/adapter_model.safetensors": true,
	}
	shared := sharedDir(t)
	var tensors, identical int
	for _, path := range files {
		rel, _ := filepath.Rel(shared, path)
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := Open(path)
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		r, err := NewReader(bytes.NewReader(raw), int64(len(raw)))
		if err != nil {
			t.Fatalf("%s: NewReader: %v", rel, err)
		}
		if f.HeaderSize() != int64(binary.LittleEndian.Uint64(raw)) || f.Size() != int64(len(raw)) {
			t.Fatalf("%s: header size %d, file size %d", rel, f.HeaderSize(), f.Size())
		}
		infos := f.Tensors()
		if len(infos) == 0 {
			t.Fatalf("%s: no tensors", rel)
		}
		next := 8 + f.HeaderSize()
		for _, info := range infos {
			if info.Offset != next {
				t.Fatalf("%s: tensor %q at %d, want %d (offset order, contiguous)", rel, info.Name, info.Offset, next)
			}
			v, err := f.Tensor(info.Name)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(v.Data, raw[info.Offset:info.Offset+info.Size]) {
				t.Fatalf("%s: tensor %q: view is not the file's bytes", rel, info.Name)
			}
			if _, err := tensor.NewView(v.Name, v.DType, v.Shape, v.Data); err != nil {
				t.Fatalf("%s: %v", rel, err)
			}
			next += info.Size
		}
		if next != int64(len(raw)) {
			t.Fatalf("%s: tensors end at %d of %d", rel, next, len(raw))
		}
		sameTensors(t, rel+" mmap vs ReaderAt", f, r)

		out := rewrite(t, f)
		back, err := NewReader(bytes.NewReader(out), int64(len(out)))
		if err != nil {
			t.Fatalf("%s: rewritten file does not open: %v", rel, err)
		}
		sameTensors(t, rel+" rewrite", f, back)
		same := bytes.Equal(out, raw)
		if byReference[filepath.ToSlash(rel)] && !same {
			t.Errorf("%s: written by the reference writer, but the rewrite differs", rel)
		}
		if same {
			identical++
		}
		tensors += len(infos)
		f.Close()
	}
	t.Logf("%d files, %d tensors; %d rewritten byte-identical", len(files), tensors, identical)
}

// Vectors from the reference's unit tests (safetensors/src/tensor.rs, mod tests): the bytes serialize must produce.
func TestReferenceSerialization(t *testing.T) {
	f32s := []byte{0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64}
	tests := []struct {
		name     string
		views    []tensor.View
		metadata map[string]string
		want     string
	}{
		{"test_serialization", []tensor.View{{Name: "attn.0", DType: tensor.F32, Shape: tensor.Shape{1, 2, 3}, Data: f32s}}, nil,
			"@\x00\x00\x00\x00\x00\x00\x00" + `{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}` + string(f32s)},
		{"test_serialization_fp4", []tensor.View{{Name: "attn.0", DType: tensor.F4, Shape: tensor.Shape{1, 2}, Data: []byte{0}}}, nil,
			"@\x00\x00\x00\x00\x00\x00\x00" + `{"attn.0":{"dtype":"F4","shape":[1,2],"data_offsets":[0,1]}}    ` + "\x00"},
		{"test_empty", nil, nil, "\x08\x00\x00\x00\x00\x00\x00\x00{}      "},
		{"test_empty with metadata", nil, map[string]string{"framework": "pt"},
			"(\x00\x00\x00\x00\x00\x00\x00" + `{"__metadata__":{"framework":"pt"}}     `},
		{"test_serialization_forced_alignement", []tensor.View{{Name: "attn0", DType: tensor.F32, Shape: tensor.Shape{1, 1, 2, 3}, Data: f32s}}, nil,
			"H\x00\x00\x00\x00\x00\x00\x00" + `{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       ` + string(f32s)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.safetensors")
			if err := WriteFile(path, tt.views, tt.metadata); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("got  %q\nwant %q", got, tt.want)
			}
			f, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if len(f.Tensors()) != len(tt.views) {
				t.Fatalf("%d tensors back", len(f.Tensors()))
			}
		})
	}
}

// Files the reference's unit tests expect to load (test_deserialization, test_empty_shapes_allowed,
// test_zero_sized_tensor, the whitespace-padding tests), plus the __metadata__ forms the reference accepts.
func TestReferenceDeserialization(t *testing.T) {
	tests := []struct {
		name     string
		file     string
		tensors  []TensorInfo // Offset relative to the data section
		metadata map[string]string
	}{
		{"test_deserialization", "<\x00\x00\x00\x00\x00\x00\x00" + `{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}` + strings.Repeat("\x00", 16),
			[]TensorInfo{{Name: "test", DType: tensor.I32, Shape: tensor.Shape{2, 2}, Offset: 0, Size: 16}}, nil},
		{"test_empty_shapes_allowed", "8\x00\x00\x00\x00\x00\x00\x00" + `{"test":{"dtype":"I32","shape":[],"data_offsets":[0,4]}}` + "\x00\x00\x00\x00",
			[]TensorInfo{{Name: "test", DType: tensor.I32, Shape: tensor.Shape{}, Offset: 0, Size: 4}}, nil},
		{"test_zero_sized_tensor", "<\x00\x00\x00\x00\x00\x00\x00" + `{"test":{"dtype":"I32","shape":[2,0],"data_offsets":[0, 0]}}`,
			[]TensorInfo{{Name: "test", DType: tensor.I32, Shape: tensor.Shape{2, 0}, Offset: 0, Size: 0}}, nil},
		{"test_whitespace_padded_header", "\x06\x00\x00\x00\x00\x00\x00\x00{}\x0D\x20\x09\x0A", nil, nil},
		{"test_whitespace_leading_padded_header", "\x06\x00\x00\x00\x00\x00\x00\x00\x09\x0A{}\x0D\x20", nil, nil},
		{"metadata null", file(`{"__metadata__":null}`, ""), nil, nil},
		{"metadata empty", file(`{"__metadata__":{}}`, ""), nil, map[string]string{}},
		{"deepest nesting serde_json accepts", file(`{"a":{"x":`+strings.Repeat("[", 125)+strings.Repeat("]", 125)+`,"dtype":"U8","shape":[0],"data_offsets":[0,0]}}`, ""),
			[]TensorInfo{{Name: "a", DType: tensor.U8, Shape: tensor.Shape{0}}}, nil},
		{"escapes and unknown fields", file(`{"__metadata__":{"k\u00e9\n":"\ud83d\ude00\"\/"},"a\tb":{"dtype":"U8","extra":[{"x":1.5e3,"y":-1e-999,"z":123456789012345678901234567890},null,true,false],"shape":[-0],"data_offsets":[0,0]}}`, ""),
			[]TensorInfo{{Name: "a\tb", DType: tensor.U8, Shape: tensor.Shape{0}, Offset: 0, Size: 0}},
			map[string]string{"ké\n": "😀\"/"}},
		{"sub-byte types", file(`{"a":{"dtype":"F4","shape":[3,2],"data_offsets":[0,3]},"b":{"dtype":"F6_E3M2","shape":[4],"data_offsets":[3,6]}}`, "abcdef"),
			[]TensorInfo{{Name: "a", DType: tensor.F4, Shape: tensor.Shape{3, 2}, Offset: 0, Size: 3},
				{Name: "b", DType: tensor.F6_E3M2, Shape: tensor.Shape{4}, Offset: 3, Size: 3}}, nil},
		{"offset order, not header order", file(`{"z":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, "xy"),
			[]TensorInfo{{Name: "z", DType: tensor.U8, Shape: tensor.Shape{1}, Offset: 0, Size: 1},
				{Name: "a", DType: tensor.U8, Shape: tensor.Shape{1}, Offset: 1, Size: 1}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := NewReader(strings.NewReader(tt.file), int64(len(tt.file)))
			if err != nil {
				t.Fatal(err)
			}
			got := f.Tensors()
			if len(got) != len(tt.tensors) {
				t.Fatalf("tensors %+v, want %+v", got, tt.tensors)
			}
			for i := range got {
				g, w := got[i], tt.tensors[i]
				if g.Name != w.Name || g.DType != w.DType || !g.Shape.Equal(w.Shape) || g.Offset != 8+f.HeaderSize()+w.Offset || g.Size != w.Size {
					t.Fatalf("tensor %d: %+v, want %+v", i, g, w)
				}
				v, err := f.Tensor(g.Name)
				if err != nil {
					t.Fatal(err)
				}
				if string(v.Data) != tt.file[g.Offset:g.Offset+g.Size] {
					t.Fatalf("tensor %q data %q", g.Name, v.Data)
				}
			}
			if md := f.Metadata(); !maps.Equal(md, tt.metadata) || (md == nil) != (tt.metadata == nil) {
				t.Fatalf("metadata %#v, want %#v", md, tt.metadata)
			}
			if keys := f.MetadataKeys(); !slices.Equal(keys, slices.Sorted(maps.Keys(tt.metadata))) {
				t.Fatalf("metadata keys %v", keys)
			}
		})
	}
}

// file builds a safetensors file from a header and data, padding the header with spaces to a multiple of 8.
func file(header, data string) string {
	for len(header)%8 != 0 {
		header += " "
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(header)))
	return string(n[:]) + header + data
}

func TestNotFound(t *testing.T) {
	b := file(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, "x")
	f, err := NewReader(strings.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Tensor("b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Tensor: %v", err)
	}
	if _, err := f.Section("b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Section: %v", err)
	}
	if _, ok := f.Lookup("b"); ok {
		t.Fatal("Lookup found a missing tensor")
	}
}
