package pipeline_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// Reviews and workflow runs that name no deployment are matched to one by
// commit, environment and time. These are the sequences where a guess went
// wrong (found by randomized scenarios): each time, a deployment the run
// never worked on was ended by it. GitHub's clock steps a second at each
// reading, so that times are in order.

// The superseded first release's job waits for a reviewer; a rollback
// releases the same commit again; the reviewer then rejects the old job.
func TestRejectionOfASupersededRunAfterARollback(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.gh.now = steppingClock()
	if err := h.push(c0, c1, false); err != nil { // R1: c1 → test (D1)
		t.Fatal(err)
	}
	d1 := h.gh.deployment(c1, "test")
	requested := h.gh.time()                      // D1's deploy job waits for the reviewers
	if err := h.push(c1, c2, false); err != nil { // R2 supersedes R1 in test
		t.Fatal(err)
	}
	if err := h.push(c2, c1, true); err != nil { // the rollback: R3 of c1 → test (D3)
		t.Fatal(err)
	}
	d3 := h.gh.deployment(c1, "test")
	if d3.id == d1.id {
		t.Fatal("no new deployment for the rollback")
	}
	if err := h.engine.HandleReview(ctx, pipeline.Review{Repo: shop, DeliveryID: "r1", Action: pipeline.ReviewRejected,
		Environments: []string{"test"}, RunID: 11, HeadSHA: c1, Actor: "bob", Since: requested, At: h.gh.time()}); err != nil {
		t.Fatal(err)
	}
	h.runCompleted(11, c1, "failure")
	got, err := h.db.Deployment(ctx, d3.id)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := h.db.ReleaseOf(ctx, shop.ID, c1)
	if err != nil {
		t.Fatal(err)
	}
	if got.RunID == 11 || len(d3.statuses) > 0 || rel.State != pipeline.ReleaseActive {
		t.Errorf("the rejection of the superseded run ended the rollback's deployment: run %d, GitHub statuses %v, release %s %q",
			got.RunID, d3.statuses, rel.State, rel.StopReason)
	}
}

// The superseded first release's run is cancelled (GitHub's concurrency
// group keeps only the newest pending job) after a rollback released the
// same commit again.
func TestCancelledRunOfASupersededDeploymentAfterARollback(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.gh.now = steppingClock()
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	d1 := h.gh.deployment(c1, "test")
	started := h.gh.time() // D1's run
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	if err := h.push(c2, c1, true); err != nil {
		t.Fatal(err)
	}
	d3 := h.gh.deployment(c1, "test")
	if d3.id == d1.id {
		t.Fatal("no new deployment for the rollback")
	}
	h.runEnds(deployRun(11, started), "cancelled")
	if got, err := h.db.Deployment(ctx, d3.id); err != nil || got.RunID == 11 || len(d3.statuses) > 0 {
		t.Errorf("the cancelled run of the superseded deployment ended the rollback's deployment (%v)", err)
	}
}

// A notifier workflow on the deployment event, started by the test
// deployment, fails after test succeeded and staging's deployment exists.
func TestNotifierRunEndingAfterTheNextStageWasCreated(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.gh.now = steppingClock()
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	notifier := h.gh.time() // started by the test deployment, like the deploy run 11
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
	h.status(c1, "test", pipeline.DeploymentSuccess, 11, true)
	staging := h.gh.deployment(c1, "staging")
	if staging == nil {
		t.Fatal("staging was not deployed")
	}
	if err := h.engine.HandleWorkflowRun(ctx, pipeline.WorkflowRun{Repo: shop, Action: "completed", RunID: 99, Name: "Notify",
		Event: "deployment", HeadSHA: c1, Status: "completed", Conclusion: "failure", CreatedAt: notifier, UpdatedAt: h.gh.time(),
		URL: "https://github.com/acme/shop/actions/runs/99"}); err != nil {
		t.Fatal(err)
	}
	if len(staging.statuses) > 0 {
		t.Errorf("the notifier's failure was written on staging's deployment, created after the notifier's run: %v", staging.statuses)
	}
}

