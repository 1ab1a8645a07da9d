package app

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v62/github"
	"net/http"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

func succeededIn(s *simulator.Simulator, repo, sha, env string) bool {
	for _, d := range s.Deployments(repo) {
		if d.Environment == env && d.SHA == sha && d.State() == "success" {
			return true
		}
	}
	return false
}

// runOf is the workflow run that deployment id triggered (the zero Run if
// none did).
func runOf(sb *Sandbox, repo string, id int64) simulator.Run {
	var run simulator.Run
	for _, r := range sb.Sim.Runs(repo) {
		if r.DeploymentID == id {
			run = r
		}
	}
	return run
}

func releaseOf(t *testing.T, sb *Sandbox, repo, sha string) *pipeline.Release {
	t.Helper()
	rec, err := sb.App.DB().Audit(context.Background(), repo, sha)
	if err != nil {
		t.Fatalf("audit %s@%s: %v", repo, sha, err)
	}
	return &rec.Release
}

func TestRejectedDeploymentStopsTheRelease(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", map[string]simulator.ReviewPolicy{
		"staging":    simulator.AutoApprove("alice", ""),
		"production": simulator.AutoReject("bob", "not during the freeze"),
	}, simulator.WorkflowOptions{})
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})

	waitFor(t, sb, "production failure", func(s *simulator.Simulator) bool {
		for _, d := range s.Deployments(repo) {
			if d.Environment == "production" && d.SHA == push.After && d.State() == "failure" {
				return true
			}
		}
		return false
	})
	settle(t, sb)
	prod := deploymentsByEnv(sb, repo, push.After)["production"]
	if len(prod) != 1 {
		t.Fatalf("production deployments: %d", len(prod))
	}
	last := prod[0].Statuses[len(prod[0].Statuses)-1]
	if last.State != "failure" || !strings.Contains(last.Description, "rejected by bob: not during the freeze") {
		t.Errorf("status written by lastmile: %+v", last)
	}
	rel := releaseOf(t, sb, repo, push.After)
	if rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopRejected || !strings.Contains(rel.StopReason, "rejected by bob") {
		t.Errorf("release: state %s kind %s reason %q", rel.State, rel.StopKind, rel.StopReason)
	}
}

func TestFailingDeployStopsTheRelease(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{FailEnvironments: []string{"staging"}})
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	waitFor(t, sb, "staging failure", func(s *simulator.Simulator) bool {
		for _, d := range s.Deployments(repo) {
			if d.Environment == "staging" && d.State() == "failure" {
				return true
			}
		}
		return false
	})
	settle(t, sb)
	byEnv := deploymentsByEnv(sb, repo, push.After)
	if len(byEnv["production"]) != 0 {
		t.Errorf("production got %d deployments after staging failed", len(byEnv["production"]))
	}
	rel := releaseOf(t, sb, repo, push.After)
	if rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopFailed {
		t.Errorf("release: %s %s %q", rel.State, rel.StopKind, rel.StopReason)
	}
}

// After a failed deploy, someone presses "Re-run failed jobs": the Action
// deploys the same deployment again, and when it succeeds the release goes
// on to production. The audit record keeps both attempts.
func TestRerunOfAFailedDeployCarriesTheReleaseOn(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", map[string]simulator.ReviewPolicy{"staging": simulator.AutoApprove("alice", "")},
		simulator.WorkflowOptions{FailEnvironments: []string{"staging"}})
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	waitFor(t, sb, "staging failure", func(s *simulator.Simulator) bool {
		d := deploymentsByEnv(sb, repo, push.After)["staging"]
		return len(d) == 1 && d[0].State() == "failure"
	})
	settle(t, sb)
	if rel := releaseOf(t, sb, repo, push.After); rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopFailed {
		t.Fatalf("release after the failure: %s %s", rel.State, rel.StopKind)
	}
	staging := deploymentsByEnv(sb, repo, push.After)["staging"][0]
	failed := runOf(sb, repo, staging.ID)

	// The cause is fixed; the job is re-run, and runs the lastmile Action.
	dir := t.TempDir()
	sb.Sim.SetWorkflow(repo, simulator.WorkflowOptions{Deploy: func(ctx context.Context, job simulator.JobContext) error {
		return runAction(ctx, dir, demoCommand, job)
	}})
	if err := sb.Sim.RerunFailedJobs(repo, failed.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, sb, "production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, push.After, "production") })
	settle(t, sb)

	byEnv := deploymentsByEnv(sb, repo, push.After)
	if len(byEnv["staging"]) != 1 || len(byEnv["production"]) != 1 {
		t.Errorf("deployments: %d to staging, %d to production; want one each", len(byEnv["staging"]), len(byEnv["production"]))
	}
	rec, err := sb.App.DB().Audit(context.Background(), repo, push.After)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Release.State != pipeline.ReleaseCompleted {
		t.Errorf("release after the re-run: %s %s %q", rec.Release.State, rec.Release.StopKind, rec.Release.StopReason)
	}
	for _, env := range rec.Environments {
		if env.Name != "staging" {
			continue
		}
		var states []string
		for _, st := range env.Deployments[0].Statuses {
			states = append(states, string(st.State))
		}
		if got := strings.Join(states, ","); !strings.Contains(got, "failure") || !strings.HasSuffix(got, "success") {
			t.Errorf("staging statuses in the record: %s; want the failure, then the re-run's success", got)
		}
		if env.Deployments[0].State != pipeline.DeploymentSuccess {
			t.Errorf("staging deployment in the record: %s", env.Deployments[0].State)
		}
	}
}

