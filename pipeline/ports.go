package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ErrNotFound is returned by GitHub and Store lookups that find nothing.
var ErrNotFound = errors.New("not found")

// MaxCompareCommits bounds the commits lastmile lists from one GitHub
// comparison (100 requests of 100 commits).
const MaxCompareCommits = 10_000

// ErrComparisonTooLarge is returned by GitHub.Compare for a comparison that
// GitHub says holds more than MaxCompareCommits commits: a history imported
// or merged in whole, not work delivered. lastmile does not page through it
// (hundreds of requests against the installation's hourly quota, started
// over after each wait, and every commit held in memory): it takes such a
// push as it takes one that replaced the branch's history (GitHub's 404),
// and gives up such a comparison for lead time at once.
var ErrComparisonTooLarge = errors.New("the comparison lists too many commits")

// ErrGitHubWait marks (errors.Is) a GitHub call that GitHub asks to wait
// for — a rate limit — or that cannot be made while the installation is
// suspended: no failure of the request (the delivery is handled again
// later), and not counted as one.
var ErrGitHubWait = errors.New("GitHub asks to wait")

// ErrUnknownCommit is returned by GitHub.ReadFile when GitHub does not show
// the commit itself (its contents API's "No commit found for the ref"), as
// opposed to ErrNotFound, the file absent from a commit it shows: right
// after a push, GitHub's API may not have caught up with it yet.
var ErrUnknownCommit = errors.New("GitHub does not show the commit")

// ErrTooLarge is returned by GitHub.ReadFile for a file GitHub's contents
// API does not return (over 1 MB).
var ErrTooLarge = errors.New("larger than GitHub's contents API returns (1 MB)")

// ErrNotAFile is returned by GitHub.ReadFile for a path that is no regular
// file at the commit: a directory, a symbolic link (whose target the
// contents API does not return), or a submodule.
var ErrNotAFile = errors.New("not a regular file")

// ErrUnreachable is returned by Store.RecordRelease for a repository that
// lastmile can no longer reach: recorded as removed from its installation,
// or reached through an installation recorded as uninstalled.
var ErrUnreachable = errors.New("the repository left lastmile: the App no longer reaches it")

// ErrInvalid marks a request that cannot be answered as asked (a malformed
// SHA, an ambiguous abbreviation).
var ErrInvalid = errors.New("invalid request")

// ContextState is one required context and its state, as GitHub reports it
// when it refuses a deployment.
type ContextState struct {
	Context string `json:"context"`
	State   string `json:"state"`
}

// RefusedError is GitHub answering a deployment request without creating a
// deployment: 202 (it merged the default branch instead), 409 (required
// contexts not green, or a merge conflict) or 422 (validation failed, or
// the endpoint has been spammed: see Spammed).
type RefusedError struct {
	Status   int
	Message  string
	Contexts []ContextState
	// ContextsFailed: a 409 because the required contexts are not all
	// green (not, say, a merge conflict), though it may list none. A 409
	// that lists contexts is one too.
	ContextsFailed bool
}

func (e *RefusedError) Error() string {
	msg := fmt.Sprintf("GitHub refused the deployment (HTTP %d): %s", e.Status, e.Message)
	if len(e.Contexts) > 0 {
		var parts []string
		for _, c := range e.Contexts {
			parts = append(parts, c.Context+" is "+c.State)
		}
		msg += " (" + strings.Join(parts, ", ") + ")"
	}
	return msg
}

// Spammed reports GitHub's 422 saying that "the endpoint has been
// spammed": too many deployments created too fast. Unlike a validation
// failure, it passes: the same request is taken later.
func (e *RefusedError) Spammed() bool {
	return IsSpammed(e.Status, e.Message)
}

// IsSpammed reports whether GitHub's answer, its HTTP status and message
// (with those of its errors), is the 422 saying that "the endpoint has been
// spammed": content (deployments, deployment statuses) created too fast, a
// limit that passes.
func IsSpammed(status int, message string) bool {
	return status == 422 && strings.Contains(strings.ToLower(message), "has been spammed")
}

