package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// c2 failed in staging and its failed job is being re-run (in progress,
// holding staging) when main is force-pushed back to c1. The withdrawal
// must not let c1's rollback deploy to staging while c2's re-run deploys
// there.
func TestWithdrawalDuringARerunKeepsTheHold(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	h.release(c1, c2, 20, "test")
	h.status(c2, "staging", pipeline.DeploymentInProgress, 21, true)
	h.status(c2, "staging", pipeline.DeploymentFailure, 21, true)
	h.status(c2, "staging", pipeline.DeploymentInProgress, 21, true) // Re-run failed jobs: runs now
	if held, _ := h.db.HeldBy(ctx, shop.ID, "staging"); held == 0 {
		t.Fatal("precondition: the re-run should hold staging")
	}
	if err := h.push(c2, c1, true); err != nil { // rollback to c1
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentSuccess, 30, true) // the rollback passes test
	held, _ := h.db.HeldBy(ctx, shop.ID, "staging")
	if n := h.gh.count(c1, "staging"); n != 1 {
		t.Errorf("rollback of c1 deployed to staging (%d deployments of c1 there, held by %d) while c2's re-run still deploys there; lastmile wrote %+v",
			n, held, h.gh.written)
	}
}

// main's configuration moves the pipeline to the branch release at c2, and
// c3 is pushed to main right after (GitHub's main is at c3 when lastmile
// handles c2's push). Neither c2 nor c3 names main as the pipeline branch:
// neither must be deployed from main.
func TestPushMovingThePipelineAwayIsNoReleaseWhenMainMovedOn(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2, c3)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.gh.mu.Lock()
	h.gh.config = "branch: release\n" + threeEnvs
	h.gh.head = c3 // c3 pushed to main right after c2
	h.gh.mu.Unlock()
	errC2 := h.deliverPush(c1, c2, false, time.Now())
	errC3 := h.deliverPush(c2, c3, false, time.Now())
	b, _ := h.db.PipelineBranch(ctx, shop.ID)
	t.Logf("c2: %v; c3: %v; branch %q", errC2, errC3, b)
	if rel, err := h.db.ReleaseOf(ctx, shop.ID, c2); err == nil {
		t.Errorf("c2's push to main, whose configuration names the branch release, made release #%d (%s), deployed to test: %v; pushes: %v / %v; pipeline branch now %q",
			rel.ID, rel.State, h.gh.deployment(c2, "test") != nil, errC2, errC3, b)
		h.promote(c2, 40, "test", "staging")
		if h.gh.deployment(c2, "production") != nil {
			t.Errorf("c2, a commit of main, reached production after the pipeline moved to release")
		}
	}
}

// The App is uninstalled from acme (installation 7) and installed again
// (installation 8); lastmile hears of the uninstallation only after a push
// of the new installation (GitHub does not promise the order; a missed
// delivery is asked for again later). GitHub's event lists shop, which
// lastmile now reaches through installation 8: it must not leave lastmile.
func TestLateUninstallOfAnOldInstallationKeepsTheReinstalledRepo(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	reinstalled := shop
	reinstalled.InstallationID = 8
	h.installationEvent(pipeline.InstallationEvent{InstallationID: 8, Action: pipeline.InstallationCreated, Repos: []pipeline.Repo{reinstalled}})
	h.gh.mu.Lock()
	h.gh.head = c2
	h.gh.mu.Unlock()
	if err := h.pushTo(reinstalled, c1, c2); err != nil {
		t.Fatal(err)
	}
	// installation 7's deletion, delivered late, listing shop.
	h.installationEvent(pipeline.InstallationEvent{InstallationID: 7, Action: pipeline.InstallationDeleted, Sender: "octocat",
		Repos: []pipeline.Repo{shop}})
	if rel := h.releaseState(shop, c2); rel.State != pipeline.ReleaseActive {
		t.Errorf("c2's release, pushed through installation 8, after installation 7's late deletion: %s %q; want active", rel.State, rel.StopReason)
	}
	if envs := h.liveEnvs(); len(envs) != 3 {
		t.Errorf("live environments %v; want shop's three", envs)
	}
	h.gh.mu.Lock()
	written := len(h.gh.written)
	h.gh.mu.Unlock()
	if st := h.ledgerState(c2, "test"); st == pipeline.DeploymentInactive && written == 0 {
		t.Errorf("c2's test deployment is inactive in the ledger but nothing was written on GitHub: its workflow still deploys it")
	}
}

