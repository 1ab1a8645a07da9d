package simulator

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// rateWindow is one primary rate-limit bucket: an hour from its first use.
type rateWindow struct {
	limit int
	used  int
	reset time.Time
}

// rateSnapshot is the bucket's state after counting one request.
type rateSnapshot struct {
	key         string // the bucket's, in state.rates
	limit, used int
	reset       time.Time
	resource    string
	who         string
}

func (r rateSnapshot) remaining() int { return max(0, r.limit-r.used) }
func (r rateSnapshot) exceeded() bool { return r.used > r.limit }

func (r rateSnapshot) setHeaders(h http.Header) {
	h.Set("X-RateLimit-Limit", strconv.Itoa(r.limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(r.remaining()))
	h.Set("X-RateLimit-Used", strconv.Itoa(min(r.used, r.limit)))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(r.reset.Unix(), 10))
	h.Set("X-RateLimit-Resource", r.resource)
}

// writeExceeded answers a request of a spent bucket (its headers already
// say remaining 0 and the reset) with GitHub's message, which names the
// request's ID: "API rate limit exceeded for installation ID 22782749. If
// you reach out to GitHub Support for help, please include the request ID
// E069:28A5:946476:98F36C:6542E844." (as GitHub answered in a public issue).
func (r rateSnapshot) writeExceeded(w *response, status int) {
	msg := fmt.Sprintf("API rate limit exceeded for %s. If you reach out to GitHub Support for help, please include the request ID %s.", r.who, w.header.Get("X-GitHub-Request-Id"))
	writeError(w, status, msg, "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-primary-rate-limits")
}

// rateFor counts a request against its bucket, as GitHub does: installation
// tokens share their installation's limit (Options.RateLimit, 5,000/h by
// default), the App's JWT has its own, a workflow's GITHUB_TOKEN has 1,000/h
// per repository, and unauthenticated callers 60/h per address. Call with
// s.mu held.
func (s *Simulator) rateFor(a *auth, now time.Time) rateSnapshot {
	var key, who string
	limit := s.opts.RateLimit
	switch {
	case a.kind == AuthInstallation:
		key, who = fmt.Sprintf("installation:%d", a.installationID), fmt.Sprintf("installation ID %d", a.installationID)
	case a.kind == AuthWorkflow:
		key, who, limit = "workflow:"+a.tok.repos[0].fullName(), "repository "+a.tok.repos[0].fullName(), 1000
	case a.kind == AuthApp:
		key, who = "app", fmt.Sprintf("integration ID %d", s.opts.AppID)
	default:
		key, who, limit = "ip:"+a.remote, a.remote, 60
	}
	w := s.st.rateWindow(key, limit, now)
	w.used++
	return rateSnapshot{key: key, limit: w.limit, used: w.used, reset: w.reset, resource: "core", who: who}
}

// rateWindow returns the bucket key, a fresh one of limit when it has none
// or its hour is over. Call with s.mu held.
func (st *state) rateWindow(key string, limit int, now time.Time) *rateWindow {
	w := st.rates[key]
	if w == nil || !now.Before(w.reset) {
		w = &rateWindow{limit: limit, reset: now.Add(time.Hour).Truncate(time.Second)}
		st.rates[key] = w
	}
	return w
}

// spendLocked spends the bucket of r until reset, as if its budget were
// used up: this request is its last, and every later one is refused until
// reset, then a fresh hour begins. It returns r as spent. Call with s.mu
// held.
func (s *Simulator) spendLocked(r rateSnapshot, reset time.Time) rateSnapshot {
	w := s.st.rates[r.key]
	w.used, w.reset = w.limit, reset.Truncate(time.Second)
	r.used, r.reset = w.used, w.reset
	return r
}

// SetRateLimitUsed sets how much of an installation's hourly budget is used,
// so tests can reach the primary rate limit without thousands of requests.
func (s *Simulator) SetRateLimitUsed(installationID int64, used int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.rateWindow(fmt.Sprintf("installation:%d", installationID), s.opts.RateLimit, s.clock()).used = used
	s.notifyLocked()
}
