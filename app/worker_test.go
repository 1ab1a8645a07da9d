package app_test

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/storage/storagetest"

	"github.com/lastmile-app/lastmile/app"
	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// handlerFunc adapts a function to app.Handler.
type handlerFunc func(ctx context.Context, d *pipeline.Delivery) error

func (f handlerFunc) Handle(ctx context.Context, d *pipeline.Delivery) error { return f(ctx, d) }

// handled is one outcome the worker reported to its observer.
type handled struct {
	event, result string
}

// outcomes is an app.HandlingObserver; the worker reports an attempt after
// its outcome is committed, so a test that receives it can read the inbox.
type outcomes chan handled

func (o outcomes) DeliveryHandled(event, result string, _ time.Duration) { o <- handled{event, result} }

// next waits for the next n outcomes, failing the test at the deadline.
func (o outcomes) next(t *testing.T, n int, within time.Duration) []handled {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	var got []handled
	for len(got) < n {
		select {
		case h := <-o:
			got = append(got, h)
		case <-deadline.C:
			t.Fatalf("after %v: %d of %d outcomes: %v", within, len(got), n, got)
		}
	}
	return got
}

func workerDB(t *testing.T) *storage.DB {
	return storagetest.Open(t)
}

func enqueue(t *testing.T, db *storage.DB, id, repo string, at time.Time) {
	t.Helper()
	d := &pipeline.Delivery{ID: id, Event: "push", Repository: repo, Body: []byte(`{"id":"` + id + `"}`),
		State: pipeline.DeliveryPending, ReceivedAt: at}
	if _, err := db.Accept(context.Background(), d, "push", githubapp.OutcomeAccepted); err != nil {
		t.Fatal(err)
	}
}

