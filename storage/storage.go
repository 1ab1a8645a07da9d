// Package storage keeps lastmile's state in SQLite: the webhook inbox, the
// release ledger (the audit record) and the rollups behind /metrics.
//
// It uses modernc.org/sqlite (pure Go) in WAL mode. Writes go through one
// connection, so they never contend with each other; reads use a pool and see
// the last committed state. Migrations are embedded and applied at Open, each
// in its own transaction.
package storage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/lastmile-app/lastmile/metrics"
)

//go:embed migrations/*.sql
var migrations embed.FS

// DB is an open lastmile database.
type DB struct {
	path  string
	file  os.FileInfo // the file opened at path, to tell if path names it still (sameFile)
	write *sql.DB     // exactly one connection: SQLite has one writer anyway; nil when opened read-only
	read  *sql.DB     // readers, concurrent with the writer thanks to WAL

	// Now is the clock used for every timestamp the store writes itself.
	Now func() time.Time

	intake *groupCommitter
	queue  queueCache // the worker's queue heads

	ckpt               *sql.DB // the checkpointer's own connection
	stopCkpt, ckptDone chan struct{}
	// ckptMu keeps the checkpointer's checkpoints apart from Vacuum: one
	// under way makes the other give up (busy), which Vacuum would report
	// as a reader holding the file's size back. Taken before the write
	// connection, by both.
	ckptMu sync.Mutex

	closeOnce sync.Once
	closeErr  error

	stmtMu sync.Mutex
	stmts  map[stmtKey]*sql.Stmt // prepared's cache

	snapMu      sync.Mutex // the metrics snapshot, its connection and data_version
	snapConn    *sql.Conn
	snap        *metrics.Snapshot
	snapVersion int64
}

// Open opens (creating if needed) the database at path and applies any
// migration it has not seen yet.
func Open(ctx context.Context, path string) (*DB, error) {
	return open(ctx, path, math.MaxInt, nil)
}

// OpenLogged is Open logging on log the migrations it applies to a
// database that had some already (an upgrade: some take minutes on a
// large database), a line before each and one after, with how long it
// took.
func OpenLogged(ctx context.Context, path string, log *slog.Logger) (*DB, error) {
	return open(ctx, path, math.MaxInt, log)
}

// openUpTo is Open applying the migrations up to version last only (tests
// of a migration start from the schema before it); none when last is 0.
func openUpTo(ctx context.Context, path string, last int) (*DB, error) {
	return open(ctx, path, last, nil)
}

