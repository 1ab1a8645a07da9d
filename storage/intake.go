package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// ErrClosed is returned by Accept once the database is closing.
var ErrClosed = errors.New("database is closing")

// maxIntakeBatch bounds how many deliveries share one commit.
const maxIntakeBatch = 256

// The bounds of the write Writable probes with: as large as the largest
// body of the commit that failed, within them.
const (
	minProbeBytes = 64 << 10
	maxProbeBytes = 32 << 20
)

// Accept commits a received delivery to the inbox and returns once it is on
// disk. A delivery whose ID is already stored is not stored again: Accept
// then reports duplicate. The delivery is counted in
// lastmile_webhook_deliveries_total{event=eventLabel,outcome} (outcome
// "duplicate" for a duplicate) in the same transaction.
//
// Concurrent calls are committed together (group commit): while one
// transaction is being written, the next calls queue up and share the next
// transaction, so durability costs one fsync per batch, not per delivery.
func (db *DB) Accept(ctx context.Context, d *pipeline.Delivery, eventLabel, outcome string) (duplicate bool, err error) {
	if db.intake == nil {
		return false, ErrReadOnly
	}
	req := &intakeRequest{delivery: d, event: eventLabel, outcome: outcome, done: make(chan intakeResult, 1)}
	if d.Body != nil {
		// Compressed here, by each caller, not by the one goroutine
		// that commits for all of them.
		req.blob = packBody(d.Body)
	}
	if err := db.intake.submit(ctx, req); err != nil {
		return false, err
	}
	// Handed to a commit, the delivery is stored (and counted) or not as
	// that commit goes, whether or not the sender is still there: its
	// result is awaited either way, so that the caller reports it truly.
	res := <-req.done
	return res.duplicate, res.err
}

type intakeRequest struct {
	delivery *pipeline.Delivery
	event    string
	outcome  string
	blob     []byte // the delivery's body as kept (packBody)
	done     chan intakeResult
}

type intakeResult struct {
	duplicate bool
	err       error
}

type groupCommitter struct {
	db       *DB
	requests chan *intakeRequest

	// Prepared once, used by every batch.
	insert, insertBody *sql.Stmt

	mu      sync.RWMutex // guards closed against concurrent submit
	closed  bool
	stopped chan struct{}

	// failing is the number of the last commit when it failed (a full
	// disk, say), 0 when it went through; failedBytes, the bytes of the
	// largest body that commit held: see DB.Writable.
	failing     atomic.Int64
	failedBytes atomic.Int64
	commits     int64 // run's own count
}

func newGroupCommitter(db *DB) (*groupCommitter, error) {
	g := &groupCommitter{
		db:       db,
		requests: make(chan *intakeRequest, maxIntakeBatch),
		stopped:  make(chan struct{}),
	}
	var err error
	g.insert, err = db.write.Prepare(`INSERT INTO deliveries
		(delivery_id, event, action, installation_id, repository_id, repository, received_at, state, next_attempt_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (delivery_id) DO NOTHING`)
	if err != nil {
		return nil, err
	}
	if g.insertBody, err = db.write.Prepare(`INSERT INTO delivery_bodies (seq, body) VALUES (?, ?)`); err != nil {
		g.insert.Close()
		return nil, err
	}
	go g.run()
	return g, nil
}

