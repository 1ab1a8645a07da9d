package app

import (
	"strings"
	"testing"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/pipeline"
)

// While staging's deploy job waits for its reviewer, a developer marks
// lastmile's staging deployment successful by hand (the REST API, the gh
// CLI): no deploy ran, so nothing goes to production; the audit record
// keeps the status, saying why it was disregarded. Once the reviewer
// approves, the deploy runs and the release goes on.
func TestAHandMadeSuccessPromotesNothing(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", map[string]simulator.ReviewPolicy{"staging": simulator.Manual()}, simulator.WorkflowOptions{})
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	waitFor(t, sb, "staging's job waiting for its reviewer", func(s *simulator.Simulator) bool { return len(s.PendingReviews(repo)) == 1 })
	staging := deploymentsByEnv(sb, repo, push.After)["staging"]
	if len(staging) != 1 {
		t.Fatalf("%d deployments to staging, want 1", len(staging))
	}
	if _, err := sb.Sim.PostDeploymentStatusAs(repo, staging[0].ID, "success", "mallory"); err != nil {
		t.Fatal(err)
	}
	settle(t, sb)
	if n := len(deploymentsByEnv(sb, repo, push.After)["production"]); n != 0 {
		t.Fatalf("%d deployments to production after a success posted by hand", n)
	}
	if rel := releaseOf(t, sb, repo, push.After); rel.State != pipeline.ReleaseActive {
		t.Errorf("release: %s %s, want active", rel.State, rel.StopKind)
	}
	code, out, errOut := run(t, sb.Config.Database, "audit", repo, push.After)
	if want := "status success     by mallory\n        disregarded: a success posted by mallory, a person, not by a workflow or an App: it proves no deploy\n"; code != 0 || !strings.Contains(out, want) {
		t.Errorf("audit: exit %d, stderr %q, stdout\n%s\nwant it to show\n%s", code, errOut, out, want)
	}

	p := sb.Sim.PendingReviews(repo)[0]
	if err := sb.Sim.Approve(repo, p.RunID, p.Environment, "alice", "ok"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, sb, "production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, push.After, "production") })
}
