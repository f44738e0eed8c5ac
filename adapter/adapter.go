// Package adapter reads LoRA adapters — PEFT directories (adapter_config.json + adapter_model.safetensors) and
// llama.cpp GGUF adapters — and presents each as a list of modules: the base tensor a module updates, its
// lora_A/lora_B factors, and the scaling that turns them into the update ΔW = scale·B·A
// (../shared/reference/formats-quant.md §1.4, §5; spectral-prune-merge.md §5.1).
package adapter

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/spectral"
	"github.com/lathe-ml/lathe/tensor"
)

// Format names an adapter file format.
type Format string

const (
	PEFT Format = "peft"
	GGUF Format = "gguf"
)

// Files of a PEFT adapter directory.
const (
	ConfigName  = "adapter_config.json"
	WeightsName = "adapter_model.safetensors"
)

// Layout says how a module's stored factors form ΔW in the orientation of the base tensor.
type Layout uint8

const (
	// Linear: A is [r, in], B is [out, r], ΔW = scale·B·A (PEFT and GGUF linear layers).
	Linear Layout = iota
	// Transposed: ΔW = scale·(B·A)ᵀ — PEFT embeddings (lora_embedding_A [r, vocab], lora_embedding_B [dim, r]) and
	// fan_in_fan_out layers (GPT-2 Conv1D, whose weight is stored [in, out]).
	Transposed
	// GGUFEmbedding: token_embd's lora_a is stored [vocab, r] and lora_b [dim, r]; llama.cpp's export-lora forms
	// mul_mat(B, A), i.e. ΔW = scale·A·Bᵀ.
	GGUFEmbedding
)

// Module is one LoRA-adapted weight.
type Module struct {
	Name       string // PEFT: module path in the base model ("model.layers.0.self_attn.q_proj"); GGUF: the target
	Target     string // the base tensor the update applies to ("model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight")
	A, B       tensor.View
	Magnitude  *tensor.View // DoRA's lora_magnitude_vector, nil for plain LoRA
	Layout     Layout
	Rank       int     // from the factors' shapes
	ConfigRank int     // r that the configuration gives this module (after rank_pattern); PEFT sizes layers with it
	Alpha      float64 // lora_alpha after alpha_pattern (GGUF: adapter.lora.alpha)
	Scale      float64 // the factor applied to the factors' product
}

// Adapter is an open adapter. Views in its modules are valid until Close.
type Adapter struct {
	Path    string // the PEFT directory or the GGUF file
	Format  Format
	Config  *Config  // PEFT's configuration; for GGUF, LoraAlpha only
	Modules []Module // sorted by Target
	Extra   []string // tensors that are not LoRA factors (modules_to_save copies, lora_B.bias, norms), sorted
	Files   []string // files read
	Bytes   int64    // their total size

	tensors interface {
		Tensor(name string) (tensor.View, error)
		Close() error
	}
	names []string // every tensor, in file order
}

// Open opens a PEFT adapter directory, an mlx-lm adapter directory (adapters.safetensors and no
// adapter_model.safetensors) or a GGUF adapter file.
func Open(path string) (*Adapter, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		_, errPEFT := os.Stat(filepath.Join(path, WeightsName))
		if _, errMLX := os.Stat(filepath.Join(path, MLXWeightsName)); errMLX == nil && errors.Is(errPEFT, os.ErrNotExist) {
			return OpenMLX(filepath.Join(path, ConfigName), filepath.Join(path, MLXWeightsName))
		}
		return OpenPEFT(path)
	}
	return OpenGGUF(path)
}

// Close releases the files.
func (a *Adapter) Close() error { return a.tensors.Close() }

// Tensor returns any tensor of the adapter file by name.
func (a *Adapter) Tensor(name string) (tensor.View, error) { return a.tensors.Tensor(name) }

// TensorNames lists every tensor of the adapter file, in file order.
func (a *Adapter) TensorNames() []string { return slices.Clone(a.names) }

