package githubapp_test

import (
	"cmp"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/storage/storagetest"

	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/githubapp/simulator/oasvalidate"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// hookAttempt is one delivery attempt as GET /app/hook/deliveries lists it.
type hookAttempt struct {
	id     int64
	guid   string
	ago    time.Duration // delivered this long before the test's now
	ok     bool
	event  string // push unless given
	noTime bool   // delivered_at missing
}

// hookDeliveries is a scripted GitHub for the redelivery endpoints: it lists
// the attempts newest first, pageSize at a time (ignoring per_page, as
// GitHub may), with cursor pagination in the Link header, and its Date is
// now.
type hookDeliveries struct {
	*httptest.Server
	now        time.Time     // GitHub's clock
	noDate     bool          // the list answers without a Date header
	attempts   []hookAttempt // newest first
	pageSize   int
	failList   bool          // GET answers 500
	failPost   int           // POST .../attempts answers this status (0: 202)
	failPostOf map[int64]int // … or, for these attempt IDs, this one
	limitPost  bool          // POST .../attempts answers 403: the App's rate limit is spent for an hour

	mu          sync.Mutex
	cursors     []string // cursor of every list request ("" for the first)
	redelivered []int64  // attempt IDs asked to redeliver
}

func newHookDeliveries(t *testing.T, now time.Time, pageSize int, attempts ...hookAttempt) *hookDeliveries {
	t.Helper()
	h := &hookDeliveries{now: now, attempts: attempts, pageSize: pageSize}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /app/hook/deliveries", h.list)
	mux.HandleFunc("POST /app/hook/deliveries/{id}/attempts", h.redeliver)
	h.Server = httptest.NewServer(mux)
	t.Cleanup(h.Close)
	return h
}

func (h *hookDeliveries) list(w http.ResponseWriter, r *http.Request) {
	if h.noDate {
		w.Header()["Date"] = nil
	} else {
		w.Header().Set("Date", h.now.Format(http.TimeFormat))
	}
	cursor := r.URL.Query().Get("cursor")
	h.mu.Lock()
	h.cursors = append(h.cursors, cursor)
	failList := h.failList // a test may change it while lastmile lists
	h.mu.Unlock()
	if failList {
		http.Error(w, `{"message":"Server Error"}`, http.StatusInternalServerError)
		return
	}
	start := 0
	if cursor != "" {
		start, _ = strconv.Atoi(cursor)
	}
	end := min(start+h.pageSize, len(h.attempts))
	items := []map[string]any{}
	for _, a := range h.attempts[start:end] {
		status, code := "Invalid HTTP Response: 503", 503
		if a.ok {
			status, code = "OK", 200
		}
		item := map[string]any{"id": a.id, "guid": a.guid, "status": status, "status_code": code,
			"event": cmp.Or(a.event, "push"), "action": nil, "installation_id": 7, "repository_id": 70, "redelivery": false, "duration": 0.1}
		if !a.noTime {
			item["delivered_at"] = h.now.Add(-a.ago).UTC().Format(time.RFC3339)
		}
		items = append(items, item)
	}
	if end < len(h.attempts) {
		next := url.Values{"per_page": {r.URL.Query().Get("per_page")}, "cursor": {strconv.Itoa(end)}}
		w.Header().Set("Link", fmt.Sprintf(`<%s/app/hook/deliveries?%s>; rel="next"`, h.URL, next.Encode()))
	}
	writeJSONBody(w, http.StatusOK, items)
}

func (h *hookDeliveries) redeliver(w http.ResponseWriter, r *http.Request) {
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	h.mu.Lock()
	h.redelivered = append(h.redelivered, id)
	limitPost, status := h.limitPost, cmp.Or(h.failPostOf[id], h.failPost)
	h.mu.Unlock()
	if limitPost {
		w.Header().Set("X-RateLimit-Limit", "5000")
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10))
		writeJSONBody(w, http.StatusForbidden, map[string]any{"message": "API rate limit exceeded"})
		return
	}
	if status != 0 {
		http.Error(w, `{"message":"Validation Failed"}`, status)
		return
	}
	writeJSONBody(w, http.StatusAccepted, map[string]any{})
}

func (h *hookDeliveries) Redelivered() []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.redelivered)
}

func (h *hookDeliveries) Cursors() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.cursors)
}

