package safetensors

import (
	"bytes"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// zstdMagic starts every zstd frame (RFC 8878 §3.1.1).
var zstdMagic = []byte{0x28, 0xB5, 0x2F, 0xFD}

func isZstd(b []byte) bool { return bytes.HasPrefix(b, zstdMagic) }

// A compressed file is decompressed into memory, so its expansion must be bounded: zstd turns a run of zeros of any
// length into a few bytes, and a tiny file could otherwise claim (and really contain) terabytes. Real tensor data
// compresses by a small factor, so the limit is generous: maxZstdRatio times the compressed size, at least
// minZstdLimit. Memory grows only as bytes actually arrive, never from a declared size.
const (
	minZstdLimit = 1 << 30
	maxZstdRatio = 1024
)

// openZstd reads a compressed file held in memory, which it does not retain: Open's path for .safetensors.zst files,
// apart so that it can be fuzzed without a file.
func openZstd(name string, compressed []byte) (*File, error) {
	raw, err := decompress(name, compressed)
	if err != nil {
		return nil, err
	}
	return newFile(name, bytes.NewReader(raw), raw, int64(len(raw)))
}

// decompress expands a zstd-compressed safetensors file. It reads the header first so that it can stop at the size
// the header declares; newFile then validates the result exactly as for an uncompressed file (a short or overlong
// stream produces the same errors as a short or overlong file).
func decompress(name string, compressed []byte) ([]byte, error) {
	limit := max(minZstdLimit, maxZstdRatio*int64(len(compressed)))
	dec, err := zstd.NewReader(bytes.NewReader(compressed), zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(uint64(limit)))
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", name, err)
	}
	defer dec.Close()
	zerr := func(err error) error { return fmt.Errorf("safetensors: %s: zstd: %w", name, err) }
	buf, err := readGrow(dec, nil, prefixSize)
	if err != nil {
		return nil, zerr(err)
	}
	n, err := headerLength(buf, -1)
	if err != nil {
		return nil, withFile(err, name)
	}
	if buf, err = readGrow(dec, buf, prefixSize+n); err != nil {
		return nil, zerr(err)
	}
	if int64(len(buf)) < prefixSize+n {
		return buf, nil
	}
	h, err := parseHeader(buf[prefixSize:])
	if err != nil {
		return nil, withFile(err, name)
	}
	if h.dataLen > uint64(limit) {
		return nil, &FormatError{File: name, Offset: prefixSize + n, Rule: fmt.Sprintf(
			"header declares %d bytes of tensor data; a zstd file of %d bytes may expand to at most %d", h.dataLen, len(compressed), limit)}
	}
	total := prefixSize + n + int64(h.dataLen)
	if buf, err = readGrow(dec, buf, total+1); err != nil {
		return nil, zerr(err)
	}
	return buf, nil
}

// readGrow reads from r until buf holds want bytes or r ends, growing buf by doubling so that memory tracks the
// bytes read rather than want.
func readGrow(r io.Reader, buf []byte, want int64) ([]byte, error) {
	for int64(len(buf)) < want {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(want, max(2*int64(cap(buf)), 1<<16)))
			copy(grown, buf)
			buf = grown
		}
		k, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+k]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}
