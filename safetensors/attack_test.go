package safetensors

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// prefixed puts an arbitrary 8-byte header length in front of rest.
func prefixed(n uint64, rest string) string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], n)
	return string(b[:]) + rest
}

const i32x4 = `{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}` // 60 bytes, from the reference's tests

// attacks are malformed files, each with the rule it breaks. Cases named test_* are the reference's own unit tests
// (safetensors/src/tensor.rs); the others cover attacks/README.md and the serde_json behaviours the reader mirrors.
var attacks = []struct {
	name   string
	file   string
	want   string // substring of the error
	offset int64  // expected FormatError.Offset, or -1 to skip the check
	tensor string // expected FormatError.Tensor
}{
	{"test_header_too_small", "", "fewer than the 8-byte header length", 0, ""},
	{"7 bytes", "\x08\x00\x00\x00\x00\x00\x00", "fewer than the 8-byte header length", 0, ""},
	{"huge size prefix (abuse attempt 1)", prefixed(1<<64-1, "{}"), "exceeds the limit of 100000000 bytes", 0, ""},
	{"test_header_too_large", "<\x00\x00\x00\x00\xff\xff\xff" + i32x4 + strings.Repeat("\x00", 16), "exceeds the limit", 0, ""},
	{"header of 100 MB + 1 claimed", prefixed(MaxHeaderSize+1, "{}"), "exceeds the limit", 0, ""},
	{"header of 100 MB claimed in a small file", prefixed(MaxHeaderSize, "{}      "), "runs past the end of the 16-byte file", 0, ""},
	{"test_invalid_header_length", "<\x00\x00\x00\x00\x00\x00\x00", "runs past the end", 0, ""},
	{"test_invalid_header_non_utf8", "\x01\x00\x00\x00\x00\x00\x00\x00\xff", "not valid UTF-8", 8, ""},
	{"non-UTF-8 inside a name", file(`{"a`+"\xc3\x28"+`":{}}`, ""), "not valid UTF-8", 11, ""},
	{"test_invalid_header_not_json", "\x01\x00\x00\x00\x00\x00\x00\x00{", "expected a string, found the end of the header", 9, ""},
	{"header starts with [", file(`[]`, ""), "must begin with '{'", 8, ""},
	{"header starts with a letter", file(`x{}`, ""), "must begin with '{'", 8, ""},
	{"header is a string", file(`"{}"`, ""), "must begin with '{'", 8, ""},
	{"NUL padding", prefixed(8, "{}\x00\x00\x00\x00\x00\x00"), `unexpected '\x00' after the header object`, 10, ""},
	{"two objects", file(`{}{}`, ""), "after the header object", 10, ""},
	{"trailing comma", file(`{"__metadata__":{},}`, ""), "expected a string", 27, ""},
	{"offsets outside the file (abuse attempt 3)", file(`{"a":{"dtype":"U8","shape":[16],"data_offsets":[0,16]}}`, "12345678"),
		"tensor data ends at byte 80 (8 + 56 header bytes + 16 data bytes), but the file has 72 bytes", 64, ""},
	{"offsets at 2^64-1", file(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,18446744073709551615]}}`, "xx"),
		"hold 18446744073709551615 bytes, but U8 [2] needs 2", 9, "a"},
	{"test_json_attack: ten tensors on the same bytes", file(`{"w0":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"w1":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}`, strings.Repeat("\x00", 16)),
		"overlap the previous tensor, which ends at byte 16", 66, "w1"},
	{"overlapping offsets (abuse attempt 4)", file(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}`, "123456"),
		"data_offsets [2, 6] overlap the previous tensor", 61, "b"},
	{"gap between tensors", file(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}}`, "123456789012"),
		"leave a gap after byte 4", 61, "b"},
	{"first tensor not at 0", file(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}`, "12345678"), "leave a gap after byte 0", 9, "a"},
	{"end before begin", file(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}`, ""),
		"end before they begin", 61, "b"},
	{"test_invalid_info: offsets vs shape (abuse attempt 5)", "<\x00\x00\x00\x00\x00\x00\x00" + `{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0, 4]}}`,
		"hold 4 bytes, but I32 [2, 2] needs 16", 9, "test"},
	{"offsets vs dtype", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, "1234"), "hold 4 bytes, but F32 [2] needs 8", 9, "a"},
	{"test_metadata_incomplete_buffer: trailing bytes (polyglot)", "<\x00\x00\x00\x00\x00\x00\x00" + i32x4 + strings.Repeat("\x00", 16) + "extra_bogus_data_for_polyglot_file",
		"the tensors must cover the rest of the file exactly", 68, ""},
	{"test_metadata_incomplete_buffer: missing bytes", "<\x00\x00\x00\x00\x00\x00\x00" + i32x4 + strings.Repeat("\x00", 14),
		"tensor data ends at byte 84", 68, ""},
	{"metadata value is a number", file(`{"__metadata__":{"a":1}}`, ""), `__metadata__ value of "a" must be a string, found '1'`, 29, ""},
	{"metadata value is null", file(`{"__metadata__":{"a":null}}`, ""), "must be a string", 29, ""},
	{"metadata value is an object", file(`{"__metadata__":{"a":{"b":"c"}}}`, ""), "must be a string", 29, ""},
	{"metadata is a list", file(`{"__metadata__":["a"]}`, ""), "expected __metadata__ to be an object of strings", 24, ""},
	{"metadata is a string", file(`{"__metadata__":"a"}`, ""), "expected __metadata__ to be an object of strings", 24, ""},
	{"duplicate tensor names", file(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}`, ""),
		`duplicate key "a"`, 61, ""},
	{"duplicate __metadata__", file(`{"__metadata__":{},"__metadata__":{}}`, ""), `duplicate key "__metadata__"`, 27, ""},
	{"duplicate metadata key", file(`{"__metadata__":{"k":"1","k":"2"}}`, ""), `duplicate __metadata__ key "k"`, 33, ""},
	{"duplicate field", file(`{"a":{"dtype":"U8","dtype":"U8","shape":[0],"data_offsets":[0,0]}}`, ""), `duplicate field "dtype"`, 27, "a"},
	{"missing field", file(`{"a":{"dtype":"U8","data_offsets":[0,0]}}`, ""), `missing field "shape"`, 9, "a"},
	{"entry is not an object", file(`{"a":5}`, ""), `expected an object {"dtype", "shape", "data_offsets"}, found '5'`, 13, "a"},
	{"entry is an array", file(`{"a":["U8",[0],[0,0]]}`, ""), "expected an object", 13, "a"},
	{"F4 not filling bytes", file(`{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}`, "12"), "3 elements of F4 take 12 bits, not a whole number of bytes", 9, "a"},
	{"F6 not filling bytes", file(`{"a":{"dtype":"F6_E2M3","shape":[2],"data_offsets":[0,2]}}`, "12"), "2 elements of F6_E2M3 take 12 bits", 9, "a"},
	{"negative dimension", file(`{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}`, ""), "shape dimension must not be negative, found -1", 36, "a"},
	{"float dimension", file(`{"a":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}}`, "x"), "shape dimension must be an integer, found 1.0", 36, "a"},
	{"exponent dimension", file(`{"a":{"dtype":"U8","shape":[1e0],"data_offsets":[0,1]}}`, "x"), "must be an integer, found 1e0", 36, "a"},
	{"leading zero", file(`{"a":{"dtype":"U8","shape":[01],"data_offsets":[0,1]}}`, "x"), "expected a non-negative integer", 36, "a"},
	{"dimension beyond 64 bits", file(`{"a":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,0]}}`, ""), "does not fit in 64 bits", 36, "a"},
	{"test_validation_overflow: dimension beyond int64", "O\x00\x00\x00\x00\x00\x00\x00" + `{"test":{"dtype":"I32","shape":[2,18446744073709551614],"data_offsets":[0,16]}}` + strings.Repeat("\x00", 16),
		"shape dimension 18446744073709551614 exceeds 2^63-1", 42, "test"},
	{"test_validation_overflow: bit count", "N\x00\x00\x00\x00\x00\x00\x00" + `{"test":{"dtype":"I32","shape":[2,9223372036854775807],"data_offsets":[0,16]}}` + strings.Repeat("\x00", 16),
		"18446744073709551614 elements of I32 overflow a 64-bit bit count", 9, "test"},
	{"element count overflow", file(`{"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}}`, ""),
		"shape [4294967296, 4294967296] overflows a 64-bit element count", 9, "a"},
	{"unknown dtype", file(`{"a":{"dtype":"F128","shape":[0],"data_offsets":[0,0]}}`, ""), `unknown dtype "F128"`, 22, "a"},
	{"lowercase dtype", file(`{"a":{"dtype":"f32","shape":[0],"data_offsets":[0,0]}}`, ""), `unknown dtype "f32"`, 22, "a"},
	{"ggml dtype", file(`{"a":{"dtype":"Q4_K","shape":[0],"data_offsets":[0,0]}}`, ""), `unknown dtype "Q4_K"`, 22, "a"},
	{"FNUZ dtype", file(`{"a":{"dtype":"F8_E4M3FNUZ","shape":[0],"data_offsets":[0,0]}}`, ""), `unsupported dtype "F8_E4M3FNUZ"`, 22, "a"},
	{"dtype is a number", file(`{"a":{"dtype":7,"shape":[0],"data_offsets":[0,0]}}`, ""), "expected a string, found '7'", 22, "a"},
	{"three offsets", file(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0,0]}}`, ""), "expected ']' closing data_offsets", 58, "a"},
	{"one offset", file(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[0]}}`, ""), "expected ',' and END in data_offsets", 56, "a"},
	{"control character in a name", file("{\"a\x01\":{}}", ""), "control character 0x01 in a string must be escaped", 11, ""},
	{"lone surrogate", file(`{"\ud800":{}}`, ""), `unpaired UTF-16 surrogate \ud800`, 10, ""},
	{"lone trailing surrogate", file(`{"\udc00":{}}`, ""), `unpaired UTF-16 surrogate \udc00`, 10, ""},
	{"bad escape", file(`{"\x":{}}`, ""), `invalid escape \x`, 10, ""},
	{"unterminated string", prefixed(4, `{"ab`), "unterminated string", 9, ""},
	{"nesting beyond serde_json's limit", file(`{"a":{"x":`+strings.Repeat("[", 200)+strings.Repeat("]", 200)+`,"dtype":"U8","shape":[0],"data_offsets":[0,0]}}`, ""),
		"nested deeper than 127 levels", 143, "a"},
	{"float out of range in an unknown field", file(`{"a":{"x":[1e308,-1e309],"dtype":"U8","shape":[0],"data_offsets":[0,0]}}`, ""), "number -1e309 is out of range", 25, "a"},
	{"bad literal in an unknown field", file(`{"a":{"x":nul,"dtype":"U8","shape":[0],"data_offsets":[0,0]}}`, ""), "expected a JSON value", 18, "a"},
}

