package storage

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// ErrNotFound is returned when a looked-up record does not exist.
var ErrNotFound = errors.New("not found")

const deliveryColumns = `d.seq, d.delivery_id, d.event, d.action, d.installation_id, d.repository_id, d.repository,
	d.received_at, d.state, d.attempts, d.waits, d.next_attempt_at, d.last_error, d.finished_at, d.note, b.body`

// withBody is the FROM clause that reads deliveries with their bodies.
const withBody = ` FROM deliveries d LEFT JOIN delivery_bodies b ON b.seq = d.seq`

func scanDelivery(row rowScanner) (*pipeline.Delivery, error) {
	var d pipeline.Delivery
	var received, next, finished int64
	var state string
	if err := row.Scan(&d.Seq, &d.ID, &d.Event, &d.Action, &d.InstallationID, &d.RepositoryID, &d.Repository,
		&received, &state, &d.Attempts, &d.Waits, &next, &d.LastError, &finished, &d.Note, &d.Body); err != nil {
		return nil, err
	}
	// A damaged body spoils this delivery alone: it is handed out (and
	// parked as dead by the worker) or changed by an operator like any
	// other, not an error that stops the reading of the inbox.
	body, err := unpackBody(d.Body)
	if err != nil {
		d.BodyDamage = fmt.Errorf("delivery %s: %w", d.ID, err)
	}
	d.Body = body
	d.ReceivedAt, d.NextAttemptAt, d.FinishedAt = fromMillis(received), fromMillis(next), fromMillis(finished)
	d.State = pipeline.DeliveryState(state)
	return &d, nil
}

// queueHead is the oldest pending delivery of a queue.
type queueHead struct {
	repository     string
	repositoryID   int64
	installationID int64
	seq            int64
	nextAttempt    int64
}

// queue names the head's queue, as the worker has it in hand: its
// repository's ID, which a rename or a transfer keeps (and which another
// repository taking up the name does not share); or, a delivery of no
// repository (an installation's own events), its installation's, so that
// one installation's event waiting for a retry holds up no other's.
func (h queueHead) queue() pipeline.InHand {
	return pipeline.InHandOf(h.repositoryID, h.repository, h.installationID)
}

// queueHeadsQuery finds every queue's head; queueHeadQuery one queue's
// (its repository ID; a name, when that is 0; an installation, when the
// name is empty too). Both read the pending deliveries' index alone
// (TestQueueQueryPlans).
const (
	queueHeadsQuery = `WITH RECURSIVE repos(id) AS (
		SELECT (SELECT MIN(repository_id) FROM deliveries WHERE state = 'pending' AND repository_id > 0)
		UNION ALL
		SELECT (SELECT MIN(repository_id) FROM deliveries WHERE state = 'pending' AND repository_id > repos.id)
		FROM repos WHERE repos.id IS NOT NULL)
	SELECT d.repository, d.repository_id, d.installation_id, d.seq, d.next_attempt_at FROM repos
	JOIN deliveries d ON d.seq = (SELECT MIN(seq) FROM deliveries WHERE state = 'pending' AND repository_id = repos.id)
	WHERE repos.id IS NOT NULL
	UNION ALL
	SELECT repository, repository_id, installation_id, MIN(seq), next_attempt_at FROM deliveries
	WHERE state = 'pending' AND repository_id = 0
	GROUP BY repository, CASE WHEN repository = '' THEN installation_id END`
	queueHeadQuery = `SELECT repository, repository_id, installation_id, seq, next_attempt_at FROM deliveries
		WHERE state = 'pending' AND repository_id = ? AND (repository_id > 0 OR (repository = ? AND (? != '' OR installation_id = ?)))
		ORDER BY seq LIMIT 1`
)

