package metrics

import (
	"context"
	"io"
	"log/slog"
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
	release  chan struct{}      // AddCounters may commit
}

func (s *memStore) MetricsSnapshot(context.Context) (*Snapshot, error) {
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
	for _, d := range deltas {
		k := labelKey(d.Labels)
		if s.counters[k] == nil {
			s.counters[k] = &Series{Labels: d.Labels}
		}
		s.counters[k].Value += d.Value
	}
	return nil
}

// A scrape during a flush sees the increments being flushed, in the
// database or still in the process, never in neither: a counter that drops,
// even for one scrape, is a reset to Prometheus.
func TestScrapeDuringAFlushSeesEveryIncrement(t *testing.T) {
	labels := []string{"push", "unauthorized"}
	store := &memStore{counters: map[string]*Series{labelKey(labels): {Labels: labels, Value: 10}}}
	m := New(store, store, "test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	for range 5 {
		m.WebhookRejected("push", "unauthorized")
	}
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
	if v := value(); v != 15 {
		t.Fatalf("before the flush: %v, want 15", v)
	}

	store.entered, store.release = make(chan struct{}), make(chan struct{})
	flushed := make(chan error, 1)
	go func() { flushed <- m.Flush(context.Background()) }()
	select {
	case <-store.entered: // the flush holds its commit
	case <-time.After(10 * time.Second):
		t.Fatal("the flush did not start")
	}
	scraped := make(chan float64, 1)
	go func() { scraped <- value() }()
	// While the commit is held, the scrape either waits for it or answers
	// with every increment; it must never answer 10.
	select {
	case v := <-scraped:
		t.Errorf("scrape answered %v during the flush's commit (want it to wait, or 15)", v)
		close(store.release)
	case <-time.After(200 * time.Millisecond):
		close(store.release)
		select {
		case v := <-scraped:
			if v != 15 {
				t.Errorf("scrape during the flush: %v, want 15", v)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the scrape did not finish after the commit")
		}
	}
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if v := value(); v != 15 {
		t.Errorf("after the flush: %v, want 15", v)
	}
}