func open(ctx context.Context, path string, last int, log *slog.Logger) (*DB, error) {
	if path == "" {
		return nil, errors.New("open database: empty path")
	}
	// The database holds webhook bodies, deploy logs and the audit record:
	// a new one is readable by its owner only (SQLite gives its -wal and
	// -shm files the database's mode), whatever the umask.
	// (Created through a symbolic link too — even one to a file not there
	// yet —, which O_EXCL would not follow.)
	// Not a FIFO, which the open would wait on for a writer, forever.
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, notAFile(path, fi)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	fi, err := f.Stat()
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if err := oneName(path, fi); err != nil {
		return nil, err
	}
	// Refused before the pools' pragmas change the file (journal_mode(WAL)
	// rewrites a rollback-journal database's header): a newer lastmile's
	// database is left as it was.
	if migration := newerMigration(ctx, path); migration != "" {
		return nil, fmt.Errorf("migrate database %s: %w", path, newerDatabase(migration))
	}
	if err := initNew(ctx, path); err != nil {
		return nil, openErr(path, err)
	}
	// synchronous(NORMAL) in WAL mode: a commit survives the process being
	// killed, but may be lost (never half-applied) in a power cut. Writes
	// that must survive a power cut too — an accepted delivery, the intent
	// to create a GitHub deployment — use durableTx, which commits with
	// synchronous(FULL): on disk before it returns.
	pragmas := []string{
		"journal_mode(WAL)",
		"synchronous(NORMAL)",
		"foreign_keys(1)",
		fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()),
		// The WAL file is cut back to this size when it starts over
		// (after a checkpoint caught up): a burst, a large prune or a
		// migration does not leave it at its largest for good.
		fmt.Sprintf("journal_size_limit(%d)", walSizeLimit),
	}
	dsn := func(extra url.Values) string {
		q := url.Values{}
		for _, p := range pragmas {
			q.Add("_pragma", p)
		}
		for k, vs := range extra {
			for _, v := range vs {
				q.Add(k, v)
			}
		}
		return fileURI(path) + "?" + q.Encode()
	}
	// The writer does not checkpoint inside its commits (a checkpoint copies
	// the WAL into the database file and syncs it: tens of milliseconds that
	// would stall the webhook intake); the checkpointer goroutine does it
	// beside the writer.
	write, err := sql.Open("sqlite", dsn(url.Values{"_txlock": {"immediate"}, "_pragma": {"wal_autocheckpoint(0)"}}))
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	write.SetConnMaxIdleTime(0)
	if err := write.PingContext(ctx); err != nil {
		write.Close()
		return nil, openErr(path, err)
	}
	db := &DB{path: path, file: fi, write: write, Now: time.Now}
	if last > 0 {
		if err := db.migrate(ctx, last, log); err != nil {
			write.Close()
			return nil, fmt.Errorf("migrate database %s: %w", path, db.writeErr(err))
		}
		// SQLite opens a file it may not write read-only, and says so at
		// the first write only: at start, not at the first delivery,
		// answered 503 by a process that said it was ready.
		if _, err := write.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES ('opened_at', ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
			write.Close()
			return nil, openErr(path, err)
		}
	}
	read, err := sql.Open("sqlite", dsn(url.Values{"_pragma": {"query_only(1)"}}))
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	read.SetMaxOpenConns(8)
	db.read = read
	ckpt, err := sql.Open("sqlite", dsn(nil))
	if err != nil {
		write.Close()
		read.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	ckpt.SetMaxOpenConns(1)
	db.ckpt, db.stopCkpt, db.ckptDone = ckpt, make(chan struct{}), make(chan struct{})
	go db.checkpointer()
	if db.intake, err = newGroupCommitter(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	return db, nil
}

// initNew sets up a database that has no page yet (a new file) to give
// back to the file system the space retention frees: auto_vacuum
// INCREMENTAL, which lets Prune truncate free pages off the file
// (incremental_vacuum). The setting only takes on a database with no page:
// switching to WAL writes the first page, so it has to come before, on a
// connection of its own — the pools' _pragma lists would apply it on every
// connection they open, and the driver runs them in its own (sorted)
// order. An existing database keeps its setting: `lastmile vacuum`
// converts one made without it.
func initNew(ctx context.Context, path string) error {
	conn, err := sql.Open("sqlite", fileURI(path))
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetMaxOpenConns(1)
	var pages int64
	if err := conn.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		return notOurs(err)
	}
	if pages > 0 {
		return checkOurs(ctx, conn)
	}
	for _, pragma := range []string{"PRAGMA auto_vacuum = INCREMENTAL", "PRAGMA journal_mode = WAL"} {
		if _, err := conn.ExecContext(ctx, pragma); err != nil {
			return err
		}
	}
	return nil
}

// checkOurs refuses a database that has a schema (tables, views, indexes
// or triggers) but is not lastmile's (no schema_migrations table), before
// anything is written to it: migrating would add lastmile's tables to
// another program's database, and switch it to WAL.
func checkOurs(ctx context.Context, conn *sql.DB) error {
	ours := false // schema_migrations is among the tables
	var tables []string
	rows, err := conn.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite\_%' ESCAPE '\' ORDER BY name`)
	if err != nil {
		return notOurs(err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return err
		}
		ours = ours || name == "schema_migrations"
		tables = append(tables, name)
	}
	if err := rows.Err(); err != nil {
		return notOurs(err)
	}
	if !ours && len(tables) > 0 {
		if len(tables) > 3 {
			tables = append(tables[:3], "…")
		}
		return fmt.Errorf("not a lastmile database (it holds another schema: %s); lastmile leaves it as it is: name a new file, or a lastmile database", strings.Join(tables, ", "))
	}
	return nil
}

