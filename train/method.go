package train

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/lathe-ml/lathe/internal/kernels"
)

// The methods other than LoRA and DyLoRA plug in here: each is registered under its --method name with a
// constructor, and lays its trainable parameters on the targeted projections through the projection interface.
// Everything else — data, AdamW, schedule, accumulation, clipping, validation, checkpoints, determinism — is the
// trainer's, so that two methods run with the same flags and seed see the same windows in the same order.

// methodSpec describes a registered method.
type methodSpec struct {
	// summary is one line for `lathe train --help` and errors.
	summary string
	// args are the keys TrainOptions.MethodArgs may set, with their defaults (as text).
	args map[string]string
	// build makes the method for a run; args holds every key of the spec's args, defaults filled in.
	build func(cfg LoRAConfig, args methodArgs) (method, error)
	// dense says the method's update is full-rank (its projections are dense, not lowRank): it writes a merged
	// model, not an adapter.
	dense bool
	// peft says the method writes a PEFT adapter of a type other than plain LoRA (its method is an adapterWriter),
	// which llama.cpp does not load.
	peft bool
}

// methods is the registry, filled by the init functions of the methods' files.
var methods = map[string]methodSpec{}

func registerMethod(name string, spec methodSpec) {
	if _, dup := methods[name]; dup || name == MethodLoRA || name == MethodDyLoRA {
		panic("train: method " + name + " registered twice")
	}
	methods[name] = spec
}