// A reviewer rejects the job of another workflow (on push) that uses the
// same environment for the same commit, while lastmile's deployment there
// is not linked to its run yet.
func TestRejectionOfAnotherWorkflowsJob(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.gh.now = steppingClock()
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	d1 := h.gh.deployment(c1, "test")
	requested := h.gh.time()
	run := pipeline.WorkflowRun{Repo: shop, Action: "in_progress", RunID: 55, Name: "CI", Event: "push", HeadSHA: c1,
		Status: "in_progress", CreatedAt: requested, UpdatedAt: requested, URL: "https://github.com/acme/shop/actions/runs/55"}
	if err := h.engine.HandleWorkflowRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	if err := h.engine.HandleReview(ctx, pipeline.Review{Repo: shop, DeliveryID: "r55", Action: pipeline.ReviewRejected,
		Environments: []string{"test"}, RunID: 55, HeadSHA: c1, Actor: "bob", Since: requested, At: h.gh.time()}); err != nil {
		t.Fatal(err)
	}
	run.Action, run.Status, run.Conclusion, run.UpdatedAt = "completed", "completed", "failure", h.gh.time()
	if err := h.engine.HandleWorkflowRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	if got, err := h.db.Deployment(ctx, d1.id); err != nil || got.RunID == 55 || got.Rejected || len(d1.statuses) > 0 {
		t.Errorf("another workflow's rejected job ended lastmile's deployment (%v)", err)
	}
}

// The end of a run's first attempt (cancelled) is delivered after its
// re-run began deploying again: lastmile writes nothing over the re-run,
// whether attempt 2's start reached it as a workflow_run or only as the
// deployment's in_progress.
func TestAnEarlierAttemptsEndDuringTheRerun(t *testing.T) {
	for _, rerunSeen := range []bool{false, true} {
		ctx := context.Background()
		h := newHarness(t, c0, c1)
		h.gh.now = steppingClock()
		if err := h.push(c0, c1, false); err != nil {
			t.Fatal(err)
		}
		h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
		h.status(c1, "test", pipeline.DeploymentError, 11, false) // attempt 1 cancelled; its webhook comes late
		ended := h.gh.time()
		h.status(c1, "test", pipeline.DeploymentInProgress, 11, true) // "Re-run failed jobs": attempt 2 deploys
		run := pipeline.WorkflowRun{Repo: shop, RunID: 11, Event: "deployment", HeadSHA: c1,
			URL: "https://github.com/acme/shop/actions/runs/11"}
		if rerunSeen {
			again := run
			again.Action, again.Status, again.Attempt, again.UpdatedAt = "requested", "queued", 2, h.gh.time()
			if err := h.engine.HandleWorkflowRun(ctx, again); err != nil {
				t.Fatal(err)
			}
		}
		run.Action, run.Status, run.Conclusion, run.Attempt, run.UpdatedAt = "completed", "completed", "cancelled", 1, ended
		if err := h.engine.HandleWorkflowRun(ctx, run); err != nil {
			t.Fatal(err)
		}
		if len(h.gh.written) > 0 || h.ledgerState(c1, "test") != pipeline.DeploymentInProgress {
			t.Errorf("re-run seen %v: lastmile wrote %+v over the running re-run; ledger %s", rerunSeen, h.gh.written, h.ledgerState(c1, "test"))
		}
	}
}

// The rollback's own deploy run fails before it reported anything: its
// deployment gets the failure; the superseded first deployment of the
// same commit (inactive, never finished) does not make the guess
// ambiguous.
func TestARollbacksOwnRunEndingUnreported(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.gh.now = steppingClock()
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	d1 := h.gh.deployment(c1, "test")
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	if err := h.push(c2, c1, true); err != nil {
		t.Fatal(err)
	}
	d3 := h.gh.deployment(c1, "test")
	if d3.id == d1.id {
		t.Fatal("no new deployment for the rollback")
	}
	started := h.gh.time()
	h.runEnds(deployRun(13, started), "failure")
	got, err := h.db.Deployment(ctx, d3.id)
	if err != nil {
		t.Fatal(err)
	}
	if got.RunID != 13 || len(d3.statuses) == 0 || got.State != pipeline.DeploymentFailure {
		t.Errorf("the rollback's failed run left its deployment without a result: run %d, state %s, GitHub statuses %v",
			got.RunID, got.State, d3.statuses)
	}
}

