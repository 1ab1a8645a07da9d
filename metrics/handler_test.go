package metrics

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// countingSource serves a snapshot and counts the reads.
type countingSource struct {
	snap  *Snapshot
	reads int
}

func (c *countingSource) MetricsSnapshot(context.Context) (*Snapshot, error) {
	c.reads++
	return c.snap, nil
}

func handlerSnapshot(version int64, successes float64) *Snapshot {
	return &Snapshot{
		RollupsVersion: version,
		Counters: map[string][]Series{
			DeploymentsTotal:  {{Labels: []string{"acme/shop", "production", "success"}, Value: successes}},
			WebhookDeliveries: {{Labels: []string{"push", "accepted"}, Value: 7}},
			GitHubRequests:    {{Labels: []string{"POST", "201"}, Value: 3}},
		},
		Gauges: map[string][]Series{
			LastSuccess:     {{Labels: []string{"acme/shop", "production"}, Value: 1.7e9}},
			EnvironmentInfo: {{Labels: []string{"acme/shop", "production", "true"}, Value: 1}},
		},
		Histograms: map[string][]HistogramSeries{
			LeadTime: {{Labels: []string{"acme/shop", "production"}, Buckets: map[float64]uint64{300: 1, 7200: 2}, Count: 3, Sum: 9000}},
		},
		InboxPending: 2,
	}
}

// samples returns the exposition's sample lines, sorted, without the
// process's own (which move between two scrapes).
func samples(t *testing.T, body string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "lastmile_") && !strings.HasPrefix(line, "lastmile_delivery_handling") {
			out = append(out, line)
		}
	}
	sort.Strings(out)
	return out
}

