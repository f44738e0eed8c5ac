package adapter

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/internal/linalg"
	"github.com/lathe-ml/lathe/internal/parallel"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/spectral"
	"github.com/lathe-ml/lathe/tensor"
)

// Combination methods of Combine (spectral-prune-merge.md §5.2, §5.3).
const (
	// CombineLinear: exactly Σ wᵢ·ΔWᵢ by concatenating the factors along the rank, A' = [A₁; A₂; …],
	// B' = [w₁s₁B₁ | w₂s₂B₂ | …]: no cross terms, rank Σ rᵢ. PEFT's "linear" (√w-weighted sums of the factors,
	// with cross terms BᵢAⱼ) is this method with FactorWise.
	CombineLinear = "linear"
	// CombineCat: PEFT's "cat", the same update as linear with the weights on A: A' = [w₁s₁A₁; …], B' = [B₁ | …].
	CombineCat = "cat"
	// CombineSVD: Σ wᵢ·ΔWᵢ truncated to Rank by SVD (PEFT's "svd", computed from the concatenated factors, so
	// exactly).
	CombineSVD = "svd"
	// The task-vector methods (taskvector.go) on the dense updates ΔWᵢ, then truncated to Rank by SVD: PEFT's
	// ties_svd, dare_linear_svd, dare_ties_svd, magnitude_prune_svd, or mergekit's method followed by
	// mergekit-extract-lora; with FactorWise, PEFT's ties, dare_linear, dare_ties, magnitude_prune on the factors.
	CombineTIES           = "ties"
	CombineDARELinear     = "dare_linear"
	CombineDARETIES       = "dare_ties"
	CombineMagnitudePrune = "magnitude_prune"
)

// CombineMethods lists the methods Combine accepts.
var CombineMethods = []string{CombineLinear, CombineCat, CombineSVD, CombineTIES, CombineDARELinear, CombineDARETIES, CombineMagnitudePrune}

// CombineOptions choose how Combine merges adapters.
type CombineOptions struct {
	Method  string    // one of CombineMethods; "" means linear
	Weights []float64 // one per adapter; nil means 1 each
	// Density is the fraction of each task vector kept by ties, dare_linear, dare_ties and magnitude_prune, in
	// (0, 1]; those methods require it (PEFT has no default; mergekit's 1 would silently skip the pruning).
	Density float64
	// Rank of every output module for svd and the task-vector methods; 0 means the largest input rank of the
	// module. It is capped at the module's smaller dimension.
	Rank      int
	Semantics Semantics
	// Consensus elects the TIES sign (ties, dare_ties); ConsensusNone means ConsensusSum (PEFT "total", mergekit
	// "sum").
	Consensus Consensus
	// FactorWise (PEFT semantics; linear, ties, dare_*, magnitude_prune) applies the method to the lists of A and of
	// B factors separately with weights sign(wᵢsᵢ)·√|wᵢsᵢ| on A and √|wᵢsᵢ| on B, as PEFT's add_weighted_adapter
	// does for those combination types: every adapter needs the same rank, and the update has cross terms BᵢAⱼ.
	FactorWise bool
	// Clamp is PEFT's svd_clamp for the SVD-truncated methods in PEFT semantics: the entries of U·S and Vh are
	// clamped to ±(the Clamp-quantile of their values); 0 means no clamping.
	Clamp   float64
	Seed    uint64 // DARE masks: module m of adapter i uses TaskRand(Seed, m, i) (FactorWise: m+".lora_A"/".lora_B")
	Workers int    // modules computed at once; 0 means GOMAXPROCS
}

// CombineError reports an input that Combine cannot use, naming the adapter and module.
type CombineError struct {
	Adapter string // path of the adapter, "" when the options are at fault
	Module  string
	Err     error
}

func (e *CombineError) Error() string {
	switch {
	case e.Adapter == "":
		return "combine: " + e.Err.Error()
	case e.Module == "":
		return fmt.Sprintf("combine: %s: %v", e.Adapter, e.Err)
	}
	return fmt.Sprintf("combine: %s: module %s: %v", e.Adapter, e.Module, e.Err)
}
func (e *CombineError) Unwrap() error { return e.Err }

// combineTerm is one adapter's part in a module of the combination.
type combineTerm struct {
	m       *Module
	w       float64
	adapter int // index among the inputs: picks the DARE stream
}

