package pipeline_test

// Randomized scenario testing of `deployments: workflow`: a workflow on
// push creates every environment's deployment — Actions' own, one job per
// environment, each job after the one before, each asking lastmile as the
// environment's custom deployment protection rule — and lastmile creates
// none. Each seed is a repository so configured with two or three
// environments and a random sequence of pushes, jobs starting (their
// deployment events and protection-rule requests delivered late, out of
// order or twice), the jobs GitHub lets run ending in success or failure,
// re-runs of failed jobs (or of all jobs), GitHub's automatic inactive,
// lastmile's answers failing on GitHub's side (not taken, or taken with the
// reply lost) and the sweep that sends them again. GitHub is modelled
// faithfully enough for the invariants: a job never runs unless GitHub took
// an approval for it, the jobs of a run go in environment order, each only
// after the one before succeeded in that attempt, and an answer goes to
// the job of the run that waits for the environment's rule (GitHub answers
// by run and environment). Per seed, the jobs may have concurrency groups
// (one job at a time per environment, as action/examples/deploy-on-push.yml
// has), and GitHub may fail one answer in four. lastmile's sweep runs every
// minute of the virtual clock. At the end everything is delivered, GitHub
// well, and every run is taken on to its end.
//
//	go test ./pipeline -run TestRandomWorkflowScenarios -count=1     (100 seeds; 4 under -race)
//	LASTMILE_FUZZ_SEEDS=500 LASTMILE_FUZZ_STEPS=50 go test ./pipeline -run TestRandomWorkflowScenarios
//	LASTMILE_FUZZ_SEED=17 LASTMILE_FUZZ_VERBOSE=1 go test ./pipeline -run TestRandomWorkflowScenarios -v   (one seed, its event log)
//
// The invariants (checked after every step, named in a violation):
//
//	wf1  lastmile never creates a deployment, nor writes a status on a job's.
//	wf2  the rule approves a job (GitHub takes the approval) only for a commit
//	     lastmile knows succeeded in the environment before; never where a
//	     newer release lastmile knows has succeeded there (backwards) or in
//	     the environment before (newest wins); never for a release lastmile
//	     stopped as superseded; every answer sent was recorded first, and
//	     none but its own once lastmile has decided on a waiting job's request.
//	wf3  a completed release has a successful job deployment in the last
//	     environment; one stopped as failed a job of its own that ran and
//	     failed; one superseded the newer release's success its reason
//	     names; once every webhook is handled, no active release has a
//	     success in the last environment; a completed or superseded release
//	     stays so; a recorded decision is never rewritten.
//	wf4  a deployment counted (workflow_owned, ended) is a job GitHub let
//	     run, and one lastmile marks workflow_owned has an approval of its
//	     own deployment; lastmile_deployments_total and the duration
//	     histogram count exactly the counted deployments' first final
//	     statuses; a job lastmile approved, whose release it knew, is counted
//	     once its final status is handled; lead times at most one per commit,
//	     times to restore at most one per counted deploy that failed.
//	wf5  every handler succeeds but for GitHub's failures.
//	wf6  at the end, with everything delivered and GitHub well: every job
//	     has its answer, and the newest release, its jobs run to success
//	     (its failed jobs re-run), completes.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// wfJobState is where a job stands on GitHub.
type wfJobState int

const (
	wfWaiting  wfJobState = iota // its deployment made, waiting for the protection rule's answer
	wfApproved                   // GitHub took an approval; not started yet
	wfRunning                    // deploying: in_progress posted
	wfEnded                      // success or failure (ran), or rejected (never ran)
)

// wfJob is one attempt of one job of a run: Actions' own deployment for it.
type wfJob struct {
	run      *wfRun
	attempt  int
	stage    int    // its environment's index in the configuration
	id       int64  // GitHub's ID of the job's deployment
	delivery string // its protection-rule request's delivery ID
	state    wfJobState
	ran      bool                     // GitHub let it run (it posted in_progress)
	final    pipeline.DeploymentState // its final status on GitHub ("" before it ends)
	inactive bool                     // GitHub made it inactive after a newer success
	// staleAnswer: the answer GitHub applied to it was sent for another
	// request of the run (an earlier attempt's) before lastmile handled
	// this job's own.
	staleAnswer bool
}

// wfRun is the workflow run of a push: its attempts' jobs.
type wfRun struct {
	id         int64
	sha        string
	attempt    int
	next       int    // the stage whose job starts next (when current is nil)
	current    *wfJob // the job of this attempt that waits or runs, or nil
	done       bool
	conclusion string
	failed     int // the stage that failed, when done with a failure
	jobs       []*wfJob
}

// wfGitHub is the harness's fake GitHub, where the protection rule's
// answers go to the run's waiting job.
type wfGitHub struct {
	*fakeGitHub
	s *wfScenario
	// loseReplies is how many of the next answers GitHub takes though
	// lastmile gets a 502.
	loseReplies int
}

func (g *wfGitHub) CreateDeployment(_ context.Context, _ pipeline.Repo, req pipeline.DeploymentRequest) (int64, time.Time, error) {
	g.s.violate("wf1: lastmile called CreateDeployment for %s → %s", sh(req.SHA), req.Environment)
	return 0, time.Time{}, errors.New("lastmile creates no deployment here")
}