// Shape returns the shape of the update ΔW, which is that of the base tensor.
func (m *Module) Shape() (rows, cols int) {
	switch m.Layout {
	case Transposed:
		return int(m.A.Shape[1]), int(m.B.Shape[0])
	case GGUFEmbedding:
		return int(m.A.Shape[0]), int(m.B.Shape[0])
	}
	return int(m.B.Shape[0]), int(m.A.Shape[1])
}

// Factors decodes the module into left (rows×r) and right (r×cols) matrices with ΔW = Scale·left·right in the base
// tensor's orientation.
func (m *Module) Factors() (left, right *spectral.Matrix, err error) {
	a, err := spectral.FromView(m.A)
	if err != nil {
		return nil, nil, err
	}
	b, err := spectral.FromView(m.B)
	if err != nil {
		return nil, nil, err
	}
	switch m.Layout {
	case Transposed: // (B·A)ᵀ = Aᵀ·Bᵀ
		return a.T(), b.T(), nil
	case GGUFEmbedding:
		return a, b.T(), nil
	}
	return b, a, nil
}

// FormatError reports an adapter whose files are readable but whose tensors do not form a valid adapter.
type FormatError struct {
	File   string
	Tensor string
	Err    error
}

func (e *FormatError) Error() string {
	if e.Tensor == "" {
		return fmt.Sprintf("%s: %v", e.File, e.Err)
	}
	return fmt.Sprintf("%s: tensor %q: %v", e.File, e.Tensor, e.Err)
}
func (e *FormatError) Unwrap() error { return e.Err }

// checkFactors validates a module's factor shapes for its layout and returns the rank.
func checkFactors(file string, m *Module) (int, error) {
	bad := func(name string, format string, args ...any) error {
		return &FormatError{File: file, Tensor: name, Err: fmt.Errorf(format, args...)}
	}
	for _, v := range []tensor.View{m.A, m.B} {
		if len(v.Shape) != 2 || v.Shape[0] <= 0 || v.Shape[1] <= 0 {
			return 0, bad(v.Name, "shape %v: want two nonzero dimensions", v.Shape)
		}
		if !v.DType.IsFloat() {
			return 0, bad(v.Name, "dtype %s: LoRA factors must be a float type", v.DType)
		}
	}
	var ra, rb int64
	switch m.Layout {
	case GGUFEmbedding: // a [vocab, r], b [dim, r]
		ra, rb = m.A.Shape[1], m.B.Shape[1]
	default: // a [r, in], b [out, r]
		ra, rb = m.A.Shape[0], m.B.Shape[1]
	}
	if ra != rb {
		return 0, bad(m.A.Name, "rank %d does not match %q's %d (A %v, B %v)", ra, m.B.Name, rb, m.A.Shape, m.B.Shape)
	}
	if m.Magnitude != nil {
		rows, cols := m.Shape()
		out := int64(rows)
		if m.Layout == Transposed {
			out = int64(cols)
		}
		if len(m.Magnitude.Shape) != 1 || m.Magnitude.Shape[0] != out {
			return 0, bad(m.Magnitude.Name, "shape %v: DoRA magnitude needs one value per output feature (%d)",
				m.Magnitude.Shape, out)
		}
	}
	return int(ra), nil
}

// peftPrefix is what PEFT's get_peft_model_state_dict puts before module names.
const peftPrefix = "base_model.model."

// peftSuffixes map the tensor-name endings of a saved PEFT LoRA to the part they hold.
var peftSuffixes = []struct{ suffix, part string }{
	{".lora_A.weight", "A"},
	{".lora_B.weight", "B"},
	{".lora_embedding_A", "embA"},
	{".lora_embedding_B", "embB"},
	{".lora_magnitude_vector", "mag"},
	{".lora_magnitude_vector.weight", "mag"}, // PEFT before 0.14 kept the parameter's suffix
}

