package githubapp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-github/v62/github"
)

// RequestObserver is told about every HTTP call made to GitHub.
type RequestObserver interface {
	// GitHubRequest counts one call; code is the HTTP status, or "error"
	// when no response arrived.
	GitHubRequest(method, code string)
	// GitHubRateLimit records the rate-limit headers of a response: quota
	// is whose rate limit it is (an installation's ID, "app" for the App's
	// own calls, "token" for another token), reset when it refills.
	GitHubRateLimit(quota, resource string, remaining, limit int, reset time.Time)
}

// RequestSeries are the label values (method, code) of the GitHub calls
// whose count is worth having at 0 before the first: lastmile's methods,
// each with the answers that mean trouble — no answer, GitHub's 5xx, its
// rate limits — and the usual success (see metrics.StartAtZero: a series
// that first appears at 1 is a call rate() never sees, and the
// operators' alert on failing calls is a ratio of these).
func RequestSeries() [][]string {
	var out [][]string
	for _, m := range []struct{ method, ok string }{{http.MethodGet, "200"}, {http.MethodPost, "201"}} {
		for _, code := range []string{m.ok, "error", "403", "429", "500", "502", "503", "504"} {
			out = append(out, []string{m.method, code})
		}
	}
	return out
}

// RateLimitedError is returned when GitHub's rate limit asks lastmile to wait
// longer than the transport is willing to block a caller. The caller should
// try again after Until.
type RateLimitedError struct {
	Until     time.Time
	Secondary bool // a secondary (abuse) limit rather than the hourly quota
	Status    int  // GitHub's answer; 0 when the call was not sent (the quota was known to be spent)
}

