package oasvalidate

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// Mismatch is a request or an answer that does not conform.
type Mismatch struct {
	Method, Path string
	Status       int    // the answer's status; 0 for a request mismatch
	Err          error  // what does not conform
	Body         []byte // the request's body, or the answer's
}

func (m Mismatch) String() string {
	return fmt.Sprintf("%s %s: %v\n\tbody: %.1000s", m.Method, m.Path, m.Err, m.Body)
}

// skipped are path prefixes that are not GitHub's API: the simulator's
// job-log blobs (behind the 302 of the logs operation) and ghsim's control
// endpoints.
var skipped = []string{"/_simulator/", "/_ghsim/"}

// Handler checks every request before next serves it, and next's answer,
// calling report (from the serving goroutine) for each mismatch. The
// request is served whatever it finds. An answer whose connection next
// hijacks (a lost answer) is not checked.
func (v *Validator) Handler(next http.Handler, report func(Mismatch)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, p := range skipped {
			if strings.HasPrefix(r.URL.Path, p) {
				next.ServeHTTP(w, r)
				return
			}
		}
		var body []byte
		if r.Body != nil {
			var err error
			if body, err = io.ReadAll(r.Body); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Body.Close()
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		op, err := v.Request(r, body)
		if err != nil {
			report(Mismatch{Method: r.Method, Path: r.URL.RequestURI(), Err: err, Body: body})
		}
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if op == nil || rec.hijacked {
			return
		}
		if rec.status == 0 {
			rec.status, rec.header = http.StatusOK, w.Header().Clone()
		}
		if err := v.Response(op, rec.status, rec.header, rec.body.Bytes()); err != nil {
			report(Mismatch{Method: r.Method, Path: r.URL.RequestURI(), Status: rec.status, Err: err, Body: rec.body.Bytes()})
		}
	})
}

// recorder passes an answer on and keeps a copy.
type recorder struct {
	http.ResponseWriter
	status   int
	header   http.Header
	body     bytes.Buffer
	hijacked bool
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status, r.header = code, r.ResponseWriter.Header().Clone()
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("oasvalidate: the connection cannot be hijacked")
	}
	r.hijacked = true
	return hj.Hijack()
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Wrap returns a handler wrapper (simulator.Options.Wrap) that checks all
// traffic and, when t's test ends, fails it with every mismatch found
// (identical ones once, with their count). Call it before the simulator's
// own cleanup is registered, so that the report comes after the
// simulator has stopped.
func Wrap(t testing.TB) func(http.Handler) http.Handler {
	t.Helper()
	v, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{seen: map[string]int{}}
	t.Cleanup(func() { c.report(t) })
	return func(next http.Handler) http.Handler { return v.Handler(next, c.add) }
}

// collector keeps mismatches until the test ends.
type collector struct {
	mu    sync.Mutex
	done  bool
	order []string
	seen  map[string]int
}

func (c *collector) add(m Mismatch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return // after the report: the test is over
	}
	key := m.String()
	if c.seen[key] == 0 {
		c.order = append(c.order, key)
	}
	c.seen[key]++
}

func (c *collector) report(t testing.TB) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = true
	for _, k := range c.order {
		if n := c.seen[k]; n > 1 {
			t.Errorf("%s\n\t(%d times)", k, n)
		} else {
			t.Error(k)
		}
	}
}
