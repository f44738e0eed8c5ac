package adapter

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/internal/parallel"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// ModelMerge is a planned mergekit-style merge: the models of a MergekitConfig opened and every output tensor matched
// with its inputs. Tensors are merged name by name as mergekit does; the output takes the layout, metadata and
// non-merged files of the reference model (base_model, else the first model listed).
type ModelMerge struct {
	Config    *MergekitConfig
	Reference *modelfile.Model
	Layers    int  // layers of the output
	Resized   bool // Layers differs from the reference's (slices); its config or block_count is rewritten

	method  mergekitMethod
	models  map[string]*modelfile.Model
	opened  []*modelfile.Model
	tensors []mergeTensor
}

// mergeTensor is one output tensor and where its inputs come from.
type mergeTensor struct {
	name   string
	dtype  tensor.DType
	shape  tensor.Shape
	t      float64 // relative layer position for gradients (mergekit's plan_slice); 0 outside the layers
	slice  *MergekitSlice
	inputs []mergeInput
	base   int // index of the base model's input, or −1
}

type mergeInput struct {
	model *modelfile.Model
	src   *MergekitSource
	name  string
}

// OpenModelMerge opens every model the configuration names (safetensors files or directories, or GGUF files; all
// in one format) with open, or modelfile.Open when open is nil, and plans the merge.
func OpenModelMerge(cfg *MergekitConfig, open func(path string) (*modelfile.Model, error)) (*ModelMerge, error) {
	if open == nil {
		open = func(path string) (*modelfile.Model, error) { return modelfile.Open(path) }
	}
	m := &ModelMerge{Config: cfg, method: mergekitMethods[cfg.Method], models: map[string]*modelfile.Model{}}
	if err := m.openAll(open); err != nil {
		m.Close()
		return nil, err
	}
	var err error
	if cfg.Models != nil {
		err = m.planModels()
	} else {
		err = m.planSlices()
	}
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("%s: %w", cfg.File, err)
	}
	return m, nil
}

func (m *ModelMerge) openAll(open func(string) (*modelfile.Model, error)) error {
	paths := []string{}
	if m.Config.BaseModel != "" {
		paths = append(paths, m.Config.BaseModel)
	}
	for _, s := range m.Config.Models {
		paths = append(paths, s.Model)
	}
	for _, sl := range m.Config.Slices {
		if sl.BaseModel != "" {
			paths = append(paths, sl.BaseModel)
		}
		for _, s := range sl.Sources {
			paths = append(paths, s.Model)
		}
	}
	for _, p := range paths {
		if m.models[p] != nil {
			continue
		}
		mf, err := open(p)
		if err != nil {
			return fmt.Errorf("model %s: %w", p, err)
		}
		m.models[p] = mf
		m.opened = append(m.opened, mf)
		if mf.Format != m.opened[0].Format {
			return fmt.Errorf("model %s is %s but %s is %s: all models of a merge must be in one format (tensor names differ)",
				p, mf.Format, m.opened[0].Path, m.opened[0].Format)
		}
	}
	return nil
}

// Files lists every input file, so that a caller can refuse to overwrite one.
func (m *ModelMerge) Files() []string {
	var files []string
	for _, mf := range m.opened {
		files = append(files, mf.Files...)
	}
	return files
}

// Close releases the models.
func (m *ModelMerge) Close() error {
	var errs []error
	for _, mf := range m.opened {
		errs = append(errs, mf.Close())
	}
	return errors.Join(errs...)
}

// layerName splits a tensor name around its block index: "model.layers.3.mlp.up_proj.weight" → ("model.layers.",
// 3, ".mlp.up_proj.weight"); GGUF's "blk.3.ffn_up.weight" likewise. mergekit knows each architecture's layer
// template; the container names here cover the HF and GGUF transformer layouts lathe reads.
var layerName = regexp.MustCompile(`^((?:[^.]+\.)*?(?:layers|blk|h|blocks|block|layer)\.)(\d+)(\..+)$`)

