package pipeline_test

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// Where a workflow owns its deployments — a workflow on push whose jobs
// deploy through the environments, lastmile their protection rule —
// lastmile's own deployment never runs, and Actions' deployment for each
// job is the deployment that happened: it counts in the delivery metrics
// as lastmile's do. Not a job's twin of lastmile's deployment, a
// deployment made through the API, one to an environment the
// configuration does not name, nor one of a commit no release brought.

// jobStarted has lastmile hear of Actions' own deployment id for a job of
// run (triggered by event; "" when the webhooks do not say) deploying sha
// to env, created at at — and, gated, of the job asking lastmile as the
// environment's protection rule — then of its in_progress a second later.
func (h *harness) jobStarted(id int64, sha, env string, run int64, event string, gated bool, at time.Time) pipeline.DeploymentInfo {
	h.t.Helper()
	info := pipeline.DeploymentInfo{GitHubID: id, SHA: sha, Environment: env, Creator: "octocat", CreatedAt: at,
		WorkflowRunID: run, WorkflowRunEvent: event}
	if err := h.engine.HandleDeployment(context.Background(), pipeline.NewDeployment{Repo: shop, Deployment: info}); err != nil {
		h.t.Fatal(err)
	}
	if gated {
		h.judgeJob(fmt.Sprintf("rule-%d", id), env, sha, run, id)
	}
	h.jobStatus(info, pipeline.StatusInfo{GitHubID: id * 10, State: pipeline.DeploymentInProgress, CreatedAt: at.Add(time.Second)})
	return info
}

// judgeJob has lastmile judge, as the protection rule, the request of
// delivery for the job of run deploying sha to env, whose deployment
// (GitHub's payload names it) is deployment.
func (h *harness) judgeJob(delivery, env, sha string, run, deployment int64) *pipeline.ProtectionDecision {
	h.t.Helper()
	req := pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: delivery, Environment: env, SHA: sha, RunID: run, DeploymentID: deployment}
	if err := h.engine.HandleProtectionRule(context.Background(), req); err != nil {
		h.t.Fatal(err)
	}
	dec, err := h.db.ProtectionDecision(context.Background(), req)
	if err != nil {
		h.t.Fatal(err)
	}
	return dec
}

// jobStatus has lastmile hear of status st of the job's deployment info,
// its log_url naming the job (Actions' check run page).
func (h *harness) jobStatus(info pipeline.DeploymentInfo, st pipeline.StatusInfo) {
	h.t.Helper()
	st.LogURL, st.Creator = fmt.Sprintf("https://github.com/%s/runs/%d", shop.FullName(), info.GitHubID+5000), "octocat"
	if err := h.engine.HandleDeploymentStatus(context.Background(), pipeline.NewDeploymentStatus{Repo: shop, Deployment: info, Status: st}); err != nil {
		h.t.Fatalf("status %s of deployment %d: %v", st.State, info.GitHubID, err)
	}
}

// jobDeploy is jobStarted, then the deployment's final status took after
// at.
func (h *harness) jobDeploy(id int64, sha, env string, run int64, event string, gated bool, final pipeline.DeploymentState, at time.Time, took time.Duration) {
	h.t.Helper()
	info := h.jobStarted(id, sha, env, run, event, gated, at)
	h.jobStatus(info, pipeline.StatusInfo{GitHubID: id*10 + 1, State: final, CreatedAt: at.Add(took)})
}