// ReviewProtectionRule is GitHub taking (or not) lastmile's answer for the
// job of run that waits for env's rule.
func (g *wfGitHub) ReviewProtectionRule(ctx context.Context, r pipeline.Repo, run int64, env, state, comment string) error {
	s := g.s
	job := s.waitingJob(run, env)
	if job == nil {
		s.logf("  GitHub refuses lastmile's %s for run %d → %s (422: the run waits for no answer there)", state, run, env)
		return &pipeline.RefusedError{Status: 422, Message: "No pending deployment protection rule for this environment"}
	}
	if s.flaky && s.rng.IntN(4) == 0 {
		// GitHub, flaky in this seed, fails this answer (taken or not).
		if s.rng.IntN(2) == 0 {
			s.gh.mu.Lock()
			s.gh.failAnswers++
			s.gh.mu.Unlock()
		} else {
			g.loseReplies++
		}
	}
	if err := g.fakeGitHub.ReviewProtectionRule(ctx, r, run, env, state, comment); err != nil {
		s.logf("  GitHub fails lastmile's %s for run %d → %s (not taken): %v", state, run, env, err)
		return err
	}
	s.take(job, state, comment)
	if g.loseReplies > 0 {
		g.loseReplies--
		s.logf("  … GitHub took it, but its reply is lost (502)")
		return &pipeline.RefusedError{Status: 502, Message: "Bad Gateway"}
	}
	return nil
}

type wfScenario struct {
	t          *testing.T
	h          *harness
	gh         *wfGitHub
	rng        *rand.Rand
	envs       []string
	concurrent bool // the jobs have concurrency groups: one job at a time per environment
	flaky      bool // GitHub fails one answer in four (taken or not), besides the failures act sets up

	clock     time.Time
	lastSweep time.Time
	history   []string // main's commits, oldest first
	npush     int
	runs      []*wfRun
	runByID   map[int64]*wfRun
	jobs      []*wfJob

	pending, delivered []delivery
	// What lastmile has handled, for the invariants on its answers: the
	// successes whose status webhook it handled, the protection-rule
	// requests it decided, and its releases after the last delivery.
	knownSuccess map[int64]bool
	decided      map[string]bool
	releases     map[string]*pipeline.Release // by commit
	decisions    map[string]string            // by delivery: the decision recorded (once not waiting)

	stats      map[string]int
	log        []string
	violations []string
}

func (s *wfScenario) now() time.Time {
	s.clock = s.clock.Add(time.Millisecond)
	return s.clock
}

func (s *wfScenario) logf(format string, args ...any) {
	s.log = append(s.log, fmt.Sprintf(format, args...))
}

func (s *wfScenario) violate(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if slices.Contains(s.violations, msg) {
		return
	}
	s.violations = append(s.violations, msg)
	s.logf("!! VIOLATION %s", msg)
}

func (s *wfScenario) queue(name string, fn func() error) {
	s.pending = append(s.pending, delivery{name, fn})
}

func (s *wfScenario) last() int { return len(s.envs) - 1 }

// after reports whether commit a comes after commit b on main.
func (s *wfScenario) after(a, b string) bool {
	return slices.Index(s.history, a) > slices.Index(s.history, b)
}

// push puts n new commits on main and queues the push's webhook; GitHub
// starts the workflow on push for its head.
func (s *wfScenario) push(n int) {
	before := s.history[len(s.history)-1]
	var commits []pipeline.Commit
	for range n {
		sha := strings.Repeat(fmt.Sprintf("c%03x", len(s.history)), 10)
		s.gh.mu.Lock()
		s.gh.history = append(s.gh.history, sha)
		s.gh.head = sha
		s.gh.mu.Unlock()
		s.history = append(s.history, sha)
		commits = append(commits, pipeline.Commit{SHA: sha, Title: "commit " + sh(sha[36:]), Author: "dev",
			Timestamp: s.clock.Add(-time.Duration(1+s.rng.IntN(60)) * time.Minute)})
	}
	after := s.history[len(s.history)-1]
	s.npush++
	p := pipeline.Push{Repo: shop, DeliveryID: fmt.Sprintf("push-%d", s.npush), Ref: "refs/heads/main", Before: before, After: after,
		DefaultBranch: "main", Pusher: "octocat", PushedAt: s.clock, Commits: commits}
	s.logf("push-%d: main %s → %s, %d commits", s.npush, s.c(before), s.c(after), n)
	s.queue(fmt.Sprintf("push-%d %s→%s", s.npush, s.c(before), s.c(after)), func() error {
		return s.h.engine.HandlePush(context.Background(), p)
	})
	run := &wfRun{id: 500 + int64(s.npush), sha: after, attempt: 1}
	s.runs = append(s.runs, run)
	s.runByID[run.id] = run
	s.logf("  run %d of %s starts (on push)", run.id, s.c(after))
	s.runEvent(run, "in_progress", "")
}

// c names a commit in the log.
func (s *wfScenario) c(sha string) string {
	return "c" + strconv.Itoa(slices.Index(s.history, sha))
}

// runEvent queues the run's workflow_run webhook.
func (s *wfScenario) runEvent(run *wfRun, action, conclusion string) {
	wr := pipeline.WorkflowRun{Repo: shop, Action: action, RunID: run.id, Name: "Deliver", Event: "push", HeadSHA: run.sha,
		Status: action, Conclusion: conclusion, URL: fmt.Sprintf("https://github.com/acme/shop/actions/runs/%d", run.id),
		Attempt: run.attempt, CreatedAt: s.clock, UpdatedAt: s.now()}
	s.queue(fmt.Sprintf("run %d %s %s (attempt %d)", run.id, action, conclusion, run.attempt), func() error {
		return s.h.engine.HandleWorkflowRun(context.Background(), wr)
	})
}

// info is what GitHub's webhooks say of a job's deployment.
func (s *wfScenario) info(j *wfJob) pipeline.DeploymentInfo {
	s.gh.mu.Lock()
	created := s.gh.byID(j.id).createdAt
	s.gh.mu.Unlock()
	return pipeline.DeploymentInfo{GitHubID: j.id, SHA: j.run.sha, Ref: "main", Environment: s.envs[j.stage], Creator: "octocat",
		CreatedAt: created, WorkflowRunID: j.run.id, WorkflowRunEvent: "push"}
}