// queueHeads finds the head of each repository's queue with one index seek
// per repository (a loose index scan of the pending index), so its cost
// follows the number of repositories with work, not the backlog; and the
// head of each queue of deliveries without a repository ID (an
// installation's own events: few).
func (db *DB) queueHeads(ctx context.Context) ([]queueHead, error) {
	rows, err := db.query(ctx, queueHeadsQuery)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var heads []queueHead
	for rows.Next() {
		var h queueHead
		if err := rows.Scan(&h.repository, &h.repositoryID, &h.installationID, &h.seq, &h.nextAttempt); err != nil {
			return nil, err
		}
		heads = append(heads, h)
	}
	slices.SortFunc(heads, func(a, b queueHead) int { return cmp.Compare(a.seq, b.seq) })
	return heads, rows.Err()
}

// queueHeadOf looks up the head of one queue: one index seek.
func (db *DB) queueHeadOf(ctx context.Context, q pipeline.InHand) (queueHead, error) {
	var h queueHead
	err := db.queryRow(ctx, queueHeadQuery,
		q.RepositoryID, q.Repository, q.Repository, q.Installation).Scan(&h.repository, &h.repositoryID, &h.installationID, &h.seq, &h.nextAttempt)
	return h, err
}

// NextWork returns up to limit deliveries the worker may handle now: for
// each queue (a repository's, by ID), its oldest pending delivery, if it is
// due and the queue is not in busy (a delivery's InHand). Deliveries of one
// repository are therefore handled one at a time, in order of arrival,
// whatever name each was delivered under (renamed, or transferred, while
// they waited). next is when the first of the other queue heads (not busy,
// not handed out) becomes due, or zero.
func (db *DB) NextWork(ctx context.Context, now time.Time, busy map[pipeline.InHand]bool, limit int) (ds []*pipeline.Delivery, next time.Time, err error) {
	heads, err := db.queue.current(ctx, db)
	if err != nil {
		return nil, time.Time{}, err
	}
	nextDue := int64(0)
	for _, h := range heads {
		if busy[h.queue()] {
			continue
		}
		if h.nextAttempt > millis(now) || len(ds) >= limit {
			if nextDue == 0 || h.nextAttempt < nextDue {
				nextDue = h.nextAttempt
			}
			continue
		}
		d, err := scanDelivery(db.queryRow(ctx, `SELECT `+deliveryColumns+withBody+` WHERE d.seq = ? AND d.state = 'pending'`, h.seq))
		if errors.Is(err, sql.ErrNoRows) {
			db.queue.forget() // changed behind this process's back
			continue
		}
		if err != nil {
			return nil, time.Time{}, err
		}
		ds = append(ds, d)
	}
	return ds, fromMillis(nextDue), nil
}

// queueCache is this process's view of the queue heads, so that the worker
// does not search the whole pending index for every delivery it takes. A
// head changes only when this process finishes or fails it (that
// queue is then looked up again: one index seek), and a queue gets a
// head when deliveries arrive (read from the rows after the last one
// seen: a range of the primary key). A full search every queueFullSearch
// picks up what another process changed (`lastmile deliveries retry`).
type queueCache struct {
	mu       sync.Mutex
	heads    map[pipeline.InHand]queueHead // queue → its oldest pending delivery
	stale    map[pipeline.InHand]bool      // queues whose head must be looked up
	seen     int64                         // the highest seq read; arrivals come after it
	searched time.Time                     // the last full search; zero: search now
}

// queueFullSearch bounds how long a change made by another process can go
// unseen (the worker also polls that often).
const queueFullSearch = 5 * time.Second

