package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// The deploy logs of deployments lastmile did not create: Actions' own for
// a job (a workflow that owns its deployments) is kept with the record;
// one made by hand through the API, or the job's own twin of lastmile's
// deployment, gets none.

// externalDeployment has lastmile hear of a deployment it did not create
// (Actions' own for a job of run when run is not 0), and of its
// in_progress then success statuses at at+1s and at+2s, their log_url
// naming job of run (what Actions posts; anyone may post so).
func (h *harness) externalDeployment(id int64, sha, env, creator string, run, logRun, job int64, at time.Time) {
	h.t.Helper()
	ctx := context.Background()
	info := pipeline.DeploymentInfo{GitHubID: id, SHA: sha, Environment: env, Creator: creator, CreatedAt: at, WorkflowRunID: run}
	if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: info}); err != nil {
		h.t.Fatal(err)
	}
	logURL := fmt.Sprintf("https://github.com/%s/actions/runs/%d/job/%d", shop.FullName(), logRun, job)
	for i, st := range []pipeline.DeploymentState{pipeline.DeploymentInProgress, pipeline.DeploymentSuccess} {
		if err := h.engine.HandleDeploymentStatus(ctx, pipeline.NewDeploymentStatus{Repo: shop, Deployment: info,
			Status: pipeline.StatusInfo{GitHubID: id*10 + int64(i), State: st, LogURL: logURL, Creator: creator,
				CreatedAt: at.Add(time.Duration(i+1) * time.Second)}}); err != nil {
			h.t.Fatal(err)
		}
	}
}

// jobCompleted has lastmile hear that job of run completed, having run
// from start to end.
func (h *harness) jobCompleted(run, job int64, name, sha string, start, end time.Time) {
	h.t.Helper()
	if err := h.engine.HandleWorkflowJob(context.Background(), pipeline.WorkflowJob{Repo: shop, Action: "completed",
		JobID: job, RunID: run, Name: name, HeadSHA: sha, Status: "completed", Conclusion: "success",
		StartedAt: start, CompletedAt: end}); err != nil {
		h.t.Fatal(err)
	}
}

// auditedDeployment is the record of sha's deployment id (GitHub's) in
// the audit.
func (h *harness) auditedDeployment(sha string, id int64) *pipeline.DeploymentRecord {
	h.t.Helper()
	rec, err := h.db.Audit(context.Background(), shop.FullName(), sha)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, env := range rec.Environments {
		for i := range env.Deployments {
			if env.Deployments[i].GitHubID == id {
				return &env.Deployments[i]
			}
		}
	}
	h.t.Fatalf("deployment %d is not in the audit of %s", id, sha)
	return nil
}

// loggedJobs lists the jobs of a deployment's record with a kept log, and
// their sizes.
func loggedJobs(d *pipeline.DeploymentRecord) map[int64]int {
	out := map[int64]int{}
	for _, j := range d.Jobs {
		if j.LogBytes > 0 {
			out[j.ID] = j.LogBytes
		}
	}
	return out
}

// A workflow that owns its deployment (its job references the environment
// without `deployment: false`, so Actions creates the deployment): the
// job's log is kept with that deployment, as lastmile's own deploy logs
// are, whether the job's completion is heard before or after the
// deployment's statuses that name it.
func TestDeployLogOfAWorkflowOwnedDeploymentIsKept(t *testing.T) {
	for _, jobFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("job completion heard first: %v", jobFirst), func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1)
			h.release(c0, c1, 10, "test")
			now := time.Now()
			const run, job, log = 77, 7701, "deploying production...\ndone\n"
			h.gh.mu.Lock()
			h.gh.logs = map[int64]string{job: log}
			h.gh.mu.Unlock()
			if jobFirst {
				h.jobCompleted(run, job, "deploy-production", c1, now, now.Add(3*time.Second))
			}
			h.externalDeployment(990, c1, "production", "github-actions[bot]", run, run, job, now)
			if !jobFirst {
				h.jobCompleted(run, job, "deploy-production", c1, now, now.Add(3*time.Second))
			}
			d := h.auditedDeployment(c1, 990)
			if d.Origin != pipeline.OriginExternal {
				t.Fatalf("deployment 990 recorded as %s's", d.Origin)
			}
			if got := loggedJobs(d); got[job] != len(log) {
				t.Errorf("audit of deployment 990: jobs with a log %v, want job %d's (%d bytes); jobs %+v", got, job, len(log), d.Jobs)
			}
			if got, err := h.db.JobLog(ctx, job); err != nil || string(got) != log {
				t.Errorf("JobLog(%d): %q, %v; want %q", job, got, err, log)
			}
		})
	}
}

