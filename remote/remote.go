// Package remote reads files over HTTP(S) with range requests, as an io.ReaderAt, so that lathe can describe a model
// on a server from its header alone. A block cache with sequential read-ahead turns the many small reads of header
// parsing into a few requests; reads of whole tensors go to the server directly.
package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options tune how files are fetched. The zero value works.
type Options struct {
	// Header is added to every request (e.g. a cookie or an API key header).
	Header http.Header
	// Token, when set, is sent as "Authorization: Bearer Token". It is sent only over https or to a loopback host,
	// so that a typo in a URL cannot put it on the network in clear; Go's client drops it on a redirect to another
	// domain (such as the storage a model hub redirects downloads to).
	Token string
	// Timeout bounds each attempt: connecting, waiting for the answer and reading its body. Default 30s.
	Timeout time.Duration
	// Retries is how many times a failed attempt (network error, timeout, 5xx, 429, a short body) is repeated.
	// Default 3; negative for none.
	Retries int
	// Backoff is the wait before the first retry, doubled for each further one. Default 500ms.
	Backoff time.Duration
	// BlockSize is the granularity of the cache and the size of the first request. Default 16 KiB: enough for
	// the whole header of most single-file models, small enough that describing a file costs a few kilobytes.
	BlockSize int
	// CacheBytes bounds the memory held by the cache. Default 32 MiB.
	CacheBytes int
	// Client makes the requests; nil for a client of this package's own.
	Client *http.Client
}

const (
	defaultTimeout    = 30 * time.Second
	defaultRetries    = 3
	defaultBackoff    = 500 * time.Millisecond
	defaultBlockSize  = 16 << 10
	defaultCacheBytes = 32 << 20
	// maxReadAhead bounds the read-ahead window; a GGUF tokenizer of a few megabytes takes about eight requests.
	maxReadAhead = 8 << 20
)

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.Retries == 0 {
		o.Retries = defaultRetries
	}
	if o.Retries < 0 {
		o.Retries = 0
	}
	if o.Backoff <= 0 {
		o.Backoff = defaultBackoff
	}
	if o.BlockSize <= 0 {
		o.BlockSize = defaultBlockSize
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = defaultCacheBytes
	}
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	return o
}

// IsURL reports whether path names an http or https resource rather than a local file.
func IsURL(path string) bool {
	return strings.HasPrefix(path, "http://") || strings.HasPrefix(path, "https://")
}

// ErrRangesIgnored is returned (wrapped) when a server answers a range request with the whole file.
var ErrRangesIgnored = errors.New("the server ignores range requests (it answered 200 with the whole file instead of 206 with the part asked for)")

// ErrUnknownSize is returned (wrapped) when a server does not say how large the file is.
var ErrUnknownSize = errors.New("the server did not give the file's size (no total in Content-Range, no Content-Length)")

// StatusError is an HTTP answer that is not a success.
type StatusError struct {
	URL    string
	Code   int
	Status string // as the server sent it: "404 Not Found"
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("GET %s: %s", e.URL, e.Status)
	switch e.Code {
	case http.StatusUnauthorized, http.StatusForbidden:
		msg += " (for a private file set LATHE_HTTP_TOKEN, or HF_TOKEN for huggingface.co, or pass --header)"
	case http.StatusNotFound:
		msg += " (check the URL; on huggingface.co file URLs look like https://huggingface.co/ORG/REPO/resolve/main/FILE)"
	}
	return msg
}

// temporary reports answers worth retrying: the server is overloaded or failed, not the request.
func (e *StatusError) temporary() bool {
	return e.Code >= 500 || e.Code == http.StatusTooManyRequests || e.Code == http.StatusRequestTimeout
}

// File is a remote file read through range requests. Its methods are safe for concurrent use.
type File struct {
	url  string
	size int64
	o    Options

	requests atomic.Int64
	fetched  atomic.Int64

	mu     sync.Mutex
	blocks map[int64]*block // by block index
	tick   uint64           // for least-recently-used eviction
	next   int64            // block after the last fetched run, to detect sequential reading
	window int64            // read-ahead, in blocks
}

type block struct {
	data []byte
	used uint64
}

// Open checks that url can be read in ranges and learns its size, with one request for its first block.
func Open(rawURL string, o Options) (*File, error) {
	f, err := newFile(rawURL, o)
	if err != nil {
		return nil, err
	}
	first := make([]byte, f.o.BlockSize)
	var n int
	err = f.retry(func(ctx context.Context) error {
		var err error
		n, f.size, err = f.get(ctx, first, 0, -1)
		return err
	})
	if err != nil {
		return nil, err
	}
	first = first[:min(int64(len(first)), f.size)]
	if err := f.fetch(first[n:], int64(n)); err != nil {
		return nil, err
	}
	f.store(0, first)
	f.next = 1
	return f, nil
}

func newFile(rawURL string, o Options) (*File, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%s: only http and https URLs can be read", rawURL)
	}
	o = o.withDefaults()
	if o.Token != "" && u.Scheme != "https" && !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("%s: refusing to send a bearer token over plain http to %s; use https", rawURL, u.Hostname())
	}
	return &File{url: rawURL, o: o, blocks: map[int64]*block{}, window: 1}, nil
}

