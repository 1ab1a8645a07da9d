package githubapp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/githubapp"
)

// fakeClock is the transport's clock: Sleep records the wait and moves the
// clock forward instead of blocking.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	c.now = c.now.Add(d)
	return nil
}

func (c *fakeClock) Waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

// observed records what the transport reports.
type observed struct {
	mu       sync.Mutex
	requests []string // "METHOD code"
	limits   []string // "resource remaining/limit"
	quotas   []string // "quota resource reset UNIX"
}

func (o *observed) GitHubRequest(method, code string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.requests = append(o.requests, method+" "+code)
}

func (o *observed) GitHubRateLimit(quota, resource string, remaining, limit int, reset time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.limits = append(o.limits, fmt.Sprintf("%s %d/%d", resource, remaining, limit))
	o.quotas = append(o.quotas, fmt.Sprintf("%s %s reset %d", quota, resource, reset.Unix()))
}

func (o *observed) Quotas() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.quotas...)
}

func (o *observed) Requests() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.requests...)
}

// step is one scripted answer of the fake GitHub; drop closes the
// connection without answering.
type step struct {
	status  int
	headers map[string]string
	body    string
	drop    bool
}

// scriptedGitHub answers the n-th request with the n-th step (the last step
// repeats) and records every request it received. Its Date is the test's
// clock (set by newTestTransport) unless a step gives one.
type scriptedGitHub struct {
	*httptest.Server
	mu     sync.Mutex
	clock  *fakeClock
	steps  []step
	bodies []string
	paths  []string
}

func newScriptedGitHub(t *testing.T, steps ...step) *scriptedGitHub {
	t.Helper()
	g := &scriptedGitHub{steps: steps}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		g.mu.Lock()
		n := len(g.bodies)
		g.bodies = append(g.bodies, string(b))
		g.paths = append(g.paths, r.Method+" "+r.URL.Path)
		s := g.steps[min(n, len(g.steps)-1)]
		clock := g.clock
		g.mu.Unlock()
		if s.drop {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		if clock != nil {
			w.Header().Set("Date", clock.Now().Format(http.TimeFormat))
		}
		for k, v := range s.headers {
			w.Header().Set(k, v)
		}
		if s.status == 0 {
			s.status = http.StatusOK
		}
		w.WriteHeader(s.status)
		io.WriteString(w, s.body)
	}))
	t.Cleanup(g.Close)
	return g
}

func (g *scriptedGitHub) Bodies() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.bodies...)
}

func (g *scriptedGitHub) Attempts() int { return len(g.Bodies()) }

func newTestTransport(g *scriptedGitHub, clock *fakeClock, obs *observed) *githubapp.Transport {
	g.mu.Lock()
	g.clock = clock
	g.mu.Unlock()
	return &githubapp.Transport{
		Base:       g.Client().Transport,
		Observer:   obs,
		MaxRetries: 3,
		MaxWait:    2 * time.Minute,
		BaseDelay:  100 * time.Millisecond,
		Sleep:      clock.Sleep,
		Now:        clock.Now,
	}
}

// call sends one request through tr and returns the status (0 on error)
// and the body.
func call(t *testing.T, ctx context.Context, tr http.RoundTripper, method, url, body string) (int, string, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, string(b), nil
}

// backoffBounds reports whether w is a valid jittered backoff for the
// attempt (0-based) with base delay base: within [d/2, d], d = base·2^attempt.
func backoffBounds(w, base time.Duration, attempt int) bool {
	d := base << attempt
	return w >= d/2 && w <= d
}

func TestTransportRetriesServerErrors(t *testing.T) {
	const payload = `{"state":"success","log_url":"https://example.com/run/1","description":"ünïcode ✓"}`
	tests := map[string]struct {
		method     string
		ctx        func() context.Context
		path       string
		steps      []step
		wantStatus int
		attempts   int
	}{
		"GET retried until it succeeds": {
			method: http.MethodGet, steps: []step{{status: 500}, {status: 502}, {status: 200, body: "ok"}},
			wantStatus: 200, attempts: 3,
		},
		"GET gives up after MaxRetries with the last answer": {
			method: http.MethodGet, steps: []step{{status: 503, body: "unavailable"}},
			wantStatus: 503, attempts: 4,
		},
		"GET retried after a dropped connection": {
			method: http.MethodGet, steps: []step{{drop: true}, {status: 200, body: "ok"}},
			wantStatus: 200, attempts: 2,
		},
		"PUT is idempotent": {
			method: http.MethodPut, steps: []step{{status: 500}, {status: 200}}, wantStatus: 200, attempts: 2,
		},
		"DELETE is idempotent": {
			method: http.MethodDelete, steps: []step{{status: 502}, {status: 204}}, wantStatus: 204, attempts: 2,
		},
		"POST is not repeated after a 5xx": {
			method: http.MethodPost, steps: []step{{status: 502, body: "bad gateway"}, {status: 201}},
			wantStatus: 502, attempts: 1,
		},
		"PATCH is not repeated after a 5xx": {
			method: http.MethodPatch, steps: []step{{status: 500}, {status: 200}}, wantStatus: 500, attempts: 1,
		},
		"POST marked retry-safe is repeated": {
			method: http.MethodPost, ctx: func() context.Context { return githubapp.WithRetrySafe(context.Background()) },
			steps: []step{{status: 500}, {status: 502}, {status: 201}}, wantStatus: 201, attempts: 3,
		},
		"POST for an installation token is repeated": {
			method: http.MethodPost, path: "/app/installations/7/access_tokens",
			steps: []step{{status: 502}, {status: 201}}, wantStatus: 201, attempts: 2,
		},
		"4xx is an answer, not a failure": {
			method: http.MethodGet, steps: []step{{status: 404, body: `{"message":"Not Found"}`}, {status: 200}},
			wantStatus: 404, attempts: 1,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			g := newScriptedGitHub(t, tc.steps...)
			clock, obs := newFakeClock(), &observed{}
			tr := newTestTransport(g, clock, obs)
			ctx := context.Background()
			if tc.ctx != nil {
				ctx = tc.ctx()
			}
			body := ""
			if tc.method != http.MethodGet && tc.method != http.MethodDelete {
				body = payload
			}
			path := tc.path
			if path == "" {
				path = "/repos/acme/shop/deployments/1/statuses"
			}
			status, _, err := call(t, ctx, tr, tc.method, g.URL+path, body)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if status != tc.wantStatus {
				t.Errorf("status = %d, want %d", status, tc.wantStatus)
			}
			bodies := g.Bodies()
			if len(bodies) != tc.attempts {
				t.Fatalf("GitHub saw %d attempts, want %d", len(bodies), tc.attempts)
			}
			for i, b := range bodies {
				if b != body {
					t.Errorf("attempt %d sent body %q, want %q", i+1, b, body)
				}
			}
			// One backoff before every retry, each within its jitter range.
			waits := clock.Waits()
			if len(waits) != tc.attempts-1 {
				t.Errorf("slept %d times (%v), want %d", len(waits), waits, tc.attempts-1)
			}
			for i, w := range waits {
				if !backoffBounds(w, 100*time.Millisecond, i) {
					t.Errorf("backoff %d = %v, want within [%v, %v]", i, w, (100*time.Millisecond<<i)/2, 100*time.Millisecond<<i)
				}
			}
			// Every attempt is reported, with its code ("error" when no
			// answer came).
			var want []string
			for i := range tc.attempts {
				s := tc.steps[min(i, len(tc.steps)-1)]
				code := strconv.Itoa(s.status)
				if s.drop {
					code = "error"
				}
				want = append(want, tc.method+" "+code)
			}
			if got := obs.Requests(); !slices.Equal(got, want) {
				t.Errorf("observer saw %v, want %v", got, want)
			}
		})
	}
}

