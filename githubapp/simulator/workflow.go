package simulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// WorkflowOptions describes a repository's `on: deployment` workflow. When
// a deployment is created through the REST API (other than with a
// workflow's own token), the Simulator plays a run of it, sending
// workflow_run, workflow_job, deployment_review and
// deployment_protection_rule webhooks in GitHub's order.
type WorkflowOptions struct {
	// Name of the workflow. Default "Deploy".
	Name string
	// Path of the workflow file. Default ".github/workflows/deploy.yml".
	Path string
	// NoRegister drops the ungated "register" job, which otherwise posts a
	// queued deployment status whose log_url is the run's URL.
	NoRegister bool
	// CreateDeployment makes the deploy job reference its environment
	// without `deployment: false`, so Actions creates its own "twin"
	// deployment for the job (same sha and environment, creator = the
	// actor) and reports statuses on it.
	CreateDeployment bool
	// FailEnvironments lists environments whose default deploy step ends
	// in failure.
	FailEnvironments []string
	// EnvironmentURL is the environment_url the default deploy step
	// reports; "{env}" is replaced by the environment name. Default
	// "https://{env}.example.com".
	EnvironmentURL string
	// NextEnvironments lists the environments of the jobs that follow the
	// deploy job, in order, as in a workflow whose jobs promote the commit
	// test → staging → production: each `needs:` the job before it (it
	// runs only when that one succeeded) and references its environment
	// as the deploy job does (its own deployment with CreateDeployment,
	// that environment's protection rules). They carry an `if:` on the
	// triggering deployment's environment: a run for a deployment to one
	// of them has its deploy job only. Their steps post nothing on the
	// triggering deployment and fail in FailEnvironments; Deploy is the
	// deploy job's only.
	NextEnvironments []string
	// JobsIf, when set, names a key of the deployment's payload that every
	// job's `if:` requires, as the shipped example workflow's
	// `if: github.event.deployment.payload.lastmile` ("lastmile"): for a
	// deployment whose payload lacks it (another tool's), every job is
	// skipped and the run concludes skipped, posting nothing.
	JobsIf string
	// Deploy, when set, replaces the deploy job's steps. It runs like an
	// Action on a runner, with what JobContext gives it; an error fails
	// the job. When nil, the job posts in_progress then success (or
	// failure) statuses on the triggering deployment.
	Deploy func(ctx context.Context, job JobContext) error
	// PushEnvironments makes it a workflow `on: push` of the repository's
	// default branch instead, one that owns its deployments: a push there
	// starts a run (event "push", by the pusher) whose jobs deploy the
	// pushed commit through these environments in order, each `needs:` the
	// one before (run only when it succeeded) and references its
	// environment without `deployment: false` — Actions creates the job's
	// own deployment, the environment's protection rules gate the job —
	// failing in FailEnvironments. It starts no run for a deployment.
	PushEnvironments []string
	// Notifier makes it a workflow beside the deploy workflow (AddWorkflow)
	// that only tells someone of the deployment — a chat message —: its
	// one job, "notify", names no environment (no reviewers, no rules, no
	// deployment of its own) and posts nothing on the deployment (Deploy,
	// if set, runs as its steps).
	Notifier bool
}

// JobContext is what a step of the deploy job sees on the runner.
type JobContext struct {
	// APIURL is GITHUB_API_URL: the REST root, without a trailing slash.
	APIURL string
	// Token is the run's GITHUB_TOKEN: valid for this repository only,
	// with deployments: write and statuses: write, until the run ends.
	Token string
	// Repository is GITHUB_REPOSITORY ("owner/name").
	Repository string
	RunID      int64
	// RunAttempt is GITHUB_RUN_ATTEMPT: 1, then 2 and more for re-runs.
	RunAttempt int
	// RunURL is the run's html_url (what a register step posts as log_url).
	RunURL string
	JobID  int64
	// Event is the content of GITHUB_EVENT_PATH: the deployment event
	// payload.
	Event        []byte
	EventName    string // "deployment"
	Environment  string
	SHA          string
	Ref          string
	DeploymentID int64
	// Log receives the job log (served by the job-logs endpoint).
	Log io.Writer
}

