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

// workerPool keeps helper goroutines alive between calls, so a GEMM costs a store per helper instead of goroutine
// creation, and nothing is allocated per call. One job runs at a time; a caller that finds the pool busy runs
// single-threaded instead of queueing, which keeps concurrent callers from oversubscribing the cores.
//
// A helper that has finished a job keeps polling for the next one for helperSpin before it sleeps, as OpenMP
// runtimes do: waking a sleeping goroutine takes tens of microseconds (a futex and the scheduler), as long as a
// 256³ product takes on two cores, and callers such as the trainer issue products back to back. The caller waits
// for the helpers the same way (spinUntil).
type workerPool struct {
	mu      sync.Mutex // held while a job runs on the helpers; guards helpers
	helpers []*poolHelper
	pending atomic.Int32 // helpers still running the current job
}

// poolHelper is one helper goroutine's mailbox.
type poolHelper struct {
	job      runner        // the next job, written by runOn before it bumps seq
	seq      atomic.Uint64 // jobs posted so far
	sleeping atomic.Bool   // the helper has stopped polling and waits on wake
	wake     chan struct{} // capacity 1: one token per sleep
}

// helperSpin is how long a helper polls for its next job before it sleeps.
const helperSpin = 50 * time.Microsecond

var pool workerPool

// acquire returns how many threads (at most want) the caller may use; when it returns more than 1 the caller owns
// the pool and must call runOn followed by release.
func (p *workerPool) acquire(want int) int {
	if want <= 1 || !p.mu.TryLock() {
		return 1
	}
	for len(p.helpers) < want-1 {
		h := &poolHelper{wake: make(chan struct{}, 1)}
		p.helpers = append(p.helpers, h)
		go p.serve(h, len(p.helpers)) // the caller is thread 0, so helper i has id i+1
	}
	return want
}

func (p *workerPool) serve(h *poolHelper, tid int) {
	for seen := uint64(0); ; seen++ {
		// More threads than cores (SetThreads beyond GOMAXPROCS) would spin on cores that a running helper needs.
		h.await(seen, tid < runtime.GOMAXPROCS(0))
		h.job.run(tid)
		p.pending.Add(-1)
	}
}

// await returns once a job past the seen ones is posted: polling for helperSpin if spin is set (yielding now and
// then, so that other goroutines of the process still get this core), then sleeping until runOn sends a token.
func (h *poolHelper) await(seen uint64, spin bool) {
	start := time.Now()
	for i := 1; spin; i++ {
		if h.seq.Load() != seen {
			return
		}
		if i%256 == 0 {
			if time.Since(start) > helperSpin {
				break
			}
			runtime.Gosched()
		}
	}
	h.sleeping.Store(true)
	if h.seq.Load() != seen {
		// Posted meanwhile. If runOn also saw the helper asleep, its token is on the way: take it, so that the
		// next sleep does not wake on a stale one.
		if !h.sleeping.CompareAndSwap(true, false) {
			<-h.wake
		}
		return
	}
	<-h.wake
}

// runOn runs r on threads goroutines (the caller is thread 0) and waits for all of them.
func (p *workerPool) runOn(r runner, threads int) {
	p.pending.Store(int32(threads - 1))
	for _, h := range p.helpers[:threads-1] {
		h.job = r
		h.seq.Add(1)
		if h.sleeping.CompareAndSwap(true, false) {
			h.wake <- struct{}{}
		}
	}
	r.run(0)
	spinUntil(func() bool { return p.pending.Load() == 0 })
	for _, h := range p.helpers[:threads-1] {
		h.job = nil // do not keep the job's memory alive
	}
}

func (p *workerPool) release() { p.mu.Unlock() }
