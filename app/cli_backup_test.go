package app

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lastmile-app/lastmile/storage/storagetest"
)

// A database file with a second name (a hard link) is refused by backup
// and by restore's --database, as by every command that opens it: a WAL
// kept beside the other name would be missed by the copy, or left to be
// applied to the file restore sets aside. Nothing is written.
func TestBackupAndRestoreRefuseADatabaseWithTwoNames(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "lastmile.db")
	acceptDeliveries(t, db, "d", 3)
	backups := t.TempDir()
	bk := filepath.Join(backups, "backup.db")
	if code, _, stderr := run(t, db, "backup", bk); code != 0 {
		t.Fatalf("backup: exit %d, %s", code, stderr)
	}
	other := filepath.Join(dir, "other.db")
	if err := os.Link(db, other); err != nil {
		t.Fatal(err)
	}
	before, beforeBackups := folder(t, dir), folder(t, backups)
	for _, args := range [][]string{
		{"backup", filepath.Join(backups, "new.db")},
		{"backup", "--database", other, filepath.Join(backups, "new.db")},
		{"restore", bk},
		{"restore", "--database", other, bk},
	} {
		code, stdout, stderr := run(t, db, args...)
		if code != 1 || stdout != "" || !strings.Contains(stderr, "the file has 2 names (hard links)") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 1 and the file's two names refused", args, code, stdout, stderr)
		}
	}
	sameFolder(t, dir, before)
	sameFolder(t, backups, beforeBackups)
}

// A BACKUP that is the database itself — its path, or a symbolic link to
// it — is refused before anything is done: restore would set the database
// aside and copy it back.
func TestRestoreRefusesTheDatabaseItself(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "lastmile.db")
	acceptDeliveries(t, db, "d", 3)
	link := filepath.Join(t.TempDir(), "backup.db")
	if err := os.Symlink(db, link); err != nil {
		t.Fatal(err)
	}
	before := folder(t, dir)
	for _, args := range [][]string{
		{"restore", db},
		{"restore", link},
		{"restore", "--database", link, db},
	} {
		code, stdout, stderr := run(t, db, args...)
		if code != 1 || stdout != "" || !strings.Contains(stderr, "is the database itself") || !strings.Contains(stderr, "nothing changed") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 1, the backup being the database, nothing changed", args, code, stdout, stderr)
		}
	}
	sameFolder(t, dir, before)
}

// A DEST that is a folder is named as one, with what to give instead: a new
// file in it. Nothing is written.
func TestBackupToAFolderSaysToNameAFileInIt(t *testing.T) {
	db := filepath.Join(t.TempDir(), "lastmile.db")
	acceptDeliveries(t, db, "d", 1)
	dir := t.TempDir()
	code, stdout, stderr := run(t, db, "backup", dir)
	want := "lastmile: " + dir + " is a folder: name the backup's new file in it, such as " + filepath.Join(dir, "lastmile-backup.db") + "\n"
	if code != 1 || stdout != "" || stderr != want {
		t.Errorf("backup to a folder: exit %d, stdout %q, stderr %q; want 1 and %q", code, stdout, stderr, want)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("backup to a folder left %v in it", entries)
	}
}

// A DEST named as SQLite names a database's side files (X-wal, X-journal,
// X-shm) is refused, nothing written: opening X, SQLite would apply the
// backup to X as its WAL or hot journal, or delete it.
func TestBackupNamedAsADatabasesSideFileIsRefused(t *testing.T) {
	db := filepath.Join(t.TempDir(), "lastmile.db")
	acceptDeliveries(t, db, "d", 1)
	dir := t.TempDir()
	other := filepath.Join(dir, "other.db")
	acceptDeliveries(t, other, "o", 1)
	for _, suffix := range []string{"-wal", "-journal", "-shm"} {
		dest := other + suffix
		os.Remove(dest) // a stopped serve's leftovers: none
		code, stdout, stderr := run(t, db, "backup", dest)
		want := "lastmile: " + dest + ": a name ending in " + suffix + " is that of a file SQLite keeps beside the database " + other
		if code != 1 || stdout != "" || !strings.HasPrefix(stderr, want) {
			t.Errorf("backup to %s: exit %d, stdout %q, stderr %q; want 1 and %q…", dest, code, stdout, stderr, want)
		}
		if _, err := os.Lstat(dest); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("backup to %s left a file there: %v", dest, err)
		}
	}
	// A name that merely ends so, with nothing before it, is a file of
	// its own.
	dest := filepath.Join(dir, "-wal")
	if code, _, stderr := run(t, db, "backup", "--", dest); code != 0 {
		t.Errorf("backup to %s: exit %d, %s", dest, code, stderr)
	}
}

