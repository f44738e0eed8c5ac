package train

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/lathe-ml/lathe/tokenizer"
)

// MaxRecordBytes bounds one JSONL line (or one element of a JSON array): the loader never holds more than one record
// of text at a time, and a longer record is an error rather than an allocation the file dictates.
const MaxRecordBytes = 16 << 20

// DataOptions says how LoadStream reads training data.
type DataOptions struct {
	// Format is "auto" (or ""), "text", "jsonl" or "json". Auto takes .jsonl as JSONL, .json as a JSON array when
	// its first character is '[' and as JSONL otherwise, and anything else as plain text.
	Format string
	// ChatTemplate renders "messages" records: a model's Jinja template (Model.ChatTemplate), recognised by its
	// content, or the name of a known template (ChatTemplateNames), which takes precedence over the model's.
	ChatTemplate string
	// TrainOnPrompt scores every token, prompts and other turns included.
	TrainOnPrompt bool
}

// DataStats describes a loaded stream.
type DataStats struct {
	Format   string // "text", "jsonl" or "json"
	Template string // name of the chat template used, if any record was a chat
	Samples  int    // records (1 for plain text)
	Tokens   int
	Scored   int // tokens whose prediction counts toward the loss
}

// DataError is a bad record: the file, the JSONL line (or the index and byte offset of a JSON array element), the
// field at fault and what was expected.
type DataError struct {
	File   string
	Line   int   // 1-based JSONL line; 0 in a JSON array
	Record int   // 0-based element of a JSON array; -1 for faults of the array itself
	Offset int64 // byte offset in a JSON array
	Field  string
	Err    error
}

func (e *DataError) Error() string {
	where := fmt.Sprintf("%s:%d", e.File, e.Line)
	switch {
	case e.Line > 0:
	case e.Record >= 0:
		where = fmt.Sprintf("%s: record %d at byte %d", e.File, e.Record, e.Offset)
	default:
		where = fmt.Sprintf("%s: byte %d", e.File, e.Offset)
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: field %s: %v", where, e.Field, e.Err)
	}
	return fmt.Sprintf("%s: %v", where, e.Err)
}

func (e *DataError) Unwrap() error { return e.Err }

// LoadStream reads a training file into a Stream; see ReadStream.
func LoadStream(path string, tok *tokenizer.Tokenizer, opts DataOptions) (*Stream, DataStats, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, DataStats{}, err
	}
	defer f.Close()
	return ReadStream(f, path, tok, opts)
}

// ReadStream reads training data named name (used in errors and, with Format auto, for its extension).
//
// Plain text is tokenized whole with the vocabulary's BOS/EOS (tokenizer.AddSpecial) and every token is scored.
// JSONL (or a JSON array) holds one sample per record: {"text"}, {"prompt","completion"}, Alpaca's
// {"instruction","input","output"} or a chat {"messages":[{"role","content"}...]}. A sample is BOS (when the
// vocabulary adds one) + its text + EOS, except chats, which are exactly what the chat template renders (the
// templates write their own BOS and end-of-turn tokens). Samples are concatenated in file order; the BOS a sample
// starts with is not scored, nor is a prompt unless opts.TrainOnPrompt. Scored is nil when every token is scored.
// Starts holds where each record's sample begins; plain text is one sample (Starts nil), tokenized whole, since
// cutting it into documents would change the tokens concatenated training sees (documents that should not attend to
// each other go in JSONL {"text"} records).
func ReadStream(r io.Reader, name string, tok *tokenizer.Tokenizer, opts DataOptions) (*Stream, DataStats, error) {
	br := bufio.NewReader(r)
	format, err := dataFormat(br, name, opts.Format)
	if err != nil {
		return nil, DataStats{}, err
	}
	st := DataStats{Format: format}
	if format == "text" {
		text, err := io.ReadAll(br)
		if err != nil {
			return nil, st, fmt.Errorf("%s: %w", name, err)
		}
		if len(bytes.TrimSpace(text)) == 0 {
			return nil, st, fmt.Errorf("%s: no text to train on", name)
		}
		s := &Stream{Tokens: tok.Encode(string(text), tokenizer.AddSpecial)}
		st.Samples, st.Tokens, st.Scored = 1, len(s.Tokens), len(s.Tokens)
		return s, st, nil
	}
	b := &sampleBuilder{tok: tok, opts: opts, spacePrefix: addsSpacePrefix(tok)}
	if format == "json" {
		err = readJSONArray(br, name, b.record)
	} else {
		err = readJSONL(br, name, b.record)
	}
	if err != nil {
		return nil, st, err
	}
	b.flush()
	if b.samples == 0 {
		return nil, st, fmt.Errorf("%s: no records", name)
	}
	if b.nScored == 0 {
		return nil, st, fmt.Errorf("%s: %d records but no scored tokens (every record is prompt only)", name,
			b.samples)
	}
	s := &Stream{Tokens: b.tokens, Scored: b.scored, Starts: b.starts}
	if b.nScored == len(b.tokens) {
		s.Scored = nil
	}
	st.Samples, st.Tokens, st.Scored = b.samples, len(b.tokens), b.nScored
	if b.template != nil {
		st.Template = b.template.name
	}
	return s, st, nil
}

