package storage_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
	"github.com/lastmile-app/lastmile/storage/storagetest"
)

// sourceDatabase makes a lastmile database whose page size (1024) and
// auto_vacuum mode (incremental) are neither SQLite's defaults nor what
// an empty file starts with, holding n deliveries of 4 KB bodies.
func sourceDatabase(t *testing.T, n int) (*storage.DB, string) {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lastmile.db")
	storagetest.Exec(t, path, "PRAGMA page_size = 1024", "PRAGMA auto_vacuum = INCREMENTAL", "PRAGMA journal_mode = WAL")
	db, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	body := storagetest.Noise(4000)
	for i := range n {
		d := &pipeline.Delivery{ID: fmt.Sprintf("seed-%d", i), Event: "push", Repository: "acme/shop", Body: body}
		if _, err := db.Accept(ctx, d, "push", "accepted"); err != nil {
			t.Fatal(err)
		}
	}
	return db, path
}

// leftovers lists the files of dir other than want.
func leftovers(t *testing.T, dir string, want ...string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var extra []string
	for _, e := range entries {
		if !slices.Contains(want, e.Name()) {
			extra = append(extra, e.Name())
		}
	}
	return extra
}

// A backup taken while deliveries keep being committed (as a busy lastmile
// serve commits them) completes, in one snapshot: it holds every delivery
// committed before it began, and of those committed meanwhile a first part
// in order — none after a missing one —; it is sound, a single file (no
// -wal beside it, rollback journal mode), private, with the source's page
// size and auto_vacuum mode.
func TestCopyDatabaseWhileDeliveriesAreWritten(t *testing.T) {
	ctx := context.Background()
	db, src := sourceDatabase(t, 300)
	// 64 MB more, that a backup copying 100 pages at a time (as sqlite3's
	// .backup does) would take long enough to copy for commits to land
	// in between and make it start over, again and again.
	// Into the file, the WAL emptied: lastmile serve's checkpointer holds
	// its writes back (a RESTART checkpoint waiting for the backup's read
	// to end) when the WAL is larger than 64 MB.
	storagetest.Exec(t, src, "INSERT INTO settings (key, value) VALUES ('filler', randomblob(64 << 20))", "PRAGMA wal_checkpoint(TRUNCATE)")
	before, err := db.DiskUsage(ctx)
	if err != nil {
		t.Fatal(err)
	}

	var committed atomic.Int64
	started, stop, stopped := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		body := []byte(`{"ref":"refs/heads/main"}`)
		for i := 0; ; i++ {
			select {
			case <-stop:
				stopped <- nil
				return
			default:
			}
			d := &pipeline.Delivery{ID: fmt.Sprintf("live-%06d", i), Event: "push", Repository: "acme/shop", Body: body}
			if _, err := db.Accept(ctx, d, "push", "accepted"); err != nil {
				stopped <- err
				return
			}
			committed.Store(int64(i + 1))
			if i == 20 {
				close(started)
			}
		}
	}()
	<-started // the writer is well under way

	dest := filepath.Join(t.TempDir(), "backup.db")
	done := make(chan struct{})
	var c *storage.Copy
	var copyErr error
	committedBefore := committed.Load()
	go func() {
		defer close(done)
		c, copyErr = storage.CopyDatabase(ctx, src, dest)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute): // a bound on failure, not a synchronisation
		t.Fatal("the backup did not finish in 2 minutes while the writes went on")
	}
	committedAfter := committed.Load()
	close(stop)
	if err := <-stopped; err != nil {
		t.Fatalf("the writer: %v", err)
	}
	if copyErr != nil {
		t.Fatalf("CopyDatabase while writing: %v", copyErr)
	}
	t.Logf("%d deliveries committed before the backup began, %d while it ran", committedBefore, committedAfter-committedBefore)
	if extra := leftovers(t, filepath.Dir(dest)); len(extra) != 1 || !strings.HasPrefix(extra[0], "backup.db.tmp-") {
		t.Fatalf("before Place, the folder holds %v; want the one temporary copy", extra)
	}
	if err := c.Place(); err != nil {
		t.Fatal(err)
	}
	if extra := leftovers(t, filepath.Dir(dest), "backup.db"); len(extra) > 0 {
		t.Errorf("beside the backup: %v", extra)
	}

	fi, err := os.Stat(dest)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("backup mode %v, want 0600", fi.Mode().Perm())
	}
	header := make([]byte, 100)
	f, err := os.Open(dest)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.ReadAt(header, 0)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	// Bytes 18 and 19: the file format's write and read versions, 1 for
	// a rollback journal, 2 for WAL.
	if header[18] != 1 || header[19] != 1 {
		t.Errorf("backup file format versions %d/%d, want 1/1 (rollback journal: the file alone is the database)", header[18], header[19])
	}

	var integrity string
	raw, err := sql.Open("sqlite", "file:"+dest+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.QueryRow("PRAGMA integrity_check").Scan(&integrity); err != nil || integrity != "ok" {
		t.Errorf("integrity_check of the backup: %q %v", integrity, err)
	}
	raw.Close()

	ids := storagetest.DeliveryIDs(t, dest)
	var seeds, live []string
	for _, id := range ids {
		if strings.HasPrefix(id, "seed-") {
			seeds = append(seeds, id)
		} else {
			live = append(live, id)
		}
	}
	slices.Sort(live)
	if len(seeds) != 300 {
		t.Errorf("the backup holds %d of the 300 seeded deliveries", len(seeds))
	}
	if int64(len(live)) < committedBefore || int64(len(live)) > committedAfter {
		t.Errorf("the backup holds %d live deliveries; %d were committed before it began, %d by its end", len(live), committedBefore, committedAfter)
	}
	for i, id := range live {
		if want := fmt.Sprintf("live-%06d", i); id != want {
			t.Fatalf("the backup's live deliveries skip %s (it has %s): not one snapshot", want, id)
		}
	}

	copied, err := storage.OpenReadOnly(ctx, dest)
	if err != nil {
		t.Fatal(err)
	}
	defer copied.Close()
	disk, err := copied.DiskUsage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if disk.PageSize != before.PageSize || disk.AutoVacuum != before.AutoVacuum || before.PageSize != 1024 || before.AutoVacuum != "incremental" {
		t.Errorf("backup page size %d, auto_vacuum %s; the source's %d, %s", disk.PageSize, disk.AutoVacuum, before.PageSize, before.AutoVacuum)
	}
	s := c.Summary
	if s.Disk.PageSize != disk.PageSize || s.Disk.AutoVacuum != disk.AutoVacuum || s.Disk.Bytes() != fi.Size() ||
		s.Deliveries != int64(len(ids)) || s.NewestDelivery.IsZero() || s.Releases != 0 || !s.NewestRelease.IsZero() || s.Older {
		t.Errorf("summary %+v; the file: %+v, %d bytes, %d deliveries", s, disk, fi.Size(), len(ids))
	}
}

