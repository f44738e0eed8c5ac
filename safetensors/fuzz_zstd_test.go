package safetensors

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// FuzzZstd feeds the reader of .safetensors.zst files (Open's path for compressed files, from memory). An input that
// starts with the zstd magic is read as a compressed file: it is refused with an error naming the file, or accepted
// and then holds the same tensors as the plain file it decompresses to. Any other input is a plain file, compressed
// here: the compressed file must be accepted exactly when the plain one is, refused with a *FormatError when it is
// not, and hold the same tensors when it is.
func FuzzZstd(f *testing.F) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		f.Fatal(err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(minZstdLimit))
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
		f.Add(enc.EncodeAll(seed, nil))
	}
	const name = "fuzz.safetensors.zst"
	f.Fuzz(func(t *testing.T, data []byte) {
		if isZstd(data) {
			z, err := openZstd(name, data)
			if err != nil {
				if !strings.Contains(err.Error(), name) {
					t.Fatalf("error does not name the file: %v", err)
				}
				return
			}
			// Accepted: the stream decompresses to a plain file of exactly z.Size() bytes, which the plain reader
			// accepts with the same tensors.
			if err := dec.Reset(bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			plainData, err := io.ReadAll(io.LimitReader(dec, z.Size()+1))
			if err != nil || int64(len(plainData)) != z.Size() {
				t.Fatalf("accepted a %d-byte file from a stream of %d bytes (%v)", z.Size(), len(plainData), err)
			}
			plain, err := NewReader(bytes.NewReader(plainData), z.Size())
			if err != nil {
				t.Fatalf("the compressed file was accepted, the file it decompresses to is not: %v", err)
			}
			sameFile(t, plain, z)
			return
		}
		plain, perr := NewReader(bytes.NewReader(data), int64(len(data)))
		z, zerr := openZstd(name, enc.EncodeAll(data, nil))
		if (perr == nil) != (zerr == nil) {
			t.Fatalf("plain file: %v; compressed: %v", perr, zerr)
		}
		if zerr != nil {
			var fe *FormatError
			if !errors.As(zerr, &fe) || fe.File != name {
				t.Fatalf("compressed file refused without a FormatError naming it: %v", zerr)
			}
			return
		}
		sameFile(t, plain, z)
		// What the writer compresses reads back the same.
		again, err := openZstd(name, rewrite(t, z, Zstd()))
		if err != nil {
			t.Fatalf("rewrite with Zstd does not read back: %v", err)
		}
		// The writer lays the header out its own way (sorted, unknown keys dropped): only the content must match.
		sameTensors(t, "rewrite", z, again)
		if !maps.Equal(z.Metadata(), again.Metadata()) {
			t.Fatalf("metadata %v, rewritten %v", z.Metadata(), again.Metadata())
		}
	})
}

// sameFile checks that two files hold the same tensors, metadata and header.
func sameFile(t *testing.T, a, b *File) {
	t.Helper()
	sameTensors(t, "compressed", a, b)
	if !maps.Equal(a.Metadata(), b.Metadata()) || a.HeaderSize() != b.HeaderSize() || a.Size() != b.Size() {
		t.Fatalf("metadata %v, header %d, size %d; then %v, %d, %d", a.Metadata(), a.HeaderSize(), a.Size(),
			b.Metadata(), b.HeaderSize(), b.Size())
	}
}
