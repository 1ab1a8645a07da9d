package storage

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestPruneQueriesSeekTheirIndexes checks, by SQLite's query plans, that
// the work of a prune batch is bounded by the rows it is after, not by the
// history: the deliveries are read from the deliveries_received index
// between the mark and the cutoff, the bodies by their key, the kept logs
// from the job_logs_kept index up to the cutoff, the held deliveries by key.
func TestPruneQueriesSeekTheirIndexes(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "lastmile.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, c := range []struct {
		query string
		args  []any
		want  []string
	}{
		{pruneBodiesQuery, []any{1, 2, 3, 4}, []string{
			"SEARCH d USING INDEX deliveries_received (received_at>? AND received_at<?)",
			"SEARCH b USING INTEGER PRIMARY KEY (rowid=?)",
		}},
		{pruneHeldQuery, []any{1, 2}, []string{
			"SEARCH h USING INTEGER PRIMARY KEY (rowid>?)",
			"SEARCH d USING INTEGER PRIMARY KEY (rowid=?)",
			"SEARCH b USING INTEGER PRIMARY KEY (rowid=?)",
		}},
		{pruneLogsQuery, []any{1, 2}, []string{
			"SEARCH job_logs USING INTEGER PRIMARY KEY (rowid=?)",
			"SEARCH job_logs USING INDEX job_logs_kept (fetched_at<?)",
		}},
	} {
		rows, err := db.read.QueryContext(ctx, "EXPLAIN QUERY PLAN "+c.query, c.args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notUsed int
			var detail string
			if err := rows.Scan(&id, &parent, &notUsed, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
		all := strings.Join(plan, "\n")
		for _, w := range c.want {
			if !strings.Contains(all, w) {
				t.Errorf("plan of %s:\n%s\nwant %q", c.query, all, w)
			}
		}
		for _, p := range plan {
			if strings.HasPrefix(p, "SCAN") || strings.Contains(p, "TEMP B-TREE") {
				t.Errorf("plan of %s: %s", c.query, p)
			}
		}
	}
	// The placeholders of logs not downloaded, which retention leaves, are
	// not in job_logs_kept, or every batch would walk past the old ones: a
	// read of it that does not leave them out itself cannot use it.
	if _, err := db.read.ExecContext(ctx, `EXPLAIN QUERY PLAN SELECT job_id FROM job_logs INDEXED BY job_logs_kept
		WHERE log IS NOT NULL AND fetched_at < 1`); err == nil || !strings.Contains(err.Error(), "no query solution") {
		t.Errorf("job_logs_kept used for the logs of every kind (%v); want it to hold the kept logs only, without the missing ones' placeholders", err)
	}
}
