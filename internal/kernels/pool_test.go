package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countRunner counts the threads that ran it.
type countRunner struct{ ran atomic.Int64 }

func (c *countRunner) run(int) { c.ran.Add(1) }

// TestPoolRunsEveryThreadOnce drives the pool from four goroutines at once with 2 to 4 threads per job, pauses
// that let the helpers stop polling and block, and GOMAXPROCS switching between 1 and 2 (which turns the helpers'
// polling off and on): every job must run exactly once on each of its threads, and no job may hang.
func TestPoolRunsEveryThreadOnce(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 5000 {
				if g == 0 && i%500 == 0 {
					runtime.GOMAXPROCS(1 + i/500%2)
				}
				if i%7 == 0 {
					time.Sleep(time.Duration(i%5) * 30 * time.Microsecond) // longer than helperSpin at times
				}
				threads := pool.acquire(2 + (i+g)%3)
				if threads == 1 {
					continue // another goroutine holds the pool
				}
				var c countRunner
				pool.runOn(&c, threads)
				pool.release()
				if n := c.ran.Load(); n != int64(threads) {
					t.Errorf("a job on %d threads ran %d times", threads, n)
					return
				}
			}
		})
	}
	wg.Wait()
}
