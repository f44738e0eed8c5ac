package train

import "fmt"

// TrainableCount is the number of values a run with opts trains on m (the sum of the lengths of LoRA.Params).
func TrainableCount(m *Model, opts TrainOptions) (int, error) {
	opts.defaults()
	if err := opts.check(); err != nil {
		return 0, err
	}
	l, err := NewLoRAConfig(m, LoRAConfig{Rank: opts.Rank, Alpha: opts.Alpha, RSLoRA: opts.RSLoRA,
		Targets: opts.Targets, Init: opts.Init, Method: opts.Method, MethodArgs: opts.MethodArgs}, 1, 1, opts.Seed)
	if err != nil {
		return 0, err
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
// assumption that the count grows with the rank. A method whose count does not depend on the rank gets
// opts.Rank back with fixed set.
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
	// The smallest rank whose count reaches the budget, then the closer of it and the rank below.
	lo, up := 1, hi
	if high < budget {
		return hi, high, false, nil
	}
	for lo < up {
		mid := (lo + up) / 2
		n, err := countAt(mid)
		if err != nil {
			return 0, 0, false, err
		}
		if n >= budget {
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
	if budget-below <= n-budget {
		return lo - 1, below, false, nil
	}
	return lo, n, false, nil
}