// startable says whether the run's next job can start now.
func (s *wfScenario) startable(run *wfRun) bool {
	if run.done || run.current != nil || run.next > s.last() {
		return false
	}
	if s.concurrent {
		for _, o := range s.runs {
			if o.current != nil && o.current.stage == run.next {
				return false // its concurrency group holds it
			}
		}
	}
	return true
}

// startJob is the run's next job reaching its environment: GitHub makes
// the job's deployment and asks the environment's protection rule. Their
// webhooks may come in either order, and the request twice.
func (s *wfScenario) startJob(run *wfRun) {
	s.gh.mu.Lock()
	s.gh.lastID++
	id := 1000 + s.gh.lastID
	s.gh.deps = append(s.gh.deps, &fakeDeployment{id: id, sha: run.sha, env: s.envs[run.next], createdAt: s.now()})
	s.gh.mu.Unlock()
	j := &wfJob{run: run, attempt: run.attempt, stage: run.next, id: id, delivery: fmt.Sprintf("rule-%d", id)}
	run.current = j
	run.jobs = append(run.jobs, j)
	s.jobs = append(s.jobs, j)
	env := s.envs[j.stage]
	s.logf("  run %d (%s) attempt %d: job %s starts, deployment %d; it waits for the protection rule", run.id, s.c(run.sha), j.attempt, env, id)
	info := s.info(j)
	deployment := delivery{fmt.Sprintf("deployment event %d (%s → %s)", id, s.c(run.sha), env), func() error {
		return s.h.engine.HandleDeployment(context.Background(), pipeline.NewDeployment{Repo: shop, Deployment: info})
	}}
	req := pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: j.delivery, Environment: env, SHA: run.sha, Ref: "main",
		Event: "push", RunID: run.id, DeploymentID: id}
	rule := delivery{fmt.Sprintf("protection rule %s (run %d attempt %d, %s → %s, deployment %d)", j.delivery, run.id, j.attempt, s.c(run.sha), env, id),
		func() error { return s.judge(j, req) }}
	if s.rng.IntN(10) < 3 {
		s.logf("  (its protection-rule request comes before its deployment event)")
		s.pending = append(s.pending, rule, deployment)
	} else {
		s.pending = append(s.pending, deployment, rule)
	}
	if s.rng.IntN(10) == 0 {
		s.pending = append(s.pending, rule) // GitHub redelivers it
	}
}

// judge hands lastmile a job's protection-rule request.
func (s *wfScenario) judge(j *wfJob, req pipeline.ProtectionRuleRequest) error {
	err := s.h.engine.HandleProtectionRule(context.Background(), req)
	dec, derr := s.h.db.ProtectionDecision(context.Background(), req)
	if derr != nil {
		if err == nil {
			s.violate("wf5: no decision recorded for %s", req.DeliveryID)
		}
		return err
	}
	s.decided[req.DeliveryID] = true
	if dec.Withdrawn != nil {
		s.logf("  decision on %s: %s, withdrawn (%s)", req.DeliveryID, dec.State, dec.Withdrawn.Comment)
	} else {
		s.logf("  decision on %s: %s (%s)", req.DeliveryID, dec.State, dec.Comment)
	}
	return err
}

// take is GitHub applying lastmile's answer to the job waiting for it:
// an approval lets it run; a rejection ends its deployment in failure,
// and its run fails.
func (s *wfScenario) take(j *wfJob, state, comment string) {
	env := s.envs[j.stage]
	own, err := s.h.db.ProtectionDecision(context.Background(), pipeline.ProtectionRuleRequest{DeliveryID: j.delivery})
	switch {
	case err != nil:
		// Documented: a later attempt's request lastmile has not handled
		// yet is not seen.
		j.staleAnswer = true
		s.stats["answer of another attempt applied"]++
		s.logf("  (GitHub applies to job %d an answer sent before lastmile handled its own request)", j.id)
	case own.State != pipeline.ProtectionWaiting:
		// wf2: once it has decided on this job's own request, lastmile
		// sends no other request's answer to the run there.
		if answer, _ := own.Answer(); answer != state {
			s.violate("wf2: lastmile sent %s for run %d → %s, whose waiting job %d it has decided on: %s", state, j.run.id, env, j.id, answer)
		}
	}
	s.checkRecorded(j, state)
	if state == pipeline.ProtectionApproved {
		s.checkApproval(j)
		j.state = wfApproved
		s.stats["approved"]++
		s.logf("  GitHub takes the approval of run %d → %s: job %d may run", j.run.id, env, j.id)
		return
	}
	s.stats["rejected"]++
	s.logf("  GitHub takes the rejection of run %d → %s (%s): job %d fails", j.run.id, env, comment, j.id)
	s.end(j, pipeline.DeploymentFailure)
}

// checkRecorded (wf2): lastmile records a decision before it sends it —
// one of this run's requests there, the one answered.
func (s *wfScenario) checkRecorded(j *wfJob, state string) {
	ctx := context.Background()
	for _, o := range j.run.jobs {
		if o.stage != j.stage {
			continue
		}
		dec, err := s.h.db.ProtectionDecision(ctx, pipeline.ProtectionRuleRequest{DeliveryID: o.delivery})
		if err != nil {
			continue
		}
		if got, _ := dec.Answer(); got == state {
			return
		}
	}
	s.violate("wf2: lastmile sent %s for run %d → %s, which no decision recorded for the run there says", state, j.run.id, s.envs[j.stage])
}

// knows reports whether lastmile has handled a success of sha's job in
// stage.
func (s *wfScenario) knows(sha string, stage int) bool {
	for _, j := range s.jobs {
		if j.run.sha == sha && j.stage == stage && s.knownSuccess[j.id] {
			return true
		}
	}
	return false
}