// current returns the queue heads in order of arrival.
func (c *queueCache) current(ctx context.Context, db *DB) ([]queueHead, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.searched.IsZero() || time.Since(c.searched) > queueFullSearch {
		// The highest seq first: every row up to it is committed (one
		// writer, in order), so the search below sees them all.
		var seen sql.NullInt64
		if err := db.queryRow(ctx, `SELECT MAX(seq) FROM deliveries`).Scan(&seen); err != nil {
			return nil, err
		}
		heads, err := db.queueHeads(ctx)
		if err != nil {
			return nil, err
		}
		c.heads, c.stale, c.seen, c.searched = map[pipeline.InHand]queueHead{}, map[pipeline.InHand]bool{}, seen.Int64, time.Now()
		for _, h := range heads {
			c.heads[h.queue()] = h
		}
	} else {
		if err := c.readArrivals(ctx, db); err != nil {
			return nil, err
		}
		for q := range c.stale {
			h, err := db.queueHeadOf(ctx, q)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				delete(c.heads, q)
			case err != nil:
				return nil, err
			default:
				c.heads[q] = h
			}
			delete(c.stale, q)
		}
	}
	out := make([]queueHead, 0, len(c.heads))
	for _, h := range c.heads {
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b queueHead) int { return cmp.Compare(a.seq, b.seq) })
	return out, nil
}

// readArrivals gives a head to each repository that had none and now has a
// pending delivery.
func (c *queueCache) readArrivals(ctx context.Context, db *DB) error {
	rows, err := db.query(ctx, `SELECT seq, repository, repository_id, installation_id, state, next_attempt_at FROM deliveries WHERE seq > ? ORDER BY seq`, c.seen)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var h queueHead
		var state string
		if err := rows.Scan(&h.seq, &h.repository, &h.repositoryID, &h.installationID, &state, &h.nextAttempt); err != nil {
			return err
		}
		c.seen = h.seq
		if _, ok := c.heads[h.queue()]; !ok && !c.stale[h.queue()] && state == string(pipeline.DeliveryPending) {
			c.heads[h.queue()] = h
		}
	}
	return rows.Err()
}

// handled records what became of the head with sequence number seq: done
// or dead (its repository's next head must be looked up), or to be retried
// at next.
func (c *queueCache) handled(seq int64, gone bool, next time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for q, h := range c.heads {
		if h.seq != seq {
			continue
		}
		if gone {
			c.stale[q] = true
		} else {
			h.nextAttempt = millis(next)
			c.heads[q] = h
		}
		return
	}
	c.searched = time.Time{} // not a head this process knew: search again
}

// forget makes the next call search the whole queue again.
func (c *queueCache) forget() {
	c.mu.Lock()
	c.searched = time.Time{}
	c.mu.Unlock()
}

// NextDeliveries is NextWork without the next due time.
func (db *DB) NextDeliveries(ctx context.Context, now time.Time, busy map[pipeline.InHand]bool, limit int) ([]*pipeline.Delivery, error) {
	ds, _, err := db.NextWork(ctx, now, busy, limit)
	return ds, err
}

// NextAttemptAt is when the first of the deliveries at the head of a
// repository's queue becomes due, or the zero time when nothing is pending.
// (A delivery behind one waiting for its retry waits too.)
func (db *DB) NextAttemptAt(ctx context.Context) (time.Time, error) {
	heads, err := db.queueHeads(ctx)
	if err != nil || len(heads) == 0 {
		return time.Time{}, err
	}
	next := heads[0].nextAttempt
	for _, h := range heads[1:] {
		next = min(next, h.nextAttempt)
	}
	return time.UnixMilli(next), nil
}

// FinishDelivery marks a delivery done: its handling has committed. note
// says what handling concluded, if worth saying.
func (db *DB) FinishDelivery(ctx context.Context, seq int64, note string) error {
	return db.finishDelivery(ctx, seq, pipeline.DeliveryDone, note)
}

// IgnoreDelivery marks a handled delivery ignored: handling found nothing
// to act on (a push of a repository that is not enrolled); note says why.
func (db *DB) IgnoreDelivery(ctx context.Context, seq int64, note string) error {
	return db.finishDelivery(ctx, seq, pipeline.DeliveryIgnored, note)
}

