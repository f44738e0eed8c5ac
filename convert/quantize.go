package convert

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/tensor"
)

// QuantizeOptions are llama-quantize's options (../shared/reference/formats-quant.md §3.1).
type QuantizeOptions struct {
	// Type is the recipe, e.g. gguf.FileType 15 (Q4_K_M); gguf.ParseFileType reads the names.
	Type               gguf.FileType
	TensorTypes        []quant.TensorTypeRule // --tensor-type, first match wins
	OutputType         tensor.DType           // --output-tensor-type; Invalid: the recipe decides
	TokenEmbeddingType tensor.DType           // --token-embedding-type
	Pure               bool                   // --pure
	LeaveOutput        bool                   // --leave-output-tensor
	AllowRequantize    bool                   // --allow-requantize: quantized inputs are dequantized first
	Imatrix            *Imatrix               // --imatrix
	// Report, when not nil, receives the error of every converted tensor against its source.
	Report   *QuantReport
	Progress func(done, total int)
}

// ParseQuantType reads llama-quantize's TYPE argument: a file type name in any case ("q4_k_m"), one of the aliases
// Q3_K, Q4_K and Q5_K for the _M recipes, or a llama_ftype number. Only types with a recipe are accepted.
func ParseQuantType(s string) (gguf.FileType, error) {
	name := strings.ToUpper(s)
	if alias, ok := map[string]string{"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}[name]; ok {
		name = alias
	}
	ft, err := gguf.ParseFileType(name)
	if err != nil {
		n, nerr := strconv.ParseUint(s, 10, 32)
		if nerr != nil {
			return 0, err
		}
		ft = gguf.FileType(n)
	}
	if _, err := quant.FileType(ft).DefaultType(); err != nil {
		return 0, fmt.Errorf("file type %s: llama-quantize has no recipe for it", ft)
	}
	return ft, nil
}

func (o QuantizeOptions) recipe() quant.Recipe {
	return quant.Recipe{
		FileType:           quant.FileType(o.Type),
		OutputType:         o.OutputType,
		TokenEmbeddingType: o.TokenEmbeddingType,
		TensorTypes:        o.TensorTypes,
		Pure:               o.Pure,
		LeaveOutput:        o.LeaveOutput,
		HasImatrix:         o.Imatrix != nil && len(o.Imatrix.Entries) > 0,
	}
}

// QuantPlan is what Quantize will write, tensor by tensor, in output order: llama-quantize's --dry-run.
type QuantPlan struct {
	FileType     gguf.FileType   `json:"file_type_id"`
	FileTypeName string          `json:"file_type"`
	Tensors      []PlannedTensor `json:"tensors"`
	Elements     int64           `json:"elements"`
	InputBytes   int64           `json:"input_bytes"`
	OutputBytes  int64           `json:"output_bytes"`
	InputBPW     float64         `json:"input_bpw"`
	OutputBPW    float64         `json:"output_bpw"`
	// NeedsImatrix says that some tensor requires an importance matrix (tensor_requires_imatrix).
	NeedsImatrix bool `json:"needs_imatrix"`
	// Fallbacks counts tensors whose row length forced tensor_type_fallback.
	Fallbacks int `json:"fallbacks"`
}

// PlannedTensor is one tensor of a QuantPlan. BPW is bits per weight of the output.
type PlannedTensor struct {
	Name            string       `json:"name"`
	Shape           tensor.Shape `json:"shape"`
	From            tensor.DType `json:"from"`
	To              tensor.DType `json:"to"`
	Elements        int64        `json:"elements"`
	InputBytes      int64        `json:"input_bytes"`
	Bytes           int64        `json:"bytes"`
	BPW             float64      `json:"bpw"`
	RequiresImatrix bool         `json:"requires_imatrix,omitempty"`
	Fallback        bool         `json:"fallback,omitempty"`
}