// newerKnown is a commit after sha whose release lastmile has recorded and
// whose success in stage it has handled, or "".
func (s *wfScenario) newerKnown(sha string, stage int) string {
	for _, j := range s.jobs {
		if s.after(j.run.sha, sha) && j.stage == stage && s.knownSuccess[j.id] && s.releases[j.run.sha] != nil {
			return j.run.sha
		}
	}
	return ""
}

// checkApproval (wf2) judges an approval GitHub takes against what
// lastmile had handled before the delivery (or sweep) that sent it.
func (s *wfScenario) checkApproval(j *wfJob) {
	sha, env := j.run.sha, s.envs[j.stage]
	if j.stage > 0 && !s.knows(sha, j.stage-1) {
		s.violate("wf2: approved %s → %s (job %d), which lastmile never heard succeed in %s", s.c(sha), env, j.id, s.envs[j.stage-1])
	}
	if n := s.newerKnown(sha, j.stage); n != "" {
		s.violate("wf2: approved %s → %s (job %d) after newer %s succeeded there (backwards)", s.c(sha), env, j.id, s.c(n))
	}
	if j.stage > 0 {
		if n := s.newerKnown(sha, j.stage-1); n != "" {
			s.violate("wf2: approved %s → %s (job %d) after newer %s passed %s (newest wins)", s.c(sha), env, j.id, s.c(n), s.envs[j.stage-1])
		}
	}
	if r := s.releases[sha]; r != nil && r.Withdrawn() {
		s.violate("wf2: approved %s → %s (job %d), its release #%d stopped: %s", s.c(sha), env, j.id, r.ID, r.StopReason)
	}
}

// post has GitHub post a status of the job's deployment and queues its
// webhook.
func (s *wfScenario) post(j *wfJob, state pipeline.DeploymentState) {
	s.gh.mu.Lock()
	st := s.gh.postAs(j.id, state, fmt.Sprintf("https://github.com/%s/runs/%d", shop.FullName(), j.id+5000), "octocat")
	s.gh.mu.Unlock()
	info := s.info(j)
	s.logf("  GitHub: %s on deployment %d (%s → %s), status %d", state, j.id, s.c(j.run.sha), s.envs[j.stage], st.GitHubID)
	s.queue(fmt.Sprintf("status %d %s on %d (%s → %s)", st.GitHubID, state, j.id, s.c(j.run.sha), s.envs[j.stage]), func() error {
		return s.status(j, info, st)
	})
}

// status hands lastmile a status webhook of a job's deployment; once it
// has handled a final status (wf4) a job it approved, of a release it
// knew, is counted.
func (s *wfScenario) status(j *wfJob, info pipeline.DeploymentInfo, st pipeline.StatusInfo) error {
	ctx := context.Background()
	knewRelease := s.releases[j.run.sha] != nil
	// The handler records a success first, then answers the requests that
	// waited for it: lastmile knows it from then on.
	known := s.knownSuccess[j.id]
	s.knownSuccess[j.id] = known || st.State == pipeline.DeploymentSuccess
	if err := s.h.engine.HandleDeploymentStatus(ctx, pipeline.NewDeploymentStatus{Repo: shop, Deployment: info, Status: st}); err != nil {
		s.knownSuccess[j.id] = known
		return err
	}
	final := st.State == pipeline.DeploymentSuccess || st.State == pipeline.DeploymentFailure || st.State == pipeline.DeploymentError
	if !final || !knewRelease || !s.decided[j.delivery] {
		return nil
	}
	dec, err := s.h.db.ProtectionDecision(ctx, pipeline.ProtectionRuleRequest{DeliveryID: j.delivery})
	if err != nil || dec.State != pipeline.ProtectionApproved || dec.Withdrawn != nil {
		return nil
	}
	if rec, err := s.h.db.Deployment(ctx, j.id); err != nil || !rec.WorkflowOwned || rec.TerminalAt.IsZero() {
		s.violate("wf4: job %d (%s → %s), approved (%s), of a release lastmile knew, ended %s and is not counted",
			j.id, s.c(j.run.sha), s.envs[j.stage], j.delivery, st.State)
	}
	return nil
}

// end is the job's deployment's final status; the run goes on to its
// next job after a success, and fails otherwise.
func (s *wfScenario) end(j *wfJob, state pipeline.DeploymentState) {
	run := j.run
	j.state, j.final = wfEnded, state
	run.current = nil
	s.post(j, state)
	switch {
	case state == pipeline.DeploymentSuccess:
		s.autoInactive(j)
		run.next = j.stage + 1
		if run.next > s.last() {
			run.done, run.conclusion = true, "success"
		} else if s.rng.IntN(2) == 0 && s.startable(run) {
			s.startJob(run) // GitHub starts the next job within seconds
		}
	default:
		run.done, run.conclusion, run.failed = true, "failure", j.stage
		if state == pipeline.DeploymentError {
			run.conclusion = "cancelled"
		}
	}
	if run.done {
		s.logf("  run %d (%s) attempt %d completed: %s", run.id, s.c(run.sha), run.attempt, run.conclusion)
		s.runEvent(run, "completed", run.conclusion)
		if run.conclusion != "success" && s.rng.IntN(6) == 0 {
			s.rerun(run, false) // at once, by someone who saw it fail
		}
	}
}

// rerun is someone re-running the failed jobs of a completed run (the
// failed job runs again, a deployment of its own asking the rule again, in
// the same run), or all its jobs (from the first environment). GitHub
// starts the first of them at once, unless its concurrency group holds it.
func (s *wfScenario) rerun(run *wfRun, all bool) {
	run.attempt++
	run.done, run.next = false, run.failed
	what := "the failed jobs"
	if all {
		run.next, what = 0, "all jobs"
	}
	s.logf("  re-run of %s of run %d (%s), attempt %d, from %s", what, run.id, s.c(run.sha), run.attempt, s.envs[run.next])
	s.stats["re-run "+what]++
	s.runEvent(run, "in_progress", "")
	if s.startable(run) {
		s.startJob(run)
	}
}

