package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

const zeroSHA = "0000000000000000000000000000000000000000"

// pushBranch moves branch from before to after (zeroSHA: the branch is
// created; deleted: it is removed) and delivers the push at once.
func (h *harness) pushBranch(branch, before, after string, forced, deleted bool) error {
	h.t.Helper()
	h.gh.mu.Lock()
	h.gh.head = after // deleted: zeroSHA, which no compare finds
	h.gh.mu.Unlock()
	now := time.Now()
	return h.engine.HandlePush(context.Background(), pipeline.Push{Repo: shop,
		DeliveryID: "push-" + branch + "-" + before[:4] + "-" + after[:4], Ref: "refs/heads/" + branch,
		Before: before, After: after, Forced: forced, Deleted: deleted, DefaultBranch: "main", Pusher: "octocat",
		PushedAt: now, Commits: []pipeline.Commit{{SHA: after, Title: "commit " + after, Timestamp: now.Add(-time.Hour)}}})
}

// A pipeline branch deleted and created again at an older commit is a
// rollback, as a force push to it is: the release the branch no longer
// holds stops, and the older commit is released again.
func TestBranchDeletedAndCreatedAgainIsARollback(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.gh.config = "branch: release\n" + threeEnvs
	if err := h.pushBranch("release", c0, c1, false, false); err != nil {
		t.Fatal(err)
	}
	h.promote(c1, 10, "test", "staging", "production")
	if err := h.pushBranch("release", c1, c2, false, false); err != nil {
		t.Fatal(err)
	}
	h.promote(c2, 20, "test")
	var ign *pipeline.Ignored
	if err := h.pushBranch("release", c2, zeroSHA, false, true); !errors.As(err, &ign) {
		t.Fatalf("push deleting the branch: %v; want it ignored", err)
	}
	if err := h.pushBranch("release", zeroSHA, c1, false, false); err != nil {
		t.Fatalf("push creating the branch again at c1: %v", err)
	}
	rel, err := h.db.ReleaseOf(context.Background(), shop.ID, c2)
	if err != nil {
		t.Fatal(err)
	}
	if rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopSuperseded ||
		!strings.Contains(rel.StopReason, "the pipeline branch release was deleted") {
		t.Errorf("c2's release: %s %s %q; want it superseded when the branch was deleted", rel.State, rel.StopKind, rel.StopReason)
	}
	if n := h.gh.count(c1, "test"); n != 2 {
		t.Errorf("c1 deployed to test %d times; want 2 (the rollback released again)", n)
	}
	h.status(c2, "staging", pipeline.DeploymentSuccess, 21, true)
	if h.gh.deployment(c2, "production") != nil {
		t.Errorf("c2, no longer on the branch, was deployed to production")
	}
}

// An invalid configuration pushed to the default branch while the
// pipeline branch is another is said on its commit, and is no release: the
// pipeline branch goes on as it was, even after a force push of main.
func TestInvalidConfigOffThePipelineBranch(t *testing.T) {
	for _, forced := range []bool{false, true} {
		t.Run(map[bool]string{false: "push", true: "force push"}[forced], func(t *testing.T) {
			h := newHarness(t, c0, c1, c2)
			valid := "branch: release\n" + threeEnvs
			h.gh.config = valid
			if err := h.pushBranch("release", zeroSHA, c0, false, false); err != nil {
				t.Fatal(err)
			}
			h.promote(c0, 10, "test")
			h.gh.config = "environments: [\n"
			if err := h.pushBranch("main", c2, c1, forced, false); err != nil {
				t.Fatalf("push of an invalid configuration to main: %v", err)
			}
			if rel, err := h.db.ReleaseOf(context.Background(), shop.ID, c1); !errors.Is(err, pipeline.ErrNotFound) {
				t.Errorf("push to main, not the pipeline branch, recorded as a release: %+v, %v", rel, err)
			}
			if rel, err := h.db.ReleaseOf(context.Background(), shop.ID, c0); err != nil || rel.State != pipeline.ReleaseActive {
				t.Fatalf("release of c0 on the pipeline branch: %+v, %v; want it active", rel, err)
			}
			h.gh.config = valid
			if err := h.pushBranch("release", c0, c2, false, false); err != nil {
				t.Fatalf("push of release to c2: %v", err)
			}
			h.promote(c0, 10, "staging")
			if h.gh.deployment(c2, "test") == nil {
				t.Errorf("c2, pushed to the pipeline branch, not deployed to test")
			}
		})
	}
}

// The protection rule lets a commit of the pipeline branch go only where
// its release goes: not backwards, after a newer release succeeded there,
// and not once a newer release superseded it or a force push withdrew it.
// A rollback (a new release of an older commit) is approved.
func TestProtectionRuleNeverApprovesGoingBackwards(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	h.release(c1, c2, 20, "test", "staging", "production")
	dec := h.judge("rule-1", "production", c1, 91) // a re-run of c1's deploy
	if dec.State != pipeline.ProtectionRejected || !strings.Contains(dec.Comment, "would go backwards") {
		t.Errorf("c1 in production after c2 succeeded there: %s %q; want rejected as going backwards", dec.State, dec.Comment)
	}
	if dec := h.judge("rule-2", "production", c2, 92); dec.State != pipeline.ProtectionApproved {
		t.Errorf("c2 in production again (a re-run): %s %q; want approved", dec.State, dec.Comment)
	}

	// c2 passed staging while c1 waited for production: c1 is superseded.
	h1 := newHarness(t, c0, c1, c2)
	h1.release(c0, c1, 10, "test", "staging")
	h1.status(c1, "production", pipeline.DeploymentQueued, 12, true)
	h1.release(c1, c2, 20, "test", "staging")
	dec = h1.judge("rule-5", "production", c1, 95)
	if dec.State != pipeline.ProtectionRejected || !strings.Contains(dec.Comment, "which it supersedes") {
		t.Errorf("c1 in production after c2 superseded it: %s %q; want rejected", dec.State, dec.Comment)
	}

	// c1 force-pushed back: c2's release is no longer on its way.
	h2 := newHarness(t, c0, c1, c2)
	h2.release(c0, c1, 10, "test", "staging", "production")
	h2.release(c1, c2, 20, "test", "staging")
	if err := h2.push(c2, c1, true); err != nil {
		t.Fatal(err)
	}
	dec = h2.judge("rule-3", "production", c2, 93)
	if dec.State != pipeline.ProtectionRejected || !strings.Contains(dec.Comment, "force push") {
		t.Errorf("c2 in production after a force push took it off the branch: %s %q; want rejected", dec.State, dec.Comment)
	}
	// The rollback release of c1 goes through again, although c1's
	// first release reached production long ago.
	h2.promote(c1, 30, "test")
	if dec := h2.judge("rule-4", "staging", c1, 94); dec.State != pipeline.ProtectionApproved {
		t.Errorf("the rollback of c1 in staging: %s %q; want approved", dec.State, dec.Comment)
	}
}