type run struct {
	id, workflowID, checkSuiteID int64
	number, attempt              int
	repo                         *repo
	opts                         WorkflowOptions
	trigger                      *deployment // nil for a run on push
	on                           string      // the event that triggered it: "deployment" or "push"
	event                        []byte
	sha, branch, ref             string
	actor                        *account
	tok                          *token
	status, conclusion           string
	createdAt, updatedAt         time.Time
	startedAt                    time.Time // of the latest attempt
	jobs                         []*job
	gate                         *gate
	// failedAt is the job of the last attempt that did not succeed: 0 the
	// deploy job, i+1 the job for NextEnvironments[i].
	failedAt int

	active  bool // the player goroutine runs
	blocked bool // it waits for a reviewer or a protection-rule answer
	ctx     context.Context
	cancel  context.CancelFunc
	wake    chan struct{}
}

type job struct {
	id                                int64
	jobRunID                          int64 // its id in deployment_review events: GitHub numbers those apart
	attempt                           int   // the run's attempt that ran it
	run                               *run
	name, environment                 string
	status, conclusion                string
	createdAt, startedAt, completedAt time.Time
	steps                             []*step
	runnerName                        string
	twin                              *deployment
	log                               strings.Builder
}

type step struct {
	name, status, conclusion string
	startedAt, completedAt   time.Time
}

// gate is a deploy job's wait on its environment's protection rules.
type gate struct {
	job         *job
	environment string
	reviewers   []string
	since       time.Time
	needReview  bool
	needRule    bool
	review      string // "", "approved", "rejected"
	rule        string // "", "approved", "rejected"
	ruleComment string
}

// workflowDef is one of a repository's workflows: its ID, the same for
// all its runs, and what it does.
type workflowDef struct {
	id   int64
	opts WorkflowOptions
}

// SetWorkflow installs (or replaces) the repository's `on: deployment`
// deploy workflow: the one that is not a Notifier.
func (s *Simulator) SetWorkflow(repo string, opts WorkflowOptions) {
	opts = workflowDefaults(opts)
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.mustRepo(repo)
	for _, w := range rp.workflows {
		if !w.opts.Notifier {
			w.opts = opts // its ID kept: a new version of the same file
			s.notifyLocked()
			return
		}
	}
	rp.workflows = append(rp.workflows, &workflowDef{id: s.st.id(), opts: opts})
	s.notifyLocked()
}

// AddWorkflow adds another `on: deployment` workflow to the repository
// (one of another Path, a Notifier, say): GitHub starts a run of each for
// every deployment, each its own workflow (ID, name, path) and run.
func (s *Simulator) AddWorkflow(repo string, opts WorkflowOptions) {
	opts = workflowDefaults(opts)
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.mustRepo(repo)
	for _, w := range rp.workflows {
		if w.opts.Path == opts.Path {
			panic(fmt.Sprintf("simulator: %s has a workflow %s already", repo, opts.Path))
		}
	}
	rp.workflows = append(rp.workflows, &workflowDef{id: s.st.id(), opts: opts})
	s.notifyLocked()
}

func workflowDefaults(opts WorkflowOptions) WorkflowOptions {
	if opts.Notifier && len(opts.PushEnvironments) > 0 {
		panic("simulator: a Notifier runs for deployments; a workflow with PushEnvironments runs on push")
	}
	if opts.Name == "" {
		opts.Name = "Deploy"
	}
	if opts.Path == "" {
		opts.Path = ".github/workflows/deploy.yml"
	}
	if opts.EnvironmentURL == "" {
		opts.EnvironmentURL = "https://{env}.example.com"
	}
	return opts
}

// startRuns starts a run of each of the repository's workflows for
// deployment d. Call with s.mu held.
func (s *Simulator) startRuns(r *repo, d *deployment) {
	for _, w := range r.workflows {
		s.startRun(r, d, w)
	}
}