func splitLayer(name string) (prefix string, index int, suffix string, ok bool) {
	sm := layerName.FindStringSubmatch(name)
	if sm == nil {
		return "", 0, "", false
	}
	i, err := strconv.Atoi(sm[2])
	if err != nil || i > 1<<20 {
		return "", 0, "", false
	}
	return sm[1], i, sm[3], true
}

func layerCount(mf *modelfile.Model) int {
	n := 0
	for _, t := range mf.Tensors {
		if _, i, _, ok := splitLayer(t.Name); ok {
			n = max(n, i+1)
		}
	}
	return n
}

// layerT is mergekit's gradient position of layer idx of n (plan_slice): idx/(n−1), and 1 for a single layer.
func layerT(idx, n int) float64 {
	if n <= 1 {
		return 1
	}
	return float64(idx) / float64(n-1)
}

// planModels plans the models form: every tensor of the reference, merged from the same tensor of every model;
// the base model joins the inputs when it is not listed, as mergekit's normalize_config adds it.
func (m *ModelMerge) planModels() error {
	cfg := m.Config
	sl := &MergekitSlice{Sources: append([]MergekitSource(nil), cfg.Models...)}
	if cfg.BaseModel != "" && !hasSource(sl.Sources, cfg.BaseModel) {
		sl.Sources = append(sl.Sources, MergekitSource{Model: cfg.BaseModel})
	}
	refPath := cfg.BaseModel
	if refPath == "" {
		refPath = sl.Sources[0].Model
	}
	m.Reference = m.models[refPath]
	m.Layers = layerCount(m.Reference)
	for _, s := range sl.Sources {
		if n := layerCount(m.models[s.Model]); n != m.Layers {
			return fmt.Errorf("model %s has %d layers, %s has %d: use slices to merge models of different depths", s.Model, n, refPath, m.Layers)
		}
	}
	for _, rt := range m.Reference.Tensors {
		t := 0.0
		if _, i, _, ok := splitLayer(rt.Name); ok {
			t = layerT(i, m.Layers)
		}
		names := make([]string, len(sl.Sources))
		for i := range names {
			names[i] = rt.Name
		}
		if err := m.addTensor(rt, rt.Name, t, sl, names, cfg.BaseModel); err != nil {
			return err
		}
	}
	return nil
}

func hasSource(srcs []MergekitSource, model string) bool {
	for _, s := range srcs {
		if s.Model == model {
			return true
		}
	}
	return false
}

// planSlices plans the slices form as mergekit's plan_module does: the tensors outside the layers (embeddings
// first, from the first slice's sources; the others, such as the final norm and the output head, from the last
// slice's), and between them each slice's layers, renumbered from 0 in output order.
func (m *ModelMerge) planSlices() error {
	cfg := m.Config
	first, last := &cfg.Slices[0], &cfg.Slices[len(cfg.Slices)-1]
	refPath := cfg.BaseModel
	if refPath == "" {
		refPath = first.Sources[0].Model
	}
	m.Reference = m.models[refPath]
	var post []modelfile.Tensor
	for _, rt := range m.Reference.Tensors {
		if _, _, _, ok := splitLayer(rt.Name); ok {
			continue
		}
		if !strings.Contains(rt.Name, "embed") && !strings.Contains(rt.Name, "tok_embd") {
			post = append(post, rt)
			continue
		}
		if err := m.addSliceTensor(rt, first); err != nil {
			return err
		}
	}
	for si := range cfg.Slices {
		if err := m.planSlice(&cfg.Slices[si]); err != nil {
			return fmt.Errorf("slice %d (line %d): %w", si, cfg.Slices[si].line, err)
		}
	}
	for _, rt := range post {
		if err := m.addSliceTensor(rt, last); err != nil {
			return err
		}
	}
	m.Resized = m.Layers != layerCount(m.Reference)
	return nil
}

func (m *ModelMerge) sliceBase(sl *MergekitSlice) string {
	if sl.BaseModel != "" {
		return sl.BaseModel
	}
	return m.Config.BaseModel
}

func (m *ModelMerge) addSliceTensor(rt modelfile.Tensor, sl *MergekitSlice) error {
	names := make([]string, len(sl.Sources))
	for i := range names {
		names[i] = rt.Name
	}
	return m.addTensor(rt, rt.Name, 0, sl, names, m.sliceBase(sl))
}