// NotReported is the state RequiredStates gives a required context that
// GitHub's 409 does not list: nothing reported it yet.
const NotReported = "not reported yet"

// RequiredStates is the state of each required context in a 409. GitHub
// lists the contexts that reported on the commit — the green ones too, and
// others than the required — so a required context it does not list has
// not reported yet (CI has not started: lastmile is often quicker). A
// context that is both a status and a check run is green if either is.
func (e *RefusedError) RequiredStates(required []string) []ContextState {
	out := make([]ContextState, 0, len(required))
	for _, name := range required {
		st := ContextState{Context: name, State: NotReported}
		for _, c := range e.Contexts {
			if !strings.EqualFold(c.Context, name) {
				continue
			}
			switch {
			case st.State == "success":
			case c.State == "success" || st.State == NotReported || pending(c.State):
				st.State = c.State
			}
		}
		out = append(out, st)
	}
	return out
}

// AwaitsContexts reports a refusal that a required context turning green
// resolves: a 409 for the required contexts where at least one has not
// finished, has not reported yet, or failed — a failed check is re-run,
// and a flaky build re-run green deploys the release it held back.
func (e *RefusedError) AwaitsContexts(required []string) bool {
	if e.Status != 409 || (!e.ContextsFailed && len(e.Contexts) == 0) || len(required) == 0 {
		return false
	}
	return slices.ContainsFunc(e.RequiredStates(required), func(c ContextState) bool { return c.State != "success" })
}

// pending is a context's state while it runs (a status's, or a check
// run's status before it has a conclusion).
func pending(state string) bool {
	switch state {
	case "pending", "", "queued", "in_progress", "waiting", "requested":
		return true
	}
	return false
}

// DeploymentRequest is a deployment lastmile asks GitHub to create.
type DeploymentRequest struct {
	SHA              string
	Environment      string
	Production       bool
	RequiredContexts []string
	Payload          DeploymentPayload
	Description      string
}

// Comparison is GitHub's comparison of two commits, base...head.
type Comparison struct {
	// Status is "ahead" (head follows base), "behind" (head is an ancestor
	// of base), "identical" or "diverged".
	Status  string
	Commits []Commit // in head, not in base, oldest first
}

// LeadCompare is the comparison that the lead time of a success needs from
// GitHub when the release does not build on what the environment last ran
// (a rollback, a force push, history rewritten): the commits the success
// brings there are those of Base...Head — in the release's commit, not in
// the environment's last successful one.
type LeadCompare struct {
	ReleaseID int64
	Base      string // the environment's last successful commit (see Store.LeadCompare)
	Head      string // the release's commit
	Attempts  int    // the requests that failed so far
}

// StatusRequest is a deployment status lastmile writes itself.
type StatusRequest struct {
	State       DeploymentState
	Description string
	LogURL      string
}

// CommitStatus is a commit status (lastmile/config).
type CommitStatus struct {
	Context     string
	State       string // error, failure, pending, success
	Description string
	TargetURL   string
}