// Methods returns the names of the training methods with a one-line summary of each, sorted by name.
func Methods() [][2]string {
	out := [][2]string{{MethodLoRA, "LoRA: trainable B·A on frozen projections (default)"},
		{MethodDyLoRA, "DyLoRA: nested ranks, one drawn per step; any leading slice is a LoRA"}}
	for _, name := range slices.Sorted(maps.Keys(methods)) {
		out = append(out, [2]string{name, methods[name].summary})
	}
	slices.SortFunc(out, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	return out
}

// MethodArgs returns the keys TrainOptions.MethodArgs may set for a method, with their defaults.
func MethodArgs(name string) (map[string]string, error) {
	if name == MethodLoRA || name == MethodDyLoRA {
		return map[string]string{}, nil
	}
	spec, ok := methods[name]
	if !ok {
		return nil, unknownMethod(name)
	}
	return maps.Clone(spec.args), nil
}

// The results a method writes (MethodOutput).
const (
	// OutputLoRA is a plain PEFT LoRA adapter (LoRA.WritePEFT), which llama.cpp loads once converted to GGUF.
	OutputLoRA = "lora"
	// OutputPEFT is a PEFT adapter of another type (DoRA's), which PEFT and lathe load but llama.cpp does not.
	OutputPEFT = "peft"
	// OutputMerged is a merged model only, the update being full-rank: LoRA.Deltas added to the base by
	// adapter.MergeDeltasGGUF or MergeDeltasSafetensors.
	OutputMerged = "merged"
)

// MethodOutput says what a method's result is: OutputLoRA, OutputPEFT or OutputMerged.
func MethodOutput(name string) (string, error) {
	if name == MethodLoRA || name == MethodDyLoRA {
		return OutputLoRA, nil
	}
	spec, ok := methods[name]
	switch {
	case !ok:
		return "", unknownMethod(name)
	case spec.dense:
		return OutputMerged, nil
	case spec.peft:
		return OutputPEFT, nil
	}
	return OutputLoRA, nil
}

func unknownMethod(name string) error {
	var names []string
	for _, m := range Methods() {
		names = append(names, m[0])
	}
	return fmt.Errorf("train: unknown method %q (want one of %s)", name, strings.Join(names, ", "))
}

// newMethod builds the registered method cfg.Method with cfg.MethodArgs checked against its keys.
func newMethod(cfg LoRAConfig) (method, error) {
	spec, ok := methods[cfg.Method]
	if !ok {
		return nil, unknownMethod(cfg.Method)
	}
	var first error
	args := methodArgs{method: cfg.Method, values: maps.Clone(spec.args), first: &first}
	for _, k := range slices.Sorted(maps.Keys(cfg.MethodArgs)) {
		if _, ok := spec.args[k]; !ok {
			keys := slices.Sorted(maps.Keys(spec.args))
			if len(keys) == 0 {
				return nil, fmt.Errorf("train: method %s takes no arguments, got %s", cfg.Method, k)
			}
			return nil, fmt.Errorf("train: method %s has no argument %q (it takes %s)", cfg.Method, k,
				strings.Join(keys, ", "))
		}
		args.values[k] = cfg.MethodArgs[k]
	}
	m, err := spec.build(cfg, args)
	if err != nil {
		return nil, err
	}
	return m, first
}

// methodArgs reads a method's arguments; the first malformed one is kept in err and, through first, which every
// copy shares, reported by newMethod whether or not build returns it.
type methodArgs struct {
	method string
	values map[string]string
	err    error
	first  *error
}

func (a *methodArgs) fail(key, want string) {
	if a.err == nil {
		a.err = fmt.Errorf("train: method %s: argument %s=%q: want %s", a.method, key, a.values[key], want)
	}
	if a.first != nil && *a.first == nil {
		*a.first = a.err
	}
}

// Int returns the integer argument key, which must be at least lo.
func (a *methodArgs) Int(key string, lo int) int {
	n, err := strconv.Atoi(a.values[key])
	if err != nil || n < lo {
		a.fail(key, fmt.Sprintf("an integer ≥ %d", lo))
	}
	return n
}

// Float returns the float argument key, which must lie in [lo, hi].
func (a *methodArgs) Float(key string, lo, hi float64) float64 {
	f, err := strconv.ParseFloat(a.values[key], 64)
	if err != nil || !(f >= lo && f <= hi) {
		a.fail(key, fmt.Sprintf("a number in [%g, %g]", lo, hi))
	}
	return f
}

// Bool returns the boolean argument key.
func (a *methodArgs) Bool(key string) bool {
	b, err := strconv.ParseBool(a.values[key])
	if err != nil {
		a.fail(key, "true or false")
	}
	return b
}

// String returns the argument key, which must be one of choices when any are given.
func (a *methodArgs) String(key string, choices ...string) string {
	s := a.values[key]
	if len(choices) > 0 && !slices.Contains(choices, s) {
		a.fail(key, "one of "+strings.Join(choices, ", "))
	}
	return s
}

// canonicalArgs is the method arguments as they enter a checkpoint's fingerprint: sorted JSON, "" when none.
func canonicalArgs(args map[string]string) string {
	if len(args) == 0 {
		return ""
	}
	b, _ := json.Marshal(args) // map keys are sorted by encoding/json
	return string(b)
}

// method is a registered training method for one run. It must be deterministic: randomness comes from site.seed
// or from the step number, never from state that a checkpoint would not restore.
type method interface {
	// project returns the trainable projection that replaces plain LoRA factors on one targeted weight.
	project(s site) (projection, error)
}

// site is where a projection sits.
type site struct {
	w      *matrix
	layer  int
	module string // the PEFT module name: q_proj … down_proj
	// rows is the most rows (batch·ctx) a pass computes: the size of the activations the projection keeps.
	rows int
	cfg  LoRAConfig
	// seed is the run's seed mixed with the layer and module, for a projection's own random draws.
	seed uint64
}

func siteSeed(seed uint64, layer int, module string) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%d/%s", seed, layer, module)
	return h.Sum64()
}

// projection is a frozen weight with a method's trainable parameters. It computes the whole output, the frozen
// product included (frozenForward and frozenBackward do that part), so that methods that rescale or reshape the
// base (DoRA, Bone) fit as well as additive ones.
type projection interface {
	// forward sets y (n×rows of the weight) from x (n×cols) and keeps what backward needs.
	forward(y, x []float32, n int, buf *[]float32)
	// backward adds the input gradient to dx and the parameter gradients to the tensors params returns (which
	// the trainer clears before each backward pass), for the x and n of the last forward.
	backward(dx, dy, x []float32, n int, buf *[]float32)
	// params returns the trainable tensors and their gradients, in the same order, the same slices every call.
	params() (params, grads [][]float32)
}

// The optional interfaces below let a method take part in the rest of the run.

// lowRank is a projection whose update is a LoRA: ΔW = B·A with A rank×cols and B rows×rank, the scale folded in.
// Runs whose projections are all lowRank write a PEFT LoRA adapter (plain, so llama.cpp, PEFT and lathe load it).
type lowRank interface {
	factors() (a, b []float32, rank int)
}

// dense is a projection whose update is written out whole: ΔW (rows×cols) into dst. Runs with such projections
// write a merged model only.
type dense interface {
	delta(dst []float32)
}

