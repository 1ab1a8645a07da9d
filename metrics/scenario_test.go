package metrics

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync/atomic"
	"time"
)

// fakeSource serves a snapshot that a test can swap.
type fakeSource struct{ snap atomic.Pointer[Snapshot] }

func (f *fakeSource) MetricsSnapshot(context.Context) (*Snapshot, error) { return f.snap.Load(), nil }

// AddCounters adds flushed increments to the snapshot, as the database does.
func (f *fakeSource) AddCounters(_ context.Context, name string, deltas []Series) error {
	old := f.snap.Load()
	next := *old
	next.Counters = maps.Clone(old.Counters)
	list := slices.Clone(next.Counters[name])
	for _, d := range deltas {
		i := slices.IndexFunc(list, func(s Series) bool { return slices.Equal(s.Labels, d.Labels) })
		if i < 0 {
			list = append(list, d)
		} else {
			list[i].Value += d.Value
		}
	}
	next.Counters[name] = list
	f.snap.Store(&next)
	return nil
}

type nopSink struct{}

func (nopSink) AddCounters(context.Context, string, []Series) error { return nil }

// envScenario is one environment of a repository in the test scenario, with
// the observations lastmile's database would hold and the values the
// dashboards must show for them (worked out by hand from the buckets).
type envScenario struct {
	repo, env  string
	production bool

	deployments map[string]float64 // by state
	lead        []float64          // lead times of the commits deployed
	duration    []float64
	approval    []float64
	restore     []float64
	noRestore   bool      // a time-to-restore histogram that observed nothing
	lastSuccess time.Time // zero: never

	successRate             float64
	leadP50, leadP90        float64
	durationP50             float64
	durationP90             float64
	approvalP50             float64
	approvalP90             float64
	restoreP50              float64
	hasLead, hasDuration    bool
	hasApproval, hasRestore bool
}

// The scenario. acme/shop deploys to staging then production; acme/blog.site
// (a name with a regex metacharacter) to preview then live; acme/docs to
// preview then staging, its last environment and so its production one: the
// dashboards must not take acme/shop's staging for a production environment
// because acme/docs' staging is one.
func scenario(now time.Time) []*envScenario {
	at := func(d time.Duration) time.Time { return now.Add(-d).Truncate(time.Second) }
	return []*envScenario{
		{
			repo: "acme/shop", env: "production", production: true,
			deployments: map[string]float64{"success": 2, "failure": 1, "error": 0},
			// Buckets ≤300: 1, ≤1800: 2, ≤3600: 3, ≤7200: 4. Median: rank 2 is
			// the top of (900, 1800]; p90: rank 3.6 is 60% into (3600, 7200].
			lead:        []float64{200, 1000, 2000, 5000},
			duration:    []float64{100, 200, 400}, // (60,120], (120,300], (300,600]
			approval:    []float64{1200},          // (600, 1800]
			restore:     []float64{5400},          // (3600, 7200]
			lastSuccess: at(3 * time.Hour),
			successRate: 2.0 / 3, leadP50: 1800, leadP90: 5760,
			durationP50: 210, durationP90: 510, approvalP50: 1200, approvalP90: 1680, restoreP50: 5400,
			hasLead: true, hasDuration: true, hasApproval: true, hasRestore: true,
		},
		{
			repo: "acme/shop", env: "staging",
			deployments: map[string]float64{"success": 3},
			lead:        []float64{100, 250}, // both in (60, 300]
			duration:    []float64{50},       // (30, 60]
			lastSuccess: at(4 * time.Hour),
			successRate: 1, leadP50: 180, leadP90: 276, durationP50: 45, durationP90: 57,
			hasLead: true, hasDuration: true,
		},
		{
			repo: "acme/blog.site", env: "live", production: true,
			deployments: map[string]float64{"success": 1, "failure": 0, "error": 1},
			lead:        []float64{100000}, // (86400, 129600]
			duration:    []float64{20},     // (15, 30]
			approval:    []float64{45},     // (30, 60]
			noRestore:   true,
			lastSuccess: at(26 * time.Hour),
			successRate: 0.5, leadP50: 108000, leadP90: 125280,
			durationP50: 22.5, durationP90: 28.5, approvalP50: 45, approvalP90: 57,
			hasLead: true, hasDuration: true, hasApproval: true,
		},
		{
			repo: "acme/blog.site", env: "preview",
			deployments: map[string]float64{"success": 1},
			lastSuccess: at(time.Hour),
			successRate: 1,
		},
		{
			repo: "acme/docs", env: "preview",
			deployments: map[string]float64{"success": 2},
			lastSuccess: at(50 * time.Hour),
			successRate: 1,
		},
		{
			repo: "acme/docs", env: "staging", production: true,
			deployments: map[string]float64{"success": 1, "failure": 1},
			lastSuccess: at(50 * time.Hour),
			successRate: 0.5,
		},
	}
}

