package convert

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/tensor"
)

// GGUFOptions tunes ToGGUF and PlanGGUF.
type GGUFOptions struct {
	// Type is the type of the 2-D weights: F32, F16, BF16 or Q8_0. tensor.Invalid means "auto", llama.cpp's rule:
	// the type of the first 2-D weight stored as BF16 or F16, else F16. 1-D tensors, norms and biases are always
	// F32, and Q8_0 falls back to F16 for rows that are not whole blocks.
	Type tensor.DType
	// Name is general.name; empty derives it from config.json's _name_or_path or the directory name, as llama.cpp
	// does (a directory "tiny-llama-a" gives "Tiny Llama A").
	Name string
	// Pre names the BPE pre-tokenizer (tokenizer.ggml.pre) when lathe does not recognise it.
	Pre string
	// Progress, if set, is called after each tensor with the number written and the total.
	Progress func(done, total int)
}

// ParseOutType reads a type name for GGUFOptions.Type or HFOptions.Type: "auto" (tensor.Invalid) or a type name.
func ParseOutType(s string) (tensor.DType, error) {
	if strings.EqualFold(s, "auto") {
		return tensor.Invalid, nil
	}
	return tensor.ParseDType(s)
}

// PlanEntry describes one tensor of the output: the dry run of a conversion.
type PlanEntry struct {
	Name   string       // in the output
	Source string       // in the input; empty for a tensor computed by the converter (rope_freqs.weight)
	Shape  tensor.Shape // row-major, outermost first
	From   tensor.DType // type in the input
	To     tensor.DType // type in the output
	// PermuteHeads is the number of heads whose rotary rows are reordered (q and k projections), 0 if none.
	PermuteHeads int64
}

// ggufFileTypes maps the output types ToGGUF can write to llama_ftype.
var ggufFileTypes = map[tensor.DType]gguf.FileType{tensor.F32: 0, tensor.F16: 1, tensor.BF16: 32, tensor.Q8_0: 7}

// ggufJob is a planned conversion: the metadata and the tensors in output order.
type ggufJob struct {
	md      *gguf.Metadata
	entries []PlanEntry
	extra   map[string][]byte // data of computed tensors
}

// PlanGGUF lists the tensors ToGGUF would write, in order, without converting anything.
func PlanGGUF(m *HFModel, opts GGUFOptions) ([]PlanEntry, error) {
	p, err := newLlamaParams(m.config())
	if err != nil {
		return nil, fmt.Errorf("convert: %s: %w", m.Dir, err)
	}
	entries, _, _, err := planTensors(m, p, opts.Type)
	return entries, err
}

// planTensors maps every weight to its GGUF name, order and type, and picks the file type.
func planTensors(m *HFModel, p *llamaParams, want tensor.DType) ([]PlanEntry, gguf.FileType, map[string][]byte, error) {
	// convert_hf_to_gguf.py reads the shards in file-name order and each shard's tensors in name order
	// (gguf-py SafetensorsLocal sorts them), after the tensors it generates.
	var sources []string
	for _, f := range m.Weights.Shards() {
		var names []string
		for _, t := range f.Tensors() {
			names = append(names, t.Name)
		}
		slices.Sort(names)
		sources = append(sources, names...)
	}
	if want == tensor.Invalid {
		// ModelBase.__init__ with LlamaFileType.GUESSED: the first 2-D tensor in BF16 or F16 decides, else F16.
		want = tensor.F16
		for _, name := range sources {
			if t, _ := m.Weights.Lookup(name); len(t.Shape) >= 2 && (t.DType == tensor.BF16 || t.DType == tensor.F16) {
				want = t.DType
				break
			}
		}
	}
	ftype, ok := ggufFileTypes[want]
	if !ok {
		return nil, 0, nil, fmt.Errorf("convert: output type %s is not supported; use f32, f16, bf16, q8_0 or auto", want)
	}
	var entries []PlanEntry
	extra := map[string][]byte{}
	if p.ropeLlama3 {
		freqs := p.llama3Freqs()
		data := make([]byte, 4*len(freqs))
		for i, f := range freqs {
			binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(f))
		}
		extra[ropeFreqsName] = data
		entries = append(entries, PlanEntry{Name: ropeFreqsName, Shape: tensor.Shape{int64(len(freqs))},
			From: tensor.F32, To: tensor.F32})
	}
	for _, src := range sources {
		if skippedHF(src) {
			continue
		}
		info, _ := m.Weights.Lookup(src)
		switch info.DType {
		case tensor.F32, tensor.F16, tensor.BF16, tensor.F64:
		default:
			return nil, 0, nil, fmt.Errorf("convert: tensor %q is %s; only floating-point checkpoints (F32, F16, BF16, "+
				"F64) can be converted", src, info.DType)
		}
		name, err := hfToGGUF(src, p.blocks)
		if err != nil {
			return nil, 0, nil, fmt.Errorf("convert: %w", err)
		}
		e := PlanEntry{Name: name, Source: src, Shape: info.Shape, From: info.DType,
			To: tensorType(name, info.Shape, want), PermuteHeads: permuteHeads(name, p.heads, p.headsKV)}
		if e.PermuteHeads > 0 {
			if len(e.Shape) == 0 || e.Shape[0]%(2*e.PermuteHeads) != 0 {
				return nil, 0, nil, fmt.Errorf("convert: tensor %q has shape %v; its %d heads need an even number of "+
					"rows each", src, e.Shape, e.PermuteHeads)
			}
		}
		entries = append(entries, e)
	}
	return entries, ftype, extra, nil
}