func TestTwoQuickPushesNewestWins(t *testing.T) {
	sb := sandbox(t, nil)
	// Staging waits for a reviewer, so the first release is still waiting
	// there when the second one arrives.
	repo := sb.repo("shop", map[string]simulator.ReviewPolicy{"staging": simulator.Manual()}, simulator.WorkflowOptions{})
	first := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "One", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	waitFor(t, sb, "first release waiting for staging review", func(s *simulator.Simulator) bool {
		return len(s.PendingReviews(repo)) == 1
	})
	second := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Two", Files: map[string]string{"b.txt": "2"}})
	waitFor(t, sb, "second release waiting for staging review", func(s *simulator.Simulator) bool {
		return len(s.PendingReviews(repo)) == 2
	})
	settle(t, sb)
	// The first release's staging deployment was superseded: a reviewer who
	// approves it now would not deploy older code after newer.
	staging1 := deploymentsByEnv(sb, repo, first.After)["staging"]
	if len(staging1) != 1 || staging1[0].State() != "inactive" {
		t.Fatalf("first release's staging deployment: %+v", staging1)
	}
	if rel := releaseOf(t, sb, repo, first.After); rel.StopKind != pipeline.StopSuperseded {
		t.Errorf("first release: %s %s %q", rel.State, rel.StopKind, rel.StopReason)
	}
	// A reviewer approves both waiting jobs, the stale one included.
	for _, p := range sb.Sim.PendingReviews(repo) {
		if err := sb.Sim.Approve(repo, p.RunID, p.Environment, "alice", "ok"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, sb, "second release in production", func(s *simulator.Simulator) bool {
		return succeededIn(s, repo, second.After, "production")
	})
	settle(t, sb)
	for _, d := range sb.Sim.Deployments(repo) {
		if d.Environment == "production" && d.SHA != second.After {
			t.Errorf("production received %s, which is not the newest release", d.SHA)
		}
	}
}

// A rollback: the second commit reached production and is bad; main is
// force-pushed back to the first, which goes through every environment
// again as a new release.
func TestRollbackByForcePushDeploysTheEarlierCommitAgain(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	good := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Good", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	waitFor(t, sb, "the good commit in production", func(s *simulator.Simulator) bool {
		return succeededIn(s, repo, good.After, "production")
	})
	bad := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Bad", Files: map[string]string{"b.txt": "bad"}})
	waitFor(t, sb, "the bad commit in production", func(s *simulator.Simulator) bool {
		return succeededIn(s, repo, bad.After, "production")
	})
	first := releaseOf(t, sb, repo, good.After)

	sb.Sim.ForcePush(repo, "main", good.After)
	waitFor(t, sb, "the good commit in production again", func(s *simulator.Simulator) bool {
		return len(deploymentsByEnv(sb, repo, good.After)["production"]) == 2 && s.Deployments(repo)[len(s.Deployments(repo))-1].State() == "success"
	})
	settle(t, sb)
	for env, deps := range deploymentsByEnv(sb, repo, good.After) {
		if len(deps) != 2 || deps[1].State() != "success" {
			t.Errorf("%s: %d deployments of the good commit, the last %s; want 2, success", env, len(deps), deps[len(deps)-1].State())
		}
	}
	rel := releaseOf(t, sb, repo, good.After)
	if rel.ID == first.ID || rel.State != pipeline.ReleaseCompleted {
		t.Errorf("release of the rollback: #%d %s; want a new one (not #%d), completed", rel.ID, rel.State, first.ID)
	}
	// The newest deployment in production is the good commit.
	var last simulator.Deployment
	for _, d := range sb.Sim.Deployments(repo) {
		if d.Environment == "production" {
			last = d
		}
	}
	if last.SHA != good.After {
		t.Errorf("production's newest deployment is of %s, want the rollback to %s", last.SHA, good.After)
	}

	// The audit record shows the rollback and names the first release,
	// which --release shows.
	code, out, errOut := run(t, sb.Config.Database, "audit", "acme/shop", good.After[:7])
	if code != 0 || !strings.Contains(out, fmt.Sprintf("Release #%d of acme/shop", rel.ID)) ||
		!strings.Contains(out, fmt.Sprintf("the commit is also in #%d, as its head or a commit it brought", first.ID)) {
		t.Errorf("audit: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = run(t, sb.Config.Database, "audit", "--json", "--release", fmt.Sprint(first.ID), "acme/shop", good.After)
	var rec pipeline.AuditRecord
	if code != 0 || json.Unmarshal([]byte(out), &rec) != nil || rec.Release.ID != first.ID || len(rec.Commits) != 1 ||
		!slices.Equal(rec.OtherReleases, []int64{rel.ID}) {
		t.Errorf("audit --release %d: exit %d, release #%d, others %v\n%s", first.ID, code, rec.Release.ID, rec.OtherReleases, errOut)
	}
}

// The pipeline branch's history replaced by an unrelated one (an orphan
// branch force-pushed over it, a history rewritten): GitHub compares
// nothing across the two (404, no common ancestor). The push is released
// at once — not a delivery retried until it is dead, holding up the
// repository's later deliveries — and deployed everywhere; the release in
// flight on the old history is withdrawn; only the commit pushed counts
// for lead time (the rewritten commits keep their old dates).
func TestAHistoryReplacedIsReleased(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", map[string]simulator.ReviewPolicy{"production": simulator.Manual()}, simulator.WorkflowOptions{})
	// pending is the review that sha's job waits for, if one does.
	pending := func(s *simulator.Simulator, sha string) (simulator.PendingReview, bool) {
		shas, deps := map[int64]string{}, map[int64]int64{}
		for _, d := range s.Deployments(repo) {
			shas[d.ID] = d.SHA
		}
		for _, r := range s.Runs(repo) {
			deps[r.ID] = r.DeploymentID
		}
		for _, p := range s.PendingReviews(repo) {
			if shas[deps[p.RunID]] == sha {
				return p, true
			}
		}
		return simulator.PendingReview{}, false
	}
	// approve approves the production job that waits for sha.
	approve := func(sha string) {
		t.Helper()
		waitFor(t, sb, "the production review of "+sha[:7], func(s *simulator.Simulator) bool {
			_, ok := pending(s, sha)
			return ok
		})
		p, _ := pending(sb.Sim, sha)
		if err := sb.Sim.Approve(repo, p.RunID, p.Environment, "bob", "ok"); err != nil {
			t.Fatal(err)
		}
	}
	good := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Good", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	approve(good.After)
	waitFor(t, sb, "the good commit in production", func(s *simulator.Simulator) bool { return succeededIn(s, repo, good.After, "production") })
	// The next commit waits for its production review: in flight.
	next := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Next", Files: map[string]string{"v": "2"}})
	waitFor(t, sb, "the next commit's production review", func(s *simulator.Simulator) bool {
		_, ok := pending(s, next.After)
		return ok
	})
	settle(t, sb)
	before, _ := histogramIn(t, sb, metrics.LeadTime, repo, "production")

	old := time.Now().Add(-30 * 24 * time.Hour)
	rewritten := sb.Sim.ReplaceHistory(repo, "main",
		simulator.CommitSpec{Message: "Good (rewritten)", Time: old, Files: map[string]string{".github/lastmile.yml": threeEnvs}},
		simulator.CommitSpec{Message: "Next (rewritten)", Time: old, Files: map[string]string{"v": "2"}})
	approve(rewritten.After)
	waitFor(t, sb, "the rewritten history in production", func(s *simulator.Simulator) bool {
		return succeededIn(s, repo, rewritten.After, "production")
	})
	settle(t, sb)
	rel := releaseOf(t, sb, repo, rewritten.After)
	if rel.State != pipeline.ReleaseCompleted || !rel.Baseline || rel.ParentID != 0 {
		t.Errorf("release of the rewritten history: %s, baseline %v, parent %d; want completed, a baseline, no parent", rel.State, rel.Baseline, rel.ParentID)
	}
	if prev := releaseOf(t, sb, repo, next.After); !prev.Withdrawn() {
		t.Errorf("the release in flight on the old history: %s %s (%s); want withdrawn", prev.State, prev.StopKind, prev.StopReason)
	}
	if succeededIn(sb.Sim, repo, next.After, "production") {
		t.Error("the old history's next commit reached production")
	}
	if n, _ := histogramIn(t, sb, metrics.LeadTime, repo, "production"); n-before != 1 {
		t.Errorf("%d lead times observed in production for the rewritten history, want 1 (its head)", n-before)
	}
	list, err := sb.App.DB().ListDeliveries(context.Background(), storageFilterAll())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range list {
		if d.Event == "push" && (d.State != pipeline.DeliveryDone || d.Attempts != 1) {
			t.Errorf("push delivery %s: %s after %d attempts (%s)", d.ID, d.State, d.Attempts, d.LastError)
		}
	}
}

func TestInvalidConfigIsReportedOnTheCommit(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Bad config",
		Files: map[string]string{".github/lastmile.yml": "environments:\n  - name: test\n  - name: test\n"}})
	waitFor(t, sb, "lastmile/config status", func(s *simulator.Simulator) bool {
		return len(s.CommitStatuses(repo, push.After)) > 0
	})
	settle(t, sb)
	st := sb.Sim.CommitStatuses(repo, push.After)[0]
	if st.Context != "lastmile/config" || st.State != "failure" || !strings.Contains(st.Description, "line 3") ||
		!strings.Contains(st.Description, `environment listed twice (first on line 2): "test"`) {
		t.Errorf("commit status: %+v", st)
	}
	if n := len(sb.Sim.Deployments(repo)); n != 0 {
		t.Errorf("%d deployments for an invalid configuration", n)
	}
	if rel := releaseOf(t, sb, repo, push.After); rel.StopKind != pipeline.StopConfigError {
		t.Errorf("release: %+v", rel)
	}
}