// notOurs is the error of a first query that SQLite could not run on a
// file: "not a lastmile database" when the file is not a database at
// all, the error as it is otherwise (a permission, a disk error).
func notOurs(err error) error {
	if sqliteCode(err) == sqlite3.SQLITE_NOTADB {
		return fmt.Errorf("not a lastmile database (%v)", err)
	}
	return err
}

// Damaged is err, met reading the database at path, naming the file and
// what to do when SQLite says the file is damaged (a page that is not what
// SQLite wrote: a disk error, a copy taken while it was written); err as
// it is otherwise.
func Damaged(path string, err error) error {
	if damaged(err) {
		return fmt.Errorf("database %s is damaged (%w): %s", path, err, restoreAdvice)
	}
	return err
}

// damaged reports whether SQLite says the file is damaged.
func damaged(err error) bool {
	code := sqliteCode(err) & 0xff
	return code == sqlite3.SQLITE_CORRUPT || code == sqlite3.SQLITE_NOTADB
}

const restoreAdvice = "restore it from a backup with lastmile restore (see docs/operations.md, Backups)"

// sqliteCode is the SQLite result code (extended) of err, 0 if none.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

// walSizeLimit is the size the WAL file is cut back to when it starts
// over, and the size past which the checkpointer makes it start over.
const walSizeLimit = 64 << 20

// busyTimeout is how long a connection waits for a lock another holds.
const busyTimeout = 10 * time.Second

// restartWait bounds how long a checkpoint that makes the WAL start over
// waits for the readers to leave it, holding the writes back meanwhile.
const restartWait = 100 * time.Millisecond

// checkpointer copies committed WAL pages into the database file twice a
// second with a passive checkpoint, which waits for no reader or writer.
func (db *DB) checkpointer() {
	defer close(db.ckptDone)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-db.stopCkpt:
			return
		case <-t.C:
			db.ckptMu.Lock()
			_ = db.checkpoint(context.Background())
			db.ckptMu.Unlock()
		}
	}
}

// checkpoint runs one passive checkpoint. The WAL starts over only when a
// write begins after a checkpoint caught up with it: under a steady intake
// a passive one never does (commits keep coming as it copies), and the
// file would grow without end — every read searching more of it. Past
// walSizeLimit, a restart checkpoint follows on the write connection,
// which holds this process's writes back while it copies the little the
// passive one left and waits for the readers to leave the WAL (at most
// restartWait, else it gives up, SQLITE_BUSY, and a later tick tries
// again); the next write starts the WAL over.
func (db *DB) checkpoint(ctx context.Context) error {
	var busy, frames, copied, pageSize int64
	if err := db.ckpt.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied); err != nil {
		return err
	}
	if err := db.ckpt.QueryRowContext(ctx, "PRAGMA page_size").Scan(&pageSize); err != nil {
		return err
	}
	if frames*pageSize <= walSizeLimit {
		return nil
	}
	conn, err := db.write.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA busy_timeout = %d", restartWait.Milliseconds())); err != nil {
		return err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), fmt.Sprintf("PRAGMA busy_timeout = %d", busyTimeout.Milliseconds()))
	return conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint(RESTART)").Scan(&busy, &frames, &copied)
}

