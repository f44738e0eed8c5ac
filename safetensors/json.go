package safetensors

import (
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// scanner reads the JSON that serde_json accepts, because the reference parses headers with serde_json::from_str
// and its README says the accepted subset is "implicitly decided by serde_json". A hand-written scanner, rather than
// encoding/json, lets every error carry its byte offset, refuses duplicate keys (encoding/json keeps the last one)
// and rejects what serde_json rejects: lone surrogates, integers written as floats, leading zeros.
type scanner struct {
	b    []byte
	pos  int
	base int64 // file offset of b[0], so that errors point into the file
}

// maxDepth is the deepest nesting of objects and arrays serde_json accepts: its Deserializer::remaining_depth
// starts at 128 and check_recursion fails when a level brings it to 0.
const maxDepth = 127

func (s *scanner) errorAt(pos int, format string, args ...any) *FormatError {
	return &FormatError{Offset: s.base + int64(pos), Rule: fmt.Sprintf(format, args...)}
}

func (s *scanner) errorf(format string, args ...any) *FormatError {
	return s.errorAt(s.pos, format, args...)
}

// ws skips the four whitespace bytes of JSON.
func (s *scanner) ws() {
	for s.pos < len(s.b) {
		switch s.b[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// peek skips whitespace and returns the next byte, or 0 at the end of the input.
func (s *scanner) peek() byte {
	s.ws()
	if s.pos < len(s.b) {
		return s.b[s.pos]
	}
	return 0
}

// found describes the input at the current position for error messages.
func (s *scanner) found() string {
	if s.pos >= len(s.b) {
		return "the end of the header"
	}
	r, _ := utf8.DecodeRune(s.b[s.pos:])
	return strconv.QuoteRune(r)
}

func (s *scanner) expect(c byte, what string) error {
	if s.peek() != c {
		return s.errorf("expected %s, found %s", what, s.found())
	}
	s.pos++
	return nil
}

// more is called after an element of an object or array: it consumes ',' and reports true, or consumes the closing
// byte and reports false.
func (s *scanner) more(closing byte) (bool, error) {
	switch s.peek() {
	case ',':
		s.pos++
		return true, nil
	case closing:
		s.pos++
		return false, nil
	}
	return false, s.errorf("expected ',' or '%c', found %s", closing, s.found())
}

// str reads a string.
func (s *scanner) str() (string, error) {
	b, err := s.strBytes()
	return string(b), err
}

// strBytes reads a string without copying it when it has no escapes: the result may alias the input. The input was
// checked to be UTF-8, so only escapes and control bytes need attention.
func (s *scanner) strBytes() ([]byte, error) {
	if s.peek() != '"' {
		return nil, s.errorf("expected a string, found %s", s.found())
	}
	s.pos++
	start := s.pos
	for s.pos < len(s.b) {
		switch c := s.b[s.pos]; {
		case c == '"':
			s.pos++
			return s.b[start : s.pos-1], nil
		case c == '\\':
			return s.escaped(append([]byte(nil), s.b[start:s.pos]...))
		case c < 0x20:
			return nil, s.errorf("control character %#02x in a string must be escaped", c)
		}
		s.pos++
	}
	return nil, s.errorAt(start-1, "unterminated string")
}

// escaped finishes a string that contains escapes; buf holds the part before the first one.
func (s *scanner) escaped(buf []byte) ([]byte, error) {
	for s.pos < len(s.b) {
		c := s.b[s.pos]
		switch {
		case c == '"':
			s.pos++
			return buf, nil
		case c < 0x20:
			return nil, s.errorf("control character %#02x in a string must be escaped", c)
		case c != '\\':
			buf = append(buf, c)
			s.pos++
			continue
		}
		at := s.pos
		if s.pos+1 >= len(s.b) {
			break
		}
		e := s.b[s.pos+1]
		s.pos += 2
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, err := s.hex4()
			if err != nil {
				return nil, err
			}
			if utf16.IsSurrogate(r) {
				// serde_json refuses unpaired surrogates when it builds a String.
				if r >= 0xDC00 || s.pos+1 >= len(s.b) || s.b[s.pos] != '\\' || s.b[s.pos+1] != 'u' {
					return nil, s.errorAt(at, "unpaired UTF-16 surrogate \\u%04x", r)
				}
				s.pos += 2
				lo, err := s.hex4()
				if err != nil {
					return nil, err
				}
				if lo < 0xDC00 || lo > 0xDFFF {
					return nil, s.errorAt(at, "unpaired UTF-16 surrogate \\u%04x", r)
				}
				r = utf16.DecodeRune(r, lo)
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return nil, s.errorAt(at, "invalid escape \\%c in a string", e)
		}
	}
	return nil, s.errorf("unterminated string")
}

func (s *scanner) hex4() (rune, error) {
	if s.pos+4 > len(s.b) {
		return 0, s.errorf("truncated \\u escape")
	}
	var r rune
	for _, c := range s.b[s.pos : s.pos+4] {
		switch {
		case '0' <= c && c <= '9':
			r = r<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, s.errorf("invalid \\u escape")
		}
	}
	s.pos += 4
	return r, nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// number scans a JSON number and reports where its integer digits end and whether it has a fraction or exponent.
func (s *scanner) number() (intEnd int, float bool, err error) {
	start := s.pos
	if s.pos < len(s.b) && s.b[s.pos] == '-' {
		s.pos++
	}
	switch {
	case s.pos >= len(s.b) || !isDigit(s.b[s.pos]):
		return 0, false, s.errorAt(start, "invalid number")
	case s.b[s.pos] == '0':
		s.pos++
		if s.pos < len(s.b) && isDigit(s.b[s.pos]) {
			return 0, false, s.errorAt(start, "invalid number: leading zero")
		}
	default:
		for s.pos < len(s.b) && isDigit(s.b[s.pos]) {
			s.pos++
		}
	}
	intEnd = s.pos
	if s.pos < len(s.b) && s.b[s.pos] == '.' {
		s.pos++
		if err := s.digits(start); err != nil {
			return 0, false, err
		}
		float = true
	}
	if s.pos < len(s.b) && (s.b[s.pos] == 'e' || s.b[s.pos] == 'E') {
		s.pos++
		if s.pos < len(s.b) && (s.b[s.pos] == '+' || s.b[s.pos] == '-') {
			s.pos++
		}
		if err := s.digits(start); err != nil {
			return 0, false, err
		}
		float = true
	}
	return intEnd, float, nil
}

func (s *scanner) digits(start int) error {
	if s.pos >= len(s.b) || !isDigit(s.b[s.pos]) {
		return s.errorAt(start, "invalid number")
	}
	for s.pos < len(s.b) && isDigit(s.b[s.pos]) {
		s.pos++
	}
	return nil
}

// uint reads a number the way serde_json deserializes a usize: integers only (1.0 and 1e3 are floats and refused),
// negatives refused except -0, and values beyond 64 bits refused (serde_json turns them into floats).
func (s *scanner) uint(what string) (uint64, error) {
	s.ws()
	start := s.pos
	intEnd, float, err := s.number()
	if err != nil {
		return 0, s.errorAt(start, "%s: expected a non-negative integer, found %s", what, s.foundAt(start))
	}
	lit := s.b[start:s.pos]
	if float {
		return 0, s.errorAt(start, "%s must be an integer, found %s", what, lit)
	}
	digits := s.b[start:intEnd]
	neg := digits[0] == '-'
	if neg {
		digits = digits[1:]
	}
	var v uint64
	for _, c := range digits {
		d := uint64(c - '0')
		if v > (1<<64-1-d)/10 {
			return 0, s.errorAt(start, "%s: %s does not fit in 64 bits", what, lit)
		}
		v = v*10 + d
	}
	if neg && v != 0 {
		return 0, s.errorAt(start, "%s must not be negative, found %s", what, lit)
	}
	return v, nil
}

func (s *scanner) foundAt(pos int) string {
	s.pos = pos
	return s.found()
}

// skip validates and discards one value, as serde does for fields it does not know.
func (s *scanner) skip(depth int) error {
	switch c := s.peek(); c {
	case '"':
		_, err := s.strBytes()
		return err
	case '{', '[':
		if depth <= 0 {
			return s.errorf("JSON nested deeper than %d levels", maxDepth)
		}
		s.pos++
		closing := byte(']')
		if c == '{' {
			closing = '}'
		}
		if s.peek() == closing {
			s.pos++
			return nil
		}
		for {
			if c == '{' {
				if _, err := s.strBytes(); err != nil {
					return err
				}
				if err := s.expect(':', "':'"); err != nil {
					return err
				}
			}
			if err := s.skip(depth - 1); err != nil {
				return err
			}
			more, err := s.more(closing)
			if err != nil || !more {
				return err
			}
		}
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	}
	if c := s.peek(); c == '-' || isDigit(c) {
		start := s.pos
		intEnd, float, err := s.number()
		if err != nil {
			return err
		}
		// The reference buffers unknown fields as serde Content, parsing numbers beyond u64/i64 as f64, and
		// serde_json refuses a float that overflows to infinity.
		if float || intEnd-start > 19 {
			if f, _ := strconv.ParseFloat(string(s.b[start:s.pos]), 64); math.IsInf(f, 0) {
				return s.errorAt(start, "number %s is out of range", s.b[start:s.pos])
			}
		}
		return nil
	}
	return s.errorf("expected a JSON value, found %s", s.found())
}

// literal consumes true, false or null.
func (s *scanner) literal(word string) error {
	if len(s.b)-s.pos < len(word) || string(s.b[s.pos:s.pos+len(word)]) != word {
		return s.errorf("expected a JSON value, found %s", s.found())
	}
	s.pos += len(word)
	return nil
}