func writeJSONBody(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func githubClientFor(t *testing.T, baseURL string) *github.Client {
	t.Helper()
	gh := github.NewClient(nil)
	u, err := url.Parse(baseURL + "/")
	if err != nil {
		t.Fatal(err)
	}
	gh.BaseURL = u
	return gh
}

// skipWait is the Redeliverer's Sleep in tests: the spacing between
// requests is not waited out.
func skipWait(ctx context.Context, _ time.Duration) error { return ctx.Err() }

func openStore(t *testing.T) *storage.DB {
	return storagetest.Open(t)
}

func TestRedelivererRunOnce(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	const window = 72 * time.Hour
	tests := map[string]struct {
		attempts   []hookAttempt // newest first
		known      []string      // GUIDs already in lastmile's inbox
		checkpoint time.Time     // the previous run, if any
		pageSize   int
		want       []int64 // attempt IDs redelivered, in order
		wantPages  int     // list requests made
	}{
		"a failed delivery lastmile lacks is redelivered": {
			attempts: []hookAttempt{{id: 11, guid: "g-1", ago: time.Minute, event: "push"}},
			want:     []int64{11}, wantPages: 1,
		},
		"known locally: GitHub saw a failure but lastmile stored it": {
			attempts: []hookAttempt{{id: 11, guid: "g-1", ago: time.Minute}},
			known:    []string{"g-1"}, wantPages: 1,
		},
		"a later attempt succeeded": {
			attempts:  []hookAttempt{{id: 12, guid: "g-1", ago: time.Minute, ok: true}, {id: 11, guid: "g-1", ago: time.Hour}},
			wantPages: 1,
		},
		"an earlier attempt succeeded": {
			attempts:  []hookAttempt{{id: 12, guid: "g-1", ago: time.Minute}, {id: 11, guid: "g-1", ago: time.Hour, ok: true}},
			wantPages: 1,
		},
		"successful deliveries are left alone": {
			attempts:  []hookAttempt{{id: 11, guid: "g-1", ago: time.Minute, ok: true}, {id: 10, guid: "g-2", ago: time.Hour, ok: true}},
			wantPages: 1,
		},
		"several failed attempts: the newest is redelivered once": {
			attempts: []hookAttempt{{id: 13, guid: "g-1", ago: time.Minute}, {id: 12, guid: "g-2", ago: 2 * time.Minute},
				{id: 11, guid: "g-1", ago: time.Hour}},
			want: []int64{13, 12}, wantPages: 1,
		},
		"given up after MaxAttempts failures": {
			attempts: []hookAttempt{{id: 15, guid: "g-1", ago: time.Minute}, {id: 14, guid: "g-1", ago: 2 * time.Minute},
				{id: 13, guid: "g-1", ago: 3 * time.Minute}, {id: 12, guid: "g-2", ago: 4 * time.Minute}},
			want: []int64{12}, wantPages: 1,
		},
		"older than the window: not redelivered, and the listing stops": {
			attempts: []hookAttempt{{id: 14, guid: "g-new", ago: time.Hour}, {id: 13, guid: "g-old", ago: window + time.Minute},
				{id: 12, guid: "g-older", ago: window + time.Hour}, {id: 11, guid: "g-oldest", ago: window + 2*time.Hour}},
			pageSize: 2, want: []int64{14}, wantPages: 1,
		},
		"pages are followed with the cursor": {
			attempts: []hookAttempt{{id: 17, guid: "g-7", ago: time.Minute, ok: true}, {id: 16, guid: "g-6", ago: 2 * time.Minute},
				{id: 15, guid: "g-5", ago: 3 * time.Minute, ok: true}, {id: 14, guid: "g-4", ago: 4 * time.Minute},
				{id: 13, guid: "g-3", ago: 5 * time.Minute}, {id: 12, guid: "g-2", ago: 6 * time.Minute},
				{id: 11, guid: "g-1", ago: 7 * time.Minute}},
			known:    []string{"g-3"},
			pageSize: 2, want: []int64{11, 12, 14, 16}, wantPages: 4,
		},
		"a success on a later page still counts": {
			attempts: []hookAttempt{{id: 13, guid: "g-1", ago: time.Minute}, {id: 12, guid: "g-2", ago: 2 * time.Minute},
				{id: 11, guid: "g-1", ago: 3 * time.Minute, ok: true}},
			pageSize: 2, want: []int64{12}, wantPages: 2,
		},
		"since the last run: an hour before its checkpoint": {
			attempts: []hookAttempt{{id: 13, guid: "g-recent", ago: 30 * time.Minute},
				{id: 12, guid: "g-around-last-run", ago: 2*time.Hour + 30*time.Minute},
				{id: 11, guid: "g-before-last-run", ago: 3*time.Hour + time.Minute}},
			checkpoint: now.Add(-2 * time.Hour), want: []int64{12, 13}, wantPages: 1,
		},
		"a checkpoint older than the window does not widen it": {
			attempts:   []hookAttempt{{id: 12, guid: "g-in", ago: window - time.Hour}, {id: 11, guid: "g-out", ago: window + time.Minute}},
			checkpoint: now.Add(-10 * window), want: []int64{12}, wantPages: 1,
		},
		"an attempt without a time is within the window": {
			attempts: []hookAttempt{{id: 11, guid: "g-1", noTime: true}},
			want:     []int64{11}, wantPages: 1,
		},
		"a checkpoint later than GitHub's now counts as now": {
			attempts: []hookAttempt{{id: 12, guid: "g-in", ago: 30 * time.Minute}, {id: 11, guid: "g-out", ago: time.Hour + time.Minute}},
			// kept by lastmile's clock, 2 hours ahead, before the
			// checkpoint was GitHub's
			checkpoint: now.Add(2 * time.Hour), want: []int64{12}, wantPages: 1,
		},
		"nothing delivered yet": {wantPages: 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if tc.pageSize == 0 {
				tc.pageSize = 100
			}
			gh := newHookDeliveries(t, now, tc.pageSize, tc.attempts...)
			db := openStore(t)
			for _, guid := range tc.known {
				acceptDelivery(t, db, guid)
			}
			if !tc.checkpoint.IsZero() {
				if err := db.SetSetting(context.Background(), "redelivery.checkpoint", tc.checkpoint.Format(time.RFC3339Nano)); err != nil {
					t.Fatal(err)
				}
			}
			r := &githubapp.Redeliverer{App: githubClientFor(t, gh.URL), Store: db, Window: window, MaxAttempts: 3,
				Now: func() time.Time { return now }, Sleep: skipWait, Log: discardLog()}
			n, err := r.RunOnce(context.Background())
			if err != nil {
				t.Fatalf("RunOnce: %v", err)
			}
			if got := gh.Redelivered(); !slices.Equal(got, tc.want) {
				t.Errorf("redelivered attempts %v, want %v", got, tc.want)
			}
			if n != len(tc.want) {
				t.Errorf("RunOnce = %d, want %d", n, len(tc.want))
			}
			cursors := gh.Cursors()
			if len(cursors) != tc.wantPages {
				t.Errorf("%d list requests (cursors %q), want %d", len(cursors), cursors, tc.wantPages)
			}
			for i, c := range cursors {
				if want := map[bool]string{true: "", false: strconv.Itoa(i * tc.pageSize)}[i == 0]; c != want {
					t.Errorf("list request %d used cursor %q, want %q", i+1, c, want)
				}
			}
			cp, ok, err := db.Setting(context.Background(), "redelivery.checkpoint")
			if err != nil || !ok {
				t.Fatalf("checkpoint not stored: %v", err)
			}
			if at, err := time.Parse(time.RFC3339Nano, cp); err != nil || !at.Equal(now) {
				t.Errorf("checkpoint = %q, want %v", cp, now)
			}
		})
	}
}

// acceptDelivery stores a delivery with the given GUID in the inbox.
func acceptDelivery(t *testing.T, db *storage.DB, guid string) {
	t.Helper()
	d := &pipeline.Delivery{ID: guid, Event: "push", Repository: "acme/shop", Body: []byte(`{}`)}
	if _, err := db.Accept(context.Background(), d, "push", githubapp.OutcomeAccepted); err != nil {
		t.Fatal(err)
	}
}

