package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/lastmile-app/lastmile/metrics"
)

var _ metrics.Source = (*DB)(nil)

// Histogram buckets are stored as "le:count" pairs in increasing order of
// the upper bound, separated by commas ("60:3,300:1,+Inf:2"): cheaper to
// read at every scrape than JSON.
func decodeBuckets(raw string) (map[float64]uint64, error) {
	out := map[float64]uint64{}
	if raw == "" || raw == "{}" {
		return out, nil
	}
	for len(raw) > 0 {
		pair, rest, _ := strings.Cut(raw, ",")
		raw = rest
		le, count, ok := strings.Cut(pair, ":")
		if !ok {
			return nil, fmt.Errorf("bucket %q: want le:count", pair)
		}
		bound, err := strconv.ParseFloat(le, 64)
		if err != nil {
			return nil, fmt.Errorf("bucket %q: %w", pair, err)
		}
		n, err := strconv.ParseUint(count, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bucket %q: %w", pair, err)
		}
		out[bound] = n
	}
	return out, nil
}

func encodeBuckets(b map[float64]uint64) (string, error) {
	bounds := make([]float64, 0, len(b))
	for le := range b {
		bounds = append(bounds, le)
	}
	sort.Float64s(bounds)
	var sb strings.Builder
	for i, le := range bounds {
		if i > 0 {
			sb.WriteByte(',')
		}
		if math.IsInf(le, 1) {
			sb.WriteString("+Inf")
		} else {
			sb.WriteString(strconv.FormatFloat(le, 'g', -1, 64))
		}
		sb.WriteByte(':')
		sb.WriteString(strconv.FormatUint(b[le], 10))
	}
	return sb.String(), nil
}

// rollupsVersion counts changes to the delivery rollups (deployment
// counters, histograms, environment state): a scrape re-reads and
// re-renders them only when it moved.
const rollupsVersion = "rollups.version"

// bumpRollups records, in the writing transaction, that the rollups changed.
func bumpRollups(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES (?, '1')
		ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1`, rollupsVersion)
	return err
}

// MetricsSnapshot reads what a scrape shows, in one read transaction: a
// handful of small tables, whatever the length of the history. While no
// one has committed to the database since the last scrape (SQLite's
// data_version, on a connection kept for this) the last snapshot is
// returned; while only the live counters moved (webhooks, GitHub calls,
// the inbox), the delivery rollups of the last snapshot are kept.
func (db *DB) MetricsSnapshot(ctx context.Context) (*metrics.Snapshot, error) {
	db.snapMu.Lock()
	defer db.snapMu.Unlock()
	if db.snapConn == nil {
		conn, err := db.read.Conn(ctx)
		if err != nil {
			return nil, err
		}
		db.snapConn = conn
	}
	var version int64
	if err := db.snapConn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&version); err != nil {
		db.snapConn.Close()
		db.snapConn = nil
		return nil, err
	}
	if db.snap != nil && version == db.snapVersion {
		return db.snap, nil
	}
	s, err := db.readSnapshot(ctx, db.snapConn, db.snap)
	if err != nil {
		return nil, err
	}
	db.snap, db.snapVersion = s, version
	return s, nil
}

func (db *DB) readSnapshot(ctx context.Context, conn *sql.Conn, prev *metrics.Snapshot) (*metrics.Snapshot, error) {
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	s := &metrics.Snapshot{
		Counters:   map[string][]metrics.Series{},
		Gauges:     map[string][]metrics.Series{},
		Histograms: map[string][]metrics.HistogramSeries{},
	}
	var raw sql.NullString
	if err := tx.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, rollupsVersion).Scan(&raw); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	s.RollupsVersion, _ = strconv.ParseInt(raw.String, 10, 64)
	if prev != nil && prev.RollupsVersion == s.RollupsVersion {
		s.Counters[metrics.DeploymentsTotal] = prev.Counters[metrics.DeploymentsTotal]
		s.Histograms, s.Gauges = prev.Histograms, prev.Gauges
	} else if err := readRollups(ctx, tx, s); err != nil {
		return nil, err
	}
	for _, name := range []string{MetricWebhookDeliveries, MetricGitHubRequests} {
		if s.Counters[name], err = readCounters(ctx, tx, name); err != nil {
			return nil, err
		}
	}
	// The age of the oldest pending delivery leaves out those of a
	// suspended installation: they wait for its account to unsuspend it,
	// which is no fault of lastmile's to page anyone for. One pass over
	// the pending deliveries' index (a MIN over all deliveries with the
	// filter in WHERE walks the received-time index, done ones too).
	var oldest sql.NullInt64
	if err := tx.QueryRowContext(ctx, inboxPendingQuery).Scan(&s.InboxPending, &oldest); err != nil {
		return nil, err
	}
	if oldest.Valid {
		s.OldestPendingSince = fromMillis(oldest.Int64)
	}
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM deliveries WHERE state = 'dead'`).Scan(&s.InboxDead); err != nil {
		return nil, err
	}
	if s.AwaitingRun, err = awaitingRun(ctx, tx); err != nil {
		return nil, err
	}
	return s, nil
}

