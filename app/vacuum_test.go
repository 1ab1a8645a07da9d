package app

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp/simulator/oasvalidate"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
	"github.com/lastmile-app/lastmile/storage/storagetest"
)

// oldDatabase makes a database as a lastmile that did not set auto_vacuum
// did (the file in WAL mode before its tables), with n handled deliveries
// of 8000-byte bodies received a year ago, and pruned: the bodies' pages
// are free, the file as large as before.
func oldDatabase(t *testing.T, n int) string {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lastmile.db")
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Ping(); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	db, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	old := time.Now().AddDate(-1, 0, 0)
	db.Now = func() time.Time { return old }
	body := storagetest.Noise(8000)
	for i := range n {
		d := &pipeline.Delivery{ID: fmt.Sprintf("guid-%d", i), Event: "push", Repository: "acme/shop", State: pipeline.DeliveryDone, Body: body}
		if _, err := db.Accept(ctx, d, "push", "accepted"); err != nil {
			t.Fatal(err)
		}
	}
	p, err := db.Prune(ctx, time.Now().AddDate(0, 0, -30))
	if err != nil || p.DeliveryBodies != int64(n) || p.Disk.AutoVacuum != "none" || p.PagesReclaimed != 0 {
		t.Fatalf("prune of the old database: %+v %v", p, err)
	}
	return path
}

