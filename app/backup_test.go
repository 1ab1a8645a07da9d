package app

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
	"github.com/lastmile-app/lastmile/storage/storagetest"
)

// acceptDeliveries commits deliveries prefix-0 … prefix-(n-1) to the
// database at path, as serve's intake does, and closes it.
func acceptDeliveries(t *testing.T, path, prefix string, n int) {
	t.Helper()
	db, err := storage.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	accept(t, db, prefix, n)
}

func accept(t *testing.T, db *storage.DB, prefix string, n int) {
	t.Helper()
	body := storagetest.Noise(3000)
	for i := range n {
		d := &pipeline.Delivery{ID: fmt.Sprintf("%s-%d", prefix, i), Event: "push", Repository: "acme/shop", Body: body}
		if _, err := db.Accept(context.Background(), d, "push", "accepted"); err != nil {
			t.Fatal(err)
		}
	}
}

func ids(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("%s-%d", prefix, i))
	}
	slices.Sort(out)
	return out
}

// integrity is PRAGMA integrity_check of the database at path, or the
// error that stopped it.
func integrity(t *testing.T, path string) string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rows []string
	r, err := db.Query("PRAGMA integrity_check")
	if err != nil {
		return err.Error()
	}
	defer r.Close()
	for r.Next() {
		var s string
		if err := r.Scan(&s); err != nil {
			return err.Error()
		}
		rows = append(rows, s)
	}
	if err := r.Err(); err != nil {
		return err.Error()
	}
	return strings.Join(rows, "; ")
}

// crashedWithWAL makes, in a new folder, a database as a lastmile serve
// killed while running leaves it: its newest commits (the deliveries
// prefix-0 …) in lastmile.db-wal only, not in lastmile.db yet. The
// database at from is opened with storage, a reader holds its WAL back
// from the checkpointer, and the two files are copied while it is open.
func crashedWithWAL(t *testing.T, from, prefix string, n int) string {
	t.Helper()
	ctx := context.Background()
	db, err := storage.Open(ctx, from)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	reader, err := sql.Open("sqlite", "file:"+from)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	tx, err := reader.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var seen int
	if err := tx.QueryRow("SELECT COUNT(*) FROM deliveries").Scan(&seen); err != nil { // the snapshot: before the writes
		t.Fatal(err)
	}
	accept(t, db, prefix, n)
	dir := t.TempDir()
	for _, suffix := range []string{"", "-wal"} {
		copyFile(t, from+suffix, filepath.Join(dir, "lastmile.db"+suffix))
	}
	if fi, err := os.Stat(filepath.Join(dir, "lastmile.db-wal")); err != nil || fi.Size() == 0 {
		t.Fatalf("no WAL copied: %v %v", fi, err)
	}
	return filepath.Join(dir, "lastmile.db")
}

// copyFile copies the file at from to a new file at to.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// folder is what a folder holds: each file's name and the hash of its
// content.
func folder(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][32]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = sha256.Sum256(b)
	}
	return out
}

func sameFolder(t *testing.T, dir string, before map[string][32]byte) {
	t.Helper()
	after := folder(t, dir)
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("%s appeared", name)
		}
	}
	for name, sum := range before {
		if got, ok := after[name]; !ok {
			t.Errorf("%s is gone", name)
		} else if got != sum {
			t.Errorf("%s changed", name)
		}
	}
}