// startRun starts a run of workflow w for deployment d. Call with s.mu
// held.
func (s *Simulator) startRun(r *repo, d *deployment, w *workflowDef) {
	if len(w.opts.PushEnvironments) > 0 {
		return // on: push
	}
	st := s.st
	ru := s.newRun(r, w, "deployment", d.sha, d.creator)
	ru.trigger = d
	// head_branch is the deployment's ref as given (a branch name, or the
	// SHA when the deployment was created with one).
	ru.branch = strings.TrimPrefix(d.ref, "refs/heads/")
	ru.ref = d.ref
	if _, ok := r.branches[ru.branch]; ok {
		ru.ref = "refs/heads/" + ru.branch
	}
	ev := st.eventBase(r, d.creator)
	ev["action"] = "created"
	ev["deployment"] = st.deploymentJSON(r, d)
	ev["workflow"] = nil
	ev["workflow_run"] = nil
	ru.event, _ = json.Marshal(ev)
	s.launch(ru)
}

// startPushRuns starts a run of each workflow on push of the repository
// (PushEnvironments) for a push of after to branch by pusher, whose push
// webhook is event: on the default branch, not deleting it. Call with
// s.mu held.
func (s *Simulator) startPushRuns(r *repo, branch, after string, pusher *account, event obj) {
	if after == zeroSHA || branch != r.defaultBranch {
		return
	}
	for _, w := range r.workflows {
		if len(w.opts.PushEnvironments) == 0 {
			continue
		}
		ru := s.newRun(r, w, "push", after, pusher)
		ru.branch, ru.ref = branch, "refs/heads/"+branch
		ru.event, _ = json.Marshal(event)
		s.launch(ru)
	}
}

// newRun is a run, queued, of workflow w of repository r on event for
// commit sha by actor. Call with s.mu held.
func (s *Simulator) newRun(r *repo, w *workflowDef, on, sha string, actor *account) *run {
	st := s.st
	now := s.clock()
	ru := &run{
		id: st.id(), workflowID: w.id, checkSuiteID: st.id(), attempt: 1, repo: r, opts: w.opts, on: on,
		sha: sha, actor: actor, status: "queued", createdAt: now, updatedAt: now, startedAt: now,
		wake: make(chan struct{}, 1),
	}
	n := 0 // GitHub numbers each workflow's runs
	for _, other := range st.runs {
		if other.repo == r && other.workflowID == w.id {
			n++
		}
	}
	ru.number = n + 1
	ru.ctx, ru.cancel = context.WithCancel(context.Background())
	ru.tok = st.newWorkflowToken(r, ru)
	return ru
}

// launch records run ru and plays it. Call with s.mu held.
func (s *Simulator) launch(ru *run) {
	st := s.st
	ru.active = true
	st.runs[ru.id] = ru
	st.runOrder = append(st.runOrder, ru.id)
	if s.closed {
		ru.active = false
		return
	}
	s.runWG.Add(1)
	go s.play(ru)
}

// ownsDeployments reports whether the run's deploy jobs reference their
// environments without `deployment: false` (Actions creates each job's
// own deployment): a workflow on push always does.
func (ru *run) ownsDeployments() bool {
	return ru.opts.CreateDeployment || ru.trigger == nil
}

func (s *Simulator) newJob(ru *run, name, env string) *job {
	now := s.clock()
	j := &job{id: s.st.id(), attempt: ru.attempt, run: ru, name: name, environment: env, status: "queued", createdAt: now}
	j.jobRunID = s.st.id()
	ru.jobs = append(ru.jobs, j)
	s.st.jobs[j.id] = j
	return j
}

func (j *job) logf(now time.Time, format string, args ...any) {
	fmt.Fprintf(&j.log, "%s %s\n", now.UTC().Format("2006-01-02T15:04:05.0000000Z"), fmt.Sprintf(format, args...))
}

