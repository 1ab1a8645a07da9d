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
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// A Copy is a copy of a lastmile database in a new file of its own, made
// by CopyDatabase: checked and on disk, under a temporary name beside the
// name it is for until Place gives it that name.
type Copy struct {
	tmp, dest string
	placed    bool

	Summary Summary // what the copy holds
}

// Summary is what a copy of a database holds, for an operator to check.
type Summary struct {
	Disk Disk // the file: its size, page size and auto_vacuum mode
	// Deliveries counts the webhook deliveries kept, NewestDelivery is
	// when the newest was received (zero without any).
	Deliveries     int64
	NewestDelivery time.Time
	// Releases counts the releases, NewestRelease is when the newest was
	// recorded (zero without any).
	Releases      int64
	NewestRelease time.Time
	// Older is a database of an older lastmile: lastmile serve migrates it
	// when it starts.
	Older bool
}

// CopyDatabase copies the lastmile database at src into a new file beside
// dest (same folder, a temporary name: see Place), with SQLite's online
// backup in one step: one read transaction of src throughout, so that the
// copy is the database as one commit left it, whatever other processes
// (a running lastmile serve) write meanwhile — their commits go on, into
// the WAL, and never make the copy start over —, page for page (its page
// size and auto_vacuum mode are src's). src is only read, and may be a
// WAL database with its -wal beside it: what the WAL holds is copied too.
//
// The copy is one self-contained file (rollback journal mode, no -wal
// beside it), readable by its owner only (0600), checked (PRAGMA
// quick_check, and a lastmile database that no newer lastmile wrote) and
// synced to disk. On error nothing is left of it. No room for the whole
// copy in dest's folder is said so, with the room it needs.
func CopyDatabase(ctx context.Context, src, dest string) (*Copy, error) {
	return copyDatabase(ctx, src, dest, backupTo)
}

// copyDatabase is CopyDatabase, with backup in place of backupTo (a
// test's seam).
func copyDatabase(ctx context.Context, src, dest string, backup func(dc any, path string) error) (_ *Copy, err error) {
	if err := readableFile(src); err != nil {
		return nil, err
	}
	source, err := sql.Open("sqlite", readOnlyDSN(src))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", src, err)
	}
	defer source.Close()
	conn, err := source.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", src, err)
	}
	defer conn.Close()
	// Before a byte is written: another program's database, or a newer
	// lastmile's, is refused at once.
	if _, err := schemaAge(ctx, conn); err != nil {
		if serr := sideFileErr(src, err); serr != err {
			return nil, fmt.Errorf("database %s: %w", src, serr) // as the read commands say it
		}
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	f, err := os.CreateTemp(filepath.Dir(dest), filepath.Base(dest)+".tmp-*") // 0600, O_EXCL
	if err != nil {
		return nil, fmt.Errorf("create the copy: %w", err)
	}
	// Closed before SQLite opens the file: closing any descriptor of a
	// file drops all the POSIX locks this process holds on it, SQLite's.
	f.Close()
	c := &Copy{tmp: f.Name(), dest: dest}
	defer func() {
		if err != nil {
			c.Remove()
		}
	}()
	if err := conn.Raw(func(dc any) error { return backup(dc, c.tmp) }); err != nil {
		return nil, fmt.Errorf("copy %s: %w", src, noRoom(ctx, conn, src, c.tmp, err))
	}
	if c.Summary, err = checkCopy(ctx, c.tmp); err != nil {
		return nil, fmt.Errorf("copy of %s: %w", src, noRoom(ctx, conn, src, c.tmp, err))
	}
	for _, suffix := range sideFiles {
		if _, err := os.Lstat(c.tmp + suffix); err == nil {
			return nil, fmt.Errorf("copy of %s: SQLite left %s beside it", src, filepath.Base(c.tmp+suffix))
		}
	}
	if err := syncFile(c.tmp); err != nil {
		return nil, fmt.Errorf("copy of %s: %w", src, noRoom(ctx, conn, src, c.tmp, err))
	}
	return c, nil
}

