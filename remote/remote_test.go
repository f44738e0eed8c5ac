package remote

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// server serves content with range support (net/http's ServeContent) on 127.0.0.1 and counts what it sends.
type server struct {
	*httptest.Server
	requests atomic.Int64
	served   atomic.Int64
	mu       sync.Mutex
	headers  []http.Header
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

// Write counts before writing: the client may have the bytes, and the test go on, before Write returns.
func (w countingWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	return w.ResponseWriter.Write(p)
}

// newServer serves content; handle, if set, may answer a request itself (returning true) to simulate a failure.
func newServer(t *testing.T, content []byte, handle func(w http.ResponseWriter, r *http.Request, n int64) bool) *server {
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := s.requests.Add(1)
		s.mu.Lock()
		s.headers = append(s.headers, r.Header.Clone())
		s.mu.Unlock()
		cw := countingWriter{w, &s.served}
		if handle != nil && handle(cw, r, n) {
			return
		}
		http.ServeContent(cw, r, "f.bin", time.Time{}, bytes.NewReader(content))
	}))
	t.Cleanup(s.Close)
	return s
}

func randomBytes(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n]
}

var fast = Options{Backoff: time.Millisecond, Timeout: 5 * time.Second}

func TestReadAtReturnsTheFileBytes(t *testing.T) {
	content := randomBytes(1<<20 + 12345)
	s := newServer(t, content, nil)
	f, err := Open(s.URL+"/f.bin", fast)
	if err != nil {
		t.Fatal(err)
	}
	if f.Size() != int64(len(content)) || f.Name() != s.URL+"/f.bin" {
		t.Fatalf("size %d name %s", f.Size(), f.Name())
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(3, uint64(g)))
			for i := range 200 {
				n := r.IntN(1 << (4 + i%14))
				off := r.Int64N(int64(len(content)))
				p := make([]byte, n)
				got, err := f.ReadAt(p, off)
				want := min(n, len(content)-int(off))
				if got != want || (want < n) != (err == io.EOF) || (want == n && err != nil) {
					t.Errorf("goroutine %d: ReadAt(%d bytes at %d) = %d, %v", g, n, off, got, err)
					return
				}
				if !bytes.Equal(p[:got], content[off:off+int64(got)]) {
					t.Errorf("goroutine %d: ReadAt(%d bytes at %d) returned other bytes", g, n, off)
					return
				}
			}
		})
	}
	wg.Wait()
	if _, err := f.ReadAt(make([]byte, 1), f.Size()); err != io.EOF {
		t.Errorf("read at end: %v", err)
	}
}

// A header parser reads a few bytes at a time from the start; the read-ahead must turn that into a handful of
// requests, and the bytes fetched must stay close to what was read.
func TestSequentialSmallReadsTakeFewRequests(t *testing.T) {
	content := randomBytes(8 << 20)
	s := newServer(t, content, nil)
	f, err := Open(s.URL, fast)
	if err != nil {
		t.Fatal(err)
	}
	const header = 3 << 20
	p := make([]byte, 24)
	for off := int64(0); off < header; off += int64(len(p)) {
		if _, err := f.ReadAt(p, off); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d-byte header read 24 bytes at a time: %d requests, %d bytes fetched", header, s.requests.Load(), s.served.Load())
	// 16 KiB, then windows of 2, 4, … 256 blocks: 16K·(1+2+…+256) = 8 MiB covers 3 MiB after 8 more requests.
	if r := s.requests.Load(); r > 9 {
		t.Errorf("%d requests to read a %d-byte header", r, header)
	}
	if b := s.served.Load(); b > 2*header+defaultBlockSize {
		t.Errorf("served %d bytes to read a %d-byte header", b, header)
	}
	if f.Requests() != s.requests.Load() || f.Fetched() != s.served.Load() {
		t.Errorf("counters: client %d requests %d bytes, server %d requests %d bytes", f.Requests(), f.Fetched(),
			s.requests.Load(), s.served.Load())
	}
}

func TestLargeReadsBypassTheCache(t *testing.T) {
	content := randomBytes(4 << 20)
	s := newServer(t, content, nil)
	f, err := Open(s.URL, fast)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 3<<20)
	if _, err := f.ReadAt(p, 12345); err != nil || !bytes.Equal(p, content[12345:12345+len(p)]) {
		t.Fatalf("large read: %v", err)
	}
	if s.requests.Load() != 2 || s.served.Load() != defaultBlockSize+3<<20 {
		t.Errorf("%d requests, %d bytes", s.requests.Load(), s.served.Load())
	}
	if len(f.blocks) != 1 {
		t.Errorf("large read cached %d blocks", len(f.blocks)-1)
	}
}

func TestCacheStaysWithinItsBound(t *testing.T) {
	content := randomBytes(1 << 20)
	s := newServer(t, content, nil)
	o := fast
	o.CacheBytes = 4 * defaultBlockSize
	f, err := Open(s.URL, o)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 100)
	for off := int64(0); off < int64(len(content)); off += 7919 {
		if _, err := f.ReadAt(p, off); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(p[:min(100, len(content)-int(off))], content[off:min(off+100, int64(len(content)))]) {
			t.Fatalf("bytes at %d", off)
		}
		if len(f.blocks) > 4 {
			t.Fatalf("%d blocks cached, bound is 4", len(f.blocks))
		}
	}
}