// play runs one workflow run to its end.
func (s *Simulator) play(ru *run) {
	defer s.runWG.Done()
	r := ru.repo
	st := s.st
	d := ru.trigger

	s.mu.Lock()
	st.enqueueWorkflowRun(r, ru, "requested")
	if !ru.jobsRun() {
		switch {
		case ru.opts.Notifier:
			s.skipJob(ru, "notify", "")
		case !ru.opts.NoRegister:
			s.skipJob(ru, "register", "")
			fallthrough
		default:
			s.skipJob(ru, "deploy", d.environment)
		}
		s.mu.Unlock()
		s.finishRun(ru, "skipped")
		return
	}
	var reg *job
	if !ru.opts.NoRegister && !ru.opts.Notifier && d != nil {
		reg = s.newJob(ru, "register", "")
		st.enqueueWorkflowJob(r, reg, "queued")
	}
	ru.status = "in_progress"
	ru.updatedAt = s.clock()
	st.enqueueWorkflowRun(r, ru, "in_progress")
	if reg != nil {
		s.startJob(reg)
		st.addDeploymentStatus(r, d, statusInput{state: "queued", logURL: st.runHTML(r, ru), autoInactive: true}, st.actionsBot(), st.actionsApp())
		reg.logf(s.clock(), "Posted deployment status queued for deployment %d", d.id)
		s.finishJob(reg, "success")
	}
	s.notifyLocked()
	s.mu.Unlock()

	s.finishRun(ru, s.runJobs(ru))
}

// runJobs plays the run's jobs from ru.failedAt on (a re-run's first) and
// returns the run's conclusion.
func (s *Simulator) runJobs(ru *run) string {
	if ru.opts.Notifier {
		return s.runNotifyJob(ru)
	}
	s.mu.Lock()
	from := ru.failedAt
	var envs []string
	switch {
	case ru.trigger == nil:
		envs = ru.opts.PushEnvironments
	case slices.ContainsFunc(ru.opts.NextEnvironments, func(e string) bool { return strings.EqualFold(e, ru.trigger.environment) }):
		envs = []string{ru.trigger.environment}
	default:
		envs = append([]string{ru.trigger.environment}, ru.opts.NextEnvironments...)
	}
	s.mu.Unlock()
	conclusion := "success"
	for i := from; i < len(envs) && conclusion == "success"; i++ {
		conclusion = s.runDeployJob(ru, envs[i], i > 0 || ru.trigger == nil)
		s.mu.Lock()
		ru.failedAt = i
		s.mu.Unlock()
	}
	if conclusion != "success" {
		// The jobs that `needs:` the one that did not succeed are skipped.
		s.mu.Lock()
		for _, env := range envs[ru.failedAt+1:] {
			s.skipJob(ru, "deploy-"+env, env)
		}
		s.notifyLocked()
		s.mu.Unlock()
	}
	return conclusion
}