// A DEST in a folder that does not exist is refused as such, before the
// database is read, in DEST's name (not a temporary file's).
func TestBackupIntoAMissingFolderSaysSo(t *testing.T) {
	db := filepath.Join(t.TempDir(), "lastmile.db")
	acceptDeliveries(t, db, "d", 1)
	dest := filepath.Join(t.TempDir(), "missing", "backup.db")
	code, stdout, stderr := run(t, db, "backup", dest)
	want := "lastmile: the folder of " + dest + " does not exist: create it first, or name a new file in a folder that does\n"
	if code != 1 || stdout != "" || stderr != want {
		t.Errorf("backup into a missing folder: exit %d, stdout %q, stderr %q; want 1 and %q", code, stdout, stderr, want)
	}
}

// `--` ends the flags, wherever they are: a file whose name starts with
// "-" after it is a file, for backup as for the other commands.
func TestBackupToAFileNamedLikeAFlagAfterTheEndOfFlags(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "lastmile.db")
	acceptDeliveries(t, db, "d", 3)
	t.Chdir(t.TempDir())
	if code, _, stderr := run(t, db, "backup", "--database", db, "--", "-bk.db"); code != 0 {
		t.Fatalf("backup -- -bk.db: exit %d, %s", code, stderr)
	}
	if _, err := os.Stat("-bk.db"); err != nil {
		t.Errorf("no backup named -bk.db: %v", err)
	}
	// Without it, a flag it is, and an unknown one: a usage error.
	if code, _, stderr := run(t, db, "backup", "-other.db"); code != 2 || !strings.Contains(stderr, "flag provided but not defined: --other.db") {
		t.Errorf("backup -other.db: exit %d, %s; want the unknown flag refused", code, stderr)
	}
}