// suspendedLogs is the fake GitHub with shop's installation suspended:
// its job logs are refused, and counted.
type suspendedLogs struct {
	*fakeGitHub
	asked *int
}

func (s suspendedLogs) JobLog(ctx context.Context, r pipeline.Repo, job int64, max int) ([]byte, bool, error) {
	if r.ID == shop.ID {
		*s.asked++
		return nil, false, errors.New("installation token for installation 7: GitHub answered 403 Forbidden: This installation has been suspended")
	}
	return s.fakeGitHub.JobLog(ctx, r, job, max)
}

// shop's installation is suspended; api's (another account's) is not. The
// sweep's look for missing deploy logs must still keep api's.
func TestSuspendedInstallationDoesNotBlockOthersMissingLogs(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	other := pipeline.Repo{ID: 44, Owner: "other", Name: "web", InstallationID: 9}
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	if err := h.pushTo(other, c0, c1); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, d := range h.gh.deps {
		rec, err := h.db.Deployment(ctx, d.id)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	if len(ids) != 2 {
		t.Fatalf("deployments %d", len(ids))
	}
	for i, repo := range []pipeline.Repo{shop, other} {
		if err := h.db.SaveMissingJobLog(ctx, ids[i], pipeline.WorkflowJob{Repo: repo, JobID: int64(100 + i), Name: "deploy"}, []byte("none")); err != nil {
			t.Fatal(err)
		}
	}
	h.gh.logs = map[int64]string{101: "web's log"}
	asked := 0
	h.engine.GitHub = suspendedLogs{h.gh, &asked}
	n, err := h.engine.FetchMissingJobLogs(ctx)
	if log, _ := h.db.JobLog(ctx, 101); string(log) != "web's log" || asked != 1 {
		t.Errorf("FetchMissingJobLogs: %d kept, %v, shop's asked for %d times; other/web's log %q not kept while shop's installation is suspended",
			n, err, asked, log)
	}
	// Once lastmile has heard of the suspension, GitHub is not asked.
	if _, err := h.db.SetInstallation(ctx, pipeline.InstallationState{ID: 7, State: pipeline.InstallationSuspended}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.engine.FetchMissingJobLogs(ctx); err != nil || asked != 1 {
		t.Errorf("FetchMissingJobLogs of a suspended installation: %v, shop's asked for %d times in all, want 1", err, asked)
	}
	if failed, err := h.engine.AdvanceReleased(ctx, []pipeline.Repo{shop}); err != nil || len(failed) != 1 {
		t.Errorf("AdvanceReleased of a suspended installation's repository: %v, %v; want it kept for later, no error", failed, err)
	}
}

// A withdrawn release whose staging deployment failed: lastmile made that
// deployment inactive (so that a re-run deploys nothing), and the audit
// record and the history still show that staging failed.
func TestWithdrawnFailureStillShowsAsFailed(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	h.release(c1, c2, 20, "test")
	h.status(c2, "staging", pipeline.DeploymentFailure, 21, true)
	if err := h.push(c2, c1, true); err != nil { // the rollback withdraws c2
		t.Fatal(err)
	}
	rec, err := h.db.Audit(ctx, shop.FullName(), c2)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range rec.Environments {
		if e.Name == "staging" && e.Outcome != pipeline.DeploymentFailure {
			t.Errorf("c2's staging in the audit record: %s, want failure", e.Outcome)
		}
	}
	hist, err := h.db.History(ctx, storage.HistoryFilter{Repository: shop.FullName()})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range hist {
		if e.Release.SHA != c2 {
			continue
		}
		for _, st := range e.Stages {
			if st.Environment == "staging" && st.State != pipeline.DeploymentFailure {
				t.Errorf("c2's staging in the history: %s, want failure", st.State)
			}
		}
	}
}

// A protection-rule request waits for the deployment to the environment
// before to end; that deployment never reports its end (its run lost):
// after pipeline.HoldRunning the sweep judges the request again, and the
// commit, not proven, is rejected — the job does not wait for good.
func TestProtectionRuleWaitForALostDeployIsBounded(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	started := time.Now()
	var mu sync.Mutex
	now := started
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h.engine.Now, h.db.Now = clock, clock
	h.release(c0, c1, 10, "test")
	h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true) // and nothing more, ever
	if dec := h.judge("rule-1", "production", c1, 40); dec.State != pipeline.ProtectionWaiting {
		t.Fatalf("production job of c1 while staging deploys: %s (%s); want waiting", dec.State, dec.Comment)
	}
	set := func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
	set(started.Add(pipeline.HoldRunning - time.Minute))
	if n, err := h.engine.AnswerLongWaitingProtectionRules(ctx); err != nil || n != 0 {
		t.Errorf("before the hold ends: %d judged again, %v; want none", n, err)
	}
	set(started.Add(pipeline.HoldRunning + time.Minute))
	if n, err := h.engine.AnswerLongWaitingProtectionRules(ctx); err != nil || n != 1 {
		t.Errorf("after the hold ended: %d judged again, %v; want 1", n, err)
	}
	dec, err := h.db.ProtectionDecision(ctx, pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: "rule-1"})
	if err != nil || dec.State != pipeline.ProtectionRejected || !dec.Posted || !strings.Contains(dec.Comment, "has not succeeded in staging") {
		t.Errorf("the request after the hold ended: %+v, %v; want rejected, posted, saying staging", dec, err)
	}
	if n, err := h.engine.AnswerLongWaitingProtectionRules(ctx); err != nil || n != 0 {
		t.Errorf("once answered: %d judged again, %v; want none", n, err)
	}
}