// Combine writes to dir a PEFT adapter combining the inputs' modules with opts.Method: see the Combine* constants.
// Each input's own scaling (α/r, α/√r, patterns) is applied once, so ΔWᵢ = sᵢBᵢAᵢ — unlike PEFT's svd path, which
// applies it twice when α ≠ r (§5.2 bug (a)). The result has scale 1 in every module (lora_alpha = r, rank_pattern and
// alpha_pattern for modules of another rank, use_rslora false even when the inputs use it, PEFT's bug (b)). SVD
// factors are PEFT's B' = U_r·diag(S_r), A' = Vh_r, or with mergekit semantics mergekit-extract-lora's
// B' = U_r·√S_r, A' = √S_r·Vh_r; transposed modules (embeddings, fan_in_fan_out) are decomposed in the factors'
// orientation, as PEFT does. A module present in only some adapters takes the terms of those. Factors are written
// as F32. Inputs are PEFT or MLX adapters (module names are model paths); DoRA adapters are refused, their update
// not being linear in the factors.
func Combine(dir string, adapters []*Adapter, opts CombineOptions) error {
	if opts.Method == "" {
		opts.Method = CombineLinear
	}
	if opts.Weights == nil {
		opts.Weights = make([]float64, len(adapters))
		for i := range opts.Weights {
			opts.Weights[i] = 1
		}
	}
	method, err := checkCombineOptions(len(adapters), &opts)
	if err != nil {
		return &CombineError{Err: err}
	}
	terms, err := groupModules(adapters, opts.Weights, opts.FactorWise)
	if err != nil {
		return err
	}
	names := slices.Sorted(maps.Keys(terms))
	results := make([]loraFactors, len(names))
	err = parallel.ForEach(len(names), opts.Workers, nil, func(_, k int) error {
		f, err := combineModule(names[k], terms[names[k]], method, &opts)
		if err != nil {
			return &CombineError{Adapter: adapters[terms[names[k]][0].adapter].Path, Module: names[k], Err: err}
		}
		results[k] = f
		return nil
	})
	if err != nil {
		return err
	}
	mods := make([]factored, len(names))
	paths := make([]string, len(adapters))
	for k, name := range names {
		mods[k] = factored{name: name, loraFactors: results[k]}
		mods[k].aName, mods[k].bName = peftNames(terms[name][0].m)
	}
	for i, a := range adapters {
		paths[i] = a.Path
	}
	return writeLoRA(dir, adapters[0], paths, mods, nil, nil)
}

// groupModules collects the modules of the adapters by name, with weights[i] for adapter i, refusing GGUF and DoRA
// adapters and modules whose update shape or layout differs between adapters (with equalRank, also their rank).
func groupModules(adapters []*Adapter, weights []float64, equalRank bool) (map[string][]combineTerm, error) {
	terms := map[string][]combineTerm{}
	for i, a := range adapters {
		if a.Format == GGUF {
			return nil, &CombineError{Adapter: a.Path, Err: errors.New("GGUF adapters are not supported (convert the PEFT original)")}
		}
		for j := range a.Modules {
			m := &a.Modules[j]
			if m.Magnitude != nil {
				return nil, &CombineError{Adapter: a.Path, Module: m.Name, Err: errors.New("DoRA, whose update is not a sum of factor products")}
			}
			if prev := terms[m.Name]; len(prev) > 0 {
				p, pPath := prev[0].m, adapters[prev[0].adapter].Path
				if p.Layout != m.Layout || p.A.Shape[1] != m.A.Shape[1] || p.B.Shape[0] != m.B.Shape[0] {
					return nil, &CombineError{Adapter: a.Path, Module: m.Name, Err: fmt.Errorf("factors %v·%v do not match %s's %v·%v",
						m.B.Shape, m.A.Shape, pPath, p.B.Shape, p.A.Shape)}
				}
				if equalRank && p.Rank != m.Rank {
					return nil, &CombineError{Adapter: a.Path, Module: m.Name, Err: fmt.Errorf("rank %d, %s's is %d: combining the factors needs equal ranks",
						m.Rank, pPath, p.Rank)}
				}
			}
			terms[m.Name] = append(terms[m.Name], combineTerm{m, weights[i], i})
		}
	}
	return terms, nil
}

