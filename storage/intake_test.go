package storage_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// webhookCounts reads lastmile_webhook_deliveries_total as event/outcome → value.
func webhookCounts(t *testing.T, db *storage.DB) map[[2]string]float64 {
	t.Helper()
	series, err := db.Counters(context.Background(), storage.MetricWebhookDeliveries)
	if err != nil {
		t.Fatalf("Counters: %v", err)
	}
	return seriesMap(t, series)
}

func seriesMap(t *testing.T, series []metrics.Series) map[[2]string]float64 {
	t.Helper()
	out := map[[2]string]float64{}
	for _, s := range series {
		if len(s.Labels) != 2 {
			t.Fatalf("series %v: want 2 labels (event, outcome)", s.Labels)
		}
		out[[2]string{s.Labels[0], s.Labels[1]}] += s.Value
	}
	return out
}

func TestAcceptStoresTheDeliveryAsReceived(t *testing.T) {
	ctx := context.Background()
	tests := map[string]struct {
		in        pipeline.Delivery
		wantState pipeline.DeliveryState
	}{
		"pending push with a body": {
			in: pipeline.Delivery{ID: "72d3162e-cc78-11e3-81ab-4c9367dc0958", Event: "push", Action: "",
				InstallationID: 1, RepositoryID: 186853002, Repository: "Codertocat/Hello-World",
				Body: []byte(`{"ref":"refs/heads/main"}`), State: pipeline.DeliveryPending},
			wantState: pipeline.DeliveryPending,
		},
		"no state given means pending": {
			in:        pipeline.Delivery{ID: "d-nostate", Event: "deployment_status", Action: "created", Repository: "a/b", Body: []byte(`{}`)},
			wantState: pipeline.DeliveryPending,
		},
		"ignored without a body": {
			in:        pipeline.Delivery{ID: "d-ping", Event: "ping", State: pipeline.DeliveryIgnored},
			wantState: pipeline.DeliveryIgnored,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			db := newInboxDB(t)
			d := tc.in
			acceptDelivery(t, db, &d)
			if d.Seq <= 0 {
				t.Errorf("Accept did not assign a sequence number: %d", d.Seq)
			}
			got, err := db.GetDelivery(ctx, tc.in.ID)
			if err != nil {
				t.Fatalf("GetDelivery: %v", err)
			}
			want := tc.in
			want.Seq, want.State, want.ReceivedAt, want.NextAttemptAt = d.Seq, tc.wantState, inboxT0, inboxT0
			if got.Seq != want.Seq || got.ID != want.ID || got.Event != want.Event || got.Action != want.Action ||
				got.InstallationID != want.InstallationID || got.RepositoryID != want.RepositoryID ||
				got.Repository != want.Repository || string(got.Body) != string(want.Body) || got.State != want.State ||
				!got.ReceivedAt.Equal(want.ReceivedAt) || !got.NextAttemptAt.Equal(want.NextAttemptAt) ||
				got.Attempts != 0 || got.LastError != "" || !got.FinishedAt.IsZero() {
				t.Errorf("stored delivery\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestAcceptKeepsAnExplicitReceivedAt(t *testing.T) {
	db := newInboxDB(t)
	at := inboxT0.Add(-90 * 60e9)
	d := pendingDelivery("d-at", "a/b")
	d.ReceivedAt = at
	acceptDelivery(t, db, d)
	got, err := db.GetDelivery(context.Background(), "d-at")
	if err != nil {
		t.Fatal(err)
	}
	if !got.ReceivedAt.Equal(at) || !got.NextAttemptAt.Equal(at) {
		t.Errorf("received %v, next attempt %v; want both %v", got.ReceivedAt, got.NextAttemptAt, at)
	}
}

func TestAcceptDuplicateIsStoredOnceAndCounted(t *testing.T) {
	ctx := context.Background()
	db := newInboxDB(t)
	first := pendingDelivery("guid-1", "acme/shop")
	acceptDelivery(t, db, first)

	// A redelivery carries the same GUID; even a different body must not
	// replace the stored one.
	again := pendingDelivery("guid-1", "acme/shop")
	again.Body = []byte(`{"changed":true}`)
	dup, err := db.Accept(ctx, again, "push", "accepted")
	if err != nil {
		t.Fatalf("Accept duplicate: %v", err)
	}
	if !dup {
		t.Fatal("Accept of a stored delivery ID did not report a duplicate")
	}
	list := allDeliveries(t, db)
	if len(list) != 1 {
		t.Fatalf("%d deliveries stored, want 1", len(list))
	}
	got, _ := db.GetDelivery(ctx, "guid-1")
	if string(got.Body) != string(first.Body) || got.Seq != first.Seq {
		t.Errorf("duplicate changed the stored delivery: seq %d body %q", got.Seq, got.Body)
	}
	want := map[[2]string]float64{{"push", "accepted"}: 1, {"push", "duplicate"}: 1}
	if got := webhookCounts(t, db); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("counters = %v, want %v", got, want)
	}
}

func TestAcceptCountsEachOutcomeUnderItsLabels(t *testing.T) {
	db := newInboxDB(t)
	ctx := context.Background()
	calls := []struct {
		id, event, outcome string
		state              pipeline.DeliveryState
	}{
		{"a", "push", "accepted", pipeline.DeliveryPending},
		{"b", "push", "accepted", pipeline.DeliveryPending},
		{"c", "ping", "ping", pipeline.DeliveryIgnored},
		{"d", "other", "ignored", pipeline.DeliveryIgnored},
		{"a", "push", "accepted", pipeline.DeliveryPending}, // redelivery of a
	}
	want := map[[2]string]float64{}
	for _, c := range calls {
		d := &pipeline.Delivery{ID: c.id, Event: c.event, State: c.state}
		dup, err := db.Accept(ctx, d, c.event, c.outcome)
		if err != nil {
			t.Fatal(err)
		}
		outcome := c.outcome
		if dup {
			outcome = "duplicate"
		}
		want[[2]string{c.event, outcome}]++
	}
	if want[[2]string{"push", "duplicate"}] != 1 {
		t.Fatalf("the redelivery was not reported as a duplicate: %v", want)
	}
	if got := webhookCounts(t, db); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("counters = %v, want %v", got, want)
	}
}

// TestAcceptConcurrent drives the group commit: many callers at once, each
// delivery sent several times, as when GitHub redelivers while the first
// attempt is still being answered.
func TestAcceptConcurrent(t *testing.T) {
	ctx := context.Background()
	db := newInboxDB(t)
	const distinct, copies = 300, 3

	type result struct {
		id  string
		seq int64
		dup bool
	}
	results := make(chan result, distinct*copies)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range distinct {
		for range copies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				d := pendingDelivery(fmt.Sprintf("guid-%03d", i), fmt.Sprintf("acme/repo-%d", i%7))
				dup, err := db.Accept(ctx, d, "push", "accepted")
				if err != nil {
					t.Errorf("Accept(%s): %v", d.ID, err)
					return
				}
				results <- result{d.ID, d.Seq, dup}
			}()
		}
	}
	close(start)
	wg.Wait()
	close(results)

	firsts := map[string]int64{}
	dups := 0
	for r := range results {
		if r.dup {
			dups++
			continue
		}
		if _, twice := firsts[r.id]; twice {
			t.Errorf("%s was stored as new twice", r.id)
		}
		firsts[r.id] = r.seq
	}
	if len(firsts) != distinct || dups != distinct*(copies-1) {
		t.Fatalf("%d stored as new and %d duplicates; want %d and %d", len(firsts), dups, distinct, distinct*(copies-1))
	}

	list := allDeliveries(t, db)
	if len(list) != distinct {
		t.Fatalf("%d rows in the inbox, want %d", len(list), distinct)
	}
	seqs := map[int64]bool{}
	for _, d := range list {
		if seqs[d.Seq] {
			t.Errorf("sequence %d used twice", d.Seq)
		}
		seqs[d.Seq] = true
		if firsts[d.ID] != d.Seq {
			t.Errorf("%s: Accept reported seq %d, stored %d", d.ID, firsts[d.ID], d.Seq)
		}
	}
	want := map[[2]string]float64{{"push", "accepted"}: distinct, {"push", "duplicate"}: distinct * (copies - 1)}
	if got := webhookCounts(t, db); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("counters = %v, want %v", got, want)
	}
}

func TestAcceptAfterCloseFails(t *testing.T) {
	db, err := storage.Open(context.Background(), filepath.Join(t.TempDir(), "lastmile.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = db.Accept(context.Background(), pendingDelivery("late", "a/b"), "push", "accepted")
	if !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("Accept after Close = %v, want ErrClosed", err)
	}
}

// TestAcceptedDeliveriesSurviveReopen checks durability the way the service
// relies on it: once Accept returned, a new process finds the delivery.
func TestAcceptedDeliveriesSurviveReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lastmile.db")
	db, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := db.Accept(ctx, pendingDelivery(fmt.Sprint("d-", i), "a/b"), "push", "accepted"); err != nil {
				t.Errorf("Accept: %v", err)
			}
		}()
	}
	wg.Wait()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if n := len(allDeliveries(t, db)); n != 50 {
		t.Errorf("%d deliveries after re-open, want 50", n)
	}
	if got := webhookCounts(t, db)[[2]string{"push", "accepted"}]; got != 50 {
		t.Errorf("accepted counter after re-open = %v, want 50", got)
	}
}