// A run that ends unreported while another run of the commit is still going
// is judged when that one ends (until then either could be the deploy run).
func TestARunLeftUnjudgedIsJudgedWhenTheOtherEnds(t *testing.T) {
	h, testRun := testDeployedRunGoingOn(t)
	staging := h.gh.deployment(c1, "staging")
	if staging == nil {
		t.Fatal("staging was not deployed")
	}
	// staging's run (no register job: nothing links it) is cancelled
	// before it reported anything, while run 11 is still going.
	h.runEnds(deployRun(12, h.gh.time()), "cancelled")
	if len(staging.statuses) != 0 {
		t.Fatalf("staging's deployment judged while another run of the commit was going: %v", staging.statuses)
	}
	h.runEnds(testRun, "success")
	if n := len(staging.statuses); n == 0 || staging.statuses[n-1].State != pipeline.DeploymentError {
		t.Errorf("staging's deployment after both runs ended: %v, want the error lastmile owes", staging.statuses)
	}
}

// A deployment whose run lastmile wrote an error for is deployed again by a
// re-run, which is cancelled too before it reports: lastmile writes the
// error again (the re-run's in_progress is the deployment's latest status).
func TestAReRunEndingUnreportedAfterLastmilesError(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.gh.now = steppingClock()
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentQueued, 11, true) // links run 11
	run := pipeline.WorkflowRun{Repo: shop, Action: "completed", RunID: 11, Event: "deployment", HeadSHA: c1, Status: "completed",
		Conclusion: "cancelled", Attempt: 1, UpdatedAt: h.gh.time(), URL: "https://github.com/acme/shop/actions/runs/11"}
	if err := h.engine.HandleWorkflowRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	if len(h.gh.written) != 1 {
		t.Fatalf("after the first attempt: lastmile wrote %v, want one error", h.gh.written)
	}
	h.deliver(c1, "test", h.gh.deployment(c1, "test").statuses[1])
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true) // the re-run deploys
	run.Attempt, run.UpdatedAt = 2, h.gh.time()
	if err := h.engine.HandleWorkflowRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	if len(h.gh.written) != 2 || h.gh.written[1].State != pipeline.DeploymentError {
		t.Errorf("after the re-run was cancelled: lastmile wrote %v, want a second error", h.gh.written)
	}
}

// A re-run approved after its first attempt was rejected, whose runner is
// then lost: the run ends without a result, and the failure lastmile
// writes gives this attempt's reason, not the first attempt's rejection.
func TestAnApprovedReRunEndingUnreportedIsNotCalledRejected(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.gh.now = steppingClock()
	h.release(c0, c1, 10, "test")
	h.status(c1, "staging", pipeline.DeploymentQueued, 11, true) // links run 11
	review := func(id string, action pipeline.ReviewAction, actor, comment string) {
		t.Helper()
		if err := h.engine.HandleReview(ctx, pipeline.Review{Repo: shop, DeliveryID: id, Action: action,
			Environments: []string{"staging"}, RunID: 11, HeadSHA: c1, Actor: actor, Comment: comment, At: h.gh.time()}); err != nil {
			t.Fatal(err)
		}
	}
	review("review-1", pipeline.ReviewRejected, "bob", "not today")
	h.runEnds(deployRun(11, h.gh.time()), "failure")
	if len(h.gh.written) != 1 || h.gh.written[0].Description != "rejected by bob: not today" {
		t.Fatalf("after the rejected first attempt: lastmile wrote %+v, want bob's rejection", h.gh.written)
	}
	h.deliver(c1, "staging", h.gh.deployment(c1, "staging").statuses[1]) // the failure lastmile wrote
	// "Re-run failed jobs": alice approves, the deploy starts, the runner
	// is lost.
	review("review-2", pipeline.ReviewApproved, "alice", "")
	h.status(c1, "staging", pipeline.DeploymentQueued, 11, true)
	h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true)
	rerun := deployRun(11, h.gh.time())
	rerun.Attempt = 2
	h.runEnds(rerun, "failure")
	if len(h.gh.written) != 2 {
		t.Fatalf("statuses lastmile wrote: %+v; want 2, one per attempt", h.gh.written)
	}
	if got := h.gh.written[1]; got.State != pipeline.DeploymentFailure || strings.Contains(got.Description, "rejected") {
		t.Errorf("the status lastmile wrote for the approved re-run whose runner was lost: %s %q; want a failure that does not say it was rejected",
			got.State, got.Description)
	}
}

