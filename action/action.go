// Package action is the lastmile GitHub Action (action.yml in this
// directory): the step of a repository's `on: deployment` workflow that
// deploys the commit of a deployment lastmile created and reports the
// deployment's statuses. Deployments other Apps create trigger the same
// workflow; the Action leaves them alone (their payload has no lastmile
// marker).
//
// In mode register (an ungated first job) it posts a queued status whose
// log_url is the run, so lastmile can link the run while the gated deploy job
// waits for its reviewers. In mode deploy it first reads the deployment's
// latest status: when lastmile made it inactive (a newer release superseded
// it while the job waited) or it has already succeeded, it deploys nothing;
// when it failed, it deploys again only in a re-run of the job (someone
// pressed "Re-run failed jobs"), and lastmile carries the release on if the
// second attempt succeeds.
// Otherwise it posts in_progress, runs the deploy command with the
// environment as its parameter, and posts success or failure — or error when
// the job is cancelled.
//
// Run is the whole Action. cmd/lastmile-action calls it with the process's
// environment; other Go code (lastmile demo, the simulator's workflow player
// in tests) calls it with an injected one, so every caller runs the same code.
package action

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/pipeline"
)

// Env is the runner's side of one run of the Action: where it reads its
// inputs and the workflow's GITHUB_ variables, and where its output goes.
// The zero value is the process's own environment, as on a runner.
type Env struct {
	// Getenv reads INPUT_* (see InputEnvName) and GITHUB_* variables:
	// GITHUB_TOKEN, GITHUB_API_URL, GITHUB_SERVER_URL, GITHUB_REPOSITORY,
	// GITHUB_RUN_ID, GITHUB_SHA, GITHUB_EVENT_NAME, GITHUB_EVENT_PATH,
	// GITHUB_OUTPUT and GITHUB_WORKSPACE (where the command runs).
	// Default os.Getenv.
	Getenv func(string) string
	// Environ is the deploy command's environment, to which the Action adds
	// LASTMILE_ENVIRONMENT, LASTMILE_SHA and LASTMILE_DEPLOYMENT_ID (and from
	// which it removes its own INPUT_ variables, the token among them, and
	// the LASTMILE_JOB_ ones). Where Getenv has the job's PATH and
	// GOTOOLCHAIN as action.yml recorded them before setup-go (EnvJobPath
	// and the others), the command gets those instead of Environ's. Its
	// GITHUB_OUTPUT is a file of its own (in RUNNER_TEMP), removed when it
	// ends, not the step's. Default os.Environ.
	Environ func() []string
	// Stdout is the job log: the Action's messages and workflow commands
	// (::notice::, ::error::) and the deploy command's standard output.
	// Default os.Stdout.
	Stdout io.Writer
	// Stderr receives the deploy command's standard error. Default: Stdout
	// when it is set, else os.Stderr.
	Stderr io.Writer
	// Transport carries the calls to GitHub. Default: a githubapp.Transport
	// with its defaults for retries over http.DefaultTransport, each
	// attempt bounded by RequestTimeout, which sleeps no rate limit itself:
	// it hands each one back to the Action, which waits it out (for up to
	// RateLimitMaxWait), saying so in the job log. A Transport given
	// decides for itself how long it sleeps inside a call; the rate limits
	// it hands back are waited out the same way.
	Transport *githubapp.Transport
	// RequestTimeout bounds each attempt of a call to GitHub made through
	// the default Transport (a Transport given decides for itself).
	// Default 15s.
	RequestTimeout time.Duration
	// KillGrace is how long a cancelled deploy command (its process group,
	// and its descendants outside it) has between SIGTERM and SIGKILL.
	// Default 5s, which leaves time to report the error status before the
	// runner's own SIGKILL, 10 s after its SIGINT.
	KillGrace time.Duration

	// now and sleep are the Action's clock: when a rate limit ends, and
	// the waits for it and between tries (also the default Transport's).
	// Default time.Now and a timer; tests set them (export_test.go).
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

func (e Env) withDefaults() Env {
	if e.Getenv == nil {
		e.Getenv = os.Getenv
	}
	if e.Environ == nil {
		e.Environ = os.Environ
	}
	if e.Stderr == nil {
		if e.Stdout == nil {
			e.Stderr = os.Stderr
		} else {
			e.Stderr = e.Stdout
		}
	}
	if e.Stdout == nil {
		e.Stdout = os.Stdout
	}
	if e.RequestTimeout <= 0 {
		e.RequestTimeout = 15 * time.Second
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.sleep == nil {
		e.sleep = githubapp.Sleep
	}
	if e.Transport == nil {
		e.Transport = &githubapp.Transport{
			Base: attemptTimeout{base: http.DefaultTransport, timeout: e.RequestTimeout},
			// Every rate limit comes back as a RateLimitedError at once
			// (each wait is at least a second), for the Action to wait
			// out in the open: waitRateLimit.
			MaxWait: time.Nanosecond,
			Now:     e.now,
			Sleep:   e.sleep,
		}
	}
	if e.KillGrace <= 0 {
		e.KillGrace = 5 * time.Second
	}
	return e
}

// Result is what a run of the Action reports; Run also writes it to the
// step's outputs (GITHUB_OUTPUT) as state, skipped and log-url.
type Result struct {
	// State is the deployment status the Action reported (queued, success,
	// failure, error), or the state it found when it skipped; "" when it
	// never reached the deployment. When the final status could not be
	// posted (Run's error says so), State is the one it meant to report.
	State pipeline.DeploymentState
	// Skipped tells that the deployment was inactive (superseded), already
	// finished, or not lastmile's (State is then ""), so nothing was
	// deployed or posted.
	Skipped bool
	// LogURL is the log_url posted: the job's page, or the run's.
	LogURL string
}

// How long the final status may take while GitHub fails (5xx, no answer).
// When the job was cancelled the runner kills the Action 10 s after its
// SIGINT, so that post must be quick.
const (
	finalPostTimeout     = 2 * time.Minute
	cancelledPostTimeout = 4 * time.Second
)

// cancelledBudget is how long after the job's cancellation (the runner's
// SIGINT) the Action's last post must have ended: the runner kills it 10 s
// after its SIGINT, and the command's stop (KillGrace and the wait for its
// output) has taken its part of them first. A post is given
// cancelledPostTimeout at most, what is left of this budget at least
// minCancelledPost.
const (
	cancelledBudget  = 9 * time.Second
	minCancelledPost = 500 * time.Millisecond
)

// earlyPostTimeout is how long queued and in_progress are tried again
// while GitHub fails (5xx, no answer): a short outage as the job starts
// must neither fail the register job (the deploy job would not run) nor
// end the deployment before anything was deployed.
const earlyPostTimeout = 2 * time.Minute

// The pauses between the tries of queued and in_progress, and of reads,
// while GitHub fails: growing from earlyFirstPause to earlyMaxPause. A
// status post is sent once a try (the transport does not repeat it), and
// a try that may have arrived is read back before the next.
const (
	earlyFirstPause = 500 * time.Millisecond
	earlyMaxPause   = 4 * time.Second
)

// RateLimitMaxWait is how long the Action waits, from a call's first
// refusal, for GitHub's rate limit to pass before it gives the call up.
// The step has nothing else to do: waiting deploys late, giving up not at
// all (or, on the final status, leaves a deploy that happened unreported).
// A cancellation of the job ends the wait.
const RateLimitMaxWait = 15 * time.Minute

// FinalRateLimitMaxWait is RateLimitMaxWait for the final status, which
// reports a deploy that happened: a limit on it is waited out up to GitHub's
// hourly reset (the job token's quota is an hour's), lest the deploy be
// recorded as a failure. The job's timeout-minutes, counting the wait,
// may cut it short.
const FinalRateLimitMaxWait = 61 * time.Minute

// Run runs the Action once: mode register or deploy, as the inputs say.
// Cancelling ctx (the runner's SIGINT/SIGTERM when the job is cancelled)
// signals the deploy command's process group (and its descendants outside
// it) and leaves the deployment in state error (as does a cancellation
// before the command started, once in_progress may have been posted). A
// non-nil error means the step fails; Run has already written it to the
// job log as an ::error:: workflow command. A deployment that is inactive
// or finished, or that lastmile did not create (its payload has no
// lastmile marker, unless input require-lastmile is false), is not an
// error: Result.Skipped is true.
func Run(ctx context.Context, env Env) (res Result, err error) {
	env = env.withDefaults()
	defer func() {
		if werr := writeOutputs(env.Getenv("GITHUB_OUTPUT"), res); werr != nil {
			err = errors.Join(err, werr)
		}
		if err != nil {
			workflowCommand(env.Stdout, "error", err.Error())
		}
	}()
	cfg, err := readConfig(env.Getenv)
	if err != nil {
		return Result{}, err
	}
	if d := cfg.deployment; cfg.requireLastmile {
		if why := d.notLastmiles(cfg.app); why != "" {
			// A copy of the marker is worth a warning: someone made a
			// deployment look like lastmile's.
			level, by := "notice", ""
			if _, marked := pipeline.ParseMarker(d.Payload); marked {
				level = "warning"
			} else if d.Creator.Login != "" {
				by = " (created by " + d.Creator.Login + ")"
			}
			workflowCommand(env.Stdout, level, fmt.Sprintf("Deployment %d to %s%s is not lastmile's: %s. Nothing is deployed and no status is reported; to deploy such deployments too, set %s: false.",
				d.ID, d.Environment, by, why, InputRequireLastmile))
			return Result{Skipped: true}, nil
		}
	}
	gh, err := githubapp.NewTokenClient(cfg.apiURL, cfg.token, env.Transport)
	if err != nil {
		return Result{}, err
	}
	r := &runner{env: env, cfg: cfg, gh: gh}
	stopWatch := context.AfterFunc(ctx, func() {
		at := env.now()
		r.cancelledAt.Store(&at)
	})
	defer stopWatch()
	latest, err := r.latestState(ctx)
	if err != nil {
		return Result{}, cancelledBefore(ctx, err)
	}
	if why := skipReason(cfg.deployment.ID, latest, cfg.runAttempt); why != "" {
		workflowCommand(env.Stdout, "notice", why)
		return Result{State: latest, Skipped: true}, nil
	}
	// Deploying must not go backwards: if a newer deployment to the
	// environment has succeeded, this commit is outdated there — on a
	// re-run (of the failed jobs, or of all of them, when the register job
	// has queued the deployment again), or on a first attempt whose
	// deployment lastmile has not made inactive (yet: its status is
	// written by the next advance, which a GitHub outage may hold up). Nor
	// may it deploy beside a newer one on its way there (waiting for its
	// reviewers, deploying): the older, finishing last, would be what the
	// environment runs.
	newer, err := r.newerDeployment(ctx)
	if err != nil {
		return Result{}, cancelledBefore(ctx, err)
	}
	if newer.id != 0 {
		workflowCommand(env.Stdout, "notice", newer.notice(cfg.deployment.ID, cfg.deployment.Environment))
		if latest.Terminal() {
			return Result{State: latest, Skipped: true}, nil
		}
		// Not finished: said so, as lastmile would (superseded), so that
		// the run's end without a result is not taken for an error — in
		// either mode: the register job's skip skips the deploy job, and
		// the run succeeds, leaving the deployment without an end.
		res, err := r.finish(ctx, pipeline.DeploymentInactive, cfg.logURL(), newer.description(cfg.deployment.Environment), finalPostTimeout, nil)
		res.Skipped = true
		return res, err
	}
	if latest == pipeline.DeploymentFailure || latest == pipeline.DeploymentError {
		workflowCommand(env.Stdout, "notice", fmt.Sprintf("Deployment %d ended in %s; this is attempt %d of the run, so it is deployed again.",
			cfg.deployment.ID, latest, cfg.runAttempt))
	}
	if cfg.mode == ModeRegister {
		return r.register(ctx)
	}
	return r.deploy(ctx)
}

// skipReason says why a deployment whose latest status is state must not be
// deployed by attempt of the run, or "" when it may. A failed deployment is
// deployed again by a re-run (attempt 2 and more): that is how a person asks
// for it. A first attempt that finds it failed is a stale or duplicate run.
func skipReason(id int64, state pipeline.DeploymentState, attempt int) string {
	switch {
	case state == pipeline.DeploymentInactive:
		return fmt.Sprintf("Deployment %d is inactive: lastmile superseded it (a newer release, or its commit left the branch), so nothing is deployed.", id)
	case (state == pipeline.DeploymentFailure || state == pipeline.DeploymentError) && attempt > 1:
		return ""
	case state == pipeline.DeploymentFailure || state == pipeline.DeploymentError:
		return fmt.Sprintf("Deployment %d has already finished (%s), so nothing is deployed. To deploy it again, re-run the failed job.", id, state)
	case state.Terminal():
		return fmt.Sprintf("Deployment %d has already finished (%s), so nothing is deployed.", id, state)
	}
	return ""
}

// runner is one run of the Action.
type runner struct {
	env Env
	cfg *config
	gh  *github.Client
	// cancelledAt is when the job was cancelled (ctx ended), zero before.
	cancelledAt atomic.Pointer[time.Time]
}

// postBudget is how long a post may take once the job is cancelled: what
// is left of cancelledBudget since the cancellation, within
// [minCancelledPost, cancelledPostTimeout].
func (r *runner) postBudget() time.Duration {
	d := cancelledPostTimeout
	if at := r.cancelledAt.Load(); at != nil {
		d = min(d, at.Add(cancelledBudget).Sub(r.env.now()))
	}
	return max(d, minCancelledPost)
}

// latestState reads the state of the deployment's newest status ("" when it
// has none). GitHub lists statuses newest first. A success a person
// posted by hand is passed over, as lastmile disregards it (see
// pipeline.DisregardedStatus): it does not tell that anything was
// deployed.
func (r *runner) latestState(ctx context.Context) (pipeline.DeploymentState, error) {
	c := r.cfg
	var statuses []*github.DeploymentStatus
	err := r.read(ctx, func(ctx context.Context) (err error) {
		statuses, _, err = r.gh.Repositories.ListDeploymentStatuses(ctx, c.owner, c.repo, c.deployment.ID, &github.ListOptions{PerPage: 100})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("read the statuses of deployment %d in %s/%s: %w", c.deployment.ID, c.owner, c.repo, explain(err))
	}
	for _, st := range statuses {
		if !personsSuccess(st) {
			return pipeline.DeploymentState(st.GetState()), nil
		}
	}
	return "", nil
}

// personsSuccess tells whether st is a success a person posted by hand,
// which proves no deploy (see pipeline.DisregardedStatus).
func personsSuccess(st *github.DeploymentStatus) bool {
	return pipeline.PersonsSuccess(pipeline.DeploymentState(st.GetState()), st.GetCreator().GetLogin())
}

// supersededSince reports whether the deployment was made inactive since
// its last end (success, failure or error): its newest statuses, newest
// first, are read up to that end.
func (r *runner) supersededSince(ctx context.Context) (bool, error) {
	c := r.cfg
	var statuses []*github.DeploymentStatus
	err := r.read(ctx, func(ctx context.Context) (err error) {
		statuses, _, err = r.gh.Repositories.ListDeploymentStatuses(ctx, c.owner, c.repo, c.deployment.ID, &github.ListOptions{PerPage: 100})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("read the statuses of deployment %d in %s/%s: %w", c.deployment.ID, c.owner, c.repo, explain(err))
	}
	for _, st := range statuses {
		if personsSuccess(st) {
			continue
		}
		switch pipeline.DeploymentState(st.GetState()) {
		case pipeline.DeploymentInactive:
			return true, nil
		case pipeline.DeploymentSuccess, pipeline.DeploymentFailure, pipeline.DeploymentError:
			return false, nil
		}
	}
	return false, nil
}

// newer is a deployment of lastmile's to the environment, of a newer
// release, that this one must not deploy after or beside: how says where
// it stands, and so what deploying this one would do.
type newer struct {
	id  int64
	how string // "has succeeded", "is deploying", "is waiting to deploy"
}

// notice is the job log's notice of why deployment id to env is not
// deployed.
func (n newer) notice(id int64, env string) string {
	then := "this one, deployed now, might finish after it"
	switch n.how {
	case "has succeeded":
		then = "this one would go backwards"
	case "is deploying":
		then = "this one, deployed beside it, might finish last"
	}
	return fmt.Sprintf("Deployment %d to %s is not deployed: deployment %d there, of a newer release, %s, and %s.", id, env, n.id, n.how, then)
}

// description is the status's description saying why the deployment to
// env was not deployed.
func (n newer) description(env string) string {
	return fmt.Sprintf(notDeployed+"deployment %d of a newer release %s in %s", n.id, n.how, env)
}

// notDeployed begins the description of every end the Action writes
// without deploying; an inactive that begins so is no deploy begun.
const notDeployed = "Not deployed: "

// newerDeployment returns a deployment of lastmile's to the same
// environment, created after this one, that has succeeded there, or that
// is on its way there: no status yet (its job waiting for the
// environment's reviewers), queued, pending or waiting, or deploying (an
// in_progress that nothing ended since: lastmile may write inactive over a
// deploy that had begun, unaware of it yet). The zero newer if none. Only
// lastmile's (of the same lastmile, when this one is lastmile's) are
// releases: another App's deployment, or an Actions job's own, says
// nothing of this one. One that succeeded counts though GitHub or lastmile
// made it inactive since: it was deployed. One on its way counts while its
// latest status (its creation, without one) is less than
// pipeline.HoldRunning old, as lastmile's hold of the environment does —
// one whose run never started or never reported stands in nobody's way
// for good — and only when lastmile's App created it (a copy of the
// marker that a person, a workflow or, when input app names lastmile's,
// another App made is no release; lastmile makes it inactive). A newer one that failed, or that lastmile withdrew before
// it deployed, stands in nobody's way. GitHub lists deployments newest
// first; the newest hundred are looked at.
func (r *runner) newerDeployment(ctx context.Context) (newer, error) {
	c := r.cfg
	mine, marked := pipeline.ParseMarker(c.deployment.Payload)
	var deps []*github.Deployment
	err := r.read(ctx, func(ctx context.Context) (err error) {
		deps, _, err = r.gh.Repositories.ListDeployments(ctx, c.owner, c.repo, &github.DeploymentsListOptions{
			Environment: c.deployment.Environment, ListOptions: github.ListOptions{PerPage: 100}})
		return err
	})
	if err != nil {
		return newer{}, fmt.Errorf("list the deployments to %s in %s/%s: %w", c.deployment.Environment, c.owner, c.repo, explain(err))
	}
	var pending newer
	for _, d := range deps {
		if d.GetID() <= c.deployment.ID {
			continue
		}
		m, ok := pipeline.ParseMarker(d.Payload)
		if !ok || marked && m.Instance != mine.Instance {
			continue
		}
		var statuses []*github.DeploymentStatus
		err := r.read(ctx, func(ctx context.Context) (err error) {
			statuses, _, err = r.gh.Repositories.ListDeploymentStatuses(ctx, c.owner, c.repo, d.GetID(), &github.ListOptions{PerPage: 100})
			return err
		})
		if err != nil {
			return newer{}, fmt.Errorf("read the statuses of deployment %d in %s/%s: %w", d.GetID(), c.owner, c.repo, explain(err))
		}
		p := progressOf(statuses, d.GetCreatedAt().Time)
		switch {
		case p.succeeded:
			return newer{id: d.GetID(), how: "has succeeded"}, nil
		case pending.id != 0 || r.env.now().Sub(p.since) >= pipeline.HoldRunning || !r.cfg.lastmilesCreator(d.GetCreator().GetLogin()):
		case p.deploying:
			pending = newer{id: d.GetID(), how: "is deploying"}
		case p.latest == "" || p.latest == pipeline.DeploymentQueued || p.latest == pipeline.DeploymentPending || p.latest == pipeline.DeploymentWaiting:
			// waiting: GitHub's, for a job waiting for its reviewers.
			pending = newer{id: d.GetID(), how: "is waiting to deploy"}
		}
	}
	return pending, nil
}

// progress is where a deployment stands, read from its statuses.
type progress struct {
	latest    pipeline.DeploymentState // its latest status's state ("" for none)
	since     time.Time                // when it got it (its creation, without one)
	succeeded bool                     // one of its statuses is a success
	deploying bool                     // an in_progress that no end followed
}

// progressOf reads statuses, newest first as GitHub lists them, of a
// deployment created at created. A person's success is passed over (no
// deploy stands behind it). An inactive ends no deploy, but the Action's
// own (notDeployed): lastmile's, or GitHub's, may come over a deploy that
// had begun.
func progressOf(statuses []*github.DeploymentStatus, created time.Time) progress {
	p := progress{since: created}
	ended := false
	for _, st := range statuses {
		if personsSuccess(st) {
			continue
		}
		state := pipeline.DeploymentState(st.GetState())
		if p.latest == "" {
			p.latest, p.since = state, st.GetCreatedAt().Time
		}
		switch state {
		case pipeline.DeploymentSuccess:
			p.succeeded, ended = true, true
		case pipeline.DeploymentFailure, pipeline.DeploymentError:
			ended = true
		case pipeline.DeploymentInactive:
			ended = ended || strings.HasPrefix(st.GetDescription(), notDeployed)
		case pipeline.DeploymentInProgress:
			p.deploying = p.deploying || !ended
		}
	}
	return p
}

// register posts queued with the run's URL.
func (r *runner) register(ctx context.Context) (Result, error) {
	c := r.cfg
	res := Result{State: pipeline.DeploymentQueued, LogURL: c.runURL()}
	desc := fmt.Sprintf("Waiting for the deploy job to %s", c.deployment.Environment)
	if err := r.postEarly(ctx, res.State, res.LogURL, desc); err != nil {
		return Result{}, cancelledBefore(ctx, err)
	}
	r.printf("lastmile: deployment %d of %s to %s is queued; run %s\n", c.deployment.ID, short(c.deployment.SHA), c.deployment.Environment, res.LogURL)
	return res, nil
}

// deploy posts in_progress, runs the command and posts its outcome.
func (r *runner) deploy(ctx context.Context) (Result, error) {
	c := r.cfg
	logURL := c.logURL()
	inProgress := fmt.Sprintf("Deploying %s to %s", short(c.deployment.SHA), c.deployment.Environment)
	if err := r.postEarly(ctx, pipeline.DeploymentInProgress, logURL, inProgress); err != nil {
		if !mayHaveArrived(err) {
			// GitHub refused it (a rate limit too long to wait for, or
			// the job cancelled during the wait): the deployment is as it
			// was.
			return Result{}, cancelledBefore(ctx, err)
		}
		// in_progress may be on GitHub although the call failed (the job
		// was cancelled while it was on its way, or no answer came), and
		// nothing will deploy: leave the deployment in error rather than
		// in_progress.
		return r.notDeployed(ctx, logURL, notDeployed+"the in_progress status could not be reported", err)
	}
	// lastmile may have made the deployment inactive (a newer release
	// superseded it) after this step read its latest status, unaware
	// yet that the deploy was starting. It writes its inactive, then reads
	// the statuses; this step wrote in_progress, and reads them now:
	// whichever came second, one of them sees the other.
	if superseded, err := r.supersededSince(ctx); err != nil || superseded {
		if err != nil {
			return r.notDeployed(ctx, logURL, notDeployed+"the deployment's statuses could not be read to check that it was not superseded", err)
		}
		workflowCommand(r.env.Stdout, "notice", fmt.Sprintf("Deployment %d was made inactive as this job started: a newer release superseded it, so nothing is deployed.", c.deployment.ID))
		res, err := r.finish(ctx, pipeline.DeploymentInactive, logURL, notDeployed+"a newer release superseded it as the deploy job started", finalPostTimeout, nil)
		res.Skipped = true
		return res, err
	}
	if ctx.Err() != nil {
		// Cancelled as the read was answered: the command is not started.
		return r.notDeployed(ctx, logURL, "", nil)
	}
	r.printf("lastmile: deploying %s to %s (deployment %d)\n", c.deployment.SHA, c.deployment.Environment, c.deployment.ID)

	stopped, runErr := runCommand(ctx, r.env, c)

	state := pipeline.DeploymentSuccess
	desc := fmt.Sprintf("Deployed %s to %s", short(c.deployment.SHA), c.deployment.Environment)
	timeout := finalPostTimeout
	switch {
	case stopped:
		// The job was cancelled (the runner's SIGINT) before the command
		// ended: the deploy did not finish, which is an error rather than
		// a failed deploy — and not a success either, even when the
		// command, stopped, exits 0 (a TERM trap that cleans up and exits).
		state = pipeline.DeploymentError
		desc = "Cancelled: the workflow job was cancelled while the deploy command ran"
		switch {
		case runErr == nil:
			runErr = errors.New("the workflow job was cancelled; the deploy command was stopped (it then exited with status 0)")
		case errors.Is(runErr, errUnstoppable):
			runErr = fmt.Errorf("the workflow job was cancelled; the deploy command could not be stopped: %w", runErr)
		default:
			runErr = fmt.Errorf("the workflow job was cancelled; the deploy command was stopped: %w", runErr)
		}
		timeout = cancelledPostTimeout
	case runErr == nil:
	case errors.As(runErr, new(*notStarted)):
		state = pipeline.DeploymentError
		desc = "The deploy command could not be started: nothing was deployed"
		runErr = fmt.Errorf("nothing was deployed: %w", runErr)
	default:
		state = pipeline.DeploymentFailure
		desc = "Deploy command failed: " + failureSummary(runErr)
		runErr = fmt.Errorf("deploy command failed: %s", failureDetail(runErr))
	}
	res, err := r.finish(ctx, state, logURL, desc, timeout, runErr)
	if err == nil {
		r.printf("lastmile: deployment %d to %s succeeded\n", c.deployment.ID, c.deployment.Environment)
	}
	return res, err
}

// notDeployed leaves in error a deployment that may show in_progress, when
// err, a call to GitHub that failed, or the job's cancellation (err nil)
// stopped the deploy before its command started: desc says why, unless
// the job was cancelled, which it then says.
func (r *runner) notDeployed(ctx context.Context, logURL, desc string, err error) (Result, error) {
	if ctx.Err() == nil {
		return r.finish(ctx, pipeline.DeploymentError, logURL, desc, finalPostTimeout, fmt.Errorf("nothing was deployed: %w", err))
	}
	why := "the workflow job was cancelled before the deploy command started; nothing was deployed"
	if err != nil {
		err = fmt.Errorf("%s: %w", why, err)
	} else {
		err = errors.New(why)
	}
	return r.finish(ctx, pipeline.DeploymentError, logURL, "Cancelled: the workflow job was cancelled before the deploy command started", cancelledPostTimeout, err)
}

// finish posts the deployment's final status, state, with a context
// detached from ctx (which the cancellation of the job may have ended),
// and returns the Result and runErr, the reason the step fails (nil when
// it succeeds), joined with the post's error.
//
// The post is tried again, with a growing pause, until it succeeds, GitHub
// refuses it (4xx) or timeout has passed; a rate limit is waited out for
// up to FinalRateLimitMaxWait unless the job is cancelled: a status lost here
// would leave the deployment in_progress until the run ends, and a deploy
// that succeeded reported as a failed step. When it is lost all the same,
// Result.State is still the state the Action meant to report, and the
// error says that GitHub does not show it.
func (r *runner) finish(ctx context.Context, state pipeline.DeploymentState, logURL, desc string, timeout time.Duration, runErr error) (Result, error) {
	res := Result{State: state, LogURL: logURL}
	if err := r.postPersistently(ctx, state, logURL, desc, timeout); err != nil {
		what := fmt.Sprintf("the %s status could not be reported", state)
		switch {
		case state == pipeline.DeploymentInactive:
			what = "nothing was deployed, but " + what
		case runErr == nil:
			what = "the deploy succeeded, but " + what
		}
		return res, errors.Join(runErr, fmt.Errorf("%s: GitHub does not show it, and lastmile settles deployment %d when this run ends: %w",
			what, r.cfg.deployment.ID, err))
	}
	return res, runErr
}

// postPersistently is post with a context detached from the job's, ctx,
// tried again after a pause while the failure may pass: a 5xx or no answer
// for up to timeout, counted from the start or from the end of the last
// rate limit waited out; a rate limit, waited out, for up to
// FinalRateLimitMaxWait from the start, unless the job is cancelled (ctx has
// ended, or ends during the wait): then only within timeout. Once a try
// may have arrived (a 5xx or no answer), each further one first reads the
// deployment's newest status, and posts nothing when it is already this
// one: GitHub took the lost try.
//
// However long timeout is, the job's cancellation, whenever it comes,
// leaves cancelledPostTimeout from then, the try on its way included — or
// less, what is left of cancelledBudget since the cancellation (the
// command's stop took its part): the runner's SIGKILL follows its SIGINT
// by 10 s.
func (r *runner) postPersistently(ctx context.Context, state pipeline.DeploymentState, logURL, description string, timeout time.Duration) error {
	detached, cut := context.WithCancel(context.WithoutCancel(ctx))
	defer cut()
	var (
		mu    sync.Mutex
		cutAt time.Time   // when the cancellation's time is up; zero before it
		timer *time.Timer // ends the try on its way then
	)
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		budget := r.postBudget()
		cutAt = r.env.now().Add(budget)
		timer = time.AfterFunc(budget, cut)
	})
	defer func() {
		stop()
		mu.Lock()
		defer mu.Unlock()
		if timer != nil {
			timer.Stop()
		}
	}()
	start := r.env.now()
	deadline := start.Add(timeout)
	cutShort := func() {
		mu.Lock()
		defer mu.Unlock()
		if !cutAt.IsZero() && cutAt.Before(deadline) {
			deadline = cutAt
		}
	}
	pause := time.Second
	mayBeThere := false // an earlier try may have posted it
	var lastErr error
	for {
		cutShort()
		if lastErr != nil && !r.env.now().Before(deadline) {
			return lastErr // the cancellation left no time for another
		}
		if mayBeThere && r.alreadyPosted(detached, deadline, state, logURL) {
			r.printf("lastmile: the %s status is on GitHub: an earlier try posted it, though its answer was lost\n", state)
			return nil
		}
		postCtx, cancel := context.WithTimeout(detached, deadline.Sub(r.env.now()))
		err := r.post(postCtx, state, logURL, description)
		cancel()
		if err == nil {
			return nil
		}
		now := r.env.now()
		cutShort()
		if lim, ok := githubapp.AsRateLimited(err, now); ok {
			switch {
			case ctx.Err() != nil && lim.Until.After(deadline):
				return err // cancelled: the runner's SIGKILL comes soon
			case ctx.Err() == nil && lim.Until.After(start.Add(FinalRateLimitMaxWait)):
				// However short each wait, not past FinalRateLimitMaxWait
				// in all.
				return fmt.Errorf("%w (more than %s away: not waited for)", err, FinalRateLimitMaxWait)
			}
			// The job's cancellation ends a wait the runner would not
			// let finish anyway.
			waitCtx := ctx
			if ctx.Err() != nil {
				waitCtx = detached
			}
			if werr := r.waitRateLimit(waitCtx, lim.Until, err); werr != nil {
				return fmt.Errorf("the workflow job was cancelled while the Action waited for GitHub's rate limit: %w", err)
			}
			if ctx.Err() == nil {
				deadline = maxTime(deadline, r.env.now().Add(timeout))
			}
			continue
		}
		if !mayHaveArrived(err) {
			return err // GitHub refused it: trying again changes nothing
		}
		mayBeThere = true
		wait := pause
		if now.Add(wait).After(deadline) {
			return err
		}
		r.printf("lastmile: %v; trying again in %s\n", err, wait.Round(100*time.Millisecond))
		if r.pause(ctx, detached, wait) != nil {
			return err // the cancellation's time is up
		}
		lastErr = err
		pause = min(2*pause, 8*time.Second)
	}
}

// pause waits d between tries of postPersistently, on detached (cut when
// the cancellation's time is up); the job's cancellation during it ends
// it at once — the next try then comes within the time the cancellation
// leaves, not after the rest of a pause that may outlast it.
func (r *runner) pause(ctx, detached context.Context, d time.Duration) error {
	if ctx.Err() != nil {
		return r.env.sleep(detached, d)
	}
	sleepCtx, stopSleep := context.WithCancel(detached)
	defer stopSleep()
	stop := context.AfterFunc(ctx, stopSleep)
	defer stop()
	if err := r.env.sleep(sleepCtx, d); err != nil && detached.Err() != nil {
		return err
	}
	return nil
}

// alreadyPosted reports whether the deployment's newest status is state
// with logURL: a post whose answer was lost (a 5xx, a dropped connection)
// arrived all the same, and posting it again would end the deployment
// twice. A read that fails says nothing: it reports false, and the status
// is posted again.
func (r *runner) alreadyPosted(ctx context.Context, deadline time.Time, state pipeline.DeploymentState, logURL string) bool {
	c := r.cfg
	ctx, cancel := context.WithTimeout(ctx, deadline.Sub(r.env.now()))
	defer cancel()
	statuses, _, err := r.gh.Repositories.ListDeploymentStatuses(ctx, c.owner, c.repo, c.deployment.ID, &github.ListOptions{PerPage: 1})
	if err != nil || len(statuses) == 0 {
		return false
	}
	return statuses[0].GetState() == string(state) && statuses[0].GetLogURL() == logURL
}

// postEarly posts queued or in_progress, statuses that are no harm twice,
// tried again with growing pauses while GitHub fails (5xx, no answer) for
// up to earlyPostTimeout — each try, the transport's own included, cut
// short at that deadline — counted from the start or from the end of the
// last rate limit call waited out. Once a try may have arrived, the next
// first reads the deployment's newest status, and posts nothing when it is
// this one: GitHub took the lost try (a repeated in_progress has lastmile
// read the statuses back from GitHub). The job's cancellation ends it at once.
func (r *runner) postEarly(ctx context.Context, state pipeline.DeploymentState, logURL, desc string) error {
	deadline := r.env.now().Add(earlyPostTimeout)
	pause := earlyFirstPause
	mayBeThere := false
	// fail gives up: once a try may have arrived, so may the status,
	// whatever the last try's error (a rate limit, the cancellation).
	fail := func(err error) error {
		if mayBeThere {
			return &perhapsArrived{err}
		}
		return err
	}
	for {
		if mayBeThere && r.alreadyPosted(ctx, deadline, state, logURL) {
			r.printf("lastmile: the %s status is on GitHub: an earlier try posted it, though its answer was lost\n", state)
			return nil
		}
		limited := false
		err := r.call(ctx, func() error {
			if limited { // the deadline counts from the end of the wait
				deadline = maxTime(deadline, r.env.now().Add(earlyPostTimeout))
			}
			tryCtx, cancel := context.WithTimeout(ctx, max(deadline.Sub(r.env.now()), 0))
			defer cancel()
			err := r.post(tryCtx, state, logURL, desc)
			_, limited = githubapp.AsRateLimited(err, r.env.now())
			return err
		})
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fail(err)
		}
		now := r.env.now()
		if !mayHaveArrived(err) {
			return fail(err)
		}
		mayBeThere = true
		if !now.Before(deadline) {
			return fail(err)
		}
		wait := min(pause, deadline.Sub(now))
		r.printf("lastmile: %v; trying again in %s\n", err, wait.Round(100*time.Millisecond))
		if r.env.sleep(ctx, wait) != nil {
			return fail(err)
		}
		pause = min(2*pause, earlyMaxPause)
	}
}

// perhapsArrived is the error of a post given up after an earlier try of
// it may have arrived on GitHub (a 5xx, no answer).
type perhapsArrived struct{ err error }

func (e *perhapsArrived) Error() string { return e.err.Error() }
func (e *perhapsArrived) Unwrap() error { return e.err }

// read makes a read of GitHub's, fn, through call (rate limits waited
// out), tried again with growing pauses while GitHub fails (5xx, no
// answer) for up to earlyPostTimeout from the first try or from the end of
// the last rate limit waited out, each try cut short then: as for queued and in_progress, a short
// outage as the job starts must neither fail the register job nor end the
// deployment before anything was deployed, and a read is safe to repeat.
// The job's cancellation ends it at once.
func (r *runner) read(ctx context.Context, fn func(ctx context.Context) error) error {
	deadline := r.env.now().Add(earlyPostTimeout)
	pause := earlyFirstPause
	for {
		tries := 0
		err := r.call(ctx, func() error {
			if tries++; tries > 1 { // after a rate limit's wait
				deadline = maxTime(deadline, r.env.now().Add(earlyPostTimeout))
			}
			// Each try, the transport's own included, cut short at the
			// deadline, as postEarly's are.
			tryCtx, cancel := context.WithTimeout(ctx, max(deadline.Sub(r.env.now()), 0))
			defer cancel()
			return fn(tryCtx)
		})
		if err == nil || ctx.Err() != nil || !mayHaveArrived(err) {
			return err // done, cancelled, or refused by GitHub (a 4xx): asking again changes nothing
		}
		now := r.env.now()
		if !now.Before(deadline) {
			return err
		}
		wait := min(pause, deadline.Sub(now))
		r.printf("lastmile: %v; trying again in %s\n", err, wait.Round(100*time.Millisecond))
		if r.env.sleep(ctx, wait) != nil {
			return err
		}
		pause = min(2*pause, earlyMaxPause)
	}
}

// call makes a call to GitHub, fn, and while GitHub's rate limit refuses
// it, waits until the limit has passed and calls again: for up to
// RateLimitMaxWait from the first refusal, and until ctx ends (the job is
// cancelled). The step has nothing else to do meanwhile.
func (r *runner) call(ctx context.Context, fn func() error) error {
	var giveUp time.Time
	for {
		err := fn()
		if err == nil || ctx.Err() != nil {
			return err
		}
		now := r.env.now()
		lim, ok := githubapp.AsRateLimited(err, now)
		if !ok {
			return err
		}
		if giveUp.IsZero() {
			giveUp = now.Add(RateLimitMaxWait)
		}
		if lim.Until.After(giveUp) {
			return fmt.Errorf("%w (more than %s away: not waited for)", err, RateLimitMaxWait)
		}
		if werr := r.waitRateLimit(ctx, lim.Until, err); werr != nil {
			return err
		}
	}
}

// waitRateLimit says in the job log that the Action waits for GitHub's
// rate limit, which refused a call with err, until until; and waits (a
// second at least: calling again through a limit is what GitHub
// penalises), or until ctx ends.
func (r *runner) waitRateLimit(ctx context.Context, until time.Time, err error) error {
	d := max(until.Sub(r.env.now()), time.Second)
	secs := int64((d + time.Second - 1) / time.Second)
	r.printf("lastmile: GitHub rate limit: waiting until %s (%d s) to try again: %v\n",
		r.env.now().Add(d).UTC().Format("15:04:05 UTC"), secs, err)
	return r.env.sleep(ctx, d)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// cancelledBefore says, when the job was cancelled, that err (a call to
// GitHub that the cancellation ended) came before anything was deployed.
func cancelledBefore(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	return fmt.Errorf("the workflow job was cancelled before the deploy started; nothing was deployed: %w", err)
}

// mayHaveArrived tells whether a call that failed with err may have taken
// effect on GitHub all the same: anything but an answer of GitHub's that
// refused it (4xx, a rate limit) — unless an earlier try of the same post
// may have arrived (perhapsArrived). Of a read, it tells a failure that
// may pass (5xx, no answer) from GitHub's refusal.
func mayHaveArrived(err error) bool {
	var (
		pa  *perhapsArrived
		er  *github.ErrorResponse
		rl  *github.RateLimitError
		arl *github.AbuseRateLimitError
		lim *githubapp.RateLimitedError
	)
	switch {
	case errors.As(err, &pa):
		return true
	case errors.As(err, &er):
		return er.Response == nil || er.Response.StatusCode >= 500
	case errors.As(err, &rl), errors.As(err, &arl), errors.As(err, &lim):
		return false
	}
	return true
}

// post creates a deployment status, sent once: the transport does not send
// it again after a 5xx or a lost connection. postEarly and
// postPersistently try again, and know then that an earlier try may have
// arrived: a final status (success, failure, error, inactive) posted twice
// would end the deployment twice, and an in_progress that may be on GitHub
// is one the Action must end (with error) if it deploys nothing.
func (r *runner) post(ctx context.Context, state pipeline.DeploymentState, logURL, description string) error {
	c := r.cfg
	req := &github.DeploymentStatusRequest{
		State:       github.String(string(state)),
		LogURL:      github.String(logURL),
		Description: github.String(truncate(description, 140)),
	}
	if c.environmentURL != "" && state != pipeline.DeploymentQueued {
		req.EnvironmentURL = github.String(c.environmentURL)
	}
	_, _, err := r.gh.Repositories.CreateDeploymentStatus(ctx, c.owner, c.repo, c.deployment.ID, req)
	if lim, ok := spammed(err, r.env.now()); ok {
		err = &spammedError{err: err, limit: lim}
	}
	if err != nil {
		return fmt.Errorf("post status %s on deployment %d in %s/%s: %w", state, c.deployment.ID, c.owner, c.repo, explain(err))
	}
	return nil
}

// spammed tells GitHub's 422 saying that "the endpoint has been spammed"
// (statuses created too fast, a limit that passes: nothing was posted) in
// err, as a secondary rate limit to wait out before posting again: until
// its Retry-After if it has one, else for a minute, as GitHub asks of a
// secondary limit that names no wait.
func spammed(err error, now time.Time) (*githubapp.RateLimitedError, bool) {
	var er *github.ErrorResponse
	if !errors.As(err, &er) || er.Response == nil {
		return nil, false
	}
	msg := er.Message
	for _, e := range er.Errors {
		msg += " " + e.Message
	}
	if !pipeline.IsSpammed(er.Response.StatusCode, msg) {
		return nil, false
	}
	wait, ok := githubapp.RetryAfter(er.Response.Header, now)
	if !ok {
		wait = time.Minute
	}
	return &githubapp.RateLimitedError{Until: now.Add(wait), Secondary: true, Status: er.Response.StatusCode}, true
}

// spammedError is GitHub's answer, err, that the endpoint has been
// spammed: it reads as GitHub's answer, and is the rate limit, limit,
// that call and postPersistently wait out.
type spammedError struct {
	err   error
	limit *githubapp.RateLimitedError
}

func (e *spammedError) Error() string   { return e.err.Error() }
func (e *spammedError) Unwrap() []error { return []error{e.err, e.limit} }

// printf writes a line of the Action's own to the job log. The text in its
// string and error arguments (an answer of GitHub's, say) is free text: a
// control character in it is written escaped (\n, \x1b, \u202e), so that
// it cannot start a line the runner reads as a workflow command.
func (r *runner) printf(format string, args ...any) {
	for i, a := range args {
		switch v := a.(type) {
		case string:
			args[i] = escapeControls(v)
		case error:
			args[i] = escapeControls(v.Error())
		}
	}
	fmt.Fprintf(r.env.Stdout, format, args...)
}

// escapeControls writes each rune of s that pipeline.UnsafeRune reports as
// a Go escape, and leaves the rest as it is.
func escapeControls(s string) string {
	if _, found := pipeline.UnsafeRune(s); !found {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if _, unsafe := pipeline.UnsafeRune(string(r)); !unsafe {
			b.WriteRune(r)
			continue
		}
		q := strconv.QuoteRune(r) // '\n', '\x1b', '\u202e'
		b.WriteString(q[1 : len(q)-1])
	}
	return b.String()
}

// explain adds the usual causes to GitHub's refusals (and leaves out
// go-github's empty list of errors).
func explain(err error) error {
	err = githubapp.Tidy(err)
	const permissions = "does the token reach this repository with permissions deployments: write? In the workflow: permissions: {deployments: write}"
	var er *github.ErrorResponse
	if errors.As(err, &er) && er.Response != nil {
		switch er.Response.StatusCode {
		case http.StatusUnauthorized:
			return fmt.Errorf("%w (GitHub did not take the token: expired, revoked, or not one of this GitHub's? The job's GITHUB_TOKEN is valid until the job ends)", err)
		case http.StatusForbidden:
			return fmt.Errorf("%w (%s)", err, permissions)
		case http.StatusNotFound:
			if req := er.Response.Request; req != nil && strings.Contains(req.URL.Path, "/deployments/") {
				return fmt.Errorf("%w (was the deployment deleted? Otherwise, %s)", err, permissions)
			}
			return fmt.Errorf("%w (%s)", err, permissions)
		}
	}
	return err
}

func short(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}

// truncate cuts s to at most n characters (GitHub's limit for a
// description counts characters, not bytes).
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// writeOutputs appends the step's outputs to the GITHUB_OUTPUT file, if
// there is one.
func writeOutputs(path string, res Result) error {
	if path == "" {
		return nil
	}
	var b strings.Builder
	for _, kv := range [][2]string{
		{"state", string(res.State)},
		{"skipped", fmt.Sprint(res.Skipped)},
		{"log-url", res.LogURL},
	} {
		fmt.Fprintf(&b, "%s=%s\n", kv[0], kv[1])
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("write step outputs: %w", err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return fmt.Errorf("write step outputs: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write step outputs: %w", err)
	}
	return nil
}

// workflowCommand writes a workflow command (::error::, ::notice::) to the job log,
// escaping its message as the runner expects.
func workflowCommand(w io.Writer, name, message string) {
	r := strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A")
	fmt.Fprintf(w, "::%s::%s\n", name, r.Replace(message))
}