func TestAttacks(t *testing.T) {
	for _, tt := range attacks {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewReader(strings.NewReader(tt.file), int64(len(tt.file)))
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("got %v, want a *FormatError", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got  %v\nwant %q", err, tt.want)
			}
			if tt.offset >= 0 && fe.Offset != tt.offset {
				t.Errorf("offset %d, want %d (%v)", fe.Offset, tt.offset, err)
			}
			if fe.Tensor != tt.tensor {
				t.Errorf("tensor %q, want %q", fe.Tensor, tt.tensor)
			}
		})
	}
}

// TestAttacksNameFile checks that errors from Open name the file, for mapped and compressed files alike.
func TestAttacksNameFile(t *testing.T) {
	dir := t.TempDir()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, tt := range attacks {
		for _, compressed := range []bool{false, true} {
			data := []byte(tt.file)
			path := filepath.Join(dir, "attack.safetensors")
			if compressed {
				data = enc.EncodeAll(data, nil)
				path += ".zst"
			}
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Open(path)
			var fe *FormatError
			if !errors.As(err, &fe) || fe.File != path || !strings.Contains(err.Error(), path+": offset") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("case %d %q (zstd %v): %v", i, tt.name, compressed, err)
			}
		}
	}
}

// TestAllocationBound measures the bytes allocated while rejecting or opening crafted inputs: never more than a
// small multiple of the input, whatever sizes the input claims.
func TestAllocationBound(t *testing.T) {
	var manyDims strings.Builder
	manyDims.WriteString(`{"a":{"dtype":"U8","data_offsets":[0,1],"shape":[1`)
	for range 100_000 {
		manyDims.WriteString(",1")
	}
	manyDims.WriteString("]}}")
	manyTensors := func(entry string) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range 20_000 {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString(`"t` + strconv.Itoa(i) + `":` + entry)
		}
		b.WriteString("}")
		return b.String()
	}
	tests := []struct {
		name string
		file string
		ok   bool
	}{
		{"100 MB header claimed", prefixed(MaxHeaderSize, "{}      "), false},
		{"2^40-byte tensor claimed", file(`{"a":{"dtype":"U8","shape":[1099511627776],"data_offsets":[0,1099511627776]}}`, "x"), false},
		{"2^40 elements of F64 claimed", file(`{"a":{"dtype":"F64","shape":[1024,1024,1024,1024],"data_offsets":[0,8796093022208]}}`, ""), false},
		{"100,000 dimensions", file(manyDims.String(), "x"), true},
		{"20,000 empty tensors", file(manyTensors(`{"dtype":"U8","shape":[0],"data_offsets":[0,0]}`), ""), true},
		{"20,000 tensors on one byte", file(manyTensors(`{"dtype":"U8","shape":[1],"data_offsets":[0,1]}`), "x"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			allocated := measure(func() {
				_, err := NewReader(strings.NewReader(tt.file), int64(len(tt.file)))
				if (err == nil) != tt.ok {
					t.Fatalf("error %v", err)
				}
			})
			if limit := 16*uint64(len(tt.file)) + 64<<10; allocated > limit {
				t.Fatalf("allocated %d bytes for a %d-byte input (limit %d)", allocated, len(tt.file), limit)
			}
			t.Logf("%d-byte input: %d bytes allocated (%.1fx)", len(tt.file), allocated, float64(allocated)/float64(len(tt.file)))
		})
	}

	// A zstd file expands only as far as its bytes really go: a header claiming 512 MiB followed by 1 MiB of data
	// allocates in proportion to the 1 MiB.
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	bomb := enc.EncodeAll([]byte(file(`{"a":{"dtype":"U8","shape":[536870912],"data_offsets":[0,536870912]}}`, strings.Repeat("\x00", 1<<20))), nil)
	path := filepath.Join(t.TempDir(), "bomb.safetensors.zst")
	if err := os.WriteFile(path, bomb, 0o644); err != nil {
		t.Fatal(err)
	}
	allocated := measure(func() {
		if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "must cover the rest of the file exactly") {
			t.Fatalf("zstd bomb: %v", err)
		}
	})
	if allocated > 16<<20 {
		t.Fatalf("zstd: %d bytes allocated for 1 MiB of real data", allocated)
	}
	t.Logf("zstd, 512 MiB claimed, 1 MiB present: %d bytes allocated", allocated)
}

func measure(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestZstdLimit checks that a compressed file declaring more data than the decompression limit is refused before
// anything is expanded.
func TestZstdLimit(t *testing.T) {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	data := enc.EncodeAll([]byte(file(`{"a":{"dtype":"U8","shape":[4294967296],"data_offsets":[0,4294967296]}}`, "")), nil)
	_, err = decompress("x.zst", data)
	if err == nil || !strings.Contains(err.Error(), "may expand to at most 1073741824") {
		t.Fatalf("got %v", err)
	}
	if _, err := decompress("x.zst", append(append([]byte{}, zstdMagic...), 0, 0, 0)); err == nil || !strings.Contains(err.Error(), "x.zst: zstd") {
		t.Fatalf("corrupt stream: %v", err)
	}
}