// A call carrying the App's JWT is not retried past jwtHold: when the
// backoff would go beyond it, the caller gets GitHub's 5xx answer, body
// and all, to say what went wrong.
func TestTransportGivesTheJWTCallsLast5xxWithItsBody(t *testing.T) {
	g := newScriptedGitHub(t, step{status: 503, body: `{"message":"unavailable"}`}, step{status: 200})
	clock, obs := newFakeClock(), &observed{}
	tr := newTestTransport(g, clock, obs)
	tr.BaseDelay = 3 * time.Minute // the first backoff already goes beyond the JWT's hold
	req, err := http.NewRequest(http.MethodGet, g.URL+"/app/hook/deliveries", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiIxIn0.c2ln")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || err != nil || string(body) != `{"message":"unavailable"}` {
		t.Errorf("answer %d %q (%v), want GitHub's 503 with its body", resp.StatusCode, body, err)
	}
	if g.Attempts() != 1 {
		t.Errorf("%d requests reached GitHub, want 1", g.Attempts())
	}
}

func TestTransportDoesNotRepeatAPostAfterANetworkError(t *testing.T) {
	g := newScriptedGitHub(t, step{drop: true}, step{status: 201})
	clock, obs := newFakeClock(), &observed{}
	tr := newTestTransport(g, clock, obs)
	_, _, err := call(t, context.Background(), tr, http.MethodPost, g.URL+"/repos/acme/shop/deployments", `{"ref":"abc"}`)
	if err == nil {
		t.Fatal("a POST whose connection dropped succeeded")
	}
	if n := g.Attempts(); n != 1 {
		t.Errorf("GitHub saw %d attempts of a POST with an unknown outcome, want 1", n)
	}
	if got := obs.Requests(); !slices.Equal(got, []string{"POST error"}) {
		t.Errorf("observer saw %v", got)
	}
	if w := clock.Waits(); len(w) != 0 {
		t.Errorf("slept %v", w)
	}
}