// autoInactive is GitHub making the earlier successful deployments of a
// non-production environment inactive after a success there.
func (s *wfScenario) autoInactive(j *wfJob) {
	if j.stage == s.last() || s.rng.IntN(2) == 0 {
		return
	}
	for _, o := range s.jobs {
		if o.stage == j.stage && o.id < j.id && o.final == pipeline.DeploymentSuccess && !o.inactive {
			o.inactive = true
			s.post(o, pipeline.DeploymentInactive)
		}
	}
}

// proceed moves an approved job on: it starts (queued, then in_progress),
// or, started, ends in success, failure or error.
func (s *wfScenario) proceed(j *wfJob) {
	switch j.state {
	case wfApproved:
		if s.rng.IntN(3) == 0 {
			s.post(j, pipeline.DeploymentQueued)
		}
		j.state, j.ran = wfRunning, true
		s.post(j, pipeline.DeploymentInProgress)
	case wfRunning:
		switch r := s.rng.IntN(20); {
		case r < 14:
			s.end(j, pipeline.DeploymentSuccess)
		case r < 19:
			s.end(j, pipeline.DeploymentFailure)
		default:
			s.end(j, pipeline.DeploymentError)
		}
	}
}

// waitingJob is the job of run that waits for env's protection rule.
func (s *wfScenario) waitingJob(run int64, env string) *wfJob {
	r := s.runByID[run]
	if r == nil || r.current == nil || r.current.state != wfWaiting || !strings.EqualFold(s.envs[r.current.stage], env) {
		return nil
	}
	return r.current
}

func (s *wfScenario) pick(runs []*wfRun) *wfRun {
	if len(runs) == 0 {
		return nil
	}
	if s.rng.IntN(10) < 6 { // more often one of the newest
		return runs[len(runs)-1-s.rng.IntN(min(2, len(runs)))]
	}
	return runs[s.rng.IntN(len(runs))]
}

func (s *wfScenario) runsWhere(ok func(*wfRun) bool) []*wfRun {
	var out []*wfRun
	for _, r := range s.runs {
		if ok(r) {
			out = append(out, r)
		}
	}
	return out
}

// act makes something happen on GitHub (its webhooks not yet delivered).
func (s *wfScenario) act() {
	switch r := s.rng.IntN(100); {
	case r < 14:
		n := 1
		if s.rng.IntN(5) == 0 {
			n = 2 // the run is the head's; the commit before it has none
		}
		s.push(n)
	case r < 40:
		if runs := s.runsWhere(s.startable); len(runs) > 0 {
			s.startJob(runs[s.rng.IntN(len(runs))]) // any: an older run's job may come late
		}
	case r < 70:
		if run := s.pick(s.runsWhere(func(r *wfRun) bool { return r.current != nil && r.current.state != wfWaiting })); run != nil {
			s.proceed(run.current)
		}
	case r < 78:
		if run := s.pick(s.runsWhere(func(r *wfRun) bool { return r.done && r.conclusion != "success" })); run != nil {
			s.rerun(run, false)
		}
	case r < 83:
		if run := s.pick(s.runsWhere(func(r *wfRun) bool { return r.done })); run != nil {
			s.rerun(run, true)
		}
	case r < 88:
		if s.rng.IntN(2) == 0 {
			s.gh.mu.Lock()
			s.gh.failAnswers++
			s.gh.mu.Unlock()
			s.stats["answer failed"]++
			s.logf("  GitHub: the next protection-rule answer fails (502, not taken)")
		} else {
			s.gh.loseReplies++
			s.stats["answer's reply lost"]++
			s.logf("  GitHub: the next protection-rule answer is taken, its reply lost (502)")
		}
	case r < 93:
		// A minute or more passes: the sweep runs.
		s.clock = s.clock.Add(time.Duration(61+s.rng.IntN(120)) * time.Second)
		s.sweep()
	default:
		s.deliver()
	}
}

// sweep is lastmile's periodic sweep (every minute): the answers GitHub
// did not confirm, a minute old or more, are judged again and sent.
func (s *wfScenario) sweep() int {
	s.lastSweep = s.clock
	n, err := s.h.engine.AnswerUnpostedProtectionRules(context.Background())
	if n > 0 || err != nil {
		s.logf("sweep: %d answers sent again (%v)", n, err)
	}
	if err != nil && !strings.Contains(err.Error(), "Bad Gateway") {
		s.violate("wf5: the sweep failed: %v", err)
	}
	s.snapshot(false)
	return n
}

// deliver hands lastmile one webhook: the oldest, the newest, another one
// out of order, or one again.
func (s *wfScenario) deliver() {
	var dl delivery
	switch r := s.rng.IntN(100); {
	case r < 6 && len(s.delivered) > 0:
		dl = s.delivered[s.rng.IntN(len(s.delivered))]
		s.logf("deliver again: %s", dl.name)
		s.stats["redelivered"]++
	case len(s.pending) == 0:
		return
	case r < 55:
		dl, s.pending = s.pending[0], s.pending[1:]
		s.logf("deliver: %s", dl.name)
	case r < 70 && len(s.pending) > 1:
		// The newest first: a job's request before the previous job's
		// success, say.
		dl, s.pending = s.pending[len(s.pending)-1], s.pending[:len(s.pending)-1]
		s.logf("deliver out of order (newest first): %s", dl.name)
		s.stats["out of order"]++
	default:
		i := s.rng.IntN(len(s.pending))
		dl = s.pending[i]
		s.pending = slices.Delete(s.pending, i, i+1)
		s.logf("deliver out of order: %s", dl.name)
		if i > 0 {
			s.stats["out of order"]++
		}
	}
	s.handle(dl)
}