// quantSource is a model to quantize: a GGUF file, or a Hugging Face model converted on the fly.
type quantSource struct {
	name    string
	md      *gguf.Metadata
	tensors []quant.TensorInfo
	// data returns a tensor's bytes, not to be modified, and their type: the tensor's type, or any type whose
	// float32 decoding gives exactly the tensor's values (the BF16 of a checkpoint standing for its F32 conversion).
	data func(name string) ([]byte, tensor.DType, error)
}

func ggufSource(in *gguf.File) *quantSource {
	s := &quantSource{name: in.Name, md: in.Metadata, data: func(name string) ([]byte, tensor.DType, error) {
		v, err := in.Tensor(name)
		return v.Data, v.DType, err
	}}
	for _, t := range in.Tensors() {
		s.tensors = append(s.tensors, quant.TensorInfo{Name: t.Name, Shape: t.Shape, DType: t.DType})
	}
	return s
}

// PlanQuantize chooses every tensor's type as llama-quantize does for in and opts, without reading tensor data.
func PlanQuantize(in *gguf.File, opts QuantizeOptions) (*QuantPlan, error) {
	return planSource(ggufSource(in), opts)
}

func planSource(src *quantSource, opts QuantizeOptions) (*QuantPlan, error) {
	info, err := modelInfo(src.md)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src.name, err)
	}
	choices, err := opts.recipe().Plan(info, src.tensors)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src.name, err)
	}
	p := &QuantPlan{FileType: opts.Type, FileTypeName: opts.Type.String(), Tensors: make([]PlannedTensor, len(choices))}
	for i, c := range choices {
		p.Tensors[i] = PlannedTensor{Name: c.Name, Shape: c.Shape, From: c.From, To: c.To,
			RequiresImatrix: c.RequiresImatrix, Fallback: c.Fallback}
	}
	return p, p.total()
}

// total fills in the sizes from the types.
func (p *QuantPlan) total() error {
	p.Elements, p.InputBytes, p.OutputBytes, p.NeedsImatrix, p.Fallbacks = 0, 0, 0, false, 0
	for i := range p.Tensors {
		t := &p.Tensors[i]
		var err error
		if t.Elements, err = t.Shape.Elements(); err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if t.InputBytes, err = t.Shape.Bytes(t.From); err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if t.Bytes, err = t.Shape.Bytes(t.To); err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		t.BPW = bitsPer(t.Bytes, t.Elements)
		p.Elements += t.Elements
		p.InputBytes += t.InputBytes
		p.OutputBytes += t.Bytes
		p.NeedsImatrix = p.NeedsImatrix || t.RequiresImatrix
		if t.Fallback {
			p.Fallbacks++
		}
	}
	p.InputBPW = bitsPer(p.InputBytes, p.Elements)
	p.OutputBPW = bitsPer(p.OutputBytes, p.Elements)
	return nil
}

func bitsPer(bytes, elements int64) float64 {
	if elements == 0 {
		return 0
	}
	return 8 * float64(bytes) / float64(elements)
}

// modelInfo reads the hyper-parameters the recipe uses, as llama_model::load_hparams does: head counts may be
// per-layer arrays (layer 0 counts), head_count_kv defaults to head_count, expert_count to 0. A file without an
// architecture gets zeros, which the rules handle.
func modelInfo(md *gguf.Metadata) (quant.ModelInfo, error) {
	var m quant.ModelInfo
	if _, ok := md.Get(gguf.KeyArchitecture); !ok {
		return m, nil
	}
	arch, err := md.String(gguf.KeyArchitecture)
	if err != nil {
		return m, err
	}
	m.Arch = arch
	for _, f := range []struct {
		key string
		dst *int
	}{
		{".block_count", &m.Layers},
		{".attention.head_count", &m.Heads},
		{".attention.head_count_kv", &m.HeadsKV},
		{".expert_count", &m.Experts},
	} {
		if *f.dst, err = hparam(md, arch+f.key); err != nil {
			return m, err
		}
	}
	if _, ok := md.Get(arch + ".attention.head_count_kv"); !ok {
		m.HeadsKV = m.Heads
	}
	return m, nil
}