// checkCombineOptions validates opts for n adapters and returns the task-vector method of the task-vector
// combinations (with FactorWise, also of linear).
func checkCombineOptions(n int, opts *CombineOptions) (TaskMethod, error) {
	if n == 0 || len(opts.Weights) != n {
		return TaskMethod{}, fmt.Errorf("%d adapters and %d weights: want one weight per adapter, at least one adapter", n, len(opts.Weights))
	}
	for i, w := range opts.Weights {
		if math.IsNaN(w) || math.IsInf(w, 0) {
			return TaskMethod{}, fmt.Errorf("weight %d is %g: want a finite number", i+1, w)
		}
	}
	if opts.Rank < 0 {
		return TaskMethod{}, fmt.Errorf("rank %d: want a positive rank, or 0 for the largest input rank", opts.Rank)
	}
	if !(opts.Clamp >= 0 && opts.Clamp <= 1) || opts.Clamp > 0 && opts.Semantics != SemanticsPEFT {
		return TaskMethod{}, fmt.Errorf("clamp %g: PEFT's svd_clamp is a quantile in (0, 1], with PEFT semantics only", opts.Clamp)
	}
	taskMethod := opts.Method
	switch opts.Method {
	case CombineLinear:
		taskMethod = "task_arithmetic"
	case CombineCat, CombineSVD:
		if opts.FactorWise {
			return TaskMethod{}, fmt.Errorf("method %s has no factor-wise form", opts.Method)
		}
		return TaskMethod{}, nil
	case CombineTIES, CombineDARELinear, CombineDARETIES, CombineMagnitudePrune:
		if !(opts.Density > 0 && opts.Density <= 1) {
			return TaskMethod{}, fmt.Errorf("method %s: density %g: %w", opts.Method, opts.Density, ErrDensity)
		}
	default:
		return TaskMethod{}, fmt.Errorf("method %q unknown: want one of %s", opts.Method, strings.Join(CombineMethods, ", "))
	}
	if opts.FactorWise && opts.Semantics != SemanticsPEFT {
		return TaskMethod{}, errors.New("combining the factors separately is PEFT's scheme: use PEFT semantics")
	}
	m, err := LookupTaskMethod(taskMethod, opts.Semantics)
	if err != nil {
		return TaskMethod{}, err
	}
	if opts.Consensus != ConsensusNone && m.Combiner.Consensus != ConsensusNone {
		m.Combiner.Consensus = opts.Consensus
	}
	return m, nil
}

// loraFactors are a module's output factors in the stored orientation: a is rank×in, b is out×rank.
type loraFactors struct {
	a, b          []float32
	rank, in, out int
}

