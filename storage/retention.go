package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
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

// pruneBatch is how many delivery bodies one write transaction of Prune
// deals with (deleting those of the handled deliveries), and pruneLogBatch
// how many deploy logs one drops: each batch holds the write connection
// for a few milliseconds, about as long as an intake commit, whatever the
// size of the history or of the backlog (the first prune after retention
// is switched on may have millions of bodies to drop). Between batches the
// connection goes to whoever waits for it, as between reclaim's steps. A
// batch reads up to pruneScan deliveries (their index entries and states,
// ≈0.5 µs each): the first prune goes through a history whose bodies were
// pruned by an earlier lastmile, or never kept.
const (
	pruneBatch    = 256
	pruneScan     = 2048
	pruneLogBatch = 64 // logs are larger than bodies: up to a few hundred KB compressed
)

// retentionBodies is the setting that says how far Prune has gone through
// the deliveries, in (received_at, seq) order: "<received_at>/<seq>" of the
// last one it looked at. The body of every handled delivery up to there is
// gone; those pending or dead when Prune passed them, which keep their
// bodies, are in retention_held. A prune starts where the last one
// stopped, so that an hourly prune reads the deliveries of the last hour,
// not all of them since the first. (The intake stamps a delivery with its
// received_at in its commit, after those already stored, so none arrives
// behind the mark — unless the clock went back past it, or the caller of
// Accept set an earlier ReceivedAt: such a delivery keeps its body.)
const retentionBodies = "retention.bodies"

// Prune drops the bulky parts of records older than cutoff: the raw bodies
// of deliveries that were handled (done or ignored) and the kept deploy job
// logs. The records themselves — deliveries, releases, deployments,
// statuses, reviews — and the metrics stay. Pending and dead deliveries keep
// their bodies: they may still be handled, and a later prune drops them once
// they are.
//
// It works in batches (pruneBatch deliveries, pruneLogBatch logs), each its
// own short write transaction, with a pause as long as the batch between
// them, so that the webhook intake and the worker keep going meanwhile; it
// stops between two batches when ctx is cancelled, leaving a consistent
// state that the next prune carries on from. It remembers how far it went
// through the deliveries (the setting retentionBodies), and looks only at
// those received since, and at the few it kept a body of for being pending
// or dead (retention_held); the logs it finds by an index of the kept ones.
//
// Then, on a database in auto_vacuum incremental mode (every database
// lastmile creates), the free pages — those the prune freed, and any an
// earlier, interrupted prune left — are given back to the file system in
// steps of reclaimStep pages, each its own short write, with a pause as
// long as the step between them; the file shrinks as the checkpointer
// copies the steps into it. A database made without auto_vacuum (by a
// lastmile older than this) reuses the freed pages for new data but does
// not shrink; Vacuum converts it.
func (db *DB) Prune(ctx context.Context, cutoff time.Time) (Pruned, error) {
	var p Pruned
	var heldAfter int64 // the seq retention_held is gone through up to, in this prune
	if err := db.inBatches(ctx, func() (bool, error) {
		n, more, err := db.pruneHeld(ctx, millis(cutoff), &heldAfter)
		p.DeliveryBodies += n
		return more, err
	}); err != nil {
		return p, err
	}
	if err := db.inBatches(ctx, func() (bool, error) {
		n, more, err := db.pruneBodies(ctx, millis(cutoff))
		p.DeliveryBodies += n
		return more, err
	}); err != nil {
		return p, err
	}
	if err := db.inBatches(ctx, func() (bool, error) {
		n, more, err := db.pruneLogs(ctx, millis(cutoff))
		p.JobLogs += n
		return more, err
	}); err != nil {
		return p, err
	}
	var err error
	p.PagesReclaimed, p.Disk, err = db.reclaim(ctx)
	if err != nil {
		return p, fmt.Errorf("pruned, then giving the free pages back to the file system: %w", err)
	}
	return p, nil
}

// inBatches runs batch until it says there is no more to do, with a pause
// as long as the batch (a millisecond at least) after each, so that the
// write connection goes to the intake and the worker in between; it stops
// there when ctx is cancelled.
func (db *DB) inBatches(ctx context.Context, batch func() (more bool, err error)) error {
	for {
		began := time.Now()
		more, err := batch()
		if err != nil || !more {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(max(time.Since(began), time.Millisecond)):
		}
	}
}

