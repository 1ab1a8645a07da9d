package storage_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/storage/storagetest"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// inboxT0 is the clock of the inbox tests, in whole milliseconds because the
// store keeps times as unix milliseconds.
var inboxT0 = time.Date(2026, 3, 14, 9, 26, 53, 589_000_000, time.UTC)

// newInboxDB opens a fresh database file in a temporary directory, with
// its clock set to inboxT0, and closes it when the test ends.
func newInboxDB(t *testing.T) *storage.DB {
	t.Helper()
	db := storagetest.Open(t)
	db.Now = func() time.Time { return inboxT0 }
	return db
}

// acceptDelivery stores d and fails the test unless it was new.
func acceptDelivery(t *testing.T, db *storage.DB, d *pipeline.Delivery) *pipeline.Delivery {
	t.Helper()
	dup, err := db.Accept(context.Background(), d, d.Event, "accepted")
	if err != nil {
		t.Fatalf("Accept(%s): %v", d.ID, err)
	}
	if dup {
		t.Fatalf("Accept(%s): reported a duplicate of a new delivery", d.ID)
	}
	return d
}

// pendingDelivery is a pending push delivery of repo with a small body.
func pendingDelivery(id, repo string) *pipeline.Delivery {
	return &pipeline.Delivery{
		ID: id, Event: "push", Repository: repo, RepositoryID: int64(crc32.ChecksumIEEE([]byte(repo))), InstallationID: 7,
		State: pipeline.DeliveryPending, Body: []byte(`{"delivery":"` + id + `"}`),
	}
}

// allDeliveries lists every delivery in the inbox, newest first.
func allDeliveries(t *testing.T, db *storage.DB) []*pipeline.Delivery {
	t.Helper()
	list, err := db.ListDeliveries(context.Background(), storage.DeliveryFilter{Limit: 1 << 20})
	if err != nil {
		t.Fatalf("ListDeliveries: %v", err)
	}
	return list
}

