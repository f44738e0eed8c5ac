package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/tensor"
)

// raw assembles GGUF bytes field by field, independently of the Writer, and remembers where each named field
// starts so that tests can state the offset an error must report.
type raw struct {
	b  []byte
	at map[string]int64
}

func (r *raw) mark(name string) { r.at[name] = int64(len(r.b)) }
func (r *raw) u32(x uint32)     { r.b = binary.LittleEndian.AppendUint32(r.b, x) }
func (r *raw) u64(x uint64)     { r.b = binary.LittleEndian.AppendUint64(r.b, x) }
func (r *raw) str(s string)     { r.u64(uint64(len(s))); r.b = append(r.b, s...) }

// rawKV is one key-value pair; val writes everything after the type tag and may mark fields inside it.
type rawKV struct {
	key string
	typ uint32
	val func(r *raw, prefix string)
}

type rawTensor struct {
	name   string
	dims   []uint64
	typ    uint32
	offset uint64
}

// rawSpec describes a file; nTensors and nKV override the counts when non-nil, cut truncates the result, noPad
// leaves out the alignment padding (before the data, and after the last tensor).
type rawSpec struct {
	magic    string
	version  uint32
	nTensors *uint64
	nKV      *uint64
	kvs      []rawKV
	tensors  []rawTensor
	data     [][]byte
	align    int
	noPad    bool
	cut      int // bytes to remove from the end
}

func (s rawSpec) build() *raw {
	r := &raw{at: map[string]int64{}}
	r.mark("magic")
	r.b = append(r.b, s.magic...)
	r.mark("version")
	r.u32(s.version)
	r.mark("ntensors")
	if s.nTensors != nil {
		r.u64(*s.nTensors)
	} else {
		r.u64(uint64(len(s.tensors)))
	}
	r.mark("nkv")
	if s.nKV != nil {
		r.u64(*s.nKV)
	} else {
		r.u64(uint64(len(s.kvs)))
	}
	for i, kv := range s.kvs {
		p := fmt.Sprintf("kv%d.", i)
		r.mark(p + "key")
		r.str(kv.key)
		r.mark(p + "type")
		r.u32(kv.typ)
		r.mark(p + "value")
		kv.val(r, p)
	}
	for i, t := range s.tensors {
		p := fmt.Sprintf("t%d.", i)
		r.mark(p + "name")
		r.str(t.name)
		r.mark(p + "ndims")
		r.u32(uint32(len(t.dims)))
		for j, d := range t.dims {
			r.mark(fmt.Sprintf("%sne%d", p, j))
			r.u64(d)
		}
		r.mark(p + "type")
		r.u32(t.typ)
		r.mark(p + "offset")
		r.u64(t.offset)
	}
	r.mark("infos.end")
	align := s.align
	if align == 0 {
		align = 32
	}
	for i, d := range s.data {
		if !s.noPad || i > 0 {
			for len(r.b)%align != 0 {
				r.b = append(r.b, 0)
			}
		}
		r.mark(fmt.Sprintf("t%d.data", i))
		r.b = append(r.b, d...)
	}
	if !s.noPad && len(s.data) > 0 {
		for len(r.b)%align != 0 {
			r.b = append(r.b, 0)
		}
	}
	r.b = r.b[:len(r.b)-s.cut]
	return r
}

func strVal(s string) func(*raw, string) { return func(r *raw, _ string) { r.str(s) } }
func u32Val(x uint32) func(*raw, string) { return func(r *raw, _ string) { r.u32(x) } }
func u64Val(x uint64) func(*raw, string) { return func(r *raw, _ string) { r.u64(x) } }

// arrVal writes an array header (marking elemtype and count) followed by body.
func arrVal(elem uint32, count uint64, body func(*raw)) func(*raw, string) {
	return func(r *raw, p string) {
		r.mark(p + "elemtype")
		r.u32(elem)
		r.mark(p + "count")
		r.u64(count)
		body(r)
	}
}

