package tokenizer

import (
	"container/heap"
	"slices"
	"strings"
)

// fragment is a piece of the input: raw text, or a special token already found in it (id >= 0).
type fragment struct {
	text string
	id   int32
}

// Encode returns the token ids of text (llama_vocab::impl::tokenize). With AddSpecial, BOS and EOS are added as the
// vocabulary's add_bos/add_eos say; with ParseSpecial, control tokens written in the text become those tokens.
func (t *Tokenizer) Encode(text string, flags Flag) []int32 {
	var out []int32
	var frags []fragment
	if text != "" {
		frags = t.partition([]fragment{{text: text, id: -1}}, flags&ParseSpecial != 0)
	}
	addSpecial := flags&AddSpecial != 0
	switch t.kind {
	case SPM:
		prevSpecial := true // a space prefix goes on the first text and on text that follows a special token
		if addSpecial && t.addBOS {
			out = append(out, t.bos)
		}
		for _, f := range frags {
			if f.id >= 0 {
				out = append(out, f.id)
				prevSpecial = true
				continue
			}
			s := f.text
			if t.addSpacePrefix && prevSpecial {
				s = " " + s
			}
			out = t.spm(strings.ReplaceAll(s, " ", "\u2581"), out)
			prevSpecial = false
		}
	case BPE:
		if addSpecial && t.addBOS {
			out = append(out, t.bos)
		}
		for _, f := range frags {
			if f.id >= 0 {
				out = append(out, f.id)
				continue
			}
			s := f.text
			if t.escapeSpaces {
				s = strings.ReplaceAll(s, " ", "\u2581")
			}
			out = t.bpe(s, out)
		}
	}
	if addSpecial && t.addEOS {
		out = append(out, t.eos)
	}
	return out
}

// partition splits out the special tokens written in the text, longest first (tokenizer_st_partition). Without
// parseSpecial only user-defined tokens are looked for. A token with the lstrip (rstrip) attribute also swallows the
// ASCII white space before (after) it.
func (t *Tokenizer) partition(frags []fragment, parseSpecial bool) []fragment {
	for _, id := range t.specials {
		a := t.attrs[id]
		if !parseSpecial && a&(attrControl|attrUnknown) != 0 {
			continue
		}
		tok := t.tokens[id]
		if !slices.ContainsFunc(frags, func(f fragment) bool { return f.id < 0 && strings.Contains(f.text, tok) }) {
			continue // most texts hold none of a vocabulary's hundreds of special tokens: no copy of frags
		}
		var next []fragment
		for _, f := range frags {
			if f.id >= 0 {
				next = append(next, f)
				continue
			}
			rest := f.text
			for {
				i := strings.Index(rest, tok)
				if i < 0 {
					if rest != "" {
						next = append(next, fragment{text: rest, id: -1})
					}
					break
				}
				left := rest[:i]
				if a&attrLStrip != 0 {
					left = strings.TrimRight(left, cSpaces)
				}
				if left != "" {
					next = append(next, fragment{text: left, id: -1})
				}
				next = append(next, fragment{id: id})
				rest = rest[i+len(tok):]
				if a&attrRStrip != 0 {
					rest = strings.TrimLeft(rest, cSpaces)
				}
			}
		}
		frags = next
	}
	return frags
}

// cSpaces is what C's isspace accepts in the "C" locale, which the special-token splitter uses for stripping.
const cSpaces = " \t\n\v\f\r"

// symbol is a run of the text being merged; merged-away symbols have n == 0.
type symbol struct {
	prev, next int
	start, n   int
}

// splitChars makes one symbol per UTF-8 character of s (a truncated final sequence is a short symbol).
func splitChars(s string, syms []symbol) []symbol {
	syms = syms[:0]
	for off := 0; off < len(s); {
		n := min(utf8Len(s[off]), len(s)-off)
		syms = append(syms, symbol{prev: len(syms) - 1, next: len(syms) + 1, start: off, n: n})
		off += n
	}
	if len(syms) > 0 {
		syms[len(syms)-1].next = -1
	}
	return syms
}

// bigram is a candidate merge of two adjacent symbols. SentencePiece ranks candidates by the merged piece's score
// (highest first), BPE by merge rank (lowest first, kept as -rank in score, exact in a float64); ties go to the
// leftmost.
type bigram struct {
	left, right int
	score       float64
	size        int
}

type bigramQueue []bigram

func (q bigramQueue) Len() int { return len(q) }
func (q bigramQueue) Less(i, j int) bool {
	return q[i].score > q[j].score || (q[i].score == q[j].score && q[i].left < q[j].left)
}
func (q bigramQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *bigramQueue) Push(x any)   { *q = append(*q, x.(bigram)) }
func (q *bigramQueue) Pop() any {
	old := *q
	b := old[len(old)-1]
	*q = old[:len(old)-1]
	return b
}