// gradHook is a method that changes the gradients before clipping and the update: regularizers add their
// gradient, schedules freeze parameters by zeroing theirs. step is the step about to be taken (1-based).
type gradHook interface {
	beforeUpdate(step int, grads [][]float32)
}

// stepHook is a method that acts after each optimizer update (pruning, mask refresh).
type stepHook interface {
	afterUpdate(step int) error
}

// lrScaler is a method that scales AdamW's learning rate per parameter entry: the returned tensors (Params order,
// nil for unscaled ones) multiply the step size, and are read at every step, so the method may change them.
type lrScaler interface {
	lrScales() [][]float32
}

// stateful is a method with state that a checkpoint must hold besides the parameters and Adam's moments:
// named float32 tensors, saved and restored in place.
type stateful interface {
	state() []namedFloats
}

type namedFloats struct {
	name string
	f    []float32
}

// starter is a method that acts on the run once, before the trainer takes the parameter tensors (which start may
// therefore resize): initialisations that read training data (EVA) and methods that move the optimizer's moments
// between entries (LIFT). It runs on a resumed run too, before the checkpoint restores parameters, moments and state.
type starter interface {
	start(t *trainer) error
}

// fileName is the name in the model's file of projection j (loraLayer.linears order) of layer i: the GGUF name for
// a GGUF model, the Hugging Face one for a checkpoint directory.
func (l *LoRA) fileName(i, j int, w *matrix) string {
	if l.m.Config.RopeNeoX { // a Hugging Face checkpoint, whose rows the model keeps in the file's order
		return fmt.Sprintf("model.layers.%d.%s.weight", i, peftModules[j])
	}
	return w.name
}

// adapterWriter is a method that writes its own adapter directory (a PEFT type other than LORA, say) instead of
// the plain LoRA the lowRank projections give.
type adapterWriter interface {
	writeAdapter(l *LoRA, dir string) error
}

// writeMethod writes the adapter of a registered method: its own format (adapterWriter), or the plain LoRA its
// lowRank projections make, with the scale folded into the factors.
func (l *LoRA) writeMethod(dir string) error {
	if w, ok := l.method.(adapterWriter); ok {
		return w.writeAdapter(l, dir)
	}
	var factors [][]float32
	var ranks []int
	for i := range l.layers {
		for _, lin := range l.layers[i].adapted() {
			lr, ok := lin.proj.(lowRank)
			if !ok {
				return fmt.Errorf("train: method %s changes %s at full rank, which no LoRA adapter holds: write "+
					"the merged model instead (lathe train --merge-out)", l.Method, lin.w.name)
			}
			a, b, r := lr.factors()
			factors, ranks = append(factors, a, b), append(ranks, r)
		}
	}
	return l.writeLoRA(dir, factors, ranks, 0, false)
}

// Deltas returns the update of every trained projection as a dense ΔW, keyed by the tensor's name in the model's
// file (GGUF names for a GGUF model, Hugging Face ones for a checkpoint directory) with rows in the file's order:
// what adapter.MergeDeltasGGUF and MergeDeltasSafetensors add to the base to write the merged model. It takes 4
// bytes per weight of every trained projection (and embedding, norm and head of a wholeModel method).
func (l *LoRA) Deltas() (map[string][]float32, error) {
	out := map[string][]float32{}
	k := -1 // the index of the projection among the trained ones
	for i := range l.layers {
		for j, lin := range l.layers[i].linears() {
			if !lin.trained() {
				continue
			}
			k++
			rows, cols := lin.w.rows, lin.w.cols
			d := make([]float32, rows*cols)
			switch p := lin.proj.(type) {
			case nil:
				kernels.Sgemm(false, false, rows, cols, lin.active, lin.scale, lin.b, lin.rank, lin.a, cols, 0, d, cols)
				if l.initial != nil { // PiSSA, MiLoRA: the update is against the original weight
					a0, b0 := l.initial[2*k], l.initial[2*k+1]
					kernels.Sgemm(false, false, rows, cols, lin.rank, -lin.scale, b0, lin.rank, a0, cols, 1, d, cols)
				}
			case dense:
				p.delta(d)
			case lowRank:
				a, b, r := p.factors()
				kernels.Sgemm(false, false, rows, cols, r, 1, b, r, a, cols, 0, d, cols)
			default:
				return nil, fmt.Errorf("train: method %s has no dense form of its update of %s", l.Method, lin.w.name)
			}
			out[l.fileName(i, j, lin.w)] = d
		}
	}
	if l.extra != nil {
		if err := l.extra.deltas(l.m, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}