// prepared returns query prepared on pool (db.read or db.write), prepared
// once: the driver otherwise compiles a statement on every call, which
// costs more than running the small queries the worker makes for every
// delivery. Never call it for db.write inside a write transaction: preparing
// needs the one write connection.
func (db *DB) prepared(ctx context.Context, pool *sql.DB, query string) (*sql.Stmt, error) {
	key := stmtKey{pool, query}
	db.stmtMu.Lock()
	defer db.stmtMu.Unlock()
	if st, ok := db.stmts[key]; ok {
		return st, nil
	}
	st, err := pool.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if db.stmts == nil {
		db.stmts = map[stmtKey]*sql.Stmt{}
	}
	db.stmts[key] = st
	return st, nil
}

type stmtKey struct {
	pool  *sql.DB
	query string
}

// exec runs one write statement on its own (it is its own transaction),
// through a prepared statement.
func (db *DB) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if db.write == nil {
		return nil, ErrReadOnly
	}
	st, err := db.prepared(ctx, db.write, query)
	if err != nil {
		return nil, err
	}
	res, err := st.ExecContext(ctx, args...)
	return res, db.writeErr(err)
}

// queryRow is db.read.QueryRowContext through a prepared statement.
func (db *DB) queryRow(ctx context.Context, query string, args ...any) rowScanner {
	st, err := db.prepared(ctx, db.read, query)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(ctx, args...)
}

// query is db.read.QueryContext through a prepared statement.
func (db *DB) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := db.prepared(ctx, db.read, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

type rowScanner interface{ Scan(...any) error }

// closeRows closes rows read by hand (the next query of the transaction
// needs the connection) and returns the error that ended their
// iteration, if it was not their end.
func closeRows(rows *sql.Rows) error {
	err := rows.Err()
	rows.Close()
	return err
}

// queryRows runs query and reads every row it returns with scan.
func queryRows[T any](ctx context.Context, q querier, scan func(*sql.Rows, *T) error, query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	var out []T
	for rows.Next() {
		var v T
		if err := scan(rows, &v); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, v)
	}
	return out, closeRows(rows)
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// Path is the database file.
func (db *DB) Path() string { return db.path }

// Close finishes pending intake commits, checkpoints and closes the
// database. Calling it again does nothing.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		if db.intake != nil {
			db.intake.close()
		}
		if db.ckpt != nil {
			close(db.stopCkpt)
			<-db.ckptDone
			_, _ = db.ckpt.Exec("PRAGMA wal_checkpoint(PASSIVE)")
		}
		db.snapMu.Lock()
		if db.snapConn != nil {
			db.snapConn.Close()
			db.snapConn = nil
		}
		db.snapMu.Unlock()
		db.stmtMu.Lock()
		for _, st := range db.stmts {
			st.Close()
		}
		db.stmts = nil
		db.stmtMu.Unlock()
		errs := []error{db.read.Close()}
		for _, pool := range []*sql.DB{db.ckpt, db.write} {
			if pool != nil {
				errs = append(errs, pool.Close())
			}
		}
		db.closeErr = errors.Join(errs...)
	})
	return db.closeErr
}

// Ping checks that the database answers a query that reads it, and that
// its path still names the file it opened.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.sameFile(); err != nil {
		return err
	}
	var n int
	return db.read.QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_migrations").Scan(&n)
}

// sameFile reports an error when the database's path no longer names the
// file it opened (removed, or replaced — a backup moved over it): what it
// writes would go to a file nobody finds again, lost at the next start.
func (db *DB) sameFile() error {
	if db.file == nil {
		return nil
	}
	fi, err := os.Stat(db.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("database %s was removed while lastmile has it open: what it stores would be lost when it stops; nothing more is accepted (put the file back, or restart lastmile)", db.path)
	case err != nil:
		return fmt.Errorf("database %s: %w", db.path, err)
	case !os.SameFile(fi, db.file):
		return fmt.Errorf("database %s was replaced by another file while lastmile has the first open: nothing more is accepted (restart lastmile to use the file there now)", db.path)
	}
	return nil
}