// A configuration over 1 MB, which GitHub's contents API refuses (403,
// code too_large), is an invalid configuration said on the commit, not a
// delivery retried until it is dead.
func TestConfigTooLargeIsReportedOnTheCommit(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	big := threeEnvs + "# " + strings.Repeat("x", 1<<20) + "\n"
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Huge config", Files: map[string]string{".github/lastmile.yml": big}})
	waitFor(t, sb, "lastmile/config status", func(s *simulator.Simulator) bool {
		return len(s.CommitStatuses(repo, push.After)) > 0
	})
	settle(t, sb)
	st := sb.Sim.CommitStatuses(repo, push.After)[0]
	if st.Context != "lastmile/config" || st.State != "failure" || !strings.Contains(st.Description, "1 MB") {
		t.Errorf("commit status: %+v", st)
	}
	if n := len(sb.Sim.Deployments(repo)); n != 0 {
		t.Errorf("%d deployments for a configuration GitHub would not return", n)
	}
	list, err := sb.App.DB().ListDeliveries(context.Background(), storageFilterAll())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range list {
		if d.Event == "push" && (d.State != pipeline.DeliveryDone || d.Attempts != 1) {
			t.Errorf("push delivery: %s after %d attempts (%s)", d.State, d.Attempts, d.LastError)
		}
	}
}

func TestNoConfigMeansNotEnrolled(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Hello", Files: map[string]string{"README": "hi"}})
	settle(t, sb)
	if n := len(sb.Sim.Deployments(repo)); n != 0 {
		t.Errorf("%d deployments for a repository without .github/lastmile.yml", n)
	}
	if _, err := sb.App.DB().Audit(context.Background(), repo, push.After); err == nil {
		t.Error("a release was recorded for a repository that is not enrolled")
	}
	list, err := sb.App.DB().ListDeliveries(context.Background(), storageFilterAll())
	if err != nil {
		t.Fatal(err)
	}
	// Recorded as ignored, as the specification says, with why.
	want := "repository not enrolled: no .github/lastmile.yml at " + push.After[:7]
	if len(list) != 1 || list[0].State != pipeline.DeliveryIgnored || list[0].Note != want || list[0].Attempts != 1 {
		t.Errorf("push delivery: %+v; want ignored after one attempt, noted %q", list, want)
	}
}