func (db *DB) finishDelivery(ctx context.Context, seq int64, state pipeline.DeliveryState, note string) error {
	if _, err := db.exec(ctx, `UPDATE deliveries SET state = ?, attempts = attempts + 1,
		last_error = '', finished_at = ?, note = ? WHERE seq = ?`, string(state), millis(db.Now()), note, seq); err != nil {
		return err
	}
	db.queue.handled(seq, true, time.Time{})
	return nil
}

// FailDelivery records a failed attempt. The delivery is tried again at next,
// or parked as dead when dead is true.
func (db *DB) FailDelivery(ctx context.Context, seq int64, cause string, next time.Time, dead bool) error {
	state, finished := pipeline.DeliveryPending, int64(0)
	if dead {
		state, finished = pipeline.DeliveryDead, millis(db.Now())
	}
	if _, err := db.exec(ctx, `UPDATE deliveries SET state = ?, attempts = attempts + 1,
		last_error = ?, next_attempt_at = ?, finished_at = ? WHERE seq = ?`,
		string(state), cause, millis(next), finished, seq); err != nil {
		return err
	}
	db.queue.handled(seq, dead, next)
	return nil
}

// PostponeDelivery has a pending delivery wait until next, saying why,
// without counting an attempt (the wait was GitHub's doing, not the
// delivery's); it counts a wait.
func (db *DB) PostponeDelivery(ctx context.Context, seq int64, cause string, next time.Time) error {
	if _, err := db.exec(ctx, `UPDATE deliveries SET waits = waits + 1, last_error = ?, next_attempt_at = ? WHERE seq = ? AND state = 'pending'`,
		cause, millis(next), seq); err != nil {
		return err
	}
	db.queue.handled(seq, false, next)
	return nil
}

// RetryDelivery puts a dead delivery back in the queue, due now, with its
// attempts reset. It returns the delivery as it now stands.
func (db *DB) RetryDelivery(ctx context.Context, deliveryID string) (*pipeline.Delivery, error) {
	d, err := db.changeDead(ctx, deliveryID, "retried", func(tx *sql.Tx, d *pipeline.Delivery) error {
		if d.BodyDamage != nil {
			return fmt.Errorf("%w: it cannot be handled again (discard it)", d.BodyDamage)
		}
		if d.Body == nil {
			return fmt.Errorf("delivery %s: its body was pruned by retention and it cannot be handled again", deliveryID)
		}
		now := db.Now()
		if _, err := tx.ExecContext(ctx, `UPDATE deliveries SET state = 'pending', attempts = 0, waits = 0, next_attempt_at = ?,
			finished_at = 0 WHERE seq = ?`, millis(now), d.Seq); err != nil {
			return err
		}
		d.State, d.Attempts, d.Waits, d.NextAttemptAt, d.FinishedAt = pipeline.DeliveryPending, 0, 0, now, time.Time{}
		return nil
	})
	if err == nil {
		db.queue.forget()
	}
	return d, err
}

// DiscardDelivery gives up on a dead delivery: it is recorded as ignored,
// with who discarded it and why in its note, and no longer counts as dead.
// Its last error stays.
func (db *DB) DiscardDelivery(ctx context.Context, deliveryID, reason string) (*pipeline.Delivery, error) {
	return db.changeDead(ctx, deliveryID, "discarded", func(tx *sql.Tx, d *pipeline.Delivery) error {
		note := "discarded by an operator"
		if reason = strings.TrimSpace(reason); reason != "" {
			note += ": " + reason
		}
		now := db.Now()
		if _, err := tx.ExecContext(ctx, `UPDATE deliveries SET state = 'ignored', finished_at = ?, note = ? WHERE seq = ?`,
			millis(now), note, d.Seq); err != nil {
			return err
		}
		d.State, d.FinishedAt, d.Note = pipeline.DeliveryIgnored, now, note
		return nil
	})
}