// flakyLogs is the fake GitHub failing its next failLogs requests for a
// job log, as GitHub does now and then (a 502).
// flakyLogs fails its next failLogs log downloads with failure.
type flakyLogs struct {
	*fakeGitHub
	failLogs int
	failure  error
}

func (f *flakyLogs) JobLog(ctx context.Context, r pipeline.Repo, jobID int64, max int) ([]byte, bool, error) {
	if f.failLogs > 0 {
		f.failLogs--
		return nil, false, f.failure
	}
	return f.fakeGitHub.JobLog(ctx, r, jobID, max)
}

// jobEndedThenSuccess has c1's deploy job in env (job 77 of run 30)
// complete before any status names it, GitHub not keeping webhooks in
// order, then posts the deployment's success naming the job, and returns
// that status's event, to hand to the engine.
func jobEndedThenSuccess(t *testing.T, h *harness, env string) pipeline.NewDeploymentStatus {
	t.Helper()
	d := h.gh.deployment(c1, env)
	if d == nil {
		t.Fatalf("c1 was not deployed to %s", env)
	}
	start := time.Now().Add(-time.Minute).Truncate(time.Second)
	h.jobCompleted(30, 77, "deploy", c1, start, start.Add(50*time.Second))
	h.gh.mu.Lock()
	st := h.gh.post(d.id, pipeline.DeploymentSuccess, "https://github.com/acme/shop/actions/runs/30/job/77")
	h.gh.mu.Unlock()
	return pipeline.NewDeploymentStatus{Repo: shop,
		Deployment: pipeline.DeploymentInfo{GitHubID: d.id, SHA: c1, Environment: env, Payload: mustJSON(t, d.payload)},
		Status:     st}
}

// The production deploy job completed before any status naming it (GitHub
// does not keep webhooks in order): its log is asked for when the status
// comes, and GitHub asks to wait (a rate limit). The delivery fails; its
// retry finds the status recorded already, and must still keep the log.
// Once it is kept, a redelivery does not ask GitHub again.
func TestDeployLogKeptWhenTheStatusDeliveryIsRetried(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	flaky := &flakyLogs{fakeGitHub: h.gh}
	h.engine.GitHub = flaky
	h.gh.logs = map[int64]string{77: "deploying c1 to production\nok\n"}
	h.release(c0, c1, 10, "test", "staging")
	ev := jobEndedThenSuccess(t, h, "production")
	flaky.failLogs, flaky.failure = 1, fmt.Errorf("rate limited: %w", pipeline.ErrGitHubWait)
	if err := h.engine.HandleDeploymentStatus(ctx, ev); !errors.Is(err, pipeline.ErrGitHubWait) {
		t.Fatalf("the log download asked to wait: %v, want the delivery to wait", err)
	}
	if err := h.engine.HandleDeploymentStatus(ctx, ev); err != nil { // the worker's retry
		t.Fatal(err)
	}
	if _, err := h.engine.FetchMissingJobLogs(ctx); err != nil {
		t.Fatal(err)
	}
	h.gh.mu.Lock()
	asked := h.gh.logAsks
	h.gh.mu.Unlock()
	if log, err := h.db.JobLog(ctx, 77); err != nil || string(log) != "deploying c1 to production\nok\n" {
		t.Fatalf("production deploy log of job 77 after the delivery was retried: %q, %v (GitHub asked %d times); want GitHub's", log, err, asked)
	}
	if err := h.engine.HandleDeploymentStatus(ctx, ev); err != nil { // a redelivery
		t.Fatal(err)
	}
	h.gh.mu.Lock()
	defer h.gh.mu.Unlock()
	if h.gh.logAsks != asked {
		t.Errorf("a redelivery of the status asked GitHub %d more times for the log kept already, want 0", h.gh.logAsks-asked)
	}
}