func TestTransportHonoursRateLimits(t *testing.T) {
	clockStart := newFakeClock().Now()
	reset := clockStart.Add(47 * time.Second)
	tests := map[string]struct {
		method   string
		limited  step
		wantWait time.Duration
	}{
		"403 with Retry-After seconds": {
			method:   http.MethodGet,
			limited:  step{status: 403, headers: map[string]string{"Retry-After": "7"}, body: `{"message":"You have exceeded a secondary rate limit."}`},
			wantWait: 7 * time.Second,
		},
		"429 with Retry-After seconds": {
			method:   http.MethodGet,
			limited:  step{status: 429, headers: map[string]string{"Retry-After": "30"}},
			wantWait: 30 * time.Second,
		},
		"429 with Retry-After as a date": {
			method:   http.MethodGet,
			limited:  step{status: 429, headers: map[string]string{"Retry-After": clockStart.Add(12 * time.Second).Format(http.TimeFormat)}},
			wantWait: 12 * time.Second,
		},
		"Retry-After as a date, lastmile's clock 5 minutes ahead: from GitHub's Date": {
			method: http.MethodGet,
			limited: step{status: 429, headers: map[string]string{"Date": clockStart.Add(-5 * time.Minute).Format(http.TimeFormat),
				"Retry-After": clockStart.Add(-5*time.Minute + 12*time.Second).Format(http.TimeFormat)}},
			wantWait: 12 * time.Second,
		},
		"Retry-After 0: a second, not at once": {
			method:   http.MethodGet,
			limited:  step{status: 429, headers: map[string]string{"Retry-After": "0"}},
			wantWait: time.Second,
		},
		"Retry-After a date already past: a second": {
			method:   http.MethodGet,
			limited:  step{status: 429, headers: map[string]string{"Retry-After": clockStart.Add(-time.Minute).Format(http.TimeFormat)}},
			wantWait: time.Second,
		},
		"Retry-After wins over the reset time": {
			method: http.MethodGet,
			limited: step{status: 403, headers: map[string]string{"Retry-After": "3", "X-RateLimit-Remaining": "0",
				"X-RateLimit-Limit": "5000", "X-RateLimit-Reset": strconv.FormatInt(reset.Unix(), 10)}},
			wantWait: 3 * time.Second,
		},
		"primary limit: until x-ratelimit-reset, plus a second": {
			method: http.MethodGet,
			limited: step{status: 403, headers: map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "5000",
				"X-RateLimit-Reset": strconv.FormatInt(reset.Unix(), 10)}, body: `{"message":"API rate limit exceeded"}`},
			wantWait: 47*time.Second + time.Second,
		},
		"primary limit on 429": {
			method: http.MethodGet,
			limited: step{status: 429, headers: map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "5000",
				"X-RateLimit-Reset": strconv.FormatInt(reset.Unix(), 10)}},
			wantWait: 48 * time.Second,
		},
		"secondary limit without hints: a minute": {
			method:   http.MethodGet,
			limited:  step{status: 403, body: `{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}`},
			wantWait: time.Minute,
		},
		"429 without hints: a minute": {
			method:   http.MethodGet,
			limited:  step{status: 429},
			wantWait: time.Minute,
		},
		"a rate-limited POST is sent again: GitHub did not apply it": {
			method:   http.MethodPost,
			limited:  step{status: 403, headers: map[string]string{"Retry-After": "5"}},
			wantWait: 5 * time.Second,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			g := newScriptedGitHub(t, tc.limited, step{status: 200, body: "done",
				headers: map[string]string{"X-RateLimit-Remaining": "4999", "X-RateLimit-Limit": "5000"}})
			clock, obs := newFakeClock(), &observed{}
			tr := newTestTransport(g, clock, obs)
			body := ""
			if tc.method == http.MethodPost {
				body = `{"ref":"f95f852bd8fca8fcc58a9a2d6c842781e32a215e","auto_merge":false}`
			}
			status, got, err := call(t, context.Background(), tr, tc.method, g.URL+"/repos/acme/shop/deployments", body)
			if err != nil || status != 200 || got != "done" {
				t.Fatalf("call = %d %q %v, want 200 done", status, got, err)
			}
			if w := clock.Waits(); !slices.Equal(w, []time.Duration{tc.wantWait}) {
				t.Errorf("waits = %v, want [%v]", w, tc.wantWait)
			}
			if bodies := g.Bodies(); len(bodies) != 2 || bodies[0] != body || bodies[1] != body {
				t.Errorf("GitHub saw %q, want the body twice", bodies)
			}
			want := []string{fmt.Sprintf("%s %d", tc.method, tc.limited.status), tc.method + " 200"}
			if got := obs.Requests(); !slices.Equal(got, want) {
				t.Errorf("observer saw %v, want %v", got, want)
			}
		})
	}
}

// The times in GitHub's rate-limit answers are GitHub's clock: the wait is
// measured from the answer's Date, whichever way lastmile's clock is off.
// GitHub's primary limit here is spent until its reset, a minute away by
// GitHub's clock; a call before it is answered 403.
func TestTransportMeasuresRateLimitsByGitHubsClock(t *testing.T) {
	tests := map[string]struct {
		first    int             // GitHub's answer to the first call: 403 refused, or 200 with the quota just spent
		calls    int             // calls made
		wantWait []time.Duration // waits slept
	}{
		"refused until the reset": {first: http.StatusForbidden, calls: 1, wantWait: []time.Duration{time.Minute + time.Second}},
		"held until the reset":    {first: http.StatusOK, calls: 2, wantWait: []time.Duration{time.Minute}},
	}
	for name, tc := range tests {
		for _, skew := range []time.Duration{5 * time.Minute, -5 * time.Minute} { // lastmile's clock ahead, behind
			t.Run(fmt.Sprintf("%s, lastmile %v off", name, skew), func(t *testing.T) {
				clock := newFakeClock()
				github := func() time.Time { return clock.Now().Add(-skew) }
				reset := github().Add(time.Minute)
				var mu sync.Mutex
				var answers []int
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					now := github()
					w.Header().Set("Date", now.Format(http.TimeFormat))
					w.Header().Set("X-RateLimit-Limit", "5000")
					w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(reset.Unix(), 10))
					mu.Lock()
					defer mu.Unlock()
					status := http.StatusOK
					switch {
					case !now.Before(reset):
						w.Header().Set("X-RateLimit-Remaining", "4999")
					case len(answers) == 0 && tc.first == http.StatusOK:
						w.Header().Set("X-RateLimit-Remaining", "0")
					default:
						status = http.StatusForbidden
						w.Header().Set("X-RateLimit-Remaining", "0")
					}
					answers = append(answers, status)
					w.WriteHeader(status)
					if status == http.StatusForbidden {
						io.WriteString(w, `{"message":"API rate limit exceeded"}`)
					}
				}))
				t.Cleanup(srv.Close)
				tr := &githubapp.Transport{Base: srv.Client().Transport, MaxWait: 2 * time.Minute, Sleep: clock.Sleep, Now: clock.Now}
				for i := range tc.calls {
					if status, _, err := call(t, context.Background(), tr, http.MethodGet, srv.URL+"/repos/acme/shop", ""); err != nil || status != 200 {
						t.Errorf("call %d = %d, %v; want 200 after the reset", i+1, status, err)
						break
					}
				}
				mu.Lock()
				defer mu.Unlock()
				if want := append([]int{tc.first}, http.StatusOK); !slices.Equal(answers, want) {
					t.Errorf("GitHub answered %v, want %v: no call before the reset but the first", answers, want)
				}
				if w := clock.Waits(); !slices.Equal(w, tc.wantWait) {
					t.Errorf("waits = %v, want %v (the reset by GitHub's Date)", w, tc.wantWait)
				}
			})
		}
	}
}