func f32Bytes(xs ...float32) []byte {
	var b []byte
	for _, x := range xs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

// baseSpec is a small valid file: four keys (one a string array) and an F32 [2, 4] and a Q4_0 [32] tensor.
func baseSpec() rawSpec {
	return rawSpec{
		magic:   "GGUF",
		version: 3,
		kvs: []rawKV{
			{"general.architecture", 8, strVal("test")},
			{"general.alignment", 4, u32Val(32)},
			{"tokenizer.ggml.tokens", 9, arrVal(8, 2, func(r *raw) { r.str("a"); r.str("bc") })},
			{"tokenizer.ggml.scores", 9, arrVal(6, 2, func(r *raw) { r.b = append(r.b, f32Bytes(0.5, -1)...) })},
		},
		tensors: []rawTensor{
			{"a", []uint64{4, 2}, 0, 0},
			{"b", []uint64{32}, 2, 32},
		},
		data: [][]byte{f32Bytes(1, 2, 3, 4, 5, 6, 7, 8), bytes.Repeat([]byte{7}, 18)},
	}
}

// baseViaWriter builds baseSpec's content with the Writer.
func baseViaWriter(t testing.TB) []byte {
	var md Metadata
	md.Set("general.architecture", ValueOf("test"))
	md.Set("general.alignment", ValueOf(uint32(32)))
	md.Set("tokenizer.ggml.tokens", ArrayOf([]string{"a", "bc"}))
	md.Set("tokenizer.ggml.scores", ArrayOf([]float32{0.5, -1}))
	var buf bytes.Buffer
	w, err := NewWriter(&buf, &md, []TensorInfo{
		{Name: "a", DType: tensor.F32, Shape: tensor.Shape{2, 4}},
		{Name: "b", DType: tensor.Q4_0, Shape: tensor.Shape{32}},
	})
	if err != nil {
		t.Fatal(err)
	}
	spec := baseSpec()
	if err := w.WriteTensor("a", spec.data[0]); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensor("b", spec.data[1]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWriterMatchesHandAssembly(t *testing.T) {
	if got, want := baseViaWriter(t), baseSpec().build().b; !bytes.Equal(got, want) {
		t.Fatalf("writer output differs from the hand-assembled file:\n%x\n%x", got, want)
	}
}

func ptr(x uint64) *uint64 { return &x }

// TestMalformed runs one case per rule of ggml's reader: each must fail with that rule at the offset of the field
// at fault, from both the ReaderAt and the stream reader, without panicking.
func TestMalformed(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(s *rawSpec)
		rule   Rule
		at     string // field whose offset the error must report
		msg    string // substring of the message
	}{
		{"bad magic", func(s *rawSpec) { s.magic = "GGML" }, RuleMagic, "magic", `"GGML"`},
		{"version 0", func(s *rawSpec) { s.version = 0 }, RuleVersion, "version", ""},
		{"version 1", func(s *rawSpec) { s.version = 1 }, RuleVersion, "version", "version 1"},
		{"version 4", func(s *rawSpec) { s.version = 4 }, RuleVersion, "version", "newer"},
		{"byte-swapped version", func(s *rawSpec) { s.version = 0x03000000 }, RuleVersion, "version", "big-endian"},
		{"tensor count over int64", func(s *rawSpec) { s.nTensors = ptr(1 << 63) }, RuleCount, "ntensors", ""},
		{"key count over int64", func(s *rawSpec) { s.nKV = ptr(math.MaxUint64) }, RuleCount, "nkv", ""},
		{"empty key", func(s *rawSpec) { s.kvs[0].key = "" }, RuleKey, "kv0.key", ""},
		{"duplicate key", func(s *rawSpec) { s.kvs[2].key = s.kvs[0].key }, RuleDuplicateKey, "kv2.key",
			"general.architecture"},
		{"unknown value type", func(s *rawSpec) { s.kvs[0].typ = 13 }, RuleValueType, "kv0.type", "13"},
		{"unknown element type", func(s *rawSpec) { s.kvs[2].val = arrVal(13, 0, func(*raw) {}) }, RuleValueType,
			"kv2.elemtype", ""},
		{"array of arrays", func(s *rawSpec) {
			s.kvs[2].val = arrVal(9, 1, func(r *raw) { r.u32(4); r.u64(0) })
		}, RuleNestedArray, "kv2.elemtype", ""},
		{"string longer than the file", func(s *rawSpec) {
			s.kvs[0].val = func(r *raw, _ string) { r.u64(1 << 20); r.b = append(r.b, "test"...) }
		}, RuleStringLength, "kv0.value", "bytes left"},
		{"string over GGUF_MAX_STRING_LENGTH", func(s *rawSpec) {
			s.kvs[0].val = func(r *raw, _ string) { r.u64(1<<30 + 1) }
		}, RuleStringLength, "kv0.value", "GGUF_MAX_STRING_LENGTH"},
		{"key longer than the file", nil, RuleStringLength, "kv3.key", "bytes left"},
		{"array longer than the file", func(s *rawSpec) {
			s.kvs[3].val = arrVal(6, 1<<20, func(r *raw) { r.b = append(r.b, f32Bytes(1)...) })
		}, RuleArrayLength, "kv3.count", "left in the file"},
		{"string array longer than the file", func(s *rawSpec) {
			s.kvs[2].val = arrVal(8, 1000, func(r *raw) { r.str("a") })
		}, RuleArrayLength, "kv2.count", ""},
		{"array over GGUF_MAX_ARRAY_ELEMENTS", func(s *rawSpec) {
			s.kvs[3].val = arrVal(0, 1<<30+1, func(*raw) {})
		}, RuleArrayLength, "kv3.count", "GGUF_MAX_ARRAY_ELEMENTS"},
		{"alignment not u32", func(s *rawSpec) { s.kvs[1].typ, s.kvs[1].val = 10, u64Val(32) }, RuleAlignment,
			"kv1.type", "must be a u32"},
		{"alignment zero", func(s *rawSpec) { s.kvs[1].val = u32Val(0) }, RuleAlignment, "kv1.type", ""},
		{"alignment not a power of two", func(s *rawSpec) { s.kvs[1].val = u32Val(48) }, RuleAlignment, "kv1.type",
			"48"},
		{"tensor name of 64 bytes", func(s *rawSpec) { s.tensors[1].name = strings.Repeat("n", 64) },
			RuleTensorName, "t1.name", ""},
		{"duplicate tensor name", func(s *rawSpec) { s.tensors[1].name = "a" }, RuleDuplicateTensor, "t1.name", ""},
		{"five dimensions", func(s *rawSpec) { s.tensors[0].dims = []uint64{4, 2, 1, 1, 1} }, RuleDims, "t0.ndims",
			""},
		{"negative dimension", func(s *rawSpec) { s.tensors[0].dims[1] = 1 << 63 }, RuleDimSize, "t0.ne1", ""},
		{"element count overflow", func(s *rawSpec) { s.tensors[0].dims = []uint64{1 << 32, 1 << 32} }, RuleDimSize,
			"t0.ne0", "overflows"},
		{"unknown tensor type", func(s *rawSpec) { s.tensors[0].typ = 43 }, RuleTensorType, "t0.type", "unknown"},
		{"removed tensor type 31", func(s *rawSpec) { s.tensors[0].typ = 31 }, RuleTensorType, "t0.type",
			"type 31 (Q4_0_4_4) was removed"},
		{"removed tensor type 4", func(s *rawSpec) { s.tensors[0].typ = 4 }, RuleTensorType, "t0.type", "Q4_2"},
		{"row not whole blocks", func(s *rawSpec) { s.tensors[1].dims = []uint64{16, 2} }, RuleBlockSize, "t1.ne0",
			"block size 32"},
		{"block-type scalar", func(s *rawSpec) { s.tensors[1].dims = nil }, RuleBlockSize, "t1.ndims", ""},
		{"offset with a gap", func(s *rawSpec) { s.tensors[1].offset = 64 }, RuleOffset, "t1.offset",
			"offset 64, expected 32"},
		{"first offset not zero", func(s *rawSpec) { s.tensors[0].offset = 32 }, RuleOffset, "t0.offset", ""},
		{"tensor data past the end", func(s *rawSpec) { s.cut = 14 + 5 }, RuleDataBounds, "t1.offset", ""},
		{"data section past the end", func(s *rawSpec) { s.data = nil }, RuleDataBounds, "infos.end",
			"data section starts"},
		{"file ends in the header", func(s *rawSpec) { s.kvs, s.tensors, s.data = nil, nil, nil; s.cut = 6 },
			RuleTruncated, "nkv", ""},
		{"file ends in a tensor info", func(s *rawSpec) { s.data = nil; s.cut = 10 }, RuleTruncated, "t1.type", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := baseSpec()
			if c.mutate != nil {
				c.mutate(&s)
			}
			r := s.build()
			switch c.name {
			case "key longer than the file":
				binary.LittleEndian.PutUint64(r.b[r.at["kv3.key"]:], 1<<20)
			case "data section past the end":
				// The infos end unaligned and the file stops one byte later, before the aligned data start.
				if r.at["infos.end"]%32 == 31 {
					t.Fatal("test file needs an unaligned end of infos")
				}
				r.b = append(r.b, 0)
			}
			checkFault(t, r, c.rule, c.at, c.msg)
		})
	}
}

func checkFault(t *testing.T, r *raw, rule Rule, at, msg string) {
	t.Helper()
	_, err := NewReader(bytes.NewReader(r.b), int64(len(r.b)))
	var fe *FormatError
	if !errors.As(err, &fe) {
		t.Fatalf("got %v, want a FormatError", err)
	}
	if fe.Rule != rule || fe.Offset != r.at[at] || !strings.Contains(fe.Msg, msg) {
		t.Fatalf("got %v\nwant rule %q at %d (%s), message containing %q", err, rule, r.at[at], at, msg)
	}
	if !strings.HasPrefix(err.Error(), "gguf: offset ") {
		t.Errorf("message %q lacks the offset", err)
	}

	// The stream reader cannot compare lengths with the file size: it reads on and fails later, at truncation or
	// at whatever the misread bytes break.
	serr := streamAll(r.b)
	if !errors.As(serr, &fe) {
		t.Fatalf("stream: got %v, want a FormatError", serr)
	}
	switch rule {
	case RuleStringLength, RuleArrayLength, RuleDataBounds:
	default:
		if fe.Rule != rule || fe.Offset != r.at[at] {
			t.Errorf("stream: got %v, want rule %q at %d", serr, rule, r.at[at])
		}
	}
}

// streamAll reads a file with the stream reader, data included, and returns the first error.
func streamAll(b []byte) error {
	s, err := NewStreamReader(bytes.NewReader(b))
	if err != nil {
		return err
	}
	for {
		_, r, err := s.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			return err
		}
	}
}