func (e *RateLimitedError) Error() string {
	kind := "primary"
	if e.Secondary {
		kind = "secondary"
	}
	if e.Status == 0 {
		return fmt.Sprintf("GitHub %s rate limit (quota spent, as GitHub's last answer said): retry after %s", kind, e.Until.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("GitHub %s rate limit (HTTP %d): retry after %s", kind, e.Status, e.Until.UTC().Format(time.RFC3339))
}

// Transport is the one http.RoundTripper under every GitHub call. It
//   - retries network errors and 5xx answers with exponential backoff and
//     jitter, for requests that are safe to send twice;
//   - honours rate limits: on 403/429 with Retry-After it waits that long, on
//     x-ratelimit-remaining: 0 until x-ratelimit-reset (as far away as it is
//     from the answer's Date: lastmile's clock may be off), otherwise (a secondary
//     limit without a hint) a minute, as GitHub's documentation asks; once
//     it knows a credential's hourly quota is spent it does not call GitHub
//     with that credential until reset, and a secondary limit's wait holds
//     all of the credential's calls;
//   - reports every call to the observer.
//
// A call sleeps at most MaxWait for rate limits in all, its retries
// included, and never past its context's deadline: a longer wait is not
// slept, the call fails with *RateLimitedError and the caller (the worker)
// schedules the retry, so that one throttled credential does not hold a
// worker long.
type Transport struct {
	Base       http.RoundTripper
	Observer   RequestObserver
	MaxRetries int           // further attempts after the first; default 4
	MaxWait    time.Duration // longest a call sleeps for rate limits, in all; default 30s
	BaseDelay  time.Duration // first backoff; default 500ms

	// Sleep waits for d or until ctx ends; tests replace it to record waits.
	Sleep func(ctx context.Context, d time.Duration) error
	Now   func() time.Time

	mu      sync.Mutex
	blocked map[quotaKey]time.Time // reset time of a spent quota, while remaining is 0
}

// quotaKey names one rate-limit quota. GitHub counts each installation, and
// the App itself, separately: one spent quota must not hold up the others.
// The key is the installation (whatever token it has now: a refreshed
// token draws on the same quota), the App, or for a token lastmile did not
// make (the Action's) the token itself, hashed; and the rate-limit resource.
type quotaKey struct {
	credential [sha256.Size]byte
	resource   string
}

func quotaOf(req *http.Request, resource string) quotaKey {
	name := quotaName(req)
	if name == "token" {
		return quotaKey{sha256.Sum256([]byte(req.Header.Get("Authorization"))), resource}
	}
	return quotaKey{sha256.Sum256([]byte("quota of " + name)), resource}
}

// installationKey marks a request context with the installation whose
// token the request carries (set by Clients).
type installationKey struct{}

// quotaName names the rate-limit quota a request draws on, for metrics.
func quotaName(req *http.Request) string {
	auth := req.Header.Get("Authorization")
	if cred, ok := strings.CutPrefix(auth, "Bearer "); ok && strings.HasPrefix(cred, "eyJ") && strings.Count(cred, ".") == 2 {
		// The App's JWT (installation tokens are fetched with it): a JSON
		// header, base64url, first. A token of GitHub's own (ghs_…,
		// whose newer form ghs_APPID_JWT has two dots too) is not.
		return "app"
	}
	if id, ok := req.Context().Value(installationKey{}).(int64); ok {
		return strconv.FormatInt(id, 10)
	}
	return "token"
}

// retrySafeKey marks a request context whose request may be sent twice.
type retrySafeKey struct{}

// WithRetrySafe marks the requests made with ctx as safe to repeat after an
// ambiguous failure (5xx, network error), although their method is not
// idempotent.
func WithRetrySafe(ctx context.Context) context.Context {
	return context.WithValue(ctx, retrySafeKey{}, true)
}

func (t *Transport) maxRetries() int {
	if t.MaxRetries > 0 {
		return t.MaxRetries
	}
	return 4
}

func (t *Transport) maxWait() time.Duration {
	if t.MaxWait > 0 {
		return t.MaxWait
	}
	return 30 * time.Second
}

func (t *Transport) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

func (t *Transport) sleep(ctx context.Context, d time.Duration) error {
	if t.Sleep != nil {
		return t.Sleep(ctx, d)
	}
	return Sleep(ctx, d)
}

// Sleep waits for d, or until ctx ends (then it returns ctx's error): the
// real clock's wait, for the Sleep hooks tests replace.
func Sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	hold := t.holdLimit(req)
	waited, err := t.waitForQuota(ctx, req, hold)
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	body, err := snapshotBody(req)
	if err != nil {
		return nil, err
	}
	repeatable := retrySafe(req)
	for attempt := 0; ; attempt++ {
		try := req
		if body != nil {
			try = req.Clone(ctx)
			try.Body = io.NopCloser(bytes.NewReader(body))
		}
		resp, err := t.base().RoundTrip(try)
		code := "error"
		if err == nil {
			code = strconv.Itoa(resp.StatusCode)
			t.recordRateLimit(req, resp)
		}
		if t.Observer != nil {
			t.Observer.GitHubRequest(req.Method, code)
		}
		last := attempt >= t.maxRetries()

		if err == nil {
			if wait, secondary, limited := rateLimitWait(resp, t.now()); limited {
				if secondary {
					// GitHub asks the whole client to slow down, not this
					// call alone: the credential's other calls wait too.
					t.block(quotaOf(req, secondaryResource), t.now().Add(wait))
				}
				if wait > t.maxWait()-waited || last || beyond(hold, t.now().Add(wait)) || pastDeadline(ctx, t.now().Add(wait)) {
					drain(resp)
					return nil, &RateLimitedError{Until: t.now().Add(wait), Secondary: secondary, Status: resp.StatusCode}
				}
				drain(resp)
				if err := t.sleep(ctx, wait); err != nil {
					return nil, err
				}
				waited += wait
				continue
			}
			if resp.StatusCode < 500 || !repeatable || last {
				return resp, nil
			}
		} else if !repeatable || last || ctx.Err() != nil {
			return nil, err
		}
		pause := t.backoff(attempt)
		if beyond(hold, t.now().Add(pause)) {
			if err == nil {
				return resp, nil // GitHub's answer, its body unread
			}
			return nil, err
		}
		if err == nil {
			drain(resp)
		}
		if err := t.sleep(ctx, pause); err != nil {
			return nil, err
		}
	}
}

// backoff is the wait before attempt+1: exponential with full jitter, capped.
func (t *Transport) backoff(attempt int) time.Duration {
	base := t.BaseDelay
	if base <= 0 {
		base = 500 * time.Millisecond
	}
	d := base << min(attempt, 6)
	return d/2 + rand.N(d/2+1)
}

// jwtHold is the longest a request carrying the App's JWT is held in the
// transport, waits and retries included: ghinstallation signs a JWT for
// each call, valid for about 90 seconds, and sending it again after that
// would only be refused (401). A longer wait is the caller's, with a new JWT.
const jwtHold = 60 * time.Second

// holdLimit is the time after which req is no longer held for a wait or a
// retry: jwtHold from now if it carries the App's JWT, else none (zero).
func (t *Transport) holdLimit(req *http.Request) time.Time {
	if quotaName(req) == "app" {
		return t.now().Add(jwtHold)
	}
	return time.Time{}
}

// beyond reports whether at is past hold (holdLimit's; zero: no limit).
func beyond(hold, at time.Time) bool { return !hold.IsZero() && at.After(hold) }

// pastDeadline reports whether at leaves the call too little of ctx's time
// (deadlineMargin): a wait until then would end in ctx's error rather
// than GitHub's answer, and is the caller's to schedule instead.
func pastDeadline(ctx context.Context, at time.Time) bool {
	deadline, ok := ctx.Deadline()
	return ok && at.Add(deadlineMargin).After(deadline)
}

// deadlineMargin is the time a call is left for itself after a wait.
const deadlineMargin = 5 * time.Second

// waitForQuota sleeps while the credential's quota is known to be spent,
// and returns how long; a wait beyond MaxWait, the hold or ctx's deadline
// is not slept: *RateLimitedError.
func (t *Transport) waitForQuota(ctx context.Context, req *http.Request, hold time.Time) (time.Duration, error) {
	t.mu.Lock()
	quota := t.blocked[quotaOf(req, rateResource(req))]
	secondary := t.blocked[quotaOf(req, secondaryResource)]
	t.mu.Unlock()
	until := quota
	if secondary.After(until) {
		until = secondary
	}
	wait := until.Sub(t.now())
	if wait <= 0 {
		return 0, nil
	}
	if wait > t.maxWait() || beyond(hold, until) || pastDeadline(ctx, until) {
		return 0, &RateLimitedError{Until: until, Secondary: until == secondary}
	}
	return wait, t.sleep(ctx, wait)
}

func (t *Transport) recordRateLimit(req *http.Request, resp *http.Response) {
	h := resp.Header
	remaining, err1 := strconv.Atoi(h.Get("X-RateLimit-Remaining"))
	limit, err2 := strconv.Atoi(h.Get("X-RateLimit-Limit"))
	if err1 != nil || err2 != nil {
		return
	}
	resource := h.Get("X-RateLimit-Resource")
	if resource == "" {
		resource = "core"
	}
	if t.Observer != nil {
		var reset time.Time
		if r, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64); err == nil {
			reset = time.Unix(r, 0)
		}
		t.Observer.GitHubRateLimit(quotaName(req), resource, remaining, limit, reset)
	}
	key := quotaOf(req, resource)
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for k, until := range t.blocked {
		if !until.After(now) {
			delete(t.blocked, k) // reset passed: tokens come and go
		}
	}
	if remaining > 0 {
		delete(t.blocked, key)
		return
	}
	if wait, ok := resetWait(h, githubNow(h, now)); ok {
		if t.blocked == nil {
			t.blocked = map[quotaKey]time.Time{}
		}
		// The reset is GitHub's clock: held for as long as GitHub says is
		// left, counted from lastmile's now.
		t.blocked[key] = now.Add(wait)
		// go-github keeps the reset of an answer that spent the quota, and
		// refuses the client's calls itself until then by lastmile's clock
		// — minutes off when the clocks differ, and for good after a reset
		// centuries away. An answer it is handed (a refusal is not: see
		// rateLimitWait, which reads the reset by GitHub's clock) gives it
		// the same end as the block, in lastmile's clock, rounded up to a
		// second.
		if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusTooManyRequests {
			h.Set("X-RateLimit-Reset", strconv.FormatInt(now.Add(wait+time.Second-1).Unix(), 10))
		}
	}
}