func combineModule(name string, terms []combineTerm, method TaskMethod, opts *CombineOptions) (loraFactors, error) {
	first := terms[0].m
	f := loraFactors{in: int(first.A.Shape[1]), out: int(first.B.Shape[0])}
	maxRank := 0
	for _, t := range terms {
		f.rank += t.m.Rank
		maxRank = max(maxRank, t.m.Rank)
	}
	rank := opts.Rank
	if rank == 0 {
		rank = maxRank
	}
	rank = min(rank, f.in, f.out)
	switch {
	case opts.FactorWise:
		return combineFactorWise(name, terms, method, opts)
	case opts.Method == CombineLinear, opts.Method == CombineCat, opts.Method == CombineSVD:
		f.a, f.b = make([]float32, f.rank*f.in), make([]float32, f.out*f.rank)
		off := 0
		for _, t := range terms {
			fa, err := floats(t.m.A)
			if err != nil {
				return f, err
			}
			fb, err := floats(t.m.B)
			if err != nil {
				return f, err
			}
			ws := t.w * t.m.Scale
			wa, wb := 1.0, ws
			if opts.Method == CombineCat {
				wa, wb = ws, 1
			}
			for i, v := range fa {
				f.a[off*f.in+i] = float32(wa * float64(v))
			}
			for i := range f.out {
				for k := range t.m.Rank {
					f.b[i*f.rank+off+k] = float32(wb * float64(fb[i*t.m.Rank+k]))
				}
			}
			off += t.m.Rank
		}
		if opts.Method != CombineSVD {
			return f, nil
		}
		// Σ wᵢΔWᵢ = B'·A' exactly, so its SVD comes from the factors without forming the product.
		svd, err := spectral.LowRankSVD(matrix(f.out, f.rank, f.b), matrix(f.rank, f.in, f.a), 1)
		if err != nil {
			return f, err
		}
		return truncate(svd, rank, opts)
	}
	tvs := make([][]float32, len(terms))
	weights := make([]float64, len(terms))
	for i, t := range terms {
		// The update in the orientation of the stored factors (ΔW for Linear modules, ΔWᵀ for Transposed ones), where
		// PEFT decomposes it.
		d, err := factorProduct(t.m)
		if err != nil {
			return f, err
		}
		tvs[i] = make([]float32, len(d.Data))
		for j, v := range d.Data {
			tvs[i][j] = float32(v)
		}
		weights[i] = t.w
		if err := method.Sparsifier.Apply(tvs[i], opts.Density, TaskRand(opts.Seed, name, t.adapter)); err != nil {
			return f, err
		}
	}
	merged := make([]float32, f.out*f.in)
	if err := method.Combiner.Combine(merged, tvs, weights); err != nil {
		return f, err
	}
	// The merged update is dense and of full rank, so only its leading triplets are computed: randomized subspace
	// iteration with q = 2·rank+10 samples and rsvdIters power iterations, which is the exact truncated SVD (up to
	// rounding) once q reaches the smaller dimension and otherwise errs by about (σ_{q+1}/σ_rank)^(2·iters+1) —
	// where a full LAPACK SVD of a 4096×4096 update would take minutes. The Gaussian sample is seeded with Seed.
	q := min(2*rank+10, f.in, f.out)
	u, s, vt, err := linalg.RandomizedSVD(f.out, f.in, merged, rank, q, rsvdIters, opts.Seed)
	if err != nil {
		return f, err
	}
	return truncate(&spectral.SVD{U: &spectral.Matrix{Rows: f.out, Cols: rank, Data: u}, S: s,
		Vt: &spectral.Matrix{Rows: rank, Cols: f.in, Data: vt}}, rank, opts)
}

// rsvdIters is the number of power iterations of the randomized SVD of merged task vectors.
const rsvdIters = 6

// combineFactorWise is PEFT's _generalized_task_arithmetic_weighted_adapter: the method applied to the A factors
// with weights sign(ws)·√|ws| and to the B factors with √|ws| (the sign on one side only, so that it is not
// squared away).
func combineFactorWise(name string, terms []combineTerm, method TaskMethod, opts *CombineOptions) (loraFactors, error) {
	first := terms[0].m
	f := loraFactors{rank: first.Rank, in: int(first.A.Shape[1]), out: int(first.B.Shape[0])}
	f.a, f.b = make([]float32, f.rank*f.in), make([]float32, f.out*f.rank)
	for side, dst := range [][]float32{f.a, f.b} {
		tvs := make([][]float32, len(terms))
		weights := make([]float64, len(terms))
		for i, t := range terms {
			v, suffix := t.m.A, ".lora_A"
			if side == 1 {
				v, suffix = t.m.B, ".lora_B"
			}
			var err error
			if tvs[i], err = floats(v); err != nil {
				return f, err
			}
			ws := t.w * t.m.Scale
			weights[i] = math.Sqrt(math.Abs(ws))
			if side == 0 && ws < 0 {
				weights[i] = -weights[i]
			}
			if err := method.Sparsifier.Apply(tvs[i], opts.Density, TaskRand(opts.Seed, name+suffix, t.adapter)); err != nil {
				return f, err
			}
		}
		if err := method.Combiner.Combine(dst, tvs, weights); err != nil {
			return f, err
		}
	}
	return f, nil
}

// factorProduct returns Scale·B·A from the stored factors.
func factorProduct(m *Module) (*spectral.Matrix, error) {
	a, err := spectral.FromView(m.A)
	if err != nil {
		return nil, err
	}
	b, err := spectral.FromView(m.B)
	if err != nil {
		return nil, err
	}
	return spectral.Product(b, a, m.Scale)
}