func diskOf(t *testing.T, path string) (storage.Disk, int) {
	t.Helper()
	db, err := storage.OpenExisting(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d, err := db.DiskUsage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	list, err := db.ListDeliveries(context.Background(), storage.DeliveryFilter{Limit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return d, len(list)
}

func TestVacuumCommandConvertsAnOldDatabase(t *testing.T) {
	path := oldDatabase(t, 300)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := run(t, path, "vacuum")
	if code != 0 || !strings.Contains(stdout, "converted to auto_vacuum=incremental and compacted") || stderr != "" {
		t.Fatalf("vacuum: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	t.Log(strings.TrimSpace(stdout))
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() > before.Size()-300*8000 {
		t.Errorf("the file went from %d to %d bytes", before.Size(), after.Size())
	}
	if wal, err := os.Stat(path + "-wal"); err == nil && wal.Size() > 0 {
		t.Errorf("the WAL is left at %d bytes", wal.Size())
	}
	d, n := diskOf(t, path)
	if d.AutoVacuum != "incremental" || d.FreelistCount != 0 || n != 300 {
		t.Errorf("after vacuum: %+v, %d deliveries (want incremental, no free page, 300)", d, n)
	}
	// No DB.lock left behind: vacuum, run as root, would leave one lastmile
	// serve's user could not open.
	if _, err := os.Stat(path + ".lock"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("vacuum left %s.lock behind (%v)", path, err)
	}

	// Run again: nothing to convert, nothing to give back.
	code, stdout, stderr = run(t, path, "vacuum", "--database", path)
	if code != 0 || !strings.Contains(stdout, "auto_vacuum=incremental already, and no free page to give back") {
		t.Errorf("vacuum again: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestVacuumCommandRefusesBesideServe(t *testing.T) {
	sb := sandbox(t, nil)
	code, stdout, stderr := run(t, sb.Config.Database, "vacuum")
	if code != 1 || stdout != "" || !strings.Contains(stderr, "another lastmile serve is using") ||
		!strings.Contains(stderr, "stop it before lastmile vacuum") {
		t.Errorf("vacuum beside serve: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestVacuumCommandUsage(t *testing.T) {
	code, stdout, stderr := run(t, "lastmile.db", "vacuum", "--help")
	if code != 0 || !strings.Contains(stdout, "Usage: lastmile vacuum [--database F]") ||
		!strings.Contains(stdout, "twice its size") || stderr != "" {
		t.Errorf("vacuum --help: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, stderr = run(t, "lastmile.db", "vacuum", "now")
	if code != 2 || stdout != "" || !strings.Contains(stderr, "Usage: lastmile vacuum") {
		t.Errorf("vacuum now: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	missing := filepath.Join(t.TempDir(), "missing.db")
	code, _, stderr = run(t, missing, "vacuum")
	// LASTMILE_DATABASE names it: no hint to set it.
	if code != 1 || !strings.Contains(stderr, "database "+missing+": no such file") || strings.Contains(stderr, "set LASTMILE_DATABASE") {
		t.Errorf("vacuum of a missing database: exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("vacuum created the missing database")
	}
	if _, err := os.Stat(missing + ".lock"); err == nil {
		t.Error("vacuum left a lock file beside a missing database")
	}
	code, stdout, _ = run(t, "lastmile.db", "help")
	if code != 0 || !strings.Contains(stdout, "lastmile vacuum [--database F]") {
		t.Errorf("lastmile help does not list vacuum:\n%s", stdout)
	}
}

// TestRetentionLogLine checks the sweep's log line of a prune: what it
// pruned and the file after, and, once, how to convert a database that
// does not shrink.
func TestRetentionLogLine(t *testing.T) {
	for _, old := range []bool{false, true} {
		t.Run(fmt.Sprintf("auto_vacuum none %v", old), func(t *testing.T) {
			ctx := context.Background()
			var logs lockedBuffer
			dir := t.TempDir()
			sb, err := NewSandbox(ctx, SandboxOptions{Dir: dir, Logger: slog.New(slog.NewJSONHandler(&logs, nil)), WrapGitHub: oasvalidate.Wrap(t),
				Configure: func(c *Config) {
					if old {
						c.Database = oldDatabase(t, 0)
					}
				}})
			if err != nil {
				t.Fatal(err)
			}
			defer sb.Close()
			body := storagetest.Noise(8000)
			for i := range 200 {
				d := &pipeline.Delivery{ID: fmt.Sprintf("guid-%d", i), Event: "push", Repository: "acme/shop", State: pipeline.DeliveryDone,
					Body: body, ReceivedAt: time.Now().AddDate(0, 0, -40)}
				if _, err := sb.App.DB().Accept(ctx, d, "push", "accepted"); err != nil {
					t.Fatal(err)
				}
			}
			for range 2 {
				if !sb.App.prune(ctx, time.Now().AddDate(0, 0, -30)) {
					t.Fatal("prune did not go to its end")
				}
			}
			var pruned, hints []map[string]any
			for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				var rec map[string]any
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("%q: %v", line, err)
				}
				msg, _ := rec["msg"].(string)
				switch {
				case strings.HasPrefix(msg, "sweep: retention pruned"):
					pruned = append(pruned, rec)
				case strings.HasPrefix(msg, "sweep: retention: this database was created without auto_vacuum"):
					hints = append(hints, rec)
				}
			}
			if len(pruned) != 1 {
				t.Fatalf("%d log lines of a prune, want 1 (the second prune had nothing to do):\n%s", len(pruned), logs.String())
			}
			rec := pruned[0]
			t.Log(rec)
			mode, reclaimed := "incremental", rec["pages_reclaimed"].(float64) >= 400
			if old {
				mode, reclaimed = "none", rec["pages_reclaimed"] == 0.0 && rec["freelist_count"].(float64) >= 400
			}
			if rec["delivery_bodies"] != 200.0 || rec["auto_vacuum"] != mode || !reclaimed || rec["page_size"] != 4096.0 ||
				rec["page_count"].(float64) <= 0 || (!old && rec["freelist_count"] != 0.0) {
				t.Errorf("the prune's log line: %v", rec)
			}
			if want := map[bool]int{false: 0, true: 1}[old]; len(hints) != want {
				t.Errorf("%d hints to run lastmile vacuum, want %d:\n%s", len(hints), want, logs.String())
			}
		})
	}
}

// A reader in the middle of a read (a lastmile history, a backup) keeps
// the converted pages in the WAL: vacuum says so, rather than report a
// file it has not shrunk; once the reader is done, vacuum again shrinks it.
func TestVacuumCommandSaysWhenAReaderHoldsThePagesBack(t *testing.T) {
	path := oldDatabase(t, 300)
	done := readingAt(t, path)
	const held = "another process is reading the database"
	code, stdout, stderr := run(t, path, "vacuum")
	if code != 0 || !strings.Contains(stdout, "converted to auto_vacuum=incremental") || !strings.Contains(stdout, held) {
		t.Errorf("vacuum beside a reader: exit %d, stdout %q, stderr %q; want the conversion and %q", code, stdout, stderr, held)
	}
	done()
	code, stdout, stderr = run(t, path, "vacuum")
	if code != 0 || strings.Contains(stdout, held) {
		t.Errorf("vacuum once the reader is done: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if wal, err := os.Stat(path + "-wal"); err == nil && wal.Size() > 0 {
		t.Errorf("the WAL is left at %d bytes", wal.Size())
	}
}

// readingAt has another connection read the database at path, in a read
// transaction it keeps open (a long lastmile history, a backup) until the
// function returned is called (once; again, it does nothing).
func readingAt(t *testing.T, path string) (done func()) {
	t.Helper()
	reader, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := reader.Begin()
	if err != nil {
		reader.Close()
		t.Fatal(err)
	}
	var n int
	if err := tx.QueryRow(`SELECT COUNT(*) FROM deliveries`).Scan(&n); err != nil { // holds its snapshot
		tx.Rollback()
		reader.Close()
		t.Fatal(err)
	}
	var once sync.Once
	done = func() {
		once.Do(func() {
			tx.Rollback()
			reader.Close()
		})
	}
	t.Cleanup(done)
	return done
}