// GitHub is what the pipeline asks of GitHub. Every call acts through the
// repository's installation.
type GitHub interface {
	// ReadFile returns a file's content at a commit; ErrNotFound if absent,
	// ErrUnknownCommit if GitHub does not show the commit, ErrTooLarge if
	// over 1 MB, ErrNotAFile (wrapped, saying what it is) if the path is a
	// directory, a symbolic link or a submodule.
	ReadFile(ctx context.Context, r Repo, path, sha string) ([]byte, error)
	// Compare says how head relates to base, with the commits in head that
	// are not in base, oldest first.
	Compare(ctx context.Context, r Repo, base, head string) (Comparison, error)
	// Relation is Compare's status only ("identical", "ahead", "behind",
	// "diverged"), in one request however many commits lie between.
	Relation(ctx context.Context, r Repo, base, head string) (string, error)
	// CreateDeployment creates a deployment; *RefusedError when GitHub
	// answers without creating one.
	CreateDeployment(ctx context.Context, r Repo, req DeploymentRequest) (id int64, createdAt time.Time, err error)
	// FindDeployment looks for a deployment of sha in env carrying marker
	// (to recover a creation whose answer was lost).
	FindDeployment(ctx context.Context, r Repo, sha, env string, marker Marker) (id int64, createdAt time.Time, err error)
	// LatestDeploymentStatus reads a deployment's newest status;
	// ErrNotFound if it has none.
	LatestDeploymentStatus(ctx context.Context, r Repo, deploymentID int64) (StatusInfo, error)
	// DeploymentStatuses lists a deployment's newest statuses, newest
	// first (GitHub's first page: up to 100).
	DeploymentStatuses(ctx context.Context, r Repo, deploymentID int64) ([]StatusInfo, error)
	// CreateDeploymentStatus writes a status on a deployment.
	CreateDeploymentStatus(ctx context.Context, r Repo, deploymentID int64, req StatusRequest) (StatusInfo, error)
	// CreateCommitStatus writes a commit status.
	CreateCommitStatus(ctx context.Context, r Repo, sha string, s CommitStatus) error
	// ReviewProtectionRule answers a deployment_protection_rule request for
	// a workflow run: state is "approved" or "rejected".
	ReviewProtectionRule(ctx context.Context, r Repo, runID int64, environment, state, comment string) error
	// JobLog downloads a job's log, at most max bytes of it.
	JobLog(ctx context.Context, r Repo, jobID int64, max int) (log []byte, truncated bool, err error)
	// WorkflowRun reads a workflow run as it is now; ErrNotFound if GitHub
	// has none.
	WorkflowRun(ctx context.Context, r Repo, runID int64) (WorkflowRun, error)
	// RunsInProgress counts the workflow runs GitHub has for commit sha on
	// event, other than run except, that have not completed (queued,
	// waiting, in progress...): what GitHub says now, whether or not their
	// webhooks reached lastmile yet. ErrNotFound if GitHub does not show
	// the repository.
	RunsInProgress(ctx context.Context, r Repo, sha, event string, except int64) (int, error)
	// Installation reads, as the App, what GitHub says of an installation
	// now: active, or suspended since when and by whom; ErrNotFound if
	// GitHub has no such installation (the App was uninstalled).
	Installation(ctx context.Context, id int64) (InstallationState, error)
	// RepoInstallation reads, as the App, which installation reaches a
	// repository now; ErrNotFound if none does.
	RepoInstallation(ctx context.Context, r Repo) (int64, error)
}

// ReleaseProgress is an active release and its lastmile deployments, the
// input of Plan.
type ReleaseProgress struct {
	Release *Release
	// ByStage holds the latest lastmile deployment of each stage index —
	// where the workflow creates the deployments (Config.WorkflowDeploys),
	// the latest deployment of each stage that it owns (see
	// Deployment.WorkflowOwned) — in the last stage, a success before
	// any later one.
	ByStage map[int]*Deployment
}

// RepoState is what Plan needs to know about a repository.
type RepoState struct {
	Repo   Repo
	Active []*ReleaseProgress // oldest first
	// Reached holds, per environment name, the newest release that has a
	// lastmile deployment there, or is about to: abandoned intents aside,
	// and first deployments that GitHub may refuse while a required context
	// is pending — those that it refused so (waiting), and intents of
	// releases with required contexts until GitHub has created them. Such a
	// deployment supersedes no older release: its build may never pass, and
	// the older release's may have. Meanwhile it holds older intents back
	// from its environment (Engine.realize).
	Reached map[string]int64
	// Running holds, per environment name, a release whose lastmile
	// deployment there is in progress — a first attempt, or a re-run of
	// its workflow after its final status — active or not, and has been for
	// less than HoldRunning: one that never reports an end (its run not
	// known to lastmile, so never judged) stops holding the environment.
	Running map[string]int64
	// Succeeded holds, per environment name in lower case, the newest
	// release with a success there (lastmile's deployment or a workflow
	// run's, as the protection rule counts them: Store.NewestSuccess), for
	// the environments of the active releases, where a release whose
	// workflow creates the deployments (Config.WorkflowDeploys) is active
	// or newer than one that is; nil if there is none.
	Succeeded map[string]int64
}

