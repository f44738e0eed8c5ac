package modelfile

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/tensor"
)

// Report is what `lathe inspect` prints; its JSON form is a stable schema (docs/inspect.md). Fields are only ever
// added, never renamed or removed.
type Report struct {
	Path          string            `json:"path"`
	Format        Format            `json:"format"`
	Files         []string          `json:"files"`
	FileBytes     int64             `json:"file_bytes"`
	HeaderBytes   int64             `json:"header_bytes"`
	TensorCount   int               `json:"tensor_count"`
	Parameters    int64             `json:"parameters"`
	TensorBytes   int64             `json:"tensor_bytes"`
	BitsPerWeight float64           `json:"bits_per_weight"`
	DTypes        []DTypeSummary    `json:"dtypes"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	GGUF          *GGUFSummary      `json:"gguf,omitempty"`
	Tensors       []TensorReport    `json:"tensors"`
}

// DTypeSummary totals the tensors of one type.
type DTypeSummary struct {
	DType      string `json:"dtype"`
	Tensors    int    `json:"tensors"`
	Parameters int64  `json:"parameters"`
	Bytes      int64  `json:"bytes"`
}

// TensorReport describes one tensor; Stats is present when asked for.
type TensorReport struct {
	Name       string        `json:"name"`
	DType      string        `json:"dtype"`
	Shape      []int64       `json:"shape"`
	Parameters int64         `json:"parameters"`
	Bytes      int64         `json:"bytes"`
	File       string        `json:"file"`
	Offset     int64         `json:"offset"`
	Stats      *tensor.Stats `json:"stats,omitempty"`
}

// GGUFSummary is the GGUF-specific part of a report.
type GGUFSummary struct {
	Version      uint32     `json:"version"`
	Alignment    int64      `json:"alignment"`
	Architecture string     `json:"architecture,omitempty"`
	Name         string     `json:"name,omitempty"`
	FileType     string     `json:"file_type,omitempty"`
	Tokenizer    *Tokenizer `json:"tokenizer,omitempty"`
	KV           []KVReport `json:"kv"`
}

// Tokenizer summarises the tokenizer.ggml.* keys.
type Tokenizer struct {
	Model      string `json:"model,omitempty"`
	Pre        string `json:"pre,omitempty"`
	Tokens     int    `json:"tokens"`
	Merges     int    `json:"merges,omitempty"`
	BOS        *int64 `json:"bos_token_id,omitempty"`
	EOS        *int64 `json:"eos_token_id,omitempty"`
	HasScores  bool   `json:"scores"`
	HasTypes   bool   `json:"token_types"`
	AddBOS     *bool  `json:"add_bos_token,omitempty"`
	AddEOS     *bool  `json:"add_eos_token,omitempty"`
	HasChatTpl bool   `json:"chat_template"`
}

// KVReport is one metadata entry. Value holds the scalar, or the array when it is short or Full was asked for;
// Len is the element count of arrays.
type KVReport struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Len   *int   `json:"len,omitempty"`
	Value any    `json:"value,omitempty"`
	Text  string `json:"text"` // the value as printed in the human table (arrays abbreviated)
}

// ReportOptions selects the optional, more expensive parts of a report.
type ReportOptions struct {
	Stats    bool // one pass over every tensor's data
	Full     bool // every element of long metadata arrays
	Progress func(done, total int)
}

// shortArray is the longest array reported in full without Full.
const shortArray = 16

// Report summarises the model; without Stats it reads only headers.
func (m *Model) Report(opts ReportOptions) (*Report, error) {
	r := &Report{Path: m.Path, Format: m.Format, Files: m.Files, FileBytes: m.FileBytes, HeaderBytes: m.HeaderBytes,
		TensorCount: len(m.Tensors), Tensors: make([]TensorReport, 0, len(m.Tensors))}
	byType := map[tensor.DType]*DTypeSummary{}
	for i, t := range m.Tensors {
		n, _ := t.Shape.Elements()
		r.Parameters += n
		r.TensorBytes += t.Size
		s := byType[t.DType]
		if s == nil {
			s = &DTypeSummary{DType: t.DType.String()}
			byType[t.DType] = s
		}
		s.Tensors++
		s.Parameters += n
		s.Bytes += t.Size
		tr := TensorReport{Name: t.Name, DType: t.DType.String(), Shape: append([]int64{}, t.Shape...), Parameters: n,
			Bytes: t.Size, File: t.File, Offset: t.Offset}
		if opts.Stats {
			st, err := m.Stats(t.Name)
			if err != nil {
				return nil, err
			}
			tr.Stats = &st
		}
		r.Tensors = append(r.Tensors, tr)
		if opts.Progress != nil {
			opts.Progress(i+1, len(m.Tensors))
		}
	}
	if r.Parameters > 0 {
		r.BitsPerWeight = float64(8*r.TensorBytes) / float64(r.Parameters)
	}
	for _, s := range byType {
		r.DTypes = append(r.DTypes, *s)
	}
	slices.SortFunc(r.DTypes, func(a, b DTypeSummary) int {
		return cmp.Or(cmp.Compare(b.Bytes, a.Bytes), cmp.Compare(a.DType, b.DType))
	})
	if m.Safetensors != nil {
		r.Metadata = m.Safetensors.Metadata()
	}
	if m.GGUF != nil {
		r.GGUF = ggufSummary(m.GGUF, opts.Full)
	}
	return r, nil
}

// Stats computes the value statistics of one tensor; quantized tensors are decoded block by block.
func (m *Model) Stats(name string) (tensor.Stats, error) {
	v, err := m.View(name)
	if err != nil {
		return tensor.Stats{}, err
	}
	decode, err := decoder(v.DType)
	if err != nil {
		return tensor.Stats{}, fmt.Errorf("tensor %q: %w", name, err)
	}
	return tensor.ComputeStats(v, decode)
}

func ggufSummary(f *gguf.File, full bool) *GGUFSummary {
	md := f.Metadata
	g := &GGUFSummary{Version: f.Version, Alignment: f.Alignment}
	g.Architecture, _ = md.String("general.architecture")
	g.Name, _ = md.String("general.name")
	if ft, err := md.FileType(); err == nil {
		g.FileType = ft.String()
	}
	if tokens, err := md.Array("tokenizer.ggml.tokens"); err == nil {
		tok := &Tokenizer{Tokens: tokens.Len()}
		tok.Model, _ = md.String("tokenizer.ggml.model")
		tok.Pre, _ = md.String("tokenizer.ggml.pre")
		if merges, err := md.Array("tokenizer.ggml.merges"); err == nil {
			tok.Merges = merges.Len()
		}
		if id, err := md.Int("tokenizer.ggml.bos_token_id"); err == nil {
			tok.BOS = &id
		}
		if id, err := md.Int("tokenizer.ggml.eos_token_id"); err == nil {
			tok.EOS = &id
		}
		if b, err := md.Bool("tokenizer.ggml.add_bos_token"); err == nil {
			tok.AddBOS = &b
		}
		if b, err := md.Bool("tokenizer.ggml.add_eos_token"); err == nil {
			tok.AddEOS = &b
		}
		_, tok.HasScores = md.Get("tokenizer.ggml.scores")
		_, tok.HasTypes = md.Get("tokenizer.ggml.token_type")
		_, tok.HasChatTpl = md.Get("tokenizer.chat_template")
		g.Tokenizer = tok
	}
	for _, kv := range md.KVs() {
		k := KVReport{Key: kv.Key, Type: kv.Value.Type().String(), Text: kv.Value.String()}
		if kv.Value.IsArray() {
			k.Type = "[]" + kv.Value.ElemType().String()
			n := kv.Value.Len()
			k.Len = &n
			if full || n <= shortArray {
				k.Value = kv.Value.Any()
			}
		} else {
			k.Value = kv.Value.Any()
		}
		g.KV = append(g.KV, k)
	}
	return g
}