func TestRequiredContextsPendingThenGreen(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	cfg := "required_contexts: [build, lint]\n" + threeEnvs
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": cfg}})
	sb.Sim.SetCommitStatus(repo, push.After, "build", "pending")
	sb.Sim.SetCommitStatus(repo, push.After, "lint", "pending")
	settle(t, sb)
	if n := len(sb.Sim.Deployments(repo)); n != 0 {
		t.Fatalf("%d deployments while build and lint are pending", n)
	}
	// lint turns green first: GitHub's 409 then lists lint as success and
	// build as pending, and the release keeps waiting.
	sb.Sim.SetCommitStatus(repo, push.After, "lint", "success")
	settle(t, sb)
	if n := len(sb.Sim.Deployments(repo)); n != 0 {
		t.Fatalf("%d deployments while build is pending", n)
	}
	rel := releaseOf(t, sb, repo, push.After)
	if rel.State != pipeline.ReleaseActive {
		t.Fatalf("release while waiting for build: %+v", rel)
	}
	sb.Sim.SetCommitStatus(repo, push.After, "build", "success")
	waitFor(t, sb, "production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, push.After, "production") })
}

// The required status fails: nothing is deployed, and the release waits,
// saying build failed, until the build is re-run green.
func TestRequiredContextFailureWaitsForARerun(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile",
		Files: map[string]string{".github/lastmile.yml": "required_contexts: [build]\n" + threeEnvs}})
	sb.Sim.SetCommitStatus(repo, push.After, "build", "failure")
	settle(t, sb)
	waitingForFailedBuild(t, sb, repo, push.After)
	sb.Sim.SetCommitStatus(repo, push.After, "build", "success") // re-run, green
	waitFor(t, sb, "production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, push.After, "production") })
}

// waitingForFailedBuild checks that the release of sha is active with no
// deployment, its first one waiting and saying that build failed.
func waitingForFailedBuild(t *testing.T, sb *Sandbox, repo, sha string) {
	t.Helper()
	if rel := releaseOf(t, sb, repo, sha); rel.State != pipeline.ReleaseActive {
		t.Errorf("release: %s %s %q, want it active, waiting for build", rel.State, rel.StopKind, rel.StopReason)
	}
	if n := len(deploymentsByEnv(sb, repo, sha)["test"]); n != 0 {
		t.Errorf("test deployments on GitHub: %d, want none while build failed", n)
	}
	code, out, errOut := run(t, sb.Config.Database, "audit", repo, sha)
	if code != 0 || !strings.Contains(out, "build (failure)") {
		t.Errorf("audit (exit %d) does not say the release waits for build, failed:\n%s%s", code, out, errOut)
	}
}

// lastmile is quicker than CI: the push is handled before anything reported
// the required context, and GitHub's 409 does not list it. The release
// waits for it (not reported yet is not failed), and goes ahead once CI
// reports it green.
func TestRequiredContextNotReportedYetWaits(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile",
		Files: map[string]string{".github/lastmile.yml": "required_contexts: [build]\n" + threeEnvs}})
	waitFor(t, sb, "a 409 for build", func(s *simulator.Simulator) bool { return deploymentConflicts(s, repo) > 0 })
	settle(t, sb)
	if rel := releaseOf(t, sb, repo, push.After); rel.State != pipeline.ReleaseActive {
		t.Fatalf("release before CI reported: %s %s %q", rel.State, rel.StopKind, rel.StopReason)
	}
	rec, err := sb.App.DB().Audit(context.Background(), repo, push.After)
	if err != nil {
		t.Fatal(err)
	}
	if d := rec.Environments[0].Deployments; len(d) != 1 || d[0].State != pipeline.DeploymentWaiting ||
		!strings.Contains(d[0].Reason, "build ("+pipeline.NotReported+")") {
		t.Fatalf("test deployment before CI reported: %+v", d)
	}
	sb.Sim.SetCommitStatus(repo, push.After, "build", "pending")
	sb.Sim.SetCommitStatus(repo, push.After, "build", "success")
	waitFor(t, sb, "production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, push.After, "production") })
	settle(t, sb)
	if n := len(deploymentsByEnv(sb, repo, push.After)["test"]); n != 1 {
		t.Errorf("test deployments: %d, want exactly 1", n)
	}
}

// pushWithCheckRun pushes a commit whose CI reports "build" as a check run
// in progress. The push webhook is held until the check run exists, so
// lastmile's first attempt meets it, and the release waits on GitHub's 409.
func pushWithCheckRun(t *testing.T, sb *Sandbox, repo string) simulator.PushResult {
	t.Helper()
	sb.Sim.SetWebhookURL("")
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile",
		Files: map[string]string{".github/lastmile.yml": "required_contexts: [build]\n" + threeEnvs}})
	sb.Sim.SetCheckRun(repo, push.After, "build", "in_progress", "")
	sb.Sim.SetWebhookURL(sb.URL() + "/webhook")
	waitFor(t, sb, "a 409 for build", func(s *simulator.Simulator) bool { return deploymentConflicts(s, repo) > 0 })
	settle(t, sb)
	if n := len(sb.Sim.Deployments(repo)); n != 0 {
		t.Fatalf("%d deployments while build is in progress", n)
	}
	if rel := releaseOf(t, sb, repo, push.After); rel.State != pipeline.ReleaseActive {
		t.Fatalf("release while build is in progress: %s %s %q", rel.State, rel.StopKind, rel.StopReason)
	}
	return push
}

// deploymentConflicts counts the 409s GitHub answered to creating a
// deployment in repo.
func deploymentConflicts(s *simulator.Simulator, repo string) int {
	n := 0
	for _, r := range s.Requests() {
		if r.Method == "POST" && r.Path == "/repos/"+repo+"/deployments" && r.Status == 409 {
			n++
		}
	}
	return n
}

// checkSuiteHandled reports whether lastmile handled (not ignored) a
// check_suite delivery.
func checkSuiteHandled(t *testing.T, sb *Sandbox) bool {
	t.Helper()
	list, err := sb.App.DB().ListDeliveries(context.Background(), storageFilterAll())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range list {
		if d.Event == "check_suite" && d.State == pipeline.DeliveryDone {
			return true
		}
	}
	return false
}