// maxResetWait bounds the wait an x-ratelimit-reset asks for: GitHub's
// primary rate limits reset within the hour, so a reset further away is
// not GitHub's own (a faulty proxy, say) and must not hold a credential's
// calls for good — nor overflow a Duration into a wait that is negative,
// which would call again at once through the limit.
const maxResetWait = time.Hour

// resetWait is the wait until an answer's x-ratelimit-reset, from GitHub's
// now: at most maxResetWait, 0 for a reset already past. ok is false when
// the answer has no x-ratelimit-reset that parses.
func resetWait(h http.Header, now time.Time) (time.Duration, bool) {
	reset, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64)
	if err != nil {
		return 0, false
	}
	// Compared in seconds first: time.Unix of a value near the int64 limit
	// wraps round into the past.
	if reset > now.Unix()+int64(maxResetWait/time.Second) {
		return maxResetWait, true
	}
	return max(time.Unix(reset, 0).Sub(now), 0), true
}

// githubNow is GitHub's time when it answered: the Date header, or local
// when it has none that parses. x-ratelimit-reset and a Retry-After date are
// GitHub's clock; measured against lastmile's, a clock minutes ahead would
// take a reset still to come for one past and call again through the limit
// (which GitHub may answer by banning the App), and one behind would wait
// minutes too long. Date has whole seconds, so the wait it gives errs long.
func githubNow(h http.Header, local time.Time) time.Time {
	if at, err := http.ParseTime(h.Get("Date")); err == nil {
		return at
	}
	return local
}

