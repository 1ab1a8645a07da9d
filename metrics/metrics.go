// Package metrics exposes lastmile on /metrics. The delivery metrics
// (deployments, lead time, durations, approval wait, time to restore) and the
// webhook and GitHub request counters come from rollups kept in the database
// as events happen, so a scrape reads a few small tables however long the
// history is, the values survive restarts, and two processes reading one
// database report the same numbers. Process-local operational metrics (rate
// limit remaining, worker timings, build info) sit beside them.
//
// The package also holds the Grafana dashboards and Prometheus rules
// (dashboards/, rules/). It never touches the global Prometheus registry.
package metrics

import (
	"context"
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Names of the delivery metrics. They are a contract: dashboards and alerts
// depend on them.
const (
	DeploymentsTotal      = "lastmile_deployments_total"
	LeadTime              = "lastmile_deployment_lead_time_seconds"
	DeploymentDuration    = "lastmile_deployment_duration_seconds"
	ApprovalWait          = "lastmile_approval_wait_seconds"
	TimeToRestore         = "lastmile_time_to_restore_seconds"
	LastSuccess           = "lastmile_last_success_timestamp_seconds"
	EnvironmentInfo       = "lastmile_environment_info"
	EnvironmentLiveSince  = "lastmile_environment_live_since_timestamp_seconds"
	WebhookDeliveries     = "lastmile_webhook_deliveries_total"
	GitHubRequests        = "lastmile_github_requests_total"
	InboxPending          = "lastmile_inbox_pending"
	InboxDead             = "lastmile_inbox_dead"
	InboxOldestPendingAge = "lastmile_inbox_oldest_pending_age_seconds"
	AwaitingRunSince      = "lastmile_deployment_awaiting_run_since_timestamp_seconds"
)

// Bucket sets. Lead time and time to restore span minutes to weeks;
// durations and approval waits seconds to hours, with a tail to 30 days: a
// review may wait over a weekend, and as long as GitHub lets a deployment
// wait for its reviewers — which a deployment's duration includes.
// histogram_quantile interpolates within a bucket, so the median and p90 a
// dashboard shows are off by up to the bucket's width: between 8 hours and
// 30 days, where most lead times of teams that deploy daily to weekly fall,
// no bound is more than 1.5 times the one before (a 9-hour lead time reads
// as at most 12 hours, not 16). Bounds may be added between versions, never
// taken away: counts stored under a former set are rendered in the bounds
// of the current one (see cumulative).
var (
	LongBuckets = []float64{60, 300, 900, 1800, 3600, 7200, 14400, 28800, 43200, 64800, 86400, 129600, 172800,
		259200, 345600, 432000, 604800, 864000, 1209600, 1814400, 2592000}
	// ShortBuckets are for deployment durations and approval waits.
	ShortBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 43200, 86400, 172800, 259200,
		604800, 1209600, 2592000}
)

// Buckets returns the bucket upper bounds of a histogram metric.
func Buckets(name string) []float64 {
	switch name {
	case LeadTime, TimeToRestore:
		return LongBuckets
	default:
		return ShortBuckets
	}
}

// Series is one labelled value of a counter or gauge.
type Series struct {
	Labels []string
	Value  float64
}

// HistogramSeries is one labelled histogram: non-cumulative counts per
// bucket upper bound (math.Inf(1) for the overflow), with count and sum.
type HistogramSeries struct {
	Labels  []string
	Buckets map[float64]uint64
	Count   uint64
	Sum     float64
}

// Snapshot is what the database holds for a scrape, read in one transaction.
type Snapshot struct {
	Counters   map[string][]Series // by metric name
	Gauges     map[string][]Series
	Histograms map[string][]HistogramSeries

	// RollupsVersion changes whenever the delivery rollups (deployment
	// counters, histograms, environments) change.
	RollupsVersion int64

	InboxPending       int64
	InboxDead          int64
	OldestPendingSince time.Time // zero when nothing is pending

	// AwaitingRun is AwaitingRunSince's series (repository, environment;
	// unix seconds). Read at every change of the database, as the inbox:
	// a status or a run ends the wait without touching the rollups.
	AwaitingRun []Series
}

// Source reads the database's side of the metrics.
type Source interface {
	MetricsSnapshot(ctx context.Context) (*Snapshot, error)
}

// CounterSink persists counter increments.
type CounterSink interface {
	AddCounters(ctx context.Context, name string, deltas []Series) error
}