func (db *DB) migrate(ctx context.Context, last int, log *slog.Logger) error {
	if _, err := db.write.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at INTEGER NOT NULL)`); err != nil {
		return err
	}
	files, err := migrationFiles()
	if err != nil {
		return err
	}
	// A database a newer lastmile migrated has tables whose meaning this
	// version does not know: it is not written to (read commands refuse it
	// the same way, checkSchema).
	var unknown string
	if err := db.write.QueryRowContext(ctx, `SELECT COALESCE((SELECT name FROM schema_migrations
		WHERE version > ? ORDER BY version DESC LIMIT 1), '')`, files[len(files)-1].version).Scan(&unknown); err != nil {
		return err
	}
	if unknown != "" {
		return newerDatabase(unknown)
	}
	applied, err := db.appliedMigrations(ctx)
	if err != nil {
		return err
	}
	upgrade := log != nil && len(applied) > 0 // a new database's are not news
	for _, m := range files {
		if m.version > last {
			break
		}
		start := time.Now()
		if upgrade && !applied[m.version] {
			log.Info("database migration: applying (lastmile answers /healthz meanwhile, and 503 to the rest)", "migration", m.base, "database", db.path)
		}
		if err := db.migrateOne(ctx, m.version, m.base, m.name); err != nil {
			return fmt.Errorf("migration %s: %w", m.base, err)
		}
		if upgrade && !applied[m.version] {
			log.Info("database migration: applied", "migration", m.base, "took", time.Since(start).Round(time.Millisecond).String())
		}
	}
	return nil
}

// appliedMigrations are the versions of the migrations the database has.
func (db *DB) appliedMigrations(ctx context.Context) (map[int]bool, error) {
	rows, err := db.write.QueryContext(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	applied := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		applied[v] = true
	}
	return applied, rows.Err()
}

// A migrationFile is one of the embedded migrations: name is its path in
// the embedded files, base its file name, version the number it starts
// with.
type migrationFile struct {
	version    int
	base, name string
}

// migrationFiles lists the embedded migrations in the order they apply.
func migrationFiles() ([]migrationFile, error) {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	files := make([]migrationFile, len(names))
	for i, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		version, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("migration %s: name must start with a number", base)
		}
		files[i] = migrationFile{version, base, name}
	}
	return files, nil
}

// migrateOne applies one migration in a transaction, with foreign keys off
// so that a migration can rebuild a table others refer to (SQLite's way of
// changing a constraint), and checked before it commits.
func (db *DB) migrateOne(ctx context.Context, version int, base, name string) (err error) {
	conn, err := db.write.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	// The setting cannot change inside a transaction.
	if _, err := conn.ExecContext(ctx, "PRAGMA foreign_keys = OFF"); err != nil {
		return err
	}
	defer func() {
		// Read back: inside a transaction left open the setting is a no-op.
		ctx := context.WithoutCancel(ctx)
		on := 0
		_, ferr := conn.ExecContext(ctx, "PRAGMA foreign_keys = ON")
		if ferr == nil {
			ferr = conn.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&on)
		}
		if ferr == nil && on != 1 {
			ferr = errors.New("still off")
		}
		if ferr != nil {
			// The pool must not keep a connection without foreign keys.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
			if err == nil {
				err = fmt.Errorf("turn foreign keys back on: %w", ferr)
			}
		}
	}()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_migrations WHERE version = ?", version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	body, err := migrations.ReadFile(name)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, string(body)); err != nil {
		return err
	}
	if err := foreignKeyCheck(ctx, tx); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
		version, base, time.Now().UnixMilli()); err != nil {
		return err
	}
	return tx.Commit()
}

// foreignKeyCheck fails when a row refers to a row that does not exist.
func foreignKeyCheck(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, "PRAGMA foreign_key_check")
	if err != nil {
		return err
	}
	defer rows.Close()
	if rows.Next() {
		var table, parent string
		var rowid sql.NullInt64
		var fk int64
		if err := rows.Scan(&table, &rowid, &parent, &fk); err != nil {
			return err
		}
		return fmt.Errorf("foreign key check: row %d of %s refers to a missing row of %s", rowid.Int64, table, parent)
	}
	return rows.Err()
}

// inTx runs fn in a write transaction and commits it if fn returns nil. The
// commit survives the process being killed, not necessarily a power cut.
func (db *DB) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return db.writeTx(ctx, false, fn)
}

// durableTx is inTx for writes that must survive a power cut: the commit
// is on disk before it returns (and with it every earlier commit).
func (db *DB) durableTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return db.writeTx(ctx, true, fn)
}

// writeErr is err saying which database cannot be written, and where to
// look, when SQLite refused a write because it opened the file read-only.
func (db *DB) writeErr(err error) error {
	return cannotWrite(db.path, err)
}

// openErr is err, met opening the database at path: said as cannotWrite
// says it, or as is.
func openErr(path string, err error) error {
	if werr := cannotWrite(path, err); werr != err {
		return werr
	}
	if damaged(err) {
		return fmt.Errorf("open database %s: damaged (%w): %s", path, err, restoreAdvice)
	}
	return fmt.Errorf("open database %s: %w", path, err)
}

// cannotWrite says what to check when SQLite refuses to write the database
// at path (the file, or the folder where its -wal and -shm files go); any
// other error is returned as it is.
func cannotWrite(path string, err error) error {
	if err != nil && sqliteCode(err)&0xff == sqlite3.SQLITE_READONLY {
		return fmt.Errorf("database %s cannot be written: lastmile's user must be able to write the file, its -wal and -shm files beside it, and their folder (%w)", path, err)
	}
	return err
}

func (db *DB) writeTx(ctx context.Context, durable bool, fn func(tx *sql.Tx) error) (err error) {
	defer func() { err = db.writeErr(err) }()
	// The one write connection, held for the whole transaction, so the
	// synchronous setting applies to this commit only.
	conn, err := db.writeConn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if durable {
		if _, err := conn.ExecContext(ctx, "PRAGMA synchronous = FULL"); err != nil {
			return err
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), "PRAGMA synchronous = NORMAL")
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// writeConn is the one write connection, for the caller alone until it
// closes it.
func (db *DB) writeConn(ctx context.Context) (*sql.Conn, error) {
	if db.write == nil {
		return nil, ErrReadOnly
	}
	return db.write.Conn(ctx)
}

func isUniqueViolation(err error) bool {
	code := sqliteCode(err)
	return code == sqlite3.SQLITE_CONSTRAINT_UNIQUE || code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// millis converts a time to the stored representation (unix milliseconds; 0 for the zero time).
func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fromMillis is the inverse of millis.
func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// fileURI is the SQLite URI filename of the file at path, without its
// query. An absolute path is given an empty authority (file:///var/lib/…):
// written as it is, a path that starts with // (LASTMILE_DATABASE=
// //var/lib/lastmile.db) would read as file://HOST/…, which SQLite refuses
// ("invalid uri authority"). The path is not cleaned: the kernel resolves
// it, symbolic links and all, as it does for the lock file beside it. In
// the path, '?' and '#' would end it, and '%' start an escape.
func fileURI(path string) string {
	escaped := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	if strings.HasPrefix(path, "/") {
		return "file://" + escaped
	}
	// A relative path goes through ./: "file::memory:" would be SQLite's
	// in-memory database (an inbox lost at exit), not the file ":memory:".
	return "file:./" + escaped
}

// OpenExisting opens a lastmile database that must already exist and be
// up to date, to write to it (the operator commands, which must neither
// create an empty database by mistake nor migrate the database of a
// running `lastmile serve` of another version). The read commands use
// OpenReadOnly.
func OpenExisting(ctx context.Context, path string) (*DB, error) {
	if err := checkExisting(ctx, path); err != nil {
		return nil, err
	}
	// Up to date: the migrations would only take the write lock, once
	// each, to find that they are applied.
	return openUpTo(ctx, path, 0)
}

// ErrReadOnly is returned by the writes of a database opened with
// OpenReadOnly.
var ErrReadOnly = errors.New("the database is open for reading only")

// OpenReadOnly opens a lastmile database that must already exist and be up
// to date, for reading only (the read commands: history, audit, the
// deliveries listing): no migration, no write connection, no intake, no
// checkpointer. Beside a busy `lastmile serve`, it then neither waits for
// serve's writes nor holds them up: a reader of a WAL database sees the
// last commit, whatever transaction is open. Its writes return ErrReadOnly.
func OpenReadOnly(ctx context.Context, path string) (*DB, error) {
	if err := checkExisting(ctx, path); err != nil {
		return nil, err
	}
	read, err := sql.Open("sqlite", readOnlyDSN(path))
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	read.SetMaxOpenConns(8)
	if err := read.PingContext(ctx); err != nil {
		read.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	return &DB{path: path, read: read, Now: time.Now}, nil
}

// readOnlyDSN opens path read-only. The busy timeout is for the moments a
// reader of a WAL database waits too: while another connection recovers
// the WAL after a crash, or the last one to close checkpoints and removes
// it.
func readOnlyDSN(path string) string {
	q := url.Values{"mode": {"ro"}, "_pragma": {"query_only(1)", "busy_timeout(10000)"}}
	return fileURI(path) + "?" + q.Encode()
}

// checkExisting checks, reading only, that path is a lastmile database
// with exactly this version's migrations applied.
func checkExisting(ctx context.Context, path string) error {
	if fi, err := os.Stat(path); errors.Is(err, fs.ErrPermission) {
		return noAccess(path, err) // a folder on the way this user may not enter
	} else if err != nil {
		return noFileError{fmt.Errorf("database %s: %w", path, errors.Unwrap(err))}
	} else if !fi.Mode().IsRegular() {
		return notAFile(path, fi)
	} else if err := oneName(path, fi); err != nil {
		return err
	}
	// SQLite says only "unable to open database file" of a file this user
	// may not read.
	if f, err := os.Open(path); err != nil {
		return noAccess(path, err)
	} else {
		f.Close()
	}
	if err := checkSchema(ctx, path); err != nil {
		return fmt.Errorf("database %s: %w", path, err)
	}
	return nil
}

// noAccess is the refusal of a database path this user may not read (err,
// a *PathError: the file, or a folder on the way), saying what to do.
func noAccess(path string, err error) error {
	return fmt.Errorf("database %s: %w: run the command as the user lastmile serve runs as (sudo -u USER …), or with read access to the file and its folder", path, errors.Unwrap(err))
}

// ErrNoDatabaseFile is the refusal of a database path that names no
// database file (errors.Is): nothing there, a folder, or a FIFO, a device
// or a socket. A command whose path was lastmile.db by default, neither
// LASTMILE_DATABASE nor --database given, adds that they name another.
var ErrNoDatabaseFile = errors.New("no database file")

// noFileError is an ErrNoDatabaseFile, saying what the path names.
type noFileError struct{ error }

func (e noFileError) Unwrap() error      { return e.error }
func (noFileError) Is(target error) bool { return target == ErrNoDatabaseFile }

// notAFile is the refusal of a database path that names no regular file: a
// folder, or a FIFO, a device or a socket.
func notAFile(path string, fi os.FileInfo) error {
	what := "not a regular file (a FIFO, a device or a socket)"
	if fi.IsDir() {
		what = "a folder"
	}
	return noFileError{fmt.Errorf("database %s: %s, not a database file", path, what)}
}

// newerMigration is, reading only, the newest migration of the database at
// path that this version does not know (a newer lastmile's), or "" — also
// when it cannot tell (no such table yet, an unreadable file: the open
// says what is wrong).
func newerMigration(ctx context.Context, path string) string {
	files, err := migrationFiles()
	if err != nil {
		return ""
	}
	ro, err := sql.Open("sqlite", readOnlyDSN(path))
	if err != nil {
		return ""
	}
	defer ro.Close()
	var name string
	if err := ro.QueryRowContext(ctx, `SELECT COALESCE((SELECT name FROM schema_migrations
		WHERE version > ? ORDER BY version DESC LIMIT 1), '')`, files[len(files)-1].version).Scan(&name); err != nil {
		return ""
	}
	return name
}

// newerDatabase is the refusal of a database that a newer lastmile
// migrated (migration, the newest, is not one of this version's).
func newerDatabase(migration string) error {
	return fmt.Errorf("written by a newer lastmile (its migration %s is not one of this version's): use that version of lastmile, or a newer one", migration)
}

// checkSchema checks, reading only, that path is a lastmile database with
// every migration of this version applied, and none that this version does
// not know (a newer lastmile's: its schema may mean what this version
// cannot read).
func checkSchema(ctx context.Context, path string) error {
	ro, err := sql.Open("sqlite", readOnlyDSN(path))
	if err != nil {
		return err
	}
	defer ro.Close()
	applied, known, err := migrationsApplied(ctx, ro)
	switch {
	case err != nil && damaged(err):
		return fmt.Errorf("damaged (%w): %s", err, restoreAdvice)
	case err != nil:
		return sideFileErr(path, err)
	case applied < known:
		return fmt.Errorf("written by an older lastmile (%d of this version's %d migrations applied): start this version's `lastmile serve` on it first, which migrates it", applied, known)
	}
	return nil
}

// sideFileErr says what SQLite's words do not of an error met reading the
// WAL database at path (a file this user may read): that SQLite could not
// create its -shm file, through which it reads a WAL database, in the
// database's folder ("attempt to write a readonly database"), or could not
// open its -shm or -wal file, there and not readable by this user ("unable
// to open database file"). Any other error is returned as it is.
func sideFileErr(path string, err error) error {
	switch code := sqliteCode(err); {
	case code == sqlite3.SQLITE_READONLY_DIRECTORY:
		// The -shm file is created beside the database when no process
		// has it open.
		return fmt.Errorf("cannot read it: SQLite reads a WAL database through its -shm file, which it cannot create in the database's folder (%v): run as a user who can write there, or while lastmile serve has the database open", err)
	case code&0xff == sqlite3.SQLITE_CANTOPEN:
		for _, side := range []struct{ suffix, what string }{
			{"-shm", "through its -shm file"},
			{"-wal", "with the commits in its -wal file"},
		} {
			f, oerr := os.Open(path + side.suffix)
			if oerr == nil {
				f.Close()
				continue
			}
			if errors.Is(oerr, fs.ErrPermission) {
				return fmt.Errorf("cannot read it: SQLite reads a WAL database %s, %s, which this user may not read (%v): run the command as the user lastmile serve runs as (sudo -u USER …), or with read access to the %s file",
					side.what, path+side.suffix, errors.Unwrap(oerr), side.suffix)
			}
		}
	}
	return err
}

// oneName refuses a database file with more than one name (hard links):
// SQLite keeps the WAL and the lock of shared memory beside the name it
// opened, so two names are two databases writing one file — corrupted as
// soon as two processes write through both — and lastmile's one-serve lock
// is beside the name too. A symbolic link is one name.
func oneName(path string, fi os.FileInfo) error {
	if n := names(fi); n > 1 {
		return fmt.Errorf("database %s: the file has %d names (hard links), and SQLite keeps a database's WAL beside the name it is opened by, so each name would write it as a database of its own: keep one (a symbolic link is fine)", path, n)
	}
	return nil
}
