package tensor

import (
	"fmt"
	"strconv"
	"strings"
)

// Shape lists dimensions outermost first (row-major, as safetensors and PyTorch write them).
// GGUF stores dimensions innermost first; the gguf package reverses them at its boundary.
type Shape []int64

// Elements returns the product of the dimensions, rejecting negative dimensions and overflow.
// A rank-0 shape is a scalar with one element.
func (s Shape) Elements() (int64, error) {
	n := int64(1)
	for i, d := range s {
		if d < 0 {
			return 0, fmt.Errorf("dimension %d is negative (%d)", i, d)
		}
		if d != 0 && n > maxInt64/d {
			return 0, fmt.Errorf("shape %v overflows a 64-bit element count", s)
		}
		n *= d
	}
	return n, nil
}

// Bytes returns the storage size of a tensor of this shape and type.
func (s Shape) Bytes(t DType) (int64, error) {
	n, err := s.Elements()
	if err != nil {
		return 0, err
	}
	return t.Bytes(n)
}

// Equal reports whether two shapes have the same dimensions.
func (s Shape) Equal(o Shape) bool {
	if len(s) != len(o) {
		return false
	}
	for i := range s {
		if s[i] != o[i] {
			return false
		}
	}
	return true
}

// String formats the shape as [d0, d1, ...].
func (s Shape) String() string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = strconv.FormatInt(d, 10)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
