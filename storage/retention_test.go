package storage_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
	"github.com/lastmile-app/lastmile/storage/storagetest"
)

// retentionT0 is when the old deliveries of the retention tests arrived.
var retentionT0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// fillHandled stores n handled (done) deliveries with bodies of size bytes,
// received at retentionT0, concurrently so that they share commits.
func fillHandled(t *testing.T, db *storage.DB, prefix string, n, size int) {
	t.Helper()
	db.Now = func() time.Time { return retentionT0 }
	defer func() { db.Now = time.Now }()
	body := storagetest.Noise(size)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 32)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d := &pipeline.Delivery{ID: fmt.Sprintf("%s-%05d", prefix, i), Event: "push", Repository: "acme/shop",
				RepositoryID: 1, InstallationID: 7, State: pipeline.DeliveryDone, Body: body}
			if _, err := db.Accept(context.Background(), d, "push", "accepted"); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// fileSize closes db, which checkpoints the WAL into the file (the last
// connection's close removes the WAL), and returns the file's size.
func fileSize(t *testing.T, db *storage.DB) int64 {
	t.Helper()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(db.Path() + "-wal"); err == nil {
		t.Fatalf("%s-wal is still there after close: the size would not be the database's", db.Path())
	}
	fi, err := os.Stat(db.Path())
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func open(t *testing.T, path string) *storage.DB {
	t.Helper()
	db, err := storage.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func disk(t *testing.T, db *storage.DB) storage.Disk {
	t.Helper()
	d, err := db.DiskUsage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// countDeliveries counts the delivery records (pruning keeps them).
func countDeliveries(t *testing.T, db *storage.DB) int {
	t.Helper()
	list, err := db.ListDeliveries(context.Background(), storage.DeliveryFilter{Limit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

const (
	retentionDeliveries = 1500
	retentionBodySize   = 8000 // like a GitHub push: two 4 KB pages each
	retentionBodiesSize = retentionDeliveries * retentionBodySize
)

func TestPruneShrinksANewDatabase(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lastmile.db")
	db := open(t, path)
	if d := disk(t, db); d.AutoVacuum != "incremental" {
		t.Fatalf("a new database: auto_vacuum %s, want incremental", d.AutoVacuum)
	}
	fillHandled(t, db, "old", retentionDeliveries, retentionBodySize)
	before := fileSize(t, db)
	if before < retentionBodiesSize {
		t.Fatalf("%d bodies of %d bytes in a file of %d bytes", retentionDeliveries, retentionBodySize, before)
	}

	db = open(t, path)
	d0 := disk(t, db)
	p, err := db.Prune(ctx, retentionT0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if p.DeliveryBodies != retentionDeliveries {
		t.Errorf("pruned %d bodies, want %d", p.DeliveryBodies, retentionDeliveries)
	}
	d1 := disk(t, db)
	if p.Disk != d1 {
		t.Errorf("Prune reports the file as %+v, DiskUsage as %+v", p.Disk, d1)
	}
	if d1.FreelistCount != 0 {
		t.Errorf("%d free pages left after the prune, want 0", d1.FreelistCount)
	}
	if d1.PageCount > d0.PageCount-retentionBodiesSize/d0.PageSize {
		t.Errorf("page_count %d → %d: the bodies' %d bytes (%d pages) were not given back",
			d0.PageCount, d1.PageCount, retentionBodiesSize, retentionBodiesSize/d0.PageSize)
	}
	if p.PagesReclaimed != d0.PageCount-d1.PageCount {
		t.Errorf("Prune says it reclaimed %d pages; page_count went from %d to %d", p.PagesReclaimed, d0.PageCount, d1.PageCount)
	}
	if n := countDeliveries(t, db); n != retentionDeliveries {
		t.Errorf("%d deliveries after the prune, want the %d records kept", n, retentionDeliveries)
	}
	after := fileSize(t, db)
	t.Logf("file %d → %d bytes, page_count %d → %d, %d pages reclaimed", before, after, d0.PageCount, d1.PageCount, p.PagesReclaimed)
	if after > before-retentionBodiesSize {
		t.Errorf("the file went from %d to %d bytes after pruning %d bytes of bodies", before, after, retentionBodiesSize)
	}

	// Nothing left to free: the next prune gives back nothing.
	db = open(t, path)
	if p, err := db.Prune(ctx, retentionT0.Add(time.Hour)); err != nil || p.DeliveryBodies != 0 || p.PagesReclaimed != 0 {
		t.Errorf("a second prune: %+v %v", p, err)
	}
}

// oldStyleDatabase makes a database as lastmile did before it set
// auto_vacuum: the file switched to WAL (its first page written) before
// Open creates the tables.
func oldStyleDatabase(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "lastmile.db")
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Ping(); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	return path
}

func TestPruneOnADatabaseWithoutAutoVacuumAndItsConversion(t *testing.T) {
	ctx := context.Background()
	path := oldStyleDatabase(t)
	db := open(t, path)
	if d := disk(t, db); d.AutoVacuum != "none" {
		t.Fatalf("the old-style database: auto_vacuum %s, want none", d.AutoVacuum)
	}
	fillHandled(t, db, "old", retentionDeliveries, retentionBodySize)
	before := fileSize(t, db)

	// It prunes as before: the bodies go, the records stay, the pages are
	// free for new data but the file keeps its size.
	db = open(t, path)
	d0 := disk(t, db)
	p, err := db.Prune(ctx, retentionT0.Add(time.Hour))
	if err != nil || p.DeliveryBodies != retentionDeliveries || p.PagesReclaimed != 0 {
		t.Fatalf("prune: %+v %v", p, err)
	}
	if p.Disk.AutoVacuum != "none" || p.Disk.PageCount != d0.PageCount || p.Disk.FreelistCount < retentionBodiesSize/d0.PageSize {
		t.Errorf("after the prune: %+v (before %+v)", p.Disk, d0)
	}
	if n := countDeliveries(t, db); n != retentionDeliveries {
		t.Errorf("%d deliveries after the prune, want %d", n, retentionDeliveries)
	}
	if got := fileSize(t, db); got != before {
		t.Errorf("the file went from %d to %d bytes without auto_vacuum", before, got)
	}

	// Vacuum converts it: incremental, compacted, the records kept.
	db = open(t, path)
	v, err := db.Vacuum(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Converted || v.Before.AutoVacuum != "none" || v.After.AutoVacuum != "incremental" || v.After.FreelistCount != 0 ||
		v.After.Bytes() > v.Before.Bytes()-retentionBodiesSize {
		t.Errorf("vacuum: %+v", v)
	}
	if d := disk(t, db); d != v.After {
		t.Errorf("Vacuum reports %+v, DiskUsage %+v", v.After, d)
	}
	if n := countDeliveries(t, db); n != retentionDeliveries {
		t.Errorf("%d deliveries after the vacuum, want %d", n, retentionDeliveries)
	}
	converted := fileSize(t, db)
	t.Logf("file %d → %d bytes (vacuum: %+v)", before, converted, v)
	if converted > before-retentionBodiesSize {
		t.Errorf("the file went from %d to %d bytes after the vacuum", before, converted)
	}

	// From then on a prune shrinks it.
	db = open(t, path)
	fillHandled(t, db, "older", retentionDeliveries, retentionBodySize)
	full := fileSize(t, db)
	db = open(t, path)
	if p, err := db.Prune(ctx, retentionT0.Add(time.Hour)); err != nil || p.DeliveryBodies != retentionDeliveries || p.PagesReclaimed == 0 {
		t.Fatalf("prune after the conversion: %+v %v", p, err)
	}
	if got := fileSize(t, db); got > full-retentionBodiesSize {
		t.Errorf("after the conversion, a prune took the file from %d to %d bytes", full, got)
	}

	// A second vacuum has nothing to convert, and rewrites nothing.
	db = open(t, path)
	if v, err := db.Vacuum(ctx); err != nil || v.Converted || v.Before != v.After {
		t.Errorf("vacuum of a converted database: %+v %v", v, err)
	}
}

// TestPruneKeepsTheIntakeGoing checks that deliveries are accepted while a
// prune gives many pages back: the intake waits for one step at a time, not
// for the whole of it.
func TestPruneKeepsTheIntakeGoing(t *testing.T) {
	ctx := context.Background()
	db := open(t, filepath.Join(t.TempDir(), "lastmile.db"))
	fillHandled(t, db, "old", 4*retentionDeliveries, retentionBodySize)

	var pruning atomic.Bool
	stop := make(chan struct{})
	type result struct {
		during  int           // deliveries accepted wholly within the prune
		slowest time.Duration // the longest Accept among them
		err     error
	}
	res := make(chan result, 1)
	go func() {
		var r result
		for i := 0; ; i++ {
			select {
			case <-stop:
				res <- r
				return
			default:
			}
			began, inside := time.Now(), pruning.Load()
			d := &pipeline.Delivery{ID: fmt.Sprintf("new-%d", i), Event: "push", Repository: "acme/shop", RepositoryID: 1,
				InstallationID: 7, State: pipeline.DeliveryPending, Body: []byte(`{}`)}
			if _, err := db.Accept(ctx, d, "push", "accepted"); err != nil {
				r.err = err
				res <- r
				return
			}
			if inside && pruning.Load() {
				r.during++
				r.slowest = max(r.slowest, time.Since(began))
			}
		}
	}()
	pruning.Store(true)
	began := time.Now()
	p, err := db.Prune(ctx, retentionT0.Add(time.Hour))
	took := time.Since(began)
	pruning.Store(false)
	close(stop)
	r := <-res
	if err != nil || r.err != nil {
		t.Fatal(err, r.err)
	}
	t.Logf("prune of %d bodies: %v, %d pages given back; %d deliveries accepted meanwhile, the slowest in %v",
		p.DeliveryBodies, took, p.PagesReclaimed, r.during, r.slowest)
	if p.PagesReclaimed < 4*retentionBodiesSize/p.Disk.PageSize {
		t.Fatalf("%d pages given back, want the bodies' %d at least", p.PagesReclaimed, 4*retentionBodiesSize/p.Disk.PageSize)
	}
	// Tens of steps: a delivery gets in between most of them.
	if want := int(p.PagesReclaimed / 128 / 2); r.during < want {
		t.Errorf("%d deliveries accepted during the prune's %v, want %d at least", r.during, took, want)
	}
}

// A vacuum interrupted while it converts a database (Ctrl-C) says what it
// left, whenever the interruption came: converted, or as it was — as the
// file, opened again, shows. (The driver answers the context's error for
// a statement it ended during, finished or not.)
func TestVacuumInterruptedSaysWhatItLeft(t *testing.T) {
	ctx := context.Background()
	src := oldStyleDatabase(t)
	fillHandled(t, open(t, src), "old", retentionDeliveries, retentionBodySize)
	open(t, src).Close() // checkpointed into the one file
	for _, walBytes := range []int64{-1, 0, 1 << 20, 4 << 20, 8 << 20} {
		t.Run(fmt.Sprint(walBytes), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "lastmile.db")
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			db := open(t, path)
			vctx, cancel := context.WithCancel(ctx)
			defer cancel()
			done := make(chan struct{})
			var v storage.Vacuumed
			var verr error
			go func() { defer close(done); v, verr = db.Vacuum(vctx) }()
			// Interrupted once the WAL holds walBytes (-1: at once), or
			// not at all if it ends first.
			for stop := time.After(30 * time.Second); ; {
				fi, err := os.Stat(path + "-wal")
				if walBytes < 0 || err == nil && fi.Size() > walBytes {
					cancel()
					break
				}
				select {
				case <-done:
				case <-stop:
					t.Fatal("vacuum neither ended nor grew the WAL in 30 s")
				case <-time.After(time.Millisecond):
					continue
				}
				break
			}
			<-done
			db.Close()
			after := disk(t, open(t, path)).AutoVacuum
			t.Logf("interrupted past %d WAL bytes: %+v converted, %v; the file: %s", walBytes, v.Converted, verr, after)
			switch {
			case verr == nil || strings.Contains(verr.Error(), "interrupted once VACUUM had finished: the database is converted"):
				if !v.Converted || after != "incremental" {
					t.Errorf("reported converted (%v), the file's auto_vacuum %s", verr, after)
				}
			case strings.Contains(verr.Error(), "vacuum interrupted: nothing changed, the database is as it was"):
				if v.Converted || after != "none" {
					t.Errorf("reported unchanged (%v), the file's auto_vacuum %s", verr, after)
				}
			default:
				t.Errorf("an interrupted vacuum: %v", verr)
			}
			if n := countDeliveries(t, open(t, path)); n != retentionDeliveries {
				t.Errorf("%d deliveries after it, want %d", n, retentionDeliveries)
			}
		})
	}
}
