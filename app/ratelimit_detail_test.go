package app

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/pipeline"
)

// A delivery that waits for GitHub's rate limit: `lastmile deliveries
// --state pending` ends its DETAIL with the limit and when it resets (what
// the README's troubleshooting quotes), and --json has the whole error.
func TestRateLimitedDeliveryShowsTheLimit(t *testing.T) {
	sb, logs := loggedSandbox(t, nil, `msg="delivery waits for GitHub"`)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	sb.Sim.InjectFault(simulator.Fault{Kind: simulator.FaultPrimaryRateLimit, Method: "GET", Path: "/repos/{o}/{r}/contents/**", Reset: time.Hour})
	sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	awaitLog(t, logs, "wait for GitHub") // logged once the wait is recorded
	waiting := onlyDelivery(t, sb)
	limit := "GitHub primary rate limit (HTTP 403): retry after "
	if waiting.State != pipeline.DeliveryPending || waiting.Waits != 1 || waiting.Attempts != 0 || !strings.Contains(waiting.LastError, limit) {
		t.Fatalf("the delivery: %+v; want pending, one wait, no attempt, and the limit in its error", waiting)
	}
	code, stdout, stderr := run(t, sb.Config.Database, "deliveries", "--state", "pending")
	if code != 0 {
		t.Fatalf("deliveries: exit %d, %s", code, stderr)
	}
	t.Logf("lastmile deliveries --state pending:\n%s", stdout)
	row := detailRow(stdout, waiting.ID)
	// The DETAIL keeps the error's last 66 characters: the limit, and when
	// GitHub resets it (RFC 3339, UTC).
	resets := waiting.LastError[strings.LastIndex(waiting.LastError, "retry after ")+len("retry after "):]
	if _, err := time.Parse(time.RFC3339, resets); err != nil || !strings.Contains(row, "retry at ") ||
		!strings.HasSuffix(row, "primary rate limit (HTTP 403): retry after "+resets) || !strings.Contains(row, "…") {
		t.Errorf("row %q: want retry at …, cut in the middle, ending with the limit and its reset %q", row, resets)
	}
	code, stdout, _ = run(t, sb.Config.Database, "deliveries", "--state", "pending", "--json")
	var got []deliveryJSON
	if code != 0 || json.Unmarshal([]byte(stdout), &got) != nil || len(got) != 1 || got[0].LastError != waiting.LastError {
		t.Errorf("--json: exit %d\n%s\nwant the whole error %q", code, stdout, waiting.LastError)
	}
}