// dataFormat resolves Format auto from the name's extension and, for .json, the first non-space byte.
func dataFormat(br *bufio.Reader, name, format string) (string, error) {
	switch format {
	case "text", "jsonl", "json":
		return format, nil
	case "", "auto":
	default:
		return "", fmt.Errorf("%s: data format %q: expected auto, text, jsonl or json", name, format)
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".jsonl":
		return "jsonl", nil
	case ".json":
		p, err := br.Peek(br.Size())
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
			return "", fmt.Errorf("%s: %w", name, err)
		}
		if p = bytes.TrimLeft(p, " \t\r\n"); len(p) > 0 && p[0] == '[' {
			return "json", nil
		}
		return "jsonl", nil
	}
	return "text", nil
}

// readJSONL streams lines of at most MaxRecordBytes to record; blank lines are skipped.
func readJSONL(r io.Reader, name string, record func([]byte) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxRecordBytes)
	line := 0
	for sc.Scan() {
		line++
		rec := sc.Bytes()
		if line == 1 {
			rec = bytes.TrimPrefix(rec, []byte("\xef\xbb\xbf")) // a UTF-8 byte order mark some editors write
		}
		if len(bytes.TrimSpace(rec)) == 0 {
			continue
		}
		if err := record(rec); err != nil {
			return withPlace(err, &DataError{File: name, Line: line})
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("line longer than %d bytes (MaxRecordBytes)", MaxRecordBytes)
		}
		return &DataError{File: name, Line: line + 1, Err: err}
	}
	return nil
}

// readJSONArray streams the elements of a JSON array to record one at a time.
func readJSONArray(r io.Reader, name string, record func([]byte) error) error {
	lr := &recordLimit{r: r}
	dec := json.NewDecoder(lr)
	if t, err := dec.Token(); err != nil || t != json.Delim('[') {
		return &DataError{File: name, Record: -1, Err: errors.New("expected a JSON array of records")}
	}
	for i := 0; dec.More(); i++ {
		lr.mark = dec.InputOffset()
		var rec json.RawMessage
		if err := dec.Decode(&rec); err != nil {
			return &DataError{File: name, Record: i, Offset: lr.mark, Err: err}
		}
		if err := record(rec); err != nil {
			return withPlace(err, &DataError{File: name, Record: i, Offset: dec.InputOffset() - int64(len(rec))})
		}
	}
	if _, err := dec.Token(); err != nil {
		return &DataError{File: name, Record: -1, Offset: dec.InputOffset(),
			Err: fmt.Errorf("end of the array: %w", err)}
	}
	if _, err := dec.Token(); err != io.EOF {
		return &DataError{File: name, Record: -1, Offset: dec.InputOffset(), Err: errors.New("data after the JSON array")}
	}
	return nil
}

// recordLimit fails a read that would take the decoder more than MaxRecordBytes past the start of the record it is
// decoding, so one huge element cannot make it buffer the whole file. Reads are capped at recordChunk so that the
// decoder's read-ahead stays small next to the limit.
type recordLimit struct {
	r       io.Reader
	n, mark int64
}

const recordChunk = 64 << 10

func (l *recordLimit) Read(p []byte) (int, error) {
	if l.n-l.mark > MaxRecordBytes+recordChunk {
		return 0, fmt.Errorf("record longer than %d bytes (MaxRecordBytes)", MaxRecordBytes)
	}
	n, err := l.r.Read(p[:min(len(p), recordChunk)])
	l.n += int64(n)
	return n, err
}