func TestRedelivererFailuresKeepTheCheckpoint(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	previous := now.Add(-30 * time.Minute).Format(time.RFC3339Nano)
	tests := map[string]func(h *hookDeliveries){
		"listing fails":    func(h *hookDeliveries) { h.failList = true },
		"redelivery fails": func(h *hookDeliveries) { h.failPost = http.StatusBadGateway },
	}
	for name, breakIt := range tests {
		t.Run(name, func(t *testing.T) {
			gh := newHookDeliveries(t, now, 100, hookAttempt{id: 11, guid: "g-1", ago: time.Minute})
			breakIt(gh)
			db := openStore(t)
			if err := db.SetSetting(context.Background(), "redelivery.checkpoint", previous); err != nil {
				t.Fatal(err)
			}
			r := &githubapp.Redeliverer{App: githubClientFor(t, gh.URL), Store: db, Window: time.Hour, MaxAttempts: 3,
				Now: func() time.Time { return now }, Sleep: skipWait, Log: discardLog()}
			if n, err := r.RunOnce(context.Background()); err == nil {
				t.Fatalf("RunOnce = %d, nil; want an error", n)
			}
			// The next run must look at the same deliveries again.
			if cp, _, _ := db.Setting(context.Background(), "redelivery.checkpoint"); cp != previous {
				t.Errorf("checkpoint moved to %q after a failed run", cp)
			}
		})
	}
}

// A GUID GitHub refuses to redeliver (422, 404) is given up; the run goes
// on with the others and completes.
func TestRedelivererGoesOnPastARefusal(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	gh := newHookDeliveries(t, now, 100,
		hookAttempt{id: 12, guid: "g-2", ago: time.Minute},
		hookAttempt{id: 11, guid: "g-1", ago: 2 * time.Minute})
	gh.failPost = http.StatusUnprocessableEntity
	db := openStore(t)
	r := &githubapp.Redeliverer{App: githubClientFor(t, gh.URL), Store: db, Window: time.Hour, MaxAttempts: 3,
		Now: func() time.Time { return now }, Sleep: skipWait, Log: discardLog()}
	if _, err := r.RunOnce(context.Background()); err != nil {
		t.Fatalf("RunOnce: %v", err)
	}
	if got := gh.Redelivered(); !slices.Equal(got, []int64{11, 12}) {
		t.Errorf("asked to redeliver %v, want both [11 12]", got)
	}
	if cp, _, _ := db.Setting(context.Background(), "redelivery.checkpoint"); cp != now.Format(time.RFC3339Nano) {
		t.Errorf("checkpoint = %q, want the run's time", cp)
	}
	// Refused once, not asked again.
	gh.failPost = 0
	if _, err := r.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := gh.Redelivered(); len(got) != 2 {
		t.Errorf("asked again after GitHub refused: %v", got)
	}
}

// The cap holds across runs, although each run reads only the attempts
// since the previous one (less an hour): a delivery that always fails is
// asked for MaxAttempts-1 times in all, not every run.
func TestRedelivererCapHoldsAcrossRuns(t *testing.T) {
	start := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	gh := newHookDeliveries(t, start, 100)
	db := openStore(t)
	now := start
	r := &githubapp.Redeliverer{App: githubClientFor(t, gh.URL), Store: db, Window: 72 * time.Hour, MaxAttempts: 5,
		Now: func() time.Time { return now }, Sleep: skipWait, Log: discardLog()}
	attemptsAt := []time.Time{start} // GitHub's first attempt, failed
	for run := range 3 * 24 * 6 {    // every 10 minutes for the 3 days of GitHub's window
		now = start.Add(time.Duration(run) * 10 * time.Minute)
		gh.now = now
		gh.attempts = nil
		for i := len(attemptsAt) - 1; i >= 0; i-- { // newest first
			gh.attempts = append(gh.attempts, hookAttempt{id: int64(100 + i), guid: "g-always-fails", ago: now.Sub(attemptsAt[i]), event: "push"})
		}
		before := len(gh.Redelivered())
		if _, err := r.RunOnce(context.Background()); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if len(gh.Redelivered()) > before {
			attemptsAt = append(attemptsAt, now) // the redelivery fails too
		}
	}
	if n := len(gh.Redelivered()); n != 4 {
		t.Errorf("a delivery that always fails was asked for %d times over 3 days, want 4 (5 attempts in all)", n)
	}
}

// The checkpoint is kept in GitHub's clock, the one delivered_at is in:
// with lastmile's clock 2 hours ahead, a delivery that failed 5 minutes
// after a run is still asked for by the runs that follow.
func TestRedelivererKeepsTheCheckpointInGitHubsClock(t *testing.T) {
	start := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	const skew = 2 * time.Hour
	gh := newHookDeliveries(t, start, 100)
	db := openStore(t)
	now := start // GitHub's
	r := &githubapp.Redeliverer{App: githubClientFor(t, gh.URL), Store: db, Window: 72 * time.Hour, MaxAttempts: 5,
		Now: func() time.Time { return now.Add(skew) }, Sleep: skipWait, Log: discardLog()}
	if _, err := r.RunOnce(context.Background()); err != nil { // nothing failed yet
		t.Fatal(err)
	}
	if cp, _, _ := db.Setting(context.Background(), "redelivery.checkpoint"); cp != start.Format(time.RFC3339Nano) {
		t.Errorf("checkpoint = %q, want GitHub's time of the run, %v", cp, start)
	}
	failedAt := start.Add(5 * time.Minute)
	for run := 1; run <= 12 && len(gh.Redelivered()) == 0; run++ { // every 10 minutes for 2 hours
		now = start.Add(time.Duration(run) * 10 * time.Minute)
		gh.now = now
		gh.attempts = []hookAttempt{{id: 11, guid: "g-after-run-1", ago: now.Sub(failedAt), event: "push"}}
		if _, err := r.RunOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if got := gh.Redelivered(); !slices.Equal(got, []int64{11}) {
		t.Errorf("asked to redeliver %v in 12 runs, want [11] at the first run after it failed (lastmile's clock %v ahead)", got, skew)
	}
}

// Without a Date from GitHub the checkpoint is the newest delivered_at
// listed, never lastmile's clock; with nothing listed the last one stays.
func TestRedelivererCheckpointWithoutADate(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	previous := now.Add(-30 * time.Minute).Format(time.RFC3339Nano)
	tests := map[string]struct {
		attempts []hookAttempt
		want     string
	}{
		"the newest delivered_at": {
			attempts: []hookAttempt{{id: 12, guid: "g-2", ago: 2 * time.Minute, ok: true}, {id: 11, guid: "g-1", ago: 5 * time.Minute, ok: true}},
			want:     now.Add(-2 * time.Minute).Format(time.RFC3339Nano),
		},
		"nothing listed": {want: previous},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			gh := newHookDeliveries(t, now, 100, tc.attempts...)
			gh.noDate = true
			db := openStore(t)
			if err := db.SetSetting(context.Background(), "redelivery.checkpoint", previous); err != nil {
				t.Fatal(err)
			}
			r := &githubapp.Redeliverer{App: githubClientFor(t, gh.URL), Store: db, Window: 72 * time.Hour, MaxAttempts: 5,
				Now: func() time.Time { return now.Add(2 * time.Hour) }, Sleep: skipWait, Log: discardLog()}
			if _, err := r.RunOnce(context.Background()); err != nil {
				t.Fatal(err)
			}
			if cp, _, _ := db.Setting(context.Background(), "redelivery.checkpoint"); cp != tc.want {
				t.Errorf("checkpoint = %q, want %q", cp, tc.want)
			}
		})
	}
}