func TestOpenAppliesEveryMigrationOnce(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lastmile.db")
	files, err := filepath.Glob(filepath.Join("migrations", "*.sql"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no migrations found (%v)", err)
	}

	db, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatalf("first Open: %v", err)
	}
	acceptDelivery(t, db, pendingDelivery("before-reopen", "acme/shop"))
	if err := db.SetSetting(ctx, "instance", "one"); err != nil {
		t.Fatalf("SetSetting: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	first := readMigrations(t, path)

	// Re-opening must neither re-run a migration (it would fail on the
	// existing tables, or wipe them) nor record one twice.
	for i := range 2 {
		db, err := storage.Open(ctx, path)
		if err != nil {
			t.Fatalf("re-open %d: %v", i+1, err)
		}
		got, err := db.GetDelivery(ctx, "before-reopen")
		if err != nil {
			t.Fatalf("re-open %d: the delivery stored before is gone: %v", i+1, err)
		}
		if string(got.Body) != `{"delivery":"before-reopen"}` {
			t.Errorf("re-open %d: body = %q", i+1, got.Body)
		}
		if v, ok, err := db.Setting(ctx, "instance"); err != nil || !ok || v != "one" {
			t.Errorf("re-open %d: setting = %q, %v, %v; want one", i+1, v, ok, err)
		}
		if err := db.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	again := readMigrations(t, path)

	if len(first) != len(files) {
		t.Fatalf("schema_migrations has %d rows after the first Open, want one per file (%d): %v", len(first), len(files), first)
	}
	for _, f := range files {
		base := filepath.Base(f)
		version, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			t.Fatalf("migration file %s does not start with a number", base)
		}
		if first[version].name != base {
			t.Errorf("migration %d recorded as %q, want %q", version, first[version].name, base)
		}
		if again[version] != first[version] {
			t.Errorf("migration %d changed on re-open: %+v, then %+v", version, first[version], again[version])
		}
	}
	if len(again) != len(first) {
		t.Errorf("schema_migrations went from %d to %d rows on re-open", len(first), len(again))
	}
}

type migrationRow struct {
	name      string
	appliedAt int64
}

// readMigrations reads schema_migrations with a separate connection (the
// driver is the one storage registers).
func readMigrations(t *testing.T, path string) map[int]migrationRow {
	t.Helper()
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=query_only(1)")
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer raw.Close()
	rows, err := raw.Query("SELECT version, name, applied_at FROM schema_migrations")
	if err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	defer rows.Close()
	out := map[int]migrationRow{}
	for rows.Next() {
		var v int
		var r migrationRow
		if err := rows.Scan(&v, &r.name, &r.appliedAt); err != nil {
			t.Fatalf("scan: %v", err)
		}
		if _, dup := out[v]; dup {
			t.Errorf("migration %d recorded twice", v)
		}
		out[v] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("rows: %v", err)
	}
	return out
}

// A database path written with a leading // (or with . and .. in it) is
// the file it names: //tmp/x.db opens /tmp/x.db, rather than failing with
// "invalid uri authority" once an empty file has been created.
// The path is the file the kernel finds, as written: a leading //, ./ and
// .., and a symbolic link followed by .. (which names the link target's
// parent, not the folder the link is in).
func TestOpenTakesThePathAsWritten(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if !filepath.IsAbs(dir) {
		t.Fatalf("temporary directory %s is not absolute", dir)
	}
	for _, tc := range []struct{ name, written string }{
		{"a.db", "/" + filepath.Join(dir, "a.db")},
		{"b.db", "//" + dir + "/./sub/../b.db"},
		{"c?#%.db", "/" + dir + "//c?#%.db"},
		{"vol/d.db", dir + "/link/../d.db"}, // link -> vol/data
	} {
		if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "vol", "data"), 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(filepath.Join(dir, "link")); err != nil {
			if err := os.Symlink(filepath.Join(dir, "vol", "data"), filepath.Join(dir, "link")); err != nil {
				t.Fatal(err)
			}
		}
		db, err := storage.Open(ctx, tc.written)
		if err != nil {
			t.Fatalf("Open(%q): %v", tc.written, err)
		}
		acceptDelivery(t, db, pendingDelivery("d-"+filepath.Base(tc.name), "acme/shop"))
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		// The data is in the file the path names, and OpenExisting, which
		// checks it read-only first, finds it through either spelling.
		for _, p := range []string{filepath.Join(dir, tc.name), tc.written} {
			db, err := storage.OpenExisting(ctx, p)
			if err != nil {
				t.Fatalf("OpenExisting(%q): %v", p, err)
			}
			if _, err := db.GetDelivery(ctx, "d-"+filepath.Base(tc.name)); err != nil {
				t.Errorf("GetDelivery through %q: %v", p, err)
			}
			db.Close()
		}
	}
}

// A relative path names a file in the working directory, whatever it
// says to SQLite: ":memory:" is a file so named, not an in-memory
// database that would lose the inbox at exit.
func TestOpenTakesARelativePathAsAFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	t.Chdir(dir)
	for _, name := range []string{":memory:", "plain.db", "file:x.db"} {
		db, err := storage.Open(ctx, name)
		if err != nil {
			t.Fatalf("Open(%q): %v", name, err)
		}
		acceptDelivery(t, db, pendingDelivery("d-"+name, "acme/shop"))
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		db, err = storage.OpenExisting(ctx, filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("OpenExisting(%q) after Open(%q): %v", filepath.Join(dir, name), name, err)
		}
		if _, err := db.GetDelivery(ctx, "d-"+name); err != nil {
			t.Errorf("the delivery accepted through %q: %v", name, err)
		}
		db.Close()
	}
}

