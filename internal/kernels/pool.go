package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// runner is one parallel job; run is called once per thread id in [0, threads).
type runner interface {
	run(tid int)
}

// workerPool keeps helper goroutines alive between calls, so a GEMM costs a channel send per helper instead of
// goroutine creation, and nothing is allocated per call. One job runs at a time; a caller that finds the pool busy
// runs single-threaded instead of queueing, which keeps concurrent callers from oversubscribing the cores.
//
// A helper that has finished a job keeps polling its channel for the next one for helperSpin before it blocks on
// it, as OpenMP runtimes spin: waking a blocked goroutine takes tens of microseconds (a futex and the scheduler),
// as long as a 256³ product takes on two cores, and callers such as the trainer issue products back to back. The
// channels hold one job each, so a send never waits and the job itself is the wake-up. The caller waits for the
// helpers the same way (spinUntil).
type workerPool struct {
	mu      sync.Mutex // held while a job runs on the helpers; guards wake
	wake    []chan runner
	pending atomic.Int32 // helpers still running the current job
}

// helperSpin is how long a helper polls for its next job before it blocks.
const helperSpin = 50 * time.Microsecond

var pool workerPool

// acquire returns how many threads (at most want) the caller may use; when it returns more than 1 the caller owns
// the pool and must call runOn followed by release.
func (p *workerPool) acquire(want int) int {
	if want <= 1 || !p.mu.TryLock() {
		return 1
	}
	for len(p.wake) < want-1 {
		ch := make(chan runner, 1)
		p.wake = append(p.wake, ch)
		go p.serve(ch, len(p.wake)) // the caller is thread 0, so helper i has id i+1
	}
	return want
}

func (p *workerPool) serve(ch chan runner, tid int) {
	for {
		// More threads than cores (SetThreads beyond GOMAXPROCS) would spin on cores that a running helper needs.
		next(ch, tid < runtime.GOMAXPROCS(0)).run(tid)
		p.pending.Add(-1)
	}
}

// next receives the next job from ch: polling for helperSpin if spin is set (yielding now and then, so that other
// goroutines of the process still get this core), then blocking.
func next(ch chan runner, spin bool) runner {
	start := time.Now()
	for i := 1; spin; i++ {
		select {
		case r := <-ch:
			return r
		default:
		}
		if i%256 == 0 {
			if time.Since(start) > helperSpin {
				break
			}
			runtime.Gosched()
		}
	}
	return <-ch
}

// runOn runs r on threads goroutines (the caller is thread 0) and waits for all of them.
func (p *workerPool) runOn(r runner, threads int) {
	p.pending.Store(int32(threads - 1))
	for _, ch := range p.wake[:threads-1] {
		ch <- r
	}
	r.run(0)
	spinUntil(func() bool { return p.pending.Load() == 0 })
}

func (p *workerPool) release() { p.mu.Unlock() }
