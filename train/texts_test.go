package train

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/internal/testshared"
)

// TestReadTexts reads LLaMA-Factory's c4_demo.jsonl: its 300 lines give 300 texts, each the "text" field as
// encoding/json decodes it into a struct; malformed files are refused with the line and the field.
func TestReadTexts(t *testing.T) {
	path := testshared.Path(t, "data", "datasets", "llama-factory", "c4_demo.jsonl")
	texts, err := LoadTexts(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(texts) != 300 || len(lines) != 300 {
		t.Fatalf("%d texts from %d lines, want 300", len(texts), len(lines))
	}
	for i, line := range lines {
		var rec struct{ Text string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if texts[i] != rec.Text {
			t.Fatalf("text %d differs from line %d's \"text\"", i, i+1)
		}
	}

	long := `{"text": "` + strings.Repeat("a", MaxRecordBytes) + `"}`
	for _, c := range []struct{ in, want string }{
		{"\xef\xbb\xbf{\"text\": \"a\"}\n\n  \n{\"text\": \"\", \"id\": 3}\n", ""},
		{`{"txt": "x"}`, `d.jsonl:1: field "text": missing`},
		{"{\"text\": \"a\"}\n\n{\"text\": 3}", `d.jsonl:3: field "text": expected a string`},
		{`{"text": null}`, `d.jsonl:1: field "text": expected a string`},
		{`["text"]`, "d.jsonl:1: expected a JSON object"},
		{`{"text": "a"`, "d.jsonl:1: expected a JSON object"},
		{"{\"text\": \"a\"}\n" + long, "d.jsonl:2: line longer than"},
		{"\n \n", "d.jsonl: no records"},
	} {
		texts, err := ReadTexts(strings.NewReader(c.in), "d.jsonl")
		switch {
		case c.want == "" && (err != nil || len(texts) != 2 || texts[0] != "a" || texts[1] != ""):
			t.Errorf("ReadTexts(%.40q) = %q, %v; want [a, \"\"]", c.in, texts, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("ReadTexts(%.40q): error %v, want %q", c.in, err, c.want)
		}
		var de *DataError
		if strings.HasPrefix(c.want, "d.jsonl:") && !strings.HasSuffix(c.want, "no records") && !errors.As(err, &de) {
			t.Errorf("ReadTexts(%.40q): error %v is not a *DataError", c.in, err)
		}
	}
}

// FuzzReadTexts: any bytes give an error or one text per non-blank line, and the texts written back as JSONL are
// read back unchanged.
func FuzzReadTexts(f *testing.F) {
	if dir, ok := testshared.Dir(); ok {
		if fh, err := os.Open(filepath.Join(dir, "data", "datasets", "llama-factory", "c4_demo.jsonl")); err == nil {
			sc := bufio.NewScanner(fh)
			sc.Buffer(nil, MaxRecordBytes)
			for i := 0; i < 2 && sc.Scan(); i++ {
				f.Add(bytes.Clone(sc.Bytes()))
			}
			fh.Close()
		}
	}
	for _, s := range []string{`{"text": "Once upon a time"}` + "\n\n" + `{"text": "The end.", "id": 1}`,
		"\xef\xbb\xbf{\"text\": \"\\u00e9\\ud800\"}\r\n", `{"text": null}`, `{"txt": "x"}`, `{"text": "a", "text": 1}`,
		"{\"text\": \"\xff\"}\n \t\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		texts, err := ReadTexts(bytes.NewReader(data), "f.jsonl")
		if err != nil {
			return
		}
		records := 0
		for i, line := range bytes.Split(data, []byte("\n")) {
			if i == 0 {
				line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf"))
			}
			if len(bytes.TrimSpace(line)) > 0 {
				records++
			}
		}
		if len(texts) != records {
			t.Fatalf("%d texts from %d non-blank lines", len(texts), records)
		}
		var again bytes.Buffer
		for _, s := range texts {
			b, err := json.Marshal(map[string]string{"text": s})
			if err != nil {
				t.Fatal(err)
			}
			again.Write(append(b, '\n'))
		}
		back, err := ReadTexts(&again, "again.jsonl")
		if err != nil || len(back) != len(texts) {
			t.Fatalf("the texts written back: %d texts, %v; want %d", len(back), err, len(texts))
		}
		for i := range back {
			if back[i] != texts[i] {
				t.Fatalf("text %d read back as %q, want %q", i, back[i], texts[i])
			}
		}
	})
}