// The case copying a backup over the database got wrong: a lastmile serve
// killed (or a database copied while open) leaves a -wal beside the
// database, which SQLite applies to whatever file then has the database's
// name — a backup copied there is damaged. lastmile restore sets the
// database and its -wal aside (renamed, nothing lost) and puts a copy of
// the backup in its place: sound, holding exactly what the backup holds.
func TestRestoreSetsAStaleWALAside(t *testing.T) {
	src := filepath.Join(t.TempDir(), "lastmile.db")
	acceptDeliveries(t, src, "before", 40)
	dest := filepath.Join(t.TempDir(), "backup.db")
	code, stdout, stderr := run(t, src, "backup", dest)
	if code != 0 || stderr != "" || !strings.Contains(stdout, src+" backed up to "+dest+": ") ||
		!strings.Contains(stdout, "quick_check ok\n  40 deliveries, the newest received ") {
		t.Fatalf("backup: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	t.Log(strings.TrimSpace(stdout))
	// Then serve goes on: more deliveries, checkpointed into the file, and
	// the newest in the WAL only when it is killed.
	acceptDeliveries(t, src, "after", 300)
	db := crashedWithWAL(t, src, "unsaved", 60)
	dir := filepath.Dir(db)

	// What copying the backup over the database does (on a copy of the
	// folder): the WAL is applied to the backup, and the result is damaged.
	naive := filepath.Join(t.TempDir(), "lastmile.db")
	copyFile(t, dest, naive)
	copyFile(t, db+"-wal", naive+"-wal")
	if got := integrity(t, naive); got == "ok" {
		t.Fatalf("the backup copied over the database beside its -wal passes integrity_check: the test does not make the damaging case")
	} else {
		t.Logf("copied over, beside the stale WAL: %.200s", got)
	}

	code, stdout, stderr = run(t, db, "restore", dest)
	if code != 0 || stderr != "" {
		t.Fatalf("restore: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	t.Log(strings.TrimSpace(stdout))
	for _, want := range []string{db + " restored from " + dest + ": ", "40 deliveries", "lastmile.db.before-restore-",
		"Delete lastmile's samples, the\n    recorded lastmile:… ones with them, up to 10 minutes after serve starts\n    again (after ", "serve's redelivery loop", "LASTMILE_REDELIVERY_WINDOW", "those delivered to the database this one replaces are not", "Recent Deliveries"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("restore's output lacks %q", want)
		}
	}
	if got := integrity(t, db); got != "ok" {
		t.Errorf("integrity_check of the restored database: %s", got)
	}
	if got, want := storagetest.DeliveryIDs(t, db), storagetest.DeliveryIDs(t, dest); !slices.Equal(got, want) || !slices.Equal(got, ids("before", 40)) {
		t.Errorf("the restored database holds %d deliveries %v…, the backup %d", len(got), got[:min(3, len(got))], len(want))
	}
	if _, err := os.Stat(db + "-wal"); err == nil {
		t.Error("a -wal is beside the restored database")
	}
	if fi, err := os.Stat(db); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the restored database: %v %v, want mode 0600", fi, err)
	}
	// The replaced database is kept whole under its new name, one file:
	// its -wal checkpointed into it first, so that no moment of the
	// restore leaves that -wal beside no database.
	var aside string
	after := folder(t, dir)
	for got := range after {
		if strings.HasPrefix(got, "lastmile.db.before-restore-") {
			if aside != "" || len(got) != len("lastmile.db.before-restore-20060102T150405Z") {
				t.Fatalf("the database was not set aside as one file: the folder holds %v", slices.Sorted(mapKeys(after)))
			}
			aside = filepath.Join(dir, got)
		}
	}
	if aside == "" {
		t.Fatalf("nothing set aside: the folder holds %v", slices.Sorted(mapKeys(after)))
	}
	if got := integrity(t, aside); got != "ok" {
		t.Errorf("integrity_check of the database set aside: %s", got)
	}
	if got, want := storagetest.DeliveryIDs(t, aside), slices.Sorted(slices.Values(slices.Concat(ids("after", 300), ids("before", 40), ids("unsaved", 60)))); !slices.Equal(got, want) {
		t.Errorf("the database set aside holds %d deliveries, want %d: its -wal was not kept with it", len(got), len(want))
	}
	if _, err := storage.OpenExisting(context.Background(), db); err != nil {
		t.Errorf("the restored database does not open: %v", err)
	}

	// Undone: the database set aside, its WAL read with it, is restored
	// whole; the one restored before is set aside in turn, under a name of
	// its own — .2 after the time when a file has that name already (a
	// second restore within the second; made so here for the seconds the
	// restore may run in).
	for i := range 3 {
		taken := db + ".before-restore-" + time.Now().UTC().Add(time.Duration(i)*time.Second).Format("20060102T150405Z")
		if taken == aside {
			continue
		}
		if err := os.WriteFile(taken, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	code, stdout, stderr = run(t, db, "restore", aside)
	if code != 0 || !strings.Contains(stdout, "400 deliveries") {
		t.Fatalf("restore of the database set aside: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if got := storagetest.DeliveryIDs(t, db); len(got) != 400 {
		t.Errorf("the database restored from the one set aside holds %d deliveries, want 400", len(got))
	}
	var again []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "lastmile.db.before-restore-") && strings.HasSuffix(e.Name(), ".2") {
			again = append(again, e.Name())
		}
	}
	if len(again) != 1 || len(storagetest.DeliveryIDs(t, filepath.Join(dir, again[0]))) != 40 {
		t.Errorf("the database restored first was not set aside under a name with .2: %v", again)
	}
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// Beside a running lastmile serve, backup works (it takes no lock) and
// restore is refused, changing nothing.
func TestBackupAndRestoreBesideServe(t *testing.T) {
	sb := sandbox(t, nil)
	path := sb.Config.Database
	accept(t, sb.App.DB(), "served", 5)
	dest := filepath.Join(t.TempDir(), "backup.db")
	code, stdout, stderr := run(t, path, "backup", dest)
	if code != 0 || !strings.Contains(stdout, "5 deliveries") {
		t.Fatalf("backup beside serve: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if got := storagetest.DeliveryIDs(t, dest); !slices.Equal(got, ids("served", 5)) {
		t.Errorf("the backup holds %v", got)
	}
	before := folder(t, filepath.Dir(path))
	code, stdout, stderr = run(t, path, "restore", dest)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "another lastmile serve is using") ||
		!strings.Contains(stderr, "stop it before lastmile restore") {
		t.Errorf("restore beside serve: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// serve may have checkpointed meanwhile: the names, then, not the bytes.
	after := folder(t, filepath.Dir(path))
	if !slices.Equal(slices.Sorted(mapKeys(before)), slices.Sorted(mapKeys(after))) {
		t.Errorf("the database's folder held %v, now %v", slices.Sorted(mapKeys(before)), slices.Sorted(mapKeys(after)))
	}
	if got := storagetest.DeliveryIDs(t, path); !slices.Equal(got, ids("served", 5)) {
		t.Errorf("the database holds %v", got)
	}
}

// A backup that is not a sound lastmile database of this version or an
// older one is refused, and nothing changes: the database, its -wal and
// their folder are as they were.
func TestRestoreRefusesABadBackup(t *testing.T) {
	for _, bad := range storagetest.BadDatabases(t) {
		t.Run(bad.Name, func(t *testing.T) {
			src := filepath.Join(t.TempDir(), "lastmile.db")
			acceptDeliveries(t, src, "current", 10)
			db := crashedWithWAL(t, src, "unsaved", 5)
			before := folder(t, filepath.Dir(db))
			code, stdout, stderr := run(t, db, "restore", bad.Path)
			t.Log(strings.TrimSpace(stderr))
			if code != 1 || stdout != "" || !strings.Contains(stderr, "nothing changed") || !strings.Contains(stderr, bad.Want) {
				t.Errorf("restore: exit %d, stdout %q, stderr %q; want exit 1 and %q", code, stdout, stderr, bad.Want)
			}
			sameFolder(t, filepath.Dir(db), before)
		})
	}
}

func TestBackupCommandUsage(t *testing.T) {
	src := filepath.Join(t.TempDir(), "lastmile.db")
	acceptDeliveries(t, src, "d", 1)
	dir := t.TempDir()
	dest := filepath.Join(dir, "backup.db")
	for _, args := range [][]string{{"backup"}, {"backup", dest, "extra"}, {"backup", ""}, {"restore"}, {"restore", dest, "extra"}, {"backup", "--colour", dest}} {
		code, stdout, stderr := run(t, src, args...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, "Usage: lastmile "+args[0]) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and the usage", args, code, stdout, stderr)
		}
	}
	for _, cmd := range []string{"backup", "restore"} {
		code, stdout, stderr := run(t, src, cmd, "--help")
		if code != 0 || !strings.Contains(stdout, "Usage: lastmile "+cmd+" [--database F]") || stderr != "" {
			t.Errorf("%s --help: exit %d, stdout %q, stderr %q", cmd, code, stdout, stderr)
		}
	}
	// DEST there already: refused before anything is done.
	if err := os.WriteFile(dest, []byte("yesterday's"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := run(t, src, "backup", dest)
	if code != 1 || stdout != "" || !strings.Contains(stderr, dest+" exists") {
		t.Errorf("backup onto an existing file: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if b, _ := os.ReadFile(dest); string(b) != "yesterday's" {
		t.Errorf("the existing file now holds %q", b)
	}
	missing := filepath.Join(t.TempDir(), "missing.db")
	code, _, stderr = run(t, missing, "backup", filepath.Join(dir, "new.db"))
	// LASTMILE_DATABASE names it: no hint to set it.
	if code != 1 || !strings.Contains(stderr, "database "+missing+": no such file") || strings.Contains(stderr, "set LASTMILE_DATABASE") {
		t.Errorf("backup of a missing database: exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("backup created the missing database")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the backups' folder holds %d files, want the one there before", len(entries))
	}
	code, stdout, _ = run(t, src, "help")
	if code != 0 || !strings.Contains(stdout, "lastmile backup [--database F] DEST") || !strings.Contains(stdout, "lastmile restore [--database F] BACKUP") {
		t.Errorf("lastmile help does not list backup and restore:\n%s", stdout)
	}
}

// Run as root, restore gives the restored database the owner of the one
// it replaces (lastmile serve's user): root's file, mode 0600, would stop
// serve at start.
func TestRestoreKeepsTheDatabasesOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root gives a file to another user")
	}
	db := filepath.Join(t.TempDir(), "lastmile.db")
	acceptDeliveries(t, db, "d", 3)
	dest := filepath.Join(t.TempDir(), "backup.db")
	if code, _, stderr := run(t, db, "backup", dest); code != 0 {
		t.Fatalf("backup: %s", stderr)
	}
	const nobody = 65534
	if err := os.Chown(db, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := run(t, db, "restore", dest)
	if code != 0 || !strings.Contains(stdout, "belongs to user 65534, group 65534, as the one it replaced") {
		t.Errorf("restore: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	fi, err := os.Stat(db)
	if err != nil {
		t.Fatal(err)
	}
	if uid, gid, ok := fileOwner(fi); !ok || uid != nobody || gid != nobody {
		t.Errorf("the restored database belongs to %d:%d (%v), want %d:%d", uid, gid, ok, nobody, nobody)
	}
}

// A first restore, on a new machine: the database goes where a symbolic
// link to it points (as SQLite and serve's lock follow it), the link stays
// a link, and no DB.lock is left behind — restore, run as root, would leave
// one lastmile serve's user could not open. A DB.lock there before stays.
func TestRestoreOfANewDatabaseThroughALink(t *testing.T) {
	src := filepath.Join(t.TempDir(), "lastmile.db")
	acceptDeliveries(t, src, "kept", 3)
	backup := filepath.Join(t.TempDir(), "backup.db")
	if code, _, stderr := run(t, src, "backup", backup); code != 0 {
		t.Fatalf("backup: %d %s", code, stderr)
	}
	real := t.TempDir()
	links := t.TempDir()
	link := filepath.Join(links, "lastmile.db")
	if err := os.Symlink(filepath.Join(real, "lastmile.db"), link); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := run(t, link, "restore", backup)
	if code != 0 {
		t.Fatalf("restore through a link to a database not there yet: exit %d\n%s%s", code, stdout, stderr)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link after restore: %v, %v; want it a link still", fi, err)
	}
	if got := storagetest.DeliveryIDs(t, filepath.Join(real, "lastmile.db")); !slices.Equal(got, ids("kept", 3)) {
		t.Errorf("the link's target holds %v", got)
	}
	for _, dir := range []string{real, links} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".lock") || strings.Contains(e.Name(), "before-restore") {
				t.Errorf("restore left %s in %s", e.Name(), dir)
			}
		}
	}
	// A DB.lock there before (serve ran there) is kept.
	lock := filepath.Join(real, "lastmile.db.lock")
	if err := os.WriteFile(lock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := run(t, link, "restore", backup); code != 0 {
		t.Fatalf("a second restore: %d %s", code, stderr)
	}
	if _, err := os.Stat(lock); err != nil {
		t.Errorf("the DB.lock that was there before: %v", err)
	}
}

// What a copy holds is counted in words that agree with the count: 1
// delivery, 1 release.
func TestDescribeCopyCountsInTheSingularToo(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		deliveries, releases int64
		want                 []string
	}{
		{1, 1, []string{"\n  1 delivery, the newest received ", "; 1 release, the newest recorded "}},
		{2, 0, []string{"\n  2 deliveries, the newest received ", "; 0 releases"}},
		{0, 3, []string{"\n  0 deliveries; 3 releases, the newest recorded "}},
	} {
		s := storage.Summary{Deliveries: tc.deliveries, Releases: tc.releases}
		if tc.deliveries > 0 {
			s.NewestDelivery = at
		}
		if tc.releases > 0 {
			s.NewestRelease = at
		}
		got := describeCopy(s)
		for _, want := range tc.want {
			if !strings.Contains(got, want) {
				t.Errorf("%d deliveries, %d releases: %q, want %q in it", tc.deliveries, tc.releases, got, want)
			}
		}
	}
}
