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

// A call that spends an installation's hourly quota succeeds (200 with
// x-ratelimit-remaining: 0); go-github remembers it and refuses the next
// calls itself, before they reach lastmile's transport. The delivery waits
// for the reset like any rate-limited one — no attempt counted, never
// dead — and its error says so in lastmile's words, at its end.
func TestSpentQuotaRememberedByGoGitHubIsWaitedOut(t *testing.T) {
	sb, logs := loggedSandbox(t, func(c *Config) { c.MaxAttempts = 2 }, `msg="delivery waits for GitHub"`)
	inst := sb.Sim.CreateInstallation("acme", "Organization")
	repo := "acme/shop"
	sb.Sim.CreateRepo(inst, repo, simulator.RepoOptions{})
	sb.Sim.SetWorkflow(repo, simulator.WorkflowOptions{})
	// The next call of this installation is its 5,000th of the hour.
	sb.Sim.SetRateLimitUsed(inst, simulator.DefaultRateLimit-1)
	sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	awaitLog(t, logs, "wait for GitHub")
	d := onlyDelivery(t, sb)
	const spent = "GitHub primary rate limit (quota spent, as GitHub's last answer said): retry after "
	if d.State != pipeline.DeliveryPending || d.Attempts != 0 || d.Waits == 0 || !strings.Contains(d.LastError, spent) {
		t.Fatalf("the delivery: state %s, %d attempts, %d waits, error %q; want pending, waiting without attempts, the spent quota in its error", d.State, d.Attempts, d.Waits, d.LastError)
	}
	resets, err := time.Parse(time.RFC3339, d.LastError[strings.LastIndex(d.LastError, spent)+len(spent):])
	if err != nil || !d.NextAttemptAt.Equal(resets) || time.Until(resets) < 50*time.Minute {
		t.Errorf("waits until %v, error says %v (%v); want the quota's reset, about an hour away", d.NextAttemptAt, resets, err)
	}
}
