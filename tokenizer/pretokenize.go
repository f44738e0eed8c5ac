package tokenizer

import (
	"fmt"
	"regexp"
)

// BPE pre-tokenization: llama.cpp splits the text into words with a list of regexes chosen by tokenizer.ggml.pre
// (llm_tokenizer_bpe's constructor), applied one after the other, each to every piece the previous ones left
// (unicode_regex_split). A regex keeps both its matches and the text between them as pieces. Go's regexp has no
// lookahead, so the patterns that need it (\s+(?!\S)) are hand-written scanners, as llama.cpp itself does for speed
// (unicode_regex_split_custom_gpt2, _llama3); the others run through regexp with llama.cpp's semantics.

// preStep splits each piece of text, given as lengths in code points, into smaller pieces.
type preStep interface {
	split(text []cpt, pieces []int) []int
}

// preTokenizer describes how llama.cpp treats one tokenizer.ggml.pre value.
type preTokenizer struct {
	names        []string
	steps        []preStep
	ignoreMerges bool // a word that is itself a token is not merged (llama 3)
	addBOS       bool // the vocabulary's default for add_bos
	keepSpaces   bool // clean_spaces off: decoding keeps " ," and friends
}

// Regexes over llama.cpp's "collapsed" text (see collapse): \p{N}, \p{L} and \p{P} become classes of the category's
// stand-in code point plus its ASCII members, and \s is std::regex's ASCII set, which includes \v (the stand-in for
// every other white space) where Go's \s does not.
const (
	reNumber      = `[\x{D1}0-9]`
	reLetter      = `[\x{D2}A-Za-z]`
	rePunctClass  = `\x{D3}!-#%-*,-/:-;?-@\[-\]_{}`
	reSpace       = `[\t\n\v\f\r ]`
	reCJK         = `[\x{4E00}-\x{9FA5}\x{0800}-\x{4E00}\x{AC00}-\x{D7FF}]+` // [一-龥ࠀ-一가-퟿]+
	reThreeDigits = `[0-9][0-9][0-9]`
)

var preTokenizers = []preTokenizer{
	{names: []string{"default", ""}, steps: []preStep{
		collapsedRe(`[` + rePunctClass + `$+<=>^~|]+`), gpt2Split{}, collapsedRe(reNumber + `+`), rawRe(reThreeDigits)}},
	{names: []string{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
		"jina-v5-nano"}, steps: []preStep{llama3Split{digits: 3}}, ignoreMerges: true, addBOS: true},
	{names: []string{"dbrx", "smaug-bpe"}, steps: []preStep{llama3Split{digits: 3}}},
	{names: []string{"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open", "grok-2"},
		steps: []preStep{llama3Split{digits: 1}}, keepSpaces: true},
	{names: []string{"stablelm2", "megrez"}, steps: []preStep{llama3Split{digits: 1}}},
	{names: []string{"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
		"mellum", "modern-bert", "mpt", "olmo", "jais", "exaone4", "jina-v1-en", "jina-v2-code", "roberta-bpe"},
		steps: []preStep{gpt2Split{}}},
	{names: []string{"trillion", "granite-docling"}, steps: []preStep{gpt2Split{}}, keepSpaces: true},
	{names: []string{"starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2"},
		steps: []preStep{collapsedRe(reNumber), gpt2Split{}}},
	{names: []string{"smollm", "command-r"}, steps: []preStep{collapsedRe(reNumber), gpt2Split{}}, keepSpaces: true},
	{names: []string{"falcon"}, steps: []preStep{
		collapsedRe(`[` + rePunctClass + "$+<=>^~|`]+"), gpt2Split{}, rawRe(reThreeDigits)}},
	{names: []string{"deepseek-coder"}, steps: []preStep{
		rawRe(`[\r\n]`), collapsedRe(reSpace + `?` + reLetter + `+`), collapsedRe(reSpace + `?[` + rePunctClass + `]+`),
		rawRe(reCJK), collapsedRe(reNumber)}, keepSpaces: true},
}

// setPre selects the pre-tokenizer and the flags that come with it (llama_vocab::impl::load).
func (t *Tokenizer) setPre(name string) error {
	for i := range preTokenizers {
		p := &preTokenizers[i]
		for _, n := range p.names {
			if n == name {
				t.pre, t.split = name, p.steps
				t.ignoreMerges, t.addBOS, t.cleanSpaces = p.ignoreMerges, p.addBOS, !p.keepSpaces
				return nil
			}
		}
	}
	return fmt.Errorf("%w: BPE pre-tokenizer %q (tokenizer.ggml.pre)", ErrUnsupported, name)
}