func (m *ModelMerge) planSlice(sl *MergekitSlice) error {
	n := sl.Sources[0].LayerRange[1] - sl.Sources[0].LayerRange[0]
	base := m.sliceBase(sl)
	ref := sl.Sources[0]
	for _, s := range sl.Sources {
		if s.LayerRange[1]-s.LayerRange[0] != n {
			return fmt.Errorf("sources take %d and %d layers: all inputs to a slice must contain the same number of layers",
				n, s.LayerRange[1]-s.LayerRange[0])
		}
		if have := layerCount(m.models[s.Model]); s.LayerRange[1] > have {
			return fmt.Errorf("model %s: layer_range %v is beyond its %d layers", s.Model, s.LayerRange, have)
		}
		if s.Model == base {
			ref = s
		}
	}
	if base != "" && !hasSource(sl.Sources, base) && m.method.needsBase {
		return fmt.Errorf("base_model %s is not among the slice's sources", base)
	}
	refModel := m.models[ref.Model]
	for off := range n {
		out := m.Layers
		m.Layers++
		for _, rt := range refModel.Tensors {
			prefix, idx, suffix, ok := splitLayer(rt.Name)
			if !ok || idx != ref.LayerRange[0]+off {
				continue
			}
			names := make([]string, len(sl.Sources))
			for i, s := range sl.Sources {
				names[i] = prefix + strconv.Itoa(s.LayerRange[0]+off) + suffix
			}
			if err := m.addTensor(rt, prefix+strconv.Itoa(out)+suffix, layerT(off, n), sl, names, base); err != nil {
				return err
			}
		}
	}
	return nil
}

// addTensor plans output tensor name, shaped like rt, from the tensors names[i] of the slice's sources.
func (m *ModelMerge) addTensor(rt modelfile.Tensor, name string, t float64, sl *MergekitSlice, names []string, base string) error {
	mt := mergeTensor{name: name, dtype: m.outType(rt), shape: rt.Shape, t: t, slice: sl, base: -1}
	for i := range sl.Sources {
		src := &sl.Sources[i]
		mf := m.models[src.Model]
		it, ok := mf.Lookup(names[i])
		if !ok {
			return fmt.Errorf("model %s has no tensor %q", src.Model, names[i])
		}
		if !it.Shape.Equal(rt.Shape) {
			return fmt.Errorf("tensor %q: model %s has shape %v, %s has %v", names[i], src.Model, it.Shape, m.Reference.Path, rt.Shape)
		}
		if src.Model == base {
			mt.base = len(mt.inputs)
		}
		mt.inputs = append(mt.inputs, mergeInput{model: mf, src: src, name: names[i]})
	}
	m.tensors = append(m.tensors, mt)
	return nil
}

// outType is the stored type of an output tensor: out_dtype, else dtype (mergekit's SaveTensor stores the merge
// result, which has the computation type), else the reference's own. Quantized GGUF tensors keep their type and are
// re-encoded; GGUF's one-dimensional tensors (norms, biases) stay F32 as llama.cpp's converter writes them.
func (m *ModelMerge) outType(rt modelfile.Tensor) tensor.DType {
	want := m.Config.OutDType
	if want == tensor.Invalid {
		want = m.Config.DType
	}
	switch {
	case want == tensor.Invalid, !isFloat(rt.DType):
		return rt.DType
	case m.Reference.GGUF != nil && len(rt.Shape) < 2:
		return rt.DType
	}
	return want
}

// isFloat reports whether mergekit would merge values of type t: floating-point and block-quantized types. Others
// (integer buffers, masks) are copied from the reference.
func isFloat(t tensor.DType) bool { return t.IsQuantized() || t.IsFloat() }

// ModelMergeOptions tunes ModelMerge.Write.
type ModelMergeOptions struct {
	// Seed drives DARE's random masks: tensor x, task i uses TaskRand(Seed, x, i), so a merge is reproducible.
	Seed     uint64
	Workers  int                   // tensors merged at once; 0 means GOMAXPROCS
	Progress func(done, total int) // called after each tensor is written; may be nil
}

