package train

import "fmt"

// sizedAtStart is a method whose parameter tensors are sized when the run starts (EVA's ranks come from the
// data): it tells how many values it will train.
type sizedAtStart interface {
	plannedTrainable() int
}

// TrainableCount is the number of values a run with opts trains on m (the sum of the lengths of LoRA.Params).
func TrainableCount(m *Model, opts TrainOptions) (int, error) {
	opts.defaults()
	if err := opts.check(); err != nil {
		return 0, err
	}
	l, err := NewLoRAConfig(m, LoRAConfig{Rank: opts.Rank, Alpha: opts.Alpha, RSLoRA: opts.RSLoRA,
		Targets: opts.Targets, Init: opts.Init, Method: opts.Method, MethodArgs: opts.MethodArgs, Steps: opts.Steps},
		1, 1, opts.Seed)
	if err != nil {
		return 0, err
	}
	if s, ok := l.method.(sizedAtStart); ok {
		return s.plannedTrainable(), nil
	}
	params, _ := l.Params()
	n := 0
	for _, p := range params {
		n += len(p)
	}
	return n, nil
}

// RankForBudget returns the rank (TrainOptions.Rank) at which a run with opts trains the number of values closest
// to budget, and that number, searching ranks 1 to the smaller side of the model's smallest projection on the
// assumption that the count is monotonic in the rank (it falls with the rank for RandLoRA, whose bases are fewer
// when wider). A method whose count does not depend on the rank gets opts.Rank back with fixed set.
func RankForBudget(m *Model, opts TrainOptions, budget int) (rank, count int, fixed bool, err error) {
	c := m.Config
	hi := min(c.Embd, c.FF, c.Heads*c.HeadDim, c.HeadsKV*c.HeadDim)
	countAt := func(r int) (int, error) {
		o := opts
		o.Rank = r
		n, err := TrainableCount(m, o)
		if err != nil {
			return 0, fmt.Errorf("train: method %s at rank %d: %w", opts.Method, r, err)
		}
		return n, nil
	}
	low, err := countAt(1)
	if err != nil {
		return 0, 0, false, err
	}
	high, err := countAt(hi)
	if err != nil {
		return 0, 0, false, err
	}
	if low == high {
		n, err := countAt(max(opts.Rank, 1))
		return max(opts.Rank, 1), n, true, err
	}
	// The first rank whose count reaches the budget (in the direction the count moves), then the closer of it and
	// the rank before.
	rising := high > low
	reached := func(n int) bool { return rising && n >= budget || !rising && n <= budget }
	if !reached(high) {
		return hi, high, false, nil
	}
	lo, up := 1, hi
	for lo < up {
		mid := (lo + up) / 2
		n, err := countAt(mid)
		if err != nil {
			return 0, 0, false, err
		}
		if reached(n) {
			up = mid
		} else {
			lo = mid + 1
		}
	}
	n, err := countAt(lo)
	if err != nil || lo == 1 {
		return lo, n, false, err
	}
	below, err := countAt(lo - 1)
	if err != nil {
		return 0, 0, false, err
	}
	if abs(budget-below) <= abs(n-budget) {
		return lo - 1, below, false, nil
	}
	return lo, n, false, nil
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}