// TestAccepted lists files ggml accepts that a stricter reader might not.
func TestAccepted(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(s *rawSpec)
	}{
		{"version 2", func(s *rawSpec) { s.version = 2 }},
		{"vocab only, nothing after the keys", func(s *rawSpec) { s.tensors, s.data = nil, nil }},
		{"no padding after the last tensor", func(s *rawSpec) { s.cut = 14 }},
		{"63-byte tensor name", func(s *rawSpec) { s.tensors[1].name = strings.Repeat("n", 63) }},
		{"bool stored as 2", func(s *rawSpec) {
			s.kvs = append(s.kvs, rawKV{"b", 7, func(r *raw, _ string) { r.b = append(r.b, 2) }})
		}},
		{"zero-element tensor", func(s *rawSpec) { s.tensors[0].dims = []uint64{4, 0}; s.data[0] = nil; s.tensors[1].offset = 0 }},
		{"rank-0 F32 tensor", func(s *rawSpec) { s.tensors[0].dims = nil; s.data[0] = f32Bytes(1) }},
		{"alignment 64", func(s *rawSpec) { s.kvs[1].val = u32Val(64); s.align = 64; s.tensors[1].offset = 64 }},
		{"empty arrays", func(s *rawSpec) {
			s.kvs[2].val = arrVal(8, 0, func(*raw) {})
			s.kvs[3].val = arrVal(12, 0, func(*raw) {})
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := baseSpec()
			c.mutate(&s)
			b := s.build().b
			f, err := NewReader(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			for _, ti := range f.Tensors() {
				if _, err := f.Tensor(ti.Name); err != nil {
					t.Fatal(err)
				}
			}
			if err := streamAll(b); err != nil {
				t.Fatalf("stream: %v", err)
			}
			if c.name == "bool stored as 2" {
				if v, err := f.Metadata.Bool("b"); err != nil || !v {
					t.Errorf("bool 2 read as %v, %v; ggml reads any non-zero byte as true", v, err)
				}
			}
		})
	}
}