// A commit of the pipeline branch that is not a release's head (c1, which
// one push c0 → c2 brought with c2) is the pipeline branch's all the same:
// the protection rule does not approve it where a release that contains it
// has succeeded (it would go backwards), nor where one has passed the
// environment before (newest wins).
func TestProtectionRuleNeverApprovesACommitInsideAPushGoingBackwards(t *testing.T) {
	for _, c2Reached := range []string{"production", "staging"} {
		t.Run("c2 reached "+c2Reached, func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1, c2)
			if err := h.engine.HandlePush(ctx, pipeline.Push{Repo: shop, DeliveryID: "push-c0-c2", Ref: "refs/heads/main",
				Before: c0, After: c2, DefaultBranch: "main", Pusher: "octocat", PushedAt: time.Now(),
				Commits: []pipeline.Commit{{SHA: c1, Timestamp: time.Now().Add(-2 * time.Hour)}, {SHA: c2, Timestamp: time.Now().Add(-time.Hour)}}}); err != nil {
				t.Fatal(err)
			}
			envs := []string{"test", "staging", "production"}
			h.promote(c2, 10, envs[:slices.Index(envs, c2Reached)+1]...)
			dec := h.judge("rule-c1-test", "test", c1, 70)
			if dec.State != pipeline.ProtectionRejected || !strings.Contains(dec.Comment, "would go backwards") {
				t.Errorf("a job deploying c1 (on main, brought by c2's push) to test after c2 succeeded there: %s %q; want rejected as going backwards",
					dec.State, dec.Comment)
			}
			// c1's jobs deploy it to test and staging all the same (their
			// own deployments, which GitHub Actions created): production?
			jobSucceeds(t, h, c1, "test", 950)
			jobSucceeds(t, h, c1, "staging", 951)
			want := map[string]string{"production": "would go backwards", "staging": "the newest release is the one promoted"}[c2Reached]
			if dec := h.judge("rule-c1-prod", "production", c1, 72); dec.State != pipeline.ProtectionRejected || !strings.Contains(dec.Comment, want) {
				t.Errorf("a job deploying c1 to production after c2 succeeded in %s: %s %q; want rejected (%s)", c2Reached, dec.State, dec.Comment, want)
			}
			// A commit main does not hold (another branch's) is judged by
			// the previous environment alone.
			jobSucceeds(t, h, c3, "test", 960)
			if dec := h.judge("rule-c3-staging", "staging", c3, 73); dec.State != pipeline.ProtectionApproved {
				t.Errorf("a job deploying c3, of another branch, to staging after it succeeded in test: %s %q; want approved", dec.State, dec.Comment)
			}
		})
	}
}