// backupTo copies the database of the driver connection dc (the source)
// to the empty file at path with sqlite3_backup_step(-1): every page in
// one call, inside one read transaction of the source.
func backupTo(dc any, path string) error {
	src, ok := dc.(interface {
		NewBackup(dstURI string) (*sqlite.Backup, error)
	})
	if !ok {
		return fmt.Errorf("the SQLite driver's connection (%T) has no online backup", dc)
	}
	b, err := src.NewBackup(fileURI(path))
	if err != nil {
		return err
	}
	more, err := b.Step(-1)
	if ferr := b.Finish(); err == nil {
		err = ferr
	}
	if err == nil && more {
		err = errors.New("the backup stopped before the last page")
	}
	return err
}

// noRoomError is SQLite's "database or disk is full" (SQLITE_FULL) while
// it wrote a copy of a database, said in words of its own: the driver's
// text ("database or disk is full: not an error (13)", with the message
// of the source's connection) is only wrapped.
type noRoomError struct {
	dir string // the folder the copy was written in
	// need is about the size of the whole copy, size the database's file
	// (its -wal aside); 0 when unknown.
	need, size int64
	err        error // the driver's
}

func (e *noRoomError) Error() string {
	msg := "no room for a whole copy of the database in " + e.dir
	if e.need > 0 && e.size > 0 {
		msg += fmt.Sprintf(" (it needs about %s; the database is %s)", Megabytes(e.need), Megabytes(e.size))
	}
	return msg
}

func (e *noRoomError) Unwrap() error { return e.err }