// secondaryResource is the key of a secondary (abuse) limit's wait.
const secondaryResource = "secondary"

// block holds the calls of a quota until until (a later block wins).
func (t *Transport) block(key quotaKey, until time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.blocked == nil {
		t.blocked = map[quotaKey]time.Time{}
	}
	if until.After(t.blocked[key]) {
		t.blocked[key] = until
	}
}

// rateResource guesses the rate-limit bucket a request draws from. lastmile
// only uses the REST "core" bucket.
func rateResource(*http.Request) string { return "core" }

// rateLimitWait reports whether resp is a rate-limit refusal and how long
// GitHub asks to wait, following GitHub's documented order: Retry-After;
// else, with x-ratelimit-remaining 0, until x-ratelimit-reset; else (a
// secondary limit without a hint) at least one minute. The times GitHub
// gives are measured from its Date, not from lastmile's clock (local).
func rateLimitWait(resp *http.Response, local time.Time) (wait time.Duration, secondary, limited bool) {
	if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusTooManyRequests {
		return 0, false, false
	}
	h := resp.Header
	now := githubNow(h, local)
	if wait, ok := RetryAfter(h, local); ok {
		return wait, true, true
	}
	if h.Get("X-RateLimit-Remaining") == "0" {
		if wait, ok := resetWait(h, now); ok {
			// One extra second: reset is whole seconds and clocks differ.
			return wait + time.Second, false, true
		}
		return time.Minute, false, true
	}
	if resp.StatusCode == http.StatusTooManyRequests || secondaryLimitBody(resp) {
		return time.Minute, true, true
	}
	return 0, false, false
}