func (h *harness) recorded(id int64) *pipeline.Deployment {
	h.t.Helper()
	d, err := h.db.Deployment(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

func TestAWorkflowsOwnDeploymentsCount(t *testing.T) {
	h := newHarness(t, c0, c1, c2, c3)
	h.mustPush(c0, c1, false) // lastmile's deployment of c1 to test: no workflow runs it
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)

	h.jobDeploy(990, c1, "test", 500, "push", true, pipeline.DeploymentSuccess, t0, 2*time.Minute)
	if d := h.recorded(990); !d.Counts() || d.TwinOf != 0 || d.RunEvent != "push" {
		t.Errorf("the test job's own deployment of a run on push: counts %v, twin of %d, run event %q; want counted, no twin (lastmile's never ran), push",
			d.Counts(), d.TwinOf, d.RunEvent)
	}
	if got := h.deploymentsCounted(); fmt.Sprint(got) != "map[test/success:1]" {
		t.Errorf("deployments counted: %v; want test's success", got)
	}
	if n, sum := h.durations("test"); n != 1 || sum != 120 {
		t.Errorf("durations in test: %d, sum %v; want one of 120 s", n, sum)
	}
	if n, _ := h.leadTimes("test"); n != 1 {
		t.Errorf("lead times in test: %d; want c1's", n)
	}
	if got, want := h.lastSuccess("test"), float64(t0.Add(2*time.Minute).Unix()); got != want {
		t.Errorf("last success in test: %v; want %v", got, want)
	}

	// The staging job fails; the next commit's succeeds there: the
	// environment was restored, and both commits reached it then.
	h.jobDeploy(991, c1, "staging", 500, "push", true, pipeline.DeploymentFailure, t0.Add(3*time.Minute), time.Minute)
	h.mustPush(c1, c2, false)
	h.jobDeploy(992, c2, "test", 501, "push", true, pipeline.DeploymentSuccess, t0.Add(8*time.Minute), time.Minute)
	h.jobDeploy(993, c2, "staging", 501, "push", true, pipeline.DeploymentSuccess, t0.Add(10*time.Minute), time.Minute)
	if n, sum := h.restoresObserved("staging"); n != 1 || math.Abs(sum-7*60) > 0.001 {
		t.Errorf("times to restore staging: %d, sum %v; want one of 420 s (failed at 4 min, restored at 11)", n, sum)
	}
	if n, _ := h.leadTimes("staging"); n != 2 {
		t.Errorf("lead times in staging: %d; want c1's and c2's", n)
	}
	if h.gh.deployment(c2, "staging") != nil {
		t.Error("lastmile deployed c2 to staging after the workflow's own success there: a workflow's deployment drives no promotion")
	}
	want := "map[staging/failure:1 staging/success:1 test/success:2]"
	if got := h.deploymentsCounted(); fmt.Sprint(got) != want {
		t.Errorf("deployments counted: %v; want %s", got, want)
	}

	// Not counted: the twin, for a job of a run lastmile's deployment
	// triggered; a deployment made through the API; one to an environment
	// outside the pipeline; one of a commit no release brought; a job that
	// did not ask lastmile (a CI job on push naming the environment for
	// its secrets, where lastmile's deployments deploy).
	h.jobDeploy(994, c2, "test", 502, "deployment", true, pipeline.DeploymentSuccess, t0.Add(20*time.Minute), time.Minute)
	h.jobDeploy(995, c2, "production", 0, "", false, pipeline.DeploymentSuccess, t0.Add(20*time.Minute), time.Minute)
	h.jobDeploy(996, c2, "preview", 503, "push", true, pipeline.DeploymentSuccess, t0.Add(20*time.Minute), time.Minute)
	h.jobDeploy(997, c3, "production", 504, "push", true, pipeline.DeploymentFailure, t0.Add(20*time.Minute), time.Minute)
	if d := h.recorded(994); d.TwinOf == 0 || d.Counts() {
		t.Errorf("the job's deployment of a run on the deployment event: twin of %d, counts %v; want lastmile's twin, not counted", d.TwinOf, d.Counts())
	}
	h.jobDeploy(1000, c2, "test", 507, "push", false, pipeline.DeploymentSuccess, t0.Add(20*time.Minute), time.Minute)
	for _, id := range []int64{995, 996, 997, 1000} {
		if h.recorded(id).Counts() {
			t.Errorf("deployment %d counts", id)
		}
	}
	if got := h.deploymentsCounted(); fmt.Sprint(got) != want {
		t.Errorf("deployments counted after the others: %v; want %s still", got, want)
	}
	if n, _ := h.histogram(metrics.DeploymentDuration, "production"); n != 0 {
		t.Errorf("durations in production: %d; want none", n)
	}

	// A failed deploy heard of after a later success there is measured at
	// once to that success.
	h.jobDeploy(998, c2, "production", 505, "push", true, pipeline.DeploymentSuccess, t0.Add(40*time.Minute), time.Minute)
	h.jobDeploy(999, c2, "production", 506, "push", true, pipeline.DeploymentFailure, t0.Add(30*time.Minute), time.Minute)
	if n, sum := h.restoresObserved("production"); n != 1 || math.Abs(sum-10*60) > 0.001 {
		t.Errorf("times to restore production: %d, sum %v; want one of 600 s (failed at 31 min, restored at 41)", n, sum)
	}
}

// A workflow's own deployment carries no release on: its success where
// lastmile's deployment of the release failed leaves the release stopped.
func TestAWorkflowsOwnSuccessCarriesNoStoppedReleaseOn(t *testing.T) {
	h := newHarness(t, c0, c1)
	h.mustPush(c0, c1, false)
	h.status(c1, "test", pipeline.DeploymentInProgress, 10, true)
	h.status(c1, "test", pipeline.DeploymentFailure, 10, true)
	h.jobDeploy(990, c1, "test", 500, "push", true, pipeline.DeploymentSuccess, time.Now().Add(-time.Minute), time.Second)
	if rel := h.releaseState(shop, c1); rel.State != pipeline.ReleaseStopped {
		t.Errorf("c1's release after the workflow's own success in test: %s; want it stopped still", rel.State)
	}
	if got := h.deploymentsCounted(); fmt.Sprint(got) != "map[test/failure:1 test/success:1]" {
		t.Errorf("deployments counted: %v; want lastmile's failure and the workflow's success", got)
	}
}

// What makes a job's deployment one a workflow owns may come to lastmile
// in any order: the run's event (a workflow_job names the deployment, not
// what triggered its run), and the job asking lastmile as the protection
// rule. Until lastmile knows the event the deployment is taken for the
// twin of lastmile's deployment with no run known, and not counted; once
// it knows both — from the run's own webhook, a status's, or the request
// that comes last — the deployment counts from then on.
func TestARunsEventLearntLaterSettlesItsJobsDeployment(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.mustPush(c0, c1, false)
	ours := h.gh.deployment(c1, "test").id
	at := time.Now().Add(-time.Hour)
	record := func(id, run int64, event string) {
		t.Helper()
		info := pipeline.DeploymentInfo{GitHubID: id, SHA: c1, Environment: "test", Creator: "octocat", CreatedAt: at,
			WorkflowRunID: run, WorkflowRunEvent: event}
		if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: info}); err != nil {
			t.Fatal(err)
		}
		if d := h.recorded(id); d.Counts() || (event == "") != (d.TwinOf != 0) {
			t.Fatalf("deployment %d, its run's event %q: counts %v, twin of %d; want not counted, a twin when the event is not known",
				id, event, d.Counts(), d.TwinOf)
		}
	}
	runEvent := func(run int64, event string) {
		t.Helper()
		if err := h.engine.HandleWorkflowRun(ctx, pipeline.WorkflowRun{Repo: shop, Action: "in_progress", RunID: run, Name: "CI",
			Event: event, HeadSHA: c1, Status: "in_progress", Attempt: 1, CreatedAt: at, UpdatedAt: at}); err != nil {
			t.Fatal(err)
		}
	}
	// The run's webhook comes last.
	record(990, 500, "")
	h.judge("rule-990", "test", c1, 500)
	runEvent(500, "push")
	if d := h.recorded(990); !d.Counts() || d.TwinOf != 0 {
		t.Errorf("deployment 990 after its run (on push) was heard of: counts %v, twin of %d; want counted, no twin", d.Counts(), d.TwinOf)
	}
	// A run on the deployment event: its job's deployment is the twin.
	record(991, 501, "")
	h.judge("rule-991", "test", c1, 501)
	runEvent(501, "deployment")
	if d := h.recorded(991); d.Counts() || d.TwinOf == 0 {
		t.Errorf("deployment 991 after its run (on deployment) was heard of: counts %v, twin of %d; want lastmile's twin, not counted", d.Counts(), d.TwinOf)
	}
	// A status says the run's event before the run's webhook comes.
	record(992, 502, "")
	h.jobDeploy(992, c1, "test", 502, "workflow_dispatch", true, pipeline.DeploymentSuccess, at, time.Minute)
	if d := h.recorded(992); !d.Counts() || d.RunEvent != "workflow_dispatch" {
		t.Errorf("deployment 992 after a status named its run's event: counts %v, run event %q; want counted, workflow_dispatch", d.Counts(), d.RunEvent)
	}
	// The protection rule's request comes last.
	record(993, 503, "push")
	h.judge("rule-993", "TEST", c1, 503)
	if d := h.recorded(993); !d.Counts() {
		t.Errorf("deployment 993 after its job asked lastmile: not counted")
	}
	h.jobDeploy(990, c1, "test", 500, "", false, pipeline.DeploymentSuccess, at, time.Minute)
	h.jobDeploy(991, c1, "test", 501, "", false, pipeline.DeploymentSuccess, at, time.Minute)
	h.jobDeploy(993, c1, "test", 503, "", false, pipeline.DeploymentFailure, at, time.Minute)
	if got := h.deploymentsCounted(); fmt.Sprint(got) != "map[test/failure:1 test/success:2]" {
		t.Errorf("deployments counted: %v; want the successes of 990 and 992 and the failure of 993", got)
	}
	if h.recorded(ours).State != pipeline.DeploymentCreated {
		t.Errorf("lastmile's deployment: %s; want it untouched (created)", h.recorded(ours).State)
	}
}