// Megabytes writes n bytes in MB (10⁶ bytes), with one decimal: how
// lastmile's commands and errors say a database's size.
func Megabytes(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// noRoom returns err, from writing the copy at path of the database src
// (read on conn), as a noRoomError if it says there is no room: SQLite's
// SQLITE_FULL, or ENOSPC.
func noRoom(ctx context.Context, conn querier, src, path string, err error) error {
	// SQLite's, or the file system's when it finds no room only as the
	// copy is synced (NFS, or a delayed allocation).
	if sqliteCode(err)&0xff != sqlite3.SQLITE_FULL && !errors.Is(err, syscall.ENOSPC) {
		return err
	}
	e := &noRoomError{dir: filepath.Dir(path), err: err}
	if abs, aerr := filepath.Abs(e.dir); aerr == nil {
		e.dir = abs
	}
	if d, derr := diskUsage(ctx, conn); derr == nil {
		e.need = d.Bytes()
	}
	if fi, serr := os.Stat(src); serr == nil {
		e.size = fi.Size()
	}
	return e
}

// sideFiles are the files SQLite keeps beside a database, by the suffix
// of their names.
var sideFiles = []string{"-wal", "-shm", "-journal"}

// checkCopy makes the copy at path a database in rollback journal mode —
// the online backup copies the source's first page as it is, and with it
// WAL mode, which would have SQLite make a -wal beside the copy the next
// time it opens it — and checks it: sound (PRAGMA quick_check) and a
// lastmile database no newer lastmile wrote. It returns what it holds.
func checkCopy(ctx context.Context, path string) (Summary, error) {
	db, err := sql.Open("sqlite", fileURI(path))
	if err != nil {
		return Summary{}, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode = DELETE").Scan(&mode); err != nil {
		return Summary{}, notOurs(err)
	}
	if mode != "delete" {
		return Summary{}, fmt.Errorf("journal mode %s, not delete", mode)
	}
	if err := quickCheck(ctx, db); err != nil {
		return Summary{}, err
	}
	var s Summary
	if s.Older, err = schemaAge(ctx, db); err != nil {
		return Summary{}, err
	}
	if s.Disk, err = diskUsage(ctx, db); err != nil {
		return Summary{}, err
	}
	var newestDelivery, newestRelease int64
	if err := db.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM deliveries), (SELECT COALESCE(MAX(received_at), 0) FROM deliveries),
		(SELECT COUNT(*) FROM releases), (SELECT COALESCE(MAX(created_at), 0) FROM releases)`).Scan(
		&s.Deliveries, &newestDelivery, &s.Releases, &newestRelease); err != nil {
		return Summary{}, err
	}
	s.NewestDelivery, s.NewestRelease = fromMillis(newestDelivery), fromMillis(newestRelease)
	return s, db.Close()
}

// quickCheck runs PRAGMA quick_check: an error with its first findings
// unless the database is sound.
func quickCheck(ctx context.Context, q querier) error {
	var found []string
	rows, err := q.QueryContext(ctx, "PRAGMA quick_check")
	if err == nil {
		for rows.Next() && len(found) < 5 {
			var line string
			if err = rows.Scan(&line); err != nil {
				break
			}
			found = append(found, line)
		}
		if cerr := closeRows(rows); err == nil {
			err = cerr
		}
	}
	switch {
	case err != nil && sqliteCode(err)&0xff == sqlite3.SQLITE_CORRUPT:
		return fmt.Errorf("damaged: PRAGMA quick_check: %w", err)
	case err != nil:
		return fmt.Errorf("PRAGMA quick_check: %w", notOurs(err))
	case len(found) != 1 || found[0] != "ok":
		text := strings.TrimPrefix(strings.Join(found, "\n"), "*** in database main ***\n")
		return fmt.Errorf("damaged: PRAGMA quick_check: %s", strings.ReplaceAll(text, "\n", "; "))
	}
	return nil
}

// schemaAge checks that q reads a lastmile database that no newer
// lastmile migrated; older is one that this version's lastmile serve
// would migrate first (a backup made before an upgrade).
func schemaAge(ctx context.Context, q querier) (older bool, err error) {
	applied, known, err := migrationsApplied(ctx, q)
	return applied < known, err
}

// migrationsApplied counts this version's migrations (known) and those of
// them the database has (applied), refusing another program's database
// and a newer lastmile's.
func migrationsApplied(ctx context.Context, q querier) (applied, known int, err error) {
	files, err := migrationFiles()
	if err != nil {
		return 0, 0, err
	}
	var unknown string
	err = q.QueryRowContext(ctx, `SELECT
		COALESCE((SELECT name FROM schema_migrations WHERE version > ?1 ORDER BY version DESC LIMIT 1), ''),
		(SELECT COUNT(*) FROM schema_migrations WHERE version <= ?1)`, files[len(files)-1].version).Scan(&unknown, &applied)
	switch {
	case err != nil && strings.Contains(err.Error(), "no such table"):
		return 0, 0, fmt.Errorf("not a lastmile database (%v)", err)
	case err != nil:
		return 0, 0, notOurs(err)
	case unknown != "":
		return 0, 0, newerDatabase(unknown)
	}
	return applied, len(files), nil
}

// OneName refuses a database file at path that has more than one name
// (hard links), as every way of opening a database does (oneName): for
// the commands that copy a database, or set it aside, without opening it —
// a WAL beside its other name would be missed. No file at path is not
// refused here: the caller says what that means.
func OneName(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return nil
	}
	return oneName(path, fi)
}

// readableFile refuses a path that names no regular file this user can
// read, saying why in words SQLite does not have ("unable to open
// database file").
func readableFile(path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrPermission): // a folder on the way this user may not enter
		return fmt.Errorf("%s: %w: run the command as the user lastmile serve runs as (sudo -u USER …), or with read access to the file and its folder", path, errors.Unwrap(err))
	case err != nil:
		return fmt.Errorf("%s: %w", path, errors.Unwrap(err))
	case fi.IsDir():
		return fmt.Errorf("%s: a folder, not a database file", path)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s: not a regular file (a FIFO, a device or a socket), not a database file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w: run the command as the user lastmile serve runs as (sudo -u USER …), or with read access to the file and its folder", path, errors.Unwrap(err))
	}
	return f.Close()
}

// Place gives the copy its name: the dest it was made for, which must
// not exist — a new name for a backup, or, for a restore, the name of the
// database the restore set aside. The rename is atomic: there is never
// part of a copy at dest.
func (c *Copy) Place() error {
	exists := fmt.Errorf("%s exists: lastmile writes only a new file there", c.dest)
	// A -wal or -journal left beside the name (its database deleted
	// without them) would be applied by SQLite to the copy: another
	// database's commits read as the copy's.
	if err := NoSideFiles(c.dest); err != nil {
		return err
	}
	// A hard link is made only where no file is: nothing that appeared at
	// dest since it was checked is replaced. Where the file system has no
	// hard links, a rename after a last look.
	if err := os.Link(c.tmp, c.dest); err == nil {
		if err := os.Remove(c.tmp); err != nil { // two names: serve would refuse the file
			c.placed = true
			return fmt.Errorf("%s is written, but its temporary name is left (remove it): %w", c.dest, err)
		}
	} else if errors.Is(err, fs.ErrExist) {
		return exists
	} else {
		if _, err := os.Lstat(c.dest); err == nil {
			return exists
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := os.Rename(c.tmp, c.dest); err != nil {
			return err
		}
	}
	c.placed = true
	if err := syncDir(filepath.Dir(c.dest)); err != nil {
		return fmt.Errorf("%s is written, but its folder could not be synced to disk (a power cut could lose the new name): %w", c.dest, err)
	}
	return nil
}

// Remove removes the copy, and any file SQLite left beside it, unless it
// was placed. A nil Copy is nothing to remove.
func (c *Copy) Remove() {
	if c == nil || c.placed {
		return
	}
	os.Remove(c.tmp)
	for _, suffix := range sideFiles {
		os.Remove(c.tmp + suffix)
	}
}

// Replace gives the copy the name of the database it was made to replace,
// its dest, and keeps that database under aside, a restore's swap: the
// database is first checkpointed (every commit of its -wal written into
// the file), then given aside as a second name (a hard link), its side
// files (-wal, -shm, -journal, those left) moved to aside's names, and the
// copy renamed over dest — atomically. A restore stopped at any point
// leaves a database at dest, the one it replaced (with two names, which
// serve refuses until one is removed) or the copy, never none: a serve
// started on none would create an empty one, and SQLite would drop a -wal
// left beside it. With no database at dest, it is Place. None of aside's
// names may exist (an error that is fs.ErrExist, nothing changed); a
// database that cannot be opened and checkpointed (damaged) is refused,
// nothing changed. It returns the names given, none if there was no
// database at dest.
func (c *Copy) Replace(ctx context.Context, aside string) (moved []string, err error) {
	if _, err := os.Lstat(c.dest); errors.Is(err, fs.ErrNotExist) {
		// Files left beside a database deleted without them are set aside
		// with it: SQLite would apply a -wal or -journal to the copy.
		if moved, err = SetAside(c.dest, aside); err != nil {
			return moved, err
		}
		return moved, c.Place()
	} else if err != nil {
		return nil, err
	}
	for _, name := range append([]string{aside}, suffixed(aside)...) {
		if _, err := os.Lstat(name); err == nil {
			return nil, fmt.Errorf("set aside: %s: %w: nothing was moved", name, fs.ErrExist)
		}
	}
	if err := checkpoint(ctx, c.dest); errors.Is(err, errHeld) {
		return nil, fmt.Errorf("%w: nothing changed (run restore again once it is done)", err)
	} else if damaged(err) {
		return nil, fmt.Errorf("%w: nothing changed (a damaged database: rename it, its -wal and -shm yourself, then restore)", err)
	} else if err != nil {
		return nil, fmt.Errorf("%w: nothing changed", err)
	}
	if err := os.Link(c.dest, aside); err != nil {
		// A file system without hard links: renamed, then the copy put in
		// its place (the database checkpointed, nothing is lost between).
		if moved, err = SetAside(c.dest, aside); err != nil {
			return moved, err
		}
		return moved, c.Place()
	}
	moved = []string{aside}
	for _, suffix := range sideFiles {
		err := os.Rename(c.dest+suffix, aside+suffix)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return moved, fmt.Errorf("set %s aside: %w", c.dest+suffix, err)
		}
		moved = append(moved, aside+suffix)
	}
	if err := syncDir(filepath.Dir(c.dest)); err != nil {
		return moved, err
	}
	if err := os.Rename(c.tmp, c.dest); err != nil {
		return moved, err
	}
	c.placed = true
	if err := syncDir(filepath.Dir(c.dest)); err != nil {
		return moved, fmt.Errorf("%s is restored, but its folder could not be synced to disk (a power cut could lose the new name): %w", c.dest, err)
	}
	return moved, nil
}

// SideFileError is a file SQLite keeps beside a database (-wal, -shm,
// -journal) found beside a name where no database is: left by one deleted
// without it, which SQLite would apply to a new database of that name.
type SideFileError struct{ Path string }

func (e *SideFileError) Error() string {
	return fmt.Sprintf("%s exists, left by a database of that name deleted without it: SQLite would read it as part of a new file there (remove it, or name another file)", e.Path)
}

// NoSideFiles refuses a name with a file SQLite keeps beside a database
// (see SideFileError).
func NoSideFiles(path string) error {
	for _, name := range suffixed(path) {
		if _, err := os.Lstat(name); err == nil {
			return &SideFileError{Path: name}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// NotASideFile refuses a name SQLite would take for a file it keeps beside
// a database (X-wal beside X): opening X, SQLite would apply it to X, or
// delete it.
func NotASideFile(path string) error {
	for _, suffix := range sideFiles {
		if db, ok := strings.CutSuffix(path, suffix); ok && db != "" && !strings.HasSuffix(db, string(filepath.Separator)) {
			return fmt.Errorf("%s: a name ending in %s is that of a file SQLite keeps beside the database %s, which it would apply to that database or delete: name the backup otherwise (such as %s.db)", path, suffix, db, path)
		}
	}
	return nil
}

// suffixed is path followed by the suffix of each file SQLite keeps
// beside a database.
func suffixed(path string) []string {
	var names []string
	for _, suffix := range sideFiles {
		names = append(names, path+suffix)
	}
	return names
}

// errHeld is a checkpoint another process kept from finishing: one
// reading the database (lastmile history, audit, backup, sqlite3) for
// longer than the 10 s checkpoint waits.
var errHeld = errors.New("another process is reading the database (lastmile history, audit or backup, sqlite3?) or writing to it")

// checkpoint writes every commit of the database at path into its file
// and empties its -wal (rolling a hot journal back, in rollback journal
// mode), refusing one it cannot open or checkpoint whole.
func checkpoint(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite", fileURI(path)+"?"+url.Values{"_pragma": {fmt.Sprintf("busy_timeout(%d)", checkpointWait.Milliseconds())}}.Encode())
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	// A lock another process holds past the wait (a writer, in rollback
	// journal mode: a restored database serve has not opened yet) is that
	// process's, not damage.
	held := func(what string, err error) error {
		if code := sqliteCode(err) & 0xff; code == sqlite3.SQLITE_BUSY || code == sqlite3.SQLITE_LOCKED {
			err = errHeld
		}
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	var n, busy, frames, done int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master`).Scan(&n); err != nil {
		return held("read", err)
	}
	if err := db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &frames, &done); err != nil {
		return held("checkpoint", err)
	}
	if busy != 0 {
		return fmt.Errorf("checkpoint %s: %w", path, errHeld)
	}
	return db.Close()
}