// Deliveries of events lastmile does not act on (it would only record them
// as ignored) are not worth a request; ping is one of them. An installation
// event, which GitHub sends unasked, is: a missed uninstallation would
// leave releases on their way for good.
func TestRedelivererAsksOnlyForEventsItHandles(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	gh := newHookDeliveries(t, now, 100,
		hookAttempt{id: 18, guid: "g-installation-target", ago: 30 * time.Second, event: "installation_target"},
		hookAttempt{id: 17, guid: "g-installation", ago: time.Minute, event: "installation"},
		hookAttempt{id: 16, guid: "g-ping", ago: 2 * time.Minute, event: "ping"},
		hookAttempt{id: 15, guid: "g-push", ago: 3 * time.Minute, event: "push"},
		hookAttempt{id: 14, guid: "g-issues", ago: 4 * time.Minute, event: "issues"},
		hookAttempt{id: 13, guid: "g-deployment-status", ago: 5 * time.Minute, event: "deployment_status"},
		hookAttempt{id: 12, guid: "g-unknown", ago: 6 * time.Minute, event: "sponsorship"},
		hookAttempt{id: 11, guid: "g-workflow-run", ago: 7 * time.Minute, event: "workflow_run"})
	db := openStore(t)
	r := &githubapp.Redeliverer{App: githubClientFor(t, gh.URL), Store: db, Window: 72 * time.Hour, MaxAttempts: 5,
		Now: func() time.Time { return now }, Sleep: skipWait, Log: discardLog()}
	n, err := r.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := gh.Redelivered(), []int64{11, 13, 15, 17}; !slices.Equal(got, want) || n != len(want) {
		t.Errorf("asked to redeliver %v (RunOnce = %d), want only the events lastmile handles, %v", got, n, want)
	}
}

// Redelivery requests are a second apart, as GitHub asks of many requests
// that make it do something, whatever GitHub answered the one before; the
// first is not held back.
func TestRedelivererSpacesItsRequests(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	gh := newHookDeliveries(t, now, 100,
		hookAttempt{id: 14, guid: "g-4", ago: time.Minute}, hookAttempt{id: 13, guid: "g-3", ago: 2 * time.Minute},
		hookAttempt{id: 12, guid: "g-2", ago: 3 * time.Minute}, hookAttempt{id: 11, guid: "g-1", ago: 4 * time.Minute})
	gh.failPostOf = map[int64]int{13: http.StatusUnprocessableEntity}
	db := openStore(t)
	var waits []string // each wait, after how many requests
	r := &githubapp.Redeliverer{App: githubClientFor(t, gh.URL), Store: db, Window: 72 * time.Hour, MaxAttempts: 5,
		Now: func() time.Time { return now }, Log: discardLog(),
		Sleep: func(ctx context.Context, d time.Duration) error {
			waits = append(waits, fmt.Sprintf("%v after %d", d, len(gh.Redelivered())))
			return nil
		}}
	if _, err := r.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := gh.Redelivered(); !slices.Equal(got, []int64{11, 12, 13, 14}) {
		t.Fatalf("asked to redeliver %v, want [11 12 13 14], oldest first", got)
	}
	if want := []string{"1s after 1", "1s after 2", "1s after 3"}; !slices.Equal(waits, want) {
		t.Errorf("waits %q, want %q", waits, want)
	}
}

// The deliveries missed are asked for in the order GitHub first sent
// them, so that they reach the inbox in the order of their events: a
// delivery whose redelivery failed again comes by its first attempt, not
// its latest (whose ID is the one asked for); within a second (GitHub's
// times have no finer grain), by the first attempt's ID.
func TestRedelivererAsksOldestFirst(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	gh := newHookDeliveries(t, now, 100,
		hookAttempt{id: 15, guid: "g-1", ago: time.Minute}, hookAttempt{id: 13, guid: "g-3", ago: 10 * time.Minute},
		hookAttempt{id: 12, guid: "g-2", ago: 5 * time.Minute}, hookAttempt{id: 11, guid: "g-1", ago: 10 * time.Minute})
	r := &githubapp.Redeliverer{App: githubClientFor(t, gh.URL), Store: openStore(t), Window: 72 * time.Hour, MaxAttempts: 5,
		Now: func() time.Time { return now }, Log: discardLog(), Sleep: skipWait}
	if _, err := r.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := gh.Redelivered(); !slices.Equal(got, []int64{15, 13, 12}) {
		t.Errorf("asked to redeliver %v, want [15 13 12]: g-1 (first sent 10 minutes ago, attempt 11; its latest attempt 15), then g-3 (sent in the same second, attempt 13), then g-2", got)
	}
}