// RetryAfter is the wait an answer's Retry-After header asks for: seconds,
// or a date measured from the answer's Date (local when it has none). A
// Retry-After of 0, or of a time already past, still waits a second:
// calling again at once through a limit is what GitHub penalises. A wait
// longer than maxResetWait is cut to it: GitHub's secondary limits ask
// for a minute or so, and a longer one (a faulty proxy's) must not hold a
// credential's calls, and a repository's deliveries, for good. ok is false
// when the answer has no Retry-After that parses.
func RetryAfter(h http.Header, local time.Time) (wait time.Duration, ok bool) {
	s := h.Get("Retry-After")
	if s == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil && secs >= 0 {
		// Compared in seconds: a Duration of that many would overflow.
		return max(time.Duration(min(secs, int64(maxResetWait/time.Second)))*time.Second, time.Second), true
	}
	if at, err := http.ParseTime(s); err == nil {
		return min(max(at.Sub(githubNow(h, local)), time.Second), maxResetWait), true
	}
	return 0, false
}

// secondaryLimitBody peeks at a 403 body for GitHub's secondary-limit
// message, leaving the body readable for the caller.
func secondaryLimitBody(resp *http.Response) bool {
	if resp.Body == nil {
		return false
	}
	peek, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	rest := resp.Body
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(peek), rest), rest}
	if err != nil {
		return false
	}
	s := strings.ToLower(string(peek))
	return strings.Contains(s, "secondary rate limit") || strings.Contains(s, "abuse")
}

func snapshotBody(req *http.Request) ([]byte, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	defer req.Body.Close()
	b, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	return b, nil
}

func retrySafe(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	if v, _ := req.Context().Value(retrySafeKey{}).(bool); v {
		return true
	}
	// A new installation token is harmless to ask for twice.
	return req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/access_tokens")
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
}

// IsRateLimited reports whether err is a rate-limit refusal, and until when.
func IsRateLimited(err error) (time.Time, bool) {
	if rl, ok := AsRateLimited(err, time.Now()); ok {
		return rl.Until, true
	}
	return time.Time{}, false
}

// AsRateLimited reports whether err is a rate-limit refusal, as a
// *RateLimitedError: the transport's own, or go-github's. go-github
// remembers the last answer's rate limit per client, and once an answer
// said the hourly quota was spent (a 200 with x-ratelimit-remaining: 0 is
// enough) or a secondary limit asked to wait, it refuses further calls
// itself, before they reach the transport, with a *github.RateLimitError or
// *github.AbuseRateLimitError until the reset. A secondary limit that names
// no wait is waited out for a minute, as GitHub asks; now is when err
// arrived.
func AsRateLimited(err error, now time.Time) (*RateLimitedError, bool) {
	var (
		rl        *RateLimitedError
		primary   *github.RateLimitError
		secondary *github.AbuseRateLimitError
	)
	switch {
	case errors.As(err, &rl):
		return rl, true
	case errors.As(err, &primary):
		return &RateLimitedError{Until: primary.Rate.Reset.Time, Status: answered(primary.Response, primary.Message)}, true
	case errors.As(err, &secondary):
		wait := time.Minute
		if secondary.RetryAfter != nil {
			wait = *secondary.RetryAfter
		}
		return &RateLimitedError{Until: now.Add(wait), Secondary: true, Status: answered(secondary.Response, secondary.Message)}, true
	}
	return nil, false
}

// answered is the HTTP status GitHub gave a call go-github reports as rate
// limited, or 0 when go-github did not send it (its message says so).
func answered(resp *http.Response, message string) int {
	if resp == nil || strings.Contains(message, "not making remote request") {
		return 0
	}
	return resp.StatusCode
}

// Tidy returns err with go-github's empty list of errors left out of its
// text ("GET …: 502 Server Error []" says "GET …: 502 Server Error"), for
// logs and for the inbox's last error; errors.Is and errors.As see err as
// before.
func Tidy(err error) error {
	var er *github.ErrorResponse
	if err == nil || !errors.As(err, &er) || len(er.Errors) != 0 {
		return err
	}
	full := er.Error()
	trimmed, ok := strings.CutSuffix(full, " []")
	if !ok {
		return err
	}
	return tidyError{err, strings.Replace(err.Error(), full, trimmed, 1)}
}

type tidyError struct {
	error
	text string
}

func (e tidyError) Error() string { return e.text }
func (e tidyError) Unwrap() error { return e.error }