// A job names its environment in any case (GitHub's environment names
// ignore it): a workflow's own deployment's metrics go under the
// configuration's spelling, where lastmile_environment_info and lastmile's
// own deployments' series are.
func TestAWorkflowsOwnDeploymentIsCountedUnderTheConfigurationsSpelling(t *testing.T) {
	h := newHarness(t, c0, c1)
	h.mustPush(c0, c1, false)
	at := time.Now().Add(-time.Hour)
	h.jobDeploy(990, c1, "Test", 500, "push", true, pipeline.DeploymentFailure, at, time.Minute)
	h.jobDeploy(991, c1, "TEST", 501, "push", true, pipeline.DeploymentSuccess, at.Add(5*time.Minute), time.Minute)
	if got := h.deploymentsCounted(); fmt.Sprint(got) != "map[test/failure:1 test/success:1]" {
		t.Errorf("deployments counted: %v; want test's failure and success", got)
	}
	for _, name := range []string{metrics.DeploymentDuration, metrics.LeadTime, metrics.TimeToRestore} {
		if n, _ := h.histogram(name, "test"); n == 0 {
			t.Errorf("%s: nothing observed under test", name)
		}
	}
	if h.lastSuccess("test") == 0 {
		t.Error("no last success in test")
	}
}

// The job's deployment may reach lastmile before the push that makes the
// release of its commit (GitHub keeps no order between webhooks, and a
// push redelivered late comes after): the release, when it is recorded,
// takes the deployment as its own, and the deployment counts — a job the
// protection rule let deploy (test's, the first environment's: the rule
// judges by the latest release while the commit has none).
func TestAWorkflowsOwnDeploymentHeardOfBeforeItsRelease(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test")
	at := time.Now().Add(-time.Hour)
	info := pipeline.DeploymentInfo{GitHubID: 990, SHA: c2, Environment: "test", Creator: "octocat", CreatedAt: at,
		WorkflowRunID: 500, WorkflowRunEvent: "push"}
	if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: info}); err != nil {
		t.Fatal(err)
	}
	if dec := h.judge("rule-990", "test", c2, 500); dec.State != pipeline.ProtectionApproved {
		t.Fatalf("the rule's decision: %s (%s); want approved", dec.State, dec.Comment)
	}
	if d := h.recorded(990); d.ReleaseID != 0 || d.Counts() {
		t.Fatalf("before the push: release %d, counts %v; want none, not counted", d.ReleaseID, d.Counts())
	}
	h.mustPush(c1, c2, false)
	d := h.recorded(990)
	if rel := h.releaseState(shop, c2); d.ReleaseID != rel.ID || d.Stage != 0 || !d.Counts() {
		t.Errorf("after the push: release %d (c2's is %d), stage %d, counts %v; want c2's release, test's stage, counted",
			d.ReleaseID, rel.ID, d.Stage, d.Counts())
	}
	h.jobDeploy(990, c2, "test", 500, "push", false, pipeline.DeploymentSuccess, at, time.Minute)
	if got := h.deploymentsCounted(); got["test/success"] != 2 {
		t.Errorf("deployments counted: %v; want c1's success in test and the job's", got)
	}
}