// spm tokenizes one escaped fragment (llm_tokenizer_spm_session): repeatedly merge the adjacent pair whose
// concatenation is the best-scoring piece, then emit the symbols, splitting any that is not a piece back along the
// merges that made it, down to bytes.
func (t *Tokenizer) spm(text string, out []int32) []int32 {
	syms := splitChars(text, nil)
	var q bigramQueue
	revMerge := map[string][2]int{}
	add := func(l, r int) {
		if l < 0 || r < 0 {
			return
		}
		s := text[syms[l].start : syms[l].start+syms[l].n+syms[r].n]
		id, ok := t.ids[s]
		if !ok {
			return
		}
		heap.Push(&q, bigram{left: l, right: r, score: float64(t.scores[id]), size: len(s)})
		revMerge[s] = [2]int{l, r}
	}
	for i := 1; i < len(syms); i++ {
		add(i-1, i)
	}
	for q.Len() > 0 {
		b := heap.Pop(&q).(bigram)
		l, r := &syms[b.left], &syms[b.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size {
			continue // stale: one side has changed since the candidate was queued
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = b.left
		}
		add(l.prev, b.left)
		add(b.left, l.next)
	}
	var resegment func(i int)
	resegment = func(i int) {
		s := text[syms[i].start : syms[i].start+syms[i].n]
		if id, ok := t.ids[s]; ok {
			out = append(out, id)
			return
		}
		p, ok := revMerge[s]
		if !ok {
			for j := 0; j < len(s); j++ {
				if id := t.byteToken(s[j]); id >= 0 {
					out = append(out, id)
				}
			}
			return
		}
		resegment(p[0])
		resegment(p[1])
	}
	for i := 0; len(syms) > 0 && i != -1; i = syms[i].next {
		resegment(i)
	}
	return out
}

// byteToken is SentencePiece's byte fallback (llama_vocab::byte_to_token): the <0xXX> piece, else the byte itself
// as a piece, else (where llama.cpp would throw) the unknown token, or -1 to drop the byte.
func (t *Tokenizer) byteToken(b byte) int32 {
	const hex = "0123456789ABCDEF"
	if id, ok := t.ids[string([]byte{'<', '0', 'x', hex[b>>4], hex[b&15], '>'})]; ok {
		return id
	}
	if id, ok := t.ids[string([]byte{b})]; ok {
		return id
	}
	return t.unk
}

// bpe tokenizes one fragment (llm_tokenizer_bpe_session): pre-tokenize into words, merge each word's characters by
// rank, and emit the symbols; a symbol that is not a token falls back to its single bytes where those are tokens.
func (t *Tokenizer) bpe(text string, out []int32) []int32 {
	var syms []symbol
	var q bigramQueue
	for _, word := range t.preTokenize(text) {
		if t.ignoreMerges {
			if id, ok := t.ids[word]; ok {
				out = append(out, id)
				continue
			}
		}
		syms = splitChars(word, syms)
		q = q[:0]
		add := func(l, r int) {
			if l < 0 || r < 0 {
				return
			}
			a := word[syms[l].start : syms[l].start+syms[l].n]
			b := word[syms[r].start : syms[r].start+syms[r].n]
			rank, ok := t.ranks[pair{a, b}]
			if !ok {
				return
			}
			heap.Push(&q, bigram{left: l, right: r, score: -float64(rank), size: len(a) + len(b)})
		}
		for i := 1; i < len(syms); i++ {
			add(i-1, i)
		}
		for q.Len() > 0 {
			b := heap.Pop(&q).(bigram)
			l, r := &syms[b.left], &syms[b.right]
			// Symbols only grow to the right, so matching sizes mean the same text as when queued.
			if l.n == 0 || r.n == 0 || l.n+r.n != b.size || l.start+l.n != r.start {
				continue
			}
			l.n += r.n
			r.n = 0
			l.next = r.next
			if r.next >= 0 {
				syms[r.next].prev = b.left
			}
			add(l.prev, b.left)
			add(b.left, l.next)
		}
		for i := 0; len(syms) > 0 && i != -1; i = syms[i].next {
			s := word[syms[i].start : syms[i].start+syms[i].n]
			if id, ok := t.ids[s]; ok {
				out = append(out, id)
				continue
			}
			for j := 0; j < len(s); j++ {
				if id, ok := t.ids[s[j:j+1]]; ok {
					out = append(out, id)
				}
			}
		}
	}
	return out
}