// startWorker runs w until the test ends (or until the returned stop is
// called, which waits for Run to return).
func startWorker(t *testing.T, w *app.Worker) (stop func()) {
	t.Helper()
	if w.Log == nil {
		w.Log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Error("the worker did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func delivery(t *testing.T, db *storage.DB, id string) *pipeline.Delivery {
	t.Helper()
	d, err := db.GetDelivery(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// A delivery whose stored body is damaged is parked as dead at once,
// saying so, without its handler; the other repositories' deliveries go on.
func TestWorkerParksADamagedDeliveryAsDead(t *testing.T) {
	db := workerDB(t)
	push, err := os.ReadFile("../githubapp/testdata/push.json") // kept compressed
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"damaged", "fine"} {
		d := &pipeline.Delivery{ID: id, Event: "push", Repository: "acme/" + id, Body: push, State: pipeline.DeliveryPending}
		if _, err := db.Accept(context.Background(), d, "push", githubapp.OutcomeAccepted); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := sql.Open("sqlite", "file:"+db.Path()+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`UPDATE delivery_bodies SET body = CAST(substr(body, 1, length(body) - 1) || X'00' AS BLOB)
		WHERE seq = (SELECT seq FROM deliveries WHERE delivery_id = 'damaged')`); err != nil {
		t.Fatal(err)
	}
	var handledIDs sync.Map
	handler := handlerFunc(func(ctx context.Context, d *pipeline.Delivery) error {
		handledIDs.Store(d.ID, true)
		return nil
	})
	obs := make(outcomes, 10)
	startWorker(t, &app.Worker{Inbox: db, Handler: handler, Observer: obs, Concurrency: 2})
	got := obs.next(t, 2, 10*time.Second)
	slices.SortFunc(got, func(a, b handled) int { return strings.Compare(a.result, b.result) })
	if !slices.Equal(got, []handled{{"push", "dead"}, {"push", "done"}}) {
		t.Errorf("outcomes %v, want one dead and one done", got)
	}
	if _, ok := handledIDs.Load("damaged"); ok {
		t.Error("the damaged delivery was handed to its handler")
	}
	d := delivery(t, db, "damaged")
	if d.State != pipeline.DeliveryDead || d.Attempts != 1 || !strings.Contains(d.LastError, "its stored body is damaged: delivery damaged: compressed body") {
		t.Errorf("damaged: state %s, attempts %d, error %q", d.State, d.Attempts, d.LastError)
	}
	if f := delivery(t, db, "fine"); f.State != pipeline.DeliveryDone {
		t.Errorf("the other repository's delivery is %s", f.State)
	}
	// An operator can give it up; not retry it.
	if _, err := db.RetryDelivery(context.Background(), "damaged"); err == nil || !strings.Contains(err.Error(), "cannot be handled again (discard it)") {
		t.Errorf("retry of a damaged delivery: %v", err)
	}
	if d, err := db.DiscardDelivery(context.Background(), "damaged", "damaged on disk"); err != nil || d.State != pipeline.DeliveryIgnored {
		t.Errorf("discard of a damaged delivery: %v, %v", d, err)
	}
}

func TestWorkerOrderPerRepositoryParallelAcrossRepositories(t *testing.T) {
	db := workerDB(t)
	repos := []string{"acme/a", "acme/b", "acme/c"}
	want := map[string][]string{}
	for i := range 4 {
		for _, r := range repos {
			id := fmt.Sprintf("%s#%d", r, i)
			enqueue(t, db, id, r, time.Time{})
			want[r] = append(want[r], id)
		}
	}

	const concurrency = 2
	var (
		mu          sync.Mutex
		order       = map[string][]string{}
		inFlight    = map[string]int{}
		running     int
		maxRunning  int
		firstStarts = make(chan string, len(repos))
		together    = make(chan struct{})
	)
	handler := handlerFunc(func(ctx context.Context, d *pipeline.Delivery) error {
		mu.Lock()
		inFlight[d.Repository]++
		if inFlight[d.Repository] > 1 {
			t.Errorf("two deliveries of %s handled at once", d.Repository)
		}
		running++
		maxRunning = max(maxRunning, running)
		first := len(order[d.Repository]) == 0
		order[d.Repository] = append(order[d.Repository], d.ID)
		mu.Unlock()
		if first {
			// The first deliveries of two repositories must be in hand
			// at the same time; a sequential worker never gets there.
			firstStarts <- d.Repository
			select {
			case <-together:
			case <-time.After(10 * time.Second):
				t.Errorf("%s: no other repository was handled in parallel", d.Repository)
			}
		}
		mu.Lock()
		inFlight[d.Repository]--
		running--
		mu.Unlock()
		return nil
	})
	obs := make(outcomes, 100)
	startWorker(t, &app.Worker{Inbox: db, Handler: handler, Observer: obs, Concurrency: concurrency, MaxAttempts: 3})

	for range concurrency {
		select {
		case <-firstStarts:
		case <-time.After(10 * time.Second):
			t.Fatal("the worker did not start two repositories")
		}
	}
	close(together)
	got := obs.next(t, 12, 20*time.Second)
	for _, h := range got {
		if h.result != "done" {
			t.Errorf("outcome %+v, want done", h)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, r := range repos {
		if !slices.Equal(order[r], want[r]) {
			t.Errorf("%s handled in order %v, want %v", r, order[r], want[r])
		}
	}
	if maxRunning != concurrency {
		t.Errorf("at most %d deliveries in hand at once, want %d (Concurrency)", maxRunning, concurrency)
	}
	stats, _ := db.InboxStats(context.Background())
	if stats[pipeline.DeliveryPending] != 0 {
		t.Errorf("%d deliveries still pending", stats[pipeline.DeliveryPending])
	}
}

func TestWorkerRetriesWithBackoffThenParksAsDead(t *testing.T) {
	db := workerDB(t)
	enqueue(t, db, "flaky", "acme/a", time.Time{})
	enqueue(t, db, "fine", "acme/b", time.Time{})

	var calls atomic.Int64
	var backoffMu sync.Mutex
	var backoffs []int
	handler := handlerFunc(func(ctx context.Context, d *pipeline.Delivery) error {
		if d.ID == "fine" {
			return nil
		}
		calls.Add(1)
		return fmt.Errorf("create deployment: GitHub answered 502 (attempt %d)", d.Attempts+1)
	})
	obs := make(outcomes, 100)
	startWorker(t, &app.Worker{Inbox: db, Handler: handler, Observer: obs, Concurrency: 2, MaxAttempts: 3,
		Backoff: func(attempt int) time.Duration {
			backoffMu.Lock()
			backoffs = append(backoffs, attempt)
			backoffMu.Unlock()
			return 20 * time.Millisecond
		}})

	// Well within the worker's 5s idle poll: the retry timer must wake it.
	got := obs.next(t, 4, 4*time.Second)
	var flaky []string
	for _, h := range got {
		if h.result != "done" {
			flaky = append(flaky, h.result)
		}
	}
	if !slices.Equal(flaky, []string{"retry", "retry", "dead"}) {
		t.Errorf("outcomes %v, want retry, retry, dead", got)
	}
	d := delivery(t, db, "flaky")
	if d.State != pipeline.DeliveryDead || d.Attempts != 3 || d.LastError != "create deployment: GitHub answered 502 (attempt 3)" {
		t.Errorf("flaky: state %s attempts %d error %q", d.State, d.Attempts, d.LastError)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("handler called %d times, want MaxAttempts (3)", n)
	}
	backoffMu.Lock()
	if len(backoffs) < 2 || backoffs[0] != 1 || backoffs[1] != 2 {
		t.Errorf("Backoff called with attempts %v, want 1, 2, …", backoffs)
	}
	backoffMu.Unlock()
	if f := delivery(t, db, "fine"); f.State != pipeline.DeliveryDone {
		t.Errorf("another repository's delivery is %s", f.State)
	}
	// A dead delivery is not tried again.
	select {
	case h := <-obs:
		t.Errorf("unexpected outcome after dead: %+v", h)
	default:
	}
}

func TestWorkerOutcomeOfOneAttempt(t *testing.T) {
	now := time.Date(2026, 7, 1, 10, 0, 0, 0, time.UTC)
	const backoff = 90 * time.Second
	rl := func(d time.Duration) *githubapp.RateLimitedError {
		return &githubapp.RateLimitedError{Until: now.Add(d), Status: 403}
	}
	tests := map[string]struct {
		err      error
		panics   bool
		result   string
		state    pipeline.DeliveryState
		next     time.Time // zero: not checked
		errHas   string
		note     string
		attempts int
		// maxAttempts is the worker's MaxAttempts (0: 5).
		maxAttempts int
		// age is how long ago the delivery was received (0: a second).
		age time.Duration
	}{
		"success": {result: "done", state: pipeline.DeliveryDone, attempts: 1},
		"ignored is done, with its reason": {err: &pipeline.Ignored{Reason: "push to topic, not the pipeline branch"},
			result: "done", state: pipeline.DeliveryDone, note: "push to topic, not the pipeline branch", attempts: 1},
		"not enrolled: ignored, with its reason": {err: fmt.Errorf("push: %w", &pipeline.Ignored{Reason: "repository not enrolled: no .github/lastmile.yml at 1a2b3c4", NotEnrolled: true}),
			result: "ignored", state: pipeline.DeliveryIgnored, note: "repository not enrolled: no .github/lastmile.yml at 1a2b3c4", attempts: 1},
		"wrapped ignored": {err: fmt.Errorf("push: %w", &pipeline.Ignored{Reason: "tag push"}),
			result: "done", state: pipeline.DeliveryDone, note: "tag push", attempts: 1},
		"error: retried after the backoff": {err: errors.New("GitHub answered 502"),
			result: "retry", state: pipeline.DeliveryPending, next: now.Add(backoff), errHas: "GitHub answered 502", attempts: 1},
		"malformed payload: dead at once": {err: fmt.Errorf("%w: push: unexpected end of JSON input", githubapp.ErrMalformed),
			result: "dead", state: pipeline.DeliveryDead, errHas: "malformed payload", attempts: 1},
		// Waiting for GitHub is not an attempt.
		"rate limited: not before the limit ends": {err: rl(2 * time.Hour),
			result: "retry", state: pipeline.DeliveryPending, next: now.Add(2 * time.Hour), errHas: "rate limit", attempts: 0},
		"wrapped rate limit": {err: fmt.Errorf("create deployment: %w", rl(45*time.Minute)),
			result: "retry", state: pipeline.DeliveryPending, next: now.Add(45 * time.Minute), errHas: "rate limit", attempts: 0},
		"rate limit shorter than the backoff: at its end": {err: rl(10 * time.Second),
			result: "retry", state: pipeline.DeliveryPending, next: now.Add(10 * time.Second), errHas: "rate limit", attempts: 0},
		"rate limit already over: after the first backoff": {err: rl(-time.Second),
			result: "retry", state: pipeline.DeliveryPending, next: now.Add(backoff), errHas: "rate limit", attempts: 0},
		"look again: at its time, before the backoff": {err: &pipeline.LookAgain{At: now.Add(5 * time.Second), Reason: "GitHub has not caught up"},
			result: "retry", state: pipeline.DeliveryPending, next: now.Add(5 * time.Second), errHas: "GitHub has not caught up", attempts: 0},
		"look again at the last attempt: not dead": {err: fmt.Errorf("push: %w", &pipeline.LookAgain{At: now.Add(5 * time.Second), Reason: "not caught up"}),
			maxAttempts: 1, result: "retry", state: pipeline.DeliveryPending, next: now.Add(5 * time.Second), errHas: "not caught up", attempts: 0},
		"error at the last attempt: dead": {err: errors.New("GitHub answered 502"), maxAttempts: 1,
			result: "dead", state: pipeline.DeliveryDead, errHas: "GitHub answered 502", attempts: 1},
		// GitHub not answering (its transport's retries spent) is waited
		// out too, for UnreachableWait after the delivery's receipt.
		"no answer from GitHub: a wait": {err: fmt.Errorf("create deployment: %w", &url.Error{Op: "Post", URL: "https://api.github.com/repos/acme/a/deployments", Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}}),
			maxAttempts: 1, result: "retry", state: pipeline.DeliveryPending, next: now.Add(backoff), errHas: "connection refused", attempts: 0},
		"GitHub's 502: a wait": {err: fmt.Errorf("create deployment: %w", &github.ErrorResponse{Response: &http.Response{StatusCode: 502}, Message: "Bad Gateway"}),
			maxAttempts: 1, result: "retry", state: pipeline.DeliveryPending, next: now.Add(backoff), errHas: "Bad Gateway", attempts: 0},
		"GitHub's 503 for the token: a wait": {err: &githubapp.InstallationTokenError{Installation: 7, Status: "503 Service Unavailable", Code: 503},
			maxAttempts: 1, result: "retry", state: pipeline.DeliveryPending, next: now.Add(backoff), errHas: "503", attempts: 0},
		"GitHub's 502 six hours on: an attempt": {err: fmt.Errorf("create deployment: %w", &github.ErrorResponse{Response: &http.Response{StatusCode: 502}, Message: "Bad Gateway"}),
			maxAttempts: 1, age: app.UnreachableWait, result: "dead", state: pipeline.DeliveryDead, errHas: "Bad Gateway", attempts: 1},
		"lastmile's own time limit: an attempt": {err: fmt.Errorf("create deployment: %w", &url.Error{Op: "Post", URL: "https://api.github.com/repos/acme/a/deployments", Err: context.DeadlineExceeded}),
			maxAttempts: 1, result: "dead", state: pipeline.DeliveryDead, errHas: "deadline exceeded", attempts: 1},
		"a host that does not exist: an attempt": {err: fmt.Errorf("create deployment: %w", &url.Error{Op: "Post", URL: "https://api.gihtub.com/repos/acme/a/deployments", Err: &net.DNSError{Err: "no such host", Name: "api.gihtub.com", IsNotFound: true}}),
			maxAttempts: 1, result: "dead", state: pipeline.DeliveryDead, errHas: "no such host", attempts: 1},
		"GitHub's 422: an attempt": {err: fmt.Errorf("create deployment: %w", &github.ErrorResponse{Response: &http.Response{StatusCode: 422}, Message: "Validation Failed"}),
			maxAttempts: 1, result: "dead", state: pipeline.DeliveryDead, errHas: "Validation Failed", attempts: 1},
		"panic: a failed attempt": {panics: true,
			result: "retry", state: pipeline.DeliveryPending, next: now.Add(backoff), errHas: "handler panic: boom", attempts: 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			db := workerDB(t)
			db.Now = func() time.Time { return now }
			enqueue(t, db, "d-1", "acme/a", now.Add(-cmp.Or(tc.age, time.Second)))
			var calls atomic.Int64
			handler := handlerFunc(func(ctx context.Context, d *pipeline.Delivery) error {
				calls.Add(1)
				if tc.panics {
					panic("boom")
				}
				return tc.err
			})
			obs := make(outcomes, 10)
			stop := startWorker(t, &app.Worker{Inbox: db, Handler: handler, Observer: obs, MaxAttempts: cmp.Or(tc.maxAttempts, 5),
				Now: func() time.Time { return now }, Backoff: func(int) time.Duration { return backoff }})
			got := obs.next(t, 1, 10*time.Second)
			stop()
			if got[0] != (handled{"push", tc.result}) {
				t.Errorf("outcome %+v, want push/%s", got[0], tc.result)
			}
			d := delivery(t, db, "d-1")
			if d.State != tc.state || d.Attempts != tc.attempts || d.Note != tc.note {
				t.Errorf("state %s attempts %d note %q; want %s %d %q", d.State, d.Attempts, d.Note, tc.state, tc.attempts, tc.note)
			}
			if !tc.next.IsZero() && !d.NextAttemptAt.Equal(tc.next) {
				t.Errorf("next attempt at %v, want %v", d.NextAttemptAt, tc.next)
			}
			if !strings.Contains(d.LastError, tc.errHas) || (tc.errHas == "" && d.LastError != "") {
				t.Errorf("last error %q, want it to contain %q", d.LastError, tc.errHas)
			}
			if tc.state == pipeline.DeliveryDone || tc.state == pipeline.DeliveryIgnored || tc.state == pipeline.DeliveryDead {
				if !d.FinishedAt.Equal(now) {
					t.Errorf("finished at %v, want %v", d.FinishedAt, now)
				}
			}
			// The clock stands still: a retry is not due, so there was
			// exactly one attempt.
			if n := calls.Load(); n != 1 {
				t.Errorf("handler called %d times, want 1", n)
			}
		})
	}
}

// Waits for GitHub do not use up a delivery's attempts: after three of
// them, one real failure with MaxAttempts 2 is retried, with the first
// attempt's backoff, and the next attempt succeeds.
func TestWorkerWaitsForGitHubAreNotAttempts(t *testing.T) {
	db := workerDB(t)
	enqueue(t, db, "d-1", "acme/a", time.Time{})
	var calls atomic.Int64
	handler := handlerFunc(func(ctx context.Context, d *pipeline.Delivery) error {
		switch n := calls.Add(1); {
		case n == 1:
			return &githubapp.RateLimitedError{Until: time.Now(), Status: 429}
		case n <= 3:
			return &pipeline.LookAgain{At: time.Now(), Reason: "GitHub still shows main at c2"}
		case n == 4:
			return errors.New("GitHub answered 502")
		default:
			return nil
		}
	})
	var backoffs []int
	var mu sync.Mutex
	obs := make(outcomes, 10)
	stop := startWorker(t, &app.Worker{Inbox: db, Handler: handler, Observer: obs, MaxAttempts: 2, Now: time.Now,
		Backoff: func(attempt int) time.Duration {
			mu.Lock()
			defer mu.Unlock()
			backoffs = append(backoffs, attempt)
			return time.Millisecond
		}})
	got := obs.next(t, 5, 10*time.Second)
	stop()
	want := []handled{{"push", "retry"}, {"push", "retry"}, {"push", "retry"}, {"push", "retry"}, {"push", "done"}}
	if !slices.Equal(got, want) {
		t.Errorf("outcomes %v, want %v", got, want)
	}
	if d := delivery(t, db, "d-1"); d.State != pipeline.DeliveryDone || d.Attempts != 2 {
		t.Errorf("delivery %s after %d attempts; want done after 2 (the waits are not attempts)", d.State, d.Attempts)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(backoffs, 1) || slices.Contains(backoffs, 4) {
		t.Errorf("backoffs asked for attempts %v: want the 502's as attempt 1", backoffs)
	}
}

// A secondary rate limit hit again and again is waited out for longer each
// time (GitHub asks for exponentially longer waits), still without counting
// an attempt; a primary one ends when its window does.
func TestWorkerWaitsLongerForRepeatedSecondaryRateLimits(t *testing.T) {
	now := time.Date(2026, 7, 1, 10, 0, 0, 0, time.UTC)
	for name, tc := range map[string]struct {
		secondary bool
		want      time.Time
	}{
		"secondary": {true, now.Add(4 * time.Hour)}, // the fourth wait: Backoff(4)
		"primary":   {false, now.Add(time.Minute)},
	} {
		t.Run(name, func(t *testing.T) {
			db := workerDB(t)
			db.Now = func() time.Time { return now }
			enqueue(t, db, "d-1", "acme/a", now.Add(-time.Second))
			d := delivery(t, db, "d-1")
			for range 3 { // three waits before
				if err := db.PostponeDelivery(context.Background(), d.Seq, "rate limited", now.Add(-time.Second)); err != nil {
					t.Fatal(err)
				}
			}
			handler := handlerFunc(func(ctx context.Context, d *pipeline.Delivery) error {
				return &githubapp.RateLimitedError{Until: now.Add(time.Minute), Secondary: tc.secondary, Status: 403}
			})
			obs := make(outcomes, 10)
			stop := startWorker(t, &app.Worker{Inbox: db, Handler: handler, Observer: obs, MaxAttempts: 2,
				Now: func() time.Time { return now }, Backoff: func(n int) time.Duration { return time.Duration(n) * time.Hour }})
			obs.next(t, 1, 10*time.Second)
			stop()
			d = delivery(t, db, "d-1")
			if !d.NextAttemptAt.Equal(tc.want) || d.Waits != 4 || d.Attempts != 0 || d.State != pipeline.DeliveryPending {
				t.Errorf("next attempt at %v after %d waits, %d attempts, %s; want %v after 4 waits, 0 attempts, pending",
					d.NextAttemptAt, d.Waits, d.Attempts, d.State, tc.want)
			}
		})
	}
}

func TestWorkerSurvivesAPanicAndRetries(t *testing.T) {
	db := workerDB(t)
	enqueue(t, db, "d-1", "acme/a", time.Time{})
	var calls atomic.Int64
	handler := handlerFunc(func(ctx context.Context, d *pipeline.Delivery) error {
		if calls.Add(1) == 1 {
			panic("a bug in a handler")
		}
		return nil
	})
	obs := make(outcomes, 10)
	startWorker(t, &app.Worker{Inbox: db, Handler: handler, Observer: obs, MaxAttempts: 3,
		Backoff: func(int) time.Duration { return time.Millisecond }})
	got := obs.next(t, 2, 4*time.Second)
	if got[0].result != "retry" || got[1].result != "done" {
		t.Errorf("outcomes %v, want retry then done", got)
	}
	d := delivery(t, db, "d-1")
	if d.State != pipeline.DeliveryDone || d.Attempts != 2 || d.LastError != "" {
		t.Errorf("state %s attempts %d error %q; want done after 2 attempts, error cleared", d.State, d.Attempts, d.LastError)
	}
}

// A handler's panic is recorded as its value and where it happened, short
// enough for `lastmile deliveries` to show both; the goroutine's whole
// stack goes to the log, once, at ERROR, with the delivery's attributes.
func TestWorkerRecordsWhereAHandlerPanicked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lastmile.db")
	db, err := storage.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	enqueue(t, db, "d-1", "acme/a", time.Time{})
	var panicLine int
	handler := handlerFunc(func(ctx context.Context, d *pipeline.Delivery) error {
		var seen map[string]bool
		_, _, line, _ := runtime.Caller(0)
		panicLine = line + 2
		seen[d.ID] = true // a bug: a nil map
		return nil
	})
	var logged bytes.Buffer // read once the worker has stopped
	obs := make(outcomes, 10)
	stop := startWorker(t, &app.Worker{Inbox: db, Handler: handler, Observer: obs, MaxAttempts: 3,
		Log:     slog.New(slog.NewJSONHandler(&logged, nil)),
		Backoff: func(int) time.Duration { return time.Hour }})
	obs.next(t, 1, 10*time.Second)
	stop()

	where := fmt.Sprintf("app/worker_test.go:%d", panicLine)
	lastErr := delivery(t, db, "d-1").LastError
	want := "handler panic: assignment to entry in nil map (at " + where + ")"
	if lastErr != want {
		t.Errorf("last error %q, want %q", lastErr, want)
	}
	code, stdout, stderr := runCLI(t, nil, "deliveries", "--database", path)
	if code != 0 {
		t.Fatalf("deliveries: exit %d, stderr %q", code, stderr)
	}
	// Pending, its DETAIL begins with when it is retried: the table cuts
	// the middle, and keeps the cause.
	if cause := "assignment to entry in nil map (at " + where + ")"; !strings.Contains(stdout, cause) || strings.Contains(stdout, "goroutine") {
		t.Errorf("deliveries does not show %q, or shows a stack:\n%s", cause, stdout)
	}

	var stacks int
	for _, line := range strings.Split(strings.TrimSpace(logged.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		stack, _ := rec["stack"].(string)
		if stack == "" {
			if strings.Contains(line, "goroutine") {
				t.Errorf("a stack outside the panic's log line: %s", line)
			}
			continue
		}
		stacks++
		if rec["level"] != "ERROR" || rec["delivery"] != "d-1" || rec["repo"] != "acme/a" || rec["event"] != "push" ||
			rec["error"] != want || !strings.Contains(stack, "goroutine ") || !strings.Contains(stack, where) {
			t.Errorf("the panic's log line: %s", line)
		}
	}
	if stacks != 1 {
		t.Errorf("%d log lines with the stack, want 1:\n%s", stacks, logged.String())
	}
}

func TestWorkerGracefulStopFinishesTheDeliveryInHand(t *testing.T) {
	db := workerDB(t)
	enqueue(t, db, "in-hand", "acme/a", time.Time{})
	enqueue(t, db, "queued", "acme/a", time.Time{})

	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	var calls atomic.Int64
	var handlerCtxErr atomic.Value
	handler := handlerFunc(func(ctx context.Context, d *pipeline.Delivery) error {
		calls.Add(1)
		close(started)
		<-runCtx.Done() // shutdown begins while this delivery is in hand
		handlerCtxErr.Store(fmt.Sprint(ctx.Err()))
		return nil
	})
	w := &app.Worker{Inbox: db, Handler: handler, Log: slog.New(slog.DiscardHandler), MaxAttempts: 3}
	if w.Alive() {
		t.Error("Alive before Run")
	}
	done := make(chan struct{})
	go func() { w.Run(runCtx); close(done) }()

	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not pick the delivery up")
	}
	if !w.Alive() {
		t.Error("not Alive while handling")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the delivery in hand finished")
	}
	if got := handlerCtxErr.Load(); got != "<nil>" {
		t.Errorf("the handler's context was %v during shutdown; it must let the delivery finish", got)
	}
	if d := delivery(t, db, "in-hand"); d.State != pipeline.DeliveryDone {
		t.Errorf("the delivery in hand is %s after Run returned, want done", d.State)
	}
	if d := delivery(t, db, "queued"); d.State != pipeline.DeliveryPending || d.Attempts != 0 {
		t.Errorf("the queued delivery is %s after %d attempts; nothing new may start during shutdown", d.State, d.Attempts)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("handler called %d times, want 1", n)
	}
	if w.Alive() {
		t.Error("Alive after Run returned")
	}
}

// sleepyInbox tells the test when the worker found nothing to do, right
// before it waits.
type sleepyInbox struct {
	*storage.DB
	waiting chan struct{}
}

func (s *sleepyInbox) NextWork(ctx context.Context, now time.Time, busy map[pipeline.InHand]bool, limit int) ([]*pipeline.Delivery, time.Time, error) {
	ds, next, err := s.DB.NextWork(ctx, now, busy, limit)
	if len(ds) == 0 {
		select {
		case s.waiting <- struct{}{}:
		default:
		}
	}
	return ds, next, err
}

func TestWorkerWakesWhenNotified(t *testing.T) {
	db := workerDB(t)
	inbox := &sleepyInbox{DB: db, waiting: make(chan struct{}, 1)}
	obs := make(outcomes, 10)
	w := &app.Worker{Inbox: inbox, Handler: handlerFunc(func(context.Context, *pipeline.Delivery) error { return nil }),
		Observer: obs, MaxAttempts: 3}
	startWorker(t, w)
	select {
	case <-inbox.waiting: // idle, about to wait for up to 5s
	case <-time.After(10 * time.Second):
		t.Fatal("the worker never went idle")
	}
	enqueue(t, db, "new", "acme/a", time.Time{})
	w.Notify()
	obs.next(t, 1, 3*time.Second) // well before the idle poll would find it
	if d := delivery(t, db, "new"); d.State != pipeline.DeliveryDone {
		t.Errorf("state %s", d.State)
	}
}

func TestDefaultBackoff(t *testing.T) {
	for attempt, base := range map[int]time.Duration{1: 5 * time.Second, 2: 10 * time.Second, 3: 20 * time.Second,
		8: 640 * time.Second, 11: time.Hour, 30: time.Hour} {
		for range 20 {
			if d := app.DefaultBackoff(attempt); d < base/2 || d > base {
				t.Errorf("DefaultBackoff(%d) = %v, want within [%v, %v]", attempt, d, base/2, base)
			}
		}
	}
}

// flakyOutcomes is the real inbox whose first writes of an outcome fail
// (the disk full for a moment, a busy timeout).
type flakyOutcomes struct {
	*storage.DB
	failures atomic.Int64 // still to fail
	tries    atomic.Int64
}

func (f *flakyOutcomes) FinishDelivery(ctx context.Context, seq int64, note string) error {
	f.tries.Add(1)
	if f.failures.Add(-1) >= 0 {
		return errors.New("disk I/O error")
	}
	return f.DB.FinishDelivery(ctx, seq, note)
}

// An outcome the database refuses to record is written again, the
// repository held meanwhile: the delivery is not handed out again and
// handled over and over.
func TestWorkerRetriesRecordingAnOutcome(t *testing.T) {
	db := workerDB(t)
	enqueue(t, db, "d1", "acme/a", time.Time{})
	inbox := &flakyOutcomes{DB: db}
	inbox.failures.Store(3)
	var calls atomic.Int64
	obs := make(outcomes, 10)
	w := &app.Worker{Inbox: inbox, Observer: obs, Handler: handlerFunc(func(ctx context.Context, d *pipeline.Delivery) error {
		calls.Add(1)
		return nil
	})}
	startWorker(t, w)
	if got := obs.next(t, 1, 30*time.Second); got[0].result != "done" {
		t.Fatalf("outcome %v", got)
	}
	if d := delivery(t, db, "d1"); d.State != pipeline.DeliveryDone {
		t.Errorf("delivery %s, want done", d.State)
	}
	if n, tries := calls.Load(), inbox.tries.Load(); n != 1 || tries != 4 {
		t.Errorf("handled %d times, outcome written %d times; want 1 handling, 4 writes (3 refused)", n, tries)
	}
}

// Abort ends the deliveries in hand of a worker told to stop: their
// context is cancelled, and nothing is recorded for them, so they are
// handled again at the next start.
func TestWorkerAbortCancelsTheDeliveriesInHand(t *testing.T) {
	db := workerDB(t)
	enqueue(t, db, "stuck", "acme/a", time.Time{})
	started := make(chan struct{})
	var seen atomic.Value
	var logged syncBuffer
	w := &app.Worker{Inbox: db, Log: slog.New(slog.NewJSONHandler(&logged, nil)), Handler: handlerFunc(func(ctx context.Context, d *pipeline.Delivery) error {
		close(started)
		<-ctx.Done()
		seen.Store(ctx.Err())
		return ctx.Err()
	})}
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { w.Run(runCtx); close(done) }()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the delivery was not handed out")
	}
	cancel()
	w.Abort()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Abort")
	}
	if err, _ := seen.Load().(error); !errors.Is(err, context.Canceled) {
		t.Errorf("the handler's context ended with %v, want canceled", err)
	}
	if d := delivery(t, db, "stuck"); d.State != pipeline.DeliveryPending || d.Attempts != 0 {
		t.Errorf("the aborted delivery is %s after %d attempts; want pending, 0 (handled again at the next start)", d.State, d.Attempts)
	}
	// Stopping is no fault: nothing is logged as an error (operators
	// alert on those).
	if out := logged.String(); strings.Contains(out, `"level":"ERROR"`) || !strings.Contains(out, "handled again at the next start") {
		t.Errorf("the worker's log when aborted:\n%s\nwant no ERROR, and a note that the delivery is handled again", out)
	}
}

// syncBuffer is a log destination that goroutines share.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// What GitHub answers for an installation that was uninstalled or
// suspended is no fault of the delivery's. A 404 for the token of an
// installation lastmile recorded as uninstalled: the delivery is ignored,
// with a note naming the installation, logged once at WARN. A suspension's
// 403 (for a new token, or for a call with one minted before): it waits,
// not counting an attempt, never dead, saying so. Anything else is a
// failed attempt, as before — a 404 of an installation lastmile has not
// recorded as uninstalled too (lastmile may run with another App's key).
func TestWorkerRefusedInstallations(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	const backoff = 7 * time.Second
	gone := fmt.Errorf("read .github/lastmile.yml at c0ffee0: %w",
		&githubapp.InstallationTokenError{Installation: 7, Status: "404 Not Found", Code: http.StatusNotFound})
	suspendedToken := fmt.Errorf("read .github/lastmile.yml at c0ffee0: %w", &githubapp.InstallationTokenError{Installation: 7,
		Status: "403 Forbidden", Code: http.StatusForbidden, Message: "This installation has been suspended"})
	suspendedCall := fmt.Errorf("read .github/lastmile.yml at c0ffee0: %w", &github.ErrorResponse{
		Response: &http.Response{StatusCode: http.StatusForbidden, Request: &http.Request{Method: "GET", URL: &url.URL{}}},
		Message:  "This installation has been suspended"})
	forbidden := &github.ErrorResponse{Response: &http.Response{StatusCode: http.StatusForbidden, Request: &http.Request{Method: "GET", URL: &url.URL{}}},
		Message: "Resource not accessible by integration"}
	uninstalled := pipeline.InstallationState{ID: 7, Account: "acme", State: pipeline.InstallationUninstalled, Since: now.Add(-time.Minute), By: "octocat"}
	suspended := pipeline.InstallationState{ID: 7, Account: "acme", State: pipeline.InstallationSuspended, Since: now.Add(-time.Minute), By: "alice"}
	tests := map[string]struct {
		recorded    *pipeline.InstallationState
		err         error
		maxAttempts int
		result      string
		state       pipeline.DeliveryState
		attempts    int
		next        time.Time
		has         string // in the note (ignored) or the last error (pending)
		suffix      string // the last error's end
		warned      string // logged at WARN, once
	}{
		"404, the installation recorded uninstalled: ignored": {recorded: &uninstalled, err: gone,
			result: "ignored", state: pipeline.DeliveryIgnored, attempts: 1,
			has:    "the lastmile App was uninstalled from installation 7 (acme) by octocat at 2026-11-26T09:59:00Z",
			warned: "delivery ignored: lastmile no longer has access to its repository"},
		"404, the installation not recorded uninstalled: a failed attempt": {err: gone,
			result: "retry", state: pipeline.DeliveryPending, attempts: 1, next: now.Add(backoff), suffix: "GitHub answered 404 Not Found",
			warned: "delivery failed; will retry"},
		"404, the installation recorded suspended: a failed attempt": {recorded: &suspended, err: gone,
			result: "retry", state: pipeline.DeliveryPending, attempts: 1, next: now.Add(backoff), suffix: "GitHub answered 404 Not Found"},
		"the token refused as suspended: waits, saying since when and by whom": {recorded: &suspended, err: suspendedToken,
			result: "retry", state: pipeline.DeliveryPending, attempts: 0, next: now.Add(app.SuspendedRecheck),
			has:    "installation 7 (acme) was suspended by alice at 2026-11-26T09:59:00Z: waiting until it is unsuspended (not an attempt)",
			suffix: "GitHub answered 403 Forbidden: This installation has been suspended",
			warned: "delivery waits until its installation is unsuspended"},
		"a call refused as suspended, at the last attempt, the suspension not heard of yet: waits": {err: suspendedCall, maxAttempts: 1,
			result: "retry", state: pipeline.DeliveryPending, attempts: 0, next: now.Add(app.SuspendedRecheck),
			has: "installation 7 is suspended: waiting until it is unsuspended", suffix: "403 This installation has been suspended"},
		"another 403: a failed attempt": {recorded: &suspended, err: forbidden,
			result: "retry", state: pipeline.DeliveryPending, attempts: 1, next: now.Add(backoff), suffix: "403 Resource not accessible by integration"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			db := workerDB(t)
			db.Now = func() time.Time { return now }
			d := &pipeline.Delivery{ID: "d-1", Event: "push", Repository: "acme/shop", InstallationID: 7, Body: []byte(`{}`),
				State: pipeline.DeliveryPending, ReceivedAt: now.Add(-time.Second)}
			if _, err := db.Accept(context.Background(), d, "push", githubapp.OutcomeAccepted); err != nil {
				t.Fatal(err)
			}
			if tc.recorded != nil {
				if _, err := db.SetInstallation(context.Background(), *tc.recorded); err != nil {
					t.Fatal(err)
				}
			}
			var logged strings.Builder
			var logMu sync.Mutex
			log := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logged}, &slog.HandlerOptions{Level: slog.LevelWarn}))
			obs := make(outcomes, 10)
			stop := startWorker(t, &app.Worker{Inbox: db, Installations: db, Log: log, Observer: obs, MaxAttempts: cmp.Or(tc.maxAttempts, 5),
				Handler: handlerFunc(func(context.Context, *pipeline.Delivery) error { return tc.err }),
				Now:     func() time.Time { return now }, Backoff: func(int) time.Duration { return backoff }})
			got := obs.next(t, 1, 10*time.Second)
			stop()
			if got[0] != (handled{"push", tc.result}) {
				t.Errorf("outcome %+v, want push/%s", got[0], tc.result)
			}
			d = delivery(t, db, "d-1")
			if d.State != tc.state || d.Attempts != tc.attempts {
				t.Errorf("state %s, %d attempts; want %s, %d", d.State, d.Attempts, tc.state, tc.attempts)
			}
			if !tc.next.IsZero() && !d.NextAttemptAt.Equal(tc.next) {
				t.Errorf("next attempt at %v, want %v", d.NextAttemptAt, tc.next)
			}
			detail := d.LastError
			if tc.state == pipeline.DeliveryIgnored {
				detail = d.Note
			}
			if !strings.Contains(detail, tc.has) || !strings.HasSuffix(detail, tc.suffix) {
				t.Errorf("%s %q: want it to contain %q and end with %q", map[bool]string{true: "note", false: "last error"}[tc.state == pipeline.DeliveryIgnored],
					detail, tc.has, tc.suffix)
			}
			logMu.Lock()
			defer logMu.Unlock()
			if tc.warned != "" && strings.Count(logged.String(), "level=WARN msg=\""+tc.warned) != 1 {
				t.Errorf("log:\n%s\nwant one WARN %q", logged.String(), tc.warned)
			}
		})
	}
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// The worker's lines about a delivery name its action only when it has
// one: a push has none, and no `"action":""`.
func TestWorkerLogNamesAnActionOnlyWhenThereIsOne(t *testing.T) {
	db := workerDB(t)
	for _, d := range []*pipeline.Delivery{
		{ID: "p", Event: "push", Repository: "acme/a"},
		{ID: "s", Event: "deployment_status", Action: "created", Repository: "acme/b"},
	} {
		d.Body, d.State = []byte(`{}`), pipeline.DeliveryPending
		if _, err := db.Accept(context.Background(), d, d.Event, githubapp.OutcomeAccepted); err != nil {
			t.Fatal(err)
		}
	}
	var logged syncBuffer
	obs := make(outcomes, 2)
	startWorker(t, &app.Worker{Inbox: db, Observer: obs, Log: slog.New(slog.NewJSONHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Handler: handlerFunc(func(context.Context, *pipeline.Delivery) error { return nil })})
	obs.next(t, 2, 10*time.Second) // each logged before its outcome
	lines := map[string]map[string]any{}
	for _, l := range strings.Split(strings.TrimSpace(logged.String()), "\n") {
		var line map[string]any
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if line["msg"] == "delivery handled" {
			lines[line["delivery"].(string)] = line
		}
	}
	if p, ok := lines["p"]; !ok || p["event"] != "push" || p["action"] != nil {
		t.Errorf("the push's line: %v, want no action", p)
	}
	if s, ok := lines["s"]; !ok || s["action"] != "created" {
		t.Errorf("the deployment status's line: %v, want its action", s)
	}
}