// A job the protection rule refused (a commit not proven in the
// environment before) never deploys: its deployment is not the
// workflow's to count, whatever GitHub reports on it.
func TestAJobTheRuleRefusedIsNotCounted(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test")
	h.mustPush(c1, c2, false)
	at := time.Now().Add(-time.Hour)
	info := pipeline.DeploymentInfo{GitHubID: 990, SHA: c2, Environment: "staging", Creator: "octocat", CreatedAt: at,
		WorkflowRunID: 500, WorkflowRunEvent: "push"}
	if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: info}); err != nil {
		t.Fatal(err)
	}
	if dec := h.judge("rule-990", "staging", c2, 500); dec.State != pipeline.ProtectionRejected {
		t.Fatalf("the rule's decision: %s (%s); want rejected", dec.State, dec.Comment)
	}
	h.jobDeploy(990, c2, "staging", 500, "push", false, pipeline.DeploymentFailure, at, time.Minute)
	if d := h.recorded(990); d.Counts() {
		t.Errorf("the refused job's deployment counts")
	}
	if got := h.deploymentsCounted(); got["staging/failure"] != 0 {
		t.Errorf("deployments counted: %v; want no failure in staging", got)
	}
}

// Where lastmile's own deployment never runs (a workflow owns the
// environment's deployments), the job's deployment of the release stands
// for it in lastmile status and history.
func TestAWorkflowsOwnDeploymentStandsWhereLastmilesNeverRan(t *testing.T) {
	h := newHarness(t, c0, c1)
	h.mustPush(c0, c1, false)
	h.jobStarted(990, c1, "test", 500, "push", true, time.Now())
	l, st := h.standingInTest()
	if l.DeploymentID != 990 || l.State != pipeline.DeploymentInProgress {
		t.Errorf("status LATEST in test: deployment %d %s; want the job's (990), in_progress", l.DeploymentID, l.State)
	}
	if st.State != pipeline.DeploymentInProgress || !st.Workflow {
		t.Errorf("history, test: %s (the workflow's: %v); want the job's, in_progress", st.State, st.Workflow)
	}
}

