package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// Code points the way llama.cpp's src/unicode.cpp sees them.

// cptFlags are the unicode_cpt_flags the pre-tokenizers test: one general category per code point, plus the
// White_Space property. The zero value stands for "outside the text" (llama.cpp's empty flags), so every code point
// inside the text has at least one bit set, undefined ones included.
type cptFlags uint8

const (
	flagUndefined cptFlags = 1 << iota // Cn, and anything past U+10FFFF
	flagNumber                         // \p{N}
	flagLetter                         // \p{L}
	flagSeparator                      // \p{Z}
	flagAccent                         // \p{M}
	flagPunct                          // \p{P}
	flagSymbol                         // \p{S}
	flagControl                        // \p{C} other than Cn
)

// cpt is one decoded code point with its flags.
type cpt struct {
	r     rune
	flags cptFlags
	space bool
}

// flagsOf classifies r. Go's tables and llama.cpp's unicode-data.cpp are both generated from the Unicode Character
// Database; they can differ only for characters assigned in a Unicode version one of them lacks.
func flagsOf(r rune) cptFlags {
	switch {
	case r > unicode.MaxRune || r < 0:
		return flagUndefined
	case unicode.IsLetter(r):
		return flagLetter
	case unicode.IsNumber(r):
		return flagNumber
	case unicode.IsMark(r):
		return flagAccent
	case unicode.IsPunct(r):
		return flagPunct
	case unicode.IsSymbol(r):
		return flagSymbol
	case unicode.In(r, unicode.Zs, unicode.Zl, unicode.Zp):
		return flagSeparator
	case unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs):
		return flagControl
	}
	return flagUndefined
}

// isSpace is llama.cpp's unicode_set_whitespace, the White_Space property, which is what unicode.IsSpace tests.
func isSpace(r rune) bool { return r >= 0 && r <= unicode.MaxRune && unicode.IsSpace(r) }

// decodeCpts splits s into code points as unicode_cpts_from_utf8 does: lead bytes are trusted for the length
// (overlong forms and surrogates decode as written), and a byte that starts no valid sequence becomes U+FFFD.
func decodeCpts(s string) []cpt {
	out := make([]cpt, 0, len(s))
	for i := 0; i < len(s); {
		r, n := cptFromUTF8(s, i)
		i += n
		out = append(out, cpt{r: r, flags: flagsOf(r), space: isSpace(r)})
	}
	return out
}

func cptFromUTF8(s string, i int) (rune, int) {
	c := s[i]
	cont := func(k int) bool { return i+k < len(s) && s[i+k]&0xC0 == 0x80 }
	switch {
	case c&0x80 == 0:
		return rune(c), 1
	case c&0x40 == 0:
		return utf8.RuneError, 1
	case c&0x20 == 0:
		if cont(1) {
			return rune(c&0x1F)<<6 | rune(s[i+1]&0x3F), 2
		}
	case c&0x10 == 0:
		if cont(1) && cont(2) {
			return rune(c&0x0F)<<12 | rune(s[i+1]&0x3F)<<6 | rune(s[i+2]&0x3F), 3
		}
	case c&0x08 == 0:
		if cont(1) && cont(2) && cont(3) {
			return rune(c&0x07)<<18 | rune(s[i+1]&0x3F)<<12 | rune(s[i+2]&0x3F)<<6 | rune(s[i+3]&0x3F), 4
		}
	}
	return utf8.RuneError, 1
}

// appendCpt is unicode_cpt_to_utf8, which (unlike utf8.AppendRune) writes surrogates as three bytes; code points past
// U+10FFFF, which llama.cpp refuses, become U+FFFD.
func appendCpt(b []byte, r rune) []byte {
	switch {
	case r < 0x80:
		return append(b, byte(r))
	case r < 0x800:
		return append(b, 0xC0|byte(r>>6), 0x80|byte(r&0x3F))
	case r < 0x10000:
		return append(b, 0xE0|byte(r>>12), 0x80|byte(r>>6&0x3F), 0x80|byte(r&0x3F))
	case r <= unicode.MaxRune:
		return append(b, 0xF0|byte(r>>18), 0x80|byte(r>>12&0x3F), 0x80|byte(r>>6&0x3F), 0x80|byte(r&0x3F))
	}
	return utf8.AppendRune(b, utf8.RuneError)
}

// utf8Len is unicode_len_utf8: the sequence length a lead byte announces (1 for continuation bytes).
func utf8Len(c byte) int {
	return [16]int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4}[c>>4]
}

// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the other 68 map to U+0100 onwards in byte order,
// so that every byte is a visible character (unicode_byte_to_utf8_map).
var byteRunes, runeBytes = byteAlphabet()

func byteAlphabet() ([256]rune, map[rune]byte) {
	var fwd [256]rune
	inv := make(map[rune]byte, 256)
	n := rune(0)
	for b := 0; b < 256; b++ {
		if (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			fwd[b] = rune(b)
		} else {
			fwd[b] = 256 + n
			n++
		}
		inv[fwd[b]] = byte(b)
	}
	return fwd, inv
}