// changeDead runs change on a dead delivery in a write transaction; any
// other state is an error naming it (verb: what only dead deliveries can be).
func (db *DB) changeDead(ctx context.Context, deliveryID, verb string, change func(tx *sql.Tx, d *pipeline.Delivery) error) (*pipeline.Delivery, error) {
	var out *pipeline.Delivery
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		d, err := scanDelivery(tx.QueryRowContext(ctx, `SELECT `+deliveryColumns+withBody+` WHERE d.delivery_id = ?`, deliveryID))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("delivery %s: %w", deliveryID, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if d.State != pipeline.DeliveryDead {
			return fmt.Errorf("delivery %s is %s: only dead deliveries can be %s", deliveryID, d.State, verb)
		}
		if err := change(tx, d); err != nil {
			return err
		}
		out = d
		return nil
	})
	return out, err
}

// DeliveryFilter selects deliveries for ListDeliveries.
type DeliveryFilter struct {
	State      pipeline.DeliveryState // "" for any
	Repository string                 // "" for any; its case is ignored, as GitHub ignores it
	Limit      int                    // default 50
}

// ListDeliveries returns recent deliveries, newest first, without bodies.
// A repository lastmile has no record of (no delivery came under that
// name, and no repository has or had it: a misspelt name) is
// pipeline.ErrNotFound, as History says it, rather than no deliveries.
func (db *DB) ListDeliveries(ctx context.Context, f DeliveryFilter) ([]*pipeline.Delivery, error) {
	list, err := db.listDeliveries(ctx, f)
	if err == nil && len(list) == 0 && f.Repository != "" {
		err = db.deliveriesRepositoryKnown(ctx, f.Repository)
	}
	return list, err
}

// deliveriesRepositoryKnown is nil when a delivery came under the
// repository name, or a repository has or had it (see repositoriesNamed);
// pipeline.ErrNotFound, in History's words, otherwise.
func (db *DB) deliveriesRepositoryKnown(ctx context.Context, name string) error {
	tx, err := db.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var came bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM deliveries WHERE repository = ? COLLATE NOCASE)`, name).Scan(&came); err != nil || came {
		return err
	}
	_, err = repositoriesNamed(ctx, tx, name)
	return err
}

func (db *DB) listDeliveries(ctx context.Context, f DeliveryFilter) ([]*pipeline.Delivery, error) {
	var where []string
	var args []any
	if f.State != "" {
		where = append(where, "state = ?")
		args = append(args, string(f.State))
	}
	if f.Repository != "" {
		where = append(where, "repository = ? COLLATE NOCASE")
		args = append(args, f.Repository)
	}
	if f.Limit <= 0 {
		f.Limit = 50
	}
	q := `SELECT ` + strings.Replace(deliveryColumns, ", b.body", ", NULL", 1) + ` FROM deliveries d`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY seq DESC LIMIT ?"
	rows, err := db.read.QueryContext(ctx, q, append(args, f.Limit)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*pipeline.Delivery
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// QueueHead is the delivery at the head of a queue, which the pending
// deliveries behind it wait for.
type QueueHead struct {
	DeliveryID    string
	NextAttemptAt time.Time // zero: due now (or in hand)
}

// WaitingBehind maps the ID of each pending delivery of ds that waits
// behind an older one of its queue (its repository's, or its
// installation's own events') to that queue's head.
func (db *DB) WaitingBehind(ctx context.Context, ds []*pipeline.Delivery) (map[string]QueueHead, error) {
	out := map[string]QueueHead{}
	if !slices.ContainsFunc(ds, func(d *pipeline.Delivery) bool { return d.State == pipeline.DeliveryPending }) {
		return out, nil
	}
	heads, err := db.queueHeads(ctx)
	if err != nil {
		return nil, err
	}
	// As NextWork: a repository's deliveries wait behind its queue's head,
	// whatever name each was delivered under.
	byQueue := map[pipeline.InHand]int64{}
	for _, h := range heads {
		byQueue[h.queue()] = h.seq
	}
	found := map[int64]QueueHead{}
	for _, d := range ds {
		head, ok := byQueue[d.InHand()]
		if d.State != pipeline.DeliveryPending || !ok || head >= d.Seq {
			continue
		}
		h, ok := found[head]
		if !ok {
			var next int64
			if err := db.read.QueryRowContext(ctx, `SELECT delivery_id, next_attempt_at FROM deliveries WHERE seq = ?`, head).Scan(&h.DeliveryID, &next); err != nil {
				return nil, err
			}
			h.NextAttemptAt = fromMillis(next)
			found[head] = h
		}
		out[d.ID] = h
	}
	return out, nil
}

// DeliveryDead tells whether the delivery stored under deliveryID is dead
// (false for one not stored).
func (db *DB) DeliveryDead(ctx context.Context, deliveryID string) (bool, error) {
	var state string
	err := db.read.QueryRowContext(ctx, `SELECT state FROM deliveries WHERE delivery_id = ?`, deliveryID).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return state == string(pipeline.DeliveryDead), err
}

// GetDelivery returns one delivery with its body.
func (db *DB) GetDelivery(ctx context.Context, deliveryID string) (*pipeline.Delivery, error) {
	d, err := scanDelivery(db.read.QueryRowContext(ctx, `SELECT `+deliveryColumns+withBody+` WHERE d.delivery_id = ?`, deliveryID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("delivery %s: %w", deliveryID, ErrNotFound)
	}
	return d, err
}

// InboxStats counts pending and dead deliveries, for metrics and readiness.
func (db *DB) InboxStats(ctx context.Context) (map[pipeline.DeliveryState]int64, error) {
	out := map[pipeline.DeliveryState]int64{}
	for _, st := range []pipeline.DeliveryState{pipeline.DeliveryPending, pipeline.DeliveryDead} {
		var n int64
		// One query per state, so each is answered from its partial index.
		if err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM deliveries WHERE state = ?`, string(st)).Scan(&n); err != nil {
			return nil, err
		}
		out[st] = n
	}
	return out, nil
}