// A deployment made by hand through the API (GitHub links it to no run)
// gets no deploy log, whatever job its statuses' log_url names: anyone who
// may write deployments could otherwise have lastmile keep any job's log
// — a build job's, say — as what that deployment did. The job of Actions'
// own deployment in the same run keeps its log there, and no other log is
// asked of GitHub.
func TestHandMadeDeploymentGetsNoDeployLog(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.release(c0, c1, 10, "test")
	now := time.Now()
	const run, build, deploy = 77, 7702, 7701
	h.gh.mu.Lock()
	h.gh.logs = map[int64]string{build: "build: the secrets of the build\n", deploy: "deploying production...\ndone\n"}
	h.gh.mu.Unlock()
	h.externalDeployment(990, c1, "production", "github-actions[bot]", run, run, deploy, now)
	h.jobCompleted(run, build, "build", c1, now.Add(-10*time.Second), now)
	h.jobCompleted(run, deploy, "deploy-production", c1, now, now.Add(3*time.Second))
	// By hand, after the jobs completed: its statuses name the build job,
	// then the deploy job, of run 77.
	h.externalDeployment(991, c1, "production", "mallory", 0, run, build, now.Add(5*time.Second))
	h.externalDeployment(992, c1, "production", "mallory", 0, run, deploy, now.Add(6*time.Second))
	for _, id := range []int64{991, 992} {
		if d := h.auditedDeployment(c1, id); len(d.Jobs) > 0 || len(d.Runs) > 0 {
			t.Errorf("the hand-made deployment %d shows runs %+v and jobs %+v", id, d.Runs, d.Jobs)
		}
	}
	if log, err := h.db.JobLog(ctx, build); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("the build job's log was kept as a deploy log: %q, %v", log, err)
	}
	if got := loggedJobs(h.auditedDeployment(c1, 990)); len(got) != 1 || got[deploy] == 0 {
		t.Errorf("Actions' deployment 990 keeps the logs of jobs %v, want job %d's only", got, deploy)
	}
	h.gh.mu.Lock()
	asks := h.gh.logAsks
	h.gh.mu.Unlock()
	if asks != 1 {
		t.Errorf("GitHub was asked %d times for a job log, want once (the deploy job's)", asks)
	}
}

// A run whose deploy job references its environment without `deployment:
// false` (Actions creates a twin of lastmile's deployment for it) and then
// promotes the commit to production in a job of its own (Actions'
// deployment, no twin): the deploy job's log is kept once, with lastmile's
// deployment — not with the twin, which the record does not count — and
// the production job's with Actions' production deployment.
func TestDeployLogOfAJobWithATwinIsKeptWithLastmilesDeployment(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	const run, deploy, production = 10, 1001, 1002
	logs := map[int64]string{deploy: "deploying test...\n", production: "deploying production...\n"}
	h.gh.mu.Lock()
	h.gh.logs = logs
	h.gh.mu.Unlock()
	start := time.Now().Add(-time.Second)
	// lastmile's test deployment, by the Action: its statuses name the run,
	// not the job.
	h.status(c1, "test", pipeline.DeploymentInProgress, run, true)
	lastmiles := h.gh.deployment(c1, "test").id
	// Actions' twin for the deploy job, its statuses naming the job.
	h.externalDeployment(995, c1, "test", "octocat", run, run, deploy, time.Now())
	if d := h.auditedDeployment(c1, 995); d.TwinOf == 0 {
		t.Fatalf("deployment 995 is not recorded as the twin of lastmile's: %+v", d.Deployment)
	}
	h.status(c1, "test", pipeline.DeploymentSuccess, run, true)
	h.jobCompleted(run, deploy, "deploy", c1, start, time.Now().Add(3*time.Second))
	// The next job of the run deploys production, Actions' deployment only.
	next := time.Now().Add(5 * time.Second)
	h.externalDeployment(996, c1, "production", "octocat", run, run, production, next)
	h.jobCompleted(run, production, "deploy-production", c1, next, next.Add(3*time.Second))

	if got := loggedJobs(h.auditedDeployment(c1, lastmiles)); len(got) != 1 || got[deploy] != len(logs[deploy]) {
		t.Errorf("lastmile's test deployment keeps the logs of jobs %v, want job %d's only", got, deploy)
	}
	if got := loggedJobs(h.auditedDeployment(c1, 995)); len(got) != 0 {
		t.Errorf("the twin keeps the logs of jobs %v, want none (lastmile's deployment keeps them)", got)
	}
	if got := loggedJobs(h.auditedDeployment(c1, 996)); len(got) != 1 || got[production] != len(logs[production]) {
		t.Errorf("Actions' production deployment keeps the logs of jobs %v, want job %d's only", got, production)
	}
	for job, want := range logs {
		if got, err := h.db.JobLog(ctx, job); err != nil || string(got) != want {
			t.Errorf("JobLog(%d): %q, %v; want %q", job, got, err, want)
		}
	}
}

