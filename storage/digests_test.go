package storage_test

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/storage"
)

// ClaimBody names the delivery a body was first taken up under, that one
// at each of its own attempts, durably; retention drops a digest at the age
// its body goes, and the body can be taken up again then.
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
	push, other := sha256.Sum256([]byte(`{"ref":"refs/heads/main"}`)), sha256.Sum256([]byte(`{"ref":"refs/heads/dev"}`))
	claim := func(db interface {
		ClaimBody(context.Context, [sha256.Size]byte, string) (string, error)
	}, digest [sha256.Size]byte, id, want string) {
		t.Helper()
		if got, err := db.ClaimBody(ctx, digest, id); err != nil || got != want {
			t.Errorf("ClaimBody(%s): %q, %v; want %q", id, got, err, want)
		}
	}
	claim(db, push, "first", "first")
	claim(db, push, "replay", "first")
	claim(db, push, "first", "first") // its own retry
	claim(db, other, "replay", "replay")

	// Kept across a restart.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open()
	db.Now = func() time.Time { return t0.Add(time.Hour) }
	claim(db, push, "again", "first")

	// A prune of what is older than the digests keeps them; one past
	// them drops both, and the body can be taken up again.
	if _, err := db.Prune(ctx, t0); err != nil {
		t.Fatal(err)
	}
	claim(db, push, "again", "first")
	if _, err := db.Prune(ctx, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	claim(db, push, "again", "again")
	claim(db, other, "later", "later")
}