// hparam reads an integer or the first element of an integer array; 0 when absent.
func hparam(md *gguf.Metadata, key string) (int, error) {
	v, ok := md.Get(key)
	if !ok {
		return 0, nil
	}
	if v.IsArray() {
		switch a := v.Any().(type) {
		case []uint32:
			if len(a) > 0 {
				return int(a[0]), nil
			}
		case []int32:
			if len(a) > 0 {
				return int(a[0]), nil
			}
		}
		return 0, fmt.Errorf("%s: want an integer or a non-empty integer array, got %s", key, v)
	}
	n, err := md.Int(key)
	if err != nil {
		return 0, err
	}
	if n < 0 || n > math.MaxInt32 {
		return 0, fmt.Errorf("%s: %d is out of range", key, n)
	}
	return int(n), nil
}

// Metadata keys Quantize writes (llama-quant.cpp; tools/quantize/quantize.cpp LLM_KV_QUANTIZE_IMATRIX_*).
const (
	keyQuantizationVersion = "general.quantization_version"
	keyImatrixFile         = "quantize.imatrix.file"
	keyImatrixDataset      = "quantize.imatrix.dataset"
	keyImatrixEntries      = "quantize.imatrix.entries_count"
	keyImatrixChunks       = "quantize.imatrix.chunks_count"
)

// ggmlQuantVersion is GGML_QNT_VERSION.
const ggmlQuantVersion = 2

// Quantize writes in quantized with opts to w, byte for byte as llama-quantize writes the same model: the input's
// metadata with general.quantization_version and general.file_type set (and the quantize.imatrix.* keys when an
// importance matrix is used), tensors in llama.cpp's order with data aligned to 32 bytes.
//
// Work is streamed: tensors are cut into chunks of whole rows that are converted on all cores and written in
// order, so memory holds a few chunks, not the model or even a whole tensor.
func Quantize(w io.Writer, in *gguf.File, opts QuantizeOptions) error {
	return quantizeSource(w, ggufSource(in), opts)
}

func quantizeSource(w io.Writer, src *quantSource, opts QuantizeOptions) error {
	plan, err := planSource(src, opts)
	if err != nil {
		return err
	}
	return writePlan(w, src, plan, opts)
}

// Dequantize writes in with every quantized tensor expanded to the float type to (F32, F16 or BF16), and the
// other tensors as llama-quantize's F32/F16/BF16 recipe leaves or converts them.
func Dequantize(w io.Writer, in *gguf.File, to tensor.DType) error {
	ft, ok := map[tensor.DType]quant.FileType{tensor.F32: quant.AllF32, tensor.F16: quant.MostlyF16,
		tensor.BF16: quant.MostlyBF16}[to]
	if !ok {
		return fmt.Errorf("dequantize: target type %s is not F32, F16 or BF16", to)
	}
	opts := QuantizeOptions{Type: gguf.FileType(ft), AllowRequantize: true}
	src := ggufSource(in)
	plan, err := planSource(src, opts)
	if err != nil {
		return err
	}
	for i := range plan.Tensors {
		if plan.Tensors[i].From.IsQuantized() {
			plan.Tensors[i].To = to
		}
	}
	if err := plan.total(); err != nil {
		return err
	}
	return writePlan(w, src, plan, opts)
}

// tensorWork is how one converted tensor is cut: rows of ne0 elements, slice after slice, each slice with its own
// importance weights (the experts of a 3-D MoE tensor; one slice otherwise).
type tensorWork struct {
	ne0, rows, slices int
	importance        []float32 // ne0 per slice, or nil
}