// Where lastmile's own deployment of a release has ended, it stands for
// the release in the environment — in lastmile status and history alike —
// even beside a newer deployment a workflow's job made there.
func TestLastmilesEndedDeploymentStandsBesideAWorkflowsOwn(t *testing.T) {
	h := newHarness(t, c0, c1)
	h.mustPush(c0, c1, false)
	h.status(c1, "test", pipeline.DeploymentInProgress, 10, true)
	h.status(c1, "test", pipeline.DeploymentFailure, 10, true)
	ours := h.gh.deployment(c1, "test").id
	h.jobStarted(990, c1, "test", 500, "push", true, time.Now())
	l, st := h.standingInTest()
	if l.DeploymentID != ours || l.State != pipeline.DeploymentFailure {
		t.Errorf("status LATEST in test: deployment %d %s; want lastmile's (%d), failure", l.DeploymentID, l.State, ours)
	}
	if st.State != pipeline.DeploymentFailure || st.Workflow {
		t.Errorf("history, test: %s (the workflow's: %v); want lastmile's failure", st.State, st.Workflow)
	}
}

// standingInTest is what stands for c1's release in test: lastmile
// status's LATEST there, and lastmile history's stage.
func (h *harness) standingInTest() (*pipeline.LatestDeployment, pipeline.StageOutcome) {
	h.t.Helper()
	ctx := context.Background()
	status, err := h.db.Status(ctx, shop.FullName())
	if err != nil || len(status) == 0 || status[0].Environment != "test" || status[0].Latest == nil {
		h.t.Fatalf("status: %+v, %v", status, err)
	}
	hist, err := h.db.History(ctx, storage.HistoryFilter{Repository: shop.FullName()})
	if err != nil || len(hist) != 1 || len(hist[0].Stages) == 0 {
		h.t.Fatalf("history: %+v, %v", hist, err)
	}
	return status[0].Latest, hist[0].Stages[0]
}

// A re-run of a failed job asks the rule again, for a deployment of its
// own: lastmile refuses it (a newer release has succeeded there since),
// the job never deploys, and GitHub ends that deployment in failure. It is
// not counted, though the run's first attempt was approved there.
func TestARefusedReRunOfAnApprovedJobIsNotCounted(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.gh.config = "deployments: workflow\n" + threeEnvs
	h.mustPush(c0, c1, false)
	at := time.Now().Add(-time.Hour)
	h.jobDeploy(990, c1, "test", 500, "push", true, pipeline.DeploymentSuccess, at, time.Minute)
	h.jobDeploy(991, c1, "staging", 500, "push", true, pipeline.DeploymentFailure, at.Add(2*time.Minute), time.Minute)
	h.mustPush(c1, c2, false)
	h.jobDeploy(992, c2, "test", 501, "push", true, pipeline.DeploymentSuccess, at.Add(5*time.Minute), time.Minute)
	h.jobDeploy(993, c2, "staging", 501, "push", true, pipeline.DeploymentSuccess, at.Add(7*time.Minute), time.Minute)
	before := h.deploymentsCounted()

	info := pipeline.DeploymentInfo{GitHubID: 994, SHA: c1, Environment: "staging", Creator: "octocat", CreatedAt: at.Add(10 * time.Minute),
		WorkflowRunID: 500, WorkflowRunEvent: "push"}
	if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: info}); err != nil {
		t.Fatal(err)
	}
	if dec := h.judgeJob("rule-994", "staging", c1, 500, 994); dec.State != pipeline.ProtectionRejected {
		t.Fatalf("the re-run: %s (%s); want rejected", dec.State, dec.Comment)
	}
	h.jobStatus(info, pipeline.StatusInfo{GitHubID: 9941, State: pipeline.DeploymentFailure, CreatedAt: at.Add(11 * time.Minute)})
	if d := h.recorded(994); d.Counts() {
		t.Errorf("the refused re-run's deployment counts")
	}
	if got := h.deploymentsCounted(); got["staging/failure"] != before["staging/failure"] {
		t.Errorf("deployments counted: %v; before the refused re-run %v", got, before)
	}
}