// Name returns the URL; format readers use it in their messages.
func (f *File) Name() string { return f.url }

// Size returns the size of the file in bytes.
func (f *File) Size() int64 { return f.size }

// Requests returns the number of HTTP requests made so far, retries included.
func (f *File) Requests() int64 { return f.requests.Load() }

// Fetched returns the number of body bytes received so far.
func (f *File) Fetched() int64 { return f.fetched.Load() }

// ReadAt reads len(p) bytes at off. Small reads go through the cache; a read of several blocks or more is one
// request of its own, so that tensor data is never held twice.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset %d", f.url, off)
	}
	if off >= f.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), f.size-off))
	var err error
	if n >= 4*f.o.BlockSize {
		err = f.fetch(p[:n], off)
	} else {
		err = f.readCached(p[:n], off)
	}
	if err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *File) readCached(p []byte, off int64) error {
	bs := int64(f.o.BlockSize)
	for len(p) > 0 {
		bi := off / bs
		data, err := f.block(bi)
		if err != nil {
			return err
		}
		c := copy(p, data[off-bi*bs:])
		p, off = p[c:], off+int64(c)
	}
	return nil
}

// block returns block bi, fetching it with its read-ahead when it is not cached. Reading block after block (as a
// header parser does) doubles the read-ahead each time, so a header of H bytes costs about log2(H/BlockSize)
// requests; a jump elsewhere starts again from one block.
func (f *File) block(bi int64) ([]byte, error) {
	f.mu.Lock()
	if b, ok := f.blocks[bi]; ok {
		f.tick++
		b.used = f.tick
		f.mu.Unlock()
		return b.data, nil
	}
	if bi == f.next {
		// Never more than the cache holds: blocks read ahead would push each other out.
		f.window = min(2*f.window, int64(max(1, min(maxReadAhead, f.o.CacheBytes)/f.o.BlockSize)))
	} else {
		f.window = 1
	}
	bs := int64(f.o.BlockSize)
	count := f.window
	nBlocks := (f.size + bs - 1) / bs
	count = min(count, nBlocks-bi)
	// Stop the run at the first block already cached: it need not be fetched again.
	for i := int64(1); i < count; i++ {
		if _, ok := f.blocks[bi+i]; ok {
			count = i
			break
		}
	}
	f.next = bi + count
	f.mu.Unlock()

	off := bi * bs
	data := make([]byte, min(count*bs, f.size-off))
	if err := f.fetch(data, off); err != nil {
		return nil, err
	}
	for i := int64(0); i < count; i++ {
		lo := i * bs
		f.store(bi+i, data[lo:min(lo+bs, int64(len(data))):min(lo+bs, int64(len(data)))])
	}
	return data[:min(bs, int64(len(data)))], nil
}

// store caches a block, evicting the least recently used ones beyond CacheBytes.
func (f *File) store(bi int64, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tick++
	f.blocks[bi] = &block{data: data, used: f.tick}
	for len(f.blocks)*f.o.BlockSize > f.o.CacheBytes {
		oldest, at := int64(-1), ^uint64(0)
		for i, b := range f.blocks {
			if b.used < at {
				oldest, at = i, b.used
			}
		}
		delete(f.blocks, oldest)
	}
}

// retry runs attempt until it succeeds, fails for good, or Retries are spent, waiting Backoff, 2·Backoff, … between
// attempts. Each attempt has its own Timeout.
func (f *File) retry(attempt func(ctx context.Context) error) error {
	wait := f.o.Backoff
	var err error
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), f.o.Timeout)
		err = attempt(ctx)
		timedOut := ctx.Err() == context.DeadlineExceeded
		cancel()
		if err == nil {
			return nil
		}
		if timedOut {
			err = fmt.Errorf("GET %s: no complete answer within %v: %w", f.url, f.o.Timeout, err)
		}
		if !retryable(err) || i == f.o.Retries {
			if i > 0 {
				err = fmt.Errorf("%w (after %d attempts)", err, i+1)
			}
			return err
		}
		time.Sleep(wait)
		wait *= 2
	}
}

func retryable(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.temporary()
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, errShortBody)
}

var errShortBody = errors.New("the answer ended early")

// do sends a GET with the configured headers, and rng as the Range header unless it is empty.
func (f *File) do(ctx context.Context, rng string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url, nil)
	if err != nil {
		return nil, err
	}
	for k, vs := range f.o.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if f.o.Token != "" {
		req.Header.Set("Authorization", "Bearer "+f.o.Token)
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	// A transparently decompressed answer would not be the bytes at the offsets asked for.
	req.Header.Set("Accept-Encoding", "identity")
	f.requests.Add(1)
	return f.o.Client.Do(req)
}