// runNotifyJob plays a Notifier's one job: on a runner at once (it names
// no environment), its steps Deploy's if set, posting nothing otherwise;
// it returns the job's conclusion.
func (s *Simulator) runNotifyJob(ru *run) string {
	r, st, d := ru.repo, s.st, ru.trigger
	s.mu.Lock()
	j := s.newJob(ru, "notify", "")
	st.enqueueWorkflowJob(r, j, "queued")
	s.startJob(j)
	jc := s.jobContext(ru, j)
	s.notifyLocked()
	s.mu.Unlock()
	var err error
	if ru.opts.Deploy != nil {
		err = safeDeploy(ru.ctx, ru.opts.Deploy, jc)
	} else {
		fmt.Fprintf(jc.Log, "Told the team of deployment %d to %s\n", d.id, d.environment)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	conclusion := s.stepsConclusion(ru, j, err)
	s.finishJob(j, conclusion)
	s.notifyLocked()
	return conclusion
}

// jobContext is what the steps of job j of ru see on the runner (its
// environment, j's: none for a notifier's job). Call with s.mu held.
func (s *Simulator) jobContext(ru *run, j *job) JobContext {
	st, r := s.st, ru.repo
	jc := JobContext{
		APIURL: st.apiURL, Token: ru.tok.value, Repository: r.fullName(), RunID: ru.id,
		RunAttempt: ru.attempt, RunURL: st.runHTML(r, ru), JobID: j.id, Event: ru.event, EventName: ru.on,
		Environment: j.environment, SHA: ru.sha, Ref: ru.ref, Log: &jobLog{s: s, j: j},
	}
	switch {
	case ru.trigger != nil:
		jc.Ref, jc.DeploymentID = ru.trigger.ref, ru.trigger.id
	case j.twin != nil:
		jc.DeploymentID = j.twin.id
	}
	return jc
}

// stepsConclusion is the conclusion of job j of ru whose steps ended with
// err: cancelled with the run, failure (err in its log) or success. Call
// with s.mu held.
func (s *Simulator) stepsConclusion(ru *run, j *job, err error) string {
	switch {
	case ru.ctx.Err() != nil:
		return "cancelled"
	case err != nil:
		j.logf(s.clock(), "##[error]%v", err)
		return "failure"
	}
	return "success"
}

// jobsRun reports whether the run's jobs pass their `if:` (JobsIf).
func (ru *run) jobsRun() bool {
	if ru.opts.JobsIf == "" || ru.trigger == nil {
		return true
	}
	p, ok := ru.trigger.payload.(map[string]any)
	if !ok {
		return false
	}
	switch v := p[ru.opts.JobsIf].(type) {
	case nil:
		return false
	case bool:
		return v
	case string:
		return v != ""
	case float64:
		return v != 0
	}
	return true
}

// skipJob records a job that its `if:` or a failed `needs:` skipped:
// GitHub sends only its completed event, conclusion skipped, with no steps
// and no runner. Call with s.mu held.
func (s *Simulator) skipJob(ru *run, name, env string) {
	j := s.newJob(ru, name, env)
	j.status, j.conclusion = "completed", "skipped"
	j.startedAt, j.completedAt = j.createdAt, j.createdAt
	s.st.enqueueWorkflowJob(ru.repo, j, "completed")
}

// finishRun completes a run with the deploy job's conclusion.
func (s *Simulator) finishRun(ru *run, conclusion string) {
	r, st := ru.repo, s.st
	s.mu.Lock()
	ru.status, ru.conclusion, ru.updatedAt = "completed", conclusion, s.clock()
	st.enqueueWorkflowRun(r, ru, "completed")
	ru.tok.revoked = true
	ru.active, ru.blocked, ru.gate = false, false, nil
	s.notifyLocked()
	s.mu.Unlock()
}

// startJob puts a job on a runner. Call with s.mu held.
func (s *Simulator) startJob(j *job) {
	now := s.clock()
	j.status, j.startedAt, j.runnerName = "in_progress", now, "GitHub Actions 2"
	j.steps = append(j.steps, &step{name: "Set up job", status: "completed", conclusion: "success", startedAt: now, completedAt: now})
	j.steps = append(j.steps, &step{name: "Run " + j.name, status: "in_progress", startedAt: now})
	j.logf(now, "Job %s started on runner %s", j.name, j.runnerName)
	s.st.enqueueWorkflowJob(j.run.repo, j, "in_progress")
}

// finishJob completes a job. Call with s.mu held.
func (s *Simulator) finishJob(j *job, conclusion string) {
	now := s.clock()
	for _, st := range j.steps {
		if st.status != "completed" {
			st.status, st.conclusion, st.completedAt = "completed", conclusion, now
		}
	}
	j.status, j.conclusion, j.completedAt = "completed", conclusion, now
	j.logf(now, "Job %s completed: %s", j.name, conclusion)
	s.st.enqueueWorkflowJob(j.run.repo, j, "completed")
}

// runDeployJob plays the deploy job, or (next) the job for one of
// NextEnvironments, and returns its conclusion.
func (s *Simulator) runDeployJob(ru *run, env string, next bool) string {
	r := ru.repo
	st := s.st
	d := ru.trigger

	s.mu.Lock()
	envCfg := r.environments[strings.ToLower(env)]
	name := "deploy"
	if next {
		name = "deploy-" + env
	}
	dj := s.newJob(ru, name, env)
	if envCfg != nil && envCfg.opts.CustomProtectionRule && !ru.ownsDeployments() {
		// "If the environment has a custom deployment protection rule
		// enabled, jobs that use deployment: false will fail."
		st.enqueueWorkflowJob(r, dj, "queued")
		dj.logf(s.clock(), "Error: environment %q has a custom deployment protection rule, which cannot be used with deployment: false", env)
		s.finishJob(dj, "failure")
		s.notifyLocked()
		s.mu.Unlock()
		return "failure"
	}
	if ru.ownsDeployments() {
		now := s.clock()
		ref, production := ru.ref, false
		if d != nil {
			ref, production = d.ref, d.production && !next
		}
		// Actions gives it no description: null, as in GitHub's example.
		dj.twin = &deployment{
			id: st.id(), sha: ru.sha, ref: ref, task: "deploy", payload: obj{},
			environment: env, originalEnvironment: env,
			creator: ru.actor, viaApp: st.actionsApp(), production: production,
			createdAt: now, updatedAt: now, run: ru, job: dj,
		}
		r.deployments = append(r.deployments, dj.twin)
		st.enqueueDeployment(r, dj.twin)
	}
	var g *gate
	if envCfg != nil && (len(envCfg.opts.Reviewers) > 0 || envCfg.opts.CustomProtectionRule || envCfg.opts.WaitTimer > 0) {
		g = &gate{
			job: dj, environment: env, reviewers: envCfg.opts.Reviewers, since: s.clock(),
			needReview: len(envCfg.opts.Reviewers) > 0, needRule: envCfg.opts.CustomProtectionRule,
		}
		dj.status = "waiting"
	}
	st.enqueueWorkflowJob(r, dj, "queued")
	var policy ReviewPolicy
	if g != nil {
		ru.gate = g
		ru.status = "waiting" // the run waits for its environment's rules
		st.enqueueWorkflowJob(r, dj, "waiting")
		// The job's deployment waits with it (a state the webhook schema
		// allows and the REST description's enum lacks).
		st.reportOnTwin(dj, "waiting")
		if g.needRule {
			st.enqueueProtectionRuleRequested(r, dj)
		}
		if g.needReview {
			st.enqueueReviewRequested(r, dj, g)
		}
		policy = envCfg.opts.Review
	}
	s.notifyLocked()
	s.mu.Unlock()

	// The wait timer runs from the job's trigger, beside its reviewers.
	var timer <-chan time.Time
	if envCfg != nil && envCfg.opts.WaitTimer > 0 {
		timer = time.After(envCfg.opts.WaitTimer)
	}
	if g != nil {
		if ok := s.awaitGate(ru, g, policy); !ok {
			s.mu.Lock()
			defer s.mu.Unlock()
			conclusion := "failure"
			if ru.ctx.Err() != nil {
				conclusion = "cancelled"
			}
			s.finishJob(dj, conclusion)
			st.reportOnTwin(dj, "failure")
			s.notifyLocked()
			return conclusion
		}
	}
	if timer != nil {
		select {
		case <-timer:
		case <-ru.ctx.Done():
		}
	}

	s.mu.Lock()
	if ru.ctx.Err() != nil {
		s.finishJob(dj, "cancelled")
		s.notifyLocked()
		s.mu.Unlock()
		return "cancelled"
	}
	ru.status = "in_progress"
	if g != nil {
		// Released, the job is queued for a runner: its deployment is
		// queued, and GitHub sends workflow_job queued again (with the
		// job's deployment, as the first).
		dj.status = "queued"
		st.reportOnTwin(dj, "queued")
		st.enqueueWorkflowJob(r, dj, "queued")
	}
	s.startJob(dj)
	st.reportOnTwin(dj, "in_progress")
	jc := s.jobContext(ru, dj)
	s.notifyLocked()
	s.mu.Unlock()

	var err error
	switch {
	case next:
		err = s.nextDeploy(ru, dj)
	case ru.opts.Deploy != nil:
		err = safeDeploy(ru.ctx, ru.opts.Deploy, jc)
	default:
		err = s.defaultDeploy(ru, dj)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	conclusion := s.stepsConclusion(ru, dj, err)
	state := "success"
	if conclusion != "success" {
		state = "failure"
	}
	st.reportOnTwin(dj, state)
	s.finishJob(dj, conclusion)
	s.notifyLocked()
	return conclusion
}

// reportOnTwin adds a status to the job's own deployment, if Actions
// created one, as Actions does: by the run's actor, performed via no App
// (GitHub's statuses of Actions' deployments have the triggering user as
// creator, and its github-pages example has performed_via_github_app
// null), with the page of the check run the job is as log_url, as in
// GitHub's published deployment_status example
// (OWNER/REPO/runs/JOB?check_suite_focus=true). Call with s.mu held.
func (st *state) reportOnTwin(j *job, state string) {
	if j.twin == nil {
		return
	}
	r := j.run.repo
	st.addDeploymentStatus(r, j.twin, statusInput{state: state, logURL: st.checkRunHTML(r, j), autoInactive: true}, j.run.actor, nil)
}

func safeDeploy(ctx context.Context, f func(context.Context, JobContext) error, jc JobContext) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("deploy step panicked: %v", p)
		}
	}()
	return f(ctx, jc)
}