// Metrics is lastmile's metrics registry.
type Metrics struct {
	reg    *prometheus.Registry // everything (Registry)
	live   *prometheus.Registry // everything but the rollups, which Handler renders once per change
	source Source
	sink   CounterSink
	log    *slog.Logger

	mu      sync.Mutex
	pending map[string]map[string]*Series // unflushed counter increments: metric → label key → delta

	// flushing is held by Flush (exclusively) while increments move from
	// pending to the database, and by Collect (shared) while it reads both:
	// a scrape sees them in one place or the other, never in neither (a
	// drop Prometheus would take for a counter reset) nor both.
	flushing sync.RWMutex
	// Test hooks, if set: waitFlushing is called when a flush (read false)
	// or a scrape's read (read true) has to wait for another flush;
	// scrapeFlushed when a scrape has flushed and is about to read.
	waitFlushing  func(read bool)
	scrapeFlushed func()

	rendered renderedRollups
	// scrape serializes Handler's scrapes; delivery is the delivery part
	// of the scrape in hand (plain, gzipped), rendered from the snapshot
	// its live part read: one database read per scrape. Nil if that read
	// or the rendering failed.
	scrape   sync.Mutex
	delivery [2][]byte

	rateLimitRemaining *prometheus.GaugeVec
	rateLimitLimit     *prometheus.GaugeVec
	rateLimitReset     *prometheus.GaugeVec
	resets             map[[2]string]time.Time // quota, resource → reset of the window last seen (under mu)
	handled            *prometheus.CounterVec
	handling           *prometheus.HistogramVec
	scrapeErrors       prometheus.Counter
}

// Labels of the metrics this package emits from the database.
var labelNames = map[string][]string{
	DeploymentsTotal:     {"repository", "environment", "state"},
	LeadTime:             {"repository", "environment"},
	DeploymentDuration:   {"repository", "environment"},
	ApprovalWait:         {"repository", "environment"},
	TimeToRestore:        {"repository", "environment"},
	LastSuccess:          {"repository", "environment"},
	EnvironmentInfo:      {"repository", "environment", "production"},
	EnvironmentLiveSince: {"repository", "environment"},
	WebhookDeliveries:    {"event", "outcome"},
	GitHubRequests:       {"method", "code"},
	AwaitingRunSince:     {"repository", "environment"},
}

var help = map[string]string{
	DeploymentsTotal:      "Deployments (those lastmile created, and the jobs' own where a workflow that no deployment triggered, on push or by hand, owns the deployments and lastmile, their protection rule, approved the job) that reached success, failure or error, each counted once by its first outcome, and once more when a re-run ends otherwise: a failure then a success (or a success then a failure) counts once as each.",
	LeadTime:              "Per commit: time of the first successful deployment containing it in the environment minus the commit's timestamp, or the time of the push that brought it if that is earlier.",
	DeploymentDuration:    "Deployment created to terminal state.",
	ApprovalWait:          "Environment review requested to approved or rejected, in the pipeline's environments.",
	TimeToRestore:         "First failed deployment (its deploy had started) to the next successful one in the environment.",
	LastSuccess:           "Unix time of the latest successful deployment.",
	EnvironmentInfo:       "An environment of a repository's pipeline (always 1), while the configuration names it; production says whether it marks it as production.",
	EnvironmentLiveSince:  "Unix time since which the configuration names the environment (as production, for a production one), while it does.",
	WebhookDeliveries:     "Webhook deliveries received, by event and outcome.",
	GitHubRequests:        "HTTP calls made to the GitHub API, by method and status code (\"error\" when no response arrived).",
	InboxPending:          "Webhook deliveries waiting in the inbox to be handled.",
	InboxDead:             "Webhook deliveries parked as dead after too many failed attempts.",
	InboxOldestPendingAge: "Age of the oldest delivery waiting in the inbox (0 when empty), leaving out those waiting for their installation to be unsuspended.",
	AwaitingRunSince:      "Unix time at which lastmile created the oldest of its deployments to the environment that no workflow run has taken up (no status, no run linked, no run of the commit on the deployment event under way), in an active release: GitHub starts a deployment's runs within seconds, so one waiting for minutes most often finds no deploy workflow (on: deployment) at its commit.",
}