// KnownDeliveries reports which of the given delivery IDs are in the inbox.
func (db *DB) KnownDeliveries(ctx context.Context, ids []string) (map[string]bool, error) {
	known := map[string]bool{}
	err := db.queryIn(ctx, `SELECT delivery_id FROM deliveries WHERE delivery_id IN `, ids, func(rows *sql.Rows) error {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err
		}
		known[id] = true
		return nil
	})
	return known, err
}

// RedeliveriesRequested returns the redeliveries lastmile asked for each of
// the given delivery GUIDs (absent: none).
func (db *DB) RedeliveriesRequested(ctx context.Context, guids []string) (map[string]pipeline.Redeliveries, error) {
	out := map[string]pipeline.Redeliveries{}
	err := db.queryIn(ctx, `SELECT guid, requests, gave_up FROM redelivery_requests WHERE guid IN `, guids, func(rows *sql.Rows) error {
		var guid string
		var r pipeline.Redeliveries
		if err := rows.Scan(&guid, &r.Requests, &r.GaveUp); err != nil {
			return err
		}
		out[guid] = r
		return nil
	})
	return out, err
}

// RedeliveryRequested counts a redelivery request for d — or, with
// gaveUp, records that lastmile stopped asking — and forgets what was
// recorded before forgetBefore (out of GitHub's redelivery window). The
// attempt to redeliver, the event and the earliest first attempt seen are
// kept for GivenUpRedeliveries.
func (db *DB) RedeliveryRequested(ctx context.Context, d pipeline.HookDelivery, gaveUp bool, at, forgetBefore time.Time) error {
	asked := 1
	if gaveUp {
		asked = 0
	}
	first := int64(0)
	if !d.FirstAttempt.IsZero() {
		first = millis(d.FirstAttempt)
	}
	return db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM redelivery_requests WHERE requested_at < ?`, millis(forgetBefore)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO redelivery_requests (guid, requests, gave_up, requested_at, hook_delivery_id, event, first_attempt_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (guid) DO UPDATE SET requests = requests + excluded.requests,
				gave_up = MAX(gave_up, excluded.gave_up), requested_at = excluded.requested_at,
				hook_delivery_id = CASE WHEN excluded.hook_delivery_id != 0 THEN excluded.hook_delivery_id ELSE hook_delivery_id END,
				event = CASE WHEN excluded.event != '' THEN excluded.event ELSE event END,
				first_attempt_at = CASE WHEN first_attempt_at = 0 OR excluded.first_attempt_at != 0 AND excluded.first_attempt_at < first_attempt_at
					THEN excluded.first_attempt_at ELSE first_attempt_at END`,
			d.GUID, asked, gaveUp, millis(at), d.AttemptID, d.Event, first)
		return err
	})
}