// Without a Date that parses, the reset is measured from lastmile's clock.
func TestTransportMeasuresRateLimitsLocallyWithoutADate(t *testing.T) {
	reset := newFakeClock().Now().Add(47 * time.Second)
	for _, date := range []string{"", "yesterday"} { // none, one that does not parse
		g := newScriptedGitHub(t,
			step{status: 403, headers: map[string]string{"Date": date, "X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "5000",
				"X-RateLimit-Reset": strconv.FormatInt(reset.Unix(), 10)}},
			step{status: 200})
		clock := newFakeClock()
		if _, _, err := call(t, context.Background(), newTestTransport(g, clock, &observed{}), http.MethodGet, g.URL+"/x", ""); err != nil {
			t.Fatal(err)
		}
		if w := clock.Waits(); !slices.Equal(w, []time.Duration{48 * time.Second}) {
			t.Errorf("Date %q: waits = %v, want [48s]", date, w)
		}
	}
}

func TestTransportPassesOnAForbiddenAnswer(t *testing.T) {
	// A 403 that is not a rate limit (no headers, no secondary-limit
	// message) is GitHub's answer; its body must reach the caller intact
	// although the transport looked into it.
	msg := `{"message":"Resource not accessible by integration","documentation_url":"https://docs.github.com/rest"}` + strings.Repeat(" ", 70<<10)
	g := newScriptedGitHub(t, step{status: 403, body: msg})
	clock, obs := newFakeClock(), &observed{}
	status, body, err := call(t, context.Background(), newTestTransport(g, clock, obs), http.MethodGet, g.URL+"/repos/acme/shop", "")
	if err != nil || status != 403 {
		t.Fatalf("call = %d, %v; want 403", status, err)
	}
	if body != msg {
		t.Errorf("body changed: got %d bytes, want %d", len(body), len(msg))
	}
	if g.Attempts() != 1 || len(clock.Waits()) != 0 {
		t.Errorf("%d attempts and waits %v, want 1 and none", g.Attempts(), clock.Waits())
	}
}

func TestTransportLongWaitsBecomeRateLimitedError(t *testing.T) {
	start := newFakeClock().Now()
	tests := map[string]struct {
		limited   step
		until     time.Time
		secondary bool
	}{
		"Retry-After over MaxWait": {
			limited: step{status: 429, headers: map[string]string{"Retry-After": "600"}},
			until:   start.Add(10 * time.Minute), secondary: true,
		},
		"reset an hour away": {
			limited: step{status: 403, headers: map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "5000",
				"X-RateLimit-Reset": strconv.FormatInt(start.Add(time.Hour).Unix(), 10)}},
			until: start.Add(time.Hour + time.Second),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			g := newScriptedGitHub(t, tc.limited, step{status: 200})
			clock, obs := newFakeClock(), &observed{}
			_, _, err := call(t, context.Background(), newTestTransport(g, clock, obs), http.MethodGet, g.URL+"/repos/acme/shop", "")
			var rl *githubapp.RateLimitedError
			if !errors.As(err, &rl) {
				t.Fatalf("error = %v, want *RateLimitedError", err)
			}
			if !rl.Until.Equal(tc.until) || rl.Secondary != tc.secondary || rl.Status != tc.limited.status {
				t.Errorf("RateLimitedError = %+v, want until %v secondary %v status %d", rl, tc.until, tc.secondary, tc.limited.status)
			}
			if until, ok := githubapp.IsRateLimited(err); !ok || !until.Equal(tc.until) {
				t.Errorf("IsRateLimited = %v, %v", until, ok)
			}
			if !strings.Contains(rl.Error(), tc.until.UTC().Format(time.RFC3339)) {
				t.Errorf("error text %q does not say until when", rl.Error())
			}
			if g.Attempts() != 1 || len(clock.Waits()) != 0 {
				t.Errorf("%d attempts, waits %v; want 1 attempt and no wait inside the call", g.Attempts(), clock.Waits())
			}
		})
	}
}

func TestTransportGivesUpOnARateLimitAtTheLastAttempt(t *testing.T) {
	g := newScriptedGitHub(t, step{status: 429, headers: map[string]string{"Retry-After": "2"}})
	clock, obs := newFakeClock(), &observed{}
	tr := newTestTransport(g, clock, obs)
	_, _, err := call(t, context.Background(), tr, http.MethodGet, g.URL+"/x", "")
	if _, ok := githubapp.IsRateLimited(err); !ok {
		t.Fatalf("error = %v, want a rate-limit error", err)
	}
	if n := g.Attempts(); n != tr.MaxRetries+1 {
		t.Errorf("%d attempts, want %d", n, tr.MaxRetries+1)
	}
	if w := clock.Waits(); len(w) != tr.MaxRetries || slices.ContainsFunc(w, func(d time.Duration) bool { return d != 2*time.Second }) {
		t.Errorf("waits = %v, want %d × 2s", w, tr.MaxRetries)
	}
}

func TestTransportBlocksWhileTheQuotaIsSpent(t *testing.T) {
	clock, obs := newFakeClock(), &observed{}
	reset := clock.Now().Add(20 * time.Second)
	spent := step{status: 200, body: "last one", headers: map[string]string{"X-RateLimit-Remaining": "0",
		"X-RateLimit-Limit": "5000", "X-RateLimit-Reset": strconv.FormatInt(reset.Unix(), 10), "X-RateLimit-Resource": "core"}}
	fresh := step{status: 200, body: "fresh", headers: map[string]string{"X-RateLimit-Remaining": "5000", "X-RateLimit-Limit": "5000"}}
	g := newScriptedGitHub(t, spent, fresh)
	tr := newTestTransport(g, clock, obs)

	if status, body, err := call(t, context.Background(), tr, http.MethodGet, g.URL+"/a", ""); err != nil || status != 200 || body != "last one" {
		t.Fatalf("first call = %d %q %v", status, body, err)
	}
	if len(clock.Waits()) != 0 {
		t.Fatalf("the first call waited: %v", clock.Waits())
	}
	// The quota is known to be spent: the next call waits for the reset
	// before it goes to GitHub.
	if status, body, err := call(t, context.Background(), tr, http.MethodGet, g.URL+"/b", ""); err != nil || status != 200 || body != "fresh" {
		t.Fatalf("second call = %d %q %v", status, body, err)
	}
	if w := clock.Waits(); !slices.Equal(w, []time.Duration{20 * time.Second}) {
		t.Errorf("waits = %v, want [20s] (until x-ratelimit-reset)", w)
	}
	// A fresh quota unblocks: no more waiting.
	if _, _, err := call(t, context.Background(), tr, http.MethodGet, g.URL+"/c", ""); err != nil {
		t.Fatal(err)
	}
	if n := len(clock.Waits()); n != 1 {
		t.Errorf("waited again after the quota was renewed: %v", clock.Waits())
	}
	if g.Attempts() != 3 {
		t.Errorf("%d requests reached GitHub, want 3", g.Attempts())
	}
	obs.mu.Lock()
	limits := append([]string(nil), obs.limits...)
	obs.mu.Unlock()
	if want := []string{"core 0/5000", "core 5000/5000", "core 5000/5000"}; !slices.Equal(limits, want) {
		t.Errorf("rate limits observed = %v, want %v", limits, want)
	}
}