// New builds the registry. source provides the database's metrics; sink,
// which may be the same database, persists the counters this process adds.
func New(source Source, sink CounterSink, version string, log *slog.Logger) *Metrics {
	m := &Metrics{
		reg:     prometheus.NewRegistry(),
		live:    prometheus.NewRegistry(),
		source:  source,
		sink:    sink,
		log:     log,
		pending: map[string]map[string]*Series{},
		resets:  map[[2]string]time.Time{},
		rateLimitRemaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lastmile_github_rate_limit_remaining",
			Help: "Requests left in the current GitHub rate-limit window, as last reported by GitHub, per quota (installation ID, or app for the App's own calls) and resource.",
		}, []string{"installation", "resource"}),
		rateLimitLimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lastmile_github_rate_limit_limit",
			Help: "Size of the GitHub rate-limit window, as last reported by GitHub, per quota and resource.",
		}, []string{"installation", "resource"}),
		rateLimitReset: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lastmile_github_rate_limit_reset_timestamp_seconds",
			Help: "Unix time at which the GitHub rate-limit window refills, as last reported by GitHub, per quota and resource: after it, the remaining count shown is stale.",
		}, []string{"installation", "resource"}),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lastmile_deliveries_handled_total",
			Help: "Delivery handling attempts by the worker in this process, by event and result (done, ignored, retry, dead).",
		}, []string{"event", "result"}),
		handling: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lastmile_delivery_handling_seconds",
			Help:    "Time the worker spent handling one delivery, in this process.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"event"}),
		scrapeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lastmile_metrics_source_errors_total",
			Help: "Scrapes for which the database could not be read, or its delivery metrics could not be rendered: they are missing from that scrape.",
		}),
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "lastmile_build_info",
		Help: "Build information; the value is always 1.",
	}, []string{"version", "goversion", "revision"})
	buildInfo.WithLabelValues(version, runtime.Version(), revision()).Set(1)
	process := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo, m.rateLimitRemaining, m.rateLimitLimit, m.rateLimitReset, m.handled, m.handling,
	}
	m.reg.MustRegister(append(process, &dbCollector{m: m, rollups: true})...)
	m.live.MustRegister(append(process, &dbCollector{m: m})...)
	return m
}

func revision() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

// Registry gathers every metric, the delivery metrics included, in one
// registry (for tests and tools; Handler serves the live part and the
// delivery part rendered apart, from one database read).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// GitHubRequest counts one GitHub API call (githubapp.RequestObserver).
func (m *Metrics) GitHubRequest(method, code string) { m.add(GitHubRequests, []string{method, code}) }

// GitHubRateLimit records the rate-limit headers of a GitHub answer.
func (m *Metrics) GitHubRateLimit(quota, resource string, remaining, limit int, reset time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rateLimitRemaining.WithLabelValues(quota, resource).Set(float64(remaining))
	m.rateLimitLimit.WithLabelValues(quota, resource).Set(float64(limit))
	if !reset.IsZero() {
		m.rateLimitReset.WithLabelValues(quota, resource).Set(float64(reset.Unix()))
	}
	// The windows that have refilled since lastmile last called there say
	// nothing any more: they go, so that the series follow the quotas in
	// use (installations come and go).
	now := time.Now()
	for k, r := range m.resets {
		if r.Before(now) && k != [2]string{quota, resource} {
			m.rateLimitRemaining.DeleteLabelValues(k[0], k[1])
			m.rateLimitLimit.DeleteLabelValues(k[0], k[1])
			m.rateLimitReset.DeleteLabelValues(k[0], k[1])
			delete(m.resets, k)
		}
	}
	if !reset.IsZero() {
		m.resets[[2]string{quota, resource}] = reset
	}
}

// WebhookRejected counts a delivery refused before it was stored.
func (m *Metrics) WebhookRejected(event, outcome string) {
	m.add(WebhookDeliveries, []string{event, outcome})
}

// StartAtZero makes the series of a persistent counter (WebhookDeliveries,
// GitHubRequests) with the given label values exist at 0 from the next
// flush — the first scrape flushes first —, so that Prometheus sees each of
// them before its first increment: increase() and rate() count nothing for
// a series that first appears at 1, and an alert on the first refused
// webhook would never fire. Series already counted keep their value.
func (m *Metrics) StartAtZero(name string, series [][]string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, labels := range series {
		m.addLocked(name, Series{Labels: slices.Clone(labels)})
	}
}

// DeliveryHandled records one handling attempt by the worker.
func (m *Metrics) DeliveryHandled(event, result string, took time.Duration) {
	m.handled.WithLabelValues(event, result).Inc()
	m.handling.WithLabelValues(event).Observe(took.Seconds())
}

