package train

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
	"github.com/lathe-ml/lathe/tokenizer"
)

// tinyTokenizer is tiny-llama-a's vocabulary: SentencePiece BPE with BOS, add_space_prefix and byte fallback.
func tinyTokenizer(t testing.TB) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.Open(testshared.Path(t, "models", "tiny-llama-a", "gguf", "tiny-llama-a-f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func jsonString(t *testing.T, obj []byte, key string, dst *string) bool {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(obj, &m); err != nil {
		t.Fatal(err)
	}
	s, ok := m[key].(string)
	*dst = s
	return ok
}

func jsonQuote(t *testing.T, s string) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLoadStreamText checks that plain text gives exactly the tokens lathe train has always trained on: the whole
// file encoded with the vocabulary's BOS, every token scored.
func TestLoadStreamText(t *testing.T) {
	tok := tinyTokenizer(t)
	for _, c := range []struct {
		file   string
		format string
	}{
		{"tinystories_head_197k.txt", ""}, {"tinystories_sample_cs336.txt", "auto"}, {"tinystories_sample_cs336.txt", "text"},
	} {
		path := testshared.Path(t, "data", "datasets", c.file)
		text, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		s, st, err := LoadStream(path, tok, DataOptions{Format: c.format})
		if err != nil {
			t.Fatal(err)
		}
		want := tok.Encode(string(text), tokenizer.AddSpecial)
		if !slices.Equal(s.Tokens, want) || s.Scored != nil {
			t.Errorf("%s: %d tokens (scored %v), want the %d of Encode(AddSpecial), all scored", c.file,
				len(s.Tokens), s.Scored != nil, len(want))
		}
		if st != (DataStats{Format: "text", Samples: 1, Tokens: len(want), Scored: len(want)}) {
			t.Errorf("%s: stats %+v", c.file, st)
		}
	}
}

// runs splits a sample into maximal runs of equally scored tokens and decodes each.
func runs(tok *tokenizer.Tokenizer, ids []int32, scored []bool) (texts []string, flags []bool) {
	for i := 0; i < len(ids); {
		j := i
		for j < len(ids) && scored[j] == scored[i] {
			j++
		}
		texts, flags = append(texts, tok.Decode(ids[i:j])), append(flags, scored[i])
		i = j
	}
	return texts, flags
}