// jobSucceeds delivers a workflow job's own deployment of sha to env
// (GitHub Actions', of run id) and its success.
func jobSucceeds(t *testing.T, h *harness, sha, env string, id int64) {
	t.Helper()
	info := pipeline.DeploymentInfo{GitHubID: id, SHA: sha, Environment: env, Creator: "github-actions[bot]",
		CreatedAt: time.Now(), WorkflowRunID: id}
	if err := h.engine.HandleDeployment(context.Background(), pipeline.NewDeployment{Repo: shop, Deployment: info}); err != nil {
		t.Fatal(err)
	}
	if err := h.engine.HandleDeploymentStatus(context.Background(), pipeline.NewDeploymentStatus{Repo: shop, Deployment: info,
		Status: pipeline.StatusInfo{GitHubID: 10 * id, State: pipeline.DeploymentSuccess, CreatedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
}

// c1's production deploy has begun on GitHub (the Action posted
// in_progress) when c2 passes staging, but lastmile has not heard of it:
// it makes c1's deployment inactive, reads back what GitHub has, and
// waits for that deploy to end before creating c2's production deployment
// — never two deploys at once, and production ends on c2.
func TestSupersedingADeployThatHasBegunWaitsForIt(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging")
	h.status(c1, "production", pipeline.DeploymentQueued, 12, false) // the Action's statuses, their webhooks late
	started := h.status(c1, "production", pipeline.DeploymentInProgress, 12, false)
	h.release(c1, c2, 20, "test", "staging")
	if h.gh.deployment(c2, "production") != nil {
		t.Fatal("c2's production deployment created while c1's production deploy runs")
	}
	if got := h.ledgerState(c1, "production"); got != pipeline.DeploymentInProgress {
		t.Errorf("c1's production deployment in the ledger: %s; want in_progress (it runs, though made inactive)", got)
	}
	// Read back, its statuses name its run, as delivered ones would: a
	// run of another workflow ending meanwhile is not taken for it.
	if d, err := h.db.Deployment(context.Background(), h.gh.deployment(c1, "production").id); err != nil || d.RunID != 12 {
		t.Errorf("c1's production deployment read back: run %d (%v); want run 12, which its statuses name", d.RunID, err)
	}
	h.deliver(c1, "production", started) // the late webhook changes nothing
	if h.gh.deployment(c2, "production") != nil {
		t.Fatal("c2's production deployment created while c1's production deploy runs")
	}
	h.status(c1, "production", pipeline.DeploymentSuccess, 12, true)
	if h.gh.deployment(c2, "production") == nil {
		t.Fatal("c2's production deployment not created once c1's deploy ended")
	}
	if h.gh.finds != 0 {
		t.Errorf("%d lookups of a deployment on GitHub; want none (the intent that waited was never sent)", h.gh.finds)
	}
	rel, err := h.db.ReleaseOf(context.Background(), shop.ID, c1)
	if err != nil || rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopSuperseded {
		t.Errorf("c1's release: %+v, %v; want it superseded all the same", rel, err)
	}
	if got := h.deploymentsCounted()["production/success"]; got != 1 {
		t.Errorf("production successes counted: %v; want 1 (c1's deploy did run)", got)
	}
}

// The same when the in_progress comes after lastmile's inactive (an Action
// that does not check for one), and the Action that does check: it finds
// lastmile's inactive right after its in_progress, deploys nothing and
// writes inactive itself, which ends the hold.
func TestDeployStartedAfterTheInactive(t *testing.T) {
	for _, checks := range []bool{false, true} {
		t.Run(map[bool]string{false: "Action deploys", true: "Action checks and stops"}[checks], func(t *testing.T) {
			h := newHarness(t, c0, c1, c2)
			h.release(c0, c1, 10, "test", "staging")
			h.status(c1, "production", pipeline.DeploymentQueued, 12, true)
			h.release(c1, c2, 20, "test", "staging")
			if h.gh.deployment(c2, "production") == nil {
				t.Fatal("c2's production deployment not created")
			}
			// c2's production deployment is created; c2's deploy waits for
			// reviewers, while c1's job, approved already, starts.
			h.status(c1, "production", pipeline.DeploymentInProgress, 12, true)
			held, err := h.db.HeldBy(context.Background(), shop.ID, "production")
			if err != nil || held == 0 {
				t.Errorf("production held by release %d (%v) after c1's in_progress; want c1's", held, err)
			}
			if checks {
				h.status(c1, "production", pipeline.DeploymentInactive, 12, true)
			} else {
				h.status(c1, "production", pipeline.DeploymentFailure, 12, true)
			}
			if held, err := h.db.HeldBy(context.Background(), shop.ID, "production"); err != nil || held != 0 {
				t.Errorf("production still held by release %d (%v) after c1's deploy ended", held, err)
			}
		})
	}
}

// A deploy that had begun when lastmile made its deployment inactive, and
// whose run ended without reporting (the runner was lost): lastmile
// writes the end itself, and the next release's deployment is created.
func TestSupersededDeployWhoseRunEndsWithoutAnEnd(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging")
	h.status(c1, "production", pipeline.DeploymentQueued, 12, true)
	started := h.status(c1, "production", pipeline.DeploymentInProgress, 12, false)
	// The deploy began before its run ended (a minute ago, below).
	h.gh.backdate(&started, time.Now().Add(-2*time.Minute))
	h.release(c1, c2, 20, "test", "staging")
	if h.gh.deployment(c2, "production") != nil {
		t.Fatal("c2's production deployment created while c1's production deploy runs")
	}
	// The run ended on GitHub before lastmile wrote its inactive; its
	// workflow_run event arrives now.
	err := h.engine.HandleWorkflowRun(context.Background(), pipeline.WorkflowRun{Repo: shop, Action: "completed",
		RunID: 12, Event: "deployment", HeadSHA: c1, Status: "completed", Conclusion: "cancelled",
		UpdatedAt: time.Now().Add(-time.Minute), URL: "https://github.com/acme/shop/actions/runs/12"})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.ledgerState(c1, "production"); got != pipeline.DeploymentError {
		t.Errorf("c1's production deployment after its run ended: %s; want error, written by lastmile", got)
	}
	if h.gh.deployment(c2, "production") == nil {
		t.Error("c2's production deployment not created once c1's run ended")
	}
}

// The branch created again while GitHub still shows it where it was (or
// not at all): lastmile looks again shortly rather than drop the rollback.
func TestBranchCreatedAgainSeenBeforeGitHubCaughtUp(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.gh.config = "branch: release\n" + threeEnvs
	if err := h.pushBranch("release", c0, c1, false, false); err != nil {
		t.Fatal(err)
	}
	if err := h.pushBranch("release", c1, c2, false, false); err != nil {
		t.Fatal(err)
	}
	var ign *pipeline.Ignored
	if err := h.pushBranch("release", c2, zeroSHA, false, true); !errors.As(err, &ign) {
		t.Fatalf("push deleting the branch: %v; want it ignored", err)
	}
	recreate := pipeline.Push{Repo: shop, DeliveryID: "push-recreate", Ref: "refs/heads/release", Before: zeroSHA, After: c1,
		DefaultBranch: "main", Pusher: "octocat", PushedAt: time.Now(), Commits: []pipeline.Commit{{SHA: c1, Title: "commit c1"}}}
	var again *pipeline.LookAgain
	if err := h.engine.HandlePush(context.Background(), recreate); !errors.As(err, &again) { // GitHub still shows c2
		t.Fatalf("the branch created again at c1 while GitHub still shows it at c2: %v; want to look again shortly", err)
	}
	h.gh.mu.Lock()
	h.gh.head = c1 // caught up
	h.gh.mu.Unlock()
	if err := h.engine.HandlePush(context.Background(), recreate); err != nil {
		t.Fatalf("the push creating the branch again, retried: %v", err)
	}
	if n := h.gh.count(c1, "test"); n != 2 {
		t.Errorf("c1 deployed to test %d times; want 2 (the rollback released again)", n)
	}
}

// The read-back after lastmile's inactive fails (GitHub answers 502): the
// inactive is not written again when lastmile tries again, and the next
// release's deployment to the environment waits for the read-back, which
// finds the deploy that had begun.
func TestReadBackAfterTheInactiveFails(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging")
	h.status(c1, "production", pipeline.DeploymentQueued, 12, true)
	h.status(c1, "production", pipeline.DeploymentInProgress, 12, false) // its webhook late
	h.gh.mu.Lock()
	h.gh.failLists = 2
	h.gh.mu.Unlock()
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	h.promote(c2, 20, "test")
	staging := h.gh.deployment(c2, "staging")
	h.gh.mu.Lock()
	success := h.gh.post(staging.id, pipeline.DeploymentSuccess, "https://github.com/acme/shop/actions/runs/21")
	h.gh.mu.Unlock()
	ev := pipeline.NewDeploymentStatus{Repo: shop, Status: success, Deployment: pipeline.DeploymentInfo{GitHubID: staging.id,
		SHA: c2, Environment: "staging", Payload: mustJSON(t, staging.payload)}}
	// Delivered, then retried by the worker: GitHub fails the read-back
	// twice, then answers.
	for i := range 3 {
		err := h.engine.HandleDeploymentStatus(context.Background(), ev)
		if i < 2 && (err == nil || !strings.Contains(err.Error(), "read back the statuses")) {
			t.Fatalf("attempt %d with GitHub failing the read-back: %v; want the read-back's error", i+1, err)
		}
		if i == 2 && err != nil {
			t.Fatalf("attempt 3, GitHub answering: %v", err)
		}
		if i < 2 && h.gh.deployment(c2, "production") != nil {
			t.Fatal("c2's production deployment created before c1's production deployment was read back")
		}
	}
	inactive := 0
	for _, st := range h.gh.deployment(c1, "production").statuses {
		if st.State == pipeline.DeploymentInactive {
			inactive++
		}
	}
	if inactive != 1 {
		t.Errorf("%d inactive statuses on c1's production deployment; want 1 (written once)", inactive)
	}
	if got := h.ledgerState(c1, "production"); got != pipeline.DeploymentInProgress {
		t.Errorf("c1's production deployment once read back: %s; want in_progress (its deploy had begun)", got)
	}
	if h.gh.deployment(c2, "production") != nil {
		t.Error("c2's production deployment created while c1's production deploy runs")
	}
}

// countingRelation counts the compare calls of a fake GitHub.
type countingRelation struct {
	*fakeGitHub
	relations int
}

func (c *countingRelation) Relation(ctx context.Context, r pipeline.Repo, base, head string) (string, error) {
	c.relations++
	return c.fakeGitHub.Relation(ctx, r, base, head)
}

// A protection-rule request that waits (the previous environment's deploy
// runs) costs GitHub no compare: the branch is checked only to approve.
func TestWaitingProtectionRuleComparesNothing(t *testing.T) {
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentInProgress, 10, true)
	cr := &countingRelation{fakeGitHub: h.gh}
	h.engine.GitHub = cr
	if dec := h.judge("rule-1", "staging", c1, 66); dec.State != pipeline.ProtectionWaiting {
		t.Fatalf("decision while test runs: %s %q; want waiting", dec.State, dec.Comment)
	}
	if cr.relations != 0 {
		t.Errorf("%d compares for a request that waits; want 0", cr.relations)
	}
	h.status(c1, "test", pipeline.DeploymentSuccess, 10, true)
	if dec := h.judge("rule-1", "staging", c1, 66); dec.State != pipeline.ProtectionApproved {
		t.Fatalf("decision once test succeeded: %s %q; want approved", dec.State, dec.Comment)
	}
	if cr.relations != 1 {
		t.Errorf("%d compares to approve; want 1", cr.relations)
	}
}

// nthSHA is a commit of its own for n.
func nthSHA(n int) string { return fmt.Sprintf("%04x", 0xa000+n) + strings.Repeat("e", 36) }

// A force push withdraws every release that a failure stopped within the
// re-run window, not only the newest checked at the push: after 22 pushes
// that each failed in test, main is force-pushed back to the first, and a
// re-run of the oldest failed test job, which succeeds, does not carry its
// commit, no longer on the branch, to staging. The same after the
// configuration is removed.
func TestRerunDoesNotReviveAnOldReleaseTakenOffTheBranch(t *testing.T) {
	failing := func(t *testing.T) *harness {
		var hist []string
		for i := 0; i <= 24; i++ {
			hist = append(hist, nthSHA(i))
		}
		h := newHarness(t, hist...)
		h.gh.noConfig = []string{nthSHA(24)}
		h.release(nthSHA(0), nthSHA(1), 10, "test", "staging", "production")
		for i := 2; i <= 23; i++ { // 22 pushes, each failing in test
			if err := h.push(nthSHA(i-1), nthSHA(i), false); err != nil {
				t.Fatal(err)
			}
			h.status(nthSHA(i), "test", pipeline.DeploymentInProgress, int64(100+i), true)
			h.status(nthSHA(i), "test", pipeline.DeploymentFailure, int64(100+i), true)
		}
		return h
	}
	rerun := func(t *testing.T, h *harness, reason string) {
		t.Helper()
		h.status(nthSHA(2), "test", pipeline.DeploymentInProgress, 102, true) // Re-run failed jobs
		h.status(nthSHA(2), "test", pipeline.DeploymentSuccess, 102, true)
		if h.gh.deployment(nthSHA(2), "staging") != nil {
			t.Errorf("commit %s was deployed to staging after a re-run", nthSHA(2)[:9])
		}
		rel, err := h.db.ReleaseOf(context.Background(), shop.ID, nthSHA(2))
		if err != nil {
			t.Fatal(err)
		}
		if rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopSuperseded ||
			!strings.Contains(rel.StopReason, "ended in failure; then superseded: "+reason) {
			t.Errorf("release of %s after the re-run: %s/%s %q; want stopped, superseded (%s), its failure still said",
				nthSHA(2)[:9], rel.State, rel.StopKind, rel.StopReason, reason)
		}
	}
	t.Run("force push", func(t *testing.T) {
		h := failing(t)
		if err := h.push(nthSHA(23), nthSHA(1), true); err != nil { // nthSHA(2…23) leave the branch
			t.Fatal(err)
		}
		rerun(t, h, "main no longer contains "+nthSHA(2)[:7])
	})
	t.Run("configuration removed", func(t *testing.T) {
		h := failing(t)
		_ = h.push(nthSHA(23), nthSHA(24), false) // ignored: the repository leaves
		rerun(t, h, ".github/lastmile.yml was removed")
	})
}

// divergedGitHub is the fake GitHub after a force push lastmile never
// heard of: the commits in gone are no longer on the branch, and compare
// says a comparison from one of them has diverged (c0 is the merge base);
// pairs answers compare for two commits off the branch.
type divergedGitHub struct {
	*fakeGitHub
	gone  map[string]bool
	pairs map[[2]string]string
}

func (g *divergedGitHub) Compare(ctx context.Context, r pipeline.Repo, base, head string) (pipeline.Comparison, error) {
	if st, ok := g.pairs[[2]string{base, head}]; ok {
		return pipeline.Comparison{Status: st}, nil
	}
	if g.gone[base] {
		c, err := g.fakeGitHub.Compare(ctx, r, c0, head)
		c.Status = "diverged"
		return c, err
	}
	return g.fakeGitHub.Compare(ctx, r, base, head)
}

func (g *divergedGitHub) Relation(ctx context.Context, r pipeline.Repo, base, head string) (string, error) {
	c, err := g.Compare(ctx, r, base, head)
	return c.Status, err
}

// A force push whose delivery lastmile missed (GitHub could not deliver
// it, or it went dead and was discarded), then an ordinary push on top of
// it: compare says the new head has diverged from the latest release,
// whose commit the branch no longer holds. That release is stopped as the
// force push would have stopped it, and its staging deployment, approved
// later, does not carry it to production.
func TestMissedForcePushStopsTheReleasesItTookOff(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	g := &divergedGitHub{fakeGitHub: h.gh, gone: map[string]bool{}}
	h.engine.GitHub = g
	h.release(c0, c1, 10, "test")
	h.status(c1, "staging", pipeline.DeploymentQueued, 11, true) // waits for its reviewers
	// main is force-pushed back to c0 (missed), then c3 is pushed on it.
	h.gh.mu.Lock()
	h.gh.history, h.gh.head = []string{c0, c3}, c3
	h.gh.mu.Unlock()
	g.gone[c1] = true
	if err := h.deliverPush(c0, c3, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	rel, err := h.db.ReleaseOf(ctx, shop.ID, c1)
	if err != nil {
		t.Fatal(err)
	}
	if rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopSuperseded || !strings.Contains(rel.StopReason, "does not contain "+c1[:7]) {
		t.Errorf("c1's release, whose commit main no longer holds: %s/%s %q; want stopped, superseded", rel.State, rel.StopKind, rel.StopReason)
	}
	if got := h.ledgerState(c1, "staging"); got != pipeline.DeploymentInactive {
		t.Errorf("c1's staging deployment: %s, want inactive", got)
	}
	h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true) // approved all the same
	h.status(c1, "staging", pipeline.DeploymentSuccess, 11, true)
	if h.gh.deployment(c1, "production") != nil {
		t.Error("c1, no longer on main, was deployed to production")
	}
	if again, err := h.db.ReleaseOf(ctx, shop.ID, c3); err != nil || again.State != pipeline.ReleaseActive || h.gh.deployment(c3, "test") == nil {
		t.Errorf("c3's release: %+v, %v; want active, deploying to test", again, err)
	}
}

// The configuration moves the pipeline from main to release, which does
// not hold main's release on its way: that release stops, and its reason
// says the pipeline branch moved, not that main was rewritten.
func TestPipelineBranchMovedStopsTheReleasesItDoesNotHold(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	g := &divergedGitHub{fakeGitHub: h.gh, gone: map[string]bool{}}
	h.engine.GitHub = g
	h.release(c0, c1, 10, "test")
	h.status(c1, "staging", pipeline.DeploymentQueued, 11, true)
	h.gh.mu.Lock()
	h.gh.config = "branch: release\n" + threeEnvs
	h.gh.mu.Unlock()
	var ignored *pipeline.Ignored
	if err := h.pushBranch("main", c1, c2, false, false); !errors.As(err, &ignored) { // the configuration names release
		t.Fatalf("the push to main that moves the pipeline to release: %v, want it ignored", err)
	}
	h.gh.mu.Lock()
	h.gh.history, h.gh.head = []string{c0, c3}, c3
	h.gh.mu.Unlock()
	g.gone[c1] = true
	if err := h.pushBranch("release", c0, c3, false, false); err != nil {
		t.Fatal(err)
	}
	rel, err := h.db.ReleaseOf(ctx, shop.ID, c1)
	if err != nil {
		t.Fatal(err)
	}
	if rel.State != pipeline.ReleaseStopped || !strings.Contains(rel.StopReason, "the pipeline branch is now release") {
		t.Errorf("main's release once the pipeline is release: %s %q; want stopped, the pipeline branch moved", rel.State, rel.StopReason)
	}
}

// A push made in the same second as a force push that lastmile handled
// already, and delivered after it, compares as diverged from the force
// push's release: it is not taken for a force push lastmile did not hear
// of. The branch no longer points at it, so it is not released, and the
// force push's release goes on.
func TestPushDeliveredAfterTheForcePushThatUndidItWithdrawsNothing(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	g := &divergedGitHub{fakeGitHub: h.gh, gone: map[string]bool{}, pairs: map[[2]string]string{{c3, c2}: "diverged"}}
	h.engine.GitHub = g
	h.release(c0, c1, 10, "test")
	// c2 is pushed on c1, then, in the same second, main is force-pushed
	// to c3, made on c0. The force push is delivered first.
	at := time.Now()
	h.gh.mu.Lock()
	h.gh.history, h.gh.head = []string{c0, c3}, c3
	h.gh.mu.Unlock()
	g.gone[c1], g.gone[c2] = true, true
	if err := h.deliverPush(c2, c3, true, at); err != nil {
		t.Fatal(err)
	}
	var ignored *pipeline.Ignored
	if err := h.deliverPush(c1, c2, false, at); !errors.As(err, &ignored) {
		t.Errorf("the push of c2 delivered after the force push to c3: %v; want ignored", err)
	}
	if h.gh.deployment(c2, "test") != nil {
		t.Error("c2, which the force push undid, was deployed to test")
	}
	if rel, err := h.db.ReleaseOf(ctx, shop.ID, c3); err != nil || rel.State != pipeline.ReleaseActive || h.gh.deployment(c3, "test") == nil {
		t.Errorf("c3's release: %+v, %v; want active, deploying to test", rel, err)
	}
}

// The configuration on main moves the pipeline to the branch release; a
// push to main made before that move, delivered late (out of order, or
// redelivered), is not deployed, and its older configuration does not move
// the pipeline back to main either: release's next push is a release.
func TestLatePushDoesNotMoveThePipelineBranchBack(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2, c3, c4)
	old := time.Now().Add(-time.Minute)
	if err := h.push(c0, c1, false); err != nil { // main, no branch: key
		t.Fatal(err)
	}
	h.gh.config = "branch: release\n" + threeEnvs
	var ign *pipeline.Ignored
	if err := h.pushBranch("main", c1, c2, false, false); !errors.As(err, &ign) {
		t.Fatalf("push to main moving the pipeline: %v", err)
	}
	if err := h.pushBranch("release", c2, c3, false, false); err != nil {
		t.Fatal(err)
	}
	if b, _ := h.db.PipelineBranch(ctx, shop.ID); b != "release" {
		t.Fatalf("pipeline branch %q", b)
	}
	// main's push of c1 again (GitHub redelivered it), with c1's configuration.
	h.gh.config = threeEnvs
	err := h.engine.HandlePush(ctx, pipeline.Push{Repo: shop, DeliveryID: "push-redelivered", Ref: "refs/heads/main",
		Before: c0, After: c1, DefaultBranch: "main", Pusher: "octocat", PushedAt: old,
		Commits: []pipeline.Commit{{SHA: c1, Timestamp: old}}})
	if !errors.As(err, &ign) {
		t.Errorf("the late push of main: %v, want it ignored", err)
	}
	if b, _ := h.db.PipelineBranch(ctx, shop.ID); b != "release" {
		t.Errorf("after a late push to main the pipeline branch is %q, want release", b)
	}
	h.gh.config = "branch: release\n" + threeEnvs
	if err := h.pushBranch("release", c3, c4, false, false); err != nil {
		t.Errorf("release's next push c4: %v; want a release", err)
	}
}

// The pipeline branch is deleted while a release is on its way: nothing
// the branch no longer holds goes on to the next environment, and the
// protection rule refuses it too.
func TestDeletedPipelineBranchStopsItsReleases(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.gh.config = "branch: release\n" + threeEnvs
	if err := h.pushBranch("release", c0, c1, false, false); err != nil {
		t.Fatal(err)
	}
	h.promote(c1, 10, "test")
	var ign *pipeline.Ignored
	if err := h.pushBranch("release", c1, zeroSHA, false, true); !errors.As(err, &ign) {
		t.Fatalf("delete: %v", err)
	}
	rel, err := h.db.ReleaseOf(ctx, shop.ID, c1)
	if err != nil {
		t.Fatal(err)
	}
	if rel.State != pipeline.ReleaseStopped || !strings.Contains(rel.StopReason, "the pipeline branch release was deleted") {
		t.Errorf("c1's release after its branch was deleted: %s %q; want stopped, saying why", rel.State, rel.StopReason)
	}
	h.status(c1, "staging", pipeline.DeploymentSuccess, 11, true)
	if h.gh.deployment(c1, "production") != nil {
		t.Errorf("c1 deployed to production after its branch %q was deleted", "release")
	}
	if dec := h.judge("rule-x", "production", c1, 99); dec.State != "rejected" {
		t.Errorf("the protection rule for c1 in production: %s %q, want rejected", dec.State, dec.Comment)
	}
}

// A deletion of the pipeline branch delivered after the push that created
// it again, holding the release's commit: the release goes on.
func TestLateBranchDeletionKeepsWhatTheBranchHoldsAgain(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.gh.config = "branch: release\n" + threeEnvs
	if err := h.pushBranch("release", c0, c1, false, false); err != nil {
		t.Fatal(err)
	}
	h.promote(c1, 10, "test")
	// GitHub shows release at c1 again; the deletion arrives now.
	err := h.engine.HandlePush(ctx, pipeline.Push{Repo: shop, DeliveryID: "push-late-delete", Ref: "refs/heads/release",
		Before: c1, After: zeroSHA, Deleted: true, DefaultBranch: "main", Pusher: "octocat", PushedAt: time.Now().Add(-time.Minute)})
	var ign *pipeline.Ignored
	if !errors.As(err, &ign) {
		t.Fatalf("late deletion: %v", err)
	}
	rel, err := h.db.ReleaseOf(ctx, shop.ID, c1)
	if err != nil {
		t.Fatal(err)
	}
	if rel.State != pipeline.ReleaseActive {
		t.Errorf("c1's release after a late deletion of a branch that holds it: %s %q; want active", rel.State, rel.StopReason)
	}
	h.status(c1, "staging", pipeline.DeploymentSuccess, 11, true)
	if h.gh.deployment(c1, "production") == nil {
		t.Error("c1 not deployed to production")
	}
}

// GitHub may still show the pipeline branch where a push just deleted it
// (its ref read from a replica that has not caught up): lastmile looks
// again rather than take every release as still held.
func TestBranchDeletionLooksAgainWhileGitHubStillShowsTheBranch(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.gh.config = "branch: release\n" + threeEnvs
	if err := h.pushBranch("release", c0, c1, false, false); err != nil {
		t.Fatal(err)
	}
	h.promote(c1, 10, "test")
	deletion := pipeline.Push{Repo: shop, DeliveryID: "push-delete", Ref: "refs/heads/release",
		Before: c1, After: zeroSHA, Deleted: true, DefaultBranch: "main", Pusher: "octocat", PushedAt: time.Now()}
	var again *pipeline.LookAgain
	if err := h.engine.HandlePush(ctx, deletion); !errors.As(err, &again) {
		t.Fatalf("deletion while GitHub still shows release at c1: %v, want a look again", err)
	}
	if rel, _ := h.db.ReleaseOf(ctx, shop.ID, c1); rel.State != pipeline.ReleaseActive {
		t.Errorf("c1's release after the first look: %s %q, want active until GitHub shows the deletion", rel.State, rel.StopReason)
	}
	h.gh.mu.Lock()
	h.gh.head = zeroSHA // GitHub caught up
	h.gh.mu.Unlock()
	var ign *pipeline.Ignored
	if err := h.engine.HandlePush(ctx, deletion); !errors.As(err, &ign) {
		t.Fatalf("deletion looked at again: %v", err)
	}
	if rel, _ := h.db.ReleaseOf(ctx, shop.ID, c1); rel.State != pipeline.ReleaseStopped {
		t.Errorf("c1's release once GitHub shows the deletion: %s %q, want stopped", rel.State, rel.StopReason)
	}
}

// A deploy's run ends without a result (its runner lost): lastmile writes
// error. Its failed jobs are re-run (the run keeps its ID), and attempt
// 2's deploy has begun, its in_progress not delivered yet, when a rollback
// withdraws the release and lastmile makes the deployment inactive (and
// reads back that the deploy runs). Attempt 1's end, delivered again
// now, is not the end of this deploy: lastmile writes no status, the
// record keeps one failure, and attempt 2's end is the deploy's.
func TestFirstAttemptsEndDeliveredAgainWhileTheReRunDeploys(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	h.release(c1, c2, 20)
	h.status(c2, "test", pipeline.DeploymentQueued, 20, true)
	first := h.status(c2, "test", pipeline.DeploymentInProgress, 20, true)
	h.gh.backdate(&first, time.Now().Add(-3*time.Minute))
	attempt1 := pipeline.WorkflowRun{Repo: shop, Action: "completed", RunID: 20, Event: "deployment", HeadSHA: c2,
		Status: "completed", Conclusion: "cancelled", Attempt: 1, UpdatedAt: time.Now().Add(-2 * time.Minute),
		URL: "https://github.com/acme/shop/actions/runs/20"}
	if err := h.engine.HandleWorkflowRun(ctx, attempt1); err != nil {
		t.Fatal(err)
	}
	if got := h.ledgerState(c2, "test"); got != pipeline.DeploymentError {
		t.Fatalf("c2's test deployment after attempt 1 ended: %s; want error, written by lastmile", got)
	}
	// Re-run failed jobs: attempt 2 deploys (its workflow_run events and
	// its in_progress are not delivered yet).
	rerun := h.status(c2, "test", pipeline.DeploymentInProgress, 20, false)
	if err := h.push(c2, c1, true); err != nil {
		t.Fatal(err)
	}
	if got := h.ledgerState(c2, "test"); got != pipeline.DeploymentInProgress {
		t.Fatalf("c2's test deployment after the rollback: %s; want in_progress (attempt 2 deploys, though made inactive)", got)
	}
	errorsWritten := func() int {
		n := 0
		for _, w := range h.gh.written {
			if w.State == pipeline.DeploymentError || w.State == pipeline.DeploymentFailure {
				n++
			}
		}
		return n
	}
	// Attempt 1's end, delivered again (or late).
	if err := h.engine.HandleWorkflowRun(ctx, attempt1); err != nil {
		t.Fatal(err)
	}
	if n := errorsWritten(); n != 1 {
		t.Errorf("lastmile wrote %d failure or error statuses; want 1 (attempt 1's), not one over attempt 2's deploy", n)
	}
	if got := h.ledgerState(c2, "test"); got != pipeline.DeploymentInProgress {
		t.Errorf("c2's test deployment after attempt 1's end came again: %s; want in_progress (attempt 2 deploys)", got)
	}
	if h.gh.count(c1, "test") != 1 {
		t.Error("the rollback's test deployment created while attempt 2's deploy of c2 runs there")
	}
	// Attempt 2 ends: its result is the deploy's, and the environment is
	// free for the rollback.
	h.deliver(c2, "test", rerun)
	h.status(c2, "test", pipeline.DeploymentSuccess, 20, true)
	h.runCompleted(20, c2, "success")
	if n := errorsWritten(); n != 1 {
		t.Errorf("lastmile wrote %d failure or error statuses in all; want 1", n)
	}
	if h.gh.count(c1, "test") != 2 {
		t.Error("the rollback's test deployment not created once attempt 2's deploy of c2 ended")
	}
}

// The latest release is withdrawn (superseded: the configuration was
// removed, or the pipeline branch deleted), and a new push puts the branch
// back on its very commit: that is a rollback to it, released again and
// deployed, as one to an older commit is; the audit record of the commit
// is the new release's, which no stop reason of the withdrawn one follows.
// The same push handled again finds its release, and another push event
// of the same head makes no second one.
func TestBranchPutBackOnAWithdrawnLatestReleaseReleasesItAgain(t *testing.T) {
	for name, withdraw := range map[string]func(h *harness){
		"configuration removed": func(h *harness) {
			h.gh.noConfig = []string{c2}
			var ign *pipeline.Ignored
			if err := h.pushBranch("main", c1, c2, false, false); !errors.As(err, &ign) {
				h.t.Fatalf("the push removing the configuration: %v; want it ignored", err)
			}
		},
		"branch deleted": func(h *harness) {
			var ign *pipeline.Ignored
			if err := h.pushBranch("main", c1, zeroSHA, false, true); !errors.As(err, &ign) {
				h.t.Fatalf("the push deleting the branch: %v; want it ignored", err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1, c2)
			if err := h.pushBranch("main", c0, c1, false, false); err != nil {
				t.Fatal(err)
			}
			h.promote(c1, 10, "test")
			first, err := h.db.ReleaseOf(ctx, shop.ID, c1)
			if err != nil {
				t.Fatal(err)
			}
			withdraw(h)
			if rel, _ := h.db.ReleaseOf(ctx, shop.ID, c1); rel.StopKind != pipeline.StopSuperseded {
				t.Fatalf("c1's release: %s %s %q; want it superseded", rel.State, rel.StopKind, rel.StopReason)
			}
			// The branch is put back on c1 (a force push, or created again).
			back := pipeline.Push{Repo: shop, DeliveryID: "push-back", Ref: "refs/heads/main", Before: c2, After: c1, Forced: true,
				DefaultBranch: "main", Pusher: "octocat", PushedAt: time.Now()}
			if name == "branch deleted" {
				back.Before, back.Forced = zeroSHA, false
			}
			h.gh.mu.Lock()
			h.gh.head = c1
			h.gh.mu.Unlock()
			if err := h.engine.HandlePush(ctx, back); err != nil {
				t.Fatalf("the push putting main back on c1: %v", err)
			}
			again, err := h.db.ReleaseOf(ctx, shop.ID, c1)
			if err != nil {
				t.Fatal(err)
			}
			if again.ID == first.ID || again.State != pipeline.ReleaseActive || again.StopReason != "" {
				t.Fatalf("c1's release once main is back on it: #%d %s %q; want a new active release (the withdrawn one is #%d)",
					again.ID, again.State, again.StopReason, first.ID)
			}
			if n := h.gh.count(c1, "test"); n != 2 {
				t.Errorf("deployments of c1 to test: %d; want 2 (the release and the one that puts it back)", n)
			}
			rec, err := h.db.Audit(ctx, "acme/shop", c1)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Release.ID != again.ID || rec.Release.StopReason != "" || !slices.Equal(rec.OtherReleases, []int64{first.ID}) {
				t.Errorf("audit of c1: release #%d (%q), others %v; want #%d with no stop reason, [%d]",
					rec.Release.ID, rec.Release.StopReason, rec.OtherReleases, again.ID, first.ID)
			}
			// Handled again (a crash, a redelivery), and another push
			// event of the same head: no further release.
			if err := h.engine.HandlePush(ctx, back); err != nil {
				t.Fatal(err)
			}
			dup := back
			dup.DeliveryID = "push-back-2"
			if err := h.engine.HandlePush(ctx, dup); err != nil {
				t.Fatal(err)
			}
			if got, _ := h.db.ReleaseOf(ctx, shop.ID, c1); got.ID != again.ID {
				t.Errorf("c1's release after its push came again: #%d; want #%d", got.ID, again.ID)
			}
			if n := h.gh.count(c1, "test"); n != 2 {
				t.Errorf("deployments of c1 to test: %d; want 2", n)
			}
			h.promote(c1, 20, "test", "staging", "production")
			if got, _ := h.db.ReleaseOf(ctx, shop.ID, c1); got.State != pipeline.ReleaseCompleted {
				t.Errorf("c1's release: %s; want completed", got.State)
			}
		})
	}
}

// trunkPushFrom delivers a push to trunk, the repository's default branch
// (renamed from main), of after on before.
func trunkPushFrom(h *harness, before, after string) error {
	h.gh.mu.Lock()
	h.gh.head = after
	h.gh.mu.Unlock()
	return h.engine.HandlePush(context.Background(), pipeline.Push{Repo: shop, DeliveryID: "trunk-" + after, Ref: "refs/heads/trunk",
		Before: before, After: after, DefaultBranch: "trunk", Pusher: "octocat", PushedAt: time.Now(),
		Commits: []pipeline.Commit{{SHA: after, Timestamp: time.Now().Add(-time.Minute)}}})
}

// The default branch renamed (main → trunk) while the configuration names
// no branch: the first push to trunk is the pipeline's — removing the
// configuration there takes the repository out of lastmile, as on main;
// an invalid one stops nothing in flight but is recorded as the
// pipeline's release that failed its configuration; a valid one moves the
// pipeline to trunk.
func TestDefaultBranchRenamedPushesAreThePipelines(t *testing.T) {
	t.Run("configuration removed", func(t *testing.T) {
		h := newHarness(t, c0, c1, c2)
		h.mustPush(c0, c1, false)
		h.gh.mu.Lock()
		h.gh.noConfig = []string{c2}
		h.gh.mu.Unlock()
		var ignored *pipeline.Ignored
		if err := trunkPushFrom(h, c1, c2); !errors.As(err, &ignored) || !ignored.NotEnrolled {
			t.Fatalf("the push removing the configuration: %v", err)
		}
		if rel := h.releaseState(shop, c1); rel.State != pipeline.ReleaseStopped || !strings.Contains(rel.StopReason, "left lastmile") {
			t.Errorf("c1: %s %q, want stopped as the repository left lastmile", rel.State, rel.StopReason)
		}
		if envs := h.liveEnvs(); len(envs) != 0 {
			t.Errorf("live environments %v, want none", envs)
		}
	})
	t.Run("configuration invalid", func(t *testing.T) {
		h := newHarness(t, c0, c1, c2)
		h.mustPush(c0, c1, false)
		h.gh.mu.Lock()
		h.gh.config = "environments: []\n"
		h.gh.mu.Unlock()
		if err := trunkPushFrom(h, c1, c2); err != nil {
			var ignored *pipeline.Ignored
			if !errors.As(err, &ignored) {
				t.Fatalf("the push of an invalid configuration: %v", err)
			}
		}
		if rel := h.releaseState(shop, c2); rel.StopKind != pipeline.StopConfigError {
			t.Errorf("c2's release: %s %s %q, want stopped for its configuration", rel.State, rel.StopKind, rel.StopReason)
		}
	})
	t.Run("another branch named since, nothing released on it yet", func(t *testing.T) {
		h := newHarness(t, c0, c1, c2, c3)
		h.mustPush(c0, c1, false)
		h.gh.mu.Lock()
		h.gh.config = "branch: release\n" + threeEnvs
		h.gh.mu.Unlock()
		var ignored *pipeline.Ignored
		if err := h.push(c1, c2, false); !errors.As(err, &ignored) {
			t.Fatalf("the push naming branch release: %v", err)
		}
		h.gh.mu.Lock()
		h.gh.noConfig = []string{c3}
		h.gh.mu.Unlock()
		if err := h.push(c2, c3, false); !errors.As(err, &ignored) {
			t.Fatalf("a push to main without the file: %v", err)
		}
		if envs := h.liveEnvs(); len(envs) != 3 {
			t.Errorf("live environments %v: a push to main, no longer the pipeline's, took the repository out of lastmile", envs)
		}
	})
	t.Run("configuration naming another branch", func(t *testing.T) {
		h := newHarness(t, c0, c1, c2)
		h.gh.mu.Lock()
		h.gh.config = "branch: main\n" + threeEnvs
		h.gh.noConfig = []string{c2}
		h.gh.mu.Unlock()
		h.mustPush(c0, c1, false)
		if err := trunkPushFrom(h, c1, c2); err == nil {
			t.Fatal("a push to the default branch without the configuration was released")
		}
		if rel := h.releaseState(shop, c1); rel.State != pipeline.ReleaseActive {
			t.Errorf("c1: %s %q, want still on its way (the pipeline is main's, named)", rel.State, rel.StopReason)
		}
	})
}

// The default branch renamed main → trunk, the configuration naming no
// branch. A push to trunk with an invalid configuration is recorded as the
// pipeline's release (as the change intends); the next push to trunk
// removes the configuration: the repository must leave lastmile, as the
// first push to trunk removing it would have made it.
func TestDefaultBranchRenamedConfigRemovedAfterAnInvalidOneLeaves(t *testing.T) {
	h := newHarness(t, c0, c1, c2, c3)
	h.mustPush(c0, c1, false)
	h.gh.mu.Lock()
	h.gh.config = "environments: []\n"
	h.gh.mu.Unlock()
	_ = trunkPushFrom(h, c1, c2)
	if rel := h.releaseState(shop, c2); rel.StopKind != pipeline.StopConfigError {
		t.Fatalf("c2: %s %s, want the pipeline's release failing its configuration", rel.State, rel.StopKind)
	}
	h.gh.mu.Lock()
	h.gh.config = threeEnvs
	h.gh.noConfig = []string{c3}
	h.gh.mu.Unlock()
	var ignored *pipeline.Ignored
	if err := trunkPushFrom(h, c2, c3); !errors.As(err, &ignored) || !ignored.NotEnrolled {
		t.Fatalf("the push removing the configuration: %v", err)
	}
	if rel := h.releaseState(shop, c1); rel.State != pipeline.ReleaseStopped || !strings.Contains(rel.StopReason, "left lastmile") {
		t.Errorf("c1: %s %q, want stopped as the repository left lastmile", rel.State, rel.StopReason)
	}
	if envs := h.liveEnvs(); len(envs) != 0 {
		t.Errorf("live environments %v, want none", envs)
	}
}

// Same, a second invalid configuration pushed to trunk: it is the
// pipeline's as the first was, and recorded as a release failing its
// configuration.
func TestDefaultBranchRenamedEachInvalidConfigIsThePipelines(t *testing.T) {
	h := newHarness(t, c0, c1, c2, c3)
	h.mustPush(c0, c1, false)
	h.gh.mu.Lock()
	h.gh.config = "environments: []\n"
	h.gh.mu.Unlock()
	_ = trunkPushFrom(h, c1, c2)
	_ = trunkPushFrom(h, c2, c3)
	rel, err := h.db.ReleaseOf(context.Background(), shop.ID, c3)
	if err != nil || rel.StopKind != pipeline.StopConfigError {
		t.Errorf("c3: %+v %v, want the pipeline's release failing its configuration, as c2's", rel, err)
	}
}

// The configuration on main was invalid when the default branch was
// renamed (the latest release failed its configuration: it keeps none):
// the pipeline still follows the default branch; a push to trunk
// removing the configuration takes the repository out of lastmile.
func TestDefaultBranchRenamedWhileMainsConfigWasInvalid(t *testing.T) {
	h := newHarness(t, c0, c1, c2, c3)
	h.mustPush(c0, c1, false)
	h.gh.mu.Lock()
	h.gh.config = "environments: []\n"
	h.gh.mu.Unlock()
	_ = h.push(c1, c2, false)
	if rel := h.releaseState(shop, c2); rel.StopKind != pipeline.StopConfigError {
		t.Fatalf("c2: %s %s", rel.State, rel.StopKind)
	}
	h.gh.mu.Lock()
	h.gh.config = threeEnvs
	h.gh.noConfig = []string{c3}
	h.gh.mu.Unlock()
	var ignored *pipeline.Ignored
	if err := trunkPushFrom(h, c2, c3); !errors.As(err, &ignored) || !ignored.NotEnrolled {
		t.Fatalf("the push removing the configuration: %v", err)
	}
	if envs := h.liveEnvs(); len(envs) != 0 {
		t.Errorf("live environments %v, want none: the repository left lastmile", envs)
	}
}