func (s *wfScenario) handle(dl delivery) {
	err := dl.run()
	var ignored *pipeline.Ignored
	var again *pipeline.LookAgain
	switch {
	case err == nil:
		s.delivered = append(s.delivered, dl)
	case errors.As(err, &ignored):
		s.logf("  ignored: %s", ignored.Reason)
		s.delivered = append(s.delivered, dl)
	case errors.As(err, &again):
		s.logf("  look again: %s", again.Reason)
		s.pending = append(s.pending, dl)
	case strings.Contains(err.Error(), "Bad Gateway") && s.rng.IntN(2) == 0:
		// GitHub failed the answer: the delivery is retried.
		s.logf("  failed (GitHub error, retried later): %v", err)
		s.pending = append(s.pending, dl)
	case strings.Contains(err.Error(), "Bad Gateway"):
		// It went dead: the sweep sends its recorded answer.
		s.logf("  failed (GitHub error), dead: %v", err)
		s.delivered = append(s.delivered, dl)
	default:
		s.violate("wf5: %s returned %v", dl.name, err)
		s.delivered = append(s.delivered, dl)
	}
	s.snapshot(false)
}

// snapshot reads lastmile's releases after a delivery, those it may still
// move on — all of them, and its decisions, with all (check) — for wf3: a
// completed or superseded release stays so; a decision is never rewritten.
func (s *wfScenario) snapshot(all bool) {
	ctx := context.Background()
	for _, sha := range s.history[1:] {
		if was := s.releases[sha]; !all && was != nil && (was.State == pipeline.ReleaseCompleted || was.Withdrawn()) {
			continue // looked at again by check
		}
		r, err := s.h.db.ReleaseOf(ctx, shop.ID, sha)
		if errors.Is(err, pipeline.ErrNotFound) {
			continue
		}
		if err != nil {
			s.t.Fatal(err)
		}
		if was := s.releases[sha]; was != nil {
			if was.State == pipeline.ReleaseCompleted && r.State != pipeline.ReleaseCompleted ||
				was.Withdrawn() && (!r.Withdrawn() || r.StopReason != was.StopReason) {
				s.violate("wf3: release #%d (%s) went from %s %s (%s) to %s %s (%s)", r.ID, s.c(sha),
					was.State, was.StopKind, was.StopReason, r.State, r.StopKind, r.StopReason)
			}
			if was.State != r.State || was.StopReason != r.StopReason {
				s.logf("  release #%d (%s): %s %s %s", r.ID, s.c(sha), r.State, r.StopKind, r.StopReason)
			}
		} else {
			s.logf("  release #%d (%s) recorded: %s %s", r.ID, s.c(sha), r.State, r.StopReason)
		}
		s.releases[sha] = r
	}
	if !all {
		return
	}
	for _, j := range s.jobs {
		if !s.decided[j.delivery] {
			continue
		}
		dec, err := s.h.db.ProtectionDecision(ctx, pipeline.ProtectionRuleRequest{DeliveryID: j.delivery})
		if err != nil {
			s.t.Fatal(err)
		}
		if dec.State == pipeline.ProtectionWaiting {
			continue
		}
		if was, ok := s.decisions[j.delivery]; ok && was != dec.State {
			s.violate("wf3: the decision on %s went from %s to %s", j.delivery, was, dec.State)
		}
		s.decisions[j.delivery] = dec.State
	}
}

// supersededBy reads a superseded release's reason: the newer release and
// the environment it succeeded in.
var supersededBy = regexp.MustCompile(`^superseded: newer release #(\d+) has (?:succeeded in (\S+)|passed (\S+), before \S+)$`)