// Operational part of the scenario (database side).
var (
	scenarioWebhooks = map[[2]string]float64{ // event, outcome
		{"push", "accepted"}: 5, {"push", "duplicate"}: 1, {"ping", "ping"}: 1,
		{"push", "unauthorized"}: 2, {"push", "too_large"}: 0, {"push", "ignored"}: 0,
	}
	scenarioGitHub = map[[2]string]float64{ // method, code
		{"GET", "200"}: 10, {"POST", "201"}: 2, {"GET", "502"}: 1, {"GET", "error"}: 1,
	}
	scenarioPending int64 = 3
	scenarioDead    int64 = 1
	scenarioOldest        = 2 * time.Minute // age of the oldest pending delivery at the start
	// acme/shop's deployment to production that no workflow run took up,
	// created that long before the start.
	scenarioAwaiting = 15 * time.Minute
)

// snapshot builds what the database holds. With observed false every series
// exists with zero counts: the state before anything happened, which lets
// increase() and rate() count the first events (a series that appears with
// a non-zero value has no increase to count).
func snapshot(envs []*envScenario, start time.Time, observed bool) *Snapshot {
	s := &Snapshot{
		Counters:   map[string][]Series{},
		Gauges:     map[string][]Series{},
		Histograms: map[string][]HistogramSeries{},
	}
	val := func(v float64) float64 {
		if observed {
			return v
		}
		return 0
	}
	hist := func(name string, labels []string, obs []float64) {
		h := HistogramSeries{Labels: labels, Buckets: map[float64]uint64{}}
		if observed {
			for _, v := range obs {
				h.Buckets[BucketFor(name, v)]++
				h.Count++
				h.Sum += v
			}
		}
		s.Histograms[name] = append(s.Histograms[name], h)
	}
	for _, e := range envs {
		labels := []string{e.repo, e.env}
		prod := "false"
		if e.production {
			prod = "true"
		}
		s.Gauges[EnvironmentInfo] = append(s.Gauges[EnvironmentInfo],
			Series{Labels: []string{e.repo, e.env, prod}, Value: 1})
		s.Gauges[EnvironmentLiveSince] = append(s.Gauges[EnvironmentLiveSince],
			Series{Labels: labels, Value: float64(start.Add(-30 * 24 * time.Hour).Unix())})
		if !e.lastSuccess.IsZero() {
			s.Gauges[LastSuccess] = append(s.Gauges[LastSuccess], Series{Labels: labels, Value: float64(e.lastSuccess.Unix())})
		}
		for state, n := range e.deployments {
			s.Counters[DeploymentsTotal] = append(s.Counters[DeploymentsTotal],
				Series{Labels: []string{e.repo, e.env, state}, Value: val(n)})
		}
		if len(e.lead) > 0 {
			hist(LeadTime, labels, e.lead)
		}
		if len(e.duration) > 0 {
			hist(DeploymentDuration, labels, e.duration)
		}
		if len(e.approval) > 0 {
			hist(ApprovalWait, labels, e.approval)
		}
		if len(e.restore) > 0 || e.noRestore {
			hist(TimeToRestore, labels, e.restore)
		}
	}
	for k, n := range scenarioWebhooks {
		s.Counters[WebhookDeliveries] = append(s.Counters[WebhookDeliveries], Series{Labels: []string{k[0], k[1]}, Value: val(n)})
	}
	for k, n := range scenarioGitHub {
		s.Counters[GitHubRequests] = append(s.Counters[GitHubRequests], Series{Labels: []string{k[0], k[1]}, Value: val(n)})
	}
	if observed {
		s.InboxPending = scenarioPending
		s.InboxDead = scenarioDead
		s.OldestPendingSince = start.Add(-scenarioOldest)
		s.AwaitingRun = []Series{{Labels: []string{"acme/shop", "production"}, Value: float64(start.Add(-scenarioAwaiting).Unix())}}
	}
	return s
}

// newScenarioMetrics returns a registry serving the scenario before
// anything happened, and a function that makes it happen: the database
// snapshot turns to the observed one and this process handles deliveries,
// refuses one and calls GitHub.
func newScenarioMetrics(envs []*envScenario, start time.Time) (*Metrics, func()) {
	src := &fakeSource{}
	src.snap.Store(snapshot(envs, start, false))
	m := New(src, src, "test-version", slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, r := range []string{"done", "retry", "dead"} {
		m.handled.WithLabelValues("push", r) // zero series, for rate() to count the first ones
	}
	m.handling.WithLabelValues("push")
	m.GitHubRateLimit("42", "core", 4000, 5000, time.Now().Add(time.Hour))
	m.GitHubRateLimit("43", "core", 100, 5000, time.Now().Add(-time.Minute)) // spent, but refilled since: stale
	happen := func() {
		for range 4 {
			m.DeliveryHandled("push", "done", 20*time.Millisecond) // (0.01, 0.025]
		}
		m.DeliveryHandled("push", "retry", 2*time.Second) // (1, 2.5]
		src.snap.Store(snapshot(envs, start, true))
		m.WebhookRejected("push", "too_large") // flushed by the next scrape
		m.GitHubRequest("GET", "200")
	}
	return m, happen
}