// Write merges every tensor and writes the model to w: GGUF with the reference's metadata (block_count set to
// Layers) for GGUF inputs, else one safetensors file with the reference's metadata. Tensors keep the reference's
// order. At most Workers tensors are merged at once, so memory holds a few tensors of each model.
func (m *ModelMerge) Write(w io.Writer, opts ModelMergeOptions) error {
	var write func(name string, data []byte) error
	var finish func() error
	if ref := m.Reference.GGUF; ref != nil {
		md := ref.Metadata
		if m.Resized {
			md = md.Clone()
			arch, err := md.String("general.architecture")
			if err != nil {
				return fmt.Errorf("%s: %w", m.Reference.Path, err)
			}
			md.Set(arch+".block_count", gguf.ValueOf(uint32(m.Layers)))
		}
		decls := make([]gguf.TensorInfo, len(m.tensors))
		for i, t := range m.tensors {
			decls[i] = gguf.TensorInfo{Name: t.name, DType: t.dtype, Shape: t.shape}
		}
		gw, err := gguf.NewWriter(w, md, decls)
		if err != nil {
			return err
		}
		defer gw.Abort()
		write, finish = gw.WriteTensor, gw.Close
	} else {
		infos := make([]safetensors.TensorInfo, len(m.tensors))
		for i, t := range m.tensors {
			infos[i] = safetensors.TensorInfo{Name: t.name, DType: t.dtype, Shape: t.shape}
		}
		sw, err := safetensors.NewWriter(w, infos, m.Reference.Safetensors.Metadata(), safetensors.KeepOrder())
		if err != nil {
			return err
		}
		write, finish = sw.WriteTensor, sw.Close
	}
	workers := parallel.Workers(opts.Workers)
	window := make([][]byte, workers)
	for lo := 0; lo < len(m.tensors); lo += workers {
		hi := min(lo+workers, len(m.tensors))
		err := parallel.ForEach(hi-lo, workers, nil, func(_, i int) error {
			t := &m.tensors[lo+i]
			data, err := m.merge(t, opts.Seed)
			if err != nil {
				return fmt.Errorf("tensor %q: %w", t.name, err)
			}
			window[i] = data
			return nil
		})
		if err != nil {
			return err
		}
		for i := lo; i < hi; i++ {
			if err := write(m.tensors[i].name, window[i-lo]); err != nil {
				return err
			}
			window[i-lo] = nil
			if opts.Progress != nil {
				opts.Progress(i+1, len(m.tensors))
			}
		}
	}
	return finish()
}

// merge computes one output tensor in its stored type.
func (m *ModelMerge) merge(t *mergeTensor, seed uint64) ([]byte, error) {
	first := t.inputs[max(t.base, 0)]
	fv, err := first.model.View(first.name)
	if err != nil {
		return nil, err
	}
	if !isFloat(fv.DType) {
		return fv.Data, nil
	}
	xs := make([][]float32, len(t.inputs))
	for i, in := range t.inputs {
		if xs[i], err = m.load(in); err != nil {
			return nil, err
		}
	}
	res, err := m.combine(t, xs, seed)
	if err != nil {
		return nil, err
	}
	size, err := t.shape.Bytes(t.dtype)
	if err != nil {
		return nil, err
	}
	out := make([]byte, size)
	if t.dtype.IsQuantized() {
		if !quant.CanEncode(t.dtype) || quant.RequiresImatrix(t.dtype) {
			return nil, fmt.Errorf("lathe cannot re-encode %s without an importance matrix; set out_dtype", t.dtype)
		}
		err = quant.Encode(t.dtype, out, res, int(t.shape[len(t.shape)-1]), nil)
	} else {
		err = tensor.FromFloat32(out, res, t.dtype)
	}
	return out, err
}