// An approval GitHub did not take, withdrawn when judged again (a newer
// release passed test meanwhile): the rejection sent instead is taken, the
// job never deploys, and GitHub ends its deployment in failure: not
// counted. Had GitHub refused the rejection (a 422: it took the approval,
// or some other answer of the run's), the job counts once it starts.
func TestAJobWhoseApprovalWasWithdrawnIsNotCounted(t *testing.T) {
	for _, taken := range []bool{false, true} {
		t.Run(fmt.Sprintf("approval taken %v", taken), func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1, c2)
			h.gh.config = "deployments: workflow\n" + threeEnvs
			h.mustPush(c0, c1, false)
			at := time.Now().Add(-time.Hour)
			h.jobDeploy(990, c1, "test", 500, "push", true, pipeline.DeploymentSuccess, at, time.Minute)
			info := pipeline.DeploymentInfo{GitHubID: 991, SHA: c1, Environment: "staging", Creator: "octocat", CreatedAt: at.Add(2 * time.Minute),
				WorkflowRunID: 500, WorkflowRunEvent: "push"}
			if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: info}); err != nil {
				t.Fatal(err)
			}
			h.gh.mu.Lock()
			h.gh.failAnswers = 1
			h.gh.mu.Unlock()
			req := pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: "rule-991", Environment: "staging", SHA: c1, RunID: 500, DeploymentID: 991}
			if err := h.engine.HandleProtectionRule(ctx, req); err == nil {
				t.Fatal("the approval's sending did not fail")
			}
			if d := h.recorded(991); !d.Counts() {
				t.Fatalf("the approved job's deployment does not count")
			}
			h.mustPush(c1, c2, false)
			h.jobDeploy(992, c2, "test", 501, "push", true, pipeline.DeploymentSuccess, at.Add(5*time.Minute), time.Minute)
			if taken {
				h.gh.mu.Lock()
				h.gh.waitsNot = map[int64]bool{500: true} // a 422: the run waits no more
				h.gh.mu.Unlock()
			}
			clock := time.Now().Add(2 * time.Minute)
			h.engine.Now = func() time.Time { return clock }
			if _, err := h.engine.AnswerUnpostedProtectionRules(ctx); err != nil {
				t.Fatal(err)
			}
			if dec, _ := h.db.ProtectionDecision(ctx, req); dec.Withdrawn == nil || !dec.Posted || dec.Refused != taken {
				t.Fatalf("rule-991: %+v; want withdrawn, the rejection posted, refused %v", dec, taken)
			}
			if d := h.recorded(991); d.Counts() {
				t.Errorf("the job whose approval was withdrawn counts before it started")
			}
			if taken {
				h.jobStatus(info, pipeline.StatusInfo{GitHubID: 9910, State: pipeline.DeploymentInProgress, CreatedAt: at.Add(7 * time.Minute)})
			}
			h.jobStatus(info, pipeline.StatusInfo{GitHubID: 9911, State: pipeline.DeploymentFailure, CreatedAt: at.Add(8 * time.Minute)})
			if d := h.recorded(991); d.Counts() != taken {
				t.Errorf("the job whose approval was withdrawn: counts %v; want %v", d.Counts(), taken)
			}
			want := 0.0
			if taken {
				want = 1
			}
			if got := h.deploymentsCounted(); got["staging/failure"] != want {
				t.Errorf("deployments counted: %v; want %v staging failures", got, want)
			}
		})
	}
}