// fieldError is a record's fault, placed in the file by withPlace.
type fieldError struct {
	field string
	err   error
}

func (e *fieldError) Error() string { return e.field + ": " + e.err.Error() }

func withPlace(err error, place *DataError) error {
	var fe *fieldError
	if errors.As(err, &fe) {
		place.Field, place.Err = fe.field, fe.err
	} else {
		place.Err = err
	}
	return place
}

// sampleBuilder parses records in file order and tokenizes them in batches on all cores, appending the samples to
// one stream in file order.
type sampleBuilder struct {
	tok         *tokenizer.Tokenizer
	opts        DataOptions
	spacePrefix bool
	template    *chatTemplate

	batch      []pending
	batchBytes int

	tokens  []int32
	scored  []bool
	starts  []int
	nScored int
	samples int
}

// pending is a parsed record waiting for its batch to be tokenized.
type pending struct {
	segs   []segment
	chat   bool
	ids    []int32
	scored []bool
}

// A batch is tokenized when it holds batchRecords records or batchBytes bytes of text, which bounds the text held
// besides the stream while keeping each worker busy for many records.
const (
	batchRecords = 256
	batchBytes   = 4 << 20
)

// record parses one JSON object and queues its sample.
func (b *sampleBuilder) record(rec []byte) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(rec, &obj); err != nil {
		return fmt.Errorf("expected a JSON object: %w", err)
	}
	str := func(key string, optional bool) (string, error) {
		raw, ok := obj[key]
		if !ok {
			if optional {
				return "", nil
			}
			return "", &fieldError{fmt.Sprintf("%q", key), errors.New("missing")}
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", &fieldError{fmt.Sprintf("%q", key), errors.New("expected a string")}
		}
		return s, nil
	}
	_, isChat := obj["messages"]
	_, isAlpaca := obj["instruction"]
	_, hasOutput := obj["output"]
	_, isPrompt := obj["prompt"]
	_, hasCompletion := obj["completion"]
	var segs []segment
	chat := false
	switch {
	case isChat:
		msgs, err := parseMessages(obj["messages"])
		if err != nil {
			return err
		}
		if b.template == nil {
			if b.template, err = findChatTemplate(b.opts.ChatTemplate); err != nil {
				return err
			}
		}
		if segs, err = b.template.render(msgs, b.tok.BOS(), b.tok.EOS()); err != nil {
			return &fieldError{`"messages"`, fmt.Errorf("%s template: %w", b.template.name, err)}
		}
		chat = true
	case isAlpaca || hasOutput:
		ins, err := str("instruction", false)
		if err != nil {
			return err
		}
		in, err := str("input", true)
		if err != nil {
			return err
		}
		out, err := str("output", false)
		if err != nil {
			return err
		}
		segs = []segment{prompt(alpacaPrompt(ins, in)), reply(out)}
	case isPrompt || hasCompletion:
		p, err := str("prompt", false)
		if err != nil {
			return err
		}
		c, err := str("completion", false)
		if err != nil {
			return err
		}
		segs = []segment{prompt(p), reply(c)}
	default:
		if _, ok := obj["text"]; !ok {
			return errors.New(`expected a field "text", "prompt" and "completion", "instruction" and "output", ` +
				`or "messages"`)
		}
		t, err := str("text", false)
		if err != nil {
			return err
		}
		segs = []segment{reply(t)}
	}
	b.batch = append(b.batch, pending{segs: segs, chat: chat})
	if b.batchBytes += len(rec); len(b.batch) >= batchRecords || b.batchBytes >= batchBytes {
		b.flush()
	}
	return nil
}

// flush tokenizes the queued samples in parallel and appends them in order.
func (b *sampleBuilder) flush() {
	parallel(len(b.batch), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			p := &b.batch[i]
			p.ids, p.scored = b.encode(p.segs, p.chat)
		}
	})
	for _, p := range b.batch {
		b.starts = append(b.starts, len(b.tokens))
		b.tokens = append(b.tokens, p.ids...)
		b.scored = append(b.scored, p.scored...)
		for _, s := range p.scored {
			if s {
				b.nScored++
			}
		}
	}
	b.samples += len(b.batch)
	b.batch, b.batchBytes = b.batch[:0], 0
}