// Open (lastmile serve) refuses another program's database and leaves it
// byte for byte as it was: no lastmile tables added, no switch to WAL.
// A file that is not a database at all is refused the same way.
func TestOpenRefusesAnotherProgramsDatabase(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	foreign := filepath.Join(dir, "other.db")
	other, err := sql.Open("sqlite", foreign)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(`CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine')`); err != nil {
		t.Fatal(err)
	}
	other.Close()
	view := filepath.Join(dir, "view.db")
	if other, err = sql.Open("sqlite", view); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(`CREATE VIEW v AS SELECT 1`); err != nil {
		t.Fatal(err)
	}
	other.Close()
	text := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(text, bytes.Repeat([]byte("not a database\n"), 512), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		foreign: "not a lastmile database (it holds another schema: notes)",
		view:    "not a lastmile database (it holds another schema: v)",
		text:    "not a lastmile database (file is not a database",
	} {
		before, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if db, err := storage.Open(ctx, path); err == nil {
			db.Close()
			t.Errorf("Open(%s) succeeded", filepath.Base(path))
		} else if !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%s): %v, want it to say %q", filepath.Base(path), err, want)
		}
		if after, err := os.ReadFile(path); err != nil || !bytes.Equal(before, after) {
			t.Errorf("Open changed %s (%v)", filepath.Base(path), err)
		}
		for _, suffix := range []string{"-wal", "-shm", "-journal"} {
			if _, err := os.Stat(path + suffix); !os.IsNotExist(err) {
				t.Errorf("Open left %s%s (%v)", filepath.Base(path), suffix, err)
			}
		}
	}
}

func TestOpenRefusesAnEmptyPath(t *testing.T) {
	if db, err := storage.Open(context.Background(), ""); err == nil {
		db.Close()
		t.Fatal("Open(\"\") succeeded")
	}
}

// A new database, and its WAL beside it, are readable by their owner
// only: they hold webhook bodies, deploy logs and the audit record — one
// created through a symbolic link to a file not there yet as well.
func TestANewDatabaseIsPrivate(t *testing.T) {
	for _, viaLink := range []bool{false, true} {
		dir := t.TempDir()
		path := filepath.Join(dir, "lastmile.db")
		open := path
		if viaLink {
			if err := os.Mkdir(filepath.Join(dir, "data"), 0o700); err != nil {
				t.Fatal(err)
			}
			path, open = filepath.Join(dir, "data", "lastmile.db"), filepath.Join(dir, "link.db")
			if err := os.Symlink("data/lastmile.db", open); err != nil {
				t.Fatal(err)
			}
		}
		db, err := storage.Open(context.Background(), open)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for _, f := range []string{path, path + "-wal", path + "-shm"} {
			st, err := os.Stat(f)
			if err != nil {
				t.Fatal(err)
			}
			if perm := st.Mode().Perm(); perm != 0o600 {
				t.Errorf("via a link %v: %s: mode %v, want 0600", viaLink, filepath.Base(f), perm)
			}
		}
	}
}

// A database file with two names (hard links) is refused by every way of
// opening it: SQLite would keep a WAL beside each name, and two processes
// writing through both corrupt the file.
func TestADatabaseWithTwoNamesIsRefused(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "lastmile.db")
	db, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	link := filepath.Join(dir, "other.db")
	if err := os.Link(path, link); err != nil {
		t.Fatal(err)
	}
	for name, open := range map[string]func(context.Context, string) (*storage.DB, error){
		"Open": storage.Open, "OpenExisting": storage.OpenExisting, "OpenReadOnly": storage.OpenReadOnly,
	} {
		for _, p := range []string{path, link} {
			db, err := open(ctx, p)
			if err == nil {
				db.Close()
				t.Errorf("%s(%s) beside a hard link: opened", name, filepath.Base(p))
			} else if !strings.Contains(err.Error(), "has 2 names (hard links)") {
				t.Errorf("%s(%s): %v", name, filepath.Base(p), err)
			}
		}
	}
	if _, err := os.Stat(link + "-wal"); err == nil {
		t.Error("a WAL was made beside the second name")
	}
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if db, err := storage.Open(ctx, path); err != nil {
		t.Errorf("one name again: %v", err)
	} else {
		db.Close()
	}
}