// A run whose judgement waited (another run of the commit was going) and
// that a review linked to its deployment meanwhile is judged when the
// other run ends: its deployment gets the rejection.
func TestAWaitingRunLinkedByAReviewIsJudged(t *testing.T) {
	ctx := context.Background()
	h, testRun := testDeployedRunGoingOn(t)
	staging := h.gh.deployment(c1, "staging")
	if staging == nil {
		t.Fatal("staging was not deployed")
	}
	// staging's job is rejected; the run's end arrives before the review.
	requested := h.gh.time()
	h.runEnds(deployRun(12, requested), "failure")
	if err := h.engine.HandleReview(ctx, pipeline.Review{Repo: shop, DeliveryID: "r12", Action: pipeline.ReviewRejected,
		Environments: []string{"staging"}, RunID: 12, HeadSHA: c1, Actor: "bob", Since: requested, At: h.gh.time()}); err != nil {
		t.Fatal(err)
	}
	h.runEnds(testRun, "success")
	if n := len(staging.statuses); n == 0 || staging.statuses[n-1].State != pipeline.DeploymentFailure {
		t.Errorf("staging's deployment after both runs ended: %v, want the rejection's failure", staging.statuses)
	}
}

// The answer to a deployment's creation is lost, and its run ends (before
// reporting) while lastmile does not know the deployment yet: once the
// deployment event makes it known, the run is judged.
func TestARunEndingBeforeItsDeploymentIsKnown(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.gh.now = steppingClock()
	h.gh.loseNext = true
	if err := h.push(c0, c1, false); err == nil { // the worker would retry it
		t.Fatal("the push succeeded though GitHub's answer to the deployment was lost")
	}
	lost := h.gh.deployment(c1, "test")
	if lost == nil {
		t.Fatal("GitHub did not create the deployment")
	}
	h.runEnds(deployRun(11, h.gh.time()), "cancelled")
	if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: pipeline.DeploymentInfo{
		GitHubID: lost.id, SHA: c1, Environment: "test", Payload: mustJSON(t, lost.payload), CreatedAt: lost.createdAt}}); err != nil {
		t.Fatal(err)
	}
	if n := len(lost.statuses); n == 0 || lost.statuses[n-1].State != pipeline.DeploymentError || h.gh.count(c1, "test") != 1 {
		t.Errorf("the deployment whose run ended before lastmile knew it: %v (%d deployments of c1 to test), want one, with an error",
			lost.statuses, h.gh.count(c1, "test"))
	}
}

// deployRun is a run of the deploy workflow on the deployment event for
// c1, its first attempt, created at created.
func deployRun(id int64, created time.Time) pipeline.WorkflowRun {
	return pipeline.WorkflowRun{Repo: shop, RunID: id, Event: "deployment", HeadSHA: c1, Attempt: 1, CreatedAt: created,
		URL: fmt.Sprintf("https://github.com/acme/shop/actions/runs/%d", id)}
}

// runEnds delivers run's end with conclusion, at GitHub's time now.
func (h *harness) runEnds(run pipeline.WorkflowRun, conclusion string) {
	h.t.Helper()
	run.Action, run.Status, run.Conclusion, run.UpdatedAt = "completed", "completed", conclusion, h.gh.time()
	if err := h.engine.HandleWorkflowRun(context.Background(), run); err != nil {
		h.t.Fatal(err)
	}
}

// testDeployedRunGoingOn pushes c1 and has run 11 deploy it to test with
// success; the run goes on with its last steps (not ended), and staging's
// deployment exists.
func testDeployedRunGoingOn(t *testing.T) (*harness, pipeline.WorkflowRun) {
	h := newHarness(t, c0, c1)
	h.gh.now = steppingClock()
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	run := deployRun(11, h.gh.time())
	run.Action, run.Status, run.UpdatedAt = "in_progress", "in_progress", run.CreatedAt
	if err := h.engine.HandleWorkflowRun(context.Background(), run); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
	h.status(c1, "test", pipeline.DeploymentSuccess, 11, true)
	return h, run
}