// GitHub took an approval whose reply was lost (lastmile saw a 502): the
// job deploys. The sweep withdraws the approval (a newer release passed
// test meanwhile) and its rejection's sending fails too, so lastmile does
// not know yet that GitHub took the approval — but the job's deployment
// starting says so, whether its in_progress came before the withdrawal or
// after: the deployment counts, its success too, and stays counted when
// GitHub refuses the rejection.
func TestATakenApprovalWithdrawnWhileItsJobDeploysIsCounted(t *testing.T) {
	for _, startedFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("in_progress before the withdrawal %v", startedFirst), func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1, c2)
			h.gh.config = "deployments: workflow\n" + threeEnvs
			h.mustPush(c0, c1, false)
			at := time.Now().Add(-time.Hour)
			h.jobDeploy(990, c1, "test", 500, "push", true, pipeline.DeploymentSuccess, at, time.Minute)
			info := pipeline.DeploymentInfo{GitHubID: 991, SHA: c1, Environment: "staging", Creator: "octocat", CreatedAt: at.Add(2 * time.Minute),
				WorkflowRunID: 500, WorkflowRunEvent: "push"}
			if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: info}); err != nil {
				t.Fatal(err)
			}
			h.gh.mu.Lock()
			h.gh.failAnswers = 1 // GitHub takes the approval; lastmile sees a 502
			h.gh.mu.Unlock()
			req := pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: "rule-991", Environment: "staging", SHA: c1, RunID: 500, DeploymentID: 991}
			if err := h.engine.HandleProtectionRule(ctx, req); err == nil {
				t.Fatal("the approval's sending did not fail")
			}
			started := func() {
				h.jobStatus(info, pipeline.StatusInfo{GitHubID: 9910, State: pipeline.DeploymentInProgress, CreatedAt: at.Add(3 * time.Minute)})
			}
			if startedFirst {
				started()
			}
			h.mustPush(c1, c2, false)
			h.jobDeploy(992, c2, "test", 501, "push", true, pipeline.DeploymentSuccess, at.Add(5*time.Minute), time.Minute)
			h.gh.mu.Lock()
			h.gh.failAnswers = 1 // the rejection's sending fails as well
			h.gh.mu.Unlock()
			clock := time.Now().Add(2 * time.Minute)
			h.engine.Now = func() time.Time { return clock }
			if _, err := h.engine.AnswerUnpostedProtectionRules(ctx); err == nil {
				t.Fatal("the rejection's sending did not fail")
			}
			if dec, _ := h.db.ProtectionDecision(ctx, req); dec.Withdrawn == nil || dec.Posted {
				t.Fatalf("rule-991: %+v; want withdrawn, not posted", dec)
			}
			if !startedFirst {
				started()
			}
			if d := h.recorded(991); !d.Counts() {
				t.Errorf("the started job's deployment does not count after the withdrawal")
			}
			h.jobStatus(info, pipeline.StatusInfo{GitHubID: 9911, State: pipeline.DeploymentSuccess, CreatedAt: at.Add(8 * time.Minute)})
			h.gh.mu.Lock()
			h.gh.waitsNot = map[int64]bool{500: true} // a 422: GitHub took the approval
			h.gh.mu.Unlock()
			clock = clock.Add(10 * time.Minute)
			if _, err := h.engine.AnswerUnpostedProtectionRules(ctx); err != nil {
				t.Fatal(err)
			}
			if dec, _ := h.db.ProtectionDecision(ctx, req); dec.Withdrawn == nil || !dec.Refused {
				t.Fatalf("rule-991: %+v; want withdrawn, the rejection refused", dec)
			}
			if got := h.deploymentsCounted(); got["staging/success"] != 1 {
				t.Errorf("deployments counted: %v; want the job's staging success", got)
			}
		})
	}
}

// A release whose workflow succeeded in production completes, in whatever
// order the webhooks come: someone re-runs all the jobs of the run that
// deployed it (a redeploy), and lastmile hears of the re-run's test job
// before the production job's success (that webhook late) — the release
// completes all the same, and stays completed when the re-run fails.
func TestAWorkflowReleaseCompletesWhateverTheOrderOfARerunOfAllJobs(t *testing.T) {
	for _, late := range []bool{false, true} {
		t.Run(fmt.Sprintf("production's success heard after the re-run's test job %v", late), func(t *testing.T) {
			h := newHarness(t, c0, c1)
			h.gh.config = "deployments: workflow\n" + threeEnvs
			h.mustPush(c0, c1, false)
			at := time.Now().Add(-time.Hour)
			h.jobDeploy(990, c1, "test", 500, "push", true, pipeline.DeploymentSuccess, at, time.Minute)
			h.jobDeploy(991, c1, "staging", 500, "push", true, pipeline.DeploymentSuccess, at.Add(2*time.Minute), time.Minute)
			prod := h.jobStarted(992, c1, "production", 500, "push", true, at.Add(4*time.Minute))
			succeeded := func() {
				h.jobStatus(prod, pipeline.StatusInfo{GitHubID: 9921, State: pipeline.DeploymentSuccess, CreatedAt: at.Add(5 * time.Minute)})
			}
			if !late {
				succeeded()
			}
			rerun := h.jobStarted(993, c1, "test", 500, "push", true, at.Add(10*time.Minute))
			if late {
				succeeded()
			}
			if rel := h.releaseState(shop, c1); rel.State != pipeline.ReleaseCompleted {
				t.Errorf("after production's success: release %s %s; want completed", rel.State, rel.StopReason)
			}
			h.jobStatus(rerun, pipeline.StatusInfo{GitHubID: 9931, State: pipeline.DeploymentFailure, CreatedAt: at.Add(11 * time.Minute)})
			if rel := h.releaseState(shop, c1); rel.State != pipeline.ReleaseCompleted {
				t.Errorf("after the re-run's failure in test: release %s %s %s; want completed still", rel.State, rel.StopKind, rel.StopReason)
			}
		})
	}
}

