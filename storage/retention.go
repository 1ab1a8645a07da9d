package storage

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Pruned counts what Prune removed, and what the database file is after.
type Pruned struct {
	DeliveryBodies int64 // raw bodies of handled deliveries
	JobLogs        int64 // deploy job logs

	// PagesReclaimed counts the pages given back to the file system
	// (truncated off the file): the free pages and the pointer-map pages
	// that tracked them; 0 unless the database is in auto_vacuum
	// incremental mode.
	PagesReclaimed int64
	Disk           Disk // the file after the prune
}

// Disk describes the database file, as SQLite counts it.
type Disk struct {
	AutoVacuum    string // "none", "full" or "incremental"
	PageSize      int64  // bytes
	PageCount     int64  // pages in the file (free ones included)
	FreelistCount int64  // free pages: reused by later writes, the file does not shrink by them
}

// Bytes is the size of the database file (its WAL aside).
func (d Disk) Bytes() int64 { return d.PageSize * d.PageCount }

// DiskUsage reports the database file's pages and its auto_vacuum mode.
func (db *DB) DiskUsage(ctx context.Context) (Disk, error) {
	tx, err := db.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return Disk{}, err
	}
	defer tx.Rollback()
	return diskUsage(ctx, tx)
}

// diskUsage reads the file's figures on q, which must be in a transaction
// or the write connection: page_count first, as it reads the file's first
// page, where the auto_vacuum mode is (PRAGMA auto_vacuum alone answers
// what the connection last read there, which a VACUUM on another
// connection may have changed since).
func diskUsage(ctx context.Context, q querier) (Disk, error) {
	var d Disk
	var mode int
	for _, p := range []struct {
		pragma string
		into   any
	}{
		{"page_count", &d.PageCount}, {"freelist_count", &d.FreelistCount}, {"page_size", &d.PageSize}, {"auto_vacuum", &mode},
	} {
		if err := q.QueryRowContext(ctx, "PRAGMA "+p.pragma).Scan(p.into); err != nil {
			return Disk{}, fmt.Errorf("PRAGMA %s: %w", p.pragma, err)
		}
	}
	d.AutoVacuum = autoVacuumModes[mode]
	return d, nil
}

var autoVacuumModes = map[int]string{0: "none", 1: "full", 2: "incremental"}

// reclaimStep is how many free pages one incremental_vacuum gives back:
// moving a page costs ≈40 µs (its parent's pointer is rewritten), so a
// step holds the write connection for a few milliseconds, about as long
// as an intake commit. Between steps the connection goes to whoever waits
// for it (the webhook intake's group commit, the worker).
const reclaimStep = 128