func (m *Metrics) add(name string, labels []string) {
	key := labelKey(labels)
	m.mu.Lock()
	defer m.mu.Unlock()
	byKey := m.pending[name]
	if byKey == nil {
		byKey = map[string]*Series{}
		m.pending[name] = byKey
	}
	s := byKey[key]
	if s == nil {
		s = &Series{Labels: labels}
		byKey[key] = s
	}
	s.Value++
}

func (m *Metrics) flushingBusy(read bool) {
	if m.waitFlushing != nil {
		m.waitFlushing(read)
	}
}

// Flush writes the counter increments of this process to the database.
func (m *Metrics) Flush(ctx context.Context) error {
	if !m.flushing.TryLock() {
		m.flushingBusy(false)
		m.flushing.Lock()
	}
	defer m.flushing.Unlock()
	m.mu.Lock()
	pending := m.pending
	m.pending = map[string]map[string]*Series{}
	m.mu.Unlock()
	var failed error
	for name, byKey := range pending {
		deltas := make([]Series, 0, len(byKey))
		for _, s := range byKey {
			deltas = append(deltas, *s)
		}
		if err := m.sink.AddCounters(ctx, name, deltas); err != nil {
			failed = err
			m.mu.Lock() // put them back for the next flush
			for _, s := range deltas {
				m.addLocked(name, s)
			}
			m.mu.Unlock()
		}
	}
	return failed
}

func (m *Metrics) addLocked(name string, s Series) {
	byKey := m.pending[name]
	if byKey == nil {
		byKey = map[string]*Series{}
		m.pending[name] = byKey
	}
	key := labelKey(s.Labels)
	if cur := byKey[key]; cur != nil {
		cur.Value += s.Value
	} else {
		byKey[key] = &Series{Labels: s.Labels, Value: s.Value}
	}
}

// RunFlusher flushes every interval until ctx ends, then once more.
func (m *Metrics) RunFlusher(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := m.Flush(context.WithoutCancel(ctx)); err != nil {
				m.log.Warn("metrics: final flush failed", "error", err)
			}
			return
		case <-t.C:
			if err := m.Flush(ctx); err != nil {
				m.log.Warn("metrics: flush failed", "error", err)
			}
		}
	}
}

func labelKey(labels []string) string {
	n := 0
	for _, l := range labels {
		n += len(l) + 1
	}
	b := make([]byte, 0, n)
	for _, l := range labels {
		b = append(b, l...)
		b = append(b, 0)
	}
	return string(b)
}

// dbCollector emits the database's metrics: the live part (webhook and
// GitHub counters, flushed to the database first, and the
// inbox) and, unless rollups is false, the delivery rollups (rendered
// apart for Handler when it is). It emits lastmile_metrics_source_errors_total
// too, last, so that a failure of the scrape in hand counts in it.
type dbCollector struct {
	m       *Metrics
	rollups bool
}

func (c *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	names := []string{WebhookDeliveries, GitHubRequests, AwaitingRunSince}
	if c.rollups {
		names = append(names, rollupNames...)
	}
	for _, name := range names {
		ch <- prometheus.NewDesc(name, help[name], labelNames[name], nil)
	}
	for _, name := range []string{InboxPending, InboxDead, InboxOldestPendingAge} {
		ch <- prometheus.NewDesc(name, help[name], nil, nil)
	}
	ch <- c.m.scrapeErrors.Desc()
}

// rollupNames are the metrics computed from the delivery rollups.
var rollupNames = []string{DeploymentsTotal, LeadTime, DeploymentDuration, ApprovalWait, TimeToRestore, LastSuccess, EnvironmentInfo, EnvironmentLiveSince}