// A deploy log GitHub fails to give at every try (a 403: the installation
// has not accepted actions: read; a 502 the transport's retries did not
// get past) holds nothing back: the status's delivery goes on, staging's
// success promotes the release to production, and the record says why the
// log is missing until a later look (FetchMissingJobLogs) finds it.
func TestDeployLogGitHubFailsHoldsNothingBack(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	flaky := &flakyLogs{fakeGitHub: h.gh, failLogs: 1000, failure: errors.New("GET …/actions/jobs/77/logs: 403 Resource not accessible by integration")}
	h.engine.GitHub = flaky
	h.gh.logs = map[int64]string{77: "deploying c1 to staging\nok\n"}
	h.release(c0, c1, 10, "test")
	ev := jobEndedThenSuccess(t, h, "staging")
	if err := h.engine.HandleDeploymentStatus(ctx, ev); err != nil {
		t.Fatalf("staging's success, its log refused: %v, want it handled", err)
	}
	if h.gh.deployment(c1, "production") == nil {
		t.Error("staging's success, its log refused, did not promote c1 to production")
	}
	if log, err := h.db.JobLog(ctx, 77); !errors.Is(err, pipeline.ErrNotFound) || !strings.Contains(err.Error(), "lastmile could not download it from GitHub: GET …/actions/jobs/77/logs: 403") {
		t.Errorf("the record of job 77's log: %q, %v; want none, and why", log, err)
	}
	flaky.failLogs = 0
	if n, err := h.engine.FetchMissingJobLogs(ctx); err != nil || n != 1 {
		t.Fatalf("looked for again: %d kept, %v; want 1", n, err)
	}
	if log, err := h.db.JobLog(ctx, 77); err != nil || string(log) != "deploying c1 to staging\nok\n" {
		t.Errorf("job 77's log, looked for again: %q, %v; want GitHub's", log, err)
	}
}