// HoldRunning is how long after its latest status a deployment in progress
// keeps the next release's deployment to its environment waiting: longer
// than a deploy job runs on GitHub's runners (which end a job after 6
// hours; a self-hosted runner's may run longer, and is then overtaken), so
// that a deployment whose end never comes does not hold the environment
// for good.
const HoldRunning = 24 * time.Hour

// Store is the ledger the pipeline keeps. Each method is one transaction.
type Store interface {
	// Instance identifies this lastmile database in deployment markers.
	Instance(ctx context.Context) (string, error)

	// SaveRepo records a repository and its installation as an event of
	// time at says, unless a later installation event recorded another.
	SaveRepo(ctx context.Context, r Repo, at time.Time) error
	// RecordedInstallation is the installation recorded as reaching a
	// repository (0: none recorded, or detached), and since when.
	RecordedInstallation(ctx context.Context, repoID int64) (int64, time.Time, error)
	// FirstAttempt is GitHub's first attempt to deliver the delivery guid,
	// as recorded when lastmile asked for its redelivery; zero if it did
	// not.
	FirstAttempt(ctx context.Context, guid string) (time.Time, error)
	// PipelineBranch is the branch the repository's last read configuration
	// named ("" when lastmile has not read one).
	PipelineBranch(ctx context.Context, repoID int64) (string, error)
	// PipelineBranchSource is the pipeline branch and the commit whose
	// configuration last changed it ("" if not known).
	PipelineBranchSource(ctx context.Context, repoID int64) (branch, sha string, err error)
	// SetPipelineBranch records the branch named by the configuration of
	// commit sha ("" if not known).
	SetPipelineBranch(ctx context.Context, repoID int64, branch, sha string) error

	// RecordRelease stores a release with its commits, or finds the one
	// already stored for it: its push's (the same delivery), or the
	// repository's latest when that is of the same SHA and not withdrawn
	// (Release.Withdrawn); rel.ID is set either way.
	RecordRelease(ctx context.Context, rel *Release, commits []Commit) (created bool, err error)
	// Revivable lists, newest first and up to limit (all when limit < 0),
	// the releases stopped by a failure or rejection since since, which a
	// successful re-run would carry on.
	Revivable(ctx context.Context, repoID int64, since time.Time, limit int) ([]*Release, error)
	// Release is a release by its ID; ErrNotFound if none.
	Release(ctx context.Context, id int64) (*Release, error)
	// LatestRelease is the newest release of a repository; ErrNotFound if none.
	LatestRelease(ctx context.Context, repoID int64) (*Release, error)
	// LatestConfigured is the newest release of a repository with a valid
	// configuration; ErrNotFound if none.
	LatestConfigured(ctx context.Context, repoID int64) (*Release, error)
	// NewerReleases lists the repository's releases numbered above after,
	// newest first, up to limit.
	NewerReleases(ctx context.Context, repoID, after int64, limit int) ([]*Release, error)
	// NotePush records that a push of the pipeline branch made at at (or,
	// when guessed, whose delivery was received at at) is being handled,
	// and returns the newest pushes handled before it.
	NotePush(ctx context.Context, repoID int64, at time.Time, guessed bool) (PushMarks, error)
	// RetireEnvironments retires every environment of a repository that
	// has left lastmile.
	RetireEnvironments(ctx context.Context, repoID int64) error
	// SetInstallation records where an installation stands now; one that
	// stays in its state keeps its since and by, and an uninstalled
	// installation stays so (GitHub never reuses its ID). An installation
	// that becomes active has its deliveries that wait (those put off while
	// it was suspended) made due at once; it returns how many.
	SetInstallation(ctx context.Context, st InstallationState) (woken int, err error)
	// AttachRepo records that a known repository is reached through
	// installation id since at; DetachRepo that it is reached through
	// none. A push made before at and delivered after does not record its
	// installation over theirs.
	AttachRepo(ctx context.Context, repoID, id int64, at time.Time) error
	DetachRepo(ctx context.Context, repoID int64, at time.Time) error
	// Installation is what lastmile recorded of an installation;
	// ErrNotFound if nothing (it is taken to be active).
	Installation(ctx context.Context, id int64) (InstallationState, error)
	// InstallationsIn lists the installations recorded in a state.
	InstallationsIn(ctx context.Context, state InstallationStatus) ([]int64, error)
	// Repos lists the repositories of ids that lastmile knows.
	Repos(ctx context.Context, ids []int64) ([]Repo, error)
	// InstallationRepos lists the repositories recorded as reached through
	// an installation.
	InstallationRepos(ctx context.Context, installationID int64) ([]Repo, error)
	// DropWork gives up what lastmile still owes GitHub for a repository
	// it can no longer reach: deployments not created yet are abandoned
	// with reason, statuses still to write and read-backs are dropped
	// (record the statuses first). Work lists nothing for it afterwards,
	// nor MissingJobLogs its deploy jobs.
	DropWork(ctx context.Context, repoID int64, reason string) error
	// ReleaseOf is the newest release of a commit (a rollback releases a
	// commit again); ErrNotFound if none.
	ReleaseOf(ctx context.Context, repoID int64, sha string) (*Release, error)

	RepoState(ctx context.Context, repoID int64) (*RepoState, error)
	// Apply records the plan's decisions. The intents of CreateDeployment
	// actions are recorded durably with one attempt counted, for the caller
	// creates them at once.
	Apply(ctx context.Context, repo Repo, actions []Action) error

	// Work lists what must still be sent to GitHub for a repository:
	// deployments in state intent or waiting (with their RequiredContexts),
	// and deployments with a Notify status.
	Work(ctx context.Context, repoID int64) ([]*Deployment, error)
	// Owing lists the repositories with Work other than deployments
	// waiting for required contexts, while no delivery of theirs is
	// pending.
	Owing(ctx context.Context) ([]Repo, error)
	// MarkAttempt counts a creation attempt, durably, before it is made.
	// Until is as late as the attempt may make the deployment
	// (Deployment.AttemptedAt).
	MarkAttempt(ctx context.Context, deploymentID int64, until time.Time) error
	// AnswerLost records now as the time an attempt got no answer (its
	// Deployment.AttemptedAt), from which GitHub's list is given
	// CreateListLag to show what it may have made.
	AnswerLost(ctx context.Context, deploymentID int64) error
	// Created records the GitHub deployment an intent became.
	Created(ctx context.Context, deploymentID, githubID int64, createdAt time.Time) error
	// Refused records that GitHub did not create the deployment: state
	// waiting (it may yet, when the required contexts are green), intent
	// (it may yet, asked again shortly) or abandoned (it will not).
	Refused(ctx context.Context, deploymentID int64, state DeploymentState, reason string) error
	// Resume puts a repository's waiting intents for sha back in line.
	Resume(ctx context.Context, repoID int64, sha string) (int, error)
	// StageSucceeded reports whether a release has a successful lastmile
	// deployment at a stage.
	StageSucceeded(ctx context.Context, releaseID int64, stage int) (bool, error)

	// Deployment finds a deployment by its GitHub ID; ErrNotFound if unknown.
	Deployment(ctx context.Context, githubID int64) (*Deployment, error)
	// RecordExternal stores a deployment lastmile did not create, linked to
	// its release and lastmile twin when they match.
	RecordExternal(ctx context.Context, repo Repo, d DeploymentInfo) (*Deployment, error)
	// RecordStatus stores a deployment status and moves the deployment on;
	// the first terminal status of a lastmile deployment updates the
	// delivery metrics. It reports whether the status was new.
	RecordStatus(ctx context.Context, d *Deployment, s StatusInfo) (bool, error)
	// RecordDisregardedStatus keeps status s of d, and why it is
	// disregarded (DisregardedStatus), for the audit record only: d, its
	// release and the metrics stay as they were. It reports whether the
	// status was new.
	RecordDisregardedStatus(ctx context.Context, d *Deployment, s StatusInfo, why string) (bool, error)
	// LeadCompare is the comparison that a success of lastmile's
	// deployment d, not recorded yet, needs to tell the commits it brings
	// to its environment: when d's release does not build on the
	// environment's newest success (a rollback, a force push, history
	// rewritten), the commits of GitHub's comparison of that success's
	// commit with d's — or, at the environment's first success, of the
	// commit the first release naming the environment counts its commits
	// from. nil when none is needed (the releases it builds on tell them,
	// the success is recorded already, or a newer release's came first) or
	// the comparison is recorded already, made or given up.
	LeadCompare(ctx context.Context, d *Deployment) (*LeadCompare, error)
	// SaveLeadCompare records GitHub's comparison; the success's lead
	// times take its commits.
	SaveLeadCompare(ctx context.Context, lc *LeadCompare, cmp Comparison) error
	// LeadCompareFailed counts a failed request for the comparison, with
	// why; given up, the success's lead times take the commits of the
	// releases it builds on alone (what they tell without GitHub).
	LeadCompareFailed(ctx context.Context, lc *LeadCompare, reason string, giveUp bool) error
	// EndUnheard reports whether the final status s of a deployment, not
	// recorded yet, follows the start of an earlier attempt whose end the
	// store has not recorded (its webhook not delivered yet), or is an
	// inactive someone else wrote (GitHub's automatic one, after a
	// success) over a deployment with no final status recorded.
	EndUnheard(ctx context.Context, deploymentID int64, s StatusInfo) (bool, error)
	// LinkRun ties a workflow run to a deployment.
	LinkRun(ctx context.Context, deploymentID, runID int64) error
	// LearnRun records that the external deployment deploymentID is
	// Actions' own for a job of run runID, triggered by event ("" when not
	// known), if it did not know that yet: a job of a run that no
	// deployment triggered is no twin of lastmile's deployment, and, if it
	// has not ended, counts in the metrics from now on (see
	// Deployment.Counts).
	LearnRun(ctx context.Context, deploymentID, runID int64, event string) error

	RecordReview(ctx context.Context, rv Review) error
	// RecordWorkflowRun stores a run's state; current is false when a
	// newer state of the run (a later update, or a re-run's attempt) was
	// recorded already, and this one changed nothing.
	RecordWorkflowRun(ctx context.Context, run WorkflowRun) (current bool, err error)
	RecordWorkflowJob(ctx context.Context, job WorkflowJob) error
	// RunDeployments lists the lastmile deployments a workflow run worked
	// on: linked to it, or else (guessed) the one non-terminal, unlinked
	// deployment of its SHA created before it, which the caller links once
	// it has checked.
	RunDeployments(ctx context.Context, run WorkflowRun) (deps []*Deployment, guessed bool, err error)
	// OtherRunsInProgress counts the runs on the deployment event for the
	// run's commit, other than run, that lastmile saw start and not end.
	OtherRunsInProgress(ctx context.Context, run WorkflowRun) (int, error)
	// UnjudgedRuns lists the other completed runs on the deployment event
	// for run's commit that worked on no known deployment and did not end
	// well: runs whose judgement waited for another run of the commit.
	UnjudgedRuns(ctx context.Context, run WorkflowRun) ([]WorkflowRun, error)
	// DeployJob reports whether a completed job is the one that deployed a
	// lastmile deployment, or Actions' own deployment for a job of its run
	// that has no twin of lastmile's (linked to the run by GitHub, never by
	// a status's log_url), returning that deployment, told as match says.
	DeployJob(ctx context.Context, job WorkflowJob, match JobMatch) (*Deployment, error)
	// UnloggedJobs lists the completed jobs of a run whose log is not kept
	// (yet): their completion may have come before the deployment's
	// statuses that tell which job deployed it.
	UnloggedJobs(ctx context.Context, repo Repo, runID int64) ([]WorkflowJob, error)
	SaveJobLog(ctx context.Context, deploymentID int64, job WorkflowJob, log []byte, truncated bool) error
	// SaveMissingJobLog keeps placeholder as the log of a deploy job that
	// GitHub had no log for, marked missing — unless a log is kept already.
	SaveMissingJobLog(ctx context.Context, deploymentID int64, job WorkflowJob, placeholder []byte) error
	// MissingJobLogs lists the deploy jobs first found without a log
	// after since, of the repositories lastmile can reach (not removed from
	// their installation, nor of an installation uninstalled).
	MissingJobLogs(ctx context.Context, since time.Time) ([]MissingJobLog, error)
	// Rejection returns the rejection review of a deployment's current
	// attempt, if any: one made after its latest final status, and not
	// followed by an approval (a re-run's).
	Rejection(ctx context.Context, d *Deployment) (*Review, error)

	// RunHeadSHA is the commit of a recorded workflow run; ErrNotFound if
	// lastmile has not seen the run.
	RunHeadSHA(ctx context.Context, runID int64) (string, error)
	// Succeeded reports whether sha has a successful deployment (lastmile's
	// or not) in env.
	Succeeded(ctx context.Context, repoID int64, sha, env string) (bool, error)
	// HeldBy is the release whose deployment in env is in progress and
	// holds the environment (see RepoState.Running), or is still to be
	// read back after lastmile made it inactive; 0 if none.
	HeldBy(ctx context.Context, repoID int64, env string) (int64, error)
	// UncountAttempt takes back the attempt counted for a creation that
	// was not made after all.
	UncountAttempt(ctx context.Context, deploymentID int64) error
	// ReadBackDone records that a deployment's statuses were read back.
	ReadBackDone(ctx context.Context, deploymentID int64) error
	// NewestSuccess is the newest release with a success in env (one that
	// Succeeded counts), and its commit; ErrNotFound if there is none.
	NewestSuccess(ctx context.Context, repoID int64, env string) (releaseID int64, sha string, err error)
	// ProtectionDecision returns a recorded decision for a request.
	ProtectionDecision(ctx context.Context, req ProtectionRuleRequest) (*ProtectionDecision, error)
	// RecordProtectionDecision stores a decision; a waiting one is replaced
	// by the decision made when it is judged again (one still waiting
	// moves its time on). It leaves d holding what is recorded: another
	// handler's answer, recorded first, is kept.
	RecordProtectionDecision(ctx context.Context, d *ProtectionDecision) error
	// LaterProtectionRequest reports whether a request of the same
	// repository, run and environment (its case ignored) was recorded after
	// d: a later attempt of the run asked again.
	LaterProtectionRequest(ctx context.Context, d *ProtectionDecision) (bool, error)
	// WaitingProtectionDecisions lists the requests for sha that wait.
	WaitingProtectionDecisions(ctx context.Context, repo Repo, sha string) ([]*ProtectionDecision, error)
	// LongWaitingProtectionDecisions lists the requests, of every
	// repository, that wait, last judged so before before.
	LongWaitingProtectionDecisions(ctx context.Context, before time.Time) ([]*ProtectionDecision, error)
	// UnpostedProtectionAnswers lists the approvals and rejections, of
	// every repository, that GitHub has not received, decided after after
	// and before before.
	UnpostedProtectionAnswers(ctx context.Context, after, before time.Time) ([]*ProtectionDecision, error)
	// Unfinished reports whether sha has a deployment in env, of those
	// Succeeded counts, that runs and has not ended (in progress, a first
	// attempt or a re-run; or taken up by a workflow run, with no status
	// yet, pending or queued), its latest status less than HoldRunning old.
	Unfinished(ctx context.Context, repoID int64, sha, env string) (bool, error)
	// MarkProtectionPosted records that GitHub has the answer sent for d
	// (its decision, or the rejection that withdrew it), or, refused, that
	// it refused it for good — not if another handler withdrew the
	// approval sent, or recorded an answer, since d was read.
	MarkProtectionPosted(ctx context.Context, d *ProtectionDecision, refused bool) error
	// WithdrawProtectionApproval records that the approval d, which GitHub
	// has not confirmed, is withdrawn at at for a rejection saying comment.
	// It leaves d holding what is recorded: an approval GitHub confirmed
	// meanwhile, or withdrawn by another handler first, is kept as it is.
	WithdrawProtectionApproval(ctx context.Context, d *ProtectionDecision, comment string, at time.Time) error
}

