package pipeline

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// The events below are what lastmile learns from GitHub's webhooks,
// translated by githubapp into the terms of this package.

// Push is a push to a branch.
// PushMarks are the newest pushes of a repository's pipeline branch that
// lastmile handled (zero: none).
type PushMarks struct {
	// Newest is the latest push time, or receipt of a push whose time was
	// not known.
	Newest time.Time
	// NewestKnown is the latest push time known from a payload.
	NewestKnown time.Time
}

type Push struct {
	Repo          Repo
	DeliveryID    string
	Ref           string // refs/heads/main
	Before, After string
	Deleted       bool
	Forced        bool
	DefaultBranch string
	Pusher        string
	PushedAt      time.Time
	// PushedAtGuessed: the payload had no pushed_at, and PushedAt is when
	// lastmile received the delivery (which may be long after the push).
	PushedAtGuessed bool
	Commits         []Commit // as listed in the payload, oldest first
	// Truncated is set when the payload's commit list may be incomplete
	// (GitHub caps it), so the commits come from the compare API instead.
	Truncated bool
}

// Listed reports whether the payload lists the commits the push brought,
// in full: not cut short, and not empty — GitHub lists none when a push
// moves the branch to commits pushed before (a merge queue's branch
// fast-forwarded into main, `git push origin feature:main`), and those
// commits are the release's all the same.
func (p Push) Listed() bool { return !p.Truncated && len(p.Commits) > 0 }

// PushTime is when the push happened, as GitHub says: zero when its
// payload did not say (PushedAt is then when lastmile received it).
func (p Push) PushTime() time.Time {
	if p.PushedAtGuessed {
		return time.Time{}
	}
	return p.PushedAt
}

// MovedAnywhere reports whether the push may have moved the branch to any
// commit rather than forward: a force push, or a push that created the
// branch (again, after it was deleted: its before is all zeros).
func (p Push) MovedAnywhere() bool {
	return p.Forced || p.Before == zeroSHA
}

// DeploymentInfo is a deployment as GitHub describes it in events.
type DeploymentInfo struct {
	GitHubID      int64
	SHA           string
	Ref           string
	Environment   string
	Creator       string
	CreatedAt     time.Time
	Payload       json.RawMessage
	Production    bool
	WorkflowRunID int64 // set when Actions created it for a job
	// WorkflowRunEvent is the event that triggered that run, when the
	// webhook says (its workflow_run's event).
	WorkflowRunEvent string
}

// NewDeployment is a `deployment` event.
type NewDeployment struct {
	Repo       Repo
	Deployment DeploymentInfo
}

// StatusInfo is a deployment status.
type StatusInfo struct {
	GitHubID       int64           `json:"github_id,omitempty"` // 0: lastmile's own, which GitHub refused
	State          DeploymentState `json:"state"`
	Description    string          `json:"description,omitempty"`
	LogURL         string          `json:"log_url,omitempty"`
	EnvironmentURL string          `json:"environment_url,omitempty"`
	Creator        string          `json:"creator,omitempty"`
	CreatedAt      time.Time       `json:"created_at"`
	// ByLastmile: lastmile wrote it (GitHub's answer to its own call), so
	// its Creator is lastmile's login on GitHub, its App's bot.
	ByLastmile bool `json:"-"`
	// Disregarded, in an audit record: why lastmile kept the status for
	// the record only (see DisregardedStatus).
	Disregarded string `json:"disregarded,omitempty"`
}

// DisregardedStatus says why lastmile keeps status st of deployment d for
// the audit record only, or "": a success that a person posted on one of
// lastmile's deployments. Anyone who may write deployments can post one
// (the REST API, the gh CLI), with no deploy behind it; a success of
// lastmile's deployment counts — carries a release on, proves the commit
// to the protection rule, enters the metrics — only from a workflow or an
// App: the lastmile Action posts with the job's GITHUB_TOKEN
// (github-actions[bot]), a deploy system that is an App posts as its bot;
// those logins end in "[bot]", which no person's can. (Any workflow of the
// repository whose token may write deployments posts as
// github-actions[bot] too: who may push workflows remains the gate.)
// Other statuses count whoever posts them: a person's failure stops a
// release, as a deploy's would. The deployments Actions creates for a job
// are not judged so: GitHub posts their statuses as the run's triggering
// actor, a person.
func DisregardedStatus(d *Deployment, st StatusInfo) string {
	if !PersonsSuccess(st.State, st.Creator) || st.ByLastmile || d.Origin != OriginLastmile {
		return ""
	}
	return fmt.Sprintf("a success posted by %s, a person, not by a workflow or an App: it proves no deploy", st.Creator)
}