// prepare checks, before anything is written, every condition under which llama_model_quantize_impl would stop
// half-way, and finds each tensor's importance weights.
func prepare(src *quantSource, plan *QuantPlan, opts QuantizeOptions) ([]tensorWork, error) {
	im := opts.Imatrix
	if im != nil {
		if err := im.check(); err != nil {
			return nil, err
		}
	}
	work := make([]tensorWork, len(plan.Tensors))
	for i, t := range plan.Tensors {
		if t.Elements == 0 {
			continue
		}
		ne := quant.TensorInfo{Shape: t.Shape}.Ne
		w := tensorWork{ne0: int(ne(0)), rows: int(t.Elements / ne(0)), slices: 1}
		work[i] = w
		if t.From == t.To {
			continue
		}
		fail := func(format string, args ...any) error {
			return fmt.Errorf("%s: tensor %q: %s", src.name, t.Name, fmt.Sprintf(format, args...))
		}
		switch {
		case t.From == tensor.F32 || t.From == tensor.F16 || t.From == tensor.BF16:
		case t.From.IsQuantized() && !opts.AllowRequantize:
			return nil, fail("requantizing from %s is disabled; allowing it dequantizes first, at a cost in quality", t.From)
		case !quant.CanDecode(t.From):
			return nil, fail("cannot convert from %s", t.From)
		}
		if e, ok := im.entry(t.Name); ok {
			switch {
			case int64(len(e)) == ne(0)*ne(2) && ne(3) == 1:
				w = tensorWork{ne0: w.ne0, rows: int(ne(1)), slices: int(ne(2)), importance: e}
			case ne(3) != 1:
				return nil, fail("%v: importance weights apply to 2-D and 3-D tensors only", t.Shape)
			case t.Name != "token_embd.weight" && t.Name != "per_layer_token_embd.weight":
				// Mostly an old MoE model with a newer imatrix; quantizing it without weights would go unnoticed.
				return nil, fail("importance matrix has %d values, the tensor needs %d", len(e), ne(0)*ne(2))
			}
		}
		if w.importance == nil && t.RequiresImatrix {
			return nil, fail("%s needs an importance matrix and none is given for this tensor", t.To)
		}
		if w.importance == nil && quant.RequiresImatrix(t.To) {
			return nil, fail("%s cannot be made without an importance matrix", t.To)
		}
		work[i] = w
	}
	return work, nil
}

// outputMetadata is the input's metadata as llama-quantize rewrites it.
func outputMetadata(in *gguf.Metadata, ft gguf.FileType, im *Imatrix) *gguf.Metadata {
	md := in.Clone()
	// gguf_set_val_* removes a key and appends it again, so these end up last even when the input has them.
	setLast := func(key string, v gguf.Value) {
		md.Delete(key)
		md.Set(key, v)
	}
	setLast(keyQuantizationVersion, gguf.ValueOf(uint32(ggmlQuantVersion)))
	setLast(gguf.KeyFileType, gguf.ValueOf(uint32(ft)))
	for _, k := range []string{gguf.KeySplitNo, gguf.KeySplitCount, gguf.KeySplitTensorsCount} {
		md.Delete(k)
	}
	// llama-quantize lays the data out with GGUF_DEFAULT_ALIGNMENT whatever the input said; dropping the key keeps
	// the file consistent with that layout.
	md.Delete(gguf.KeyAlignment)
	if im != nil && len(im.Entries) > 0 {
		// The overrides carry strings in char[128] buffers (strncpy of 127 bytes).
		clip := func(s string) string { return s[:min(len(s), 127)] }
		setLast(keyImatrixFile, gguf.ValueOf(clip(im.Name)))
		if len(im.Datasets) > 0 {
			setLast(keyImatrixDataset, gguf.ValueOf(clip(im.Datasets[0])))
		}
		setLast(keyImatrixEntries, gguf.ValueOf(uint32(len(im.Entries))))
		if im.Chunks > 0 {
			setLast(keyImatrixChunks, gguf.ValueOf(uint32(im.Chunks)))
		}
	}
	return md
}

// ggmlShape drops outer dimensions of size 1, as gguf_write_out does by writing ggml_n_dims dimensions.
func ggmlShape(s tensor.Shape) tensor.Shape {
	for len(s) > 1 && s[0] == 1 {
		s = s[1:]
	}
	if len(s) == 0 {
		return tensor.Shape{1}
	}
	return s
}

