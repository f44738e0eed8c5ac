// Package parallel runs independent pieces of work on all cores. Every index is handed to exactly one worker and
// writes only its own result, so outputs never depend on scheduling or on the number of workers.
package parallel

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Workers resolves a requested worker count: n itself when positive, else GOMAXPROCS.
func Workers(n int) int {
	if n > 0 {
		return n
	}
	return runtime.GOMAXPROCS(0)
}

// For runs fn(i) for every i in [0, n) on up to workers goroutines (0: GOMAXPROCS), handing out indices in order.
func For(n, workers int, fn func(i int)) {
	ForWorker(n, workers, func(_, i int) { fn(i) })
}

// ForWorker is For with the index of the worker running each call, in [0, workers), for per-worker scratch state.
func ForWorker(n, workers int, fn func(worker, i int)) {
	workers = min(Workers(workers), n)
	if workers <= 1 {
		for i := range n {
			fn(0, i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(w, i)
			}
		})
	}
	wg.Wait()
}

// ForEach runs fn(worker, i) for every i in [0, n) like ForWorker, stops handing out work at the first error and
// returns it, and calls progress (if not nil) after each completed index.
func ForEach(n, workers int, progress func(done, total int), fn func(worker, i int) error) error {
	var (
		mu       sync.Mutex
		done     int
		firstErr error
		failed   atomic.Bool
	)
	ForWorker(n, workers, func(w, i int) {
		if failed.Load() {
			return
		}
		err := fn(w, i)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			failed.Store(true)
			return
		}
		done++
		if progress != nil {
			progress(done, n)
		}
	})
	return firstErr
}
