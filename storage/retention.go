package storage

import (
	"context"
	"database/sql"
	"time"
)

// Pruned counts what Prune removed.
type Pruned struct {
	DeliveryBodies int64 // raw bodies of handled deliveries
	JobLogs        int64 // deploy job logs
}

// Prune drops the bulky parts of records older than cutoff: the raw bodies
// of deliveries that were handled (done or ignored) and the kept deploy job
// logs. The records themselves — deliveries, releases, deployments,
// statuses, reviews — and the metrics stay. Pending and dead deliveries keep
// their bodies: they may still be handled.
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
	return p, err
}