func TestTransportRefusesCallsUntilAFarReset(t *testing.T) {
	clock, obs := newFakeClock(), &observed{}
	reset := clock.Now().Add(40 * time.Minute)
	g := newScriptedGitHub(t,
		step{status: 200, headers: map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "5000",
			"X-RateLimit-Reset": strconv.FormatInt(reset.Unix(), 10)}},
		step{status: 200, headers: map[string]string{"X-RateLimit-Remaining": "4999", "X-RateLimit-Limit": "5000"}})
	tr := newTestTransport(g, clock, obs)
	if _, _, err := call(t, context.Background(), tr, http.MethodGet, g.URL+"/a", ""); err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		_, _, err := call(t, context.Background(), tr, method, g.URL+"/b", `{"x":1}`)
		until, ok := githubapp.IsRateLimited(err)
		if !ok || !until.Equal(reset) {
			t.Errorf("%s while the quota is spent: %v; want a rate-limit error until %v", method, err, reset)
		}
	}
	if g.Attempts() != 1 {
		t.Errorf("%d requests reached GitHub while the quota was spent, want only the first", g.Attempts())
	}
	// After the reset, calls go through again.
	clock.mu.Lock()
	clock.now = reset.Add(time.Second)
	clock.mu.Unlock()
	if status, _, err := call(t, context.Background(), tr, http.MethodGet, g.URL+"/c", ""); err != nil || status != 200 {
		t.Errorf("after the reset: %d, %v", status, err)
	}
	if g.Attempts() != 2 {
		t.Errorf("%d requests reached GitHub, want 2", g.Attempts())
	}
}

// GitHub counts each installation's quota, and the App's, on its own: an
// installation that spent its quota must not hold up the others.
func TestTransportQuotasAreCountedPerCredential(t *testing.T) {
	clock, obs := newFakeClock(), &observed{}
	reset := clock.Now().Add(40 * time.Minute)
	ok := step{status: 200, headers: map[string]string{"X-RateLimit-Remaining": "4999", "X-RateLimit-Limit": "5000"}}
	g := newScriptedGitHub(t,
		step{status: 200, headers: map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "5000",
			"X-RateLimit-Reset": strconv.FormatInt(reset.Unix(), 10)}},
		ok, ok)
	tr := newTestTransport(g, clock, obs)
	as := func(token string) error { return getAs(t, tr, g.URL+"/repos/acme/shop", "token "+token) }
	if err := as("ghs_installationA"); err != nil {
		t.Fatal(err)
	}
	if err := as("ghs_installationB"); err != nil {
		t.Errorf("installation B refused because A spent its quota: %v", err)
	}
	err := as("ghs_installationA")
	var rl *githubapp.RateLimitedError
	if !errors.As(err, &rl) || !rl.Until.Equal(reset) {
		t.Errorf("installation A while its quota is spent: %v; want a rate-limit error until %v", err, reset)
	} else if rl.Status != 0 || !strings.Contains(rl.Error(), "quota spent") {
		t.Errorf("a call refused without asking GitHub reports %q (status %d)", rl.Error(), rl.Status)
	}
	// B's fresh quota does not unblock A.
	if err := as("ghs_installationB"); err != nil {
		t.Errorf("installation B: %v", err)
	}
	if err := as("ghs_installationA"); err == nil {
		t.Error("installation A was let through by installation B's quota")
	}
	if g.Attempts() != 3 {
		t.Errorf("%d requests reached GitHub, want 3 (A, B, B)", g.Attempts())
	}
}

// The App's JWT is signed anew for every call, but the App has one quota.
func TestTransportAppJWTsShareTheAppsQuota(t *testing.T) {
	clock, obs := newFakeClock(), &observed{}
	reset := clock.Now().Add(40 * time.Minute)
	g := newScriptedGitHub(t,
		step{status: 200, headers: map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "5000",
			"X-RateLimit-Reset": strconv.FormatInt(reset.Unix(), 10)}},
		step{status: 200})
	tr := newTestTransport(g, clock, obs)
	for i, jwt := range []string{"eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiIxIiwiaWF0IjoxfQ.c2ln", "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiIxIiwiaWF0IjoyfQ.c2ln"} {
		err := getAs(t, tr, g.URL+"/app/hook/deliveries", "Bearer "+jwt)
		if _, limited := githubapp.IsRateLimited(err); limited != (i == 1) {
			t.Errorf("call %d with a new JWT: %v", i+1, err)
		}
	}
	if g.Attempts() != 1 {
		t.Errorf("%d requests reached GitHub, want 1", g.Attempts())
	}
}

