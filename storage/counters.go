package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/lastmile-app/lastmile/metrics"
)

// Names of the persistent counters. Their label values are stored in the
// order the metric declares its labels.
const (
	MetricWebhookDeliveries = metrics.WebhookDeliveries // event, outcome
	MetricGitHubRequests    = metrics.GitHubRequests    // method, code
	MetricDeployments       = metrics.DeploymentsTotal  // repository, environment, state
)

func addCounter(ctx context.Context, tx *sql.Tx, name string, labels []string, delta float64) error {
	key, err := json.Marshal(labels)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO counters (name, labels, value) VALUES (?, ?, ?)
		ON CONFLICT (name, labels) DO UPDATE SET value = value + excluded.value`, name, string(key), delta)
	if err != nil {
		return fmt.Errorf("add to counter %s: %w", name, err)
	}
	if name == MetricDeployments {
		return bumpRollups(ctx, tx)
	}
	return nil
}

// Counters reads every series of a persistent counter.
func (db *DB) Counters(ctx context.Context, name string) ([]metrics.Series, error) {
	return readCounters(ctx, db.read, name)
}