// ProtectionDecision is lastmile's answer to a deployment_protection_rule
// request.
//
// A request for a commit whose deployment to the previous environment has
// not ended (in progress, or taken up by its run and still pending or
// queued: see Store.Unfinished) waits (ProtectionWaiting, nothing sent to GitHub, which
// lets a job wait up to 30 days for a rule's answer) and is decided when
// that deployment ends: GitHub does not keep webhooks in order, and the
// previous environment's success can reach lastmile after the next job's
// request.
type ProtectionDecision struct {
	ID          int64     `json:"id"`
	Repo        Repo      `json:"-"`
	DeliveryID  string    `json:"delivery_id"`
	RunID       int64     `json:"run_id"`
	Environment string    `json:"environment"`
	SHA         string    `json:"sha"`
	State       string    `json:"state"` // approved, rejected, or waiting (not answered yet)
	Comment     string    `json:"comment"`
	DecidedAt   time.Time `json:"decided_at"`
	// Withdrawn is set on an approval GitHub did not confirm that no
	// longer held when lastmile was about to send it again: a rejection
	// is sent instead (Answer).
	Withdrawn *ProtectionWithdrawal `json:"withdrawn,omitempty"`
	Posted    bool                  `json:"posted"` // GitHub has the answer (the rejection, if withdrawn), or refused it
	// Refused says that GitHub refused the answer (a 422: the run no
	// longer waited for the rule — answered already, cancelled; for the
	// rejection that withdrew an approval, the approval perhaps taken).
	Refused bool `json:"refused,omitempty"`
	// DeploymentID is the GitHub ID of the job's deployment the request
	// named; 0 if not known.
	DeploymentID int64 `json:"deployment_id,omitempty"`
}