// pruneBodies goes on through the deliveries received before cutoff (in
// milliseconds) from the point the setting retentionBodies marks, in one
// write transaction: it reads up to pruneScan of them and deals with up to
// pruneBatch bodies — it deletes those of the handled deliveries, and notes
// in retention_held those it keeps for being pending or dead — then moves
// the mark past the deliveries it dealt with. It reports the bodies
// deleted, and whether there may be more.
func (db *DB) pruneBodies(ctx context.Context, cutoff int64) (deleted int64, more bool, err error) {
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		var markAt, markSeq int64
		var mark string
		switch err := tx.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, retentionBodies).Scan(&mark); {
		case errors.Is(err, sql.ErrNoRows):
			markAt, markSeq = math.MinInt64, 0
		case err != nil:
			return err
		default:
			if _, err := fmt.Sscanf(mark, "%d/%d", &markAt, &markSeq); err != nil {
				return fmt.Errorf("setting %s = %q: %w", retentionBodies, mark, err)
			}
		}
		batch, err := queryPruneRows(ctx, tx, pruneBodiesQuery, markAt, markSeq, cutoff, pruneScan)
		if err != nil {
			return err
		}
		if len(batch) == 0 {
			return nil
		}
		more = len(batch) == pruneScan
		last, bodies := batch[len(batch)-1], 0
		for i, r := range batch {
			if bodies == pruneBatch {
				last, more = batch[i-1], true
				break
			}
			if !r.body {
				continue
			}
			bodies++
			switch r.state {
			case "done", "ignored":
				if _, err := tx.ExecContext(ctx, `DELETE FROM delivery_bodies WHERE seq = ?`, r.seq); err != nil {
					return err
				}
				deleted++
			default: // pending or dead: kept, and looked at again by pruneHeld
				if _, err := tx.ExecContext(ctx, `INSERT INTO retention_held (seq) VALUES (?) ON CONFLICT DO NOTHING`, r.seq); err != nil {
					return err
				}
			}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES (?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, retentionBodies, fmt.Sprintf("%d/%d", last.receivedAt, last.seq))
		return err
	})
	if err != nil {
		return 0, false, err
	}
	return deleted, more, nil
}

// pruneRow is a delivery a prune looks at: its seq, when it was received,
// its state, and whether it still has its body.
type pruneRow struct {
	seq, receivedAt int64
	state           string
	body            bool
}

// queryPruneRows runs a query of pruneRow's columns, in its order.
func queryPruneRows(ctx context.Context, tx *sql.Tx, query string, args ...any) ([]pruneRow, error) {
	return queryRows(ctx, tx, func(rows *sql.Rows, r *pruneRow) error {
		return rows.Scan(&r.seq, &r.receivedAt, &r.state, &r.body)
	}, query, args...)
}

// pruneBodiesQuery reads the deliveries after the mark (received_at, seq)
// received before the cutoff, in that order, from the deliveries_received
// index (whose entries end with the seq): it starts at the mark, it does
// not read the deliveries before.
const pruneBodiesQuery = `SELECT d.seq, d.received_at, d.state, b.seq IS NOT NULL
	FROM deliveries d INDEXED BY deliveries_received LEFT JOIN delivery_bodies b ON b.seq = d.seq
	WHERE (d.received_at, d.seq) > (?, ?) AND d.received_at < ?
	ORDER BY d.received_at, d.seq LIMIT ?`

