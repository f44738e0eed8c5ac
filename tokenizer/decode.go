package tokenizer

import (
	"fmt"
	"strconv"
	"strings"
)

// Piece returns the text of one token as llama_token_to_piece renders it without special tokens: control and
// unknown tokens are empty, SentencePiece's "▁" is a space, <0xXX> pieces are their byte, and byte-level BPE tokens
// are mapped back from GPT-2's byte alphabet. Pieces can be partial UTF-8; concatenate them before display.
func (t *Tokenizer) Piece(id int32) string { return t.piece(id, false) }

func (t *Tokenizer) piece(id int32, special bool) string {
	if id < 0 || int(id) >= len(t.tokens) {
		return ""
	}
	a, text := t.attrs[id], t.tokens[id]
	switch {
	case a&(attrUnknown|attrControl) != 0 && !special:
		return ""
	case a&(attrUnknown|attrControl|attrUserDefined) != 0:
		return text
	case a&attrNormal != 0:
		if t.escapeSpaces {
			return strings.ReplaceAll(text, "\u2581", " ")
		}
		return decodeBytes(text)
	case a&attrByte != 0:
		if len(text) >= 5 {
			if b, err := strconv.ParseUint(text[3:5], 16, 8); err == nil {
				return string([]byte{byte(b)})
			}
		}
	}
	return ""
}

// decodeBytes maps a byte-level BPE token back to bytes (llama_decode_text); a character outside GPT-2's byte
// alphabet is written as llama.cpp writes it, "[UNK_BYTE_0x<hex>" followed by the token and "]".
func decodeBytes(text string) string {
	var b []byte
	for i := 0; i < len(text); {
		r, n := cptFromUTF8(text, i)
		i += n
		if c, ok := runeBytes[r]; ok {
			b = append(b, c)
			continue
		}
		b = append(b, "[UNK_BYTE_0x"...)
		for _, c := range appendCpt(nil, r) {
			b = fmt.Appendf(b, "%02x", c)
		}
		b = append(b, text...)
		b = append(b, ']')
	}
	return string(b)
}

// Decode turns token ids back into text (llama_detokenize without removing or rendering special tokens): pieces
// are concatenated, the space SentencePiece prefixes to the text is dropped from the first piece, and vocabularies
// with clean_up_tokenization_spaces drop the spaces their tokenizer puts before punctuation and contractions.
// A BOS at the start keeps the space on the next piece, as in llama.cpp.
func (t *Tokenizer) Decode(ids []int32) string {
	var b []byte
	removeSpace := t.addSpacePrefix
	for _, id := range ids {
		p := t.piece(id, false)
		if removeSpace {
			p = strings.TrimPrefix(p, " ")
		}
		removeSpace = false
		b = append(b, p...)
	}
	if t.cleanSpaces {
		b = cleanSpaces(b)
	}
	return string(b)
}

// cleanSpaces is the three in-place passes of llama_vocab::impl::detokenize, kept in that form because each pass
// reads characters the pass itself has already moved or blanked.
func cleanSpaces(text []byte) []byte {
	// Pass 1: " ?", " !", " ." and " ," lose the space.
	total1 := len(text)
	total := min(total1, 1)
	for i := 1; i < total1; i++ {
		x := text[i]
		if text[i-1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',') {
			total--
		}
		text[total] = x
		total++
	}
	// Pass 2: a lone apostrophe between spaces loses both spaces.
	total2 := total
	total = min(total2, 1)
	for i := 1; i < total2; i++ {
		x := text[i]
		if x == '\'' && i+1 < total2 && text[i-1] == ' ' && text[i+1] == ' ' {
			total--
			i++
			text[i] = 0
		}
		text[total] = x
		total++
	}
	// Pass 3: " 's", " 'm", " 're" and " 've" lose the space (" 't", " 'd" and " 'll" keep it, as upstream).
	total3 := total
	total = min(total3, 1)
	for i := 1; i < total3; i++ {
		x := text[i]
		if text[i-1] == ' ' && x == '\'' && i+1 < total3 {
			switch x1 := text[i+1]; {
			case x1 == 's' || x1 == 'm':
				total--
			case x1 == 't' || x1 == 'd':
			case i+2 < total3:
				if x2 := text[i+2]; (x1 == 'r' || x1 == 'v') && x2 == 'e' {
					total--
				}
			}
		}
		text[total] = x
		total++
	}
	return text[:total]
}