func writePlan(w io.Writer, src *quantSource, plan *QuantPlan, opts QuantizeOptions) error {
	work, err := prepare(src, plan, opts)
	if err != nil {
		return err
	}
	decls := make([]gguf.TensorInfo, len(plan.Tensors))
	for i, t := range plan.Tensors {
		decls[i] = gguf.TensorInfo{Name: t.Name, DType: t.To, Shape: ggmlShape(t.Shape)}
	}
	gw, err := gguf.NewWriter(w, outputMetadata(src.md, plan.FileType, opts.Imatrix), decls)
	if err != nil {
		return err
	}
	var sums [][]errorSums // per tensor and chunk, written by the workers, merged here in order
	if opts.Report != nil {
		sums = make([][]errorSums, len(plan.Tensors))
		*opts.Report = QuantReport{}
	}
	p := newPipeline(runtime.GOMAXPROCS(0))
	go submitTensors(p, src, plan, work, sums)
	var total errorSums
	for i, t := range plan.Tensors {
		if opts.Progress != nil {
			opts.Progress(i, len(plan.Tensors))
		}
		cr := &chunkReader{p: p, name: t.Name}
		if err := gw.CopyTensor(t.Name, cr); err != nil {
			p.abort()
			if perr := p.err(); perr != nil {
				return perr
			}
			if cr.err != nil {
				return cr.err
			}
			return err
		}
		if len(cr.cur) != 0 {
			p.abort()
			return fmt.Errorf("quantize: tensor %q: %d bytes more than its size were produced", t.Name, len(cr.cur))
		}
		if sums != nil && t.From != t.To {
			var s errorSums
			for _, c := range sums[i] {
				s.merge(c)
			}
			total.merge(s)
			opts.Report.Tensors = append(opts.Report.Tensors, s.result(t.Name, t.From, t.To))
		}
	}
	if err := p.err(); err != nil {
		return err
	}
	if sums != nil {
		opts.Report.Total = total.result("total", tensor.Invalid, tensor.Invalid)
	}
	if opts.Progress != nil {
		opts.Progress(len(plan.Tensors), len(plan.Tensors))
	}
	return gw.Close()
}

// submitTensors is the producer: tensors kept as they are go to the pipeline whole, converted ones as chunks of
// whole rows that never straddle two importance slices. With sums set, each converted tensor gets a slot per chunk
// for its error figures.
func submitTensors(p *pipeline, src *quantSource, plan *QuantPlan, work []tensorWork, sums [][]errorSums) {
	defer p.finish()
	for i, t := range plan.Tensors {
		if t.Bytes == 0 {
			continue
		}
		data, have, err := src.data(t.Name)
		if err != nil {
			p.fail(err)
			return
		}
		if have == t.To {
			if !p.submit(t.Name, data, nil) {
				return
			}
			continue
		}
		wk := work[i]
		inRow, _ := have.Bytes(int64(wk.ne0))
		step := max(1, castChunk/wk.ne0)
		if sums != nil && t.From != t.To {
			sums[i] = make([]errorSums, wk.slices*((wk.rows+step-1)/step))
		}
		k := 0
		for x := range wk.slices {
			var imp []float32
			if wk.importance != nil {
				imp = wk.importance[x*wk.ne0 : (x+1)*wk.ne0]
			}
			for r := 0; r < wk.rows; r += step {
				first, n := int64(x*wk.rows+r), int64(min(step, wk.rows-r))
				rows := data[first*inRow : (first+n)*inRow]
				var s *errorSums
				if sums != nil && sums[i] != nil {
					s = &sums[i][k]
				}
				k++
				if !p.submit(t.Name, nil, func() ([]byte, error) { return quantizeRows(have, t.To, rows, wk.ne0, imp, s) }) {
					return
				}
			}
		}
	}
}