// Prune drops the bulky parts of records older than cutoff: the raw bodies
// of deliveries that were handled (done or ignored) and the kept deploy job
// logs. The records themselves — deliveries, releases, deployments,
// statuses, reviews — and the metrics stay. Pending and dead deliveries keep
// their bodies: they may still be handled.
//
// Then, on a database in auto_vacuum incremental mode (every database
// lastmile creates), the free pages — those the prune freed, and any an
// earlier, interrupted prune left — are given back to the file system in
// steps of reclaimStep pages, each its own short write, with a pause as
// long as the step between them, so that the webhook intake and the
// worker keep going meanwhile; the file shrinks as the checkpointer copies
// the steps into it. A database made without auto_vacuum (by a lastmile
// older than this) reuses the freed pages for new data but does not shrink;
// Vacuum converts it.
func (db *DB) Prune(ctx context.Context, cutoff time.Time) (Pruned, error) {
	var p Pruned
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM delivery_bodies WHERE seq IN (SELECT seq FROM deliveries
			WHERE state IN ('done', 'ignored') AND received_at < ?)`, millis(cutoff))
		if err != nil {
			return err
		}
		if p.DeliveryBodies, err = res.RowsAffected(); err != nil {
			return err
		}
		res, err = tx.ExecContext(ctx, `UPDATE job_logs SET log = NULL WHERE log IS NOT NULL AND fetched_at < ?`, millis(cutoff))
		if err != nil {
			return err
		}
		p.JobLogs, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return p, err
	}
	p.PagesReclaimed, p.Disk, err = db.reclaim(ctx)
	if err != nil {
		return p, fmt.Errorf("pruned, then giving the free pages back to the file system: %w", err)
	}
	return p, nil
}

// reclaim gives the free pages of a database in auto_vacuum incremental
// mode back to the file system, reclaimStep pages at a time (see Prune).
func (db *DB) reclaim(ctx context.Context) (reclaimed int64, after Disk, err error) {
	for {
		began := time.Now()
		n, d, err := db.reclaimOnce(ctx)
		reclaimed += n
		if err != nil || d.AutoVacuum != "incremental" || d.FreelistCount == 0 {
			return reclaimed, d, err
		}
		select {
		case <-ctx.Done():
			return reclaimed, d, ctx.Err()
		case <-time.After(max(time.Since(began), time.Millisecond)):
		}
	}
}

// reclaimOnce runs one step of reclaim on the write connection, which it
// holds for the step only: the pages before and after are counted on it,
// so that no other write of this process comes between. The pages given
// back are the file's: the free pages, and the pointer-map pages that
// tracked them.
func (db *DB) reclaimOnce(ctx context.Context) (int64, Disk, error) {
	conn, err := db.writeConn(ctx)
	if err != nil {
		return 0, Disk{}, err
	}
	defer conn.Close()
	before, err := diskUsage(ctx, conn)
	if err != nil || before.AutoVacuum != "incremental" || before.FreelistCount == 0 {
		return 0, before, err
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA incremental_vacuum(%d)", reclaimStep)); err != nil {
		return 0, before, err
	}
	after, err := diskUsage(ctx, conn)
	if err != nil {
		return 0, before, err
	}
	return before.PageCount - after.PageCount, after, nil
}

// Vacuumed says what Vacuum did.
type Vacuumed struct {
	// Converted says the database was in auto_vacuum none mode and was
	// rewritten in incremental mode.
	Converted     bool
	Before, After Disk
	// HeldByReaders says another connection using the database (a reader:
	// a lastmile history, a backup; or a writer) kept the WAL from being
	// copied back and truncated: the file keeps its size, and the
	// space given back (After) reaches the disk once they are done, at
	// the next checkpoint.
	HeldByReaders bool
}

// vacuumReaderWait is how long Vacuum waits for readers to let go of the
// pages its checkpoint copies back, before it reports them.
const vacuumReaderWait = time.Second

// Vacuum makes the database give its free space back to the file system,
// and prunes to come shrink it. A database in auto_vacuum none mode (made
// by a lastmile older than this one) is converted: PRAGMA auto_vacuum =
// INCREMENTAL, then VACUUM, which rewrites the whole file. That holds the
// write lock throughout (seconds to minutes for a large database: run it
// with lastmile serve stopped) and needs free disk of about twice the
// database's size: a temporary copy (in SQLITE_TMPDIR or TMPDIR, else
// /var/tmp or /tmp), and the WAL beside the database, which is then
// checkpointed and truncated. A database in incremental mode has its free
// pages given back, without a rewrite.
func (db *DB) Vacuum(ctx context.Context) (Vacuumed, error) {
	var v Vacuumed
	var err error
	if v.Before, err = db.DiskUsage(ctx); err != nil {
		return v, err
	}
	conn, err := db.writeConn(ctx)
	if err != nil {
		return v, err
	}
	defer conn.Close()
	switch v.Before.AutoVacuum {
	case "none":
		// The setting applies at the VACUUM on the same connection.
		for _, stmt := range []string{"PRAGMA auto_vacuum = INCREMENTAL", "VACUUM"} {
			if _, err := conn.ExecContext(ctx, stmt); err != nil {
				return v, fmt.Errorf("%s: %w", stmt, err)
			}
		}
		v.Converted = true
	case "incremental":
		if _, err := conn.ExecContext(ctx, "PRAGMA incremental_vacuum"); err != nil {
			return v, fmt.Errorf("PRAGMA incremental_vacuum: %w", err)
		}
	}
	// A reader holds the checkpoint back for as long as it reads: waited
	// for a while, not for the connection's busy timeout, then reported.
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA busy_timeout = %d", vacuumReaderWait.Milliseconds())); err != nil {
		return v, err
	}
	var busy, walPages, checkpointed int64
	err = conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &walPages, &checkpointed)
	// Restored even when ctx is cancelled: the connection goes back to the
	// pool, where a second's busy timeout would fail serve's writes.
	if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), "PRAGMA busy_timeout = 10000"); err == nil {
		err = rerr
	}
	if err != nil {
		return v, fmt.Errorf("PRAGMA wal_checkpoint(TRUNCATE): %w", err)
	}
	v.HeldByReaders = busy != 0 || checkpointed < walPages
	v.After, err = diskUsage(ctx, conn)
	return v, err
}