// A secondary limit asks the client to slow down, not one call: the same
// credential's next calls wait too, others' do not.
func TestTransportSecondaryLimitHoldsTheCredentialsOtherCalls(t *testing.T) {
	clock, obs := newFakeClock(), &observed{}
	g := newScriptedGitHub(t,
		step{status: 403, headers: map[string]string{"Retry-After": "600"},
			body: `{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}`},
		step{status: 200})
	tr := newTestTransport(g, clock, obs)
	as := func(token string) error { return getAs(t, tr, g.URL+"/repos/acme/shop", "token "+token) }
	var rl *githubapp.RateLimitedError
	if err := as("ghs_A"); !errors.As(err, &rl) || !rl.Secondary {
		t.Fatalf("first call: %v, want a secondary rate-limit error", err)
	}
	if err := as("ghs_A"); !errors.As(err, &rl) || !rl.Secondary || rl.Status != 0 {
		t.Errorf("the same credential's next call: %v, want refused at once (secondary limit)", err)
	}
	if err := as("ghs_B"); err != nil {
		t.Errorf("another credential's call: %v", err)
	}
	if g.Attempts() != 2 {
		t.Errorf("%d requests reached GitHub, want 2", g.Attempts())
	}
}

// getAs sends a GET with the given Authorization header through tr, as a
// GitHub client of that credential would, and reads the answer.
func getAs(t *testing.T, tr http.RoundTripper, url, authorization string) error {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", authorization)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

func TestTransportStopsWhenTheContextEnds(t *testing.T) {
	g := newScriptedGitHub(t, step{status: 503})
	obs := &observed{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr := &githubapp.Transport{
		Base: g.Client().Transport, Observer: obs, MaxRetries: 5,
		// The caller gives up while the transport waits to retry.
		Sleep: func(ctx context.Context, d time.Duration) error { cancel(); return ctx.Err() },
	}
	_, _, err := call(t, ctx, tr, http.MethodGet, g.URL+"/x", "")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error = %v, want context.Canceled", err)
	}
	if g.Attempts() != 1 {
		t.Errorf("%d attempts after the context ended, want 1", g.Attempts())
	}
}

func TestTransportDefaultSleepHonoursTheContext(t *testing.T) {
	// Without an injected Sleep the transport really waits; a cancelled
	// context must end that wait at once (a 30s Retry-After would
	// otherwise hold the test).
	g := newScriptedGitHub(t, step{status: 429, headers: map[string]string{"Retry-After": "30"}})
	ctx, cancel := context.WithCancel(context.Background())
	tr := &githubapp.Transport{Base: &cancelAfterResponse{base: g.Client().Transport, cancel: cancel}}
	start := time.Now()
	_, _, err := call(t, ctx, tr, http.MethodGet, g.URL+"/x", "")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error = %v, want context.Canceled", err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the wait ignored the cancelled context: %v", took)
	}
}

// cancelAfterResponse cancels the request's context once the response is in.
type cancelAfterResponse struct {
	base   http.RoundTripper
	cancel func()
}

func (c *cancelAfterResponse) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(r)
	if err == nil {
		// Read the body before the context ends, so that it stays readable.
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(b))
	}
	c.cancel()
	return resp, err
}

func TestTransportUnblocksWhenGitHubReportsQuotaAgain(t *testing.T) {
	// A call that was already in flight when the quota ran out comes back
	// with quota left (the window was reset, or the limit raised): calls
	// must flow again without waiting for the old reset time.
	clock, obs := newFakeClock(), &observed{}
	reset := clock.Now().Add(40 * time.Minute)
	arrived, release := make(chan struct{}), make(chan struct{})
	var reached sync.Map
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Store(r.URL.Path, true)
		w.Header().Set("Date", clock.Now().Format(http.TimeFormat))
		w.Header().Set("X-RateLimit-Limit", "5000")
		switch r.URL.Path {
		case "/slow":
			close(arrived)
			<-release
			w.Header().Set("X-RateLimit-Remaining", "4999")
		case "/spent":
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(reset.Unix(), 10))
		default:
			w.Header().Set("X-RateLimit-Remaining", "4998")
		}
	}))
	t.Cleanup(srv.Close)
	tr := &githubapp.Transport{Base: srv.Client().Transport, Observer: obs, Sleep: clock.Sleep, Now: clock.Now}

	slowDone := make(chan error, 1)
	go func() {
		_, _, err := call(t, context.Background(), tr, http.MethodGet, srv.URL+"/slow", "")
		slowDone <- err
	}()
	<-arrived
	if _, _, err := call(t, context.Background(), tr, http.MethodGet, srv.URL+"/spent", ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := call(t, context.Background(), tr, http.MethodGet, srv.URL+"/refused", ""); err == nil {
		t.Fatal("a call went out while the quota was known to be spent")
	}
	close(release)
	if err := <-slowDone; err != nil {
		t.Fatal(err)
	}
	if _, _, err := call(t, context.Background(), tr, http.MethodGet, srv.URL+"/after", ""); err != nil {
		t.Errorf("after GitHub reported quota again: %v", err)
	}
	if _, ok := reached.Load("/refused"); ok {
		t.Error("the refused call reached GitHub")
	}
	if _, ok := reached.Load("/after"); !ok {
		t.Error("the call after the renewal did not reach GitHub")
	}
	if w := clock.Waits(); len(w) != 0 {
		t.Errorf("waited %v", w)
	}
}