// Only a request GitHub accepted is an attempt: POST .../attempts failing
// (502) for four runs in a row, GitHub never redelivered, and the delivery
// is asked for once GitHub is well again, although MaxAttempts is 5.
func TestRedelivererFailedRequestsAreNotAttempts(t *testing.T) {
	start := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	gh := newHookDeliveries(t, start, 100)
	gh.failPost = http.StatusBadGateway
	db := openStore(t)
	now := start
	r := &githubapp.Redeliverer{App: githubClientFor(t, gh.URL), Store: db, Window: 72 * time.Hour, MaxAttempts: 5,
		Now: func() time.Time { return now }, Sleep: skipWait, Log: discardLog()}
	failedAt := start.Add(-time.Minute)
	for run := range 5 {
		now = start.Add(time.Duration(run) * 10 * time.Minute)
		gh.now = now
		if run == 4 {
			gh.failPost = 0 // GitHub's endpoint works again
		}
		gh.attempts = []hookAttempt{{id: 11, guid: "g-1", ago: now.Sub(failedAt), event: "push"}}
		n, err := r.RunOnce(context.Background())
		if got := len(gh.Redelivered()); got != run+1 {
			t.Fatalf("run %d: %d requests in all, want %d (one a run)", run+1, got, run+1)
		}
		if (err != nil) != (run < 4) || n != map[bool]int{true: 0, false: 1}[run < 4] {
			t.Errorf("run %d: RunOnce = %d, %v; want an error while GitHub fails, then 1", run+1, n, err)
		}
	}
	asked, err := db.RedeliveriesRequested(context.Background(), []string{"g-1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := asked["g-1"]; got != (pipeline.Redeliveries{Requests: 1}) {
		t.Errorf("recorded %+v, want the one request GitHub accepted", got)
	}
}

// A request that fails does not hold up the deliveries after it: they are
// asked for in the same run, which then reports the failure and keeps the
// checkpoint, so that the next run asks again. Several failures in a row
// (GitHub unwell) stop the run.
func TestRedelivererGoesOnPastAFailedRequest(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	previous := now.Add(-30 * time.Minute).Format(time.RFC3339Nano)
	attempts := []hookAttempt{{id: 15, guid: "g-5", ago: time.Minute}, {id: 14, guid: "g-4", ago: 2 * time.Minute},
		{id: 13, guid: "g-3", ago: 3 * time.Minute}, {id: 12, guid: "g-2", ago: 4 * time.Minute}, {id: 11, guid: "g-1", ago: 5 * time.Minute}}
	tests := map[string]struct {
		failPostOf map[int64]int
		wantAsked  []int64
		wantN      int
	}{
		"one fails": {failPostOf: map[int64]int{14: http.StatusBadGateway},
			wantAsked: []int64{11, 12, 13, 14, 15}, wantN: 4},
		"failures apart": {failPostOf: map[int64]int{15: http.StatusInternalServerError, 14: http.StatusBadGateway, 12: http.StatusServiceUnavailable},
			wantAsked: []int64{11, 12, 13, 14, 15}, wantN: 2},
		"three in a row: the run stops": {failPostOf: map[int64]int{14: http.StatusBadGateway, 13: http.StatusBadGateway, 12: http.StatusBadGateway},
			wantAsked: []int64{11, 12, 13, 14}, wantN: 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			gh := newHookDeliveries(t, now, 100, attempts...)
			gh.failPostOf = tc.failPostOf
			db := openStore(t)
			if err := db.SetSetting(context.Background(), "redelivery.checkpoint", previous); err != nil {
				t.Fatal(err)
			}
			r := &githubapp.Redeliverer{App: githubClientFor(t, gh.URL), Store: db, Window: time.Hour, MaxAttempts: 3,
				Now: func() time.Time { return now }, Sleep: skipWait, Log: discardLog()}
			n, err := r.RunOnce(context.Background())
			if err == nil || n != tc.wantN {
				t.Errorf("RunOnce = %d, %v; want %d and an error", n, err, tc.wantN)
			}
			if got := gh.Redelivered(); !slices.Equal(got, tc.wantAsked) {
				t.Errorf("asked to redeliver %v, want %v", got, tc.wantAsked)
			}
			if cp, _, _ := db.Setting(context.Background(), "redelivery.checkpoint"); cp != previous {
				t.Errorf("checkpoint moved to %q after a run with failed requests", cp)
			}
			asked, err := db.RedeliveriesRequested(context.Background(), []string{"g-1", "g-2", "g-3", "g-4", "g-5"})
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range attempts {
				want := 0
				if slices.Contains(tc.wantAsked, a.id) && tc.failPostOf[a.id] == 0 {
					want = 1
				}
				if got := asked[a.guid].Requests; got != want {
					t.Errorf("%s: %d requests recorded, want %d", a.guid, got, want)
				}
			}
		})
	}
}

// A rate limit stops the run at once (GitHub asked to wait), whether
// lastmile's transport or go-github reports it; the request it refused is
// not counted.
func TestRedelivererStopsAtARateLimit(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	clients := map[string]func(t *testing.T, url string) *github.Client{
		"go-github alone": githubClientFor,
		"lastmile's transport": func(t *testing.T, baseURL string) *github.Client {
			tr := &githubapp.Transport{Sleep: func(context.Context, time.Duration) error { return nil }}
			gh := github.NewClient(&http.Client{Transport: tr})
			gh.BaseURL = githubClientFor(t, baseURL).BaseURL
			return gh
		},
	}
	for name, client := range clients {
		t.Run(name, func(t *testing.T) {
			gh := newHookDeliveries(t, now, 100,
				hookAttempt{id: 12, guid: "g-2", ago: time.Minute}, hookAttempt{id: 11, guid: "g-1", ago: 2 * time.Minute})
			gh.limitPost = true
			db := openStore(t)
			r := &githubapp.Redeliverer{App: client(t, gh.URL), Store: db, Window: time.Hour, MaxAttempts: 3,
				Now: func() time.Time { return now }, Sleep: skipWait, Log: discardLog()}
			n, err := r.RunOnce(context.Background())
			if err == nil || n != 0 {
				t.Errorf("RunOnce = %d, %v; want 0 and a rate-limit error", n, err)
			}
			if got := gh.Redelivered(); !slices.Equal(got, []int64{11}) {
				t.Errorf("asked to redeliver %v, want [11] (the oldest) and no more after the rate limit", got)
			}
			asked, err := db.RedeliveriesRequested(context.Background(), []string{"g-1", "g-2"})
			if err != nil {
				t.Fatal(err)
			}
			if asked["g-2"].Requests != 0 || asked["g-2"].GaveUp || asked["g-1"].Requests != 0 {
				t.Errorf("recorded %+v after the rate limit, want no request counted", asked)
			}
			if _, ok, _ := db.Setting(context.Background(), "redelivery.checkpoint"); ok {
				t.Error("checkpoint stored after a run the rate limit stopped")
			}
		})
	}
}

// gate stands in front of lastmile's webhook endpoint and decides what
// GitHub sees: the real answer, an outage, or a failure after the delivery
// was stored (a lost answer).
type gate struct {
	hook http.Handler
	mu   sync.Mutex
	mode string // "up", "down", "stored-but-failed"
}

