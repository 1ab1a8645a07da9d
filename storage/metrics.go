package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"math"
	"sort"
	"strconv"

	"github.com/lastmile-app/lastmile/metrics"
)

var _ metrics.Source = (*DB)(nil)

func decodeBuckets(raw string) (map[float64]uint64, error) {
	var m map[string]uint64
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return nil, err
	}
	out := make(map[float64]uint64, len(m))
	for k, v := range m {
		le, err := strconv.ParseFloat(k, 64)
		if err != nil {
			return nil, err
		}
		out[le] = v
	}
	return out, nil
}

func encodeBuckets(b map[float64]uint64) (string, error) {
	m := make(map[string]uint64, len(b))
	for le, v := range b {
		k := strconv.FormatFloat(le, 'g', -1, 64)
		if math.IsInf(le, 1) {
			k = "+Inf"
		}
		m[k] = v
	}
	out, err := json.Marshal(m)
	return string(out), err
}

// MetricsSnapshot reads the rollups for a scrape, in one read transaction:
// a handful of small tables, whatever the length of the history.
func (db *DB) MetricsSnapshot(ctx context.Context) (*metrics.Snapshot, error) {
	tx, err := db.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	s := &metrics.Snapshot{
		Counters:   map[string][]metrics.Series{},
		Gauges:     map[string][]metrics.Series{},
		Histograms: map[string][]metrics.HistogramSeries{},
	}
	rows, err := tx.QueryContext(ctx, `SELECT name, labels, value FROM counters`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var name, key string
		var v metrics.Series
		if err := rows.Scan(&name, &key, &v.Value); err != nil {
			rows.Close()
			return nil, err
		}
		if err := json.Unmarshal([]byte(key), &v.Labels); err != nil {
			rows.Close()
			return nil, err
		}
		s.Counters[name] = append(s.Counters[name], v)
	}
	rows.Close()

	rows, err = tx.QueryContext(ctx, `SELECT name, repository, environment, count, sum, buckets FROM histograms`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var name, repo, env, raw string
		var h metrics.HistogramSeries
		if err := rows.Scan(&name, &repo, &env, &h.Count, &h.Sum, &raw); err != nil {
			rows.Close()
			return nil, err
		}
		if h.Buckets, err = decodeBuckets(raw); err != nil {
			rows.Close()
			return nil, err
		}
		h.Labels = []string{repo, env}
		s.Histograms[name] = append(s.Histograms[name], h)
	}
	rows.Close()

	rows, err = tx.QueryContext(ctx, `SELECT repository, environment, production, last_success_at FROM environment_state`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var repo, env string
		var production bool
		var at int64
		if err := rows.Scan(&repo, &env, &production, &at); err != nil {
			rows.Close()
			return nil, err
		}
		s.Gauges[metrics.EnvironmentInfo] = append(s.Gauges[metrics.EnvironmentInfo],
			metrics.Series{Labels: []string{repo, env, strconv.FormatBool(production)}, Value: 1})
		if at > 0 {
			s.Gauges[metrics.LastSuccess] = append(s.Gauges[metrics.LastSuccess],
				metrics.Series{Labels: []string{repo, env}, Value: float64(at) / 1000})
		}
	}
	rows.Close()

	var oldest sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*), MIN(received_at) FROM deliveries WHERE state = 'pending'`).Scan(&s.InboxPending, &oldest); err != nil {
		return nil, err
	}
	if oldest.Valid {
		s.OldestPendingSince = fromMillis(oldest.Int64)
	}
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM deliveries WHERE state = 'dead'`).Scan(&s.InboxDead); err != nil {
		return nil, err
	}
	for _, list := range s.Counters {
		sort.Slice(list, func(i, j int) bool { return labelLess(list[i].Labels, list[j].Labels) })
	}
	return s, rows.Err()
}

func labelLess(a, b []string) bool {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return len(a) < len(b)
}

// AddCounters adds deltas to a persistent counter (metrics.CounterSink).
func (db *DB) AddCounters(ctx context.Context, name string, deltas []metrics.Series) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		for _, d := range deltas {
			if err := addCounter(ctx, tx, name, d.Labels, d.Value); err != nil {
				return err
			}
		}
		return nil
	})
}
