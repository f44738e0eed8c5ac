package modelfile

import (
	"cmp"
	"slices"

	"github.com/lathe-ml/lathe/internal/parallel"
)

// forEach runs fn(s, i) for every i in [0, n) on threads workers (0 for GOMAXPROCS), each with its own state s from
// newState, taking the largest items first so that a big tensor does not start last and leave the other workers
// idle. It stops at the first error and returns it; progress, if set, is called after each item.
func forEach[S any](n int, size func(i int) int64, threads int, progress func(done, total int), newState func() S,
	fn func(s S, i int) error) error {
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(i, j int) int { return cmp.Compare(size(j), size(i)) })
	states := make([]S, parallel.Workers(threads))
	for w := range states {
		states[w] = newState()
	}
	return parallel.ForEach(n, len(states), progress, func(w, k int) error { return fn(states[w], order[k]) })
}
