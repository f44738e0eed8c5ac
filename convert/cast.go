// Package convert moves models between formats and data types: safetensors dtype casts, and (with the gguf
// package) Hugging Face checkpoints to and from GGUF.
package convert

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/lathe-ml/lathe/safetensors"
	"github.com/lathe-ml/lathe/tensor"
)

// CastOptions tunes Cast.
type CastOptions struct {
	Writer   []safetensors.Option // e.g. safetensors.Zstd()
	Progress func(done, total int)
}

// castChunk is the number of elements converted as one unit of parallel work.
const castChunk = 1 << 18

// Cast writes src to w with every floating-point tensor converted to dtype (rounding to nearest even, see
// tensor.FromFloat32); integer and boolean tensors are copied unchanged, as is the metadata. The output is
// streamed: at most a few chunks per core are held in memory, whatever the model size, and conversion runs on all
// cores while earlier chunks are written.
func Cast(w io.Writer, src safetensors.Set, dtype tensor.DType, opts CastOptions) error {
	if !dtype.IsFloat() {
		return fmt.Errorf("cast: target type %s is not a floating-point element type", dtype)
	}
	in := src.Tensors()
	decls := make([]safetensors.TensorInfo, len(in))
	for i, t := range in {
		decls[i] = safetensors.TensorInfo{Name: t.Name, DType: castType(t.DType, dtype), Shape: t.Shape}
	}
	sw, err := safetensors.NewWriter(w, decls, src.Metadata(), opts.Writer...)
	if err != nil {
		return err
	}
	layout := sw.Tensors()
	p := newPipeline(runtime.GOMAXPROCS(0))
	go func() {
		defer p.finish()
		for _, out := range layout {
			v, err := src.Tensor(out.Name)
			if err != nil {
				p.fail(err)
				return
			}
			n := v.Elements()
			if out.DType == v.DType || n == 0 {
				p.submit(out.Name, v.Data, nil)
				continue
			}
			step := int64(castChunk) / int64(v.DType.BlockSize()) * int64(v.DType.BlockSize())
			for lo := int64(0); lo < n; lo += step {
				hi := min(lo+step, n)
				inLo, _ := v.DType.Bytes(lo)
				inHi, _ := v.DType.Bytes(hi)
				outSize, _ := out.DType.Bytes(hi - lo)
				from, to, elems := v.DType, out.DType, int(hi-lo)
				srcBytes := v.Data[inLo:inHi]
				if !p.submit(out.Name, nil, func() ([]byte, error) {
					return convertRows(srcBytes, from, to, 1, elems, int(outSize))
				}) {
					return
				}
			}
		}
	}()
	written := 0
	current := ""
	var tw io.Writer
	for c := range p.ordered {
		data, err := c.wait()
		if err != nil {
			p.abort()
			return fmt.Errorf("cast: tensor %q: %w", c.name, err)
		}
		if c.name != current {
			if opts.Progress != nil {
				opts.Progress(written, len(layout))
			}
			current = c.name
			written++
			if tw, err = sw.Create(c.name); err != nil {
				p.abort()
				return err
			}
		}
		if _, err := tw.Write(data); err != nil {
			p.abort()
			return err
		}
	}
	if err := p.err(); err != nil {
		return err
	}
	if opts.Progress != nil {
		opts.Progress(written, len(layout))
	}
	// Close also catches a tensor the producer never submitted.
	return sw.Close()
}

// castType is the output type of a tensor of type t when casting to target.
func castType(t, target tensor.DType) tensor.DType {
	if t.IsFloat() {
		return target
	}
	return t
}

// pipeline runs chunk conversions on a worker pool and hands results back in submission order, so the output is
// identical to a sequential conversion.
type pipeline struct {
	ordered chan *job
	work    chan *job
	stop    chan struct{}
	once    sync.Once
	mu      sync.Mutex
	first   error
	workers sync.WaitGroup
}

type job struct {
	name string
	data []byte
	run  func() ([]byte, error)
	done chan struct{}
	err  error
}

func (j *job) wait() ([]byte, error) {
	<-j.done
	return j.data, j.err
}

func newPipeline(workers int) *pipeline {
	p := &pipeline{ordered: make(chan *job, 4*workers), work: make(chan *job, 4*workers), stop: make(chan struct{})}
	for range workers {
		p.workers.Go(func() {
			for j := range p.work {
				select {
				case <-p.stop:
					j.err = errAborted // queued before the abort: not worth running
				default:
					j.data, j.err = j.run()
				}
				close(j.done)
			}
		})
	}
	return p
}

// submit queues a chunk: ready data, or a function producing it. It reports false once the consumer has aborted.
func (p *pipeline) submit(name string, data []byte, run func() ([]byte, error)) bool {
	j := &job{name: name, data: data, run: run, done: make(chan struct{})}
	if run == nil {
		close(j.done)
	}
	select {
	case p.ordered <- j:
	case <-p.stop:
		return false
	}
	if run != nil {
		select {
		case p.work <- j:
		case <-p.stop:
			return false
		}
	}
	return true
}

func (p *pipeline) fail(err error) {
	p.mu.Lock()
	if p.first == nil {
		p.first = err
	}
	p.mu.Unlock()
}

func (p *pipeline) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.first
}

// finish is called by the producer when it has submitted everything.
func (p *pipeline) finish() {
	close(p.work)
	close(p.ordered)
}

// errAborted is the result of chunks that were queued when the consumer gave up.
var errAborted = errors.New("convert: aborted")

// abort makes the producer stop, drains what is queued so that no goroutine stays blocked, and returns only when
// no worker is running: the caller may then unmap the source the chunks were reading.
func (p *pipeline) abort() {
	p.once.Do(func() { close(p.stop) })
	go func() {
		for range p.ordered {
		}
	}()
	p.workers.Wait()
}