// c1's first release waits in production (its deployment not started,
// unlinked); a rollback releases c1 again, and a push supersedes the
// rollback's test deployment. That superseded deployment's run ends
// cancelled: it is no guess for the production deployment made before it.
func TestASupersededDeploymentsRunIsNotTakenForAnOlderOne(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.gh.now = steppingClock()
	h.release(c0, c1, 10, "test", "staging")
	prod := h.gh.deployment(c1, "production")
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	if err := h.push(c2, c1, true); err != nil { // the rollback: c1 released again
		t.Fatal(err)
	}
	rollback := h.gh.deployment(c1, "test")
	started := h.gh.time()                                             // the rollback's test deployment's run
	if err := h.pushBranch("main", c1, c2, false, false); err != nil { // a second push of c2 (its own delivery)
		t.Fatal(err)
	}
	if got, err := h.db.Deployment(ctx, rollback.id); err != nil || got.State != pipeline.DeploymentInactive {
		t.Fatalf("the rollback's test deployment: %+v, %v; want it superseded", got, err)
	}
	h.runEnds(deployRun(21, started), "cancelled")
	if got, err := h.db.Deployment(ctx, prod.id); err != nil || got.RunID == 21 || got.State.Terminal() || len(prod.statuses) > 0 {
		t.Errorf("the superseded deployment's run ended c1's production deployment: %+v, %v, GitHub statuses %v", got, err, prod.statuses)
	}
}

// Another tool creates a deployment of the same commit after lastmile's
// (not yet linked to its run), and the `on: deployment` workflow's run for
// that one fails: the run may be either deployment's, so lastmile writes
// nothing on its own.
func TestRunThatMayBeAnotherToolsDeploymentsEndsNothing(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.gh.now = steppingClock()
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	d1 := h.gh.deployment(c1, "test")
	other := pipeline.DeploymentInfo{GitHubID: 991, SHA: c1, Environment: "preview", Creator: "deploybot", CreatedAt: h.gh.time()}
	if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: other}); err != nil {
		t.Fatal(err)
	}
	h.runEnds(deployRun(66, h.gh.time()), "failure")
	if got, err := h.db.Deployment(ctx, d1.id); err != nil || got.RunID == 66 || len(d1.statuses) > 0 {
		t.Errorf("the failed run, which may be deploybot's deployment's, ended lastmile's deployment (%v)", err)
	}
}

// A notifier run on the deployment event that starts and ends within one
// second (its jobs skipped), its in_progress delivered after its end: the
// run stays completed (GitHub's updated_at has whole seconds, the state
// further on stands), so that a cancelled deploy run of the commit is
// judged at once rather than left for the notifier's end, which has come.
func TestASameSecondInProgressAfterTheEndLeavesTheRunEnded(t *testing.T) {
	for _, outOfOrder := range []bool{false, true} {
		t.Run(fmt.Sprint("outOfOrder=", outOfOrder), func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1)
			if err := h.push(c0, c1, false); err != nil {
				t.Fatal(err)
			}
			at := time.Now().Add(time.Second).Truncate(time.Second)
			notifier := func(action string) pipeline.WorkflowRun {
				r := pipeline.WorkflowRun{Repo: shop, Action: action, RunID: 12, Event: "deployment", HeadSHA: c1,
					Status: action, Attempt: 1, CreatedAt: at, UpdatedAt: at, URL: "https://github.com/acme/shop/actions/runs/12"}
				if action == "completed" {
					r.Conclusion = "success"
				}
				return r
			}
			order := []string{"in_progress", "completed"}
			if outOfOrder {
				order = []string{"completed", "in_progress"}
			}
			for _, a := range order {
				if err := h.engine.HandleWorkflowRun(ctx, notifier(a)); err != nil {
					t.Fatal(err)
				}
			}
			if err := h.engine.HandleWorkflowRun(ctx, pipeline.WorkflowRun{Repo: shop, Action: "completed", RunID: 11,
				Event: "deployment", HeadSHA: c1, Status: "completed", Conclusion: "cancelled", Attempt: 1,
				CreatedAt: at, UpdatedAt: at.Add(time.Minute), URL: "https://github.com/acme/shop/actions/runs/11"}); err != nil {
				t.Fatal(err)
			}
			if len(h.gh.written) != 1 || h.gh.written[0].State != pipeline.DeploymentError {
				t.Errorf("statuses lastmile wrote: %+v; want the error the cancelled deploy run owes", h.gh.written)
			}
		})
	}
}

// ghRun is a run on the deployment event for sha as GitHub has it now:
// status, and conclusion once completed.
func ghRun(id int64, sha, status, conclusion string) pipeline.WorkflowRun {
	return pipeline.WorkflowRun{Repo: shop, RunID: id, Event: "deployment", HeadSHA: sha, Status: status,
		Conclusion: conclusion, Attempt: 1, URL: fmt.Sprintf("https://github.com/acme/shop/actions/runs/%d", id)}
}