// defaultDeploy is the deploy job's default steps: in_progress, then
// success or failure, on the triggering deployment.
func (s *Simulator) defaultDeploy(ru *run, dj *job) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	r, d := ru.repo, ru.trigger
	env := dj.environment
	envURL := strings.ReplaceAll(ru.opts.EnvironmentURL, "{env}", env)
	logURL := st.runHTML(r, ru)
	st.addDeploymentStatus(r, d, statusInput{state: "in_progress", logURL: logURL, environmentURL: envURL, autoInactive: true}, st.actionsBot(), st.actionsApp())
	dj.logf(s.clock(), "Deploying %s to %s", ru.sha, env)
	state := "success"
	for _, e := range ru.opts.FailEnvironments {
		if e == env {
			state = "failure"
		}
	}
	st.addDeploymentStatus(r, d, statusInput{state: state, logURL: logURL, environmentURL: envURL, autoInactive: true}, st.actionsBot(), st.actionsApp())
	dj.logf(s.clock(), "Deployment %d: %s", d.id, state)
	s.notifyLocked()
	if state != "success" {
		return errors.New("deploy failed")
	}
	return nil
}

// nextDeploy is the steps of a job for one of NextEnvironments: they
// report nothing themselves (Actions reports on the job's own deployment).
func (s *Simulator) nextDeploy(ru *run, dj *job) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	dj.logf(s.clock(), "Deploying %s to %s", ru.sha, dj.environment)
	if slices.Contains(ru.opts.FailEnvironments, dj.environment) {
		return errors.New("deploy failed")
	}
	return nil
}