// OpenPEFT opens a PEFT LoRA adapter directory.
func OpenPEFT(dir string) (*Adapter, error) {
	cfgPath := filepath.Join(dir, ConfigName)
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, err
	}
	cfg, err := ParseConfig(cfgPath, data)
	if err != nil {
		return nil, err
	}
	wPath := filepath.Join(dir, WeightsName)
	if _, err := os.Stat(wPath); errors.Is(err, os.ErrNotExist) {
		if _, berr := os.Stat(filepath.Join(dir, "adapter_model.bin")); berr == nil {
			return nil, fmt.Errorf("%s: adapter_model.bin is a PyTorch pickle, which lathe does not read; save the adapter with safe_serialization=True", dir)
		}
	}
	f, err := safetensors.Open(wPath)
	if err != nil {
		return nil, err
	}
	a, err := newPEFT(dir, wPath, cfg, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	a.Files = []string{cfgPath, wPath}
	a.Bytes = int64(len(data)) + f.Size()
	return a, nil
}

// newPEFT pairs the tensors of a PEFT weights file into modules.
func newPEFT(dir, file string, cfg *Config, set safetensors.Set) (*Adapter, error) {
	a := &Adapter{Path: dir, Format: PEFT, Config: cfg, tensors: set}
	mods := map[string]*Module{}
	for _, t := range set.Tensors() {
		a.names = append(a.names, t.Name)
		part, name := "", ""
		for _, s := range peftSuffixes {
			if strings.HasSuffix(t.Name, s.suffix) {
				part, name = s.part, strings.TrimPrefix(strings.TrimSuffix(t.Name, s.suffix), peftPrefix)
				break
			}
		}
		if part == "" {
			a.Extra = append(a.Extra, t.Name)
			continue
		}
		v, err := set.Tensor(t.Name)
		if err != nil {
			return nil, err
		}
		m := mods[name]
		if m == nil {
			m = &Module{Name: name, Target: name + ".weight"}
			mods[name] = m
		}
		switch part {
		case "A", "embA":
			m.A = v
		case "B", "embB":
			m.B = v
		case "mag":
			m.Magnitude = &v
		}
		if part == "embA" || part == "embB" || cfg.FanInFanOut && (part == "A" || part == "B") {
			m.Layout = Transposed
		}
	}
	for _, name := range slices.Sorted(maps.Keys(mods)) {
		m := mods[name]
		if m.A.Name == "" || m.B.Name == "" {
			have := m.A.Name + m.B.Name
			if have == "" {
				have = m.Magnitude.Name
			}
			return nil, &FormatError{File: file, Tensor: have, Err: errors.New("LoRA factor without its partner (lora_A and lora_B come in pairs)")}
		}
		r, err := checkFactors(file, m)
		if err != nil {
			return nil, err
		}
		m.Rank = r
		m.ConfigRank, m.Alpha = cfg.RankAlpha(name)
		m.Scale = cfg.Scale(m.ConfigRank, m.Alpha)
		a.Modules = append(a.Modules, *m)
	}
	slices.SortFunc(a.Modules, func(x, y Module) int { return strings.Compare(x.Target, y.Target) })
	slices.Sort(a.Extra)
	return a, nil
}

// GGUF adapter keys (llama.cpp src/llama-adapter.cpp, convert_lora_to_gguf.py).
const (
	keyGeneralType = "general.type"
	keyAdapterType = "adapter.type"
	keyLoraAlpha   = "adapter.lora.alpha"
)