// A copy is placed at a name nothing holds only: an existing file there
// is refused and left as it was; Remove then leaves nothing of the copy.
func TestCopyDatabasePlacesANewFileOnly(t *testing.T) {
	ctx := context.Background()
	_, src := sourceDatabase(t, 3)
	dir := t.TempDir()
	dest := filepath.Join(dir, "backup.db")
	if err := os.WriteFile(dest, []byte("last week's backup"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := storage.CopyDatabase(ctx, src, dest)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Place(); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("Place over an existing file: %v", err)
	}
	c.Remove()
	if b, err := os.ReadFile(dest); err != nil || string(b) != "last week's backup" {
		t.Errorf("the existing file now holds %q (%v)", b, err)
	}
	if extra := leftovers(t, dir, "backup.db"); len(extra) > 0 {
		t.Errorf("left beside it: %v", extra)
	}
}

// Nor is a copy placed beside a file SQLite would apply to it: a -wal
// (or -journal, -shm) left by a database of that name deleted without it.
func TestCopyDatabaseIsNotPlacedBesideALeftoverWAL(t *testing.T) {
	ctx := context.Background()
	_, src := sourceDatabase(t, 3)
	dir := t.TempDir()
	dest := filepath.Join(dir, "backup.db")
	for _, suffix := range []string{"-wal", "-journal", "-shm"} {
		if err := os.WriteFile(dest+suffix, []byte("left"), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := storage.CopyDatabase(ctx, src, dest)
		if err != nil {
			t.Fatal(err)
		}
		var side *storage.SideFileError
		if err := c.Place(); !errors.As(err, &side) || side.Path != dest+suffix {
			t.Errorf("Place beside %s: %v, want it refused", suffix, err)
		}
		c.Remove()
		if extra := leftovers(t, dir, "backup.db"+suffix); len(extra) > 0 {
			t.Errorf("left beside it: %v", extra)
		}
		os.Remove(dest + suffix)
	}
}

// A source that cannot be backed up is refused, and nothing is left in
// the destination's folder: not a lastmile database, a newer lastmile's,
// a damaged one (its copy fails quick_check), a file that is no database,
// a missing file.
func TestCopyDatabaseRefusesABadSource(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, bad := range storagetest.BadDatabases(t) {
		t.Run(bad.Name, func(t *testing.T) {
			c, err := storage.CopyDatabase(ctx, bad.Path, filepath.Join(dir, "backup.db"))
			if err == nil || !strings.Contains(err.Error(), bad.Want) || c != nil {
				t.Errorf("CopyDatabase: %v, %v; want an error saying %q", c, err, bad.Want)
			}
			if extra := leftovers(t, dir); len(extra) > 0 {
				t.Errorf("left in the destination's folder: %v", extra)
			}
		})
	}
}

// SetAside moves a database and the files beside it to new names, one
// database still, and refuses when one of the new names is taken.
func TestSetAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lastmile.db")
	for _, name := range []string{"lastmile.db", "lastmile.db-wal", "lastmile.db-shm"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(name), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	aside := filepath.Join(dir, "lastmile.db.before-restore-20250102T030405Z")
	if err := os.WriteFile(aside+"-shm", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if moved, err := storage.SetAside(path, aside); err == nil || moved != nil {
		t.Errorf("SetAside onto a taken name: %v %v", moved, err)
	}
	if extra := leftovers(t, dir, "lastmile.db", "lastmile.db-wal", "lastmile.db-shm", filepath.Base(aside)+"-shm"); len(extra) > 0 {
		t.Errorf("after a refusal: %v", extra)
	}
	os.Remove(aside + "-shm")
	moved, err := storage.SetAside(path, aside)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{aside, aside + "-wal", aside + "-shm"}; !slices.Equal(moved, want) {
		t.Errorf("moved %v, want %v", moved, want)
	}
	for _, m := range moved {
		b, err := os.ReadFile(m)
		if want := "lastmile.db" + strings.TrimPrefix(m, aside); err != nil || string(b) != want {
			t.Errorf("%s holds %q (%v), want %q", m, b, err, want)
		}
	}
	if moved, err := storage.SetAside(path, aside+"x"); err != nil || moved != nil {
		t.Errorf("SetAside of nothing: %v %v", moved, err)
	}
}