// awaitingRunQuery finds, per repository and environment, the oldest
// deployment lastmile created for an active release that no workflow run
// has taken up (no status, no run linked) and that no run may yet take up
// (mayYetRun), in a repository reached through an installation that is
// neither suspended nor uninstalled (GitHub sends lastmile nothing of the
// others). It reads the deployments_awaiting_run index: a handful of
// rows, however long the history (TestAwaitingRunQueryPlan).
var awaitingRunQuery = `SELECT r.full_name, d.environment, MIN(d.created_at) FROM deployments d
	JOIN releases rel ON rel.id = d.release_id
	JOIN repositories r ON r.id = d.repository_id
	WHERE d.origin = 'lastmile' AND d.state = 'created' AND d.run_id = 0
		AND rel.state = 'active' AND r.installation_id != 0
		AND r.installation_id NOT IN (SELECT id FROM installations WHERE state != 'active')
		AND NOT ` + mayYetRun("d.repository_id", "d.sha", "d.created_at", "d.environment") + `
	GROUP BY r.full_name, d.environment
	ORDER BY r.full_name, d.environment`

// awaitingRun reads awaitingRunQuery: labels repository and environment,
// the value the deployment's creation (unix seconds).
func awaitingRun(ctx context.Context, tx *sql.Tx) ([]metrics.Series, error) {
	rows, err := tx.QueryContext(ctx, awaitingRunQuery)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []metrics.Series
	for rows.Next() {
		var repo, env string
		var created int64
		if err := rows.Scan(&repo, &env, &created); err != nil {
			return nil, err
		}
		out = append(out, metrics.Series{Labels: []string{repo, env}, Value: float64(created) / 1000})
	}
	return out, rows.Err()
}