// check verifies the invariants that can be read after a step.
func (s *wfScenario) check() {
	ctx := context.Background()
	s.snapshot(true)
	// wf1: no deployment of lastmile's, no status of lastmile's.
	s.gh.mu.Lock()
	written := len(s.gh.written)
	s.gh.mu.Unlock()
	if written > 0 {
		s.violate("wf1: lastmile wrote %d deployment statuses", written)
	}
	settled := len(s.pending) == 0
	// wf3: where the releases stand.
	byID := map[int64]string{}
	for sha, r := range s.releases {
		byID[r.ID] = sha
	}
	for _, sha := range s.history[1:] {
		r := s.releases[sha]
		if r == nil {
			continue
		}
		switch {
		case r.State == pipeline.ReleaseCompleted:
			if !s.succeeded(sha, s.last()) {
				s.violate("wf3: release #%d (%s) completed without a success in %s", r.ID, s.c(sha), s.envs[s.last()])
			}
		case r.State == pipeline.ReleaseActive:
			if settled && s.succeeded(sha, s.last()) {
				s.violate("wf3: release #%d (%s) is active, everything delivered, though its job succeeded in %s", r.ID, s.c(sha), s.envs[s.last()])
			}
		case r.StopKind == pipeline.StopFailed:
			if !slices.ContainsFunc(s.jobs, func(j *wfJob) bool {
				return j.run.sha == sha && j.ran && (j.final == pipeline.DeploymentFailure || j.final == pipeline.DeploymentError)
			}) {
				s.violate("wf3: release #%d (%s) stopped failed (%s) with no job of its own that ran and failed", r.ID, s.c(sha), r.StopReason)
			}
		case r.Withdrawn():
			m := supersededBy.FindStringSubmatch(r.StopReason)
			if m == nil {
				if !strings.HasPrefix(r.StopReason, "its deployment to ") || !strings.HasSuffix(r.StopReason, " was made inactive") {
					s.violate("wf3: release #%d (%s) superseded for an unexpected reason: %s", r.ID, s.c(sha), r.StopReason)
				}
				break
			}
			id, _ := strconv.ParseInt(m[1], 10, 64)
			env := m[2] + m[3]
			newer, ok := byID[id]
			if !ok || id <= r.ID || !s.succeeded(newer, slices.Index(s.envs, env)) {
				s.violate("wf3: release #%d (%s) superseded (%s), and release #%d has no success in %s", r.ID, s.c(sha), r.StopReason, id, env)
			}
		default:
			s.violate("wf3: release #%d (%s) stopped: %s %s", r.ID, s.c(sha), r.StopKind, r.StopReason)
		}
	}
	// wf4: what is counted.
	type key struct{ env, state string }
	want := map[key]float64{}
	durations, failedDeploys := map[string]uint64{}, map[string]uint64{}
	for _, j := range s.jobs {
		rec, err := s.h.db.Deployment(ctx, j.id)
		if errors.Is(err, pipeline.ErrNotFound) {
			continue
		}
		if err != nil {
			s.t.Fatal(err)
		}
		if !rec.WorkflowOwned {
			continue
		}
		env := s.envs[j.stage]
		if !j.ran && !rec.TerminalAt.IsZero() {
			why := "never approved"
			if j.staleAnswer {
				why = "given an earlier attempt's answer"
			}
			s.violate("wf4: deployment %d (%s → %s) is counted, and its job never ran (%s, its deployment %s)", j.id, s.c(j.run.sha), env, why, j.final)
		}
		dec, err := s.h.db.ProtectionDecision(ctx, pipeline.ProtectionRuleRequest{DeliveryID: j.delivery})
		if err != nil || dec.State != pipeline.ProtectionApproved || dec.DeploymentID != j.id {
			s.violate("wf4: deployment %d (%s → %s) counts with no approval of its own (%+v, %v)", j.id, s.c(j.run.sha), env, dec, err)
		}
		if !rec.TerminalAt.IsZero() {
			if j.final == "" {
				s.violate("wf4: deployment %d counted as ended, and it has not ended", j.id)
			}
			want[key{env, string(j.final)}]++
			durations[env]++
			if j.ran && j.final != pipeline.DeploymentSuccess {
				failedDeploys[env]++
			}
		}
	}
	snap, err := s.h.db.MetricsSnapshot(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	counted := map[key]float64{}
	for _, series := range snap.Counters[storage.MetricDeployments] { // repository, environment, state
		counted[key{series.Labels[1], series.Labels[2]}] += series.Value
	}
	observed := func(name, env string) uint64 {
		for _, series := range snap.Histograms[name] { // repository, environment
			if series.Labels[1] == env {
				return series.Count
			}
		}
		return 0
	}
	for _, env := range s.envs {
		for _, state := range []string{"success", "failure", "error"} {
			if g, w := counted[key{env, state}], want[key{env, state}]; g != w {
				s.violate("wf4: lastmile_deployments_total{%s,%s} is %v; the counted deployments say %v", env, state, g, w)
			}
		}
		if n := observed(metrics.DeploymentDuration, env); n != durations[env] {
			s.violate("wf4: %d deployment durations observed in %s; %d counted deployments ended there", n, env, durations[env])
		}
		// A commit's lead time is observed once per environment; a time to
		// restore once per failed deploy (one that started).
		if n := observed(metrics.LeadTime, env); n > uint64(len(s.history)-1) {
			s.violate("wf4: %d lead times observed in %s; %d commits were pushed", n, env, len(s.history)-1)
		}
		if n := observed(metrics.TimeToRestore, env); n > failedDeploys[env] {
			s.violate("wf4: %d times to restore observed in %s; %d counted deploys failed there", n, env, failedDeploys[env])
		}
	}
}

// succeeded reports whether a job of sha succeeded in stage on GitHub.
func (s *wfScenario) succeeded(sha string, stage int) bool {
	return slices.ContainsFunc(s.jobs, func(j *wfJob) bool {
		return j.run.sha == sha && j.stage == stage && j.final == pipeline.DeploymentSuccess
	})
}

// settle delivers everything (the oldest first, or any) with GitHub well,
// and has the sweep run (every few minutes, past its pauses) until every
// job has its answer.
func (s *wfScenario) settle() {
	s.gh.mu.Lock()
	s.gh.failAnswers = 0
	s.gh.mu.Unlock()
	s.gh.loseReplies = 0
	s.flaky = false
	for range 12 {
		for i := 0; len(s.pending) > 0 && i < 400; i++ {
			s.clock = s.clock.Add(5 * time.Second)
			k := 0
			if s.rng.IntN(2) == 0 {
				k = s.rng.IntN(len(s.pending))
			}
			dl := s.pending[k]
			s.pending = slices.Delete(s.pending, k, k+1)
			s.logf("settle: %s", dl.name)
			s.handle(dl)
		}
		s.check()
		if len(s.unanswered()) == 0 || len(s.violations) > 0 {
			return
		}
		s.clock = s.clock.Add(5 * time.Minute)
		s.sweep()
		s.check()
	}
}

// unanswered lists the jobs that wait for an answer lastmile owes: all
// those waiting but one whose answer lastmile decided over an hour ago and
// GitHub never took (the sweep sends it for that hour; the job waits for
// GitHub's 30 days).
func (s *wfScenario) unanswered() []*wfJob {
	var out []*wfJob
	for _, j := range s.jobs {
		if j.state != wfWaiting {
			continue
		}
		dec, err := s.h.db.ProtectionDecision(context.Background(), pipeline.ProtectionRuleRequest{DeliveryID: j.delivery})
		if err == nil && !dec.Posted && dec.State != pipeline.ProtectionWaiting && s.clock.Sub(dec.DecidedAt) > time.Hour &&
			(dec.Withdrawn == nil || s.clock.Sub(dec.Withdrawn.At) > time.Hour) {
			s.logf("  job %d waits for good: lastmile's %s (%s) is over an hour old, never taken", j.id, dec.State, j.delivery)
			continue
		}
		out = append(out, j)
	}
	return out
}

// finish (wf6): with everything delivered and GitHub well, every job has
// its answer. Then GitHub takes every run on — a job approved deploys with
// success, the next job starts and asks the rule — and the newest run's
// failed jobs are re-run: the newest release completes.
func (s *wfScenario) finish() {
	s.logf("finish:")
	head := s.runs[len(s.runs)-1]
	for range 60 {
		s.settle()
		for _, j := range s.unanswered() {
			s.violate("wf6: job %d (run %d, %s → %s) never got an answer", j.id, j.run.id, s.c(j.run.sha), s.envs[j.stage])
		}
		if len(s.violations) > 0 {
			return
		}
		moved := false
		for _, r := range s.runs {
			switch j := r.current; {
			case j != nil && j.state == wfWaiting: // for good (see unanswered)
				continue
			case j != nil && j.state == wfRunning:
				s.end(j, pipeline.DeploymentSuccess)
			case j != nil:
				s.proceed(j)
			case r == head && r.done && r.conclusion != "success":
				s.rerun(r, false)
			case s.startable(r):
				s.startJob(r)
			default:
				continue
			}
			moved = true
		}
		if !moved {
			break
		}
	}
	if r := s.releases[head.sha]; r == nil || r.State != pipeline.ReleaseCompleted {
		s.violate("wf6: the newest release (%s), its run through every environment (%s), is %+v", s.c(head.sha), head.conclusion, r)
	}
}

func runWorkflowScenario(t *testing.T, seed uint64, steps int) (violations, log []string, stats map[string]int) {
	h := newHarness(t)
	s := &wfScenario{t: t, h: h, rng: rand.New(rand.NewPCG(seed, 0x3f10)),
		clock: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC), runByID: map[int64]*wfRun{},
		knownSuccess: map[int64]bool{}, decided: map[string]bool{}, releases: map[string]*pipeline.Release{},
		decisions: map[string]string{}, stats: map[string]int{}}
	s.envs = []string{"test", "staging", "production"}
	if s.rng.IntN(3) == 0 {
		s.envs = []string{"test", "production"}
	}
	s.concurrent = s.rng.IntN(2) == 0
	s.flaky = s.rng.IntN(3) == 0
	config := "deployments: workflow\nenvironments:\n"
	for _, env := range s.envs {
		config += "  - name: " + env + "\n"
	}
	h.gh.config = config
	s.gh = &wfGitHub{fakeGitHub: h.gh, s: s}
	h.engine.GitHub = s.gh
	h.engine.Now = s.now
	h.db.Now = s.now
	h.gh.now = s.now
	s.logf("seed %d: environments %v, concurrency groups %v, flaky answers %v", seed, s.envs, s.concurrent, s.flaky)
	root := strings.Repeat("c000", 10)
	s.history = []string{root}
	h.gh.history = []string{root}
	s.push(1)
	s.handle(s.pending[0])
	s.pending = s.pending[1:]
	s.check()
	for range steps {
		if s.rng.IntN(20) == 0 {
			s.clock = s.clock.Add(time.Duration(5+s.rng.IntN(20)) * time.Minute)
		} else {
			s.clock = s.clock.Add(time.Duration(s.rng.IntN(60)) * time.Second)
		}
		if s.rng.IntN(100) < 55 {
			s.act()
		} else {
			for range 1 + s.rng.IntN(3) {
				s.deliver()
			}
		}
		if s.clock.Sub(s.lastSweep) >= time.Minute {
			s.sweep()
		}
		s.check()
		if len(s.violations) > 0 {
			break
		}
	}
	if len(s.violations) == 0 {
		s.finish()
	}
	for _, r := range s.releases {
		s.stats["release "+string(r.State)+" "+string(r.StopKind)]++
	}
	for _, j := range s.jobs {
		if rec, err := h.db.Deployment(context.Background(), j.id); err == nil && rec.WorkflowOwned && !rec.TerminalAt.IsZero() {
			s.stats["deployments counted"]++
		}
	}
	return s.violations, s.log, s.stats
}

