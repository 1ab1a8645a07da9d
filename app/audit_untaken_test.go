package app

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/metrics"
)

// A deployment no workflow run takes up — the commit has no deploy
// workflow, as one from before it was added (a rollback) — leaves its
// release waiting with nothing happening: after ten minutes, the audit
// says so and what to look at. One a run took up, waiting for its
// reviewers, is not said to. /metrics shows the deployment's creation in
// lastmile_deployment_awaiting_run_since_timestamp_seconds from the start
// (the alert waits the ten minutes), as long as lastmile hears from its
// installation.
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
	awaiting := func() map[string]float64 {
		t.Helper()
		snap, err := sb.App.DB().MetricsSnapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, s := range snap.AwaitingRun {
			out[s.Labels[0]+" "+s.Labels[1]] = s.Value
		}
		return out
	}
	created := deploymentsByEnv(sb, "acme/bare", bare.After)["test"][0].CreatedAt
	want := map[string]float64{"acme/bare test": float64(created.Unix())} // GitHub gives whole seconds
	if got := awaiting(); !maps.Equal(got, want) {
		t.Errorf("%s: %v, want %v (acme/bare's deployment to test alone: shop's to staging was taken up by its run)", metrics.AwaitingRunSince, got, want)
	}
	if err := sb.Sim.SuspendInstallation(inst, "octocat"); err != nil {
		t.Fatal(err)
	}
	settle(t, sb)
	if got := awaiting(); len(got) != 0 {
		t.Errorf("%s with acme/bare's installation suspended: %v, want nothing (GitHub sends lastmile nothing of it)", metrics.AwaitingRunSince, got)
	}
	if err := sb.Sim.UnsuspendInstallation(inst, "octocat"); err != nil {
		t.Fatal(err)
	}
	settle(t, sb)
	if got := awaiting(); !maps.Equal(got, want) {
		t.Errorf("%s with acme/bare's installation unsuspended: %v, want %v", metrics.AwaitingRunSince, got, want)
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