// checkpointWait is how long checkpoint waits for another process's lock.
var checkpointWait = 10 * time.Second

// SetAside renames the database at path, and the files SQLite keeps
// beside it (-wal, -shm and -journal, those there), to name and name
// followed by the same suffix — still one database, that SQLite opens
// whole by its new name —, deleting nothing: a restore's first step, so
// that no -wal or -journal of the database replaced is applied to the
// restored one. None of the new names may exist (an error that is
// fs.ErrExist, nothing moved). It returns the names given, none if there
// was no database at path.
func SetAside(path, name string) (moved []string, err error) {
	pairs := [][2]string{{path, name}}
	for _, suffix := range sideFiles {
		pairs = append(pairs, [2]string{path + suffix, name + suffix})
	}
	for _, p := range pairs {
		if _, err := os.Lstat(p[1]); err == nil {
			return nil, fmt.Errorf("set aside: %s: %w: nothing was moved", p[1], fs.ErrExist)
		}
	}
	for _, p := range pairs {
		err := os.Rename(p[0], p[1])
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return moved, fmt.Errorf("set %s aside: %w", p[0], err)
		}
		moved = append(moved, p[1])
	}
	if len(moved) == 0 {
		return nil, nil
	}
	return moved, syncDir(filepath.Dir(path))
}

// syncFile writes the file at path to disk.
func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// syncDir writes the folder's entries to disk: a rename in it lasts
// through a power cut. Some systems cannot sync a folder (Windows cannot
// open one): there the rename is as durable as they make it.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return nil
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