func (g *groupCommitter) submit(ctx context.Context, req *intakeRequest) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return ErrClosed
	}
	select {
	case g.requests <- req:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close stops intake; requests already submitted are still committed.
func (g *groupCommitter) close() {
	g.mu.Lock()
	if !g.closed {
		g.closed = true
		close(g.requests)
	}
	g.mu.Unlock()
	<-g.stopped
	g.insert.Close()
	g.insertBody.Close()
}

func (g *groupCommitter) run() {
	defer close(g.stopped)
	batch := make([]*intakeRequest, 0, maxIntakeBatch)
	for req := range g.requests {
		batch = append(batch[:0], req)
	fill:
		for len(batch) < maxIntakeBatch {
			select {
			case more, ok := <-g.requests:
				if !ok {
					break fill
				}
				batch = append(batch, more)
			default:
				break fill
			}
		}
		dups, err := g.commit(batch)
		g.commits++
		if err != nil {
			var n int64 // the largest body: GitHub redelivers one at a time
			for _, r := range batch {
				n = max(n, int64(len(r.delivery.Body)))
			}
			g.failedBytes.Store(n)
			g.failing.Store(g.commits)
		} else {
			g.failing.Store(0)
		}
		for i, r := range batch {
			r.done <- intakeResult{duplicate: err == nil && dups[i], err: err}
		}
	}
}

func (g *groupCommitter) commit(batch []*intakeRequest) ([]bool, error) {
	dups := make([]bool, len(batch))
	// Not into a file removed or replaced under the process: nobody would
	// read those deliveries again; refused (503), GitHub's copies stay.
	if err := g.db.sameFile(); err != nil {
		return dups, err
	}
	// The batch is committed even if the callers have gone away: their
	// deliveries may already have been answered by a retry.
	ctx := context.Background()
	err := g.db.durableTx(ctx, func(tx *sql.Tx) error {
		ins := tx.StmtContext(ctx, g.insert)
		insBody := tx.StmtContext(ctx, g.insertBody)
		outcomes := map[[2]string]float64{}
		for i, r := range batch {
			d := r.delivery
			if d.State == "" {
				d.State = pipeline.DeliveryPending
			}
			if d.ReceivedAt.IsZero() {
				d.ReceivedAt = g.db.Now()
			}
			res, err := ins.ExecContext(ctx, d.ID, d.Event, d.Action, d.InstallationID, d.RepositoryID,
				d.Repository, millis(d.ReceivedAt), string(d.State), millis(d.ReceivedAt))
			if err != nil {
				return fmt.Errorf("insert delivery %s: %w", d.ID, err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			outcome := r.outcome
			if n == 0 {
				dups[i] = true
				outcome = "duplicate"
			} else {
				if d.Seq, err = res.LastInsertId(); err != nil {
					return err
				}
				if r.blob != nil {
					if _, err := insBody.ExecContext(ctx, d.Seq, r.blob); err != nil {
						return fmt.Errorf("insert delivery %s: %w", d.ID, err)
					}
				}
			}
			outcomes[[2]string{r.event, outcome}]++
		}
		for k, n := range outcomes {
			if err := addCounter(ctx, tx, MetricWebhookDeliveries, []string{k[0], k[1]}, n); err != nil {
				return err
			}
		}
		return nil
	})
	return dups, err
}

// Writable reports whether the inbox can store deliveries: nil when the
// intake's last commit went through; when it failed, whether a durable
// write as large as that commit's largest body goes through now — so that a
// process that cannot store what it receives reports it (readiness), and
// reports it no more once the cause is gone, although nothing is sent to a
// process that is not ready. (A write of a few bytes would fit in what a
// full disk has left, and report ready a process whose next delivery
// fails.)
func (db *DB) Writable(ctx context.Context) error {
	if db.intake == nil {
		return nil // opened read-only: no intake
	}
	failed := db.intake.failing.Load()
	if failed == 0 {
		return nil
	}
	size := min(max(db.intake.failedBytes.Load(), minProbeBytes), maxProbeBytes)
	err := db.durableTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES ('readyz.probe', zeroblob(?))
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, size)
		return err
	})
	if err != nil {
		return fmt.Errorf("the inbox's last commit failed, and so does a write of %d bytes now: %w", size, err)
	}
	// The probe's space is free again for deliveries.
	if _, err := db.exec(ctx, `UPDATE settings SET value = ? WHERE key = 'readyz.probe'`, db.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		return fmt.Errorf("the inbox's last commit failed; a probe went through, but not its removal: %w", err)
	}
	// Cleared only if no commit failed since the probe began.
	db.intake.failing.CompareAndSwap(failed, 0)
	return nil
}