func TestOpenExisting(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()

	t.Run("missing file is an error and is not created", func(t *testing.T) {
		path := filepath.Join(dir, "missing.db")
		db, err := storage.OpenExisting(ctx, path)
		if err == nil {
			db.Close()
			t.Fatal("OpenExisting of a missing file succeeded")
		}
		// How to choose another is the command's to say (see app's
		// pathHint): the path may be the one LASTMILE_DATABASE gave.
		if !strings.Contains(err.Error(), path) || !errors.Is(err, storage.ErrNoDatabaseFile) || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("error %q should name the file, and be ErrNoDatabaseFile and ErrNotExist", err)
		}
		if _, serr := os.Stat(path); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("OpenExisting created %s (stat: %v)", path, serr)
		}
	})

	t.Run("existing database opens with its data", func(t *testing.T) {
		path := filepath.Join(dir, "existing.db")
		db, err := storage.Open(ctx, path)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		acceptDelivery(t, db, pendingDelivery("d-1", "acme/shop"))
		db.Close()

		db, err = storage.OpenExisting(ctx, path)
		if err != nil {
			t.Fatalf("OpenExisting: %v", err)
		}
		defer db.Close()
		if err := db.Ping(ctx); err != nil {
			t.Errorf("Ping: %v", err)
		}
		if _, err := db.GetDelivery(ctx, "d-1"); err != nil {
			t.Errorf("GetDelivery: %v", err)
		}
	})
}

func TestSettings(t *testing.T) {
	ctx := context.Background()
	db := newInboxDB(t)

	if v, ok, err := db.Setting(ctx, "redelivery.checkpoint"); err != nil || ok || v != "" {
		t.Fatalf("unset setting = %q, %v, %v; want \"\", false, nil", v, ok, err)
	}
	steps := []string{"2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", ""}
	for _, want := range steps {
		if err := db.SetSetting(ctx, "redelivery.checkpoint", want); err != nil {
			t.Fatalf("SetSetting(%q): %v", want, err)
		}
		v, ok, err := db.Setting(ctx, "redelivery.checkpoint")
		if err != nil || !ok || v != want {
			t.Errorf("after SetSetting(%q): %q, %v, %v", want, v, ok, err)
		}
	}
	if err := db.SetSetting(ctx, "other", "x"); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := db.Setting(ctx, "redelivery.checkpoint"); v != steps[len(steps)-1] {
		t.Errorf("setting another key changed this one to %q", v)
	}
}

