package prune

import (
	"fmt"
	"math/bits"
)

// Mask marks which entries of a rows×cols matrix are kept (selected). It is stored as the packed bitmask of
// compressed-tensors' sparse-bitmask format (numpy.packbits(mask, axis=-1, bitorder="little"); spectral-prune-merge.md
// §4.5): each row takes Stride() = ⌈cols/8⌉ bytes, entry j of a row is bit j%8 (least significant first) of byte
// j/8, and the padding bits after the last column are zero. A Mask is therefore its own file representation.
type Mask struct {
	Rows, Cols int
	Bits       []byte // Rows·Stride() bytes
}

// NewMask returns a mask of the given size that keeps nothing.
func NewMask(rows, cols int) *Mask {
	if rows < 0 || cols < 0 {
		panic(fmt.Sprintf("prune: %d×%d mask", rows, cols))
	}
	return &Mask{Rows: rows, Cols: cols, Bits: make([]byte, rows*((cols+7)/8))}
}

// MaskFromBits wraps packed bits (not copied) as a mask, checking their length and that the padding bits of every
// row are zero, as packbits leaves them.
func MaskFromBits(rows, cols int, packed []byte) (*Mask, error) {
	if rows < 0 || cols < 0 {
		return nil, fmt.Errorf("prune: %d×%d mask", rows, cols)
	}
	m := &Mask{Rows: rows, Cols: cols, Bits: packed}
	if want := int64(rows) * int64(m.Stride()); int64(len(packed)) != want {
		return nil, fmt.Errorf("prune: %d×%d mask needs %d bytes of bits, got %d", rows, cols, want, len(packed))
	}
	if tail := cols % 8; tail != 0 {
		pad := byte(0xff) << tail
		for i := range rows {
			if packed[(i+1)*m.Stride()-1]&pad != 0 {
				return nil, fmt.Errorf("prune: %d×%d mask: row %d has bits set past column %d", rows, cols, i, cols-1)
			}
		}
	}
	return m, nil
}

// Stride is the number of bytes per row, ⌈Cols/8⌉.
func (m *Mask) Stride() int { return (m.Cols + 7) / 8 }

// Elements is Rows·Cols.
func (m *Mask) Elements() int64 { return int64(m.Rows) * int64(m.Cols) }

// Get reports whether entry (i, j) is kept.
func (m *Mask) Get(i, j int) bool { return m.Bits[i*m.Stride()+j/8]>>(j%8)&1 != 0 }

// Set marks entry (i, j) as kept or not.
func (m *Mask) Set(i, j int, keep bool) {
	b := &m.Bits[i*m.Stride()+j/8]
	if keep {
		*b |= 1 << (j % 8)
	} else {
		*b &^= 1 << (j % 8)
	}
}

// Row returns the packed bits of row i.
func (m *Mask) Row(i int) []byte { return m.Bits[i*m.Stride() : (i+1)*m.Stride()] }

// Kept counts the kept entries.
func (m *Mask) Kept() int64 { return popcount(m.Bits) }

// RowKept counts the kept entries of row i.
func (m *Mask) RowKept(i int) int { return int(popcount(m.Row(i))) }

// Sparsity is the fraction of entries not kept; 0 for an empty mask.
func (m *Mask) Sparsity() float64 {
	n := m.Elements()
	if n == 0 {
		return 0
	}
	return float64(n-m.Kept()) / float64(n)
}

func popcount(b []byte) int64 {
	n := 0
	for len(b) >= 8 {
		n += bits.OnesCount64(uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
			uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56)
		b = b[8:]
	}
	for _, x := range b {
		n += bits.OnesCount8(x)
	}
	return int64(n)
}

// Apply zeroes the entries of the row-major rows×cols matrix w that the mask does not keep.
func (m *Mask) Apply(w []float32) {
	if len(w) != m.Rows*m.Cols {
		panic(fmt.Sprintf("prune: applying a %d×%d mask to %d values", m.Rows, m.Cols, len(w)))
	}
	for i := range m.Rows {
		row := w[i*m.Cols : (i+1)*m.Cols]
		for k, b := range m.Row(i) {
			if b == 0xff {
				continue
			}
			for j := k * 8; j < min(k*8+8, m.Cols); j++ {
				if b>>(j-k*8)&1 == 0 {
					row[j] = 0
				}
			}
		}
	}
}

// And returns the entries kept by both masks.
func (m *Mask) And(o *Mask) (*Mask, error) {
	return m.combine(o, func(a, b byte) byte { return a & b })
}

// Or returns the entries kept by either mask.
func (m *Mask) Or(o *Mask) (*Mask, error) { return m.combine(o, func(a, b byte) byte { return a | b }) }

func (m *Mask) combine(o *Mask, op func(a, b byte) byte) (*Mask, error) {
	if m.Rows != o.Rows || m.Cols != o.Cols {
		return nil, fmt.Errorf("prune: combining a %d×%d mask with a %d×%d one", m.Rows, m.Cols, o.Rows, o.Cols)
	}
	r := NewMask(m.Rows, m.Cols)
	for i, b := range m.Bits {
		r.Bits[i] = op(b, o.Bits[i])
	}
	return r, nil
}

// Equal reports whether two masks have the same size and keep the same entries.
func (m *Mask) Equal(o *Mask) bool {
	if m.Rows != o.Rows || m.Cols != o.Cols {
		return false
	}
	for i, b := range m.Bits {
		if o.Bits[i] != b {
			return false
		}
	}
	return true
}