// preTokenize splits text into words and writes each in GPT-2's byte alphabet (unicode_regex_split followed by
// unicode_byte_encoding_process).
func (t *Tokenizer) preTokenize(text string) []string {
	cpts := decodeCpts(text)
	if len(cpts) == 0 {
		return nil
	}
	pieces := []int{len(cpts)}
	for _, s := range t.split {
		pieces = s.split(cpts, pieces)
	}
	words := make([]string, 0, len(pieces))
	var raw, enc []byte
	start := 0
	for _, n := range pieces {
		raw = raw[:0]
		for _, c := range cpts[start : start+n] {
			raw = appendCpt(raw, c.r)
		}
		enc = enc[:0]
		for _, b := range raw {
			enc = appendCpt(enc, byteRunes[b])
		}
		words = append(words, string(enc))
		start += n
	}
	return words
}

// scanner walks one piece [ini, end) of the text the way llama.cpp's custom splitters do: positions outside the
// piece read as no code point with no flags.
type scanner struct {
	text     []cpt
	ini, end int
	prev     int
	out      []int
}

func (s *scanner) r(p int) rune {
	if p >= s.ini && p < s.end {
		return s.text[p].r
	}
	return -1
}

func (s *scanner) f(p int) cptFlags {
	if p >= s.ini && p < s.end {
		return s.text[p].flags
	}
	return 0
}

func (s *scanner) space(p int) bool { return p >= s.ini && p < s.end && s.text[p].space }

// word ends the current word at end and returns its length.
func (s *scanner) word(end int) int {
	n := end - s.prev
	if n > 0 {
		s.out = append(s.out, n)
	}
	s.prev = end
	return n
}

// otherThan reports a code point that is none of white space, letter and number ([^\s\p{L}\p{N}]); out of the
// piece is never one.
func (s *scanner) otherThan(p int) bool {
	return s.f(p) != 0 && !s.space(p) && s.f(p)&(flagLetter|flagNumber) == 0
}

// contraction matches 's, 't, 'm, 'd, 're, 've, 'll at p, ignoring case if fold; it returns the length or 0.
func (s *scanner) contraction(p int, fold bool) int {
	if s.r(p) != '\'' || p+1 >= s.end {
		return 0
	}
	lower := func(r rune) rune {
		if fold && r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}
	switch lower(s.r(p + 1)) {
	case 's', 't', 'm', 'd':
		return 2
	}
	if p+2 < s.end {
		switch a, b := lower(s.r(p+1)), lower(s.r(p+2)); {
		case a == 'r' && b == 'e', a == 'v' && b == 'e', a == 'l' && b == 'l':
			return 3
		}
	}
	return 0
}

// spaces counts white space from p and notes where the last \r or \n of that run ends (0 if none).
func (s *scanner) spaces(p int) (n, lastNewline int) {
	for s.space(p + n) {
		if r := s.r(p + n); r == '\r' || r == '\n' {
			lastNewline = p + n + 1
		}
		n++
	}
	return n, lastNewline
}

// gpt2Split is GPT-2's 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (unicode_regex_split_custom_gpt2).
type gpt2Split struct{}

func (gpt2Split) split(text []cpt, pieces []int) []int {
	s := &scanner{text: text}
	start := 0
	for _, n := range pieces {
		s.ini, s.end, s.prev = start, start+n, start
		start += n
		for pos := s.ini; pos < s.end; {
			if k := s.contraction(pos, false); k > 0 {
				pos += s.word(pos + k)
				continue
			}
			lead := 0 // an optional leading space
			if s.r(pos) == ' ' {
				lead = 1
			}
			switch f := s.f(pos + lead); {
			case f&flagLetter != 0:
				pos += lead
				for s.f(pos)&flagLetter != 0 {
					pos++
				}
				s.word(pos)
				continue
			case f&flagNumber != 0:
				pos += lead
				for s.f(pos)&flagNumber != 0 {
					pos++
				}
				s.word(pos)
				continue
			case s.otherThan(pos + lead):
				pos += lead
				for s.otherThan(pos) {
					pos++
				}
				s.word(pos)
				continue
			}
			ws, _ := s.spaces(pos)
			switch {
			case ws > 1 && s.r(pos+ws) >= 0: // \s+(?!\S): leave the last space to the word that follows
				pos += ws - 1
			case ws > 0:
				pos += ws
			default:
				pos++
			}
			s.word(pos)
		}
	}
	return s.out
}