// The read commands open with OpenReadOnly, the operator commands with
// OpenExisting: neither must create or migrate anything, and both refuse a
// database that is not lastmile's, or whose schema is not this version's.
func TestOpenExistingChangesNothing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	openers := map[string]func(context.Context, string) (*storage.DB, error){
		"OpenExisting": storage.OpenExisting, "OpenReadOnly": storage.OpenReadOnly,
	}

	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, open := range openers {
		if _, err := open(ctx, empty); err == nil || !strings.Contains(err.Error(), "not a lastmile database") {
			t.Errorf("%s on an empty file: %v", name, err)
		}
	}
	for name, open := range openers {
		if _, err := open(ctx, dir); err == nil || !strings.Contains(err.Error(), "a folder, not a database file") {
			t.Errorf("%s on a folder: %v", name, err)
		}
	}
	if fi, err := os.Stat(empty); err != nil || fi.Size() != 0 {
		t.Errorf("the empty file was changed: %v %v", fi.Size(), err)
	}
	if _, err := os.Stat(empty + "-wal"); !os.IsNotExist(err) {
		t.Errorf("a write-ahead log was created beside it (%v)", err)
	}

	// A database of an older lastmile (one migration fewer), and one of a
	// newer lastmile (a migration this version does not know).
	schemas := []struct {
		name, sql string
		want      []string
	}{
		{"older", `DELETE FROM schema_migrations WHERE version = (SELECT MAX(version) FROM schema_migrations)`,
			[]string{"older lastmile", "start this version's `lastmile serve` on it first, which migrates it"}},
		{"newer", `INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 0)`,
			[]string{"newer lastmile", "9999_future.sql", "use that version of lastmile"}},
	}
	for _, sc := range schemas {
		path := filepath.Join(dir, sc.name+".db")
		db, err := storage.Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
		raw, err := sql.Open("sqlite", "file:"+path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := raw.Exec(sc.sql); err != nil {
			t.Fatal(err)
		}
		raw.Close()
		for name, open := range openers {
			_, err := open(ctx, path)
			for _, want := range sc.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("%s on a database of an %s lastmile: %v; want an error saying %q", name, sc.name, err, want)
				}
			}
		}
		if sc.name == "newer" {
			// serve (Open, which migrates) refuses it too, and writes nothing.
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			db, err := storage.Open(ctx, path)
			if err == nil {
				db.Close()
			}
			for _, want := range sc.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("Open on a database of a newer lastmile: %v; want an error saying %q", err, want)
				}
			}
			if after, err := os.ReadFile(path); err != nil || !bytes.Equal(before, after) {
				t.Errorf("Open changed the database of a newer lastmile (%v)", err)
			}
		}
	}

	// A newer lastmile's database in rollback-journal mode (a backup of
	// it, say) is refused before lastmile's pragmas would make it a WAL
	// database: the file is as it was.
	path := filepath.Join(dir, "newer-rollback.db")
	if db, err := storage.Open(ctx, path); err != nil {
		t.Fatal(err)
	} else {
		db.Close()
	}
	storagetest.Exec(t, path, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 0)`,
		"PRAGMA journal_mode = DELETE")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if db, err := storage.Open(ctx, path); err == nil || !strings.Contains(err.Error(), "9999_future.sql") {
		if err == nil {
			db.Close()
		}
		t.Errorf("Open on a newer lastmile's database in rollback-journal mode: %v", err)
	}
	if after, err := os.ReadFile(path); err != nil || !bytes.Equal(before, after) {
		t.Errorf("Open changed a newer lastmile's database in rollback-journal mode (%v)", err)
	}

	// A current one opens, also while another connection writes to it.
	path = filepath.Join(dir, "odd #name?.db")
	live, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if err := live.SetSetting(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	ro, err := storage.OpenExisting(ctx, path)
	if err != nil {
		t.Fatalf("OpenExisting on a database in use: %v", err)
	}
	defer ro.Close()
	if v, ok, err := ro.Setting(ctx, "k"); err != nil || !ok || v != "v" {
		t.Errorf("read through OpenExisting: %q %v %v", v, ok, err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the database is not at its name: %v", err)
	}
}

// Beside a lastmile serve in the middle of a write transaction (another
// connection holding the write lock), OpenReadOnly and OpenExisting open
// at once, without waiting for the lock, and read the last commit;
// OpenReadOnly's writes are refused.
func TestOpenBesideAWriteTransaction(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lastmile.db")
	live, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	acceptDelivery(t, live, pendingDelivery("d-1", "acme/shop"))

	conn := storagetest.HoldWriteLock(t, path)
	if _, err := conn.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES ('uncommitted', 'x')`); err != nil {
		t.Fatal(err)
	}

	for name, open := range map[string]func(context.Context, string) (*storage.DB, error){
		"OpenExisting": storage.OpenExisting, "OpenReadOnly": storage.OpenReadOnly,
	} {
		db, err := open(ctx, path)
		if err != nil {
			t.Fatalf("%s beside a write transaction: %v", name, err)
		}
		if _, err := db.GetDelivery(ctx, "d-1"); err != nil {
			t.Errorf("read through %s: %v", name, err)
		}
		if _, ok, err := db.Setting(ctx, "uncommitted"); err != nil || ok {
			t.Errorf("%s reads the uncommitted write: %v, %v", name, ok, err)
		}
		if name == "OpenReadOnly" {
			if err := db.SetSetting(ctx, "k", "v"); !errors.Is(err, storage.ErrReadOnly) {
				t.Errorf("a write through OpenReadOnly: %v, want ErrReadOnly", err)
			}
			if _, err := db.Accept(ctx, pendingDelivery("d-2", "acme/shop"), "push", "accepted"); !errors.Is(err, storage.ErrReadOnly) {
				t.Errorf("Accept through OpenReadOnly: %v, want ErrReadOnly", err)
			}
		}
		if err := db.Close(); err != nil {
			t.Errorf("%s: Close: %v", name, err)
		}
	}
}