// A -wal left beside a name where no database is (the database deleted
// without it) would be applied by SQLite to a file given that name: a
// backup there is refused, nothing written; a restore there sets it aside,
// says so, and the restored database holds the backup's deliveries alone.
func TestBackupAndRestoreBesideALeftoverWAL(t *testing.T) {
	src := filepath.Join(t.TempDir(), "lastmile.db")
	acceptDeliveries(t, src, "backed-up", 40)
	backups := t.TempDir()
	bk := filepath.Join(backups, "backup.db")
	if code, _, stderr := run(t, src, "backup", bk); code != 0 {
		t.Fatalf("backup: exit %d, %s", code, stderr)
	}
	other := filepath.Join(t.TempDir(), "lastmile.db")
	acceptDeliveries(t, other, "other", 10)
	crashed := crashedWithWAL(t, other, "unsaved", 60) // another database's WAL
	if err := os.Remove(crashed); err != nil {         // deleted, its -wal left
		t.Fatal(err)
	}

	stale := filepath.Join(backups, "stale.db")
	copyFile(t, crashed+"-wal", stale+"-wal")
	before := folder(t, backups)
	code, stdout, stderr := run(t, src, "backup", stale)
	if code != 1 || stdout != "" || !strings.Contains(stderr, stale+"-wal exists, left by a database of that name deleted without it") {
		t.Errorf("backup beside a leftover -wal: exit %d, stdout %q, stderr %q; want exit 1 and the -wal named", code, stdout, stderr)
	}
	sameFolder(t, backups, before)

	code, stdout, stderr = run(t, crashed, "restore", bk)
	if code != 0 || stderr != "" {
		t.Fatalf("restore: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "There was no database at "+crashed+", but files SQLite would have applied to the restored one") ||
		!strings.Contains(stdout, crashed+".before-restore-") {
		t.Errorf("restore's output does not say the leftover -wal was set aside:\n%s", stdout)
	}
	if got := storagetest.DeliveryIDs(t, crashed); !slices.Equal(got, ids("backed-up", 40)) {
		t.Errorf("the restored database holds %d deliveries %v…, want the backup's 40", len(got), got[:min(3, len(got))])
	}
	if got := integrity(t, crashed); got != "ok" {
		t.Errorf("integrity_check of the restored database: %s", got)
	}
}

// A process reading the database (a long lastmile history, sqlite3) keeps
// restore's checkpoint from finishing: restore says so and to run it
// again, changes nothing — and does not call the database damaged.
func TestRestoreBesideAReaderSaysToRunItAgain(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "lastmile.db")
	acceptDeliveries(t, db, "d", 3)
	bk := filepath.Join(t.TempDir(), "backup.db")
	if code, _, stderr := run(t, db, "backup", bk); code != 0 {
		t.Fatalf("backup: exit %d, %s", code, stderr)
	}
	wal := crashedWithWAL(t, db, "unsaved", 5) // a -wal to checkpoint
	defer readingAt(t, wal)()
	before := folder(t, filepath.Dir(wal))
	code, stdout, stderr := run(t, wal, "restore", bk)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "another process is reading the database") ||
		!strings.Contains(stderr, "nothing changed (run restore again once it is done)") || strings.Contains(stderr, "damaged") {
		t.Errorf("restore beside a reader: exit %d, stdout %q, stderr %q; want exit 1, the reader named, nothing changed", code, stdout, stderr)
	}
	after := folder(t, filepath.Dir(wal))
	delete(before, "lastmile.db-shm") // SQLite's shared memory, which the reader and restore share
	delete(after, "lastmile.db-shm")
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("restore left %s", name)
		}
	}
	if _, err := os.Stat(wal); err != nil {
		t.Errorf("the database is gone: %v", err)
	}
}

// A read that meets a damaged page names the file and what to do, rather
// than SQLite's words alone: a table's page damaged (found by the read),
// or one the check at open reads.
func TestReadingADamagedDatabaseSaysToRestoreIt(t *testing.T) {
	for _, tc := range []struct{ table, command string }{
		{"deliveries", "deliveries"},
		{"schema_migrations", "history"},
	} {
		db := filepath.Join(t.TempDir(), "lastmile.db")
		acceptDeliveries(t, db, "d", 50)
		storagetest.DamagePage(t, db, tc.table)
		code, stdout, stderr := run(t, db, tc.command)
		if code != 1 || stdout != "" || !strings.Contains(stderr, db) || !strings.Contains(stderr, "damaged (") ||
			!strings.Contains(stderr, "restore it from a backup with lastmile restore") {
			t.Errorf("%s on a database whose %s is damaged: exit %d, stdout %q, stderr %q", tc.command, tc.table, code, stdout, stderr)
		}
	}
}

// A temporary copy an interrupted backup left beside DEST (killed before
// it gave the copy its name) is named by the next backup to DEST, and
// left where it is.
func TestBackupNamesATemporaryCopyLeftBeforeIt(t *testing.T) {
	db := filepath.Join(t.TempDir(), "lastmile.db")
	acceptDeliveries(t, db, "d", 3)
	dir := t.TempDir()
	dest := filepath.Join(dir, "backup.db")
	stray := dest + ".tmp-4242"
	if err := os.WriteFile(stray, make([]byte, 2_000_000), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "other.db.tmp-1"), nil, 0o600); err != nil { // another DEST's
		t.Fatal(err)
	}
	code, stdout, stderr := run(t, db, "backup", dest)
	if code != 0 || stderr != "" {
		t.Fatalf("backup: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	want := "Temporary copies an interrupted backup or restore left (remove them once no other runs):\n  " + stray + " (2.0 MB)\n"
	if !strings.HasSuffix(stdout, want) {
		t.Errorf("backup's output:\n%s\nwant it to end with:\n%s", stdout, want)
	}
	if _, err := os.Stat(stray); err != nil {
		t.Errorf("the temporary copy is gone: %v", err)
	}
}