// pruneHeld looks at the next pruneBatch deliveries of retention_held
// (those pruneBodies passed while they were pending or dead) after seq
// *after, in one write transaction: it deletes the bodies of those handled
// since, and forgets them, and those whose body is gone. Those still
// pending or dead stay, and so do those received at cutoff or after (a
// retention made longer since). It moves *after past them, and reports the
// bodies deleted and whether there may be more.
func (db *DB) pruneHeld(ctx context.Context, cutoff int64, after *int64) (deleted int64, more bool, err error) {
	last := *after
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		batch, err := queryPruneRows(ctx, tx, pruneHeldQuery, *after, pruneBatch)
		if err != nil {
			return err
		}
		for _, r := range batch {
			last = r.seq
			handled := r.state == "done" || r.state == "ignored"
			if r.body && (!handled || r.receivedAt >= cutoff) {
				continue
			}
			if r.body {
				if _, err := tx.ExecContext(ctx, `DELETE FROM delivery_bodies WHERE seq = ?`, r.seq); err != nil {
					return err
				}
				deleted++
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM retention_held WHERE seq = ?`, r.seq); err != nil {
				return err
			}
		}
		more = len(batch) == pruneBatch
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	*after = last
	return deleted, more, nil
}

const pruneHeldQuery = `SELECT h.seq, COALESCE(d.received_at, 0), COALESCE(d.state, ''),
	EXISTS (SELECT 1 FROM delivery_bodies b WHERE b.seq = h.seq)
	FROM retention_held h LEFT JOIN deliveries d ON d.seq = h.seq
	WHERE h.seq > ? ORDER BY h.seq LIMIT ?`

// pruneLogs drops the next pruneLogBatch kept deploy logs fetched before
// cutoff (in milliseconds), found by the index job_logs_kept, in one write
// transaction. It reports the logs dropped, and whether there may be more.
func (db *DB) pruneLogs(ctx context.Context, cutoff int64) (dropped int64, more bool, err error) {
	res, err := db.exec(ctx, pruneLogsQuery, cutoff, pruneLogBatch)
	if err != nil {
		return 0, false, err
	}
	if dropped, err = res.RowsAffected(); err != nil {
		return 0, false, err
	}
	return dropped, dropped == pruneLogBatch, nil
}

// pruneLogsQuery leaves the placeholders of logs not kept (missing): no
// log, but the record's word for why there is none, a line long.
const pruneLogsQuery = `UPDATE job_logs SET log = NULL WHERE job_id IN (SELECT job_id
	FROM job_logs INDEXED BY job_logs_kept WHERE log IS NOT NULL AND missing = 0 AND fetched_at < ? ORDER BY fetched_at LIMIT ?)`

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

// autoVacuum is the database's auto_vacuum mode as committed (0 none, 2
// incremental), read in a transaction of its own: outside one, the pragma
// answers what the connection last read of the file's header.
func (db *DB) autoVacuum(ctx context.Context) (int, error) {
	tx, err := db.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var n, mode int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master").Scan(&n); err != nil {
		return 0, err
	}
	err = tx.QueryRowContext(ctx, "PRAGMA auto_vacuum").Scan(&mode)
	return mode, err
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
	// Before the write connection: the checkpointer takes this lock, then
	// the write connection (a restart checkpoint).
	db.ckptMu.Lock()
	defer db.ckptMu.Unlock()
	var v Vacuumed
	var err error
	untouched := func(err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("vacuum interrupted: nothing changed, the database is as it was (%w)", err)
		}
		return err
	}
	if v.Before, err = db.DiskUsage(ctx); err != nil {
		return v, untouched(err)
	}
	conn, err := db.writeConn(ctx)
	if err != nil {
		return v, untouched(err)
	}
	defer conn.Close()
	switch v.Before.AutoVacuum {
	case "none":
		// The setting applies at the VACUUM on the same connection.
		for _, stmt := range []string{"PRAGMA auto_vacuum = INCREMENTAL", "VACUUM"} {
			_, err := conn.ExecContext(ctx, stmt)
			if err != nil && stmt == "VACUUM" && ctx.Err() != nil {
				// The driver says the context's error when it ended
				// during the statement, finished or not: the file, as
				// another connection reads it, tells.
				if mode, rerr := db.autoVacuum(context.WithoutCancel(ctx)); rerr == nil && mode == 2 {
					v.Converted = true
					return v, fmt.Errorf("interrupted once VACUUM had finished: the database is converted (auto_vacuum incremental) (%w)", err)
				}
				return v, untouched(err)
			}
			if err != nil {
				return v, untouched(db.writeErr(fmt.Errorf("%s: %w", stmt, err)))
			}
		}
		v.Converted = true
	case "incremental":
		if _, err := conn.ExecContext(ctx, "PRAGMA incremental_vacuum"); err != nil {
			return v, db.writeErr(fmt.Errorf("PRAGMA incremental_vacuum: %w", err))
		}
	}
	// What is done is reported whole: the checkpoint waits a second at
	// most for readers, and is not interrupted.
	ctx = context.WithoutCancel(ctx)
	// A reader holds the checkpoint back for as long as it reads: waited
	// for a while, not for the connection's busy timeout, then reported.
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA busy_timeout = %d", vacuumReaderWait.Milliseconds())); err != nil {
		return v, err
	}
	var busy, walPages, checkpointed int64
	err = conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &walPages, &checkpointed)
	// Restored: the connection goes back to the pool, where a second's
	// busy timeout would fail serve's writes.
	if _, rerr := conn.ExecContext(ctx, "PRAGMA busy_timeout = 10000"); err == nil {
		err = rerr
	}
	if err != nil {
		return v, fmt.Errorf("PRAGMA wal_checkpoint(TRUNCATE): %w", err)
	}
	v.HeldByReaders = busy != 0 || checkpointed < walPages
	v.After, err = diskUsage(ctx, conn)
	return v, err
}
