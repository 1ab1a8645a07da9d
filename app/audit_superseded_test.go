package app

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/pipeline"
)

// A reviewer rejecting the job of a deployment lastmile had already
// withdrawn (superseded by a newer release) leaves the deployment's why
// the withdrawal: the rejection is kept as a review.
func TestARejectionOfASupersededJobKeepsTheDeploymentsReason(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", map[string]simulator.ReviewPolicy{"test": simulator.Manual()}, simulator.WorkflowOptions{})
	first := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "One", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	waitFor(t, sb, "first waiting", func(s *simulator.Simulator) bool { return len(s.PendingReviews(repo)) == 1 })
	stale := sb.Sim.PendingReviews(repo)[0]
	sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Two", Files: map[string]string{"b.txt": "2"}})
	waitFor(t, sb, "second waiting", func(s *simulator.Simulator) bool { return len(s.PendingReviews(repo)) == 2 })
	settle(t, sb)
	if err := sb.Sim.Reject(repo, stale.RunID, "test", "bob", "old one"); err != nil {
		t.Fatal(err)
	}
	settle(t, sb)
	code, out, _ := run(t, sb.Config.Database, "audit", "--json", repo, first.After)
	var rec pipeline.AuditRecord
	if code != 0 || json.Unmarshal([]byte(out), &rec) != nil {
		t.Fatalf("audit: exit %d", code)
	}
	d := rec.Environments[0].Deployments[0]
	if d.State != pipeline.DeploymentInactive || !strings.HasPrefix(d.Reason, "superseded") || d.Rejected {
		t.Errorf("the withdrawn deployment: state %s, reason %q, rejected %v; want inactive, superseded, not rejected", d.State, d.Reason, d.Rejected)
	}
	rejected := false
	for _, r := range d.Reviews {
		rejected = rejected || r.Action == pipeline.ReviewRejected && r.Actor == "bob" && r.Comment == "old one"
	}
	if !rejected {
		t.Errorf("bob's rejection is not kept as a review: %+v", d.Reviews)
	}
}