// load decodes one input to float32, rounded to the configuration's dtype as mergekit's GatherTensors casts
// every input before merging.
func (m *ModelMerge) load(in mergeInput) ([]float32, error) {
	v, err := in.model.View(in.name)
	if err != nil {
		return nil, err
	}
	f, err := floats(v)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", in.model.Path, err)
	}
	if dt := m.Config.DType; dt == tensor.F16 || dt == tensor.BF16 {
		buf := make([]byte, 2*len(f))
		if err := tensor.FromFloat32(buf, f, dt); err != nil {
			return nil, err
		}
		if err := tensor.ToFloat32(f, buf, dt); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// global evaluates a method-level parameter for t: slice parameters, then the top-level ones, then the default
// (mergekit's ConfigReader.parameter with model=None, on the output tensor name).
func (m *ModelMerge) global(t *mergeTensor, name string) (float64, error) {
	if v, ok := lookupParam(name, t.name, t.t, t.slice.Parameters, m.Config.Parameters); ok {
		return v, nil
	}
	def := m.method.global[name]
	if math.IsNaN(def) {
		return 0, fmt.Errorf("%w %s", errMissingParameter, name)
	}
	return def, nil
}

// perModel evaluates a per-model parameter of input i: its source's parameters, the slice's, the top-level ones,
// then the default, on the input's own tensor name; required ones may be missing only for the base model.
func (m *ModelMerge) perModel(t *mergeTensor, i int, name string) (float64, bool, error) {
	in := t.inputs[i]
	if v, ok := lookupParam(name, in.name, t.t, in.src.Parameters, t.slice.Parameters, m.Config.Parameters); ok {
		return v, true, nil
	}
	def := m.method.perModel[name]
	if math.IsNaN(def) {
		if i == t.base {
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("%w %s for model %s", errMissingParameter, name, in.src.Model)
	}
	return def, true, nil
}

func lookupParam(name, tensorName string, t float64, levels ...MergekitParameters) (float64, bool) {
	for _, ps := range levels {
		if s := ps[name]; s != nil {
			if v, ok := s.Eval(tensorName, t); ok {
				return v, true
			}
		}
	}
	return 0, false
}

// combine applies the merge method to the decoded inputs; xs may be overwritten.
func (m *ModelMerge) combine(t *mergeTensor, xs [][]float32, seed uint64) ([]float32, error) {
	switch m.Config.Method {
	case "linear":
		weights := make([]float64, len(xs))
		for i := range xs {
			w, ok, err := m.perModel(t, i, "weight")
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, fmt.Errorf("%w weight for the base model %s (linear weighs every model)", errMissingParameter, t.inputs[i].src.Model)
			}
			weights[i] = w
		}
		normalize, err := m.global(t, "normalize")
		if err != nil {
			return nil, err
		}
		return linearMerge(xs, weights, normalize != 0)
	case "slerp":
		if len(xs) == 1 {
			return xs[0], nil
		}
		if len(xs) != 2 || t.base < 0 {
			return nil, fmt.Errorf("slerp merges exactly two models, one of them the base; got %d inputs", len(xs))
		}
		tt, err := m.global(t, "t")
		if err != nil {
			return nil, err
		}
		return slerp(tt, xs[t.base], xs[1-t.base]), nil
	case "model_stock":
		fw, err := m.global(t, "filter_wise")
		if err != nil {
			return nil, err
		}
		return modelStock(t.shape, xs, t.base, fw != 0)
	case "passthrough":
		if len(xs) != 1 {
			return nil, fmt.Errorf("passthrough takes exactly one model per slice, got %d", len(xs))
		}
		s, _, err := m.perModel(t, 0, "scale")
		if err != nil {
			return nil, err
		}
		if s != 1 {
			for j := range xs[0] {
				xs[0][j] *= float32(s)
			}
		}
		return xs[0], nil
	}
	return m.taskArithmetic(t, xs, seed)
}

// linearMerge is mergekit's linear merge (linear.py): Σ wᵢθᵢ, divided by Σ wᵢ with normalize, in float32 as
// torch computes it on float32 tensors.
func linearMerge(xs [][]float32, weights []float64, normalize bool) ([]float32, error) {
	res := make([]float32, len(xs[0]))
	var sum float32
	for i, x := range xs {
		w := float32(weights[i])
		sum += w
		for j, v := range x {
			res[j] += w * v
		}
	}
	if normalize {
		if sum == 0 {
			return nil, errors.New("linear: the weights sum to 0, so they cannot be normalized (set normalize: false)")
		}
		for j := range res {
			res[j] /= sum
		}
	}
	return res, nil
}

// slerp is mergekit's slerp (slerp.py): the angle between the whole flattened tensors, each normalized unless its
// norm is at most 1e-8; when |cos| > 0.9995 they are treated as colinear and interpolated linearly. The weights
// are applied to the unnormalized tensors, in float32 as mergekit's numpy code does.
func slerp(t float64, v0, v1 []float32) []float32 {
	const dotThreshold, eps = 0.9995, 1e-8
	var n0, n1, dot float64
	for j := range v0 {
		a, b := float64(v0[j]), float64(v1[j])
		n0 += a * a
		n1 += b * b
		dot += a * b
	}
	n0, n1 = math.Sqrt(n0), math.Sqrt(n1)
	if n0 > eps {
		dot /= n0
	}
	if n1 > eps {
		dot /= n1
	}
	var s0, s1 float32
	if math.Abs(dot) > dotThreshold {
		s0, s1 = float32(1-t), float32(t)
	} else {
		theta := math.Acos(dot)
		sinTheta := math.Sin(theta)
		s0 = float32(math.Sin(theta-theta*t) / sinTheta)
		s1 = float32(math.Sin(theta*t) / sinTheta)
	}
	res := make([]float32, len(v0))
	for j := range res {
		res[j] = s0*v0[j] + s1*v1[j]
	}
	return res
}

// modelStock is mergekit's model_stock (model_stock.py, Jang et al. arXiv 2403.19522): with offsets δᵢ = θᵢ − θ₀
// of the N fine-tuned models, cos θ is the mean pairwise cosine (of the whole tensor, or of each row with
// filterWise, a row being the last dimension), t = N·cos/(1 + (N−1)·cos), and the result t·mean(θᵢ) + (1−t)·θ₀.
func modelStock(shape tensor.Shape, xs [][]float32, base int, filterWise bool) ([]float32, error) {
	if len(xs) == 1 && base == 0 {
		return xs[0], nil
	}
	if base < 0 || len(xs) < 3 {
		return nil, fmt.Errorf("model_stock needs the base and at least two other models, got %d inputs", len(xs))
	}
	w0 := xs[base]
	var ws [][]float32
	for i, x := range xs {
		if i != base {
			ws = append(ws, x)
		}
	}
	row := len(w0)
	if filterWise && len(shape) > 0 {
		row = int(shape[len(shape)-1])
	}
	res := make([]float32, len(w0))
	if row == 0 {
		return res, nil
	}
	n := float64(len(ws))
	for lo := 0; lo < len(w0); lo += row {
		hi := lo + row
		cos, pairs := 0.0, 0
		for i := range ws {
			for j := i + 1; j < len(ws); j++ {
				var dot, ni, nj float64
				for k := lo; k < hi; k++ {
					a, b := float64(ws[i][k]-w0[k]), float64(ws[j][k]-w0[k])
					dot += a * b
					ni += a * a
					nj += b * b
				}
				c := dot / max(math.Sqrt(ni)*math.Sqrt(nj), 1e-6)
				cos += min(max(c, -1), 1)
				pairs++
			}
		}
		cos /= float64(pairs)
		t := float32(n * cos / (1 + (n-1)*cos))
		for k := lo; k < hi; k++ {
			var sum float32
			for _, w := range ws {
				sum += w[k]
			}
			res[k] = t*(sum/float32(n)) + (1-t)*w0[k]
		}
	}
	return res, nil
}

// taskArithmetic runs mergekit's generalized task arithmetic (generalized_task_arithmetic.py): task vectors
// against the base, sparsified per model (density, gamma, L1 rescale with rescale), combined with the weights
// under TIES sign consensus for the *_ties methods, normalized and scaled by lambda, added to the base. The
// sparsification and combination are TaskSparsifier and TaskCombiner under SemanticsMergekit.
func (m *ModelMerge) taskArithmetic(t *mergeTensor, xs [][]float32, seed uint64) ([]float32, error) {
	if t.base < 0 {
		return nil, fmt.Errorf("%s needs the base model among the inputs", m.Config.Method)
	}
	base := xs[t.base]
	if len(xs) == 1 {
		return base, nil
	}
	var g [3]float64
	for k, name := range []string{"normalize", "rescale", "lambda"} {
		v, err := m.global(t, name)
		if err != nil {
			return nil, err
		}
		g[k] = v
	}
	normalize, rescale, lambda := g[0] != 0, g[1] != 0, g[2]
	sp := TaskSparsifier{Method: m.method.sparsify}
	if rescale {
		sp.Rescale = RescaleL1
	}
	var tvs [][]float32
	var weights []float64
	for i, x := range xs {
		if i == t.base {
			continue
		}
		var p [3]float64
		for k, name := range []string{"weight", "density", "gamma"} {
			if _, used := m.method.perModel[name]; !used {
				continue
			}
			v, _, err := m.perModel(t, i, name)
			if err != nil {
				return nil, err
			}
			p[k] = v
		}
		for j := range x {
			x[j] -= base[j]
		}
		sp.Gamma = p[2]
		var rng = TaskRand(seed, t.name, len(tvs))
		if sp.Method != SparsifyRandom {
			rng = nil
		}
		// mergekit returns the task vector unchanged for density >= 1.
		if err := sp.Apply(x, min(p[1], 1), rng); err != nil {
			return nil, fmt.Errorf("model %s: %w", t.inputs[i].src.Model, err)
		}
		tvs = append(tvs, x)
		weights = append(weights, p[0])
	}
	c := TaskCombiner{Semantics: SemanticsMergekit, Normalize: normalize, Lambda: lambda}
	if m.method.consensus {
		c.Consensus = ConsensusSum
	}
	res := make([]float32, len(base))
	if err := c.Combine(res, tvs, weights); err != nil {
		return nil, err
	}
	for j := range res {
		res[j] += base[j]
	}
	return res, nil
}

// hfFiles are the files of a Hugging Face model directory that describe it rather than hold weights; a merged
// HF model takes them from the reference, as mergekit copies the base's configuration and tokenizer.
var hfFiles = []string{"config.json", "generation_config.json", "tokenizer.json", "tokenizer.model",
	"tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
	"chat_template.jinja", "chat_template.json"}

// WriteHFFiles copies the reference's configuration and tokenizer files into dir and returns their names.
// config.json gets the output's num_hidden_layers when slices changed the depth and torch_dtype when out_dtype or
// dtype set the stored type; otherwise every file is copied byte for byte.
func (m *ModelMerge) WriteHFFiles(dir string) ([]string, error) {
	src := m.Reference.Path
	if st, err := os.Stat(src); err != nil || !st.IsDir() {
		src = filepath.Dir(src)
	}
	var copied []string
	for _, name := range hfFiles {
		data, err := os.ReadFile(filepath.Join(src, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return copied, err
		}
		if name == "config.json" {
			if data, err = m.hfConfig(data); err != nil {
				return copied, fmt.Errorf("%s: %w", filepath.Join(src, name), err)
			}
		}
		if err := atomicfile.WriteFile(filepath.Join(dir, name), data); err != nil {
			return copied, err
		}
		copied = append(copied, name)
	}
	return copied, nil
}

var torchDTypes = map[tensor.DType]string{tensor.F32: "float32", tensor.F16: "float16", tensor.BF16: "bfloat16"}

func (m *ModelMerge) hfConfig(data []byte) ([]byte, error) {
	dt := m.Config.OutDType
	if dt == tensor.Invalid {
		dt = m.Config.DType
	}
	if !m.Resized && dt == tensor.Invalid {
		return data, nil
	}
	var cfg map[string]any
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, err
	}
	if m.Resized {
		cfg["num_hidden_layers"] = m.Layers
	}
	if dt != tensor.Invalid {
		cfg["torch_dtype"] = torchDTypes[dt]
	}
	out, err := json.MarshalIndent(cfg, "", "  ")
	return append(out, '\n'), err
}