// A log download refused while lastmile has the installation recorded as
// suspended (GitHub refuses a suspended installation's calls with a 403
// the logs endpoint does not tell from others) is waited out with the
// installation, not recorded as a log lastmile could not download.
func TestDeployLogRefusedWhileSuspendedIsWaitedFor(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	flaky := &flakyLogs{fakeGitHub: h.gh, failLogs: 1, failure: errors.New("unexpected status code: 403 Forbidden")}
	h.engine.GitHub = flaky
	h.gh.logs = map[int64]string{77: "deploying c1 to staging\nok\n"}
	h.release(c0, c1, 10, "test")
	ev := jobEndedThenSuccess(t, h, "staging")
	if _, err := h.db.SetInstallation(ctx, pipeline.InstallationState{ID: shop.InstallationID, State: pipeline.InstallationSuspended, Since: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := h.engine.HandleDeploymentStatus(ctx, ev); !errors.Is(err, pipeline.ErrGitHubWait) {
		t.Errorf("the log refused, the installation suspended: %v, want the delivery to wait", err)
	}
	if _, err := h.db.JobLog(ctx, 77); err == nil || strings.Contains(err.Error(), "could not download") {
		t.Errorf("job 77's log: %v, want none recorded yet", err)
	}
}

// perJobLogs fails the download of one job's log, always.
type perJobLogs struct {
	*fakeGitHub
	broken int64
	asks   map[int64]int
}

func (f *perJobLogs) JobLog(ctx context.Context, r pipeline.Repo, jobID int64, max int) ([]byte, bool, error) {
	f.asks[jobID]++
	if jobID == f.broken {
		return nil, false, errors.New("download job log: HTTP 502")
	}
	return f.fakeGitHub.JobLog(ctx, r, jobID, max)
}

// One missing log whose download GitHub fails at every look says nothing
// of the installation's other missing logs: they are looked for, and
// kept, all the same.
func TestOneLogGitHubFailsHoldsBackNoOther(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.release(c0, c1, 10, "test", "staging")
	dep := func(env string) int64 {
		d, err := h.db.Deployment(ctx, h.gh.deployment(c1, env).id)
		if err != nil {
			t.Fatal(err)
		}
		return d.ID
	}
	// Job 77 (test): its download failed; job 78 (staging): GitHub had none yet.
	if err := h.db.SaveMissingJobLog(ctx, dep("test"), pipeline.WorkflowJob{Repo: shop, JobID: 77, Name: "deploy"}, []byte("(lastmile could not download it from GitHub: HTTP 502)\n")); err != nil {
		t.Fatal(err)
	}
	if err := h.db.SaveMissingJobLog(ctx, dep("staging"), pipeline.WorkflowJob{Repo: shop, JobID: 78, Name: "deploy"}, []byte("(GitHub had no log for it)\n")); err != nil {
		t.Fatal(err)
	}
	f := &perJobLogs{fakeGitHub: h.gh, broken: 77, asks: map[int64]int{}}
	h.engine.GitHub = f
	h.gh.logs = map[int64]string{78: "staging log\n"}
	if n, err := h.engine.FetchMissingJobLogs(ctx); n != 1 || err == nil {
		t.Errorf("a look: %d kept, %v; want job 78's kept, and job 77's error", n, err)
	}
	if log, err := h.db.JobLog(ctx, 78); err != nil || string(log) != "staging log\n" {
		t.Errorf("job 78's log: %q, %v (asked for 77: %d, 78: %d times); want GitHub's", log, err, f.asks[77], f.asks[78])
	}
}

// Attempt 1 of c1's staging job is rejected, the review's delivery
// delayed; lastmile writes the failure at the run's end. A re-run of the
// failed jobs is approved, starts, and its deploy fails. Attempt 1's
// rejection, delivered then (or while attempt 2 still deploys), is kept in
// the record, but the release and its deployment failed: they are not
// relabelled as rejected.
func TestLateRejectionOfAnEarlierAttemptDoesNotRelabelAFailure(t *testing.T) {
	for _, deliveredWhile := range []string{"after the failure", "while the re-run deploys"} {
		t.Run(deliveredWhile, func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1)
			h.release(c0, c1, 10, "test")
			rejectedAt := time.Now().Add(-time.Hour)
			h.status(c1, "staging", pipeline.DeploymentQueued, 11, true)
			h.runCompleted(11, c1, "failure")                                    // attempt 1 ends: rejected
			h.deliver(c1, "staging", h.gh.deployment(c1, "staging").statuses[1]) // the failure lastmile wrote
			h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true)     // attempt 2, approved, deploys…
			review := func() {
				if err := h.engine.HandleReview(ctx, pipeline.Review{Repo: shop, DeliveryID: "review-1", Action: pipeline.ReviewRejected,
					Environments: []string{"staging"}, RunID: 11, HeadSHA: c1, Actor: "bob", Comment: "not today",
					Since: rejectedAt.Add(-time.Minute), At: rejectedAt}); err != nil {
					t.Fatal(err)
				}
			}
			if deliveredWhile != "after the failure" {
				review()
			}
			h.status(c1, "staging", pipeline.DeploymentFailure, 11, true) // …and fails
			if deliveredWhile == "after the failure" {
				review()
			}
			rel, err := h.db.ReleaseOf(ctx, shop.ID, c1)
			if err != nil {
				t.Fatal(err)
			}
			d, err := h.db.Deployment(ctx, h.gh.deployment(c1, "staging").id)
			if err != nil {
				t.Fatal(err)
			}
			if rel.StopKind != pipeline.StopFailed || d.Rejected || strings.Contains(rel.StopReason+d.Reason, "bob") {
				t.Errorf("after attempt 2's deploy failed, attempt 1's late rejection made the release %s (%q), deployment rejected=%v reason %q; want failed",
					rel.StopKind, rel.StopReason, d.Rejected, d.Reason)
			}
			rec := h.auditedDeployment(c1, h.gh.deployment(c1, "staging").id)
			if rec == nil || !slices.ContainsFunc(rec.Reviews, func(rv pipeline.ReviewRecord) bool {
				return rv.Action == pipeline.ReviewRejected && rv.Actor == "bob" && rv.Comment == "not today"
			}) {
				t.Errorf("attempt 1's rejection is not in the audit record of the deployment: %+v", rec)
			}
		})
	}
}