// ProtectionWithdrawal is the rejection that replaced an approval GitHub
// had not confirmed: when, and why the approval no longer held.
type ProtectionWithdrawal struct {
	At      time.Time `json:"at"`
	Comment string    `json:"comment"`
}

// Answer is what lastmile sends GitHub for the decision: its state and
// comment, or the rejection that withdrew it.
func (d *ProtectionDecision) Answer() (state, comment string) {
	if d.Withdrawn != nil {
		return ProtectionRejected, d.Withdrawn.Comment
	}
	return d.State, d.Comment
}

// The states of a ProtectionDecision.
const (
	ProtectionApproved = "approved"
	ProtectionRejected = "rejected"
	ProtectionWaiting  = "waiting"
)

// JobMatch is how Store.DeployJob tells the job that deployed a
// deployment. A status whose log_url names the job always does.
type JobMatch int

const (
	// JobNamed trusts only a status whose log_url names the job.
	JobNamed JobMatch = iota
	// JobTimes also takes the job of the deployment's run that was running
	// when the deployment went in_progress: GitHub's times, whole seconds,
	// both ends included.
	JobTimes
	// JobTimesBeforeEnd is JobTimes with the in_progress strictly before
	// the job ended: a job that ended the second the deploy began (the
	// register job, when both come within one second) is not taken for the
	// deploy job, nor is a deploy job that took under a second.
	JobTimesBeforeEnd
)
