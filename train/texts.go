package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// LoadTexts reads the texts of a JSONL evaluation file; see ReadTexts.
func LoadTexts(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadTexts(f, path)
}

// ReadTexts reads JSON Lines named name (used in errors) of one {"text": ...} object per line, other fields
// ignored, for MeanLoss, which scores each text on its own. Lines are read as ReadStream reads JSONL: blank lines are
// skipped, and a line longer than MaxRecordBytes, or a record that is not an object with a string "text", is a
// *DataError naming the line.
func ReadTexts(r io.Reader, name string) ([]string, error) {
	var texts []string
	err := readJSONL(r, name, func(rec []byte) error {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(rec, &obj); err != nil {
			return fmt.Errorf("expected a JSON object: %w", err)
		}
		raw, ok := obj["text"]
		if !ok {
			return &fieldError{`"text"`, errors.New("missing")}
		}
		var s *string // nil for null
		if err := json.Unmarshal(raw, &s); err != nil || s == nil {
			return &fieldError{`"text"`, errors.New("expected a string")}
		}
		texts = append(texts, *s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(texts) == 0 {
		return nil, fmt.Errorf("%s: no records", name)
	}
	return texts, nil
}