func scrape(t *testing.T, h http.Handler, gz bool) string {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if gz {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body := io.Reader(rec.Body)
	if gz {
		if rec.Header().Get("Content-Encoding") != "gzip" {
			t.Fatalf("no gzip answer: %v", rec.Header())
		}
		zr, err := gzip.NewReader(rec.Body)
		if err != nil {
			t.Fatal(err)
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHandlerServesWhatTheRegistryHolds(t *testing.T) {
	src := &countingSource{snap: handlerSnapshot(1, 2)}
	m := New(src, nopSink{}, "test", slog.New(slog.DiscardHandler))
	full := httptest.NewRecorder()
	promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{}).ServeHTTP(full, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	want := strings.Join(samples(t, full.Body.String()), "\n")
	if !strings.Contains(want, `lastmile_deployments_total{environment="production",repository="acme/shop",state="success"} 2`) {
		t.Fatalf("the registry lacks the deployments:\n%s", want)
	}
	for _, gz := range []bool{false, true} {
		if got := strings.Join(samples(t, scrape(t, m.Handler(), gz)), "\n"); got != want {
			t.Errorf("gzip %v: the handler serves\n%s\n\nthe registry holds\n%s", gz, got, want)
		}
	}
}

func TestHandlerRendersTheRollupsAgainOnlyWhenTheyChange(t *testing.T) {
	src := &countingSource{snap: handlerSnapshot(1, 2)}
	m := New(src, nopSink{}, "test", slog.New(slog.DiscardHandler))
	h := m.Handler()
	first := scrape(t, h, true)
	// Same version: the rendered text is reused, even if (in this fake) the
	// numbers behind it changed.
	src.snap = handlerSnapshot(1, 5)
	if again := scrape(t, h, true); !strings.Contains(again, `state="success"} 2`) || strings.Contains(again, `state="success"} 5`) {
		t.Errorf("re-rendered without a new version:\n%s", again)
	}
	src.snap = handlerSnapshot(2, 5)
	if next := scrape(t, h, false); !strings.Contains(next, `state="success"} 5`) {
		t.Errorf("not re-rendered for a new version:\n%s", next)
	}
	if !strings.Contains(first, "# TYPE lastmile_deployment_lead_time_seconds histogram") ||
		!strings.Contains(first, "lastmile_inbox_pending 2") {
		t.Errorf("exposition:\n%s", first)
	}
}

// bigSnapshot has every delivery series of repos repositories with three
// environments each.
func bigSnapshot(repos int) *Snapshot {
	s := &Snapshot{Counters: map[string][]Series{}, Gauges: map[string][]Series{}, Histograms: map[string][]HistogramSeries{}}
	for r := range repos {
		repo := "acme/svc-" + strings.Repeat("x", 3) + string(rune('a'+r%26)) + string(rune('a'+r/26))
		for _, env := range []string{"test", "staging", "production"} {
			for _, st := range []string{"success", "failure", "error"} {
				s.Counters[DeploymentsTotal] = append(s.Counters[DeploymentsTotal], Series{Labels: []string{repo, env, st}, Value: 1000})
			}
			s.Gauges[LastSuccess] = append(s.Gauges[LastSuccess], Series{Labels: []string{repo, env}, Value: 1.7e9})
			s.Gauges[EnvironmentInfo] = append(s.Gauges[EnvironmentInfo], Series{Labels: []string{repo, env, "false"}, Value: 1})
			for _, name := range []string{LeadTime, DeploymentDuration, ApprovalWait, TimeToRestore} {
				b := map[float64]uint64{}
				for _, le := range Buckets(name) {
					b[le] = 10
				}
				s.Histograms[name] = append(s.Histograms[name], HistogramSeries{Labels: []string{repo, env}, Buckets: b, Count: 200, Sum: 1e6})
			}
		}
	}
	return s
}

// BenchmarkScrape measures a /metrics scrape (gzip, as Prometheus asks)
// with 50 repositories × 3 environments: when the rollups have not changed
// since the last scrape, and when they have (re-rendered).
//
//	go test ./metrics -run '^$' -bench Scrape
func BenchmarkScrape(b *testing.B) {
	src := &countingSource{snap: bigSnapshot(50)}
	m := New(src, nopSink{}, "bench", slog.New(slog.DiscardHandler))
	h := m.Handler()
	get := func() {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		req.Header.Set("Accept-Encoding", "gzip")
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	b.Run("unchanged", func(b *testing.B) {
		for b.Loop() {
			get()
		}
	})
	b.Run("changed", func(b *testing.B) {
		for b.Loop() {
			src.snap.RollupsVersion++
			get()
		}
	})
}

// Each histogram's buckets span what its metric measures: lead time and
// time to restore minutes to weeks, durations and approval waits seconds to
// the 30 days GitHub lets a deployment wait for its reviewers (a
// deployment's duration includes that wait).
func TestBucketsSpanWhatTheyMeasure(t *testing.T) {
	const day = 86400.0
	for _, tc := range []struct {
		name string
		v    float64
		want float64
	}{
		{LeadTime, 45, 60},
		{LeadTime, 20 * day, 21 * day},
		{LeadTime, 29 * day, 30 * day},
		{TimeToRestore, 31 * day, math.Inf(1)},
		{DeploymentDuration, 0.5, 1},
		{DeploymentDuration, 8 * day, 14 * day},
		{DeploymentDuration, 29 * day, 30 * day},
		{DeploymentDuration, 31 * day, math.Inf(1)},
		{ApprovalWait, 3, 5},
		{ApprovalWait, 10 * day, 14 * day},
		{ApprovalWait, 29 * day, 30 * day},
		{ApprovalWait, 31 * day, math.Inf(1)},
	} {
		if got := BucketFor(tc.name, tc.v); got != tc.want {
			t.Errorf("%s: %v s falls in le=%v, want le=%v", tc.name, tc.v, got, tc.want)
		}
	}
}

// From 8 hours on, where most lead times and restores of teams that deploy
// daily to weekly fall, no bound of lead time and time to restore is more
// than 1.5 times the one before (histogram_quantile interpolates within a
// bucket, and a manager reads its median); each bucket set grows.
func TestLongBucketsAreFineFromHoursToWeeks(t *testing.T) {
	for _, set := range [][]float64{LongBuckets, ShortBuckets} {
		for i := 1; i < len(set); i++ {
			if set[i] <= set[i-1] {
				t.Errorf("bounds %v then %v: not growing", set[i-1], set[i])
			}
		}
	}
	for i := 1; i < len(LongBuckets); i++ {
		if lo, hi := LongBuckets[i-1], LongBuckets[i]; lo >= 8*3600 && hi > 1.5*lo {
			t.Errorf("lead time bounds %v then %v: more than 1.5 times", lo, hi)
		}
	}
}

// failingSource is a database that cannot be read.
type failingSource struct{ reads int }

func (f *failingSource) MetricsSnapshot(context.Context) (*Snapshot, error) {
	f.reads++
	return nil, errors.New("database is locked")
}

// A scrape reads the database once (each failed read counts in
// lastmile_metrics_source_errors_total, which counts scrapes): the
// delivery part of a scrape shows the snapshot its live part read.
func TestScrapeReadsTheDatabaseOnce(t *testing.T) {
	src := &failingSource{}
	m := New(src, nopSink{}, "test", slog.New(slog.DiscardHandler))
	for range 3 {
		scrape(t, m.Handler(), false)
	}
	if src.reads != 3 { // each failed read is counted
		t.Errorf("3 scrapes read the database %d times, want 3", src.reads)
	}
}

// Delivery metrics the registry refuses (two series with one label set,
// from a source that lets them through) are missing from the scrape, and
// that is not silent: each such scrape counts in
// lastmile_metrics_source_errors_total, that scrape already, and is
// logged. So is a database that cannot be read.
func TestUnrenderedDeliveryMetricsAreCountedAndLogged(t *testing.T) {
	dup := handlerSnapshot(1, 2)
	dup.Gauges[LastSuccess] = append(dup.Gauges[LastSuccess], Series{Labels: []string{"acme/shop", "production"}, Value: 1.6e9})
	for _, tc := range []struct {
		name   string
		source Source
		log    string
	}{
		{"duplicate series", &countingSource{snap: dup}, "was collected before with the same name and label values"},
		{"database not read", &failingSource{}, "database is locked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logged strings.Builder
			m := New(tc.source, nopSink{}, "test", slog.New(slog.NewTextHandler(&logged, nil)))
			for i := 1; i <= 2; i++ {
				body := scrape(t, m.Handler(), i == 2)
				if want := fmt.Sprintf("lastmile_metrics_source_errors_total %d\n", i); !strings.Contains(body, want) {
					t.Errorf("scrape %d lacks %q:\n%s", i, want, body)
				}
				if strings.Contains(body, DeploymentsTotal) {
					t.Errorf("scrape %d shows delivery metrics:\n%s", i, body)
				}
				if !strings.Contains(body, "lastmile_build_info") {
					t.Errorf("scrape %d lacks the live part:\n%s", i, body)
				}
			}
			if n := strings.Count(logged.String(), tc.log); n != 2 {
				t.Errorf("logged %d times %q, want 2:\n%s", n, tc.log, logged.String())
			}
		})
	}
}

// stalledWriter is a client that does not read its answer: its Write
// blocks until released.
type stalledWriter struct {
	header  http.Header
	writing chan struct{}
	release chan struct{}
	once    sync.Once
}

func (w *stalledWriter) Header() http.Header { return w.header }
func (w *stalledWriter) WriteHeader(int)     {}
func (w *stalledWriter) Write(b []byte) (int, error) {
	w.once.Do(func() { close(w.writing) })
	<-w.release
	return len(b), nil
}

// A client that does not read its answer holds no other scrape back.
func TestSlowClientDoesNotHoldOtherScrapes(t *testing.T) {
	m := New(&countingSource{snap: handlerSnapshot(1, 2)}, nopSink{}, "test", slog.New(slog.DiscardHandler))
	h := m.Handler()
	slow := &stalledWriter{header: http.Header{}, writing: make(chan struct{}), release: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(slow, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	}()
	defer func() { close(slow.release); <-done }()
	select {
	case <-slow.writing:
	case <-time.After(30 * time.Second):
		t.Fatal("the first scrape never wrote")
	}
	second := make(chan string, 1)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		second <- rec.Body.String()
	}()
	select {
	case body := <-second:
		if !strings.Contains(body, "lastmile_deployments_total") {
			t.Errorf("the second scrape:\n%s", body)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a scrape waited 30 s for a client that does not read its answer")
	}
}