// TestTruncatedEverywhere cuts a valid file at every length: each prefix shorter than the end of the last
// tensor's data must fail with a FormatError from both readers.
func TestTruncatedEverywhere(t *testing.T) {
	r := baseSpec().build()
	end := r.at["t1.data"] + 18
	for n := 0; n < len(r.b); n++ {
		b := r.b[:n]
		_, err := NewReader(bytes.NewReader(b), int64(n))
		serr := streamAll(b)
		if int64(n) >= end {
			if err != nil || serr != nil {
				t.Errorf("length %d: %v / %v", n, err, serr)
			}
			continue
		}
		var fe *FormatError
		if !errors.As(err, &fe) || !errors.As(serr, &fe) {
			t.Errorf("length %d: %v / %v, want FormatErrors", n, err, serr)
		}
	}
}

// TestAllocationBound feeds headers whose counts and lengths claim far more than the file holds and checks how
// much the reader allocates before refusing them.
func TestAllocationBound(t *testing.T) {
	header := func(nTensors, nKV uint64, kvs ...rawKV) []byte {
		s := rawSpec{magic: "GGUF", version: 3, nTensors: ptr(nTensors), nKV: ptr(nKV), kvs: kvs}
		return s.build().b
	}
	cases := []struct {
		name string
		b    []byte
	}{
		{"2^60 u64 array", header(0, 1, rawKV{"k", 9, arrVal(10, 1<<60, func(*raw) {})})},
		{"2^30 u8 array", header(0, 1, rawKV{"k", 9, arrVal(0, 1<<30, func(r *raw) { r.u64(0) })})},
		{"2^30 string array", header(0, 1, rawKV{"k", 9, arrVal(8, 1<<30, func(r *raw) { r.str("x") })})},
		{"2^60-byte string", header(0, 1, rawKV{"k", 8, func(r *raw, _ string) { r.u64(1 << 60) }})},
		{"1 GiB string", header(0, 1, rawKV{"k", 8, func(r *raw, _ string) { r.u64(1 << 30); r.str("xx") }})},
		{"2^62 keys", header(0, 1<<62)},
		{"2^62 tensors", header(1<<62, 0)},
	}
	const limit = 1 << 19
	for _, c := range cases {
		for _, stream := range []bool{false, true} {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			var err error
			if stream {
				_, err = NewStreamReader(bytes.NewReader(c.b))
			} else {
				_, err = NewReader(bytes.NewReader(c.b), int64(len(c.b)))
			}
			runtime.ReadMemStats(&after)
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Errorf("%s (stream %v): %v, want a FormatError", c.name, stream, err)
			}
			d := after.TotalAlloc - before.TotalAlloc
			t.Logf("%s (stream %v): %d bytes allocated", c.name, stream, d)
			if d > limit {
				t.Errorf("%s (stream %v): allocated %d bytes for a %d-byte file", c.name, stream, d, len(c.b))
			}
		}
	}
}
