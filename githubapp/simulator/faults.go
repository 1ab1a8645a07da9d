package simulator

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// FaultKind selects what an injected fault does.
type FaultKind int

// Fault kinds.
const (
	// FaultServerError answers Status (default 502) without doing anything.
	FaultServerError FaultKind = iota + 1
	// FaultPrimaryRateLimit spends the hourly budget of the request's
	// bucket (its installation's, for an installation token) until Reset:
	// the request is answered Status (403, or 429) with
	// x-ratelimit-remaining: 0 and x-ratelimit-reset, and so is every call
	// of that bucket until then (403, as a spent budget is), whatever its
	// path; then a fresh hour begins. Keep Reset short in tests that wait
	// for it by the real clock.
	FaultPrimaryRateLimit
	// FaultSecondaryRateLimit answers Status (403, or 429) with GitHub's
	// secondary-limit message and, when RetryAfter > 0, Retry-After.
	FaultSecondaryRateLimit
	// FaultDelay waits Delay (or until the client gives up), then answers
	// normally.
	FaultDelay
	// FaultAppliedLost performs the request (the deployment IS created)
	// but the client gets Status (default 502) instead of the answer, or
	// the connection is closed when DropConnection is set — after Delay,
	// if set (the request is recorded before the wait).
	FaultAppliedLost
	// FaultSpammed answers Status (default 422) with GitHub's validation
	// error saying that the endpoint has been spammed (content created too
	// fast: a limit that passes), and Retry-After when RetryAfter > 0,
	// without doing anything.
	FaultSpammed
)

// Fault is a failure injected into the REST API for the next Times requests
// that match Method and Path.
type Fault struct {
	Kind FaultKind
	// Method matches the request method; "" matches any.
	Method string
	// Path matches the URL path segment by segment; a segment "*" or
	// "{name}" matches any one segment, and a final "**" any rest.
	// Example: "/repos/{owner}/{repo}/deployments".
	Path string
	// Times is how many matching requests fail; 0 means 1.
	Times int
	// Status overrides the HTTP status where the kind allows it.
	Status int
	// RetryAfter is sent as Retry-After (seconds) by FaultSecondaryRateLimit
	// and FaultSpammed.
	RetryAfter time.Duration
	// Reset is how far ahead x-ratelimit-reset is for
	// FaultPrimaryRateLimit, and how long the budget stays spent (default
	// one minute).
	Reset time.Duration
	// Delay is the wait of FaultDelay, and FaultAppliedLost's wait before
	// its lost answer.
	Delay time.Duration
	// DropConnection closes the connection instead of answering
	// (FaultAppliedLost).
	DropConnection bool
}

// InjectFault arms a fault. Faults are matched in the order they were
// injected; each request triggers at most one.
func (s *Simulator) InjectFault(f Fault) {
	if f.Times <= 0 {
		f.Times = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.faults = append(s.st.faults, &f)
	s.notifyLocked()
}

// ClearFaults disarms every fault.
func (s *Simulator) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.faults = nil
	s.notifyLocked()
}

// PendingFaults returns how many fault triggers remain.
func (s *Simulator) PendingFaults() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, f := range s.st.faults {
		n += f.Times
	}
	return n
}

// matchFault consumes one trigger of the first matching fault. Call with
// s.mu held.
func (s *Simulator) matchFault(r *http.Request) *Fault {
	for i, f := range s.st.faults {
		if (f.Method == "" || strings.EqualFold(f.Method, r.Method)) && pathMatches(f.Path, r.URL.Path) {
			f.Times--
			if f.Times == 0 {
				s.st.faults = append(s.st.faults[:i:i], s.st.faults[i+1:]...)
			}
			c := *f
			return &c
		}
	}
	return nil
}

func pathMatches(pattern, path string) bool {
	ps := strings.Split(strings.Trim(pattern, "/"), "/")
	xs := strings.Split(strings.Trim(path, "/"), "/")
	for i, p := range ps {
		if p == "**" {
			return true
		}
		if i >= len(xs) {
			return false
		}
		if p == "*" || (strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}")) {
			continue
		}
		if p != xs[i] {
			return false
		}
	}
	return len(ps) == len(xs)
}

// reset is how long FaultPrimaryRateLimit spends the budget.
func (f *Fault) reset() time.Duration {
	if f.Reset <= 0 {
		return time.Minute
	}
	return f.Reset
}

// writeFault answers a request with the fault instead of handling it.
func (s *Simulator) writeFault(w *response, f *Fault, rate rateSnapshot) {
	status := func(def int) int {
		if f.Status != 0 {
			return f.Status
		}
		return def
	}
	switch f.Kind {
	case FaultPrimaryRateLimit:
		// The headers say the budget spent (spendLocked).
		rate.writeExceeded(w, status(http.StatusForbidden))
	case FaultSecondaryRateLimit:
		setRetryAfter(w, f)
		writeError(w, status(http.StatusForbidden),
			"You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID "+w.header.Get("X-GitHub-Request-Id")+".",
			"https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits")
	case FaultSpammed:
		setRetryAfter(w, f)
		writeError(w, status(http.StatusUnprocessableEntity), spammedMessage, docsRoot)
	default:
		writeError(w, status(http.StatusBadGateway), "Server Error", docsRoot)
	}
}

// setRetryAfter sends f.RetryAfter, if any, as Retry-After (seconds).
func setRetryAfter(w *response, f *Fault) {
	if f.RetryAfter > 0 {
		w.header.Set("Retry-After", strconv.Itoa(int((f.RetryAfter+time.Second-1)/time.Second)))
	}
}

// spammedMessage is the message of FaultSpammed's answer. GitHub documents
// its 422 as "Validation failed, or the endpoint has been spammed."; this
// is the second case's message.
const spammedMessage = "Validation Failed: the endpoint has been spammed."

// lostAnswer replaces a performed request's answer: nil means "close the
// connection".
func (s *Simulator) lostAnswer(done *response, f *Fault, reqID string) *response {
	if f.DropConnection {
		return nil
	}
	rec := &response{header: http.Header{}}
	for _, k := range []string{"Date", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Used", "X-RateLimit-Reset", "X-RateLimit-Resource"} {
		rec.header.Set(k, done.header.Get(k))
	}
	rec.header.Set("X-GitHub-Request-Id", reqID)
	status := f.Status
	if status == 0 {
		status = http.StatusBadGateway
	}
	writeError(rec, status, "Server Error", docsRoot)
	return rec
}