// The mirror of the case above: attempt 1 of c1's staging job is rejected,
// the review delivered in time; lastmile writes the failure at the run's
// end, and the release stops as rejected. A re-run of the failed jobs is
// approved, starts, and its deploy fails. Once the re-run has begun the
// deployment is no longer rejected, and when it fails the release stopped
// on a failure, as on any failed deployment — whether the re-run's start is
// delivered before its end or after. The rejection stays in the audit
// record, and the metrics count the deployment's first outcome only.
func TestRerunAfterARejectionThatFailsIsAFailure(t *testing.T) {
	for _, order := range []string{"in order", "start delivered after its end"} {
		t.Run(order, func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1)
			h.release(c0, c1, 10, "test")
			h.status(c1, "staging", pipeline.DeploymentQueued, 11, true)
			rejectedAt := time.Now().Add(-time.Second)
			if err := h.engine.HandleReview(ctx, pipeline.Review{Repo: shop, DeliveryID: "review-1", Action: pipeline.ReviewRejected,
				Environments: []string{"staging"}, RunID: 11, HeadSHA: c1, Actor: "bob", Comment: "not today",
				Since: rejectedAt.Add(-time.Minute), At: rejectedAt}); err != nil {
				t.Fatal(err)
			}
			h.runCompleted(11, c1, "failure")                                    // attempt 1 ends: rejected
			h.deliver(c1, "staging", h.gh.deployment(c1, "staging").statuses[1]) // the failure lastmile wrote
			id := h.gh.deployment(c1, "staging").id
			state := func() (*pipeline.Release, *pipeline.Deployment) {
				t.Helper()
				rel, err := h.db.ReleaseOf(ctx, shop.ID, c1)
				if err != nil {
					t.Fatal(err)
				}
				d, err := h.db.Deployment(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				return rel, d
			}
			if rel, d := state(); rel.StopKind != pipeline.StopRejected || !d.Rejected {
				t.Fatalf("after the rejection: release %s (%q), deployment rejected=%v; want rejected", rel.StopKind, rel.StopReason, d.Rejected)
			}
			if order == "in order" {
				h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true) // attempt 2, approved, deploys…
				if _, d := state(); d.Rejected || strings.Contains(d.Reason, "bob") {
					t.Errorf("while attempt 2 deploys, the deployment is rejected=%v, reason %q; want not rejected", d.Rejected, d.Reason)
				}
				failed := h.status(c1, "staging", pipeline.DeploymentFailure, 11, false) // …and fails
				h.gh.mu.Lock()
				failed.Description = "smoke tests failed"
				h.gh.byID(id).statuses[len(h.gh.byID(id).statuses)-1] = failed
				h.gh.mu.Unlock()
				h.deliver(c1, "staging", failed)
			} else {
				started := h.status(c1, "staging", pipeline.DeploymentInProgress, 11, false)
				h.status(c1, "staging", pipeline.DeploymentFailure, 11, true)
				h.deliver(c1, "staging", started)
			}
			why, stop := "", "deployment to staging ended in failure" // the failure's reason, as for any failed deployment
			if order == "in order" {
				why, stop = "smoke tests failed", stop+": smoke tests failed"
			}
			rel, d := state()
			if rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopFailed || rel.StopReason != stop || d.Rejected || d.Reason != why {
				t.Errorf("after attempt 2's deploy failed: release %s/%s (%q), deployment rejected=%v reason %q; want stopped, failed (%q), not rejected, reason %q",
					rel.State, rel.StopKind, rel.StopReason, d.Rejected, d.Reason, stop, why)
			}
			if got := h.deploymentsCounted(); len(got) != 2 || got["test/success"] != 1 || got["staging/failure"] != 1 {
				t.Errorf("lastmile_deployments_total: %v; want test success 1, staging failure 1 (its first outcome, once)", got)
			}
			rec := h.auditedDeployment(c1, id)
			if rec == nil || !slices.ContainsFunc(rec.Reviews, func(rv pipeline.ReviewRecord) bool {
				return rv.Action == pipeline.ReviewRejected && rv.Actor == "bob" && rv.Comment == "not today"
			}) {
				t.Errorf("attempt 1's rejection is not in the audit record of the deployment: %+v", rec)
			}
		})
	}
}