// go-github's own rate-limit refusals read as *RateLimitedError: until its
// remembered reset, or a secondary limit's Retry-After (a minute when it
// names none), with the status 0 when go-github did not send the call.
func TestAsRateLimited(t *testing.T) {
	now := time.Date(2026, 11, 26, 14, 0, 0, 0, time.UTC)
	reset := now.Add(37 * time.Minute)
	fake := &http.Response{StatusCode: http.StatusForbidden}
	wait := 90 * time.Second
	for _, tc := range []struct {
		name string
		err  error
		want *githubapp.RateLimitedError
	}{
		{"transport's", fmt.Errorf("read config: %w", &githubapp.RateLimitedError{Until: reset, Status: 429}), &githubapp.RateLimitedError{Until: reset, Status: 429}},
		{"go-github's spent quota", fmt.Errorf("read config: %w", &github.RateLimitError{Rate: github.Rate{Reset: github.Timestamp{Time: reset}}, Response: fake,
			Message: "API rate limit of 5000 still exceeded until then, not making remote request."}), &githubapp.RateLimitedError{Until: reset}},
		{"a primary limit GitHub answered", &github.RateLimitError{Rate: github.Rate{Reset: github.Timestamp{Time: reset}}, Response: fake, Message: "API rate limit exceeded"},
			&githubapp.RateLimitedError{Until: reset, Status: 403}},
		{"go-github's secondary wait", &github.AbuseRateLimitError{Response: fake, RetryAfter: &wait, Message: "API secondary rate limit exceeded until then, not making remote request."},
			&githubapp.RateLimitedError{Until: now.Add(wait), Secondary: true}},
		{"a secondary limit naming no wait", &github.AbuseRateLimitError{Response: fake, Message: "You have exceeded a secondary rate limit"},
			&githubapp.RateLimitedError{Until: now.Add(time.Minute), Secondary: true, Status: 403}},
		{"not a rate limit", &github.ErrorResponse{Response: fake, Message: "Resource not accessible by integration"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := githubapp.AsRateLimited(tc.err, now)
			if ok != (tc.want != nil) || (ok && (!got.Until.Equal(tc.want.Until) || got.Secondary != tc.want.Secondary || got.Status != tc.want.Status)) {
				t.Errorf("AsRateLimited = %+v, %v; want %+v", got, ok, tc.want)
			}
		})
	}
}

// A call sleeps at most MaxWait for rate limits in all, its retries
// included (each wait within MaxWait, they added up to MaxRetries of
// them), so that a throttled credential does not hold a worker for
// minutes; nor does it sleep so long that its context's deadline leaves
// the call itself no time.
func TestTransportRateLimitWaitsAddUpToMaxWait(t *testing.T) {
	g := newScriptedGitHub(t, step{status: 429, headers: map[string]string{"Retry-After": "50"}})
	clock, obs := newFakeClock(), &observed{}
	tr := newTestTransport(g, clock, obs) // MaxWait 2 min, MaxRetries 3
	_, _, err := call(t, context.Background(), tr, http.MethodGet, g.URL+"/x", "")
	if _, ok := githubapp.IsRateLimited(err); !ok {
		t.Fatalf("error = %v, want a rate-limit error", err)
	}
	if w := clock.Waits(); !slices.Equal(w, []time.Duration{50 * time.Second, 50 * time.Second}) {
		t.Errorf("waits = %v, want 50s twice (a third would pass MaxWait's 2 min in all)", w)
	}

	g = newScriptedGitHub(t, step{status: 429, headers: map[string]string{"Retry-After": "5"}})
	clock = &fakeClock{now: time.Now()} // the context's deadline is on the real clock
	tr = newTestTransport(g, clock, obs)
	// 5 s of wait would leave the call 3 s of its 8: too little.
	ctx, cancel := context.WithDeadline(context.Background(), clock.Now().Add(8*time.Second))
	defer cancel()
	_, _, err = call(t, ctx, tr, http.MethodGet, g.URL+"/x", "")
	if _, ok := githubapp.IsRateLimited(err); !ok {
		t.Fatalf("a wait past the deadline: error = %v, want a rate-limit error (the caller's to schedule)", err)
	}
	if w := clock.Waits(); len(w) != 0 {
		t.Errorf("waits = %v, want none past the context's deadline", w)
	}
}

// Retry-After in seconds: a second at least, and an hour at most — a
// longer one (no GitHub sends it, a faulty proxy might) must not hold a
// credential's calls and a repository's deliveries for good, nor a value
// too large for a Duration overflow into one second and have the
// transport call again through the limit. A date is cut the same.
func TestRetryAfterSeconds(t *testing.T) {
	now := time.Now().Truncate(time.Second) // a date has whole seconds
	for value, want := range map[string]time.Duration{
		"0":                    time.Second,
		"30":                   30 * time.Second,
		" 120 ":                2 * time.Minute,
		"3600":                 time.Hour,
		"3601":                 time.Hour,
		"9223372037":           time.Hour,
		"10000000000":          time.Hour,
		"99999999999999999999": 0, // not a number lastmile can read: no Retry-After
		now.Add(90 * time.Second).UTC().Format(http.TimeFormat): 90 * time.Second,
		now.AddDate(300, 0, 0).UTC().Format(http.TimeFormat):    time.Hour,
	} {
		wait, ok := githubapp.RetryAfter(http.Header{"Retry-After": {value}}, now)
		if wait != want || ok != (want != 0) {
			t.Errorf("Retry-After: %q → %v (ok %v), want %v", value, wait, ok, want)
		}
	}
}

// A Retry-After too long for any MaxWait, after the call has waited once
// already, is a rate-limit error at once: the time waited added to it
// overflowed to a negative wait that passed the MaxWait check, and the
// call slept for centuries (a context without a deadline: the Action's).
func TestHugeRetryAfterAfterAWaitIsNotSlept(t *testing.T) {
	g := newScriptedGitHub(t,
		step{status: 429, headers: map[string]string{"Retry-After": "5"}},
		step{status: 429, headers: map[string]string{"Retry-After": "10000000000"}})
	clock, obs := newFakeClock(), &observed{}
	_, _, err := call(t, context.Background(), newTestTransport(g, clock, obs), http.MethodGet, g.URL+"/x", "")
	if waits := clock.Waits(); len(waits) != 1 || waits[0] != 5*time.Second {
		t.Errorf("waits %v, want the first Retry-After's 5s only", waits)
	}
	if _, ok := githubapp.IsRateLimited(err); !ok {
		t.Errorf("error = %v, want a rate-limit error", err)
	}
}

