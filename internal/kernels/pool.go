package kernels

import "sync"

// runner is one parallel job; run is called once per thread id in [0, threads).
type runner interface {
	run(tid int)
}

// workerPool keeps helper goroutines alive between calls, so a GEMM costs one channel send per helper instead of
// goroutine creation, and nothing is allocated per call. One job runs at a time; a caller that finds the pool busy
// runs single-threaded instead of queueing, which keeps concurrent callers from oversubscribing the cores.
type workerPool struct {
	mu   sync.Mutex // held while a job runs on the helpers; guards wake
	wake []chan runner
	done sync.WaitGroup
}

var pool workerPool

// acquire returns how many threads (at most want) the caller may use; when it returns more than 1 the caller owns
// the pool and must call runOn followed by release.
func (p *workerPool) acquire(want int) int {
	if want <= 1 || !p.mu.TryLock() {
		return 1
	}
	for len(p.wake) < want-1 {
		ch := make(chan runner)
		p.wake = append(p.wake, ch)
		go p.helper(ch, len(p.wake)) // the caller is thread 0, so helper i has id i+1
	}
	return want
}

func (p *workerPool) helper(ch chan runner, tid int) {
	for r := range ch {
		r.run(tid)
		p.done.Done()
	}
}

// runOn runs r on threads goroutines (the caller is thread 0) and waits for all of them.
func (p *workerPool) runOn(r runner, threads int) {
	p.done.Add(threads - 1)
	for i := 0; i < threads-1; i++ {
		p.wake[i] <- r
	}
	r.run(0)
	p.done.Wait()
}

func (p *workerPool) release() { p.mu.Unlock() }
