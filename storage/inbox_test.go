package storage_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// queueViews yields the worker's view of the queues kept by db (as it
// handled what the test did), then one built again from the database
// alone (another process's, or after a restart), each with its name.
func queueViews(t *testing.T, db *storage.DB) iter.Seq2[string, *storage.DB] {
	return func(yield func(string, *storage.DB) bool) {
		if !yield("kept", db) {
			return
		}
		other, err := storage.Open(context.Background(), db.Path())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { other.Close() })
		yield("built again", other)
	}
}

func ids(ds []*pipeline.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

// seedInterleaved stores deliveries of three repositories, interleaved:
// a1 b1 a2 c1 b2 a3, and returns them by ID.
func seedInterleaved(t *testing.T, db *storage.DB) map[string]*pipeline.Delivery {
	t.Helper()
	out := map[string]*pipeline.Delivery{}
	for _, s := range []struct{ id, repo string }{
		{"a1", "acme/a"}, {"b1", "acme/b"}, {"a2", "acme/a"}, {"c1", "acme/c"}, {"b2", "acme/b"}, {"a3", "acme/a"},
	} {
		out[s.id] = acceptDelivery(t, db, pendingDelivery(s.id, s.repo))
	}
	// Not work for the worker: must never be handed out.
	acceptDelivery(t, db, &pipeline.Delivery{ID: "ping", Event: "ping", Repository: "acme/a", State: pipeline.DeliveryIgnored})
	return out
}

// inHand is the repositories named, as the worker has them in hand: by
// the repository ID pendingDelivery gives them.
func inHand(repos ...string) map[pipeline.InHand]bool {
	busy := map[pipeline.InHand]bool{}
	for _, r := range repos {
		busy[pendingDelivery("", r).InHand()] = true
	}
	return busy
}

func TestNextDeliveries(t *testing.T) {
	ctx := context.Background()
	tests := map[string]struct {
		busy  map[pipeline.InHand]bool
		limit int
		want  []string
	}{
		"oldest of each repository, in arrival order": {limit: 10, want: []string{"a1", "b1", "c1"}},
		"limit":                       {limit: 2, want: []string{"a1", "b1"}},
		"busy repositories skipped":   {busy: inHand("acme/a"), limit: 10, want: []string{"b1", "c1"}},
		"busy skipped before limit":   {busy: inHand("acme/a"), limit: 1, want: []string{"b1"}},
		"everything busy":             {busy: inHand("acme/a", "acme/b", "acme/c"), limit: 10},
		"unrelated busy repositories": {busy: inHand("acme/z"), limit: 10, want: []string{"a1", "b1", "c1"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			db := newInboxDB(t)
			seedInterleaved(t, db)
			got, err := db.NextDeliveries(ctx, inboxT0, tc.busy, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids(got), tc.want) {
				t.Errorf("NextDeliveries = %v, want %v", ids(got), tc.want)
			}
			for _, d := range got {
				if string(d.Body) != `{"delivery":"`+d.ID+`"}` {
					t.Errorf("%s handed out without its body: %q", d.ID, d.Body)
				}
			}
		})
	}
}

// TestNextDeliveriesDrainsEachRepositoryInOrder plays the worker: take the
// next deliveries, finish them, repeat. Each repository's deliveries must
// come one at a time, in arrival order.
func TestNextDeliveriesDrainsEachRepositoryInOrder(t *testing.T) {
	ctx := context.Background()
	db := newInboxDB(t)
	seeded := seedInterleaved(t, db)

	var rounds [][]string
	for range 10 {
		batch, err := db.NextDeliveries(ctx, inboxT0, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(batch) == 0 {
			break
		}
		repos := map[string]bool{}
		for _, d := range batch {
			if repos[d.Repository] {
				t.Fatalf("two deliveries of %s handed out at once: %v", d.Repository, ids(batch))
			}
			repos[d.Repository] = true
			if err := db.FinishDelivery(ctx, d.Seq, ""); err != nil {
				t.Fatal(err)
			}
		}
		rounds = append(rounds, ids(batch))
	}
	want := [][]string{{"a1", "b1", "c1"}, {"a2", "b2"}, {"a3"}}
	if fmt.Sprint(rounds) != fmt.Sprint(want) {
		t.Errorf("rounds = %v, want %v", rounds, want)
	}
	for id := range seeded {
		d, _ := db.GetDelivery(ctx, id)
		if d.State != pipeline.DeliveryDone {
			t.Errorf("%s is %s after draining", id, d.State)
		}
	}
}

// A repository renamed while deliveries waited keeps its queue (by ID): its
// deliveries under the new name wait behind those under the old one — in
// hand, or waiting for a retry.
func TestNextDeliveriesKeepsTheOrderOfARenamedRepository(t *testing.T) {
	ctx := context.Background()
	db := newInboxDB(t)
	old := pendingDelivery("old-1", "acme/old")
	renamed := pendingDelivery("new-1", "acme/new")
	renamed.RepositoryID = old.RepositoryID
	acceptDelivery(t, db, old)
	acceptDelivery(t, db, renamed)
	acceptDelivery(t, db, pendingDelivery("other-1", "acme/other"))
	next := func(now time.Time, busy map[pipeline.InHand]bool) []string {
		t.Helper()
		got, err := db.NextDeliveries(ctx, now, busy, 10)
		if err != nil {
			t.Fatal(err)
		}
		return ids(got)
	}
	if got := next(inboxT0, nil); !slices.Equal(got, []string{"old-1", "other-1"}) {
		t.Errorf("NextDeliveries = %v, want old-1 and other-1 (new-1 after old-1)", got)
	}
	if got := next(inboxT0, map[pipeline.InHand]bool{old.InHand(): true}); !slices.Equal(got, []string{"other-1"}) {
		t.Errorf("with old-1 in hand: %v, want other-1 only", got)
	}
	retryAt := inboxT0.Add(time.Hour)
	if err := db.FailDelivery(ctx, old.Seq, "boom", retryAt, false); err != nil {
		t.Fatal(err)
	}
	if got := next(inboxT0, nil); !slices.Equal(got, []string{"other-1"}) {
		t.Errorf("old-1 waiting for its retry: %v, want other-1 only", got)
	}
	if err := db.FinishDelivery(ctx, old.Seq, ""); err != nil {
		t.Fatal(err)
	}
	if got := next(inboxT0, nil); !slices.Equal(got, []string{"new-1", "other-1"}) {
		t.Errorf("old-1 done: %v, want new-1 and other-1", got)
	}
}

// A dead delivery of a renamed repository, under its old name, retried by
// an operator while a delivery under the new name is in hand, waits for it:
// the worker has repositories in hand by ID, not by name.
func TestNextDeliveriesHoldsARetriedDeliveryOfARenamedRepositoryWhileTheNewNameIsInHand(t *testing.T) {
	ctx := context.Background()
	db := newInboxDB(t)
	old := pendingDelivery("old-1", "acme/old")
	renamed := pendingDelivery("new-1", "acme/new")
	renamed.RepositoryID = old.RepositoryID
	acceptDelivery(t, db, old)
	acceptDelivery(t, db, renamed)
	acceptDelivery(t, db, pendingDelivery("other-1", "acme/other"))
	if err := db.FailDelivery(ctx, old.Seq, "boom", inboxT0, true); err != nil {
		t.Fatal(err)
	}
	got, err := db.NextDeliveries(ctx, inboxT0, nil, 10)
	if err != nil || !slices.Equal(ids(got), []string{"new-1", "other-1"}) {
		t.Fatalf("old-1 dead: %v, %v; want new-1 and other-1", ids(got), err)
	}
	inHand := map[pipeline.InHand]bool{got[0].InHand(): true}
	if _, err := db.RetryDelivery(ctx, "old-1"); err != nil {
		t.Fatal(err)
	}
	got, err = db.NextDeliveries(ctx, inboxT0, inHand, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(got), []string{"other-1"}) {
		t.Errorf("with new-1 of the same repository in hand, NextDeliveries handed out %v, want other-1 only", ids(got))
	}
	// A delivery without a repository ID is in hand by its name.
	noID := pendingDelivery("no-id-1", "acme/no-id")
	noID.RepositoryID = 0
	acceptDelivery(t, db, noID)
	inHand[got[0].InHand()] = true // other-1
	inHand[pipeline.InHand{Repository: "acme/no-id"}] = true
	got, err = db.NextDeliveries(ctx, inboxT0, inHand, 10)
	if err != nil || len(got) != 0 {
		t.Errorf("with new-1, other-1 and no-id-1 in hand: %v, %v; want nothing", ids(got), err)
	}
}

// Another repository that takes up a name a repository left (renamed, or
// deleted, while a delivery of it waited for a retry) has a queue of its
// own: its deliveries do not wait behind the old repository's retries, and
// `lastmile deliveries` does not say they do.
func TestNextDeliveriesQueuesANameTakenUpByAnotherRepositoryApart(t *testing.T) {
	ctx := context.Background()
	db := newInboxDB(t)
	old := acceptDelivery(t, db, pendingDelivery("old-1", "acme/x"))
	if err := db.FailDelivery(ctx, old.Seq, "GitHub 502", inboxT0.Add(time.Hour), false); err != nil {
		t.Fatal(err)
	}
	taker := pendingDelivery("new-1", "acme/x")
	taker.RepositoryID = old.RepositoryID + 1
	acceptDelivery(t, db, taker)
	for view, db := range queueViews(t, db) {
		got, next, err := db.NextWork(ctx, inboxT0, nil, 10)
		if err != nil || !slices.Equal(ids(got), []string{"new-1"}) || !next.Equal(inboxT0.Add(time.Hour)) {
			t.Errorf("queues %s: NextWork = %v, next %v, %v; want new-1, and old-1 due in an hour", view, ids(got), next, err)
		}
		behind, err := db.WaitingBehind(ctx, allDeliveries(t, db))
		if err != nil || len(behind) != 0 {
			t.Errorf("queues %s: WaitingBehind = %v, %v; want nothing waiting behind another", view, behind, err)
		}
	}
}

func TestNextDeliveriesWaitsForTheRetryTime(t *testing.T) {
	ctx := context.Background()
	db := newInboxDB(t)
	seeded := seedInterleaved(t, db)
	retryAt := inboxT0.Add(30 * time.Second)
	if err := db.FailDelivery(ctx, seeded["a1"].Seq, "boom", retryAt, false); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		now  time.Time
		want []string
	}{
		// a1 waits, and so do a2 and a3 behind it: order is kept.
		{inboxT0, []string{"b1", "c1"}},
		{retryAt.Add(-time.Millisecond), []string{"b1", "c1"}},
		{retryAt, []string{"a1", "b1", "c1"}},
	} {
		got, err := db.NextDeliveries(ctx, tc.now, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids(got), tc.want) {
			t.Errorf("at %v: NextDeliveries = %v, want %v", tc.now.Sub(inboxT0), ids(got), tc.want)
		}
	}
	next, err := db.NextAttemptAt(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !next.Equal(inboxT0) {
		t.Errorf("NextAttemptAt = %v, want %v (b1 and c1 are due now)", next, inboxT0)
	}
}

func TestNextAttemptAt(t *testing.T) {
	ctx := context.Background()
	db := newInboxDB(t)
	if next, err := db.NextAttemptAt(ctx); err != nil || !next.IsZero() {
		t.Fatalf("empty inbox: NextAttemptAt = %v, %v; want zero", next, err)
	}
	d := acceptDelivery(t, db, pendingDelivery("d", "a/b"))
	later := inboxT0.Add(time.Hour)
	if err := db.FailDelivery(ctx, d.Seq, "boom", later, false); err != nil {
		t.Fatal(err)
	}
	if next, err := db.NextAttemptAt(ctx); err != nil || !next.Equal(later) {
		t.Errorf("NextAttemptAt = %v, %v; want %v", next, err, later)
	}
	// A delivery behind the one that waits is not due before it: it
	// does not make the worker wake up earlier.
	acceptDelivery(t, db, pendingDelivery("behind", "a/b"))
	if next, err := db.NextAttemptAt(ctx); err != nil || !next.Equal(later) {
		t.Errorf("with a delivery queued behind: NextAttemptAt = %v, %v; want %v", next, err, later)
	}
	if err := db.FinishDelivery(ctx, d.Seq, ""); err != nil {
		t.Fatal(err)
	}
	if next, err := db.NextAttemptAt(ctx); err != nil || !next.Equal(inboxT0) {
		t.Errorf("head finished: NextAttemptAt = %v, %v; want %v", next, err, inboxT0)
	}
	behind, _ := db.GetDelivery(ctx, "behind")
	if err := db.FinishDelivery(ctx, behind.Seq, ""); err != nil {
		t.Fatal(err)
	}
	if next, err := db.NextAttemptAt(ctx); err != nil || !next.IsZero() {
		t.Errorf("nothing pending: NextAttemptAt = %v, %v; want zero", next, err)
	}
}

func TestFinishAndFailDelivery(t *testing.T) {
	ctx := context.Background()
	db := newInboxDB(t)
	done := acceptDelivery(t, db, pendingDelivery("done", "a/b"))
	retried := acceptDelivery(t, db, pendingDelivery("retried", "a/c"))
	dead := acceptDelivery(t, db, pendingDelivery("dead", "a/d"))
	ignored := acceptDelivery(t, db, pendingDelivery("ignored", "a/e"))

	finishedAt := inboxT0.Add(time.Minute)
	db.Now = func() time.Time { return finishedAt }
	next := inboxT0.Add(10 * time.Minute)

	if err := db.FailDelivery(ctx, done.Seq, "first try failed", next, false); err != nil {
		t.Fatal(err)
	}
	if err := db.FinishDelivery(ctx, done.Seq, "push to topic, not the pipeline branch"); err != nil {
		t.Fatal(err)
	}
	if err := db.IgnoreDelivery(ctx, ignored.Seq, "repository not enrolled"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := db.FailDelivery(ctx, retried.Seq, "GitHub 502", next, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.FailDelivery(ctx, dead.Seq, "malformed payload", next, true); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		id       string
		state    pipeline.DeliveryState
		attempts int
		lastErr  string
		note     string
		finished time.Time
		next     time.Time
	}{
		{"done", pipeline.DeliveryDone, 2, "", "push to topic, not the pipeline branch", finishedAt, next},
		{"ignored", pipeline.DeliveryIgnored, 1, "", "repository not enrolled", finishedAt, inboxT0},
		{"retried", pipeline.DeliveryPending, 2, "GitHub 502", "", time.Time{}, next},
		{"dead", pipeline.DeliveryDead, 1, "malformed payload", "", finishedAt, next},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			d, err := db.GetDelivery(ctx, tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if d.State != tc.state || d.Attempts != tc.attempts || d.LastError != tc.lastErr || d.Note != tc.note ||
				!d.FinishedAt.Equal(tc.finished) || !d.NextAttemptAt.Equal(tc.next) {
				t.Errorf("got state %s attempts %d error %q note %q finished %v next %v\nwant state %s attempts %d error %q note %q finished %v next %v",
					d.State, d.Attempts, d.LastError, d.Note, d.FinishedAt, d.NextAttemptAt,
					tc.state, tc.attempts, tc.lastErr, tc.note, tc.finished, tc.next)
			}
		})
	}

	stats, err := db.InboxStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats[pipeline.DeliveryPending] != 1 || stats[pipeline.DeliveryDead] != 1 {
		t.Errorf("InboxStats = %v, want 1 pending and 1 dead", stats)
	}
	// Neither done, ignored nor dead deliveries are work any more.
	got, err := db.NextDeliveries(ctx, next, nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(got), []string{"retried"}) {
		t.Errorf("NextDeliveries = %v, want [retried]", ids(got))
	}
}

func TestInboxStatsOfAnEmptyInbox(t *testing.T) {
	stats, err := newInboxDB(t).InboxStats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Both states are always reported, so the gauges exist from the start.
	if v, ok := stats[pipeline.DeliveryPending]; !ok || v != 0 {
		t.Errorf("pending = %d, %v", v, ok)
	}
	if v, ok := stats[pipeline.DeliveryDead]; !ok || v != 0 {
		t.Errorf("dead = %d, %v", v, ok)
	}
}

func TestRetryDelivery(t *testing.T) {
	ctx := context.Background()
	db := newInboxDB(t)
	dead := acceptDelivery(t, db, pendingDelivery("dead", "a/b"))
	pending := acceptDelivery(t, db, pendingDelivery("pending", "a/b"))
	done := acceptDelivery(t, db, pendingDelivery("done", "a/c"))
	acceptDelivery(t, db, &pipeline.Delivery{ID: "ignored", Event: "ping", State: pipeline.DeliveryIgnored})
	bodiless := acceptDelivery(t, db, &pipeline.Delivery{ID: "pruned", Event: "push", Repository: "a/d", State: pipeline.DeliveryPending})
	for _, d := range []*pipeline.Delivery{dead, bodiless} {
		for i := range 3 {
			if err := db.FailDelivery(ctx, d.Seq, fmt.Sprint("failure ", i+1), inboxT0.Add(time.Hour), i == 2); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := db.FinishDelivery(ctx, done.Seq, ""); err != nil {
		t.Fatal(err)
	}
	_ = pending

	retryAt := inboxT0.Add(2 * time.Hour)
	db.Now = func() time.Time { return retryAt }

	errTests := map[string]struct {
		id       string
		notFound bool
		contains string
	}{
		"unknown ID":              {id: "no-such-delivery", notFound: true, contains: "no-such-delivery"},
		"pending is not dead":     {id: "pending", contains: "only dead deliveries"},
		"done is not dead":        {id: "done", contains: "is done"},
		"ignored is not dead":     {id: "ignored", contains: "is ignored"},
		"dead without its body":   {id: "pruned", contains: "pruned"},
		"empty ID is not a hit":   {id: "", notFound: true},
		"similar ID is not a hit": {id: "dea", notFound: true},
	}
	for name, tc := range errTests {
		t.Run(name, func(t *testing.T) {
			before, _ := db.GetDelivery(ctx, tc.id)
			d, err := db.RetryDelivery(ctx, tc.id)
			if err == nil {
				t.Fatalf("RetryDelivery(%q) = %+v, want an error", tc.id, d)
			}
			if errors.Is(err, storage.ErrNotFound) != tc.notFound {
				t.Errorf("errors.Is(%v, ErrNotFound) = %v, want %v", err, !tc.notFound, tc.notFound)
			}
			if !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("error %q should contain %q", err, tc.contains)
			}
			after, _ := db.GetDelivery(ctx, tc.id)
			if fmt.Sprintf("%+v", before) != fmt.Sprintf("%+v", after) {
				t.Errorf("a refused retry changed the delivery:\n%+v\n%+v", before, after)
			}
		})
	}

	t.Run("dead delivery is queued again", func(t *testing.T) {
		d, err := db.RetryDelivery(ctx, "dead")
		if err != nil {
			t.Fatalf("RetryDelivery: %v", err)
		}
		if d.ID != "dead" || d.State != pipeline.DeliveryPending || d.Attempts != 0 || !d.NextAttemptAt.Equal(retryAt) || !d.FinishedAt.IsZero() {
			t.Errorf("returned %+v", d)
		}
		stored, err := db.GetDelivery(ctx, "dead")
		if err != nil {
			t.Fatal(err)
		}
		if stored.State != pipeline.DeliveryPending || stored.Attempts != 0 || !stored.NextAttemptAt.Equal(retryAt) ||
			!stored.FinishedAt.IsZero() || string(stored.Body) != string(dead.Body) {
			t.Errorf("stored %+v", stored)
		}
		// It is work again, ahead of the later delivery of its repository.
		next, err := db.NextDeliveries(ctx, retryAt, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(ids(next), "dead") || slices.Contains(ids(next), "pending") {
			t.Errorf("NextDeliveries = %v, want dead (and not pending, which arrived after it)", ids(next))
		}
		// Retrying it again is refused: it is no longer dead.
		if _, err := db.RetryDelivery(ctx, "dead"); err == nil {
			t.Error("a second RetryDelivery of the same delivery succeeded")
		}
	})
}

func TestListDeliveries(t *testing.T) {
	ctx := context.Background()
	db := newInboxDB(t)
	type seed struct {
		id, repo string
		state    pipeline.DeliveryState
	}
	seeds := []seed{
		{"p1", "acme/a", pipeline.DeliveryPending},
		{"x1", "acme/b", pipeline.DeliveryDead},
		{"i1", "", pipeline.DeliveryIgnored},
		{"p2", "acme/b", pipeline.DeliveryPending},
		{"x2", "acme/a", pipeline.DeliveryDead},
		{"d1", "acme/a", pipeline.DeliveryDone},
	}
	for _, s := range seeds {
		state := s.state
		if state != pipeline.DeliveryIgnored {
			state = pipeline.DeliveryPending
		}
		d := acceptDelivery(t, db, &pipeline.Delivery{ID: s.id, Event: "push", Repository: s.repo, State: state, Body: []byte(`{}`)})
		switch s.state {
		case pipeline.DeliveryDead:
			if err := db.FailDelivery(ctx, d.Seq, "boom", inboxT0, true); err != nil {
				t.Fatal(err)
			}
		case pipeline.DeliveryDone:
			if err := db.FinishDelivery(ctx, d.Seq, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	// expect filters seeds, newest first.
	expect := func(keep func(seed) bool, limit int) []string {
		var out []string
		for i := len(seeds) - 1; i >= 0; i-- {
			if keep(seeds[i]) && (limit == 0 || len(out) < limit) {
				out = append(out, seeds[i].id)
			}
		}
		return out
	}
	tests := map[string]struct {
		f    storage.DeliveryFilter
		want []string
	}{
		"all":              {storage.DeliveryFilter{}, expect(func(seed) bool { return true }, 0)},
		"dead":             {storage.DeliveryFilter{State: pipeline.DeliveryDead}, expect(func(s seed) bool { return s.state == pipeline.DeliveryDead }, 0)},
		"repository":       {storage.DeliveryFilter{Repository: "acme/a"}, expect(func(s seed) bool { return s.repo == "acme/a" }, 0)},
		"repo, any case":   {storage.DeliveryFilter{Repository: "ACME/A"}, expect(func(s seed) bool { return s.repo == "acme/a" }, 0)},
		"state and repo":   {storage.DeliveryFilter{State: pipeline.DeliveryPending, Repository: "acme/b"}, expect(func(s seed) bool { return s.repo == "acme/b" && s.state == pipeline.DeliveryPending }, 0)},
		"limit":            {storage.DeliveryFilter{Limit: 2}, expect(func(seed) bool { return true }, 2)},
		"nothing matches":  {storage.DeliveryFilter{State: pipeline.DeliveryDone, Repository: "acme/b"}, nil},
		"ignored":          {storage.DeliveryFilter{State: pipeline.DeliveryIgnored}, expect(func(s seed) bool { return s.state == pipeline.DeliveryIgnored }, 0)},
		"done, limit 1":    {storage.DeliveryFilter{State: pipeline.DeliveryDone, Limit: 1}, expect(func(s seed) bool { return s.state == pipeline.DeliveryDone }, 1)},
		"dead of acme/a":   {storage.DeliveryFilter{State: pipeline.DeliveryDead, Repository: "acme/a"}, expect(func(s seed) bool { return s.repo == "acme/a" && s.state == pipeline.DeliveryDead }, 0)},
		"unknown state":    {storage.DeliveryFilter{State: "archived"}, nil},
		"negative limit 0": {storage.DeliveryFilter{Limit: -1}, expect(func(seed) bool { return true }, 0)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := db.ListDeliveries(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids(got), tc.want) {
				t.Errorf("ListDeliveries(%+v) = %v, want %v", tc.f, ids(got), tc.want)
			}
			for _, d := range got {
				if d.Body != nil {
					t.Errorf("%s listed with its body", d.ID)
				}
			}
		})
	}
	// A repository lastmile has no record of (a misspelt name) is not
	// found, as History says it.
	if got, err := db.ListDeliveries(ctx, storage.DeliveryFilter{Repository: "acme/zzz"}); !errors.Is(err, pipeline.ErrNotFound) || len(got) != 0 {
		t.Errorf("ListDeliveries of acme/zzz: %v, %v; want ErrNotFound", ids(got), err)
	}
}

func TestListDeliveriesDefaultLimit(t *testing.T) {
	ctx := context.Background()
	db := newInboxDB(t)
	for i := range 60 {
		acceptDelivery(t, db, pendingDelivery(fmt.Sprintf("d-%02d", i), "a/b"))
	}
	got, err := db.ListDeliveries(ctx, storage.DeliveryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 50 || got[0].ID != "d-59" {
		t.Errorf("got %d deliveries starting at %v; want the newest 50", len(got), ids(got[:1]))
	}
}

func TestKnownDeliveries(t *testing.T) {
	ctx := context.Background()
	db := newInboxDB(t)
	// More than one query's worth of IDs (KnownDeliveries asks in chunks).
	const stored = 700
	var all []string
	want := map[string]bool{}
	var wg sync.WaitGroup
	for i := range stored {
		id := fmt.Sprintf("known-%04d", i)
		d := pendingDelivery(id, "a/b")
		if i%2 == 0 {
			d.State, d.Body = pipeline.DeliveryIgnored, nil
		}
		wg.Add(1)
		go func() { // concurrently, so that the commits are grouped
			defer wg.Done()
			if _, err := db.Accept(ctx, d, "push", "accepted"); err != nil {
				t.Errorf("Accept: %v", err)
			}
		}()
		all = append(all, id, fmt.Sprintf("unknown-%04d", i))
		want[id] = true
	}
	wg.Wait()

	tests := map[string]struct {
		ids  []string
		want map[string]bool
	}{
		"none asked":       {nil, map[string]bool{}},
		"only unknown":     {[]string{"unknown-1", "unknown-2"}, map[string]bool{}},
		"mixed":            {[]string{"known-0001", "unknown-0001", "known-0002"}, map[string]bool{"known-0001": true, "known-0002": true}},
		"repeated":         {[]string{"known-0003", "known-0003"}, map[string]bool{"known-0003": true}},
		"many, in chunks":  {all, want},
		"prefix not known": {[]string{"known-", "known"}, map[string]bool{}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := db.KnownDeliveries(ctx, tc.ids)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Errorf("%d known, want %d", len(got), len(tc.want))
			}
			for id := range tc.want {
				if !got[id] {
					t.Errorf("%s not reported as known", id)
				}
			}
			for id := range got {
				if !tc.want[id] {
					t.Errorf("%s reported as known", id)
				}
			}
		})
	}
}

// A request counted and then taken back (GitHub did not accept it) leaves
// the count as it was; a GUID given up stays given up.
func TestRedeliveryRequests(t *testing.T) {
	ctx := context.Background()
	db := newInboxDB(t)
	at := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	forget := at.Add(-72 * time.Hour)
	steps := []func() error{
		func() error {
			return db.RedeliveryRequested(ctx, pipeline.HookDelivery{GUID: "g-1"}, false, at, forget)
		},
		func() error {
			return db.RedeliveryRequested(ctx, pipeline.HookDelivery{GUID: "g-1"}, false, at, forget)
		},
		func() error { return db.RedeliveryNotRequested(ctx, "g-1") },
		func() error {
			return db.RedeliveryRequested(ctx, pipeline.HookDelivery{GUID: "g-2"}, false, at, forget)
		},
		func() error { return db.RedeliveryNotRequested(ctx, "g-2") },
		func() error { return db.RedeliveryNotRequested(ctx, "g-2") }, // never below 0
		func() error { return db.RedeliveryNotRequested(ctx, "g-unknown") },
		func() error { return db.RedeliveryRequested(ctx, pipeline.HookDelivery{GUID: "g-3"}, true, at, forget) },
		func() error { return db.RedeliveryNotRequested(ctx, "g-3") },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i+1, err)
		}
	}
	got, err := db.RedeliveriesRequested(ctx, []string{"g-1", "g-2", "g-3", "g-unknown"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]pipeline.Redeliveries{"g-1": {Requests: 1}, "g-2": {}, "g-3": {GaveUp: true}}
	if len(got) != len(want) {
		t.Errorf("RedeliveriesRequested = %v, want %v", got, want)
	}
	for guid, w := range want {
		if got[guid] != w {
			t.Errorf("%s: %+v, want %+v", guid, got[guid], w)
		}
	}
}

// The deliveries given up on are listed with the attempt to redeliver (the
// latest recorded), their event and their earliest first attempt recorded,
// oldest first, from a time on: not those still asked for, nor those
// recorded without an attempt (before migration 0041), nor those GitHub
// refused to redeliver for good.
func TestGivenUpRedeliveries(t *testing.T) {
	ctx := context.Background()
	db := newInboxDB(t)
	at := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	forget := at.Add(-72 * time.Hour)
	hd := func(guid string, id int64, hoursAgo int) pipeline.HookDelivery {
		return pipeline.HookDelivery{GUID: guid, AttemptID: id, Event: "push", FirstAttempt: at.Add(-time.Duration(hoursAgo) * time.Hour)}
	}
	for i, step := range []struct {
		d      pipeline.HookDelivery
		gaveUp bool
	}{
		{hd("g-late", 30, 2), false},
		{hd("g-late", 31, 5), false}, // an earlier attempt seen by a later listing
		{hd("g-late", 32, 0), true},  // a listing that saw only its latest attempt
		{hd("g-early", 20, 10), true},
		{hd("g-asked", 40, 1), false},
		{hd("g-past", 10, 60), true},
		{pipeline.HookDelivery{GUID: "g-unrecorded"}, true},
		{hd("g-refused", 50, 3), false},
		{hd("g-refused", pipeline.RefusedForGood, 3), true}, // GitHub: 422
	} {
		if err := db.RedeliveryRequested(ctx, step.d, step.gaveUp, at, forget); err != nil {
			t.Fatalf("step %d: %v", i+1, err)
		}
	}
	got, err := db.GivenUpRedeliveries(ctx, at.Add(-48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []pipeline.HookDelivery{hd("g-early", 20, 10), hd("g-late", 32, 5)}
	if len(got) != len(want) {
		t.Fatalf("GivenUpRedeliveries = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].GUID != want[i].GUID || got[i].AttemptID != want[i].AttemptID || got[i].Event != want[i].Event || !got[i].FirstAttempt.Equal(want[i].FirstAttempt) {
			t.Errorf("%d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestNextWorkKeepsUpWithArrivalsAndHandling plays deliveries arriving and
// the worker taking, finishing and failing them, in a random order, and
// after every step compares what NextWork hands out (the worker's database,
// whose queue heads are cached) with what a freshly opened database finds
// by searching the whole queue.
func TestNextWorkKeepsUpWithArrivalsAndHandling(t *testing.T) {
	ctx := context.Background()
	db := newInboxDB(t)
	rng := rand.New(rand.NewPCG(7, 7))
	repos := []string{"acme/a", "acme/b", "acme/c", "acme/d"}
	later := inboxT0.Add(time.Hour) // "now" for NextWork: fresh deliveries are due
	fresh := func() []string {
		cold, err := storage.Open(ctx, db.Path())
		if err != nil {
			t.Fatal(err)
		}
		defer cold.Close()
		ds, _, err := cold.NextWork(ctx, later, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		return ids(ds)
	}
	handled, arrived := 0, 0
	for step := range 80 {
		if rng.IntN(3) > 0 { // arrivals outnumber handling: a backlog builds
			arrived++
			acceptDelivery(t, db, pendingDelivery(fmt.Sprintf("d%02d", arrived), repos[rng.IntN(len(repos))]))
		}
		got, _, err := db.NextWork(ctx, later, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		if want := fresh(); !slices.Equal(ids(got), want) {
			t.Fatalf("step %d: NextWork = %v, a fresh search finds %v", step, ids(got), want)
		}
		if len(got) == 0 {
			continue
		}
		d := got[rng.IntN(len(got))]
		switch rng.IntN(4) {
		case 0: // fails, retried later: its repository waits
			err = db.FailDelivery(ctx, d.Seq, "boom", later.Add(time.Minute), false)
		case 1: // dead: the next one of its repository comes up
			err = db.FailDelivery(ctx, d.Seq, "boom", time.Time{}, true)
		default:
			err = db.FinishDelivery(ctx, d.Seq, "")
		}
		if err != nil {
			t.Fatal(err)
		}
		handled++
	}
	if handled < 20 || arrived < 40 {
		t.Fatalf("the walk did too little: %d arrived, %d handled", arrived, handled)
	}
}

// An installation's own events (no repository) are queued by installation:
// one installation's event waiting for its retry holds up no other's (an
// unsuspension among them), while one installation's events still go one
// at a time, in order — also when the worker's view of the queues is built
// again from the database.
func TestInstallationEventsQueuedByInstallation(t *testing.T) {
	ctx := context.Background()
	db := newInboxDB(t)
	event := func(id string, inst int64) *pipeline.Delivery {
		return acceptDelivery(t, db, &pipeline.Delivery{ID: id, Event: "installation", Action: "created", InstallationID: inst,
			State: pipeline.DeliveryPending, Body: []byte(`{}`)})
	}
	a1 := event("inst-1a", 1)
	event("inst-2", 2)
	event("inst-1b", 1)
	got, err := db.NextDeliveries(ctx, inboxT0, nil, 10)
	if err != nil || !slices.Equal(ids(got), []string{"inst-1a", "inst-2"}) {
		t.Fatalf("first look: %v %v; want the head of each installation's queue", ids(got), err)
	}
	busy := map[pipeline.InHand]bool{got[0].InHand(): true}
	if got, err := db.NextDeliveries(ctx, inboxT0, busy, 10); err != nil || !slices.Equal(ids(got), []string{"inst-2"}) {
		t.Fatalf("with installation 1's event in hand: %v %v; want installation 2's only", ids(got), err)
	}
	if err := db.FailDelivery(ctx, a1.Seq, "GitHub 502", inboxT0.Add(time.Hour), false); err != nil {
		t.Fatal(err)
	}
	for view, db := range queueViews(t, db) {
		got, err = db.NextDeliveries(ctx, inboxT0.Add(time.Minute), nil, 10)
		if err != nil || !slices.Equal(ids(got), []string{"inst-2"}) {
			t.Errorf("queues %s, installation 1's first event waiting for its retry: %v %v; want installation 2's (installation 1's second waits behind its first)",
				view, ids(got), err)
		}
	}
}