// parseMessages checks a chat's messages: a non-empty list of {"role","content"} with known roles.
func parseMessages(raw json.RawMessage) ([]message, error) {
	var list []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, &fieldError{`"messages"`, errors.New(`expected a list of {"role", "content"} objects`)}
	}
	if len(list) == 0 {
		return nil, &fieldError{`"messages"`, errors.New("expected at least one message")}
	}
	msgs := make([]message, len(list))
	for i, m := range list {
		for _, key := range []string{"role", "content"} {
			var s string
			field := fmt.Sprintf(`"messages"[%d].%s`, i, key)
			if raw, ok := m[key]; !ok {
				return nil, &fieldError{field, errors.New("missing")}
			} else if err := json.Unmarshal(raw, &s); err != nil {
				return nil, &fieldError{field, errors.New("expected a string")}
			}
			if key == "role" {
				if s != "system" && s != "user" && s != "assistant" {
					return nil, &fieldError{field, errors.New("expected one of system, user, assistant")}
				}
				msgs[i].role = s
			} else {
				msgs[i].content = s
			}
		}
	}
	return msgs, nil
}

// alpacaPrompt is Stanford Alpaca's PROMPT_DICT (tatsu-lab/stanford_alpaca, train.py): prompt_input when the input
// is not empty, prompt_no_input otherwise. The output follows "### Response:" directly, as in its training targets.
func alpacaPrompt(instruction, input string) string {
	if input == "" {
		return "Below is an instruction that describes a task. Write a response that appropriately completes the " +
			"request.\n\n### Instruction:\n" + instruction + "\n\n### Response:"
	}
	return "Below is an instruction that describes a task, paired with an input that provides further context. " +
		"Write a response that appropriately completes the request.\n\n### Instruction:\n" + instruction +
		"\n\n### Input:\n" + input + "\n\n### Response:"
}

// encode tokenizes a sample piece by piece, so that each token is wholly prompt or wholly scored. Neighbouring
// pieces of the same kind are joined first, so a piece boundary falls only where scoring changes. Non-chat samples
// get BOS (never scored: it is predicted from the previous sample's end, nothing about this one) and EOS (scored
// with the text before it, so that the model learns to stop). Chat templates write control tokens as text
// ("<|im_start|>"), so their text is tokenized with ParseSpecial, as llama.cpp and transformers tokenize a
// rendered chat.
func (b *sampleBuilder) encode(segs []segment, chat bool) (ids []int32, scored []bool) {
	flags := tokenizer.Flag(0)
	if chat {
		flags = tokenizer.ParseSpecial
	} else {
		if b.tok.AddsBOS() {
			segs = append([]segment{{id: b.tok.BOS()}}, segs...)
		}
		segs = append(segs, segment{id: b.tok.EOS(), scored: segs[len(segs)-1].scored})
	}
	midText := false
	emit := func(piece []int32, s bool) {
		ids = append(ids, piece...)
		for range piece {
			scored = append(scored, s || b.opts.TrainOnPrompt)
		}
	}
	for i := 0; i < len(segs); {
		if segs[i].id >= 0 {
			emit([]int32{segs[i].id}, segs[i].scored)
			i++
			continue
		}
		var text strings.Builder
		j := i
		for ; j < len(segs) && segs[j].id < 0 && segs[j].scored == segs[i].scored; j++ {
			text.WriteString(segs[j].text)
		}
		piece := text.String()
		if b.spacePrefix && midText {
			// A SentencePiece vocabulary with add_space_prefix puts "▁" before every text it encodes. Mid-sample
			// that space is already in the text when the piece starts with one (" Paris" after "[/INST]"), so
			// one is dropped to encode it as it would be inside the whole string.
			piece = strings.TrimPrefix(piece, " ")
		}
		if piece != "" {
			emit(b.tok.Encode(piece, flags), segs[i].scored)
			midText = true
		}
		i = j
	}
	return ids, scored
}

// addsSpacePrefix reports whether Encode puts a space before the text (SentencePiece add_space_prefix): the
// tokenizer does not export the flag, so it is read from the first token of a one-letter text.
func addsSpacePrefix(tok *tokenizer.Tokenizer) bool {
	ids := tok.Encode("a", 0)
	return len(ids) > 0 && strings.HasPrefix(tok.Token(ids[0]), "\u2581")
}