// truncate keeps the first rank components of svd as LoRA factors: PEFT's B = U_r·diag(S_r), A = Vh_r (then
// svd_clamp), or mergekit-extract-lora's B = U_r·√S_r, A = √S_r·Vh_r.
func truncate(svd *spectral.SVD, rank int, opts *CombineOptions) (loraFactors, error) {
	rank = min(rank, len(svd.S))
	f := loraFactors{rank: rank, out: svd.U.Rows, in: svd.Vt.Cols}
	f.a, f.b = make([]float32, rank*f.in), make([]float32, f.out*rank)
	ub := make([]float64, f.out*rank)
	va := make([]float64, rank*f.in)
	for k := range rank {
		su, sv := svd.S[k], 1.0
		if opts.Semantics == SemanticsMergekit {
			su = math.Sqrt(svd.S[k])
			sv = su
		}
		for i := range f.out {
			ub[i*rank+k] = svd.U.Data[i*svd.U.Cols+k] * su
		}
		for j := range f.in {
			va[k*f.in+j] = svd.Vt.Data[k*f.in+j] * sv
		}
	}
	if opts.Clamp > 0 {
		hi := quantile(append(slices.Clone(ub), va...), opts.Clamp)
		for _, x := range [][]float64{ub, va} {
			for i, v := range x {
				x[i] = max(-hi, min(hi, v))
			}
		}
	}
	for i, v := range ub {
		f.b[i] = float32(v)
	}
	for i, v := range va {
		f.a[i] = float32(v)
	}
	return f, nil
}

// quantile is torch.quantile's default ("linear"): the value at position q·(n−1) of the sorted data, interpolated
// between its neighbours. x is sorted in place.
func quantile(x []float64, q float64) float64 {
	slices.Sort(x)
	pos := q * float64(len(x)-1)
	i := int(pos)
	if i+1 >= len(x) {
		return x[len(x)-1]
	}
	return x[i] + (pos-float64(i))*(x[i+1]-x[i])
}

func matrix(rows, cols int, f []float32) *spectral.Matrix {
	m := spectral.NewMatrix(rows, cols)
	for i, v := range f {
		m.Data[i] = float64(v)
	}
	return m
}

// RankPatterns gives the adapter_config.json ranks of modules of scale 1 (lora_alpha = r everywhere): r is the most
// common rank (the smaller on a tie), and pattern, for rank_pattern and alpha_pattern alike, holds an entry matching
// exactly each module of another rank. encoding/json sorts map keys while PEFT takes the first key that matches, so
// each key matches one module.
func RankPatterns(names []string, ranks map[string]int) (r int, pattern map[string]int) {
	count := map[int]int{}
	for _, name := range names {
		n := ranks[name]
		count[n]++
		if count[n] > count[r] || count[n] == count[r] && n < r {
			r = n
		}
	}
	pattern = map[string]int{}
	for _, name := range names {
		if ranks[name] != r {
			pattern[regexp.QuoteMeta(name)] = ranks[name]
		}
	}
	return r, pattern
}

// combinedConfig is the adapter_config.json of a combination: r and lora_alpha equal (scale 1) at the most common
// rank, and rank_pattern/alpha_pattern entries matching exactly each module of another rank.
func combinedConfig(first *Adapter, names []string, ranks map[string]int) ([]byte, error) {
	common, pattern := RankPatterns(names, ranks)
	fanInFanOut := first.Config != nil && first.Config.FanInFanOut
	base := ""
	if first.Config != nil {
		base = first.Config.BaseModel
	}
	return json.MarshalIndent(map[string]any{
		"peft_type":               "LORA",
		"base_model_name_or_path": base,
		"r":                       common,
		"lora_alpha":              common,
		"target_modules":          names,
		"rank_pattern":            pattern,
		"alpha_pattern":           pattern,
		"fan_in_fan_out":          fanInFanOut,
		"use_rslora":              false,
		"use_dora":                false,
		"bias":                    "none",
	}, "", "  ")
}

// floats expands a tensor of any float or block-quantized type to float32.
func floats(v tensor.View) ([]float32, error) {
	n, err := v.Shape.Elements()
	if err != nil {
		return nil, err
	}
	f := make([]float32, n)
	if v.DType.IsQuantized() {
		err = quant.Decode(v.DType, f, v.Data)
	} else {
		err = tensor.ToFloat32(f, v.Data, v.DType)
	}
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", v.Name, err)
	}
	return f, nil
}

func f32View(name string, shape tensor.Shape, f []float32) tensor.View {
	data := make([]byte, 4*len(f))
	tensor.FromFloat32(data, f, tensor.F32) // sizes match by construction
	return tensor.View{Name: name, DType: tensor.F32, Shape: shape, Data: data}
}