func (c *dbCollector) Collect(ch chan<- prometheus.Metric) {
	defer func() { ch <- c.m.scrapeErrors }()
	if !c.rollups {
		c.m.delivery = [2][]byte{} // under c.m.scrape: the live registry is gathered by Handler only
	}
	snap, err := c.read()
	if err != nil {
		return
	}
	for _, name := range []string{WebhookDeliveries, GitHubRequests} {
		desc := prometheus.NewDesc(name, help[name], labelNames[name], nil)
		for _, s := range snap.Counters[name] {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, s.Value, s.Labels...)
		}
	}
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(InboxPending, help[InboxPending], nil, nil), prometheus.GaugeValue, float64(snap.InboxPending))
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(InboxDead, help[InboxDead], nil, nil), prometheus.GaugeValue, float64(snap.InboxDead))
	age := 0.0
	if !snap.OldestPendingSince.IsZero() {
		age = max(time.Since(snap.OldestPendingSince).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(InboxOldestPendingAge, help[InboxOldestPendingAge], nil, nil), prometheus.GaugeValue, age)
	desc := prometheus.NewDesc(AwaitingRunSince, help[AwaitingRunSince], labelNames[AwaitingRunSince], nil)
	for _, s := range snap.AwaitingRun {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, s.Value, s.Labels...)
	}
	if c.rollups {
		rollupMetrics(snap, ch)
		return
	}
	c.m.delivery[0], c.m.delivery[1] = c.m.rollupsText(snap)
}

// read flushes this process's counts, then reads the database's side.
func (c *dbCollector) read() (*Snapshot, error) {
	// A scrape shows only what is in the database: a count shown before
	// its flush and then lost with the process (killed before the next
	// flush) would make the counter go backwards, which Prometheus takes
	// for a reset and counts again. So this process's increments are
	// flushed first; if that fails they show at a later scrape.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	if err := c.m.Flush(ctx); err != nil {
		c.m.log.Warn("metrics: flush before scrape", "error", err)
	}
	cancel()
	if c.m.scrapeFlushed != nil {
		c.m.scrapeFlushed()
	}
	if !c.m.flushing.TryRLock() {
		c.m.flushingBusy(true)
		c.m.flushing.RLock()
	}
	defer c.m.flushing.RUnlock()
	return c.m.snapshot()
}

// rollupMetrics emits the delivery metrics of a snapshot.
func rollupMetrics(snap *Snapshot, ch chan<- prometheus.Metric) {
	desc := prometheus.NewDesc(DeploymentsTotal, help[DeploymentsTotal], labelNames[DeploymentsTotal], nil)
	for _, s := range snap.Counters[DeploymentsTotal] {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, s.Value, s.Labels...)
	}
	for _, name := range []string{LastSuccess, EnvironmentInfo, EnvironmentLiveSince} {
		desc := prometheus.NewDesc(name, help[name], labelNames[name], nil)
		for _, s := range snap.Gauges[name] {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, s.Value, s.Labels...)
		}
	}
	for _, name := range []string{LeadTime, DeploymentDuration, ApprovalWait, TimeToRestore} {
		desc := prometheus.NewDesc(name, help[name], labelNames[name], nil)
		bounds := Buckets(name)
		for _, h := range snap.Histograms[name] {
			ch <- prometheus.MustNewConstHistogram(desc, h.Count, h.Sum, cumulative(bounds, h.Buckets), h.Labels...)
		}
	}
}

// rollupCollector emits the delivery metrics of one snapshot (for
// rendering them once).
type rollupCollector struct{ snap *Snapshot }

func (c rollupCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, name := range rollupNames {
		ch <- prometheus.NewDesc(name, help[name], labelNames[name], nil)
	}
}

func (c rollupCollector) Collect(ch chan<- prometheus.Metric) { rollupMetrics(c.snap, ch) }

// snapshot reads the database's side, counting and logging a failure.
func (m *Metrics) snapshot() (*Snapshot, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snap, err := m.source.MetricsSnapshot(ctx)
	if err != nil {
		m.scrapeErrors.Inc()
		m.log.Warn("metrics: read database", "error", err)
	}
	return snap, err
}

// cumulative turns stored per-bound counts into Prometheus's cumulative
// buckets for bounds. A stored bound that is not in bounds (the buckets
// changed between versions) is counted in the next larger bound.
func cumulative(bounds []float64, counts map[float64]uint64) map[float64]uint64 {
	stored := make([]float64, 0, len(counts))
	for le := range counts {
		stored = append(stored, le)
	}
	sort.Float64s(stored)
	out := make(map[float64]uint64, len(bounds))
	var acc uint64
	i := 0
	for _, b := range bounds {
		for i < len(stored) && stored[i] <= b {
			acc += counts[stored[i]]
			i++
		}
		out[b] = acc
	}
	return out
}

// BucketFor returns the upper bound of the bucket an observation falls in
// (math.Inf(1) above the last bound), as stored in the database.
func BucketFor(name string, v float64) float64 {
	for _, b := range Buckets(name) {
		if v <= b {
			return b
		}
	}
	return inf
}

var inf = math.Inf(1)