// llama3Split is Llama 3's (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
// \s*[\r\n]+|\s+(?!\S)|\s+ (unicode_regex_split_custom_llama3); with digits 1 it is Qwen 2's pattern, \p{N} alone.
type llama3Split struct{ digits int }

func (l llama3Split) split(text []cpt, pieces []int) []int {
	s := &scanner{text: text}
	start := 0
	for _, n := range pieces {
		s.ini, s.end, s.prev = start, start+n, start
		start += n
		for pos := s.ini; pos < s.end; {
			r, f := s.r(pos), s.f(pos)
			if k := s.contraction(pos, true); k > 0 {
				pos += s.word(pos + k)
				continue
			}
			if r != '\r' && r != '\n' && f&flagNumber == 0 && (f&flagLetter != 0 || s.f(pos+1)&flagLetter != 0) {
				pos++
				for s.f(pos)&flagLetter != 0 {
					pos++
				}
				s.word(pos)
				continue
			}
			if f&flagNumber != 0 {
				ini := pos
				for s.f(pos)&flagNumber != 0 {
					pos++
					if pos-ini >= l.digits {
						s.word(pos)
						ini = pos
					}
				}
				s.word(pos)
				continue
			}
			lead := 0
			if r == ' ' {
				lead = 1
			}
			// llama.cpp tests the flags of pos itself here, which are never empty inside the piece.
			if g := s.f(pos + lead); !(s.space(pos+lead) || g&(flagLetter|flagNumber) != 0) {
				pos += lead
				for s.otherThan(pos) {
					pos++
				}
				for c := s.r(pos); c == '\r' || c == '\n'; c = s.r(pos) {
					pos++
				}
				s.word(pos)
				continue
			}
			ws, nl := s.spaces(pos)
			switch {
			case nl > 0: // \s*[\r\n]+
				pos = nl
			case ws > 1 && s.r(pos+ws) >= 0:
				pos += ws - 1
			case ws > 0:
				pos += ws
			default:
				pos++
			}
			s.word(pos)
		}
	}
	return s.out
}

// regexSplit runs a lookahead-free pattern with std::regex's leftmost-first semantics, which Go's regexp shares.
// collapsed patterns see unicode_regex_split's collapsed text, in which every code point above U+007F is replaced by
// a stand-in for its category (so \p{..} classes work on bytes); raw patterns see the code points themselves with
// non-ASCII white space turned into \v, as llama.cpp's std::wregex path does.
type regexSplit struct {
	re        *regexp.Regexp
	collapsed bool
}

func collapsedRe(pattern string) regexSplit { return regexSplit{regexp.MustCompile(pattern), true} }
func rawRe(pattern string) regexSplit       { return regexSplit{regexp.MustCompile(pattern), false} }

// collapse is the stand-in of one code point.
func collapse(c cpt) rune {
	switch {
	case c.r < 0x80:
		return c.r
	case c.space:
		return '\v'
	}
	switch c.flags {
	case flagNumber:
		return 0xD1
	case flagLetter:
		return 0xD2
	case flagPunct:
		return 0xD3
	case flagAccent:
		return 0xD4
	case flagSymbol:
		return 0xD5
	}
	return 0xD0
}

func (x regexSplit) split(text []cpt, pieces []int) []int {
	var out []int
	var buf []byte
	var at []int // code point index (within the piece) of every byte of buf, plus the end
	start := 0
	for _, n := range pieces {
		buf, at = buf[:0], at[:0]
		for i, c := range text[start : start+n] {
			r := c.r
			switch {
			case x.collapsed:
				r = collapse(c)
			case r > 0x7F && c.space:
				r = '\v'
			}
			before := len(buf)
			buf = appendCpt(buf, r)
			for range len(buf) - before {
				at = append(at, i)
			}
		}
		at = append(at, n)
		done := 0
		for _, m := range x.re.FindAllIndex(buf, -1) {
			lo, hi := at[m[0]], at[m[1]]
			if lo > done {
				out = append(out, lo-done)
			}
			if hi > lo {
				out = append(out, hi-lo)
			}
			done = hi
		}
		if done < n {
			out = append(out, n-done)
		}
		start += n
	}
	return out
}