// A failing notifier's end is delivered before any event of the deploy run
// of the same deployment event (GitHub does not promise the order of
// deliveries): lastmile has recorded no other run of the commit, but GitHub
// has the deploy run, in progress. The notifier is not taken for the
// deploy run; it is judged when the deploy run ends, which is then the run
// whose end without a report lastmile writes.
func TestReviewNotifierEndDeliveredBeforeTheDeployRunsFirstEvent(t *testing.T) {
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.gh.setRun(ghRun(11, c1, "in_progress", "")) // the deploy run
	h.gh.setRun(ghRun(12, c1, "completed", "failure"))
	h.runCompleted(12, c1, "failure") // the notifier; run 11 not heard of yet
	if len(h.gh.written) != 0 {
		t.Errorf("lastmile wrote %+v on the deployment when a notifier failed before the deploy run was heard of", h.gh.written)
	}
	h.runStarted(11, c1)
	if rel, _ := h.db.ReleaseOf(context.Background(), shop.ID, c1); rel.State != pipeline.ReleaseActive {
		t.Errorf("release of c1: %s (%s), want it still active: its deploy run has only started", rel.State, rel.StopReason)
	}
	if st := h.ledgerState(c1, "test"); st.Terminal() {
		t.Errorf("deployment of c1 to test: %s, want it unfinished while its deploy run goes on", st)
	}
	// The deploy run fails before reporting: its end is what lastmile
	// writes, once, and the notifier judged with it adds nothing.
	h.gh.setRun(ghRun(11, c1, "completed", "failure"))
	h.runCompleted(11, c1, "failure")
	if len(h.gh.written) != 1 || h.gh.written[0].State != pipeline.DeploymentFailure ||
		!strings.Contains(h.gh.written[0].Description, "runs/11 ") {
		t.Errorf("lastmile wrote %+v when the deploy run failed without a report, want one failure, for run 11", h.gh.written)
	}
}

// The same, with the deploy run still queued on GitHub (its jobs waiting
// for a runner) when the notifier's end comes: the deploy run then reports
// success and ends, and the notifier, judged at that end, writes nothing
// (on test's deployment, finished, nor on staging's, made after it began).
func TestFailingNotifierBeforeAQueuedDeployRunReports(t *testing.T) {
	h := newHarness(t, c0, c1)
	h.gh.now = steppingClock()
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	created := h.gh.time()
	deploy, notifier := deployRun(11, created), deployRun(12, created)
	deploy.Status = "queued"
	h.gh.setRun(deploy)
	notifier.Status, notifier.Conclusion = "completed", "failure"
	h.gh.setRun(notifier)
	h.runEnds(notifier, "failure")
	if len(h.gh.written) != 0 {
		t.Fatalf("lastmile wrote %+v when a notifier failed while the deploy run was queued", h.gh.written)
	}
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
	h.status(c1, "test", pipeline.DeploymentSuccess, 11, true)
	deploy.Status, deploy.Conclusion = "completed", "success"
	h.gh.setRun(deploy)
	h.runEnds(deploy, "success")
	if len(h.gh.written) != 0 {
		t.Errorf("lastmile wrote %+v after the deploy run reported success", h.gh.written)
	}
	if st := h.ledgerState(c1, "test"); st != pipeline.DeploymentSuccess {
		t.Errorf("deployment of c1 to test: %s, want success", st)
	}
	if st := h.ledgerState(c1, "staging"); st.Terminal() {
		t.Errorf("deployment of c1 to staging: %s, want it unfinished", st)
	}
}

// A run on the deployment event fails without a report and GitHub has no
// other run of the commit going (the others on its event ended, or there
// are none): it was the deploy run, and lastmile writes the failure it
// owes at its end, having asked GitHub once.
func TestFailingRunWithNoOtherRunGoingOnGitHubIsJudged(t *testing.T) {
	for name, others := range map[string][]pipeline.WorkflowRun{
		"alone":           nil,
		"notifier ended":  {ghRun(12, c1, "completed", "success")},
		"other commit's":  {ghRun(13, c0, "in_progress", "")},
		"re-run attempts": {ghRun(11, c1, "completed", "failure")},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, c0, c1)
			if err := h.push(c0, c1, false); err != nil {
				t.Fatal(err)
			}
			for _, r := range others {
				h.gh.setRun(r)
			}
			h.gh.setRun(ghRun(11, c1, "completed", "failure"))
			h.runCompleted(11, c1, "failure")
			if len(h.gh.written) != 1 || h.gh.written[0].State != pipeline.DeploymentFailure {
				t.Errorf("lastmile wrote %+v, want the failure run 11 owes", h.gh.written)
			}
			if h.gh.runLists != 1 {
				t.Errorf("GitHub asked for the commit's runs %d times, want once", h.gh.runLists)
			}
		})
	}
}

