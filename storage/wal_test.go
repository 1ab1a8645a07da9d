package storage

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// openFile opens a new database in a temporary folder, and gives its path.
func openFile(t *testing.T) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "lastmile.db")
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

// walBytes is the size of the database's WAL file.
func walBytes(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// A large write (here one transaction of 80 MB; a burst, a first prune or
// a migration alike) leaves the WAL file no larger than walSizeLimit once
// a checkpoint has caught up and the WAL starts over: it is cut back.
func TestTheWALIsCutBackAfterALargeWrite(t *testing.T) {
	ctx := context.Background()
	db, path := openFile(t)
	if _, err := db.exec(ctx, `INSERT INTO settings (key, value) VALUES ('big', zeroblob(80 << 20))`); err != nil {
		t.Fatal(err)
	}
	if n := walBytes(t, path); n <= walSizeLimit {
		t.Fatalf("WAL %d MB after an 80 MB write", n>>20)
	}
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; walBytes(t, path) > walSizeLimit; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("WAL still %d MB, past %d MB, once idle", walBytes(t, path)>>20, walSizeLimit>>20)
		}
		// The checkpointer catches up; a write then starts the WAL over.
		if err := db.checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := db.exec(ctx, `INSERT INTO settings (key, value) VALUES ('tick', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, i); err != nil {
			t.Fatal(err)
		}
	}
}

// Under a steady intake a passive checkpoint never catches up (commits
// keep coming as it copies), and the WAL would hold every frame written:
// the checkpointer makes it start over past walSizeLimit, so that it stays
// well below twice what the intake writes.
func TestTheWALStaysBoundedUnderASteadyIntake(t *testing.T) {
	ctx := context.Background()
	db, path := openFile(t)
	const senders, each = 16, 1000
	body := noise(8000)
	var largest atomic.Int64
	var wg sync.WaitGroup
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				d := &pipeline.Delivery{ID: fmt.Sprintf("d-%d-%d", g, i), Event: "push", Repository: "acme/shop", RepositoryID: 1,
					InstallationID: 7, State: pipeline.DeliveryDone, Body: body}
				if _, err := db.Accept(ctx, d, "push", "accepted"); err != nil {
					t.Error(err)
					return
				}
				if g == 0 {
					if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() > largest.Load() {
						largest.Store(fi.Size())
					}
				}
			}
		}()
	}
	wg.Wait()
	written := int64(senders * each * len(body))
	t.Logf("%d MB of bodies written; the WAL's largest %d MB", written>>20, largest.Load()>>20)
	// Holding every frame written, the WAL passes twice the bodies (their
	// pages, and the indexes'); made to start over, it stays near
	// walSizeLimit plus what a few ticks write — on a machine so busy that
	// ticks slip, about the bodies written.
	if largest.Load() >= written*3/2 {
		t.Errorf("the WAL grew to %d MB under a steady intake of %d MB of bodies: it holds everything written", largest.Load()>>20, written>>20)
	}
}

// noise returns n bytes of hex digits that do not compress, for the tests
// that measure what the database writes (storagetest.Noise, for the tests
// outside the package).
func noise(n int) []byte {
	rng := rand.New(rand.NewPCG(uint64(n), 0x5eed))
	out := make([]byte, n)
	for i := range out {
		out[i] = "0123456789abcdef"[rng.IntN(16)]
	}
	return out
}