func (g *gate) set(mode string) { g.mu.Lock(); g.mode = mode; g.mu.Unlock() }

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	mode := g.mode
	g.mu.Unlock()
	switch mode {
	case "down":
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	case "stored-but-failed":
		rec := httptest.NewRecorder()
		g.hook.ServeHTTP(rec, r)
		http.Error(w, "proxy timeout", http.StatusGatewayTimeout)
	default:
		g.hook.ServeHTTP(w, r)
	}
}

// simRedelivery is the simulator delivering to lastmile's webhook endpoint
// through a gate, with lastmile's store and the App's client.
type simRedelivery struct {
	t    *testing.T
	ctx  context.Context
	sim  *simulator.Simulator
	db   *storage.DB
	gate *gate
	app  *github.Client
}

// newSimRedelivery starts it, the simulator on clock (nil: the real one),
// with one installation and its repository acme/shop.
func newSimRedelivery(t *testing.T, clock func() time.Time) *simRedelivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	const secret = "sim-webhook-secret"
	// The redeliverer's traffic is checked against GitHub's REST description.
	sim := simulator.New(simulator.Options{AppID: 4242, WebhookSecret: secret, Clock: clock, Wrap: oasvalidate.Wrap(t)})
	t.Cleanup(func() { sim.Close() })
	apiURL, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	db := openStore(t)
	g := &gate{hook: githubapp.NewWebhook(secret, db, githubapp.Handles, &rejections{}, nil, discardLog()), mode: "up"}
	lastmile := httptest.NewServer(g)
	t.Cleanup(lastmile.Close)
	sim.SetWebhookURL(lastmile.URL + "/webhook")
	inst := sim.CreateInstallation("acme", "Organization")
	sim.CreateRepo(inst, "acme/shop", simulator.RepoOptions{})
	clients, err := githubapp.NewClients(apiURL, sim.AppID(), simKey(t, sim), &githubapp.Transport{})
	if err != nil {
		t.Fatal(err)
	}
	return &simRedelivery{t: t, ctx: ctx, sim: sim, db: db, gate: g, app: clients.App()}
}

// push pushes with the gate in mode and returns the push delivery's GUID.
func (w *simRedelivery) push(mode, msg string) string {
	w.t.Helper()
	w.gate.set(mode)
	defer w.gate.set("up")
	from := len(w.sim.Deliveries())
	w.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: msg, Files: map[string]string{"f.txt": msg}})
	d, err := w.sim.WaitForDelivery(w.ctx, from, "push", "")
	if err != nil {
		w.t.Fatal(err)
	}
	return d.GUID
}

// attempts returns the delivery attempts of each GUID.
func (w *simRedelivery) attempts() map[string][]simulator.Delivery {
	out := map[string][]simulator.Delivery{}
	for _, d := range w.sim.Deliveries() {
		out[d.GUID] = append(out[d.GUID], d)
	}
	return out
}

func TestRedelivererAgainstTheSimulator(t *testing.T) {
	w := newSimRedelivery(t, nil)
	ctx, sim, db := w.ctx, w.sim, w.db
	missed1 := w.push("down", "one")
	missed2 := w.push("down", "two")
	storedOnly := w.push("stored-but-failed", "three")
	fine := w.push("up", "four")

	known, err := db.KnownDeliveries(ctx, []string{missed1, missed2, storedOnly, fine})
	if err != nil {
		t.Fatal(err)
	}
	if known[missed1] || known[missed2] || !known[storedOnly] || !known[fine] {
		t.Fatalf("setup: inbox knows %v", known)
	}

	r := &githubapp.Redeliverer{App: w.app, Store: db, Window: 72 * time.Hour, MaxAttempts: 5,
		Now: time.Now, Sleep: skipWait, Log: discardLog()}
	n, err := r.RunOnce(ctx)
	if err != nil {
		t.Fatalf("RunOnce: %v", err)
	}
	if n != 2 {
		t.Errorf("RunOnce asked for %d redeliveries, want 2", n)
	}
	if err := sim.WaitFor(ctx, func(s *simulator.Simulator) bool { return len(s.Deliveries()) == 6 && s.Idle() }); err != nil {
		t.Fatalf("the redeliveries did not arrive: %v (%d deliveries)", err, len(sim.Deliveries()))
	}
	attempts := w.attempts()
	for _, guid := range []string{missed1, missed2} {
		a := attempts[guid]
		if len(a) != 2 || !a[1].Redelivery || !a[1].OK() {
			t.Errorf("%s: attempts %+v, want a successful redelivery with the same GUID", guid, a)
		}
		if _, err := db.GetDelivery(ctx, guid); err != nil {
			t.Errorf("%s is not in the inbox after its redelivery: %v", guid, err)
		}
	}
	for _, guid := range []string{storedOnly, fine} {
		if len(attempts[guid]) != 1 {
			t.Errorf("%s was redelivered (%d attempts) although lastmile has it", guid, len(attempts[guid]))
		}
	}
	if got := sim.CountRequests("POST", "/app/hook/deliveries/*/attempts"); got != 2 {
		t.Errorf("%d redelivery requests reached GitHub, want 2", got)
	}

	// A second run finds nothing left to do.
	if n, err := r.RunOnce(ctx); err != nil || n != 0 {
		t.Errorf("second RunOnce = %d, %v; want 0", n, err)
	}
}