func TestServerFailures(t *testing.T) {
	content := randomBytes(100 << 10)
	tests := []struct {
		name     string
		handle   func(w http.ResponseWriter, r *http.Request, n int64) bool
		opts     func(*Options)
		wantErr  func(error) bool
		requests int64
	}{
		{
			name: "range ignored",
			handle: func(w http.ResponseWriter, r *http.Request, n int64) bool {
				w.Header().Set("Content-Length", fmt.Sprint(len(content)))
				w.WriteHeader(http.StatusOK)
				w.Write(content)
				return true
			},
			wantErr:  func(err error) bool { return errors.Is(err, ErrRangesIgnored) },
			requests: 1,
		},
		{
			name: "no total size",
			handle: func(w http.ResponseWriter, r *http.Request, n int64) bool {
				w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/*", defaultBlockSize-1))
				w.WriteHeader(http.StatusPartialContent)
				w.Write(content[:defaultBlockSize])
				return true
			},
			wantErr:  func(err error) bool { return errors.Is(err, ErrUnknownSize) },
			requests: 1,
		},
		{
			name: "web page",
			handle: func(w http.ResponseWriter, r *http.Request, n int64) bool {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				w.Write([]byte("<html>a model card</html>"))
				return true
			},
			wantErr:  func(err error) bool { return strings.Contains(err.Error(), "this is a web page, not a file") },
			requests: 1,
		},
		{
			name: "not found is not retried",
			handle: func(w http.ResponseWriter, r *http.Request, n int64) bool {
				http.NotFound(w, r)
				return true
			},
			wantErr: func(err error) bool {
				var se *StatusError
				return errors.As(err, &se) && se.Code == 404 && strings.Contains(err.Error(), "404 Not Found")
			},
			requests: 1,
		},
		{
			name: "5xx retried until the retries are spent",
			handle: func(w http.ResponseWriter, r *http.Request, n int64) bool {
				http.Error(w, "down", http.StatusBadGateway)
				return true
			},
			opts: func(o *Options) { o.Retries = 2 },
			wantErr: func(err error) bool {
				var se *StatusError
				return errors.As(err, &se) && se.Code == 502 && strings.Contains(err.Error(), "after 3 attempts")
			},
			requests: 3,
		},
		{
			name: "500 then success",
			handle: func(w http.ResponseWriter, r *http.Request, n int64) bool {
				if n <= 2 {
					http.Error(w, "busy", http.StatusInternalServerError)
					return true
				}
				return false
			},
			requests: 3,
		},
		{
			name: "body cut short, then success",
			handle: func(w http.ResponseWriter, r *http.Request, n int64) bool {
				if n == 1 {
					w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", defaultBlockSize-1, len(content)))
					w.Header().Set("Content-Length", fmt.Sprint(defaultBlockSize))
					w.WriteHeader(http.StatusPartialContent)
					w.Write(content[:100])
					panic(http.ErrAbortHandler) // drop the connection mid-body
				}
				return false
			},
			requests: 2,
		},
		{
			name: "timeout",
			handle: func(w http.ResponseWriter, r *http.Request, n int64) bool {
				<-r.Context().Done() // never answer; the client gives up
				return true
			},
			opts: func(o *Options) { o.Timeout = 20 * time.Millisecond; o.Retries = 1 },
			wantErr: func(err error) bool {
				return strings.Contains(err.Error(), "no complete answer within 20ms") &&
					strings.Contains(err.Error(), "after 2 attempts")
			},
			requests: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, content, tc.handle)
			o := fast
			if tc.opts != nil {
				tc.opts(&o)
			}
			f, err := Open(s.URL+"/model.gguf", o)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				p := make([]byte, 1000)
				if _, err := f.ReadAt(p, 5000); err != nil || !bytes.Equal(p, content[5000:6000]) {
					t.Fatalf("read after recovery: %v", err)
				}
			} else if err == nil || !tc.wantErr(err) {
				t.Fatalf("error %v", err)
			} else if !strings.Contains(err.Error(), s.URL+"/model.gguf") {
				t.Errorf("error does not name the URL: %v", err)
			}
			if got := s.requests.Load(); got != tc.requests {
				t.Errorf("%d requests, want %d", got, tc.requests)
			}
		})
	}
}

// Some servers send less than the range asked for; the reader asks again for the rest.
func TestServerCappingRanges(t *testing.T) {
	content := randomBytes(300 << 10)
	const limit = 10000
	s := newServer(t, content, func(w http.ResponseWriter, r *http.Request, n int64) bool {
		var from, to int
		if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &from, &to); err != nil {
			t.Errorf("Range %q", r.Header.Get("Range"))
			return false
		}
		to = min(to, from+limit-1, len(content)-1)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, to, len(content)))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(content[from : to+1])
		return true
	})
	f, err := Open(s.URL, fast)
	if err != nil {
		t.Fatal(err)
	}
	for _, rd := range [][2]int{{0, 100}, {12345, 200 << 10}, {5000, 30000}, {len(content) - 10, 10}} {
		p := make([]byte, rd[1])
		if _, err := f.ReadAt(p, int64(rd[0])); err != nil || !bytes.Equal(p, content[rd[0]:rd[0]+rd[1]]) {
			t.Errorf("ReadAt(%d bytes at %d): %v", rd[1], rd[0], err)
		}
	}
}

func TestSmallFileAnsweredWhole(t *testing.T) {
	content := []byte("tiny file")
	s := newServer(t, content, func(w http.ResponseWriter, r *http.Request, n int64) bool {
		w.Write(content) // 200 with Content-Length 9: the whole file, smaller than the range asked for
		return true
	})
	f, err := Open(s.URL, fast)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 4)
	if _, err := f.ReadAt(p, 5); err != nil || string(p) != "file" || f.Size() != 9 {
		t.Errorf("%q %v size %d", p, err, f.Size())
	}
}

func TestEmptyFile(t *testing.T) {
	s := newServer(t, nil, nil)
	f, err := Open(s.URL, fast)
	if err != nil {
		t.Fatal(err)
	}
	if f.Size() != 0 {
		t.Errorf("size %d", f.Size())
	}
	if _, err := f.ReadAt(make([]byte, 8), 0); err != io.EOF {
		t.Errorf("read of an empty file: %v", err)
	}
}

func TestHeadersAndToken(t *testing.T) {
	s := newServer(t, randomBytes(1000), nil)
	o := fast
	o.Header = http.Header{"X-Api-Key": {"k1"}}
	o.Token = "secret"
	if _, err := Open(s.URL, o); err != nil {
		t.Fatal(err)
	}
	h := s.headers[0]
	if h.Get("X-Api-Key") != "k1" || h.Get("Authorization") != "Bearer secret" || h.Get("Range") != "bytes=0-16383" {
		t.Errorf("request headers %v", h)
	}
	// The check comes before any connection: nothing listens at this address.
	_, err := Open("http://192.0.2.1/model.gguf", o)
	if err == nil || !strings.Contains(err.Error(), "refusing to send a bearer token over plain http") {
		t.Errorf("token over plain http: %v", err)
	}
	if _, err := Open("ftp://example.com/x", fast); err == nil {
		t.Error("ftp URL accepted")
	}
}

func TestFileChangingSizeIsAnError(t *testing.T) {
	content := randomBytes(200 << 10)
	s := newServer(t, content, func(w http.ResponseWriter, r *http.Request, n int64) bool {
		if n > 1 {
			http.ServeContent(w, r, "f", time.Time{}, bytes.NewReader(content[:150<<10]))
			return true
		}
		return false
	})
	f, err := Open(s.URL, fast)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.ReadAt(make([]byte, 10), 100<<10)
	if err == nil || !strings.Contains(err.Error(), "changed size") {
		t.Errorf("error %v", err)
	}
}

func TestReadAll(t *testing.T) {
	content := []byte(`{"weight_map": {}}`)
	s := newServer(t, content, nil)
	got, err := ReadAll(s.URL, fast, 100)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("%q %v", got, err)
	}
	if h := s.headers[0]; h.Get("Range") != "" {
		t.Errorf("ReadAll sent Range %q", h.Get("Range"))
	}
	if _, err := ReadAll(s.URL, fast, 10); err == nil || !strings.Contains(err.Error(), "more than the 10 bytes") {
		t.Errorf("limit: %v", err)
	}
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in                string
		start, end, total int64
		ok                bool
	}{
		{"bytes 0-99/1000", 0, 99, 1000, true},
		{"bytes 100-199/*", 100, 199, -1, true},
		{"bytes */0", 0, -1, 0, true},
		{"bytes 5-4/10", 0, 0, 0, false},
		{"bytes 0-10/10", 0, 0, 0, false},
		{"bytes 0-9", 0, 0, 0, false},
		{"items 0-9/10", 0, 0, 0, false},
		{"bytes -1-9/10", 0, 0, 0, false},
	} {
		start, end, total, err := parseContentRange(tc.in)
		if (err == nil) != tc.ok || tc.ok && (start != tc.start || end != tc.end || total != tc.total) {
			t.Errorf("%q: %d %d %d %v", tc.in, start, end, total, err)
		}
	}
}

// Content-Range comes from the server: any value must parse to a consistent range or an error, never a panic.
func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-99/1000", "bytes 100-199/*", "bytes */0", "bytes 5-4/10", "bytes 0-9",
		"bytes 9223372036854775807-9223372036854775807/*", "bytes -0-1/2", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, end, total, err := parseContentRange(s)
		if err == nil && (start < 0 || end < start && !(start == 0 && end == -1) || total < -1 ||
			total >= 0 && end >= total) {
			t.Errorf("%q: start %d end %d total %d", s, start, end, total)
		}
	})
}
