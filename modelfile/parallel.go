package modelfile

import (
	"cmp"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
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
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	var (
		next     atomic.Int64
		mu       sync.Mutex
		done     int
		firstErr error
		wg       sync.WaitGroup
	)
	for range min(threads, max(n, 1)) {
		wg.Go(func() {
			s := newState()
			for {
				k := next.Add(1) - 1
				if k >= int64(n) {
					return
				}
				err := fn(s, order[k])
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				done++
				if progress != nil && firstErr == nil {
					progress(done, n)
				}
				stop := firstErr != nil
				mu.Unlock()
				if stop {
					next.Store(int64(n))
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}
