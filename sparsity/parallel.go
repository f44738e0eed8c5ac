package sparsity

import (
	"runtime"
	"sync"
)

// inOrder runs work(order[k]) for every k on `workers` goroutines (0: GOMAXPROCS) and hands each result to use in
// the order of `order`, on the calling goroutine. At most `ahead` results wait to be used at any time, which bounds
// memory when results are whole tensors. It returns the first error of work or use; after an error no further
// work starts, and it returns only once every started work has finished, so nothing outlives the caller's files.
func inOrder[R any](order []int, workers, ahead int, work func(i int) (R, error), use func(i int, r R) error) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	ahead = max(ahead, workers)
	type result struct {
		r   R
		err error
	}
	slots := make([]chan result, len(order))
	for k := range slots {
		slots[k] = make(chan result, 1)
	}
	jobs := make(chan int)
	stop := make(chan struct{})
	credit := make(chan struct{}, ahead)
	var wg sync.WaitGroup
	for range min(workers, max(len(order), 1)) {
		wg.Go(func() {
			for k := range jobs {
				r, err := work(order[k])
				slots[k] <- result{r, err}
			}
		})
	}
	go func() {
		defer close(jobs)
		for k := range order {
			select {
			case credit <- struct{}{}:
			case <-stop:
				return
			}
			select {
			case jobs <- k:
			case <-stop:
				return
			}
		}
	}()
	var err error
	for k := range order {
		res := <-slots[k]
		<-credit
		if err = res.err; err == nil {
			err = use(order[k], res.r)
		}
		if err != nil {
			break
		}
	}
	close(stop)
	wg.Wait()
	return err
}