// FirstAttempt is GitHub's first attempt to deliver guid, as recorded with
// lastmile's redelivery requests for it; zero if there were none.
func (db *DB) FirstAttempt(ctx context.Context, guid string) (time.Time, error) {
	var first int64
	err := db.read.QueryRowContext(ctx, `SELECT first_attempt_at FROM redelivery_requests WHERE guid = ?`, guid).Scan(&first)
	if errors.Is(err, sql.ErrNoRows) || first == 0 {
		return time.Time{}, nil
	}
	return fromMillis(first), err
}

// GivenUpRedeliveries lists the deliveries lastmile gave up asking GitHub
// to redeliver whose first attempt was at since or later (GitHub's clock),
// oldest first: those recorded with an attempt to redeliver (not those
// GitHub refused for good).
func (db *DB) GivenUpRedeliveries(ctx context.Context, since time.Time) ([]pipeline.HookDelivery, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT guid, hook_delivery_id, event, first_attempt_at FROM redelivery_requests
		WHERE gave_up = 1 AND hook_delivery_id > 0 AND first_attempt_at >= ?
		ORDER BY first_attempt_at, hook_delivery_id`, millis(since))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []pipeline.HookDelivery
	for rows.Next() {
		var d pipeline.HookDelivery
		var first int64
		if err := rows.Scan(&d.GUID, &d.AttemptID, &d.Event, &first); err != nil {
			return nil, err
		}
		d.FirstAttempt = time.UnixMilli(first).UTC()
		out = append(out, d)
	}
	return out, rows.Err()
}

// RedeliveryNotRequested takes back one request counted for guid by
// RedeliveryRequested: GitHub did not accept it (a failure, a rate limit),
// so GitHub made no attempt.
func (db *DB) RedeliveryNotRequested(ctx context.Context, guid string) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE redelivery_requests SET requests = MAX(requests - 1, 0) WHERE guid = ?`, guid)
		return err
	})
}

// queryIn runs prefix followed by "(?, ?, …)" for the ids, 500 at a time,
// calling each for every row.
func (db *DB) queryIn(ctx context.Context, prefix string, ids []string, each func(*sql.Rows) error) error {
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), 500)]
		ids = ids[len(chunk):]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		rows, err := db.read.QueryContext(ctx, prefix+`(?`+strings.Repeat(",?", len(chunk)-1)+`)`, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			if err := each(rows); err != nil {
				rows.Close()
				return err
			}
		}
		if err := closeRows(rows); err != nil {
			return err
		}
	}
	return nil
}

// Setting reads a named value; ok is false when it was never set.
func (db *DB) Setting(ctx context.Context, key string) (value string, ok bool, err error) {
	err = db.read.QueryRowContext(ctx, "SELECT value FROM settings WHERE key = ?", key).Scan(&value)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	return value, err == nil, err
}

// SetSetting stores a named value.
func (db *DB) SetSetting(ctx context.Context, key, value string) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES (?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
		return err
	})
}
