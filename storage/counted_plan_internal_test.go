package storage

import (
	"fmt"
	"strings"
	"testing"
)

// Time to restore looks for the failures and successes of the deployments
// that count in an environment (lastmile's and the workflows' own)
// through the deployments_counted index, however long the history.
func TestCountedDeploymentsQueryPlan(t *testing.T) {
	db := openTemp(t)
	got := queryPlan(t, db, `SELECT s.id FROM deployment_statuses s JOIN deployments d ON d.id = s.deployment_id
		WHERE d.repository_id = 1 AND d.environment = 'production' COLLATE NOCASE AND `+countedSQL+` AND s.state = 'success'`)
	if !strings.Contains(got, "INDEX deployments_counted") {
		t.Errorf("query plan: %s; want the deployments_counted index", got)
	}
}

// lastmile status's newest deployment in an environment, lastmile
// history's environment filter and its stages read lastmile's deployments,
// and those workflows own, by indexes — searches, not scans, however long
// the history — and the planner's reads of lastmile's own keep
// deployments_reached (covering).
func TestCountedDeploymentsReadsQueryPlans(t *testing.T) {
	db := openTemp(t)
	there := `SELECT r.id FROM releases r WHERE ` + historyThere
	for name, c := range map[string]struct {
		query, index string
		args         []any
	}{
		"status, lastmile's": {`SELECT d.id FROM deployments d ` + latestWhere(`d.origin = 'lastmile'`),
			"INDEX deployments_reached (repository_id=? AND environment=? AND release_id>?)", []any{1, "production", 0}},
		"status, the workflows'": {`SELECT d.id FROM deployments d ` + latestWhere(`d.workflow_owned = 1`),
			"INDEX deployments_workflow_owned (repository_id=? AND environment=? AND release_id>?)", []any{1, "production", 0}},
		"history --env, lastmile's": {fmt.Sprintf(there, "d.origin = 'lastmile'"),
			"INDEX deployments_reached (repository_id=? AND environment=? AND release_id=?)", []any{"production"}},
		"history --env, the workflows'": {fmt.Sprintf(there, historyOwned),
			"INDEX deployments_sha (repository_id=? AND sha=?)", []any{"production"}},
		"history, lastmile's": {`SELECT d.id FROM deployments d WHERE d.release_id = 1 AND d.origin = 'lastmile' ORDER BY d.id`,
			"INDEX deployments_one_per_stage (release_id=?)", nil},
		"history, the workflows'": {`SELECT d.id FROM deployments d JOIN repositories p ON p.id = d.repository_id ` + ownedOfRelease,
			"INDEX deployments_sha (repository_id=? AND sha=?)", []any{1, "abc", 1}},
		"settling a run's": {`SELECT id FROM deployments WHERE ` + ownedSQL + ` AND ` + ofRunThere,
			"INDEX deployments_run (run_id=?)", []any{5, 1, "production"}},
	} {
		if got := queryPlan(t, db, c.query, c.args...); !strings.Contains(got, c.index) || strings.Contains(got, "SCAN d") {
			t.Errorf("%s: query plan %s; want %s", name, got, c.index)
		}
	}
}