// replyLostGitHub is the harness's fake GitHub, taking the next lose
// protection-rule answers though lastmile gets a 502.
type replyLostGitHub struct {
	*fakeGitHub
	lose int
}

func (g *replyLostGitHub) ReviewProtectionRule(ctx context.Context, r pipeline.Repo, run int64, env, state, comment string) error {
	if err := g.fakeGitHub.ReviewProtectionRule(ctx, r, run, env, state, comment); err != nil {
		return err
	}
	if g.lose > 0 {
		g.lose--
		return &pipeline.RefusedError{Status: 502, Message: "Bad Gateway"}
	}
	return nil
}

// A job whose approval lastmile withdrew, GitHub having taken the
// rejection sent instead, never ran, and does not count. The approval's
// sending fails (not taken); a newer release passes test; the sweep
// withdraws the approval and sends the rejection, which GitHub takes — its
// reply lost —, and ends the job's deployment in failure. The sweep sends
// the rejection again, and GitHub refuses it (422: the run waits no more,
// rejected). That refusal does not say which answer GitHub took: a job
// whose approval was withdrawn counts only once it starts, which this one
// never does — its failure, delivered after, is not counted.
func TestAJobWhoseWithdrawingRejectionGitHubTookIsNotCounted(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.gh.config = "deployments: workflow\n" + threeEnvs
	g := &replyLostGitHub{fakeGitHub: h.gh}
	h.engine.GitHub = g
	h.mustPush(c0, c1, false)
	at := time.Now().Add(-time.Hour)
	h.jobDeploy(990, c1, "test", 500, "push", true, pipeline.DeploymentSuccess, at, time.Minute)
	info := pipeline.DeploymentInfo{GitHubID: 991, SHA: c1, Environment: "staging", Creator: "octocat", CreatedAt: at.Add(2 * time.Minute),
		WorkflowRunID: 500, WorkflowRunEvent: "push"}
	if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: info}); err != nil {
		t.Fatal(err)
	}
	h.gh.mu.Lock()
	h.gh.failAnswers = 1 // the approval is not taken
	h.gh.mu.Unlock()
	req := pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: "rule-991", Environment: "staging", SHA: c1, RunID: 500, DeploymentID: 991}
	if err := h.engine.HandleProtectionRule(ctx, req); err == nil {
		t.Fatal("the approval's sending did not fail")
	}
	h.mustPush(c1, c2, false)
	h.jobDeploy(992, c2, "test", 501, "push", true, pipeline.DeploymentSuccess, at.Add(5*time.Minute), time.Minute)
	clock := time.Now().Add(2 * time.Minute)
	h.engine.Now = func() time.Time { return clock }
	g.lose = 1 // the rejection is taken, its reply lost
	if _, err := h.engine.AnswerUnpostedProtectionRules(ctx); err == nil {
		t.Fatal("the rejection's reply was not lost")
	}
	h.gh.mu.Lock()
	taken := fmt.Sprint(h.gh.answers)
	h.gh.waitsNot = map[int64]bool{500: true} // rejected: the run waits no more
	h.gh.mu.Unlock()
	if taken != "[500 test approved 501 test approved 500 staging rejected]" {
		t.Fatalf("answers GitHub took: %s; want the rejection of run 500 in staging last", taken)
	}
	clock = clock.Add(10 * time.Minute)
	if _, err := h.engine.AnswerUnpostedProtectionRules(ctx); err != nil {
		t.Fatal(err)
	}
	if dec, _ := h.db.ProtectionDecision(ctx, req); dec.Withdrawn == nil || !dec.Posted || !dec.Refused {
		t.Fatalf("rule-991: %+v; want withdrawn, the rejection sent again and refused", dec)
	}
	// The failure GitHub ended the rejected job's deployment in, its
	// webhook delivered now.
	h.jobStatus(info, pipeline.StatusInfo{GitHubID: 9911, State: pipeline.DeploymentFailure, CreatedAt: at.Add(8 * time.Minute)})
	if d := h.recorded(991); d.Counts() {
		t.Errorf("the job GitHub rejected counts")
	}
	if got := h.deploymentsCounted(); got["staging/failure"] != 0 {
		t.Errorf("deployments counted: %v; want no failure in staging (no staging job ran)", got)
	}
}
