package storage_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// rawConn opens a connection of the test's own to db's file, beside db's:
// to write history in bulk, and to read what Prune has committed so far.
func rawConn(t testing.TB, db *storage.DB) *sql.DB {
	t.Helper()
	raw, err := sql.Open("sqlite", "file:"+db.Path()+"?_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	raw.SetMaxOpenConns(1)
	t.Cleanup(func() { raw.Close() })
	return raw
}

// insertHistory writes n handled (done) deliveries, without bodies, received
// 15 ms apart from `from` on (the reviewer's way to make a long history
// fast), and bodies of bodySize bytes for the first withBody of them. It
// returns the received_at of the last one, in milliseconds.
func insertHistory(t testing.TB, raw *sql.DB, prefix string, from time.Time, n, withBody, bodySize int) int64 {
	t.Helper()
	ctx := context.Background()
	if _, err := raw.ExecContext(ctx, `WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < ?)
		INSERT INTO deliveries (delivery_id, event, repository, repository_id, installation_id, received_at, state)
		SELECT ?||'-'||i, 'push', 'acme/shop', 1, 7, ? + i*15, 'done' FROM c`, n, prefix, from.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if withBody > 0 {
		if _, err := raw.ExecContext(ctx, `INSERT INTO delivery_bodies (seq, body)
			SELECT seq, randomblob(?) FROM deliveries WHERE delivery_id LIKE ?||'-%' ORDER BY seq LIMIT ?`,
			bodySize, prefix, withBody); err != nil {
			t.Fatal(err)
		}
	}
	return from.UnixMilli() + int64(n)*15
}

func countBodies(t testing.TB, raw *sql.DB, prefix string) int {
	t.Helper()
	var n int
	if err := raw.QueryRow(`SELECT COUNT(*) FROM delivery_bodies b JOIN deliveries d ON d.seq = b.seq
		WHERE d.delivery_id LIKE ?||'-%'`, prefix).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPruneDoesNotWalkTheHistoryAgain is the regression test of an hourly
// prune that read every delivery ever received (delivery records are never
// deleted) in one write transaction, although there was nothing left to
// prune: the webhook intake waited for it, longer as the history grew. A
// prune goes on from where the last one stopped (the mark it keeps in the
// setting retention.bodies): it reads what arrived since, not the history.
//
// What the prune reads is checked without a clock: a body put back, behind
// Prune's back, on a delivery of the history it already went through is a
// marker that a prune reading the history again would delete.
func TestPruneDoesNotWalkTheHistoryAgain(t *testing.T) {
	const history = 200_000
	ctx := context.Background()
	db := open(t, filepath.Join(t.TempDir(), "lastmile.db"))
	raw := rawConn(t, db)
	last := insertHistory(t, raw, "old", retentionT0, history, 0, 0)

	p, err := db.Prune(ctx, retentionT0.Add(72*time.Hour))
	if err != nil || p.DeliveryBodies != 0 {
		t.Fatalf("first prune: %+v %v", p, err)
	}
	mark, ok, err := db.Setting(ctx, "retention.bodies")
	if err != nil || !ok {
		t.Errorf("no mark after the first prune: %q %v %v", mark, ok, err)
	}
	var lastSeq int64
	if err := raw.QueryRow(`SELECT MAX(seq) FROM deliveries`).Scan(&lastSeq); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d/%d", last, lastSeq); mark != want {
		t.Errorf("mark %s after the first prune, want the last delivery's %s", mark, want)
	}

	// The marker, and an hour of new deliveries, one of them handled with a body.
	if _, err := raw.Exec(`INSERT INTO delivery_bodies (seq, body) SELECT seq, x'00' FROM deliveries WHERE delivery_id = 'old-1000'`); err != nil {
		t.Fatal(err)
	}
	insertHistory(t, raw, "new", time.UnixMilli(last), 240, 1, 100)
	// Deploy logs, more than a batch of them old, a few new; fetched_at
	// has its index, of the kept logs only.
	noFK := rawConnNoFK(t, db)
	if _, err := noFK.Exec(`WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < 310)
		INSERT INTO job_logs (job_id, deployment_id, name, log, size, fetched_at)
		SELECT i, 1, 'deploy', randomblob(100), 100, CASE WHEN i <= 300 THEN ? ELSE ? END FROM c`,
		retentionT0.UnixMilli(), retentionT0.Add(100*time.Hour).UnixMilli()); err != nil {
		t.Fatal(err)
	}
	p, err = db.Prune(ctx, retentionT0.Add(73*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n := countBodies(t, raw, "old"); n != 1 {
		t.Errorf("the second prune read the history again: the marker body is gone (%d old bodies)", n)
	}
	if p.DeliveryBodies != 1 || countBodies(t, raw, "new") != 0 {
		t.Errorf("second prune: %+v, want the new body pruned (%d new bodies left)", p, countBodies(t, raw, "new"))
	}
	var kept int
	if err := raw.QueryRow(`SELECT COUNT(*) FROM job_logs WHERE log IS NOT NULL`).Scan(&kept); err != nil {
		t.Fatal(err)
	}
	if p.JobLogs != 300 || kept != 10 {
		t.Errorf("%d logs pruned, %d kept; want 300 and 10", p.JobLogs, kept)
	}
	if _, err := db.JobLog(ctx, 1); !errors.Is(err, storage.ErrPruned) {
		t.Errorf("a pruned log: %v", err)
	}
	if p, err := db.Prune(ctx, retentionT0.Add(73*time.Hour)); err != nil || p.DeliveryBodies+p.JobLogs != 0 {
		t.Errorf("a third prune: %+v %v", p, err)
	}
	if n := countDeliveries(t, db); n != history+240 {
		t.Errorf("%d delivery records, want %d", n, history+240)
	}
}

// rawConnNoFK is rawConn without foreign keys: deploy logs without their
// deployments.
func rawConnNoFK(t testing.TB, db *storage.DB) *sql.DB {
	t.Helper()
	raw, err := sql.Open("sqlite", "file:"+db.Path()+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	raw.SetMaxOpenConns(1)
	t.Cleanup(func() { raw.Close() })
	return raw
}

// acceptAt stores a delivery received at `at`, in state st (pending or done),
// with a body.
func acceptAt(t *testing.T, db *storage.DB, id string, at time.Time, st pipeline.DeliveryState) *pipeline.Delivery {
	t.Helper()
	d := &pipeline.Delivery{ID: id, Event: "push", Repository: "acme/shop", RepositoryID: 1, InstallationID: 7,
		State: st, ReceivedAt: at, Body: []byte(`{"ref":"refs/heads/main"}`)}
	if _, err := db.Accept(context.Background(), d, "push", "accepted"); err != nil {
		t.Fatal(err)
	}
	return d
}

func hasBody(t *testing.T, db *storage.DB, id string) bool {
	t.Helper()
	d, err := db.GetDelivery(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d.Body != nil
}

// TestPruneKeepsPendingAndDeadBodiesUntilHandled checks that the prune going
// on from its mark does not forget the deliveries it passed while they were
// pending or dead: they keep their bodies across prunes, and lose them at
// the first prune after they are handled (done, or discarded as ignored).
func TestPruneKeepsPendingAndDeadBodiesUntilHandled(t *testing.T) {
	ctx := context.Background()
	db := open(t, filepath.Join(t.TempDir(), "lastmile.db"))
	t0 := retentionT0
	pending := acceptAt(t, db, "pending", t0, pipeline.DeliveryPending)
	retried := acceptAt(t, db, "retried", t0.Add(time.Second), pipeline.DeliveryPending)
	discarded := acceptAt(t, db, "discarded", t0.Add(2*time.Second), pipeline.DeliveryPending)
	for _, d := range []*pipeline.Delivery{retried, discarded} {
		if err := db.FailDelivery(ctx, d.Seq, "boom", time.Time{}, true); err != nil {
			t.Fatal(err)
		}
	}
	acceptAt(t, db, "done", t0.Add(3*time.Second), pipeline.DeliveryDone)
	acceptAt(t, db, "later", t0.Add(time.Hour), pipeline.DeliveryDone)
	cutoff := t0.Add(2 * time.Hour)

	prune := func(want int64) {
		t.Helper()
		p, err := db.Prune(ctx, cutoff)
		if err != nil || p.DeliveryBodies != want {
			t.Fatalf("prune: %+v %v, want %d bodies pruned", p, err, want)
		}
	}
	kept := func(ids ...string) {
		t.Helper()
		for _, id := range ids {
			if !hasBody(t, db, id) {
				t.Errorf("%s: body pruned", id)
			}
		}
	}
	gone := func(ids ...string) {
		t.Helper()
		for _, id := range ids {
			if hasBody(t, db, id) {
				t.Errorf("%s: body kept", id)
			}
		}
	}

	prune(2)
	gone("done", "later")
	kept("pending", "retried", "discarded")
	// The mark went past them: the next prunes do not read them again
	// from the history, and yet do not forget them.
	if mark, _, err := db.Setting(ctx, "retention.bodies"); err != nil || mark != fmt.Sprintf("%d/%d", t0.Add(time.Hour).UnixMilli(), discarded.Seq+2) {
		t.Errorf("mark %q %v, want past the pending and dead deliveries", mark, err)
	}
	cutoff = cutoff.Add(time.Hour)
	prune(0)
	kept("pending", "retried", "discarded")

	if err := db.FinishDelivery(ctx, pending.Seq, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := db.RetryDelivery(ctx, "retried"); err != nil {
		t.Fatal(err)
	}
	prune(1)
	gone("pending")
	kept("retried", "discarded")

	if err := db.FinishDelivery(ctx, retried.Seq, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := db.DiscardDelivery(ctx, "discarded", "test"); err != nil {
		t.Fatal(err)
	}
	prune(2)
	gone("retried", "discarded")
	prune(0)
	if n := countDeliveries(t, db); n != 5 {
		t.Errorf("%d delivery records, want 5", n)
	}
}

// TestPruneCommitsInSmallBatches checks that a large first prune (all the
// old bodies at once) is many short transactions, not one: a reader sees it
// half done, a delivery accepted meanwhile is stored before the prune ends,
// and a prune cancelled halfway leaves what it did, which the next one
// completes.
func TestPruneCommitsInSmallBatches(t *testing.T) {
	const n = 20_000
	ctx := context.Background()
	db := open(t, filepath.Join(t.TempDir(), "lastmile.db"))
	raw := rawConn(t, db)
	insertHistory(t, raw, "old", retentionT0, n, n, 600)

	pruneCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		p   storage.Pruned
		err error
	}
	done := make(chan result, 1)
	go func() {
		p, err := db.Prune(pruneCtx, retentionT0.Add(72*time.Hour))
		done <- result{p, err}
	}()

	// Deliveries are accepted while the prune goes on, until one is seen
	// stored with the prune halfway (some old bodies gone, some left);
	// then the prune is cancelled.
	deadline := time.Now().Add(time.Minute)
	halfway := false
	var r result
	finished := false
	for i := 0; !halfway && !finished; i++ {
		if time.Now().After(deadline) {
			t.Fatal("no delivery stored with the prune halfway within a minute")
		}
		d := &pipeline.Delivery{ID: fmt.Sprintf("new-%d", i), Event: "push", Repository: "acme/shop",
			RepositoryID: 1, InstallationID: 7, State: pipeline.DeliveryPending, Body: []byte(`{}`)}
		if _, err := db.Accept(ctx, d, "push", "accepted"); err != nil {
			t.Fatal(err)
		}
		left := countBodies(t, raw, "old")
		halfway = left > 0 && left < n
		select {
		case r = <-done:
			finished = true
		default:
		}
	}
	if !halfway {
		t.Fatalf("the prune ended (%+v %v) and no delivery was stored while it was halfway: one transaction?", r.p, r.err)
	}
	cancel()
	r = <-done
	if r.err == nil {
		t.Logf("the prune ended before its cancellation: %+v", r.p)
	} else if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled prune: %v", r.err)
	}
	left := countBodies(t, raw, "old")
	if r.p.DeliveryBodies != int64(n-left) {
		t.Errorf("cancelled prune says %d bodies pruned; %d of %d are gone", r.p.DeliveryBodies, n-left, n)
	}
	p, err := db.Prune(ctx, retentionT0.Add(72*time.Hour))
	if err != nil || p.DeliveryBodies != int64(left) {
		t.Fatalf("the prune after: %+v %v, want the %d bodies left", p, err, left)
	}
	if left := countBodies(t, raw, "old"); left != 0 {
		t.Errorf("%d old bodies left", left)
	}
	if d := disk(t, db); d.FreelistCount != 0 {
		t.Errorf("%d free pages left", d.FreelistCount)
	}
	t.Logf("cancelled after %d of %d bodies; the next prune did the %d others", n-left, n, left)
}