// The required context is a CI App's check run: in progress at push time,
// the first environment's deployment waits (409); the check run succeeds,
// the check_suite completed webhook reaches lastmile and the release goes
// ahead.
func TestRequiredCheckRunInProgressThenGreen(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	push := pushWithCheckRun(t, sb, repo)
	sb.Sim.SetCheckRun(repo, push.After, "build", "completed", "success")
	waitFor(t, sb, "production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, push.After, "production") })
	settle(t, sb)
	if n := len(deploymentsByEnv(sb, repo, push.After)["test"]); n != 1 {
		t.Errorf("test deployments: %d, want exactly 1", n)
	}
	if n := deploymentConflicts(sb.Sim, repo); n < 1 {
		t.Errorf("409s: %d, want at least 1", n)
	}
	if !checkSuiteHandled(t, sb) {
		t.Errorf("no check_suite delivery handled:\n%s", describe(sb))
	}
}

// The required check run fails: nothing is deployed, and the release
// waits, saying build failed, until the check run is re-run green.
func TestRequiredCheckRunFailureWaitsForARerun(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	push := pushWithCheckRun(t, sb, repo)
	sb.Sim.SetCheckRun(repo, push.After, "build", "completed", "failure")
	waitFor(t, sb, "check_suite completed", func(s *simulator.Simulator) bool {
		for _, d := range s.Deliveries() {
			if d.Event == "check_suite" && d.Action == "completed" {
				return true
			}
		}
		return false
	})
	settle(t, sb)
	waitingForFailedBuild(t, sb, repo, push.After)
	if !checkSuiteHandled(t, sb) {
		t.Errorf("no check_suite delivery handled:\n%s", describe(sb))
	}
	sb.Sim.SetCheckRun(repo, push.After, "build", "completed", "success") // re-run, green
	waitFor(t, sb, "production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, push.After, "production") })
}

func TestProtectionRuleApprovesOnlyProvenCommits(t *testing.T) {
	sb := sandbox(t, nil)
	full := "acme/shop"
	inst := sb.Sim.CreateInstallation("acme", "Organization")
	sb.Sim.CreateRepo(inst, full, simulator.RepoOptions{})
	sb.Sim.SetEnvironment(full, "production", simulator.EnvironmentOptions{CustomProtectionRule: true})
	// With a custom protection rule the deploy job cannot use
	// `deployment: false`: Actions creates its own deployment too.
	sb.Sim.SetWorkflow(full, simulator.WorkflowOptions{CreateDeployment: true})
	push := sb.Sim.Push(full, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	waitFor(t, sb, "proven commit in production", func(s *simulator.Simulator) bool { return succeededIn(s, full, push.After, "production") })

	// Someone deploys a commit that never went through staging, and whose
	// own configuration claims production comes first.
	unproven := sb.Sim.PushSilently(full, "hotfix", simulator.CommitSpec{Message: "Hotfix", Files: map[string]string{
		"x": "y", ".github/lastmile.yml": "environments:\n  - name: production\n"}})
	gh := appClient(t, sb, inst)
	_, _, err := gh.Repositories.CreateDeployment(context.Background(), "acme", "shop", &github.DeploymentRequest{
		Ref: github.String(unproven.After), Environment: github.String("production"), AutoMerge: github.Bool(false),
		RequiredContexts: &[]string{},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, sb, "two protection rule answers", func(s *simulator.Simulator) bool { return len(s.ProtectionRuleReviews(full)) == 2 })
	settle(t, sb)
	reviews := sb.Sim.ProtectionRuleReviews(full)
	if reviews[0].State != "approved" || !strings.Contains(reviews[0].Comment, "succeeded in staging") {
		t.Errorf("proven commit: %+v", reviews[0])
	}
	if reviews[1].State != "rejected" || !strings.Contains(reviews[1].Comment, "has not succeeded in staging") {
		t.Errorf("unproven commit: %+v", reviews[1])
	}
	// The twin deployments Actions created are recorded but never counted.
	byEnv := deploymentsByEnv(sb, full, push.After)
	if len(byEnv["production"]) != 2 {
		t.Errorf("production deployments of the release (lastmile's and the job's own): %d", len(byEnv["production"]))
	}
	rec, err := sb.App.DB().Audit(context.Background(), full, push.After)
	if err != nil {
		t.Fatal(err)
	}
	external := 0
	for _, env := range rec.Environments {
		for _, d := range env.Deployments {
			if d.Origin == pipeline.OriginExternal {
				external++
				if d.TwinOf == 0 {
					t.Errorf("Actions' deployment to %s not linked to lastmile's", d.Environment)
				}
			}
		}
	}
	if external != 3 {
		t.Errorf("external deployments recorded: %d, want 3 (one per environment)", external)
	}
}

// appClient is a client authenticated as the App's installation, for a test
// acting outside lastmile.
func appClient(t *testing.T, sb *Sandbox, inst int64) *github.Client {
	t.Helper()
	tr, err := ghinstallation.New(http.DefaultTransport, sb.Sim.AppID(), inst, sb.Sim.AppPrivateKeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	tr.BaseURL = strings.TrimSuffix(sb.Sim.URL(), "/")
	gh := github.NewClient(&http.Client{Transport: tr, Timeout: 10 * time.Second})
	gh.BaseURL, _ = gh.BaseURL.Parse(sb.Sim.URL())
	return gh
}

func TestRateLimitsAndServerErrorsDuringPromotion(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	sb.Sim.InjectFault(simulator.Fault{Kind: simulator.FaultServerError, Method: "GET", Path: "/repos/{o}/{r}/contents/**", Times: 2, Status: 503})
	sb.Sim.InjectFault(simulator.Fault{Kind: simulator.FaultSecondaryRateLimit, Method: "POST", Path: "/repos/{o}/{r}/deployments", Times: 1, RetryAfter: time.Second})
	sb.Sim.InjectFault(simulator.Fault{Kind: simulator.FaultPrimaryRateLimit, Method: "POST", Path: "/repos/{o}/{r}/deployments", Times: 1, Status: 429, Reset: time.Second})
	sb.Sim.InjectFault(simulator.Fault{Kind: simulator.FaultServerError, Method: "POST", Path: "/repos/{o}/{r}/deployments", Times: 1, Status: 500})
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	waitFor(t, sb, "production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, push.After, "production") })
	settle(t, sb)
	if n := sb.Sim.PendingFaults(); n != 0 {
		t.Errorf("%d faults were never hit", n)
	}
	for env, ds := range deploymentsByEnv(sb, repo, push.After) {
		if len(ds) != 1 {
			t.Errorf("%s: %d deployments, want exactly 1", env, len(ds))
		}
	}
}

func TestDeploymentCreatedButAnswerLost(t *testing.T) {
	for _, drop := range []bool{false, true} {
		t.Run(map[bool]string{false: "502", true: "connection dropped"}[drop], func(t *testing.T) {
			sb := sandbox(t, nil)
			repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
			sb.Sim.InjectFault(simulator.Fault{Kind: simulator.FaultAppliedLost, Method: "POST", Path: "/repos/{o}/{r}/deployments", Times: 2, DropConnection: drop})
			push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
			waitFor(t, sb, "production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, push.After, "production") })
			settle(t, sb)
			for env, ds := range deploymentsByEnv(sb, repo, push.After) {
				if len(ds) != 1 {
					t.Errorf("%s: %d deployments, want exactly 1", env, len(ds))
				}
			}
		})
	}
}

func TestMissedPushesAreFilledFromTheCompareAPI(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	first := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Enrol", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	waitFor(t, sb, "first release in production", func(s *simulator.Simulator) bool { return succeededIn(s, repo, first.After, "production") })
	settle(t, sb)
	// Two pushes GitHub never delivered, then one that arrives.
	sb.Sim.PushSilently(repo, "main", simulator.CommitSpec{Message: "Missed one", Files: map[string]string{"a": "1"}})
	sb.Sim.PushSilently(repo, "main", simulator.CommitSpec{Message: "Missed two", Files: map[string]string{"b": "2"}})
	last := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Delivered", Files: map[string]string{"c": "3"}})
	waitFor(t, sb, "last release in production", func(s *simulator.Simulator) bool { return succeededIn(s, repo, last.After, "production") })
	settle(t, sb)
	rec, err := sb.App.DB().Audit(context.Background(), repo, last.After)
	if err != nil {
		t.Fatal(err)
	}
	var titles []string
	for _, c := range rec.Commits {
		titles = append(titles, c.Title)
	}
	if got := strings.Join(titles, ", "); got != "Missed one, Missed two, Delivered" {
		t.Errorf("the release's commits: %s", got)
	}
	if n := sb.Sim.CountRequests("GET", "/repos/{o}/{r}/compare/{basehead}"); n != 1 {
		t.Errorf("compare API called %d times, want once", n)
	}
}

// TestCustomPipelineBranch: a configuration naming `branch: release`.
// lastmile never saw a push to the default branch (it was installed after
// the configuration landed), so the first push to release makes it read the
// configuration on the default branch; from then on, pushes to release are
// releases and pushes to the default branch or feature branches are not.
func TestCustomPipelineBranch(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	sb.Sim.PushSilently(repo, "main", simulator.CommitSpec{Message: "Enrol, deploying from release",
		Files: map[string]string{".github/lastmile.yml": "branch: release\nenvironments:\n  - name: test\n  - name: production\n"}})

	rel := sb.Sim.Push(repo, "release", simulator.CommitSpec{Message: "Ship it", Files: map[string]string{"app.go": "v1"}})
	waitFor(t, sb, "the release branch's commit in production", func(s *simulator.Simulator) bool {
		return succeededIn(s, repo, rel.After, "production")
	})
	main := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Work on main", Files: map[string]string{"app.go": "v2"}})
	feature := sb.Sim.Push(repo, "feature", simulator.CommitSpec{Message: "Try things", Files: map[string]string{"app.go": "v3"}})
	settle(t, sb)

	for sha, what := range map[string]string{main.After: "the default branch", feature.After: "a feature branch"} {
		if n := len(deploymentsByEnv(sb, repo, sha)); n != 0 {
			t.Errorf("a push to %s was deployed to %d environments", what, n)
		}
		if _, err := sb.App.DB().Audit(context.Background(), repo, sha); err == nil {
			t.Errorf("a push to %s became a release", what)
		}
	}
	list, err := sb.App.DB().ListDeliveries(context.Background(), storageFilterAll())
	if err != nil {
		t.Fatal(err)
	}
	notes := map[string]bool{}
	for _, d := range list {
		notes[d.Note] = true
	}
	for _, want := range []string{"push to main, the pipeline branch is release", "push to feature, not the pipeline branch"} {
		if !notes[want] {
			t.Errorf("no delivery noted %q: %v", want, notes)
		}
	}
	// Reading the configuration on main happened once, for the first push
	// to release: the feature branch push cost no call.
	reads := 0
	for _, r := range sb.Sim.Requests() {
		if strings.Contains(r.Path, "/contents/.github/lastmile.yml") && strings.Contains(r.Query, "ref=main") {
			reads++
		}
	}
	if reads != 1 {
		t.Errorf("configuration read on main %d times, want 1", reads)
	}
}

// A bad commit fails in production; main is force-pushed back to the good
// one (lastmile withdraws the bad release), and the rollback waits for a
// staging reviewer. Someone presses "Re-run failed jobs" on the bad
// commit's production run: lastmile made the failed deployment inactive
// when it withdrew the release, and the Action deploys nothing.
func TestRerunOfAWithdrawnReleaseDeploysNothing(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	good := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Good", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	waitFor(t, sb, "good in production", func(s *simulator.Simulator) bool { return succeededIn(s, repo, good.After, "production") })
	settle(t, sb)
	sb.Sim.SetWorkflow(repo, simulator.WorkflowOptions{JobsIf: "lastmile", FailEnvironments: []string{"production"}})
	bad := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Bad", Files: map[string]string{"b.txt": "bad"}})
	waitFor(t, sb, "bad fails in production", func(s *simulator.Simulator) bool {
		d := deploymentsByEnv(sb, repo, bad.After)["production"]
		return len(d) == 1 && d[0].State() == "failure"
	})
	settle(t, sb)
	sb.Sim.SetEnvironment(repo, "staging", simulator.EnvironmentOptions{Reviewers: []string{"alice"}, Review: simulator.Manual()})
	sb.Sim.SetWorkflow(repo, simulator.WorkflowOptions{JobsIf: "lastmile"})
	sb.Sim.ForcePush(repo, "main", good.After)
	waitFor(t, sb, "the rollback waiting for its staging reviewer", func(s *simulator.Simulator) bool { return len(s.PendingReviews(repo)) == 1 })
	settle(t, sb)
	if rel := releaseOf(t, sb, repo, bad.After); rel.StopKind != pipeline.StopSuperseded {
		t.Errorf("the bad release after the force push: %s %s %q, want superseded", rel.State, rel.StopKind, rel.StopReason)
	}

	prod := deploymentsByEnv(sb, repo, bad.After)["production"][0]
	failed := runOf(sb, repo, prod.ID)
	dir := t.TempDir()
	sb.Sim.SetWorkflow(repo, simulator.WorkflowOptions{JobsIf: "lastmile", Deploy: func(ctx context.Context, job simulator.JobContext) error {
		return runAction(ctx, dir, demoCommand, job)
	}})
	if err := sb.Sim.RerunFailedJobs(repo, failed.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, sb, "the re-run ends", func(s *simulator.Simulator) bool {
		r, _ := s.Run(repo, failed.ID)
		return r.Status == "completed"
	})
	settle(t, sb)
	prod = deploymentsByEnv(sb, repo, bad.After)["production"][0]
	var states []string
	for _, st := range prod.Statuses {
		states = append(states, st.State)
	}
	if prod.State() != "inactive" || slices.Contains(states, "success") || slices.Contains(states, "in_progress") && states[len(states)-1] != "inactive" {
		t.Errorf("the re-run of %s, which the force push took off main, in production: statuses %v; want the failure, then inactive, and nothing deployed", bad.After[:7], states)
	}
}

// Release A failed in production; release B's production deploy is running
// when someone presses "Re-run failed jobs" on A's run. The Action deploys
// nothing: B, newer, is on its way there, and A, deployed beside it and
// finishing last, would leave production on the older commit. A's
// release stays stopped, B's completes.
func TestRerunOfAnOlderFailedDeployBesideANewerOne(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{FailEnvironments: []string{"production"}})
	a := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "A", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	waitFor(t, sb, "A fails in production", func(s *simulator.Simulator) bool {
		d := deploymentsByEnv(sb, repo, a.After)["production"]
		return len(d) == 1 && d[0].State() == "failure"
	})
	settle(t, sb)
	aProd := deploymentsByEnv(sb, repo, a.After)["production"][0]
	failed := runOf(sb, repo, aProd.ID)
	// From now on each deploy waits for the test to open its gate, a
	// file named after the commit and environment (for a minute at most).
	dir := t.TempDir()
	gate := func(sha, env string) {
		if err := os.WriteFile(filepath.Join(dir, "go-"+sha+"-"+env), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	command := `n=0; until [ -e "` + dir + `/go-$LASTMILE_SHA-$LASTMILE_ENVIRONMENT" ]; do n=$((n+1)); [ $n -lt 1200 ] || exit 1; sleep 0.05; done; echo deployed`
	sb.Sim.SetWorkflow(repo, simulator.WorkflowOptions{JobsIf: "lastmile", Deploy: func(ctx context.Context, job simulator.JobContext) error {
		return runAction(ctx, dir, command, job)
	}})
	b := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "B", Files: map[string]string{"app.txt": "B"}})
	gate(b.After, "test")
	gate(b.After, "staging")
	waitFor(t, sb, "B deploying to production", func(s *simulator.Simulator) bool {
		d := deploymentsByEnv(sb, repo, b.After)["production"]
		return len(d) == 1 && d[0].State() == "in_progress"
	})

	if err := sb.Sim.RerunFailedJobs(repo, failed.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, sb, "A's re-run ends", func(s *simulator.Simulator) bool {
		r, _ := s.Run(repo, failed.ID)
		return r.Attempt == 2 && r.Status == "completed"
	})
	gate(a.After, "production") // too late to matter, were it deploying
	gate(b.After, "production")
	waitFor(t, sb, "B succeeds in production", func(s *simulator.Simulator) bool { return succeededIn(s, repo, b.After, "production") })
	settle(t, sb)

	var states []string
	for _, st := range deploymentsByEnv(sb, repo, a.After)["production"][0].Statuses {
		states = append(states, st.State)
	}
	if !slices.Equal(states, []string{"queued", "in_progress", "failure"}) {
		t.Errorf("A's deployment to production, re-run beside B's deploy: statuses %v; want its first attempt's alone, nothing deployed again", states)
	}
	if rel := releaseOf(t, sb, repo, a.After); rel.State == pipeline.ReleaseCompleted {
		t.Errorf("release A is %s after its re-run beside B's deploy; want it stopped", rel.State)
	}
	if rel := releaseOf(t, sb, repo, b.After); rel.State != pipeline.ReleaseCompleted {
		t.Errorf("release B is %s, want completed", rel.State)
	}
}

// A rollback to a commit that passed test but failed in staging brings it
// to staging and production for the first time, and its lead time there
// is observed: lastmile compares, once, the environments' last commit
// with the rollback's (GitHub's compare, as the adapter pages it).
func TestRollbackToACommitThatFailedInStagingObservesItsLeadTime(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	good := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Good", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	waitFor(t, sb, "the good commit in production", func(s *simulator.Simulator) bool { return succeededIn(s, repo, good.After, "production") })
	settle(t, sb)
	failedIn := func(sha, env string) func(*simulator.Simulator) bool {
		return func(s *simulator.Simulator) bool {
			for _, d := range s.Deployments(repo) {
				if d.Environment == env && d.SHA == sha && d.State() == "failure" {
					return true
				}
			}
			return false
		}
	}
	sb.Sim.SetWorkflow(repo, simulator.WorkflowOptions{FailEnvironments: []string{"staging"}})
	fix := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Fix", Files: map[string]string{"v": "2"}})
	waitFor(t, sb, "the fix failing in staging", failedIn(fix.After, "staging"))
	broken := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Broken", Files: map[string]string{"v": "3"}})
	waitFor(t, sb, "the broken commit failing in staging", failedIn(broken.After, "staging"))
	settle(t, sb)
	before := map[string]uint64{}
	for _, env := range []string{"test", "staging", "production"} {
		before[env], _ = histogramIn(t, sb, metrics.LeadTime, repo, env)
	}

	sb.Sim.SetWorkflow(repo, simulator.WorkflowOptions{})
	sb.Sim.ResetRequests()
	sb.Sim.ForcePush(repo, "main", fix.After)
	waitFor(t, sb, "the fix in production", func(s *simulator.Simulator) bool { return succeededIn(s, repo, fix.After, "production") })
	settle(t, sb)
	for env, want := range map[string]uint64{"test": 0, "staging": 1, "production": 1} {
		if n, _ := histogramIn(t, sb, metrics.LeadTime, repo, env); n-before[env] != want {
			t.Errorf("%s: %d lead times observed for the rollback, want %d", env, n-before[env], want)
		}
	}
	compares := 0
	for _, r := range sb.Sim.Requests() {
		if strings.Contains(r.Path, "/compare/"+good.After+"..."+fix.After) {
			compares++
		}
	}
	calls := apiCalls(sb.Sim)
	t.Logf("GitHub API calls for the rollback through 3 environments: %v", calls)
	if compares != 1 {
		t.Errorf("compares of the good commit with the fix: %d, want 1 (staging's and production's)", compares)
	}
}

// GitHub fails the staging deployment's creation (502) while the delivery
// that asks for it is handled, with one attempt allowed: the delivery
// waits for GitHub to answer, no attempt counted, and once GitHub is back
// the release goes on with nothing dead.
func TestAnOutageMakesDeliveriesLateNotDead(t *testing.T) {
	sb := sandbox(t, func(c *Config) { c.MaxAttempts = 1 })
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	waitFor(t, sb, "test success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, push.After, "test") })
	sb.Sim.InjectFault(simulator.Fault{Kind: simulator.FaultServerError, Method: "POST", Path: "/repos/{o}/{r}/deployments", Times: 1000, Status: 502})
	ctx := context.Background()
	waiting := func() bool {
		pending, err := sb.App.DB().ListDeliveries(ctx, storage.DeliveryFilter{State: pipeline.DeliveryPending})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range pending {
			if d.Attempts == 0 && strings.Contains(d.LastError, "502") {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(30 * time.Second)
	for !waiting() {
		if time.Now().After(deadline) {
			t.Fatalf("no delivery waits for GitHub to answer:\n%s", describe(sb))
		}
		wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		_ = sb.Sim.WaitFor(wctx, func(*simulator.Simulator) bool { return false })
		cancel()
	}
	sb.Sim.ClearFaults() // GitHub back
	waitFor(t, sb, "production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, push.After, "production") })
	settle(t, sb)
	if dead, err := sb.App.DB().ListDeliveries(ctx, storage.DeliveryFilter{State: pipeline.DeliveryDead}); err != nil || len(dead) != 0 {
		t.Errorf("dead deliveries: %+v, %v; want none", dead, err)
	}
	for env, ds := range deploymentsByEnv(sb, repo, push.After) {
		if len(ds) != 1 {
			t.Errorf("%s: %d deployments, want exactly 1", env, len(ds))
		}
	}
}

// GitHub fails the staging deployment's creation for longer than lastmile
// tries the delivery that asks for it (here one attempt, and no wait for
// GitHub to answer again: the delivery goes dead at once, as one does
// after UnreachableWait). Once GitHub is back, the sweep creates it — the
// release goes on by itself, exactly one deployment per environment — and
// the dead delivery stays dead for the operator to see.
func TestReleaseGoesOnAfterAnOutageOutlastedItsDelivery(t *testing.T) {
	sb := sandbox(t, func(c *Config) {
		c.MaxAttempts = 1
		c.sweepEvery = 200 * time.Millisecond
		c.unreachableFor = time.Nanosecond
	})
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	waitFor(t, sb, "test success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, push.After, "test") })
	// From now on (the test deploy's success on its way), GitHub answers
	// every creation with a 502: the delivery that creates staging's dies.
	sb.Sim.InjectFault(simulator.Fault{Kind: simulator.FaultServerError, Method: "POST", Path: "/repos/{o}/{r}/deployments", Times: 1000, Status: 502})
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Every delivery handled, the one that owed the creation dead: no
		// event will come to carry the release on.
		stats, err := sb.App.DB().InboxStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if stats[pipeline.DeliveryDead] > 0 && stats[pipeline.DeliveryPending] == 0 && sb.Sim.Idle() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deliveries not all handled, or none dead, while GitHub failed the creations: %v\n%s", stats, describe(sb))
		}
		wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		_ = sb.Sim.WaitFor(wctx, func(*simulator.Simulator) bool { return false })
		cancel()
	}
	sb.Sim.ClearFaults() // GitHub back
	waitFor(t, sb, "production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, push.After, "production") })
	settle(t, sb)
	for env, ds := range deploymentsByEnv(sb, repo, push.After) {
		if len(ds) != 1 {
			t.Errorf("%s: %d deployments, want exactly 1", env, len(ds))
		}
	}
	if dead, err := sb.App.DB().ListDeliveries(ctx, storage.DeliveryFilter{State: pipeline.DeliveryDead}); err != nil || len(dead) == 0 {
		t.Errorf("dead deliveries: %d, %v; want those GitHub failed, still dead", len(dead), err)
	}
}