// get asks for len(p) bytes at off and reads the answer into p. It returns how many bytes came, fewer than asked
// only when the file ends or the server caps the length of a range, and the file size the server gave. size is the
// size known from earlier requests, -1 on the first.
func (f *File) get(ctx context.Context, p []byte, off, size int64) (int, int64, error) {
	resp, err := f.do(ctx, fmt.Sprintf("bytes=%d-%d", off, off+int64(len(p))-1))
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, end, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return 0, 0, fmt.Errorf("GET %s: %w", f.url, err)
		}
		if total < 0 {
			return 0, 0, fmt.Errorf("GET %s: %w", f.url, ErrUnknownSize)
		}
		if size >= 0 && total != size {
			return 0, 0, fmt.Errorf("GET %s: the file changed size from %d to %d bytes while being read", f.url, size, total)
		}
		if start != off || end-start >= int64(len(p)) {
			return 0, 0, fmt.Errorf("GET %s: asked for bytes %d-%d, the server sent %d-%d", f.url, off,
				off+int64(len(p))-1, start, end)
		}
		n := int(end - start + 1)
		return n, total, f.readBody(resp.Body, p[:n])
	case http.StatusOK:
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			return 0, 0, fmt.Errorf("GET %s: this is a web page, not a file (on huggingface.co, file URLs look like "+
				"https://huggingface.co/ORG/REPO/resolve/main/FILE)", f.url)
		}
		// A server may answer with the whole file when it is no larger than the range asked for; anything larger
		// would be a full download, which is not what the caller wants: refuse it before reading the body.
		if off == 0 && resp.ContentLength >= 0 && resp.ContentLength <= int64(len(p)) &&
			(size < 0 || resp.ContentLength == size) {
			n := int(resp.ContentLength)
			return n, resp.ContentLength, f.readBody(resp.Body, p[:n])
		}
		return 0, 0, fmt.Errorf("GET %s: %w; download the file and give its path", f.url, ErrRangesIgnored)
	case http.StatusRequestedRangeNotSatisfiable:
		// Only an empty file has no byte 0.
		if _, _, total, err := parseContentRange(resp.Header.Get("Content-Range")); err == nil && total == 0 && off == 0 {
			return 0, 0, nil
		}
	}
	return 0, 0, &StatusError{URL: f.url, Code: resp.StatusCode, Status: resp.Status}
}

// fetch fills p with the bytes at off, which the caller has checked are within the file: in several requests when
// the server caps the length of a range, each retried on its own.
func (f *File) fetch(p []byte, off int64) error {
	for len(p) > 0 {
		var n int
		err := f.retry(func(ctx context.Context) error {
			var err error
			n, _, err = f.get(ctx, p, off, f.size)
			return err
		})
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("GET %s: no bytes at offset %d of %d", f.url, off, f.size)
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (f *File) readBody(r io.Reader, p []byte) error {
	got, err := io.ReadFull(r, p)
	f.fetched.Add(int64(got))
	if err != nil {
		return fmt.Errorf("GET %s: %w after %d of %d bytes (%v)", f.url, errShortBody, got, len(p), err)
	}
	return nil
}

// parseContentRange reads "bytes START-END/TOTAL" or "bytes */TOTAL" (RFC 9110 §14.4); total is -1 for "*", and
// start and end are 0 and -1 for "*".
func parseContentRange(s string) (start, end, total int64, err error) {
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, fmt.Errorf("Content-Range %q is not a byte range", s)
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, fmt.Errorf("Content-Range %q has no total", s)
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total < 0 {
			return 0, 0, 0, fmt.Errorf("Content-Range %q: bad total", s)
		}
	}
	if rng == "*" {
		return 0, -1, total, nil
	}
	first, last, ok := strings.Cut(rng, "-")
	start, err1 := strconv.ParseInt(first, 10, 64)
	end, err2 := strconv.ParseInt(last, 10, 64)
	if !ok || err1 != nil || err2 != nil || start < 0 || end < start || total >= 0 && end >= total {
		return 0, 0, 0, fmt.Errorf("Content-Range %q: bad range", s)
	}
	return start, end, total, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ReadAll fetches a whole small file (an index, a config) of at most limit bytes with a plain GET, with the same
// headers, timeout and retries as Open.
func ReadAll(rawURL string, o Options, limit int64) ([]byte, error) {
	f, err := newFile(rawURL, o)
	if err != nil {
		return nil, err
	}
	var data []byte
	err = f.retry(func(ctx context.Context) error {
		resp, err := f.do(ctx, "")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return &StatusError{URL: f.url, Code: resp.StatusCode, Status: resp.Status}
		}
		if data, err = io.ReadAll(io.LimitReader(resp.Body, limit+1)); err != nil {
			return err
		}
		f.fetched.Add(int64(len(data)))
		if int64(len(data)) > limit {
			return fmt.Errorf("GET %s: more than the %d bytes expected of this file", f.url, limit)
		}
		if resp.ContentLength >= 0 && int64(len(data)) != resp.ContentLength {
			return fmt.Errorf("GET %s: %w after %d of %d bytes", f.url, errShortBody, len(data), resp.ContentLength)
		}
		return nil
	})
	return data, err
}