// The simulator redelivers what failed in the past 3 days and lists older
// deliveries too: lastmile's own window decides what it asks for. Within
// GitHub's window, a shorter one of lastmile's leaves the older deliveries
// alone; a longer one (GitHub Enterprise Server's 7 days, set against
// github.com) asks for them, and GitHub's refusal (422) of the one past
// its window is recorded as given up, the others redelivered.
func TestRedelivererWindowAgainstTheSimulator(t *testing.T) {
	for name, tc := range map[string]struct {
		window    time.Duration
		requested int  // redeliveries GitHub accepted
		asked     int  // requests that reached GitHub
		hoursOld  bool // the delivery of two hours ago is redelivered
	}{
		"lastmile's window of 1h":   {window: time.Hour, requested: 1, asked: 1},
		"lastmile's window of 168h": {window: 168 * time.Hour, requested: 2, asked: 3, hoursOld: true},
	} {
		t.Run(name, func(t *testing.T) {
			// The deliveries are made in the past, by the simulator's
			// clock behind the real one; lastmile runs on the real clock.
			var behind atomic.Int64
			w := newSimRedelivery(t, func() time.Time { return time.Now().Add(-time.Duration(behind.Load())) })
			behind.Store(int64(simulator.RedeliveryWindow + time.Hour))
			daysOld := w.push("down", "four days ago")
			behind.Store(int64(2 * time.Hour))
			hoursOld := w.push("down", "two hours ago")
			behind.Store(0)
			fresh := w.push("down", "now")

			r := &githubapp.Redeliverer{App: w.app, Store: w.db, Window: tc.window, MaxAttempts: 5,
				Now: time.Now, Sleep: skipWait, Log: discardLog()}
			n, err := r.RunOnce(w.ctx)
			if err != nil || n != tc.requested {
				t.Fatalf("RunOnce = %d, %v; want %d", n, err, tc.requested)
			}
			if got := w.sim.CountRequests("POST", "/app/hook/deliveries/*/attempts"); got != tc.asked {
				t.Errorf("%d redelivery requests reached GitHub, want %d", got, tc.asked)
			}
			if err := w.sim.WaitIdle(w.ctx); err != nil {
				t.Fatal(err)
			}
			attempts := w.attempts()
			for guid, want := range map[string]bool{fresh: true, hoursOld: tc.hoursOld, daysOld: false} {
				if redelivered := len(attempts[guid]) == 2 && attempts[guid][1].OK(); redelivered != want {
					t.Errorf("%s: attempts %+v, redelivered %v, want %v", guid, attempts[guid], redelivered, want)
				}
			}
			asked, err := w.db.RedeliveriesRequested(w.ctx, []string{daysOld})
			if err != nil {
				t.Fatal(err)
			}
			if gaveUp := tc.asked > tc.requested; asked[daysOld].GaveUp != gaveUp {
				t.Errorf("the delivery past GitHub's window: recorded %+v, want given up %v", asked[daysOld], gaveUp)
			}
		})
	}
}