// jobLog appends to a job's log.
type jobLog struct {
	s *Simulator
	j *job
}

func (l *jobLog) Write(p []byte) (int, error) {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	l.j.log.Write(p)
	l.s.notifyLocked()
	return len(p), nil
}

// awaitGate waits until the job's protection rules pass (true) or one
// rejects, times out or the run is cancelled (false).
func (s *Simulator) awaitGate(ru *run, g *gate, policy ReviewPolicy) bool {
	if g.needReview {
		switch policy.kind {
		case reviewApprove, reviewReject:
			if err := s.review(ru.repo.fullName(), ru.id, g.environment, policy.login, policy.comment, policy.kind == reviewApprove); err != nil {
				s.log.Error("auto review", "err", err)
			}
		case reviewTimeout:
			s.mu.Lock()
			g.job.logf(s.clock(), "The deployment was not approved within 30 days")
			s.mu.Unlock()
			return false
		}
	}
	for {
		s.mu.Lock()
		switch {
		case ru.ctx.Err() != nil, g.review == "rejected", g.rule == "rejected":
			ru.blocked = false
			s.mu.Unlock()
			return false
		case (!g.needReview || g.review == "approved") && (!g.needRule || g.rule == "approved"):
			ru.blocked = false
			ru.gate = nil
			s.notifyLocked()
			s.mu.Unlock()
			return true
		}
		ru.blocked = true
		s.notifyLocked()
		s.mu.Unlock()
		select {
		case <-ru.wake:
		case <-ru.ctx.Done():
		}
	}
}

// wakeLocked tells the run's player that a decision arrived. The run counts
// as busy (not Idle) until the player has looked at it. Call with s.mu held.
func (ru *run) wakeLocked() {
	ru.blocked = false
	select {
	case ru.wake <- struct{}{}:
	default:
	}
}