func readCounters(ctx context.Context, q querier, name string) ([]metrics.Series, error) {
	rows, err := q.QueryContext(ctx, `SELECT labels, value FROM counters WHERE name = ? ORDER BY labels`, name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []metrics.Series
	for rows.Next() {
		var key string
		var v metrics.Series
		if err := rows.Scan(&key, &v.Value); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(key), &v.Labels); err != nil {
			return nil, fmt.Errorf("counter %s: bad labels %q: %w", name, key, err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// readRollups reads the delivery metrics: deployment counters, histograms,
// and the environments with their last success.
func readRollups(ctx context.Context, tx *sql.Tx, s *metrics.Snapshot) error {
	var err error
	if s.Counters[metrics.DeploymentsTotal], err = readCounters(ctx, tx, MetricDeployments); err != nil {
		return err
	}
	rows, err := tx.QueryContext(ctx, `SELECT name, repository, environment, count, sum, buckets FROM histograms
		ORDER BY name, repository, environment`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var name, repo, env, raw string
		var h metrics.HistogramSeries
		if err := rows.Scan(&name, &repo, &env, &h.Count, &h.Sum, &raw); err != nil {
			rows.Close()
			return err
		}
		if h.Buckets, err = decodeBuckets(raw); err != nil {
			rows.Close()
			return err
		}
		h.Labels = []string{repo, env}
		s.Histograms[name] = append(s.Histograms[name], h)
	}
	if err := closeRows(rows); err != nil {
		return err
	}
	return readEnvironments(ctx, tx, s)
}

// readEnvironments reads environment_state: lastmile_environment_info, the
// live since and the last success of each environment. Its rows are by
// repository ID, the series by repository name, and two IDs can carry one
// name (a repository deleted, or renamed or transferred before lastmile
// heard of it, and another created or renamed under that name): their rows
// make one series per label set, as their deployment counters and
// histograms (kept by name) do — two series with one label set would make
// the registry refuse every delivery metric. The last success is the
// newest of the rows; the info and live since are those of one live row:
// of the repository whose name came from the newest event (name_at, as
// SaveRepo records names), of the highest ID (the newer repository) on a
// tie. Rows are grouped by their labels exactly: the table compares
// environments without case, and "Production" of one repository and
// "production" of another are two label sets.
func readEnvironments(ctx context.Context, tx *sql.Tx, s *metrics.Snapshot) error {
	rows, err := tx.QueryContext(ctx, `SELECT e.repository, e.environment, e.production, e.last_success_at, e.retired, e.live_since,
		COALESCE(r.name_at, 0), e.repository_id
		FROM environment_state e LEFT JOIN repositories r ON r.id = e.repository_id
		ORDER BY e.repository, e.environment COLLATE BINARY`)
	if err != nil {
		return err
	}
	defer rows.Close()
	type row struct {
		repo, env         string
		production, live  bool
		at, since, nameAt int64
		id                int64
	}
	var group []row // the rows of one label set
	emit := func() {
		if len(group) == 0 {
			return
		}
		var at int64
		var info *row
		for i := range group {
			r := &group[i]
			at = max(at, r.at)
			if r.live && (info == nil || r.nameAt > info.nameAt || r.nameAt == info.nameAt && r.id > info.id) {
				info = r
			}
		}
		labels := []string{group[0].repo, group[0].env}
		if info != nil {
			s.Gauges[metrics.EnvironmentInfo] = append(s.Gauges[metrics.EnvironmentInfo],
				metrics.Series{Labels: []string{info.repo, info.env, strconv.FormatBool(info.production)}, Value: 1})
			if info.since > 0 {
				s.Gauges[metrics.EnvironmentLiveSince] = append(s.Gauges[metrics.EnvironmentLiveSince],
					metrics.Series{Labels: labels, Value: float64(info.since) / 1000})
			}
		}
		if at > 0 {
			s.Gauges[metrics.LastSuccess] = append(s.Gauges[metrics.LastSuccess],
				metrics.Series{Labels: labels, Value: float64(at) / 1000})
		}
		group = group[:0]
	}
	for rows.Next() {
		var r row
		var retired bool
		if err := rows.Scan(&r.repo, &r.env, &r.production, &r.at, &retired, &r.since, &r.nameAt, &r.id); err != nil {
			return err
		}
		r.live = !retired
		if len(group) > 0 && (group[0].repo != r.repo || group[0].env != r.env) {
			emit()
		}
		group = append(group, r)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	emit()
	return nil
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

// inboxPendingQuery counts the pending deliveries, and finds the oldest
// that is not waiting for its installation to be unsuspended, reading the
// pending deliveries' index only (TestInboxPendingQueryPlan).
const inboxPendingQuery = `SELECT COUNT(*),
	MIN(received_at) FILTER (WHERE installation_id NOT IN (SELECT id FROM installations WHERE state = 'suspended'))
	FROM deliveries WHERE state = 'pending'`
