package gguf

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/tensor"
)

// everyValue holds one key of each scalar type and one array of each element type, extremes included.
func everyValue() *Metadata {
	var md Metadata
	md.Set("u8", ValueOf(uint8(255)))
	md.Set("i8", ValueOf(int8(-128)))
	md.Set("u16", ValueOf(uint16(65535)))
	md.Set("i16", ValueOf(int16(-32768)))
	md.Set("u32", ValueOf(uint32(math.MaxUint32)))
	md.Set("i32", ValueOf(int32(math.MinInt32)))
	md.Set("f32", ValueOf(float32(-1.5e-7)))
	md.Set("bool", ValueOf(true))
	md.Set("string", ValueOf("héllo\x00world"))
	md.Set("empty.string", ValueOf(""))
	md.Set("u64", ValueOf(uint64(math.MaxUint64)))
	md.Set("i64", ValueOf(int64(math.MinInt64)))
	md.Set("f64", ValueOf(math.Pi))
	md.Set("a.u8", ArrayOf([]uint8{0, 1, 255}))
	md.Set("a.i8", ArrayOf([]int8{-1, 2}))
	md.Set("a.u16", ArrayOf([]uint16{1, 65535}))
	md.Set("a.i16", ArrayOf([]int16{-2, 3}))
	md.Set("a.u32", ArrayOf([]uint32{7}))
	md.Set("a.i32", ArrayOf([]int32{-7, 8}))
	md.Set("a.f32", ArrayOf([]float32{float32(math.Inf(1)), 0.25}))
	md.Set("a.bool", ArrayOf([]bool{true, false, true}))
	md.Set("a.string", ArrayOf([]string{"", "x", "yz"}))
	md.Set("a.u64", ArrayOf([]uint64{1 << 63}))
	md.Set("a.i64", ArrayOf([]int64{-1 << 63}))
	md.Set("a.f64", ArrayOf([]float64{-0.5}))
	md.Set("a.empty", ArrayOf([]int32{}))
	return &md
}

