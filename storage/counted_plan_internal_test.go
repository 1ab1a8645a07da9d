package storage

import (
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
	if !strings.Contains(got, "d USING INDEX deployments_counted") {
		t.Errorf("query plan: %s; want the deployments_counted index", got)
	}
}
