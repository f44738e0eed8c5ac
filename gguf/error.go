package gguf

import "fmt"

// Rule names the check of ggml's reader (src/gguf.cpp, gguf_init_from_reader) or llama.cpp's loader that a file
// broke, so that callers and tests can branch on it.
type Rule string

const (
	RuleTruncated       Rule = "truncated"          // the file ends inside a field
	RuleMagic           Rule = "magic"              // not "GGUF"
	RuleVersion         Rule = "version"            // only 2 and 3 are read; 1 and byte-swapped files are refused
	RuleCount           Rule = "count"              // tensor or key count does not fit an int64
	RuleKey             Rule = "key"                // empty key
	RuleDuplicateKey    Rule = "duplicate key"      // a key appears twice
	RuleValueType       Rule = "value type"         // unknown gguf_type
	RuleNestedArray     Rule = "nested array"       // ggml rejects arrays of arrays
	RuleStringLength    Rule = "string length"      // longer than GGUF_MAX_STRING_LENGTH or the rest of the file
	RuleArrayLength     Rule = "array length"       // more than GGUF_MAX_ARRAY_ELEMENTS or the rest of the file holds
	RuleAlignment       Rule = "alignment"          // general.alignment not a u32 power of two
	RuleTensorName      Rule = "tensor name"        // name of GGML_MAX_NAME (64) bytes or more
	RuleDuplicateTensor Rule = "duplicate tensor"   // a tensor name appears twice
	RuleDims            Rule = "dimension count"    // more than GGML_MAX_DIMS (4)
	RuleDimSize         Rule = "dimension size"     // a negative dimension, or an element count overflowing int64
	RuleTensorType      Rule = "tensor type"        // unknown or removed ggml_type
	RuleBlockSize       Rule = "block size"         // ne[0] not a multiple of the type's block size
	RuleOffset          Rule = "tensor offset"      // not the running padded sum of the sizes before it
	RuleDataBounds      Rule = "tensor data bounds" // data section or tensor data past the end of the file
	RuleSplit           Rule = "split"              // a split set that does not fit together
)

// FormatError reports a malformed file: which file, the byte offset of the offending field, the rule it breaks
// and the details.
type FormatError struct {
	File   string // path, or the name the reader was given; may be empty
	Offset int64
	Rule   Rule
	Msg    string
	Err    error // underlying I/O error, if any
}

func (e *FormatError) Error() string {
	name := e.File
	if name == "" {
		name = "gguf"
	}
	s := fmt.Sprintf("%s: offset %d: %s: %s", name, e.Offset, e.Rule, e.Msg)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *FormatError) Unwrap() error { return e.Err }
