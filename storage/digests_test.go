package storage_test

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// ClaimBody names the delivery a body was first taken up under — that one
// at each of its own attempts — once an outcome of that delivery's attempt
// is recorded (a retry as much as a success), durably; retention drops a
// digest at the age its body goes, and the body can be taken up again then.
func TestClaimBody(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/lastmile.db"
	t0 := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	open := func() *storage.DB {
		t.Helper()
		db, err := storage.Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	db := open()
	db.Now = func() time.Time { return t0 }
	bodies := map[string][]byte{"first": []byte(`{"ref":"refs/heads/main"}`), "replay": []byte(`{"ref":"refs/heads/main"}`),
		"other": []byte(`{"ref":"refs/heads/dev"}`), "again": []byte(`{"ref":"refs/heads/main"}`), "later": []byte(`{"ref":"refs/heads/dev"}`)}
	seq := map[string]int64{}
	for _, id := range []string{"first", "replay", "other", "again", "later"} {
		d := &pipeline.Delivery{ID: id, Event: "push", Repository: "acme/shop", Body: bodies[id], State: pipeline.DeliveryPending, ReceivedAt: t0}
		if _, err := db.Accept(ctx, d, "push", githubapp.OutcomeAccepted); err != nil {
			t.Fatal(err)
		}
		seq[id] = d.Seq
	}
	claim := func(db *storage.DB, id, want string) {
		t.Helper()
		if got, err := db.ClaimBody(ctx, seq[id], sha256.Sum256(bodies[id]), id); err != nil || got != want {
			t.Errorf("ClaimBody(%s): %q, %v; want %q", id, got, err, want)
		}
	}
	claim(db, "first", "first")
	claim(db, "replay", "replay") // nothing recorded before first's outcome
	if err := db.FailDelivery(ctx, seq["first"], "GitHub answered 502", t0.Add(time.Minute), false); err != nil {
		t.Fatal(err)
	}
	claim(db, "replay", "first")
	claim(db, "first", "first") // its own retry
	if err := db.FinishDelivery(ctx, seq["first"], ""); err != nil {
		t.Fatal(err)
	}
	claim(db, "other", "other")
	if err := db.PostponeDelivery(ctx, seq["other"], "rate limited", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	claim(db, "later", "other")

	// Kept across a restart.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open()
	db.Now = func() time.Time { return t0.Add(time.Hour) }
	claim(db, "again", "first")

	// A prune of what is older than the digests keeps them; one past
	// them drops both, and the bodies can be taken up again.
	if _, err := db.Prune(ctx, t0); err != nil {
		t.Fatal(err)
	}
	claim(db, "again", "first")
	if _, err := db.Prune(ctx, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	claim(db, "again", "again")
	claim(db, "later", "later")
}
