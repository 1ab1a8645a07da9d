package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// memStore is a database for counters: a snapshot source and a sink whose
// commit a test can hold.
type memStore struct {
	mu       sync.Mutex
	counters map[string]*Series // lastmile_webhook_deliveries_total by label key
	entered  chan struct{}      // AddCounters has started
	read     chan struct{}      // MetricsSnapshot was called (if not nil)
	release  chan struct{}      // AddCounters may commit
	fail     bool               // AddCounters fails
}

func (s *memStore) MetricsSnapshot(context.Context) (*Snapshot, error) {
	if s.read != nil {
		s.read <- struct{}{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := &Snapshot{Counters: map[string][]Series{}}
	for _, c := range s.counters {
		snap.Counters[WebhookDeliveries] = append(snap.Counters[WebhookDeliveries], *c)
	}
	return snap, nil
}

func (s *memStore) AddCounters(_ context.Context, name string, deltas []Series) error {
	if s.entered != nil {
		s.entered <- struct{}{}
		<-s.release
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("database is locked")
	}
	for _, d := range deltas {
		k := labelKey(d.Labels)
		if s.counters[k] == nil {
			s.counters[k] = &Series{Labels: d.Labels}
		}
		s.counters[k].Value += d.Value
	}
	return nil
}

// A scrape shows only counts that are in the database: it flushes this
// process's increments first. A count shown and then lost with the process
// (killed before its flush) would make the counter go backwards, a reset to
// Prometheus.
func TestScrapeShowsOnlyFlushedCounts(t *testing.T) {
	labels := []string{"push", "unauthorized"}
	key := labelKey(labels)
	store := &memStore{counters: map[string]*Series{key: {Labels: labels, Value: 10}}}
	m := New(store, store, "test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	value := func() float64 {
		mfs, err := m.Registry().Gather()
		if err != nil {
			t.Error(err)
			return -1
		}
		for _, mf := range mfs {
			if mf.GetName() == WebhookDeliveries {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		t.Error("no webhook counter")
		return -1
	}
	stored := func() float64 {
		store.mu.Lock()
		defer store.mu.Unlock()
		return store.counters[key].Value
	}
	for range 5 {
		m.WebhookRejected("push", "unauthorized")
	}
	if v := value(); v != 15 || stored() != 15 {
		t.Fatalf("scraped %v with %v stored, want 15 and 15", v, stored())
	}

	// The database cannot be written: the new counts wait, unseen.
	store.fail = true
	m.WebhookRejected("push", "unauthorized")
	if v := value(); v != 15 {
		t.Errorf("scraped %v while the flush failed, want 15 (the count is not durable yet)", v)
	}
	store.fail = false
	if v := value(); v != 16 || stored() != 16 {
		t.Errorf("scraped %v with %v stored once the database works, want 16 and 16", v, stored())
	}

	// A scrape during another flush waits for it before its own flush.
	for range 4 {
		m.WebhookRejected("push", "unauthorized")
	}
	store.entered, store.release = make(chan struct{}), make(chan struct{})
	flushed := make(chan error, 1)
	go func() { flushed <- m.Flush(context.Background()) }()
	select {
	case <-store.entered: // the flush holds its commit
	case <-time.After(10 * time.Second):
		t.Fatal("the flush did not start")
	}
	store.entered = nil
	waiting, read := make(chan bool, 2), make(chan struct{}, 2)
	m.waitFlushing, store.read = func(read bool) { waiting <- read }, read
	scraped := make(chan float64, 1)
	go func() { scraped <- value() }()
	select {
	case r := <-waiting:
		if r {
			t.Error("the scrape flushed while another flush held its commit")
		}
	case <-read:
		t.Fatal("the scrape read the database while a flush held its commit")
	case <-time.After(10 * time.Second):
		t.Fatal("the scrape neither waited nor read")
	}
	close(store.release)
	if v := <-scraped; v != 20 {
		t.Errorf("scrape during the flush: %v, want 20", v)
	}
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}

	// A flush that starts between a scrape's own flush and its read holds
	// the read until it has committed: the scrape never shows the counts
	// that flush has taken from the process, and not yet committed, as
	// missing.
	store.entered, store.release = make(chan struct{}), make(chan struct{})
	read = make(chan struct{}, 2)
	store.read = read
	m.scrapeFlushed = func() {
		m.scrapeFlushed = nil
		for range 4 {
			m.WebhookRejected("push", "unauthorized")
		}
		go func() { flushed <- m.Flush(context.Background()) }()
		<-store.entered // that flush holds its commit
	}
	go func() { scraped <- value() }()
	select {
	case r := <-waiting:
		if !r {
			t.Error("the scrape's own flush waited, not its read")
		}
	case <-read:
		t.Fatal("the scrape read the database while a flush held its commit")
	case <-time.After(10 * time.Second):
		t.Fatal("the scrape neither waited nor read")
	}
	close(store.release)
	if v := <-scraped; v != 24 {
		t.Errorf("scrape while a flush started after its own: %v, want 24", v)
	}
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
}

// The rate-limit series follow the quotas in use: a window that has refilled
// since lastmile last called there goes at the next report of another.
func TestRateLimitSeriesOfRefilledWindowsGo(t *testing.T) {
	m := New(&memStore{counters: map[string]*Series{}}, nopSink{}, "test", slog.New(slog.DiscardHandler))
	m.GitHubRateLimit("42", "core", 10, 5000, time.Now().Add(-time.Second)) // an installation gone since
	m.GitHubRateLimit("app", "core", 4990, 5000, time.Now().Add(time.Hour))
	m.GitHubRateLimit("43", "core", 4000, 5000, time.Now().Add(time.Hour))
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "lastmile_github_rate_limit_") {
			continue
		}
		var quotas []string
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "installation" {
					quotas = append(quotas, l.GetValue())
				}
			}
		}
		slices.Sort(quotas)
		if !slices.Equal(quotas, []string{"43", "app"}) {
			t.Errorf("%s: quotas %v, want [43 app]", mf.GetName(), quotas)
		}
	}
}

// Series started at zero are exposed from the first scrape of a fresh
// registry, at 0 (Prometheus's increase() then counts their first
// increment), and stored, so that a series already counted keeps its value.
func TestStartAtZero(t *testing.T) {
	counted := []string{"push", "accepted"}
	store := &memStore{counters: map[string]*Series{labelKey(counted): {Labels: counted, Value: 7}}}
	m := New(store, store, "test", slog.New(slog.DiscardHandler))
	m.StartAtZero(WebhookDeliveries, [][]string{{"push", "unauthorized"}, counted})
	got := map[string]float64{}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != WebhookDeliveries {
			continue
		}
		for _, s := range mf.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			got[strings.Join(labels, ",")] = s.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"event=push,outcome=unauthorized": 0, "event=push,outcome=accepted": 7}
	if !maps.Equal(got, want) {
		t.Errorf("a fresh registry exposes %v, want %v", got, want)
	}
	if s := store.counters[labelKey([]string{"push", "unauthorized"})]; s == nil || s.Value != 0 {
		t.Errorf("stored unauthorized series: %+v, want 0", s)
	}
}