// OpenGGUF opens a llama.cpp LoRA adapter: general.type "adapter", adapter.type "lora", tensors named
// "<base tensor>.lora_a" and ".lora_b". As llama.cpp's loader does, a missing adapter.lora.alpha reads as 0 and
// then the scale is 1; otherwise it is alpha/rank per tensor.
func OpenGGUF(path string) (*Adapter, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	a, err := newGGUF(path, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	if st, err := os.Stat(path); err == nil {
		a.Bytes = st.Size()
	}
	a.Files = []string{path}
	return a, nil
}

func newGGUF(path string, f *gguf.File) (*Adapter, error) {
	md := f.Metadata
	for _, kv := range []struct{ key, want string }{{keyGeneralType, "adapter"}, {keyAdapterType, "lora"}} {
		got, err := md.String(kv.key)
		if err != nil || got != kv.want {
			return nil, &FormatError{File: path, Err: fmt.Errorf("key %s = %q: a LoRA adapter has %q", kv.key, got, kv.want)}
		}
	}
	alpha := 0.0
	if _, ok := md.Get(keyLoraAlpha); ok {
		v, err := md.Float32(keyLoraAlpha)
		if err != nil {
			return nil, &FormatError{File: path, Err: fmt.Errorf("key %s: %w", keyLoraAlpha, err)}
		}
		alpha = float64(v)
	}
	a := &Adapter{Path: path, Format: GGUF, Config: &Config{PeftType: "LORA", LoraAlpha: alpha}, tensors: f}
	names := make([]string, 0, len(f.Tensors()))
	for _, t := range f.Tensors() {
		names = append(names, t.Name)
	}
	mods, err := a.pairFactors(path, names, f.Tensor, func(target string) *Module {
		m := &Module{Name: target, Target: target}
		if target == "token_embd.weight" {
			m.Layout = GGUFEmbedding
		}
		return m
	})
	if err != nil {
		return nil, err
	}
	for _, m := range mods {
		m.ConfigRank, m.Alpha, m.Scale = m.Rank, alpha, 1
		if alpha != 0 {
			m.Scale = alpha / float64(m.Rank)
		}
		a.Modules = append(a.Modules, *m)
	}
	return a, nil
}

// pairFactors groups the "<base>.lora_a" and "<base>.lora_b" tensors of the GGUF and MLX layouts into modules made
// by newModule(base), in base order, checking that they pair up and that their shapes agree (Rank is set). Other
// tensors are listed, sorted, in a.Extra.
func (a *Adapter) pairFactors(file string, names []string, load func(name string) (tensor.View, error),
	newModule func(base string) *Module) ([]*Module, error) {
	mods := map[string]*Module{}
	for _, name := range names {
		a.names = append(a.names, name)
		base, isA := strings.CutSuffix(name, ".lora_a")
		if !isA {
			var isB bool
			if base, isB = strings.CutSuffix(name, ".lora_b"); !isB {
				a.Extra = append(a.Extra, name)
				continue
			}
		}
		v, err := load(name)
		if err != nil {
			return nil, err
		}
		m := mods[base]
		if m == nil {
			m = newModule(base)
			mods[base] = m
		}
		if isA {
			m.A = v
		} else {
			m.B = v
		}
	}
	slices.Sort(a.Extra)
	out := make([]*Module, 0, len(mods))
	for _, base := range slices.Sorted(maps.Keys(mods)) {
		m := mods[base]
		if m.A.Name == "" || m.B.Name == "" {
			return nil, &FormatError{File: file, Tensor: m.A.Name + m.B.Name, Err: errors.New("lora_a and lora_b come in pairs")}
		}
		r, err := checkFactors(file, m)
		if err != nil {
			return nil, err
		}
		m.Rank = r
		out = append(out, m)
	}
	return out, nil
}

// WritePEFT writes a PEFT adapter directory holding this adapter's configuration file as it was read and its
// tensors, with those named in replace swapped for the given views (same names; shapes may differ). The directory is
// created if needed; it must not be the adapter's own. Both files are written atomically.
func (a *Adapter) WritePEFT(dir string, replace map[string]tensor.View) error {
	if a.Format != PEFT {
		return fmt.Errorf("%s: writing a %s adapter as PEFT is not supported yet", a.Path, a.Format)
	}
	if same, err := sameDir(dir, a.Path); err != nil || same {
		if err == nil {
			err = fmt.Errorf("%s is the input adapter's directory; write the new adapter elsewhere", dir)
		}
		return err
	}
	views := make([]tensor.View, 0, len(a.names))
	for _, name := range a.names {
		v, ok := replace[name]
		if !ok {
			var err error
			if v, err = a.tensors.Tensor(name); err != nil {
				return err
			}
		}
		views = append(views, v)
	}
	for name := range replace {
		if !slices.Contains(a.names, name) {
			return fmt.Errorf("%s: replacement for %q, which the adapter does not have", a.Path, name)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var md map[string]string
	if s, ok := a.tensors.(safetensors.Set); ok {
		md = s.Metadata()
	}
	if err := safetensors.WriteFile(filepath.Join(dir, WeightsName), views, md); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, ConfigName), a.Config.Raw)
}

func sameDir(a, b string) (bool, error) {
	sa, err := os.Stat(a)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	sb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(sa, sb), nil
}