// quantizeRows turns whole rows of src (type from) into type to through float32, the way llama-quantize does:
// dequantize (llama_tensor_dequantize_impl, with ggml's F16 NaN handling) then ggml_quantize_chunk with the
// importance weights. With s set it also measures the error. It is chunks.go's convertRows with those two
// additions.
func quantizeRows(from, to tensor.DType, src []byte, ne0 int, importance []float32, s *errorSums) ([]byte, error) {
	inRow, _ := from.Bytes(int64(ne0))
	buf := getFloats(len(src) / int(inRow) * ne0)
	defer floatPool.Put(buf)
	x := *buf
	var err error
	if quant.CanDecode(from) { // F16 and BF16 too, for ggml's NaN handling
		err = quant.Decode(from, x, src)
	} else {
		err = tensor.ToFloat32(x, src, from)
	}
	if err != nil {
		return nil, err
	}
	n, err := to.Bytes(int64(len(x)))
	if err != nil {
		return nil, err
	}
	dst := make([]byte, n)
	if to == tensor.F32 {
		err = tensor.FromFloat32(dst, x, to)
	} else {
		err = quant.Encode(to, dst, x, ne0, importance)
	}
	if err != nil {
		return nil, err
	}
	if s != nil {
		y := x
		if to != tensor.F32 {
			ybuf := getFloats(len(x))
			defer floatPool.Put(ybuf)
			y = *ybuf
			if err := quant.Decode(to, y, dst); err != nil {
				return nil, err
			}
		}
		s.add(x, y)
	}
	return dst, nil
}

// floatPool recycles the float32 staging buffers of quantizeRows: a fresh megabyte per chunk otherwise keeps the
// garbage collector busy on fast types such as Q8_0.
var floatPool = sync.Pool{New: func() any { return new([]float32) }}

func getFloats(n int) *[]float32 {
	p := floatPool.Get().(*[]float32)
	if cap(*p) < n {
		*p = make([]float32, n)
	}
	*p = (*p)[:n]
	return p
}

// QuantReport measures what quantization did to each converted tensor, against the float32 values it started
// from (the source itself, or its dequantization when requantizing).
type QuantReport struct {
	Tensors []QuantError `json:"tensors"`
	Total   QuantError   `json:"total"` // all converted tensors as one vector
}

// QuantError is the error of one tensor. SNR is 10·log10(Σx² / Σ(x−y)²) in dB, +Inf for an exact result; Cosine
// is the cosine similarity of the source x and the result y. JSON encodes non-finite values as null.
type QuantError struct {
	Name     string       `json:"name"`
	From     tensor.DType `json:"from,omitempty"`
	To       tensor.DType `json:"to,omitempty"`
	Elements int64        `json:"elements"`
	RMSE     float64      `json:"rmse"`
	MaxAbs   float64      `json:"max_abs_error"`
	SNR      float64      `json:"snr_db"`
	Cosine   float64      `json:"cosine"`
}

// MarshalJSON writes non-finite figures (the SNR of an exact tensor, anything of a NaN input) as null.
func (e QuantError) MarshalJSON() ([]byte, error) {
	type plain QuantError
	finite := func(f float64) *float64 {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil
		}
		return &f
	}
	return json.Marshal(struct {
		plain
		RMSE   *float64 `json:"rmse"`
		MaxAbs *float64 `json:"max_abs_error"`
		SNR    *float64 `json:"snr_db"`
		Cosine *float64 `json:"cosine"`
	}{plain(e), finite(e.RMSE), finite(e.MaxAbs), finite(e.SNR), finite(e.Cosine)})
}

// errorSums accumulates, in float64, what the error figures are computed from.
type errorSums struct {
	n                      int64
	sse, sxx, syy, sxy, mx float64
}

func (s *errorSums) add(x, y []float32) {
	for i, xv := range x {
		a, b := float64(xv), float64(y[i])
		d := b - a
		s.sse += d * d
		s.sxx += a * a
		s.syy += b * b
		s.sxy += a * b
		if ad := math.Abs(d); ad > s.mx || ad != ad {
			s.mx = ad
		}
	}
	s.n += int64(len(x))
}