// TestLoadStreamMasks checks, record kind by record kind, which token positions are scored: a sample is
// BOS + prompt tokens + scored tokens + EOS, with the pieces tokenized apart so that no token straddles the boundary.
func TestLoadStreamMasks(t *testing.T) {
	tok := tinyTokenizer(t)
	bos, eos := tok.BOS(), tok.EOS()
	alpacaIn := "Below is an instruction that describes a task, paired with an input that provides further context. " +
		"Write a response that appropriately completes the request.\n\n### Instruction:\nAdd.\n\n### Input:\n" +
		"2 and 3\n\n### Response:"
	alpacaNoIn := "Below is an instruction that describes a task. Write a response that appropriately completes " +
		"the request.\n\n### Instruction:\nSay hi.\n\n### Response:"
	cases := []struct {
		record         string
		prompt, scored string // the texts of the two pieces; the completion's leading space is the "▁" prefix
	}{
		{`{"text": "Once upon a time"}`, "", "Once upon a time"},
		{`{"prompt": "Q: capital of France?\nA:", "completion": " Paris."}`, "Q: capital of France?\nA:", "Paris."},
		{`{"instruction": "Add.", "input": "2 and 3", "output": "5", "id": 7}`, alpacaIn, "5"},
		{`{"instruction": "Say hi.", "input": "", "output": "hi"}`, alpacaNoIn, "hi"},
		{`{"instruction": "Say hi.", "output": "hi"}`, alpacaNoIn, "hi"},
	}
	var all bytes.Buffer
	var wantTokens []int32
	var wantScored []bool
	for _, c := range cases {
		s, st, err := ReadStream(strings.NewReader(c.record), "one.jsonl", tok, DataOptions{})
		if err != nil {
			t.Fatalf("%s: %v", c.record, err)
		}
		want := []int32{bos}
		if c.prompt != "" {
			want = append(want, tok.Encode(c.prompt, 0)...)
		}
		k := len(want)
		want = append(append(want, tok.Encode(c.scored, 0)...), eos)
		var mask []bool
		if c.prompt == "" {
			mask = nil // a text record: BOS is the only unscored token
			for i := range want {
				mask = append(mask, i > 0)
			}
		} else {
			for i := range want {
				mask = append(mask, i >= k)
			}
		}
		if !slices.Equal(s.Tokens, want) || !slices.Equal(s.Scored, mask) {
			t.Errorf("%s:\n tokens %v scored %v\n want   %v scored %v", c.record, s.Tokens, s.Scored, want, mask)
		}
		texts, _ := runs(tok, s.Tokens[1:len(s.Tokens)-1], s.Scored[1:len(s.Scored)-1])
		wantTexts := []string{c.prompt, c.scored}
		if c.prompt == "" {
			wantTexts = wantTexts[1:]
		}
		if !slices.Equal(texts, wantTexts) {
			t.Errorf("%s: pieces %q, want %q", c.record, texts, wantTexts)
		}
		if st.Samples != 1 || st.Tokens != len(want) || st.Scored != len(want)-k {
			t.Errorf("%s: stats %+v", c.record, st)
		}
		all.WriteString(c.record + "\n\n")
		wantTokens, wantScored = append(wantTokens, s.Tokens...), append(wantScored, s.Scored...)
	}
	// The file is the samples concatenated in order; blank lines are skipped.
	s, st, err := ReadStream(bytes.NewReader(all.Bytes()), "all.jsonl", tok, DataOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Tokens, wantTokens) || !slices.Equal(s.Scored, wantScored) || st.Samples != len(cases) {
		t.Errorf("whole file: %d tokens, %d samples; want the %d tokens of the records one by one",
			len(s.Tokens), st.Samples, len(wantTokens))
	}
	// TrainOnPrompt scores everything, so Scored is nil; the tokens do not change.
	s, _, err = ReadStream(bytes.NewReader(all.Bytes()), "all.jsonl", tok, DataOptions{TrainOnPrompt: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Tokens, wantTokens) || s.Scored != nil {
		t.Errorf("TrainOnPrompt: %d tokens, scored %v; want the same tokens, all scored", len(s.Tokens), s.Scored != nil)
	}
}

// TestLoadStreamChat renders a chat record with ChatML and Llama 2 on tiny-llama-a's vocabulary (which has no
// ChatML control tokens, so the markup is spelled out in ordinary tokens) and checks the scored runs.
func TestLoadStreamChat(t *testing.T) {
	tok := tinyTokenizer(t)
	rec := `{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},` +
		` {"role": "assistant", "content": "Hi there"}, {"role": "user", "content": "Bye"},` +
		` {"role": "assistant", "content": "Ciao"}]}`
	for _, c := range []struct {
		template string
		texts    []string
		flags    []bool
	}{
		{"chatml", []string{"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n" +
			"<|im_start|>assistant\n", "Hi there<|im_end|>\n", "<|im_start|>user\nBye<|im_end|>\n" +
			"<|im_start|>assistant\n", "Ciao<|im_end|>\n"},
			[]bool{false, true, false, true}},
		// Llama 2's BOS (unscored) and EOS (scored) are tokens of the template, which Decode drops.
		// Decode keeps the space prefix of the text after BOS.
		{"llama2", []string{" [INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHello [/INST]", "Hi there ",
			" [INST] Bye [/INST]", "Ciao "}, []bool{false, true, false, true}},
	} {
		s, st, err := ReadStream(strings.NewReader(rec), "chat.jsonl", tok, DataOptions{ChatTemplate: c.template})
		if err != nil {
			t.Fatal(err)
		}
		if st.Template != c.template || st.Samples != 1 {
			t.Errorf("%s: stats %+v", c.template, st)
		}
		texts, flags := runs(tok, s.Tokens, s.Scored)
		if c.template == "llama2" {
			if s.Tokens[0] != tok.BOS() || s.Tokens[len(s.Tokens)-1] != tok.EOS() || !s.Scored[len(s.Scored)-1] {
				t.Errorf("llama2: want BOS first and a scored EOS last: %v %v", s.Tokens, s.Scored)
			}
		}
		if !slices.Equal(texts, c.texts) || !slices.Equal(flags, c.flags) {
			t.Errorf("%s: runs %q %v\nwant %q %v", c.template, texts, flags, c.texts, c.flags)
		}
	}
}

// TestLoadStreamPhi3 renders a chat with the Phi-3 template found in llama.cpp's Phi-3 vocabulary, whose markup
// tokens are control tokens: each must become one token, and the scored runs are the replies with <|end|>.
func TestLoadStreamPhi3(t *testing.T) {
	_, jinja := sharedTemplates(t)
	tok, err := tokenizer.Open(testshared.Path(t, "data", "gguf", "llama.cpp-vocab", "ggml-vocab-phi-3.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	rec := `{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},` +
		` {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Ciao"}]}`
	s, st, err := ReadStream(strings.NewReader(rec), "chat.jsonl", tok, DataOptions{ChatTemplate: jinja})
	if err != nil {
		t.Fatal(err)
	}
	if st.Template != "phi3" {
		t.Fatalf("template %q, want phi3", st.Template)
	}
	id := func(text string) int32 {
		v, ok := tok.ID(text)
		if !ok {
			t.Fatalf("the Phi-3 vocabulary has no %s", text)
		}
		return v
	}
	user, asst, end := id("<|user|>"), id("<|assistant|>"), id("<|end|>")
	// Phi-3's markup tokens swallow the line breaks after them (llama.cpp gives them the rstrip attribute), and the
	// line break after a reply's <|end|> is in the reply's piece, so the stream is exactly
	// BOS <|user|> "Hi" <|end|> <|assistant|> | "Hello!" <|end|> | <|user|> "Bye" <|end|> <|assistant|> | "Ciao" <|end|>.
	var special []int32
	var scored []int32
	for i, v := range s.Tokens {
		if v == user || v == asst || v == end || v == tok.BOS() {
			special = append(special, v)
		}
		if s.Scored[i] {
			scored = append(scored, v)
		}
	}
	if want := []int32{tok.BOS(), user, end, asst, end, user, end, asst, end}; !slices.Equal(special, want) {
		t.Errorf("control tokens %v, want %v", special, want)
	}
	texts, flags := runs(tok, s.Tokens, s.Scored)
	if !slices.Equal(texts, []string{" Hi", "Hello!", " Bye", "Ciao"}) ||
		!slices.Equal(flags, []bool{false, true, false, true}) || scored[len(scored)-1] != end {
		t.Errorf("runs %q %v: want the replies and their <|end|> scored", texts, flags)
	}
	if n := len(s.Tokens); n != 16 || !slices.Equal(s.Tokens, tok.Encode("<s>"+
		"<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\nBye<|end|>\n<|assistant|>\nCiao<|end|>\n",
		tokenizer.ParseSpecial)) {
		t.Errorf("%d tokens %v: want those of the whole rendering", n, s.Tokens)
	}
}

// TestLoadStreamAlpaca loads LLaMA-Factory's alpaca_en_demo.json (a JSON array of 999 Stanford Alpaca records) and
// checks every sample against the record it came from, and that the same records as JSONL give the same stream.
func TestLoadStreamAlpaca(t *testing.T) {
	tok := tinyTokenizer(t)
	path := testshared.Path(t, "data", "datasets", "llama-factory", "alpaca_en_demo.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var recs []struct{ Instruction, Input, Output string }
	if err := json.Unmarshal(raw, &recs); err != nil {
		t.Fatal(err)
	}
	s, st, err := LoadStream(path, tok, DataOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Format != "json" || st.Samples != len(recs) || len(recs) != 999 {
		t.Fatalf("stats %+v for %d records", st, len(recs))
	}
	t.Logf("%s: %d samples, %d tokens, %d scored", filepath.Base(path), st.Samples, st.Tokens, st.Scored)
	pos := 0
	for i, r := range recs {
		end := pos + 1 + slices.Index(s.Tokens[pos+1:], tok.EOS())
		if s.Tokens[pos] != tok.BOS() || end <= pos {
			t.Fatalf("record %d: sample at token %d does not start with BOS and end with EOS", i, pos)
		}
		texts, flags := runs(tok, s.Tokens[pos+1:end], s.Scored[pos+1:end])
		if !slices.Equal(texts, []string{alpacaPrompt(r.Instruction, r.Input), r.Output}) ||
			!slices.Equal(flags, []bool{false, true}) || s.Scored[pos] || !s.Scored[end] {
			t.Fatalf("record %d: runs %.80q %v", i, texts, flags)
		}
		pos = end + 1
	}
	if pos != len(s.Tokens) {
		t.Errorf("%d tokens after the last record", len(s.Tokens)-pos)
	}
	var jsonl bytes.Buffer
	for _, r := range recs {
		b, _ := json.Marshal(map[string]string{"instruction": r.Instruction, "input": r.Input, "output": r.Output})
		jsonl.Write(append(b, '\n'))
	}
	s2, _, err := LoadStream(writeTemp(t, "alpaca.jsonl", jsonl.String()), tok, DataOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Tokens, s2.Tokens) || !slices.Equal(s.Scored, s2.Scored) {
		t.Error("the records as JSONL give a different stream from the JSON array")
	}
}

// TestLoadStreamC4 loads 300 {"text"} records: each is BOS + text + EOS with only BOS unscored.
func TestLoadStreamC4(t *testing.T) {
	tok := tinyTokenizer(t)
	path := testshared.Path(t, "data", "datasets", "llama-factory", "c4_demo.jsonl")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want []int32
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var r struct{ Text string }
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		want = append(append(append(want, tok.BOS()), tok.Encode(r.Text, 0)...), tok.EOS())
	}
	s, st, err := LoadStream(path, tok, DataOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Tokens, want) || st.Samples != 300 {
		t.Fatalf("%d tokens in %d samples, want %d in 300", len(s.Tokens), st.Samples, len(want))
	}
	for i, id := range s.Tokens {
		if s.Scored[i] != (id != tok.BOS()) {
			t.Fatalf("token %d (%d): scored %v", i, id, s.Scored[i])
		}
	}
}

func TestLoadStreamErrors(t *testing.T) {
	tok := tinyTokenizer(t)
	ok := `{"text": "fine"}` + "\n"
	chat := func(msgs string) string { return `{"messages": [` + msgs + `]}` }
	u, a := `{"role": "user", "content": "hi"}`, `{"role": "assistant", "content": "yo"}`
	cases := []struct {
		name, data string
		opts       DataOptions
		want       string
	}{
		{"train.jsonl", ok + ok + chat(u+","+a+`,{"role": "bot", "content": "x"}`), DataOptions{ChatTemplate: "chatml"},
			`train.jsonl:3: field "messages"[2].role: expected one of system, user, assistant`},
		{"train.jsonl", chat(u + `,{"role": "assistant"}`), DataOptions{ChatTemplate: "chatml"},
			`train.jsonl:1: field "messages"[1].content: missing`},
		{"train.jsonl", chat(`{"role": "user", "content": 5}`), DataOptions{ChatTemplate: "chatml"},
			`train.jsonl:1: field "messages"[0].content: expected a string`},
		{"train.jsonl", `{"messages": []}`, DataOptions{ChatTemplate: "chatml"},
			`train.jsonl:1: field "messages": expected at least one message`},
		{"train.jsonl", `{"messages": "hi"}`, DataOptions{ChatTemplate: "chatml"},
			`train.jsonl:1: field "messages": expected a list of {"role", "content"} objects`},
		{"train.jsonl", ok + chat(u+","+a), DataOptions{},
			"train.jsonl:2: chat records need a chat template and the model has none; name one of: chatml, gemma"},
		{"train.jsonl", chat(u + "," + a), DataOptions{ChatTemplate: jinjaQwen},
			"train.jsonl:1: the model's chat template is not one lathe renders (known: chatml, gemma, llama2, " +
				"llama3, phi3, zephyr)"},
		{"train.jsonl", chat(u + "," + u), DataOptions{ChatTemplate: jinjaLlama2},
			`train.jsonl:1: field "messages": llama2 template: message 1 is "user": roles must alternate`},
		{"train.jsonl", chat(u), DataOptions{ChatTemplate: "chatml"},
			"train.jsonl: 1 records but no scored tokens"},
		{"train.jsonl", `{"prompt": "a", "completion": 3}`, DataOptions{},
			`train.jsonl:1: field "completion": expected a string`},
		{"train.jsonl", `{"prompt": "a"}`, DataOptions{}, `train.jsonl:1: field "completion": missing`},
		{"train.jsonl", `{"input": "a", "output": "b"}`, DataOptions{}, `train.jsonl:1: field "instruction": missing`},
		{"train.jsonl", `{"txt": "a"}`, DataOptions{}, `train.jsonl:1: expected a field "text", "prompt" and`},
		{"train.jsonl", ok + `{"text": "a"`, DataOptions{}, "train.jsonl:2: expected a JSON object: unexpected end"},
		{"train.jsonl", ok + `["text"]`, DataOptions{}, "train.jsonl:2: expected a JSON object"},
		{"train.jsonl", "\n  \n", DataOptions{}, "train.jsonl: no records"},
		{"train.jsonl", "", DataOptions{}, "train.jsonl: no records"},
		{"train.txt", " \n", DataOptions{}, "train.txt: no text to train on"},
		{"train.json", `[{"text": "a"}, {"text": 1}]`, DataOptions{},
			`train.json: record 1 at byte 16: field "text": expected a string`},
		{"train.json", `[{"text": "a"}, 3]`, DataOptions{}, `train.json: record 1 at byte 16: expected a JSON object`},
		{"train.json", `[{"text": "a"}`, DataOptions{}, `train.json: byte 14: end of the array`},
		{"train.json", `[{"text": "a"}] x`, DataOptions{}, `train.json: byte 16: data after the JSON array`},
		{"train.json", `{"text": "a"} x`, DataOptions{}, `train.json:1: expected a JSON object: invalid character 'x'`},
		{"train.json", `{"text": "a"}`, DataOptions{Format: "json"}, `train.json: byte 0: expected a JSON array`},
		{"train.txt", "a", DataOptions{Format: "csv"}, `train.txt: data format "csv": expected auto, text, jsonl or json`},
	}
	for _, c := range cases {
		_, _, err := ReadStream(strings.NewReader(c.data), c.name, tok, c.opts)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%.60q: error\n %v\nwant prefix\n %s", c.data, err, c.want)
		}
	}
	var de *DataError
	_, _, err := ReadStream(strings.NewReader(ok+`{"text": 1}`), "x.jsonl", tok, DataOptions{})
	if !errors.As(err, &de) || de.Line != 2 || de.Field != `"text"` {
		t.Errorf("want a *DataError at line 2, field \"text\"; got %#v", err)
	}
}

// TestLoadStreamLongRecord feeds a line and an array element longer than MaxRecordBytes.
func TestLoadStreamLongRecord(t *testing.T) {
	tok := tinyTokenizer(t)
	long := func(prefix string) io.Reader {
		return io.MultiReader(strings.NewReader(prefix), io.LimitReader(repeatByte('a'), MaxRecordBytes+2*recordChunk),
			strings.NewReader(`"}`))
	}
	for _, c := range []struct {
		name string
		r    io.Reader
		want string
	}{
		{"long.jsonl", long(`{"text": "`), "long.jsonl:1: line longer than 16777216 bytes (MaxRecordBytes)"},
		{"long.json", long(`[{"text": "`), "long.json: record 0 at byte 1: record longer than 16777216 bytes"},
	} {
		_, _, err := ReadStream(c.r, c.name, tok, DataOptions{})
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %s", c.name, err, c.want)
		}
	}
}

type repeatByte byte

func (r repeatByte) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

func FuzzLoadStream(f *testing.F) {
	tok := tinyTokenizer(f)
	for _, s := range []string{
		`{"text": "Once upon a time"}`,
		`{"prompt": "Q?", "completion": " A."}` + "\n" + `{"instruction": "Add.", "input": "2 3", "output": "5"}`,
		`{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}`,
		`[{"instruction": "Say hi.", "output": "hi"}]`,
		`{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "<|im_start|>"}]}`,
		"\xef\xbb\xbf{\"text\": \"\\u00e9\"}\n\n",
	} {
		for format := range uint8(4) {
			f.Add([]byte(s), format, uint8(0), false)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, format, template uint8, onPrompt bool) {
		names := ChatTemplateNames()
		opts := DataOptions{Format: []string{"auto", "text", "jsonl", "json"}[format%4],
			ChatTemplate: names[int(template)%len(names)], TrainOnPrompt: onPrompt}
		s, st, err := ReadStream(bytes.NewReader(data), "fuzz.json", tok, opts)
		if err != nil {
			return
		}
		if s.Scored != nil && len(s.Scored) != len(s.Tokens) {
			t.Fatalf("%d scored flags for %d tokens", len(s.Scored), len(s.Tokens))
		}
		n := 0
		for i, id := range s.Tokens {
			if id < 0 || int(id) >= tok.Size() {
				t.Fatalf("token %d is %d, outside the vocabulary", i, id)
			}
			if s.Scored == nil || s.Scored[i] {
				n++
			}
		}
		if n == 0 || n != st.Scored || st.Tokens != len(s.Tokens) || st.Samples == 0 {
			t.Fatalf("stats %+v for %d tokens, %d scored", st, len(s.Tokens), n)
		}
	})
}

// BenchmarkLoadStream loads alpaca_en_demo.json; tokenizing dominates.
func BenchmarkLoadStream(b *testing.B) {
	tok := tinyTokenizer(b)
	path := testshared.Path(b, "data", "datasets", "llama-factory", "alpaca_en_demo.json")
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(st.Size())
	for b.Loop() {
		if _, _, err := LoadStream(path, tok, DataOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
