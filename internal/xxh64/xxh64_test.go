package xxh64

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// Published XXH64 values (seed 0) for short inputs: the empty string and "a" are in the xxHash repository's sanity
// checks; the others cover the 4-byte, 8-byte and stripe paths.
func TestKnownValues(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
	}{
		{"", 0xef46db3751d8e999},
		{"a", 0xd24ec4f1a98c6e5b},
		{"as", 0x1c330fb2d66be179},
		{"asd", 0x631c37ce72a97393},
		{"asdf", 0x415872f599cea71e},
		{"Call me Ishmael. Some years ago--never mind how long precisely-", 0x02a2e85470d6fd96},
	} {
		if got := Sum64([]byte(tc.in)); got != tc.want {
			t.Errorf("Sum64(%q) = %#x, want %#x", tc.in, got, tc.want)
		}
	}
}

// A zstd frame written with a checksum ends with the low 32 bits of the XXH64 of its content (RFC 8878 §3.1.1):
// klauspost/compress computes it with its own XXH64, an independent oracle for every length.
func TestAgainstZstdChecksum(t *testing.T) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(true), zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{1, 3, 4, 7, 8, 31, 32, 33, 63, 64, 65, 100, 1000, 4096 + 17, 1 << 20} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		frame := enc.EncodeAll(data, nil)
		want := binary.LittleEndian.Uint32(frame[len(frame)-4:])
		if got := uint32(Sum64(data)); got != want {
			t.Errorf("%d bytes: low bits %#x, zstd checksum %#x", n, got, want)
		}
	}
}

// Writing in pieces of any size gives the hash of the whole.
func TestIncrementalWrites(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz"), 100)
	want := Sum64(data)
	for _, piece := range []int{1, 5, 31, 32, 33, 100} {
		d := New()
		for p := data; len(p) > 0; {
			k := min(piece, len(p))
			d.Write(p[:k])
			p = p[k:]
		}
		if d.Sum64() != want {
			t.Errorf("pieces of %d: %#x, want %#x", piece, d.Sum64(), want)
		}
		if got := d.Sum(nil); binary.BigEndian.Uint64(got) != want {
			t.Errorf("Sum: % x", got)
		}
	}
}

func BenchmarkSum64(b *testing.B) {
	data := make([]byte, 1<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		Sum64(data)
	}
}