// GitHub fails to list the commit's runs: lastmile writes nothing on its
// guess and the delivery fails, to be tried again; the next attempt, with
// GitHub's answer, writes the failure.
func TestFailingGuessedRunWhenGitHubDoesNotListTheRuns(t *testing.T) {
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.gh.setRun(ghRun(11, c1, "completed", "failure"))
	h.gh.failRunLists = 1
	run := ghRun(11, c1, "completed", "failure")
	run.Action, run.UpdatedAt = "completed", time.Now()
	if err := h.engine.HandleWorkflowRun(context.Background(), run); err == nil || !strings.Contains(err.Error(), "502") {
		t.Errorf("the run's end when GitHub did not list the runs: %v, want GitHub's error", err)
	}
	if len(h.gh.written) != 0 {
		t.Fatalf("lastmile wrote %+v on a guess GitHub was not asked about", h.gh.written)
	}
	if err := h.engine.HandleWorkflowRun(context.Background(), run); err != nil {
		t.Fatal(err)
	}
	if len(h.gh.written) != 1 || h.gh.written[0].State != pipeline.DeploymentFailure {
		t.Errorf("lastmile wrote %+v at the delivery's next attempt, want the failure run 11 owes", h.gh.written)
	}
}

// The happy path does not ask GitHub for a commit's runs: a run that
// reported, a notifier that ended well, a run linked to its deployment.
func TestRunsAreListedOnlyForAFailingGuess(t *testing.T) {
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.runStarted(11, c1)
	h.runCompleted(12, c1, "success") // a notifier
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
	h.status(c1, "test", pipeline.DeploymentSuccess, 11, true)
	h.runCompleted(11, c1, "success")
	h.status(c1, "staging", pipeline.DeploymentInProgress, 21, true)
	h.runCompleted(21, c1, "failure") // linked by its in_progress
	if len(h.gh.written) != 1 || h.gh.written[0].State != pipeline.DeploymentFailure {
		t.Errorf("lastmile wrote %+v, want the failure run 21 owes staging", h.gh.written)
	}
	if h.gh.runLists != 0 {
		t.Errorf("GitHub asked for the commit's runs %d times, want never", h.gh.runLists)
	}
}

// JobIDFromURL reads the job a status's log_url names: the job's page in
// its run (the Action's), or the check run the job is (Actions' own
// statuses, as GitHub's published deployment_status example has it) —
// and nothing else, a run's page of a repository named actions included.
func TestJobIDFromURL(t *testing.T) {
	for u, want := range map[string]int64{
		"https://github.com/acme/shop/actions/runs/42/job/4687056418":                 4687056418,
		"https://github.com/acme/shop/actions/runs/42/job/4687056418?pr=7":            4687056418,
		"https://github.com/acme/shop/actions/runs/42/job/4687056418/":                4687056418,
		"https://github.com/CorsixTH/CorsixTH/runs/4687056418?check_suite_focus=true": 4687056418,
		"https://github.com/acme/shop/runs/4687056418":                                4687056418,
		"https://ghes.example.com/acme/shop/runs/77#step:3:1":                         77,
		"https://github.com/acme/shop/actions/runs/42":                                0,
		"https://github.com/acme/shop/actions/runs/42/attempts/2":                     0,
		"https://github.com/acme/actions/runs/42":                                     42, // acme/actions's check run 42
		"https://github.com/acme/shop/actions/runs/42/job/":                           0,
		"https://github.com/acme/shop/actions/runs/x/job/5":                           0,
		"https://github.com/acme/shop/runs/-5":                                        0,
		"https://github.com/acme/shop/runs/99999999999999999999":                      0,
		"https://github.com/runs/5":                                                   0,
		"https://example.com/deploys/acme/shop/runs/5":                                0,
		"":          0,
		"not a url": 0,
	} {
		if got := pipeline.JobIDFromURL(u); got != want {
			t.Errorf("JobIDFromURL(%q) = %d, want %d", u, got, want)
		}
	}
}
