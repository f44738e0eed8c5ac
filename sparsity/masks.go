package sparsity

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/lathe-ml/lathe/convert"
	"github.com/lathe-ml/lathe/internal/xxh64"
	"github.com/lathe-ml/lathe/modelfile"
	"github.com/lathe-ml/lathe/prune"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/tensor"
)

// Options say how ComputeMasks scores and selects.
type Options struct {
	// Score is the scoring rule. Norms is filled per tensor from Imatrix for Wanda; Seed is mixed with each
	// tensor's name so that random scores and randomized SVDs differ between tensors but not between runs.
	Score     prune.ScoreOptions
	Selection prune.Selection
	// Imatrix holds the activation statistics for Wanda: ‖X_j‖ = sqrt(mean squared input of column j).
	Imatrix *convert.Imatrix
	// Targets chooses the weights to mask; nil means DefaultTarget. Only matrices can be chosen.
	Targets func(name string, shape tensor.Shape) bool
	// Workers is the number of matrices scored at once; 0 means GOMAXPROCS.
	Workers  int
	Progress func(done, total int)
}

// DefaultTarget chooses the linear layers' weight matrices, as LIFT does (§3.1: every nn.Linear but lm_head, with
// embeddings, norms and biases frozen) and Wanda (the linear layers of the decoder blocks): two-dimensional
// tensors named *.weight, except embeddings and the output head, under their Hugging Face or GGUF names.
func DefaultTarget(name string, shape tensor.Shape) bool {
	if len(shape) != 2 || !strings.HasSuffix(name, ".weight") {
		return false
	}
	for _, s := range []string{"embed", "lm_head", "norm", "token_embd"} {
		if strings.Contains(name, s) {
			return false
		}
	}
	return name != "output.weight" // GGUF's lm_head
}

// targets lists the tensors of m that opts choose, checking that each can be decoded.
func (o Options) targets(m *modelfile.Model) ([]modelfile.Tensor, error) {
	choose := o.Targets
	if choose == nil {
		choose = DefaultTarget
	}
	var out []modelfile.Tensor
	for _, t := range m.Tensors {
		if !choose(t.Name, t.Shape) {
			continue
		}
		if len(t.Shape) != 2 {
			return nil, fmt.Errorf("%s: tensor %q %v: only matrices can be masked", m.Path, t.Name, t.Shape)
		}
		if err := checkDecodable(t.DType); err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", m.Path, t.Name, err)
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no tensor to mask", m.Path)
	}
	return out, nil
}

func checkDecodable(t tensor.DType) error {
	if t.IsFloat() || t.IsQuantized() && quant.CanDecode(t) {
		return nil
	}
	return fmt.Errorf("%s is not a float type lathe can decode", t)
}

// decode widens a tensor to float32.
func decode(v tensor.View) ([]float32, error) {
	x := make([]float32, v.Elements())
	var err error
	if v.DType.IsQuantized() {
		err = quant.Decode(v.DType, x, v.Data)
	} else {
		err = tensor.ToFloat32(x, v.Data, v.DType)
	}
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", v.Name, err)
	}
	return x, nil
}

// Metadata describes the options as a mask file records them.
func (o Options) Metadata() map[string]string {
	sel := o.Selection
	md := map[string]string{
		"method":    o.Score.Method.String(),
		"structure": sel.Structure.String(),
		"select":    "largest",
	}
	if sel.Smallest {
		md["select"] = "smallest"
	}
	if sel.Budget.Kind != prune.NoBudget {
		key := "keep"
		if sel.Budget.Drop {
			key = "drop"
		}
		md[key] = sel.Budget.String()
		md["group"] = sel.Group.String()
	}
	switch o.Score.Method {
	case prune.Principal:
		r := o.Score.Rank
		if r <= 0 {
			r = prune.DefaultRank
		}
		iters := o.Score.PowerIters
		if iters <= 0 {
			iters = prune.DefaultPowerIters
		}
		md["rank"] = strconv.Itoa(r)
		md["svd"] = o.Score.SVD.String()
		md["power_iters"] = strconv.Itoa(iters)
		md["seed"] = strconv.FormatUint(o.Score.Seed, 10)
	case prune.Random:
		md["seed"] = strconv.FormatUint(o.Score.Seed, 10)
	case prune.Wanda:
		if o.Imatrix != nil {
			md["imatrix"] = o.Imatrix.Name
		}
	}
	return md
}

// ComputeMasks scores and selects every target matrix of m, in parallel across matrices, largest first.
func ComputeMasks(m *modelfile.Model, opts Options) (*MaskSet, error) {
	if err := opts.Selection.Check(); err != nil {
		return nil, err
	}
	if opts.Score.Method == prune.Wanda && opts.Imatrix == nil {
		return nil, prune.ErrNoNorms
	}
	targets, err := opts.targets(m)
	if err != nil {
		return nil, err
	}
	order := make([]int, len(targets))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(targets[b].Size, targets[a].Size) })
	set := &MaskSet{Tensors: make([]TensorMask, len(targets)), Metadata: opts.Metadata()}
	done := 0
	err = inOrder(order, opts.Workers, 0, func(i int) (*prune.Mask, error) {
		return maskTensor(m, targets[i], opts)
	}, func(i int, mask *prune.Mask) error {
		set.Tensors[i] = TensorMask{Name: targets[i].Name, Shape: targets[i].Shape, Mask: mask}
		done++
		if opts.Progress != nil {
			opts.Progress(done, len(targets))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	set.sort()
	return set, nil
}

func maskTensor(m *modelfile.Model, t modelfile.Tensor, opts Options) (*prune.Mask, error) {
	v, err := m.View(t.Name)
	if err != nil {
		return nil, err
	}
	rows, cols := int(t.Shape[0]), int(t.Shape[1])
	w, err := decode(v)
	if err != nil {
		return nil, err
	}
	so := opts.Score
	so.Seed ^= xxh64.Sum64([]byte(t.Name))
	if so.Method == prune.Wanda {
		e, ok := opts.Imatrix.Lookup(t.Name)
		if !ok {
			return nil, fmt.Errorf("tensor %q: the importance matrix %s has no entry for it", t.Name, opts.Imatrix.Name)
		}
		if len(e) != cols {
			return nil, fmt.Errorf("tensor %q: the importance matrix %s has %d values for its %d columns", t.Name,
				opts.Imatrix.Name, len(e), cols)
		}
		so.Norms = make([]float32, cols)
		for j, x := range e {
			so.Norms[j] = float32(math.Sqrt(float64(x)))
		}
	}
	scores, err := prune.Score(rows, cols, w, so)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	mask, err := prune.Select(rows, cols, scores, opts.Selection)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	return mask, nil
}