// Actions' deployment for a job of the run that lastmile's deployment
// triggered is its twin; one for a job of another run — the commit
// redeployed by a workflow run by hand — is a deployment of its own: no
// twin, its job's log kept with it. Neither is counted.
func TestAJobDeploymentOfAnotherRunIsNoTwin(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.release(c0, c1, 10, "test") // lastmile's deployment of c1 to test, run 10
	counted := h.deploymentsCounted()
	now := time.Now()
	h.gh.mu.Lock()
	h.gh.logs = map[int64]string{7701: "redeploying test\n"}
	h.gh.mu.Unlock()
	h.externalDeployment(990, c1, "test", "github-actions[bot]", 10, 10, 1001, now) // the twin, run 10
	h.externalDeployment(991, c1, "test", "octocat", 77, 77, 7701, now)             // a run by hand
	h.jobCompleted(77, 7701, "deploy", c1, now, now.Add(3*time.Second))
	ours, err := h.db.Deployment(ctx, h.gh.deployment(c1, "test").id)
	if err != nil {
		t.Fatal(err)
	}
	if twin, err := h.db.Deployment(ctx, 990); err != nil || twin.TwinOf != ours.ID {
		t.Errorf("Actions' deployment for run 10's job: twin of %v (%v); want lastmile's, %d", twin.TwinOf, err, ours.ID)
	}
	if other, err := h.db.Deployment(ctx, 991); err != nil || other.TwinOf != 0 {
		t.Errorf("Actions' deployment for run 77's job: twin of %v (%v); want none", other.TwinOf, err)
	}
	if got := loggedJobs(h.auditedDeployment(c1, 991)); got[7701] == 0 {
		t.Errorf("logs kept with run 77's deployment: %v; want job 7701's", got)
	}
	if got := h.deploymentsCounted(); fmt.Sprint(got) != fmt.Sprint(counted) {
		t.Errorf("deployments counted: %v, before the external ones %v", got, counted)
	}
}

// Actions' own deployment names its deploy job in its statuses' log_url:
// another job of the run that was running at its in_progress (a lint, a
// matrix leg) is not taken for it, its log not kept as the deploy log.
func TestAParallelJobIsNotTakenForAWorkflowOwnedDeploysJob(t *testing.T) {
	h := newHarness(t, c0, c1)
	h.release(c0, c1, 10, "test")
	now := time.Now()
	const run, deployJob, lintJob = 77, 7701, 7702
	h.gh.mu.Lock()
	h.gh.logs = map[int64]string{deployJob: "deploying production\n", lintJob: "linting\n"}
	h.gh.mu.Unlock()
	h.externalDeployment(990, c1, "production", "github-actions[bot]", run, run, deployJob, now)
	h.jobCompleted(run, lintJob, "lint", c1, now.Add(-time.Second), now.Add(5*time.Second))
	h.jobCompleted(run, deployJob, "deploy-production", c1, now, now.Add(3*time.Second))
	got := loggedJobs(h.auditedDeployment(c1, 990))
	if got[lintJob] != 0 || got[deployJob] == 0 {
		t.Errorf("logs kept with deployment 990: %v; want the deploy job's (%d) alone", got, deployJob)
	}
}