// tensorType is the output type of one tensor (ModelBase.prepare_tensors): 1-D tensors, norms and anything that is
// not a .weight stay F32; Q8_0 falls back to F16 for rows that are not whole blocks (gguf-py raises QuantError).
func tensorType(name string, shape tensor.Shape, want tensor.DType) tensor.DType {
	if len(shape) <= 1 || strings.HasSuffix(name, "_norm.weight") || !strings.HasSuffix(name, ".weight") {
		return tensor.F32
	}
	if want.IsQuantized() && shape[len(shape)-1]%int64(want.BlockSize()) != 0 {
		return tensor.F16
	}
	return want
}

// planGGUF builds the whole header: general.*, llama.* and tokenizer keys in llama.cpp's order, and the tensors.
func planGGUF(m *HFModel, opts GGUFOptions) (*ggufJob, error) {
	p, err := newLlamaParams(m.config())
	if err != nil {
		return nil, fmt.Errorf("convert: %s: %w", m.Dir, err)
	}
	entries, ftype, extra, err := planTensors(m, p, opts.Type)
	if err != nil {
		return nil, err
	}
	var total int64
	for _, e := range entries {
		n, _ := e.Shape.Elements()
		total += n
	}
	md := &gguf.Metadata{}
	md.Set(gguf.KeyArchitecture, gguf.ValueOf(llamaArch))
	md.Set("general.type", gguf.ValueOf("model"))
	if err := setGeneral(md, m, total, opts.Name); err != nil {
		return nil, err
	}
	if err := p.setHParams(md, ftype); err != nil {
		return nil, fmt.Errorf("convert: %s: %w", m.Dir, err)
	}
	md.Set("general.quantization_version", gguf.ValueOf(uint32(2))) // GGML_QNT_VERSION
	v, err := loadVocab(m, p, opts.Pre)
	if err != nil {
		return nil, err
	}
	v.setKVs(md)
	return &ggufJob{md: md, entries: entries, extra: extra}, nil
}