// TestRoundTrip writes every value type and a tensor of each storage family through a pipe and reads it back with
// the stream reader on the other end, then again from memory.
func TestRoundTrip(t *testing.T) {
	md := everyValue()
	md.Set(KeyAlignment, ValueOf(uint32(64)))
	views := []tensor.View{
		{Name: "f32", DType: tensor.F32, Shape: tensor.Shape{3, 5}, Data: bytes.Repeat([]byte{1}, 60)},
		{Name: "q4k", DType: tensor.Q4_K, Shape: tensor.Shape{2, 256}, Data: bytes.Repeat([]byte{2}, 288)},
		{Name: "scalar", DType: tensor.I32, Shape: tensor.Shape{}, Data: []byte{1, 2, 3, 4}},
		{Name: "empty", DType: tensor.F16, Shape: tensor.Shape{0, 4}, Data: nil},
		{Name: "4d", DType: tensor.BF16, Shape: tensor.Shape{2, 1, 3, 2}, Data: bytes.Repeat([]byte{3}, 24)},
		{Name: "mxfp4", DType: tensor.MXFP4, Shape: tensor.Shape{32}, Data: bytes.Repeat([]byte{4}, 17)},
	}
	decl := make([]TensorInfo, len(views))
	for i, v := range views {
		decl[i] = TensorInfo{Name: v.Name, DType: v.DType, Shape: v.Shape}
	}

	pr, pw := io.Pipe()
	var file bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		w, err := NewWriter(io.MultiWriter(pw, &file), md, decl)
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		for _, v := range views {
			if err := w.CopyTensor(v.Name, bytes.NewReader(v.Data)); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(w.Close())
	}()
	s, err := NewStreamReader(pr)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.Metadata.KVs(), md.KVs()) {
		t.Errorf("metadata differs:\n%v\n%v", s.Metadata.KVs(), md.KVs())
	}
	if s.Alignment != 64 || s.DataOffset%64 != 0 {
		t.Errorf("alignment %d, data offset %d", s.Alignment, s.DataOffset)
	}
	for i := 0; ; i++ {
		ti, r, err := s.Next()
		if err == io.EOF {
			if i != len(views) {
				t.Fatalf("%d tensors, want %d", i, len(views))
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		v := views[i]
		if ti.Name != v.Name || ti.DType != v.DType || !ti.Shape.Equal(v.Shape) || !bytes.Equal(data, v.Data) ||
			ti.Offset%64 != 0 {
			t.Errorf("tensor %d: %s %s %v at %d, want %s %s %v", i, ti.Name, ti.DType, ti.Shape, ti.Offset, v.Name,
				v.DType, v.Shape)
		}
	}

	// The padding after the last tensor is still in the pipe.
	if _, err := io.Copy(io.Discard, pr); err != nil {
		t.Fatal(err)
	}
	<-done
	f, err := NewReader(bytes.NewReader(file.Bytes()), int64(file.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rewrite(t, f), file.Bytes()) {
		t.Error("rewriting the written file changes it")
	}
	if int64(file.Len())%64 != 0 {
		t.Errorf("file of %d bytes: the last tensor is not padded", file.Len())
	}
	ti, _ := f.Info("4d")
	if !reflect.DeepEqual(ti.Dims, []uint64{2, 3, 1, 2}) {
		t.Errorf("dims of [2 1 3 2] are %v, want ne reversed", ti.Dims)
	}
}

func TestAccessorConversions(t *testing.T) {
	md := everyValue()
	md.Set("small.i64", ValueOf(int64(7)))
	md.Set("neg.i8", ValueOf(int8(-3)))
	if v, err := md.Uint32("u8"); err != nil || v != 255 {
		t.Errorf("Uint32(u8) = %v, %v", v, err)
	}
	if v, err := md.Uint32("small.i64"); err != nil || v != 7 {
		t.Errorf("Uint32(i64 7) = %v, %v", v, err)
	}
	if v, err := md.Int("neg.i8"); err != nil || v != -3 {
		t.Errorf("Int(i8 -3) = %v, %v", v, err)
	}
	if v, err := md.Uint64("u64"); err != nil || v != math.MaxUint64 {
		t.Errorf("Uint64(u64 max) = %v, %v", v, err)
	}
	if v, err := md.Float64("f32"); err != nil || v != float64(float32(-1.5e-7)) {
		t.Errorf("Float64(f32) = %v, %v", v, err)
	}
	errs := []struct {
		err  error
		want string
	}{
		{second(md.Uint32("neg.i8")), `"neg.i8" is i8 -3, want integer fitting u32`},
		{second(md.Uint32("u64")), `"u64" is u64 18446744073709551615, want integer fitting u32`},
		{second(md.Int("u64")), `is u64 18446744073709551615, want integer fitting i64`},
		{second(md.Uint32("f32")), `"f32" is f32, want`},
		{second(md.Float32("u32")), `"u32" is u32, want f32 or f64`},
		{second(md.String("a.string")), `"a.string" is array of string, want string`},
		{second(md.Bool("a.bool")), `is array of bool, want bool`},
		{second(md.Array("string")), `"string" is string, want array`},
		{second(md.Strings("a.u8")), `is array of u8, want array of string`},
	}
	for _, e := range errs {
		var ke *KeyError
		if !errors.As(e.err, &ke) || !strings.Contains(e.err.Error(), e.want) {
			t.Errorf("got %v, want a KeyError containing %q", e.err, e.want)
		}
	}
	if v, _ := md.Array("a.string"); v.Len() != 3 || v.ElemType() != TypeString {
		t.Errorf("Array(a.string) = %v", v)
	}
	if s := md.KVs()[0].Value.String(); s != "255" {
		t.Errorf("String of u8 255 = %q", s)
	}
	long := ArrayOf(make([]int32, 100))
	if s := long.String(); !strings.HasSuffix(s, "... (100 i32)]") {
		t.Errorf("String of a long array = %q", s)
	}
	md.Delete("u8")
	if _, ok := md.Get("u8"); ok || md.KVs()[0].Key != "i8" {
		t.Error("Delete did not remove the first key")
	}
	if v, err := md.Int("i8"); err != nil || v != -128 {
		t.Errorf("index broken after Delete: %v, %v", v, err)
	}
}

func second[T any](_ T, err error) error { return err }

func TestWriterRejects(t *testing.T) {
	f32 := func(name string, shape ...int64) TensorInfo {
		return TensorInfo{Name: name, DType: tensor.F32, Shape: shape}
	}
	mdWith := func(key string, v Value) *Metadata {
		var md Metadata
		md.Set(key, v)
		return &md
	}
	cases := []struct {
		name    string
		md      *Metadata
		tensors []TensorInfo
		want    string
	}{
		{"alignment u64", mdWith(KeyAlignment, ValueOf(uint64(32))), nil, "must be a u32"},
		{"alignment 24", mdWith(KeyAlignment, ValueOf(uint32(24))), nil, "not a power of two"},
		{"empty key", mdWith("", ValueOf(1.0)), nil, "empty metadata key"},
		{"zero value", mdWith("k", Value{}), nil, "invalid"},
		{"long name", nil, []TensorInfo{f32(strings.Repeat("x", 64), 1)}, "at most 63"},
		{"duplicate", nil, []TensorInfo{f32("a", 1), f32("a", 2)}, "declared twice"},
		{"five dims", nil, []TensorInfo{f32("a", 1, 1, 1, 1, 1)}, "at most 4"},
		{"negative", nil, []TensorInfo{f32("a", -1)}, "negative"},
		{"not ggml", nil, []TensorInfo{{Name: "a", DType: tensor.U8, Shape: tensor.Shape{1}}}, "no ggml"},
		{"partial block", nil, []TensorInfo{{Name: "a", DType: tensor.Q8_0, Shape: tensor.Shape{2, 16}}},
			"not whole Q8_0 blocks"},
	}
	for _, c := range cases {
		_, err := NewWriter(io.Discard, c.md, c.tensors)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.want)
		}
	}

	decl := []TensorInfo{f32("a", 2), f32("b", 1)}
	w, err := NewWriter(io.Discard, nil, decl)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensor("b", make([]byte, 4)); err == nil || !strings.Contains(err.Error(), `"a" is next`) {
		t.Errorf("out of order: %v", err)
	}
	if err := w.WriteTensor("a", make([]byte, 4)); err == nil || !strings.Contains(err.Error(), "needs 8 bytes") {
		t.Errorf("wrong size: %v", err)
	}
	if err := w.CopyTensor("a", bytes.NewReader(make([]byte, 5))); err == nil ||
		!strings.Contains(err.Error(), "after 5 of 8") {
		t.Errorf("short source: %v", err)
	}

	w, _ = NewWriter(io.Discard, nil, decl)
	if err := w.WriteTensor("a", make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), `"b" is missing`) {
		t.Errorf("Close with a tensor missing: %v", err)
	}
}

// TestCreateIsAtomic checks that a failed write leaves no file and an existing target untouched.
func TestCreateIsAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.gguf")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := Create(path, nil, []TensorInfo{{Name: "a", DType: tensor.F32, Shape: tensor.Shape{1}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close without the tensor succeeded")
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("target changed to %q", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("%d files left in the directory, want 1", len(entries))
	}

	views := []tensor.View{{Name: "a", DType: tensor.F32, Shape: tensor.Shape{1}, Data: []byte{0, 0, 128, 63}}}
	if err := WriteFile(path, everyValue(), views); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v, err := f.Tensor("a")
	if err != nil {
		t.Fatal(err)
	}
	if x, _ := v.Float32s(); len(x) != 1 || x[0] != 1 {
		t.Errorf("tensor a = %v", x)
	}
}
