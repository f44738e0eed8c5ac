package train

import "testing"

// TestRankForBudget finds the rank whose trainable count is closest to a budget whether the count rises with the
// rank (LoRA: r·Σ(in+out)) or falls (RandLoRA: fewer bases when they are wider), and reports methods whose size
// does not depend on the rank as fixed.
func TestRankForBudget(t *testing.T) {
	m := tinyLlamaHF(t)
	const steps = 10
	count := func(o TrainOptions) int {
		n, err := TrainableCount(m, o)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, c := range []struct {
		method string
		rank   int
	}{{MethodLoRA, 5}, {MethodRandLoRA, 10}, {MethodHydra, 3}} {
		opts := TrainOptions{Method: c.method, Rank: c.rank, Steps: steps, Targets: []string{"v_proj", "up_proj"}}
		budget := count(opts) + 1
		opts.Rank = 1
		rank, n, fixed, err := RankForBudget(m, opts, budget)
		if err != nil {
			t.Fatal(err)
		}
		if rank != c.rank || n != budget-1 || fixed {
			t.Errorf("%s: budget %d gives rank %d with %d values (fixed %v), want rank %d with %d", c.method, budget,
				rank, n, fixed, c.rank, budget-1)
		}
	}
	opts := TrainOptions{Method: MethodFull, Rank: 3, Steps: steps, MethodArgs: map[string]string{"embed": "false",
		"norms": "false", "head": "false"}, Targets: []string{"v_proj"}}
	c := m.Config
	if rank, n, fixed, err := RankForBudget(m, opts, 1000); err != nil || rank != 3 || !fixed ||
		n != c.Layers*c.HeadsKV*c.HeadDim*c.Embd {
		t.Errorf("full: rank %d, %d values, fixed %v, error %v; want --rank 3 kept, every v_proj weight, fixed", rank,
			n, fixed, err)
	}
}
