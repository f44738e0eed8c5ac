package safetensors

import (
	"errors"
	"fmt"
	"strings"
)

// FormatError reports a file that breaks a rule of the safetensors format. The rules and their order are those of
// the Rust reference reader (safetensors/src/tensor.rs: read_metadata, Metadata::validate; formats-quant.md §4.2).
type FormatError struct {
	File   string // path of the file; empty when read through NewReader
	Offset int64  // byte offset in the (decompressed) file where the offending bytes start
	Tensor string // tensor concerned; empty when the rule is about the whole file
	Rule   string // the rule that was broken and what was found instead
}

func (e *FormatError) Error() string {
	var b strings.Builder
	b.WriteString("safetensors: ")
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	fmt.Fprintf(&b, "offset %d: ", e.Offset)
	if e.Tensor != "" {
		fmt.Fprintf(&b, "tensor %q: ", e.Tensor)
	}
	b.WriteString(e.Rule)
	return b.String()
}

// ErrNotFound is returned (wrapped) when a tensor name is not in a file or model.
var ErrNotFound = errors.New("no such tensor")

// withFile names the file in a *FormatError produced before the name was known; other errors pass unchanged.
func withFile(err error, name string) error {
	if fe, ok := err.(*FormatError); ok && fe.File == "" {
		fe.File = name
	}
	return err
}