// An x-ratelimit-reset centuries away — no GitHub sends one, a faulty
// proxy might — is a wait of an hour at most: neither a Duration that
// overflows into a negative wait (the call sent again at once, through the
// limit) nor a credential held until a restart.
func TestHugeRateLimitResetWaitsAnHourAtMost(t *testing.T) {
	for _, reset := range []string{"99999999999", "9223372036854775807", "9223372036000000000"} {
		t.Run(reset, func(t *testing.T) { hugeRateLimitReset(t, reset) })
	}
}

func hugeRateLimitReset(t *testing.T, reset string) {
	huge := map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "5000", "X-RateLimit-Reset": reset}
	g := newScriptedGitHub(t, step{status: 403, headers: huge}, step{status: 200})
	clock, obs := newFakeClock(), &observed{}
	start := clock.Now()
	_, _, err := call(t, context.Background(), newTestTransport(g, clock, obs), http.MethodGet, g.URL+"/repos/acme/shop", "")
	if g.Attempts() != 1 || len(clock.Waits()) != 0 {
		t.Errorf("%d requests sent, waits %v; want 1 request, no wait (an hour is longer than MaxWait)", g.Attempts(), clock.Waits())
	}
	if until, ok := githubapp.IsRateLimited(err); !ok || until.Sub(start) != time.Hour+time.Second {
		t.Errorf("error %v (until %v); want a rate-limit error until an hour and a second from now", err, until)
	}

	// An answer that spends the quota, with the same reset, holds the
	// credential's next calls for an hour, not for centuries.
	g = newScriptedGitHub(t, step{status: 200, headers: huge}, step{status: 200})
	clock = newFakeClock()
	tr := newTestTransport(g, clock, obs)
	if _, _, err := call(t, context.Background(), tr, http.MethodGet, g.URL+"/a", ""); err != nil {
		t.Fatal(err)
	}
	_, _, err = call(t, context.Background(), tr, http.MethodGet, g.URL+"/b", "")
	if until, ok := githubapp.IsRateLimited(err); !ok || until.Sub(clock.Now()) != time.Hour {
		t.Errorf("second call: %v (until %v); want refused, held an hour", err, until)
	}
}

// go-github keeps the reset of an answer that spent the quota and refuses
// the client's next calls itself, before the transport sees them, by
// lastmile's clock: the transport hands it the end of its own block — by
// GitHub's clock, an hour at most — so that a clock behind GitHub's, or a
// reset centuries away, does not hold an installation's calls longer.
func TestGoGitHubRefusesNoLongerThanTheTransportBlocks(t *testing.T) {
	now := time.Now()
	for name, c := range map[string]struct {
		date, reset string
		atMost      time.Duration
	}{
		// lastmile's clock 10 minutes behind GitHub's; the quota comes
		// back in a minute.
		"clock behind": {now.Add(10 * time.Minute).UTC().Format(http.TimeFormat),
			strconv.FormatInt(now.Add(11*time.Minute).Unix(), 10), time.Minute + 2*time.Second},
		"reset centuries away": {"", "99999999999", time.Hour + 2*time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			spent := map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "5000", "X-RateLimit-Reset": c.reset}
			if c.date != "" {
				spent["Date"] = c.date
			}
			g := newScriptedGitHub(t, step{status: 200, body: `{"id":1}`, headers: spent},
				step{status: 200, body: `{"id":1}`, headers: map[string]string{"X-RateLimit-Remaining": "4999", "X-RateLimit-Limit": "5000"}})
			tr := &githubapp.Transport{Base: g.Client().Transport, Sleep: func(context.Context, time.Duration) error { return nil }}
			gh, err := githubapp.NewTokenClient(g.URL, "ghs_test", tr)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := gh.Repositories.Get(context.Background(), "acme", "shop"); err != nil {
				t.Fatal(err)
			}
			_, _, err = gh.Repositories.Get(context.Background(), "acme", "shop")
			rl, ok := githubapp.AsRateLimited(err, time.Now())
			if !ok {
				t.Fatalf("second call: %v, want refused while the quota is spent", err)
			}
			if wait := time.Until(rl.Until); wait > c.atMost {
				t.Errorf("second call refused for %v (%d requests reached GitHub), want %v at most", wait.Round(time.Second), g.Attempts(), c.atMost)
			}
		})
	}
}

// Tidy leaves go-github's empty list of errors out of an error's text,
// wherever the refusal sits in the chain, and nothing else; errors.As
// still finds the refusal.
func TestTidyLeavesOutAnEmptyErrorList(t *testing.T) {
	req, err := http.NewRequest(http.MethodGet, "https://api.github.com/repos/acme/shop/contents/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	refusal := func(errs ...github.Error) *github.ErrorResponse {
		return &github.ErrorResponse{Response: &http.Response{StatusCode: 502, Request: req}, Message: "Server Error", Errors: errs}
	}
	for name, tc := range map[string]struct {
		err  error
		want string
	}{
		"wrapped": {fmt.Errorf("read config: %w", refusal()),
			"read config: GET https://api.github.com/repos/acme/shop/contents/x: 502 Server Error"},
		"wrapped, then said more": {fmt.Errorf("%w: wait for GitHub", fmt.Errorf("read: %w", refusal())),
			"read: GET https://api.github.com/repos/acme/shop/contents/x: 502 Server Error: wait for GitHub"},
		"a list that says something": {fmt.Errorf("read: %w", refusal(github.Error{Resource: "Deployment", Code: "invalid"})),
			fmt.Errorf("read: %w", refusal(github.Error{Resource: "Deployment", Code: "invalid"})).Error()},
		"no refusal": {errors.New("network down []"), "network down []"},
	} {
		got := githubapp.Tidy(tc.err)
		if got.Error() != tc.want {
			t.Errorf("%s: %q, want %q", name, got.Error(), tc.want)
		}
		var er *github.ErrorResponse
		if errors.As(tc.err, &er) && (!errors.As(got, &er) || er.Response.StatusCode != 502) {
			t.Errorf("%s: errors.As no longer finds GitHub's refusal in %v", name, got)
		}
	}
	if githubapp.Tidy(nil) != nil {
		t.Error("Tidy(nil) is not nil")
	}
}