// setGeneral writes Metadata.set_gguf_meta_model's keys: recommended sampling parameters from
// generation_config.json, then the name and the parts the model id heuristics find.
func setGeneral(md *gguf.Metadata, m *HFModel, total int64, name string) error {
	gen := m.generation()
	for _, s := range []struct{ hf, key string }{
		{"sequence", "sequence"}, {"top_k", "top_k"}, {"top_p", "top_p"}, {"min_p", "min_p"},
		{"xtc_probability", "xtc_probability"}, {"xtc_threshold", "xtc_threshold"}, {"temperature", "temp"},
		{"penalty_last_n", "penalty_last_n"}, {"penalty_repeat", "penalty_repeat"}, {"mirostat", "mirostat"},
		{"mirostat_tau", "mirostat_tau"}, {"mirostat_eta", "mirostat_eta"},
	} {
		if gen[s.hf] == nil {
			continue
		}
		key := "general.sampling." + s.key
		switch s.key {
		case "sequence":
			str, ok := gen.string(s.hf)
			if !ok {
				return fmt.Errorf("convert: generation_config.json: %q is %s, want a string", s.hf, jsonKind(gen[s.hf]))
			}
			setString(md, key, str)
		case "top_k", "penalty_last_n", "mirostat":
			v, ok := gen.int(s.hf)
			if !ok || v < math.MinInt32 || v > math.MaxInt32 {
				return fmt.Errorf("convert: generation_config.json: %q is %v, want an integer fitting i32", s.hf, gen[s.hf])
			}
			md.Set(key, gguf.ValueOf(int32(v)))
		default:
			v, ok := gen.float(s.hf)
			if !ok {
				return fmt.Errorf("convert: generation_config.json: %q is %s, want a number", s.hf, jsonKind(gen[s.hf]))
			}
			md.Set(key, gguf.ValueOf(float32(v)))
		}
	}
	// apply_metadata_heuristic: _name_or_path when it is a model id rather than a path, then the directory name;
	// each fills only what is still unknown.
	var id modelID
	fill := func(c modelID) {
		if id.name == "" && c.name != "" {
			id.name = idToTitle(c.name)
		}
		if id.org == "" && c.org != "" {
			id.org = idToTitle(c.org)
		}
		id.basename = cmp.Or(id.basename, c.basename)
		id.finetune = cmp.Or(id.finetune, c.finetune)
		id.version = cmp.Or(id.version, c.version)
		id.sizeLabel = cmp.Or(id.sizeLabel, c.sizeLabel)
	}
	if s, ok := m.config().string("_name_or_path"); ok && strings.Count(s, "/") <= 1 {
		fill(parseModelID(s, total))
	}
	dir, _ := filepath.Abs(m.Dir)
	fill(parseModelID(filepath.Base(dir), total))
	if name != "" {
		id.name = name
	}
	if id.sizeLabel == "" && total > 0 {
		id.sizeLabel = sizeLabel(total)
	}
	setString(md, "general.name", id.name)
	setString(md, "general.version", id.version)
	setString(md, "general.organization", id.org)
	setString(md, "general.finetune", id.finetune)
	setString(md, "general.basename", id.basename)
	setString(md, "general.size_label", id.sizeLabel)
	return nil
}

// ToGGUF converts the model to GGUF, written to w. The header is computed first, then the tensors are streamed:
// a few chunks per core are in flight, whatever the model size, and conversion runs on all cores while earlier
// chunks are written. The output is the same as llama.cpp's convert_hf_to_gguf.py: same keys in the same order,
// same tensor names, order, types and bytes.
func ToGGUF(w io.Writer, m *HFModel, opts GGUFOptions) error {
	job, err := planGGUF(m, opts)
	if err != nil {
		return err
	}
	decls := make([]gguf.TensorInfo, len(job.entries))
	for i, e := range job.entries {
		decls[i] = gguf.TensorInfo{Name: e.Name, DType: e.To, Shape: e.Shape}
	}
	gw, err := gguf.NewWriter(w, job.md, decls)
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	p := newPipeline(runtime.GOMAXPROCS(0))
	go func() {
		defer p.finish()
		for _, e := range job.entries {
			src, ok := job.extra[e.Name]
			if e.Source != "" {
				v, err := m.Weights.Tensor(e.Source)
				if err != nil {
					p.fail(err)
					return
				}
				src = v.Data
			} else if !ok {
				p.fail(fmt.Errorf("convert: internal error: no data for %q", e.Name))
				return
			}
			if !submitConversion(p, e.Name, src, e.Shape, e.From, e.To, e.PermuteHeads, false) {
				return
			}
		}
	}()
	for i, e := range job.entries {
		r := &chunkReader{p: p, name: e.Name}
		if err := gw.CopyTensor(e.Name, r); err != nil {
			p.abort()
			if r.err != nil {
				return r.err
			}
			return fmt.Errorf("convert: %w", err)
		}
		if opts.Progress != nil {
			opts.Progress(i+1, len(job.entries))
		}
	}
	if err := p.err(); err != nil {
		return err
	}
	return gw.Close()
}
