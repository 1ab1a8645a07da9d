package app

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

// A deployment no workflow run takes up — the commit has no deploy
// workflow, as one from before it was added (a rollback) — leaves its
// release waiting with nothing happening: after ten minutes, the audit
// says so and what to look at. One a run took up, waiting for its
// reviewers, is not said to.
func TestAuditSaysNoWorkflowRunTookUpTheDeployment(t *testing.T) {
	ctx := context.Background()
	sb := sandbox(t, nil)
	inst := sb.Sim.CreateInstallation("acme", "Organization")
	sb.Sim.CreateRepo(inst, "acme/bare", simulator.RepoOptions{}) // no workflow
	bare := sb.Sim.Push("acme/bare", "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	shop := sb.repo("shop", map[string]simulator.ReviewPolicy{"staging": simulator.Manual()}, simulator.WorkflowOptions{})
	reviewed := sb.Sim.Push(shop, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	waitFor(t, sb, "the staging job waiting for its reviewers", func(s *simulator.Simulator) bool { return len(s.PendingReviews(shop)) == 1 })
	settle(t, sb)
	if n := len(deploymentsByEnv(sb, "acme/bare", bare.After)["test"]); n != 1 {
		t.Fatalf("acme/bare: %d deployments to test, want 1", n)
	}

	audit := func(repo, sha string) string {
		t.Helper()
		rec, err := sb.App.DB().Audit(ctx, repo, sha)
		if err != nil {
			t.Fatal(err)
		}
		return rec.Waiting
	}
	if got := audit("acme/bare", bare.After); got != "" {
		t.Errorf("acme/bare at once: waiting %q, want nothing said yet", got)
	}
	later := time.Now().Add(11 * time.Minute)
	sb.App.DB().Now = func() time.Time { return later }
	if got := audit("acme/bare", bare.After); !strings.Contains(got, "no workflow run has taken up its deployment to test, created 1") ||
		!strings.Contains(got, "does "+bare.After[:7]+" have it?") {
		t.Errorf("acme/bare 11 minutes on: waiting %q, want the untaken deployment to test said", got)
	}
	if got := audit(shop, reviewed.After); got != "" {
		t.Errorf("%s 11 minutes on, its staging job waiting for reviewers: waiting %q, want nothing said", shop, got)
	}
}