func (s *errorSums) merge(o errorSums) {
	s.n += o.n
	s.sse += o.sse
	s.sxx += o.sxx
	s.syy += o.syy
	s.sxy += o.sxy
	if o.mx > s.mx || o.mx != o.mx {
		s.mx = o.mx
	}
}

func (s errorSums) result(name string, from, to tensor.DType) QuantError {
	e := QuantError{Name: name, From: from, To: to, Elements: s.n, MaxAbs: s.mx, SNR: math.Inf(1)}
	if s.n > 0 {
		e.RMSE = math.Sqrt(s.sse / float64(s.n))
	}
	if s.sse != 0 || s.sse != s.sse {
		e.SNR = 10 * math.Log10(s.sxx/s.sse)
	}
	e.Cosine = s.sxy / math.Sqrt(s.sxx*s.syy)
	return e
}

// QuantizeHF converts the Hugging Face model m as ToGGUF does and quantizes the result in the same pass, without an
// intermediate file: the output is that of ToGGUF with conv followed by Quantize with opts. conv.Type may be F32,
// F16 or BF16; left unset it is F32 (not ToGGUF's automatic F16), so that the checkpoint's values are quantized
// as they are, as after `convert_hf_to_gguf --outtype f32`.
func QuantizeHF(w io.Writer, m *HFModel, conv GGUFOptions, opts QuantizeOptions) error {
	src, err := hfSource(m, conv)
	if err != nil {
		return err
	}
	return quantizeSource(w, src, opts)
}

// PlanQuantizeHF is PlanQuantize for QuantizeHF.
func PlanQuantizeHF(m *HFModel, conv GGUFOptions, opts QuantizeOptions) (*QuantPlan, error) {
	src, err := hfSource(m, conv)
	if err != nil {
		return nil, err
	}
	return planSource(src, opts)
}

// hfSource presents the GGUF that ToGGUF would write. Tensor data is read from the checkpoint when needed: its
// own bytes when their float32 values are the converted tensor's (always for an F32 conversion), otherwise
// converted whole; the rotary rows of q and k are permuted first, as ToGGUF does.
func hfSource(m *HFModel, conv GGUFOptions) (*quantSource, error) {
	if conv.Type == tensor.Invalid {
		conv.Type = tensor.F32
	}
	if conv.Type != tensor.F32 && conv.Type != tensor.F16 && conv.Type != tensor.BF16 {
		return nil, fmt.Errorf("convert: %s: quantizing from a %s conversion; use F32, F16 or BF16", m.Dir, conv.Type)
	}
	job, err := planGGUF(m, conv)
	if err != nil {
		return nil, err
	}
	entries := make(map[string]PlanEntry, len(job.entries))
	s := &quantSource{name: m.Dir, md: job.md}
	for _, e := range job.entries {
		entries[e.Name] = e
		s.tensors = append(s.tensors, quant.TensorInfo{Name: e.Name, Shape: e.Shape, DType: e.To})
	}
	s.data = func(name string) ([]byte, tensor.DType, error) {
		e := entries[name]
		if e.Source == "" {
			return job.extra[name], e.To, nil
		}
		v, err := m.Weights.Tensor(e.Source)
		if err != nil {
			return nil, 0, err
		}
		data := v.Data
		if e.PermuteHeads > 0 {
			rows := int(e.Shape[0])
			permuted := make([]byte, len(data))
			permuteRows(permuted, data, rows/int(e.PermuteHeads), len(data)/rows, false)
			data = permuted
		}
		if e.From == e.To || e.To == tensor.F32 {
			return data, e.From, nil
		}
		n, _ := e.Shape.Elements()
		size, _ := e.To.Bytes(n)
		out, err := convertRows(data, e.From, e.To, 1, int(n), int(size))
		return out, e.To, err
	}
	return s, nil
}
