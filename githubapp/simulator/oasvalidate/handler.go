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

// Mismatch is a request, an answer or a webhook that does not conform.
type Mismatch struct {
	Method, Path string // the request's; "" for a webhook
	Status       int    // the answer's status; 0 for a request or a webhook
	// Webhook is the webhook's event and action ("deployment/created"),
	// "" for a request or an answer.
	Webhook string
	Err     error  // what does not conform
	Body    []byte // the request's body, the answer's, or the webhook's
}

func (m Mismatch) String() string {
	if m.Webhook != "" {
		// Err, Validator.Webhook's, begins "webhook EVENT/ACTION".
		return fmt.Sprintf("the simulator's %v\n\tbody: %.1000s", m.Err, m.Body)
	}
	return fmt.Sprintf("%s %s: %v\n\tbody: %.1000s", m.Method, m.Path, m.Err, m.Body)
}

// skipped are path prefixes that are not GitHub's API: the simulator's
// job-log blobs (behind the 302 of the logs operation) and ghsim's control
// endpoints.
var skipped = []string{"/_simulator/", "/_ghsim/"}

// Handler checks every request before next serves it, and next's answer,
// calling report (from the serving goroutine) for each mismatch. The
// request is served whatever it finds. An answer whose connection next
// hijacks (a lost answer) is not checked. The handler is a
// simulator.WebhookObserver: the simulator it wraps has it check every
// webhook before it is sent (reported from the simulator's sender).
func (v *Validator) Handler(next http.Handler, report func(Mismatch)) http.Handler {
	return &handler{v: v, next: next, report: report}
}

// handler is what Handler returns.
type handler struct {
	v      *Validator
	next   http.Handler
	report func(Mismatch)
}

// ObserveWebhook checks a webhook the simulator is about to send
// (simulator.WebhookObserver).
func (h *handler) ObserveWebhook(event, action string, body []byte) {
	if err := h.v.Webhook(event, action, body); err != nil {
		name := event
		if action != "" {
			name += "/" + action
		}
		h.report(Mismatch{Webhook: name, Err: err, Body: body})
	}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v, next, report := h.v, h.next, h.report
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
// traffic, and every webhook the simulator sends, and, when t's test ends,
// fails it with every mismatch found (identical ones once, with their
// count). The simulator finds the webhook check on the handler Wrap
// returns (a simulator.WebhookObserver): a wrapper of that handler must be
// inside it, or pass ObserveWebhook on to it.
// Call Wrap before the simulator's own cleanup is registered, so that the
// report comes after the simulator has stopped.
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