func TestRandomWorkflowScenarios(t *testing.T) {
	// 100 seeds take a few seconds; under the race detector ten times
	// that, so fewer there.
	defSeeds := 100
	if raceEnabled {
		defSeeds = 4
	}
	seeds, steps := envInt("LASTMILE_FUZZ_SEEDS", defSeeds), envInt("LASTMILE_FUZZ_STEPS", 30)
	first := envInt("LASTMILE_FUZZ_FIRST", 1)
	verbose := os.Getenv("LASTMILE_FUZZ_VERBOSE") != ""
	if one := envInt("LASTMILE_FUZZ_SEED", 0); one != 0 {
		first, seeds = one, 1
	}
	failed := map[string]int{}
	stats := map[string]int{}
	for seed := first; seed < first+seeds; seed++ {
		name := fmt.Sprintf("seed%d", seed)
		var violations, log []string
		t.Run(name, func(t *testing.T) {
			var st map[string]int
			violations, log, st = runWorkflowScenario(t, uint64(seed), steps)
			for k, v := range st {
				stats[k] += v
			}
		})
		if verbose {
			t.Logf("%s:\n%s", name, strings.Join(log, "\n"))
		}
		if len(violations) > 0 {
			kind, _, _ := strings.Cut(violations[0], ":")
			failed[kind]++
			if failed[kind] <= 2 {
				t.Errorf("%s (LASTMILE_FUZZ_SEED=%d): %s\n%s", name, seed, violations[0], strings.Join(log, "\n"))
			} else {
				t.Errorf("%s (LASTMILE_FUZZ_SEED=%d): %s", name, seed, violations[0])
			}
		}
	}
	t.Logf("activity: %v", stats)
	if len(failed) > 0 {
		t.Logf("violations by invariant: %v", failed)
	}
}