func simKey(t *testing.T, sim *simulator.Simulator) *rsa.PrivateKey {
	t.Helper()
	block, _ := pem.Decode(sim.AppPrivateKeyPEM())
	if block == nil {
		t.Fatal("simulator key is not PEM")
	}
	key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// A cause that refuses every attempt while lastmile runs (a wrong webhook
// secret, a broken proxy) uses up the attempts of the deliveries it
// refused within the hour; once it is fixed, later runs leave them alone,
// but the run at start — a restart follows such a fix — asks for each of
// them once more, and the push reaches the inbox.
func TestTheRunAtStartAsksAgainForWhatWasGivenUp(t *testing.T) {
	w := newSimRedelivery(t, nil)
	w.gate.set("down")
	from := len(w.sim.Deliveries())
	w.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "m", Files: map[string]string{"f.txt": "m"}})
	d, err := w.sim.WaitForDelivery(w.ctx, from, "push", "")
	if err != nil {
		t.Fatal(err)
	}
	r := &githubapp.Redeliverer{App: w.app, Store: w.db, Window: 72 * time.Hour, MaxAttempts: 5,
		Now: time.Now, Sleep: skipWait, Log: discardLog()}
	for run := 1; run <= 5; run++ { // ten-minute runs while deliveries are refused
		if _, err := r.RunOnce(w.ctx); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if err := w.sim.WaitIdle(w.ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(w.attempts()[d.GUID]); n != 5 {
		t.Fatalf("setup: %d attempts of the push, want 5 (the cap)", n)
	}
	w.gate.set("up") // fixed
	if n, err := r.RunOnce(w.ctx); err != nil || n != 0 {
		t.Errorf("a run after the cap: %d requests, %v; want none", n, err)
	}
	n, err := r.RunAtStart(w.ctx)
	if err != nil || n != 1 {
		t.Fatalf("the run at start: %d requests, %v; want 1", n, err)
	}
	if err := w.sim.WaitIdle(w.ctx); err != nil {
		t.Fatal(err)
	}
	if known, err := w.db.KnownDeliveries(w.ctx, []string{d.GUID}); err != nil || !known[d.GUID] {
		t.Errorf("the push given up on is not in the inbox after the run at start: %v %v", known, err)
	}
}

// A cause fixed long after it began (a wrong webhook secret for a night):
// the deliveries it refused and lastmile gave up on are older than the
// hour each run looks back, yet within GitHub's window; the run at start
// asks for them, from what the store kept of them — not for one given up
// on whose first attempt is past the window. Later runs do not.
func TestTheRunAtStartAsksAgainForWhatWasGivenUpLongBefore(t *testing.T) {
	now := time.Now().UTC()
	var refused []hookAttempt // newest first
	for i := 5; i >= 1; i-- { // g-1: five attempts, the cap
		refused = append(refused, hookAttempt{id: int64(10 + i), guid: "g-1", ago: time.Duration(60-10*i) * time.Minute})
	}
	refused = append(refused, hookAttempt{id: 9, guid: "g-old", ago: 71 * time.Hour}) // g-old: given up before
	gh := newHookDeliveries(t, now, 100, refused...)
	db := openStore(t)
	ctx := context.Background()
	r := &githubapp.Redeliverer{App: githubClientFor(t, gh.URL), Store: db, Window: 72 * time.Hour, MaxAttempts: 5,
		Now: func() time.Time { return now }, Sleep: skipWait, Log: discardLog()}
	if err := db.RedeliveryRequested(ctx, pipeline.HookDelivery{GUID: "g-old", AttemptID: 9, Event: "push", FirstAttempt: now.Add(-71 * time.Hour)},
		true, now, now.Add(-72*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, err := r.RunOnce(ctx); err != nil || n != 0 {
		t.Fatalf("setup: the first run: %d requests, %v; want none (g-1 at its cap, g-old given up)", n, err)
	}
	// Three hours later: runs every ten minutes since, the listing's look
	// back an hour.
	gh.mu.Lock()
	gh.now = now.Add(3 * time.Hour)
	for i := range gh.attempts {
		gh.attempts[i].ago += 3 * time.Hour
	}
	gh.mu.Unlock()
	now = now.Add(3 * time.Hour)
	for range 2 {
		if n, err := r.RunOnce(ctx); err != nil || n != 0 {
			t.Fatalf("a run: %d requests, %v; want none", n, err)
		}
	}
	if got := gh.Redelivered(); len(got) != 0 {
		t.Fatalf("setup: asked to redeliver %v", got)
	}
	n, err := r.RunAtStart(ctx)
	if err != nil || n != 1 {
		t.Fatalf("the run at start: %d requests, %v; want 1", n, err)
	}
	if got := gh.Redelivered(); !slices.Equal(got, []int64{15}) {
		t.Errorf("asked to redeliver attempts %v, want [15] (g-1's latest; g-old's first attempt is past the window)", got)
	}
	if n, err := r.RunOnce(ctx); err != nil || n != 0 {
		t.Errorf("a run after the check at start: %d requests, %v; want none", n, err)
	}
	// The next process asks again at its start (the redelivery failed:
	// g-1 is not in the inbox) — until GitHub refuses it for good.
	restart := func() int {
		t.Helper()
		r2 := &githubapp.Redeliverer{App: r.App, Store: db, Window: r.Window, MaxAttempts: 5,
			Now: func() time.Time { return now }, Sleep: skipWait, Log: discardLog()}
		n, err := r2.RunAtStart(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	gh.mu.Lock()
	gh.failPostOf = map[int64]int{15: http.StatusUnprocessableEntity}
	gh.mu.Unlock()
	if n := restart(); n != 0 || len(gh.Redelivered()) != 2 {
		t.Errorf("the next start: %d accepted, attempts asked %v; want g-1 asked, refused", n, gh.Redelivered())
	}
	if restart(); len(gh.Redelivered()) != 2 {
		t.Errorf("a start after GitHub refused g-1 for good asked again: %v", gh.Redelivered())
	}
}

// A delivery with an attempt that succeeded is not asked for again, whether
// that attempt came after its failures (a redelivery) or before (one asked
// for by hand that failed): GitHub's GUIDs (UUIDs, kept as 16 bytes) and
// any others alike. Only the delivery that never succeeded is.
func TestRedelivererSkipsDeliveriesThatSucceeded(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	const (
		fixedLater  = "0b989ba4-242f-11e5-81e1-c7b6966d2516"
		fixedBefore = "0B989BA4-242F-11E5-81E1-C7B6966D2517" // upper case: the same UUID syntax
		never       = "0b989ba4-242f-11e5-81e1-c7b6966d2518"
	)
	gh := newHookDeliveries(t, now, 2, // newest first, two a page
		hookAttempt{id: 16, guid: fixedLater, ago: time.Minute, ok: true},
		hookAttempt{id: 15, guid: fixedBefore, ago: 2 * time.Minute},
		hookAttempt{id: 14, guid: "not-a-uuid", ago: 3 * time.Minute, ok: true},
		hookAttempt{id: 13, guid: fixedLater, ago: 4 * time.Minute},
		hookAttempt{id: 12, guid: never, ago: 5 * time.Minute},
		hookAttempt{id: 11, guid: "not-a-uuid", ago: 6 * time.Minute},
		hookAttempt{id: 10, guid: fixedBefore, ago: 7 * time.Minute, ok: true})
	db := openStore(t)
	r := &githubapp.Redeliverer{App: githubClientFor(t, gh.URL), Store: db, Window: time.Hour, MaxAttempts: 3,
		Now: func() time.Time { return now }, Sleep: skipWait, Log: discardLog()}
	if _, err := r.RunOnce(context.Background()); err != nil {
		t.Fatalf("RunOnce: %v", err)
	}
	if got := gh.Redelivered(); !slices.Equal(got, []int64{12}) {
		t.Errorf("asked to redeliver attempts %v, want only [12] (the delivery that never succeeded)", got)
	}
}

// givenUpAtStart is GitHub's list of deliveries with g-1, which failed
// five times, and more (listed first: newer), and a store in which an
// earlier run gave up on g-1 (the cap: 5 attempts); and a Redeliverer
// checking every interval, started with start (its Run), stopped when the
// test ends.
func givenUpAtStart(t *testing.T, more ...hookAttempt) (gh *hookDeliveries, start func()) {
	t.Helper()
	now := time.Now().UTC()
	for i := 5; i >= 1; i-- {
		more = append(more, hookAttempt{id: int64(10 + i), guid: "g-1", ago: time.Duration(60-10*i) * time.Minute})
	}
	gh = newHookDeliveries(t, now, 100, more...)
	db := openStore(t)
	ctx := context.Background()
	if err := db.RedeliveryRequested(ctx, pipeline.HookDelivery{GUID: "g-1"}, true, now.Add(-5*time.Minute), now.Add(-72*time.Hour)); err != nil {
		t.Fatal(err)
	}
	r := &githubapp.Redeliverer{App: githubClientFor(t, gh.URL), Store: db, Window: 72 * time.Hour, MaxAttempts: 5,
		Interval: 10 * time.Millisecond, Now: time.Now, Sleep: skipWait, Log: discardLog()}
	return gh, func() {
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { r.Run(runCtx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
	}
}

// The check at start asks again for what earlier runs gave up on (what
// refused those deliveries may have been fixed by the restart). If GitHub
// fails that check, the next checks are checks at start, until one
// succeeds: the pass is not lost for the life of the process.
func TestRunAtStartIsTriedAgainUntilItSucceeds(t *testing.T) {
	gh, start := givenUpAtStart(t)
	gh.mu.Lock()
	gh.failList = true // GitHub is unwell the moment lastmile starts
	gh.mu.Unlock()
	start()
	waitUntil(t, "the check at start, failing", 10*time.Second, func() bool { return len(gh.Cursors()) > 0 })
	gh.mu.Lock()
	gh.failList = false
	gh.mu.Unlock()
	waitUntil(t, "g-1, given up before the restart, asked for again", 10*time.Second, func() bool { return len(gh.Redelivered()) > 0 })
}

// A check at start made again because another request of it failed (g-2,
// which GitHub keeps failing) asks for a delivery given up in an earlier
// run (g-1) once in the process, not at every turn.
func TestRunAtStartAsksForAGivenUpDeliveryOnce(t *testing.T) {
	gh, start := givenUpAtStart(t, hookAttempt{id: 21, guid: "g-2", ago: 5 * time.Minute})
	gh.mu.Lock()
	gh.failPostOf = map[int64]int{21: http.StatusInternalServerError}
	gh.mu.Unlock()
	start()
	waitUntil(t, "five checks", 10*time.Second, func() bool { return len(gh.Cursors()) >= 5 })
	n := 0
	for _, id := range gh.Redelivered() {
		if id == 15 {
			n++
		}
	}
	if n != 1 {
		t.Errorf("g-1, given up in an earlier run, asked to be redelivered %d times in %d checks, want once", n, len(gh.Cursors()))
	}
}
