// Package xxh64 is the XXH64 hash (seed 0) of the xxHash specification (Yann Collet, "xxHash fast digest
// algorithm", doc/xxhash_spec.md, version 0.1.1): a fast non-cryptographic 64-bit checksum, here for `lathe hash
// --fast`. The zstd frame checksum is its low 32 bits, which the tests use as an independent oracle.
package xxh64

import (
	"encoding/binary"
	"hash"
	"math/bits"
)

// The five primes of the specification (§ "Constants").
const (
	prime1 uint64 = 0x9E3779B185EBCA87
	prime2 uint64 = 0xC2B2AE3D27D4EB4F
	prime3 uint64 = 0x165667B19E3779F9
	prime4 uint64 = 0x85EBCA77C2B2AE63
	prime5 uint64 = 0x27D4EB2F165667C5
)

// Size is the length of a digest in bytes.
const Size = 8

const stripe = 32 // four lanes of 8 bytes, consumed together

// Digest computes XXH64 incrementally. The zero value is not ready; use New.
type Digest struct {
	v      [4]uint64
	total  uint64
	buf    [stripe]byte
	buffed int
}

var _ hash.Hash64 = (*Digest)(nil)

// New returns a digest with seed 0.
func New() *Digest {
	d := &Digest{}
	d.Reset()
	return d
}

// Reset starts over (§ "Step 1. Initialize internal accumulators").
func (d *Digest) Reset() {
	p1 := prime1 // a variable, so that the sums wrap around as the specification's unsigned arithmetic does
	d.v = [4]uint64{p1 + prime2, prime2, 0, -p1}
	d.total, d.buffed = 0, 0
}

func (d *Digest) Size() int      { return Size }
func (d *Digest) BlockSize() int { return stripe }

func round(acc, lane uint64) uint64 {
	acc += lane * prime2
	acc = bits.RotateLeft64(acc, 31)
	return acc * prime1
}

// stripes consumes whole stripes of p (§ "Step 2. Process stripes") and returns the bytes left over.
func (d *Digest) stripes(p []byte) []byte {
	v0, v1, v2, v3 := d.v[0], d.v[1], d.v[2], d.v[3]
	for ; len(p) >= stripe; p = p[stripe:] {
		s := p[:stripe:stripe] // one bounds check for the four loads
		v0 = round(v0, binary.LittleEndian.Uint64(s[0:8]))
		v1 = round(v1, binary.LittleEndian.Uint64(s[8:16]))
		v2 = round(v2, binary.LittleEndian.Uint64(s[16:24]))
		v3 = round(v3, binary.LittleEndian.Uint64(s[24:32]))
	}
	d.v = [4]uint64{v0, v1, v2, v3}
	return p
}

// Write adds p to the hash; it never fails.
func (d *Digest) Write(p []byte) (int, error) {
	n := len(p)
	d.total += uint64(n)
	if d.buffed > 0 {
		c := copy(d.buf[d.buffed:], p)
		d.buffed += c
		p = p[c:]
		if d.buffed < stripe {
			return n, nil
		}
		d.stripes(d.buf[:])
		d.buffed = 0
	}
	d.buffed = copy(d.buf[:], d.stripes(p))
	return n, nil
}

func mergeAccumulator(acc, v uint64) uint64 {
	acc ^= round(0, v)
	return acc*prime1 + prime4
}

// Sum64 returns the hash of what was written so far (§ Steps 3 to 6).
func (d *Digest) Sum64() uint64 {
	var acc uint64
	if d.total >= stripe {
		v := d.v
		acc = bits.RotateLeft64(v[0], 1) + bits.RotateLeft64(v[1], 7) + bits.RotateLeft64(v[2], 12) +
			bits.RotateLeft64(v[3], 18)
		for _, x := range v {
			acc = mergeAccumulator(acc, x)
		}
	} else {
		acc = prime5 // + seed, which is 0
	}
	acc += d.total
	p := d.buf[:d.buffed]
	for ; len(p) >= 8; p = p[8:] {
		acc ^= round(0, binary.LittleEndian.Uint64(p))
		acc = bits.RotateLeft64(acc, 27)*prime1 + prime4
	}
	if len(p) >= 4 {
		acc ^= uint64(binary.LittleEndian.Uint32(p)) * prime1
		acc = bits.RotateLeft64(acc, 23)*prime2 + prime3
		p = p[4:]
	}
	for _, b := range p {
		acc ^= uint64(b) * prime5
		acc = bits.RotateLeft64(acc, 11) * prime1
	}
	acc ^= acc >> 33
	acc *= prime2
	acc ^= acc >> 29
	acc *= prime3
	acc ^= acc >> 32
	return acc
}

// Sum appends the hash to b, big-endian as xxhsum prints it.
func (d *Digest) Sum(b []byte) []byte { return binary.BigEndian.AppendUint64(b, d.Sum64()) }

// Sum64 returns the XXH64 of p.
func Sum64(p []byte) uint64 {
	d := New()
	d.Write(p)
	return d.Sum64()
}