// CancelRun cancels a workflow run, as the "Cancel workflow" button does.
func (s *Simulator) CancelRun(repo string, runID int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ru := s.st.runs[runID]
	if ru == nil || ru.repo != s.mustRepo(repo) {
		return fmt.Errorf("simulator: no run %d in %s", runID, repo)
	}
	if !ru.active {
		return fmt.Errorf("simulator: run %d already completed", runID)
	}
	ru.cancel()
	ru.blocked = false
	s.notifyLocked()
	return nil
}

// RerunFailedJobs re-runs a completed run's failed deploy job, as GitHub's
// "Re-run failed jobs" (POST .../actions/runs/{run_id}/rerun-failed-jobs)
// does: the run's attempt goes up, it is requested again, and its job that
// did not succeed (the deploy job, or one of NextEnvironments') runs again
// — through its environment's protection rules again — then the jobs that
// need it, with the repository's workflow as it now is; the jobs that
// succeeded (the register job, those before) are not run again.
func (s *Simulator) RerunFailedJobs(repo string, runID int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ru := s.st.runs[runID]
	if ru == nil || ru.repo != s.mustRepo(repo) {
		return fmt.Errorf("simulator: no run %d in %s", runID, repo)
	}
	if ru.active || ru.conclusion == "success" {
		return fmt.Errorf("simulator: run %d has no failed jobs to re-run (%s %s)", runID, ru.status, ru.conclusion)
	}
	r := ru.repo
	for _, w := range r.workflows {
		if w.id == ru.workflowID {
			ru.opts = w.opts // as it now is
		}
	}
	ru.attempt++
	ru.status, ru.conclusion, ru.updatedAt, ru.startedAt = "queued", "", s.clock(), s.clock()
	ru.ctx, ru.cancel = context.WithCancel(context.Background())
	ru.tok = s.st.newWorkflowToken(r, ru)
	ru.active = true
	if s.closed {
		ru.active = false
		return nil
	}
	s.runWG.Add(1)
	go func() {
		defer s.runWG.Done()
		s.mu.Lock()
		s.st.enqueueWorkflowRun(r, ru, "requested")
		ru.status, ru.updatedAt = "in_progress", s.clock()
		s.st.enqueueWorkflowRun(r, ru, "in_progress")
		s.notifyLocked()
		s.mu.Unlock()
		s.finishRun(ru, s.runJobs(ru))
	}()
	s.notifyLocked()
	return nil
}

// Run is a workflow run as stored.
type Run struct {
	ID           int64
	Attempt      int
	Status       string // queued, in_progress, completed
	Conclusion   string
	DeploymentID int64  // the triggering deployment (0 for a run on push)
	Event        string // what triggered it: "deployment" or "push"
	HTMLURL      string
	Jobs         []Job
	// Waiting tells whether the run waits for a review or a
	// protection-rule answer.
	Waiting bool
}

// Job is a workflow job as stored.
type Job struct {
	ID                 int64
	Name               string
	Environment        string
	Status, Conclusion string
	// TwinDeploymentID is the deployment Actions created for the job.
	TwinDeploymentID int64
	Log              string
}

// Runs returns a repository's workflow runs, oldest first.
func (s *Simulator) Runs(repo string) []Run {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.mustRepo(repo)
	var out []Run
	for _, id := range s.st.runOrder {
		ru := s.st.runs[id]
		if ru.repo != rp {
			continue
		}
		x := Run{ID: ru.id, Attempt: ru.attempt, Status: ru.status, Conclusion: ru.conclusion, Event: ru.on,
			HTMLURL: s.st.runHTML(rp, ru), Waiting: ru.blocked}
		if ru.trigger != nil {
			x.DeploymentID = ru.trigger.id
		}
		for _, j := range ru.jobs {
			jj := Job{ID: j.id, Name: j.name, Environment: j.environment, Status: j.status, Conclusion: j.conclusion, Log: j.log.String()}
			if j.twin != nil {
				jj.TwinDeploymentID = j.twin.id
			}
			x.Jobs = append(x.Jobs, jj)
		}
		out = append(out, x)
	}
	return out
}

// Run returns one run by id.
func (s *Simulator) Run(repo string, runID int64) (Run, bool) {
	for _, r := range s.Runs(repo) {
		if r.ID == runID {
			return r, true
		}
	}
	return Run{}, false
}
