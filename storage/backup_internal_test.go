package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// A database an older lastmile wrote (a backup made before an upgrade) is
// copied, said to be older, and the copy is one this version's Open
// migrates; one without the migrations table is no lastmile database.
func TestCopyDatabaseOfAnOlderLastmile(t *testing.T) {
	ctx := context.Background()
	files, err := migrationFiles()
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "old.db")
	db, err := openUpTo(ctx, src, files[len(files)-1].version-1)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "backup.db")
	c, err := CopyDatabase(ctx, src, dest)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Summary.Older {
		t.Errorf("the copy of an older lastmile's database is not said to be older: %+v", c.Summary)
	}
	if err := c.Place(); err != nil {
		t.Fatal(err)
	}
	if err := checkSchema(ctx, dest); err == nil {
		t.Error("the copy has every migration already")
	}
	migrated, err := Open(ctx, dest)
	if err != nil {
		t.Fatalf("Open of the copy: %v", err)
	}
	migrated.Close()
	if err := checkSchema(ctx, dest); err != nil {
		t.Errorf("the copy, migrated: %v", err)
	}
	c, err = CopyDatabase(ctx, dest, filepath.Join(t.TempDir(), "again.db"))
	if err != nil || c.Summary.Older {
		t.Errorf("copy of a database of this version: %+v, %v", c, err)
	}
	c.Remove()
}

// A restore's swap stopped before the copy takes the database's name (the
// copy gone, here) leaves the database where it was, whole — with its
// set-aside name as a second one, which serve refuses until one is
// removed — never no database at all, which serve would start again from
// empty.
func TestReplaceStoppedBeforeTheSwapLeavesTheDatabase(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	dest := filepath.Join(dir, "lastmile.db")
	db, err := Open(ctx, dest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.write.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES ('restore-test', 'kept')`); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	c, err := CopyDatabase(ctx, dest, backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Place(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := CopyDatabase(ctx, backup, dest)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(r.tmp); err != nil { // the swap's rename fails
		t.Fatal(err)
	}
	aside := dest + ".before-restore-20260102T030405Z"
	if _, err := r.Replace(ctx, aside); err == nil {
		t.Fatal("Replace without its copy succeeded")
	}
	fi, err := os.Stat(dest)
	if err != nil {
		t.Fatalf("no database left at %s: %v", dest, err)
	}
	if a, err := os.Stat(aside); err != nil || !os.SameFile(fi, a) {
		t.Errorf("the set-aside name: %v; want the database's second name", err)
	}
	if err := OneName(dest); err == nil {
		t.Error("the database with two names is not refused")
	}
	if err := os.Remove(aside); err != nil {
		t.Fatal(err)
	}
	reopened, err := OpenExisting(ctx, dest)
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	var v string
	if err := reopened.read.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = 'restore-test'`).Scan(&v); err != nil || v != "kept" {
		t.Errorf("the database left: %q, %v; want what it held", v, err)
	}
}

// limitPages is a driver connection whose online backups write to a
// destination of at most pages pages (PRAGMA max_page_count on the
// destination's connection): past them, SQLite answers SQLITE_FULL, as
// when the disk is full.
type limitPages struct {
	dc    backupSource
	pages int
}

// backupSource is the driver connection backupTo takes.
type backupSource interface {
	NewBackup(dstURI string) (*sqlite.Backup, error)
}

func (l limitPages) NewBackup(dstURI string) (*sqlite.Backup, error) {
	return l.dc.NewBackup(dstURI + "?" + url.Values{"_pragma": {fmt.Sprintf("max_page_count(%d)", l.pages)}}.Encode())
}

// A copy without room for it in its folder says so, and the room it
// needs, not the driver's "database or disk is full: not an error (13)";
// nothing is left of it.
func TestCopyDatabaseWithoutRoomSaysSo(t *testing.T) {
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "lastmile.db")
	db, err := Open(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c, err := copyDatabase(ctx, src, filepath.Join(dir, "backup.db"), func(dc any, path string) error {
		return backupTo(limitPages{dc.(backupSource), 2}, path)
	})
	if err == nil {
		c.Remove()
		t.Fatal("a copy written where there is room for 2 pages")
	}
	mb := fmt.Sprintf("%.1f MB", float64(fi.Size())/1e6) // the database checkpointed: its file is all of it
	want := fmt.Sprintf("copy %s: no room for a whole copy of the database in %s (it needs about %s; the database is %s)", src, dir, mb, mb)
	if err.Error() != want {
		t.Errorf("got  %s\nwant %s", err, want)
	}
	var se *sqlite.Error
	if !errors.As(err, &se) || se.Code() != sqlite3.SQLITE_FULL {
		t.Errorf("the driver's SQLITE_FULL is not wrapped: %#v", err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("left in the folder: %v", left)
	}
}

// A file system that finds no room only as the copy is synced (NFS, a
// delayed allocation) answers the sync with ENOSPC: said as no room too.
func TestNoRoomAtTheSync(t *testing.T) {
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "lastmile.db")
	db, err := Open(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	dir := t.TempDir()
	synced := &fs.PathError{Op: "sync", Path: filepath.Join(dir, "backup.db.tmp"), Err: syscall.ENOSPC}
	err = noRoom(ctx, db.read, src, synced.Path, synced)
	var nr *noRoomError
	if !errors.As(err, &nr) || !strings.HasPrefix(err.Error(), "no room for a whole copy of the database in "+dir) || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("got %v, want no room in %s, wrapping ENOSPC", err, dir)
	}
	other := &fs.PathError{Op: "sync", Path: synced.Path, Err: syscall.EIO}
	if err := noRoom(ctx, db.read, src, other.Path, other); err != other {
		t.Errorf("an I/O error: %v, want it as it is", err)
	}
}

// A database another process writes to holds checkpoint back — in
// rollback journal mode (a restored database serve has not opened yet) a
// writer's lock keeps it from reading at all —: that is the other
// process's lock, said as such, not damage.
func TestCheckpointBesideAWriterIsHeldNotDamaged(t *testing.T) {
	defer func(w time.Duration) { checkpointWait = w }(checkpointWait)
	checkpointWait = 100 * time.Millisecond
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "restored.db")
	w, err := sql.Open("sqlite", fileURI(path))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	conn, err := w.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `CREATE TABLE t (x); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	err = checkpoint(ctx, path)
	if !errors.Is(err, errHeld) || damaged(err) {
		t.Errorf("checkpoint beside a writer: %v; want the other process's lock said", err)
	}
	if _, err := conn.ExecContext(ctx, `COMMIT`); err != nil {
		t.Fatal(err)
	}
	if err := checkpoint(ctx, path); err != nil {
		t.Errorf("checkpoint once the writer is done: %v", err)
	}
}