// PersonsSuccess tells whether a status of state posted by creator (a
// login) is a success a person posted: a login that does not end in
// "[bot]", as every GitHub App's bot's does and no person's can. GitHub
// names every status's creator (a deleted account's as ghost): one it
// does not name is not taken for a person's.
func PersonsSuccess(state DeploymentState, creator string) bool {
	return state == DeploymentSuccess && creator != "" && !AppsBot(creator)
}

// AppsBot tells whether login is a GitHub App's bot's, "SLUG[bot]": a
// suffix no person's login can have.
func AppsBot(login string) bool { return strings.HasSuffix(login, "[bot]") }

// ActionsBot is the login of GitHub Actions' bot, as which a workflow's
// GITHUB_TOKEN writes.
const ActionsBot = "github-actions[bot]"

// CopiedMarker tells whether a deployment carrying lastmile's marker, made
// by creator (a login), is a copy of it: lastmile creates its deployments
// with its installation's token, as its App's bot, and a person (with
// their token, the gh CLI) or a workflow (with its GITHUB_TOKEN, as
// github-actions[bot]) can only copy the marker. A creator GitHub does not
// name is not taken for a copier.
func CopiedMarker(creator string) bool {
	return creator != "" && (!AppsBot(creator) || creator == ActionsBot)
}

// NewDeploymentStatus is a `deployment_status` event.
type NewDeploymentStatus struct {
	Repo       Repo
	Deployment DeploymentInfo
	Status     StatusInfo
}

// ReviewAction is what happened in a deployment review.
type ReviewAction string

const (
	ReviewRequested ReviewAction = "requested"
	ReviewApproved  ReviewAction = "approved"
	ReviewRejected  ReviewAction = "rejected"
)

// Review is a `deployment_review` event: reviewers were asked to approve a
// job's environment, or one of them decided.
type Review struct {
	Repo         Repo
	DeliveryID   string
	Action       ReviewAction
	Environments []string // the environments concerned
	RunID        int64
	RunURL       string
	HeadSHA      string
	Reviewers    []string  // requested reviewers (users and teams)
	Actor        string    // requestor, or the approver/rejecter
	Comment      string    // the decision's comment
	Since        time.Time // when the review was requested
	At           time.Time // when this happened
}

// WorkflowRun is a `workflow_run` event.
type WorkflowRun struct {
	Repo       Repo
	Action     string // requested, in_progress, completed
	RunID      int64
	Name       string
	Event      string // what triggered the run, e.g. deployment
	HeadSHA    string
	HeadBranch string
	Status     string
	Conclusion string // success, failure, cancelled, timed_out, action_required, ...
	URL        string
	Attempt    int
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// WorkflowJob is a `workflow_job` event.
type WorkflowJob struct {
	Repo        Repo
	Action      string // queued, waiting, in_progress, completed
	JobID       int64
	RunID       int64
	Name        string
	HeadSHA     string
	Status      string
	Conclusion  string
	URL         string
	StartedAt   time.Time
	CompletedAt time.Time
	// Deployment is the deployment Actions created for the job (the queued
	// event of a job that references an environment).
	Deployment *DeploymentInfo
}

// ProtectionRuleRequest is a `deployment_protection_rule` event: GitHub asks
// lastmile, as a custom deployment protection rule, whether a job may deploy.
type ProtectionRuleRequest struct {
	Repo         Repo
	DeliveryID   string
	Environment  string
	SHA          string
	Ref          string
	Event        string
	RunID        int64
	DeploymentID int64 // the deployment Actions created, if any
}

// ContextsChanged is a `status` or `check_suite` event: the checks of a
// commit moved, so releases waiting for required contexts may go ahead.
type ContextsChanged struct {
	Repo    Repo
	SHA     string
	Context string // the status context, or the check suite's app
	State   string // success, failure, error, pending (statuses) or the suite's conclusion
	// CheckSuite: a completed check suite's event, whose check runs (the
	// contexts, by name) it does not list.
	CheckSuite bool
}
