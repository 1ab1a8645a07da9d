// Package pipeline is lastmile's domain: releases, the promotion of one
// commit through a repository's environments, and the decisions that keep
// that promotion safe (never backwards, never past a failure, exactly one
// deployment per release and environment). It speaks neither HTTP nor SQL:
// it declares what it needs from GitHub (GitHub) and from the ledger (Store),
// and githubapp and storage provide them.
package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Repo identifies a repository and the installation lastmile acts through.
type Repo struct {
	ID             int64  `json:"id"`
	Owner          string `json:"owner"`
	Name           string `json:"name"`
	InstallationID int64  `json:"installation_id"`
}

// FullName is owner/name.
func (r Repo) FullName() string { return r.Owner + "/" + r.Name }

// SplitFullName splits owner/name. Neither has white space (GitHub's
// names have none): " /shop" names no repository.
func SplitFullName(full string) (owner, name string, err error) {
	owner, name, ok := strings.Cut(full, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") || strings.ContainsFunc(full, unicode.IsSpace) {
		return "", "", fmt.Errorf("%q is not an owner/name repository", full)
	}
	return owner, name, nil
}

// CheckFullName checks owner/name as a person types it to lastmile's read
// commands and API: SplitFullName's form, with neither part longer than
// GitHub allows (a repository's name 100 characters; an owner's 39, more
// for some Enterprise accounts, so 100 too) nor holding a control
// character. Names read back from the database are GitHub's, and only
// split. The error says what is wrong, not the name, which may be long.
func CheckFullName(full string) error {
	owner, name, err := SplitFullName(full)
	switch {
	case err != nil:
		return errors.New("give the repository as OWNER/REPO")
	case utf8.RuneCountInString(owner) > 100 || utf8.RuneCountInString(name) > 100:
		return errors.New("longer than GitHub's names (a repository's is at most 100 characters, an owner's less)")
	case strings.ContainsFunc(full, unicode.IsControl):
		return errors.New("a control character is in no repository's name")
	}
	return nil
}

// CheckSHA checks that sha can name a commit as the audit record takes
// one: its SHA (40 hex digits, or a SHA-256 repository's 64), or an
// abbreviation of at least 7.
func CheckSHA(sha string) error {
	if len(sha) < 7 || len(sha) > 64 || strings.Trim(strings.ToLower(sha), "0123456789abcdef") != "" {
		return fmt.Errorf("%q is not a commit SHA (give 7 to 64 hex characters)", sha)
	}
	return nil
}

// Commit is one commit a release brings.
type Commit struct {
	SHA       string    `json:"sha"`
	Author    string    `json:"author"` // login when GitHub knows it, else the author's name
	Timestamp time.Time `json:"timestamp"`
	Title     string    `json:"title"` // first line of the message
}

// Title returns the first line of a commit message.
func Title(message string) string {
	title, _, _ := strings.Cut(message, "\n")
	return strings.TrimSpace(title)
}

// ReleaseState is where a release stands.
type ReleaseState string

const (
	ReleaseActive    ReleaseState = "active"    // being promoted or waiting
	ReleaseCompleted ReleaseState = "completed" // succeeded in every environment
	ReleaseStopped   ReleaseState = "stopped"   // will go no further; see StopKind
)

// StopKind says why a release stopped.
type StopKind string

const (
	StopFailed      StopKind = "failed"       // a deployment failed or errored
	StopRejected    StopKind = "rejected"     // a reviewer rejected a deployment
	StopSuperseded  StopKind = "superseded"   // a newer release got there first
	StopConfigError StopKind = "config_error" // .github/lastmile.yml is invalid
	StopRefused     StopKind = "refused"      // GitHub would not create a deployment
)

// Release is one push to the pipeline branch: a commit to promote.
type Release struct {
	ID         int64     `json:"id"`
	Repo       Repo      `json:"repository"`
	SHA        string    `json:"sha"`
	Ref        string    `json:"ref"`
	Pusher     string    `json:"pusher"`
	PushedAt   time.Time `json:"pushed_at"`
	DeliveryID string    `json:"delivery_id"`
	// ParentID is the release this one builds on (the push moved the
	// branch forward from its commit), or 0: the first release, or a force
	// push that rewrote or rolled back the branch.
	ParentID int64 `json:"parent_id,omitempty"`
	// Baseline: the repository's first release, from a push that created
	// the pipeline branch (its before is all zeros): its commits are the
	// branch's whole history (a new or imported repository), kept for the
	// audit but not counted for lead time — only SHA, the commit pushed,
	// is. So is a release from a push that replaced the branch's history
	// with one unrelated to the latest release's (GitHub finds no common
	// ancestor).
	Baseline bool `json:"baseline,omitempty"`
	// Base is the commit its commits are counted from (they are those of
	// base...SHA): the previous release's, or, for the repository's first
	// release, its push's before ("" for a baseline, or not known: a
	// release recorded before lastmile kept it).
	Base       string       `json:"base,omitempty"`
	Config     *Config      `json:"config,omitempty"` // as read at SHA
	State      ReleaseState `json:"state"`
	StopKind   StopKind     `json:"stop_kind,omitempty"`
	StopReason string       `json:"stop_reason,omitempty"`
	CreatedAt  time.Time    `json:"created_at"`
	UpdatedAt  time.Time    `json:"updated_at"`
}

// Withdrawn reports whether the release was stopped as superseded: a newer
// release got there first, or (the latest release) the branch no longer
// held its commit. A push that puts the branch back on the commit of a
// withdrawn latest release releases it again.
func (r *Release) Withdrawn() bool {
	return r.State == ReleaseStopped && r.StopKind == StopSuperseded
}

// DeploymentState is where a deployment stands. The first three are
// lastmile's own (no GitHub deployment exists yet, or never will); the
// others mirror GitHub's deployment status states.
type DeploymentState string

const (
	DeploymentIntent     DeploymentState = "intent"    // decided and recorded; not yet created on GitHub
	DeploymentWaiting    DeploymentState = "waiting"   // GitHub refused it for now: required contexts not green
	DeploymentAbandoned  DeploymentState = "abandoned" // never created: refused by GitHub, or its release stopped first
	DeploymentCreated    DeploymentState = "created"   // exists on GitHub, no status yet
	DeploymentPending    DeploymentState = "pending"
	DeploymentQueued     DeploymentState = "queued"
	DeploymentInProgress DeploymentState = "in_progress"
	DeploymentSuccess    DeploymentState = "success"
	DeploymentFailure    DeploymentState = "failure"
	DeploymentError      DeploymentState = "error"
	DeploymentInactive   DeploymentState = "inactive"
)

// Terminal reports whether a deployment in state s will change no more
// (for promotion purposes).
func (s DeploymentState) Terminal() bool {
	switch s {
	case DeploymentSuccess, DeploymentFailure, DeploymentError, DeploymentInactive, DeploymentAbandoned:
		return true
	}
	return false
}

// Succeeded reports whether the deployment reached success (even if a later
// status, such as GitHub's automatic inactive, replaced it).
func (d *Deployment) Succeeded() bool {
	return d.State == DeploymentSuccess || (d.State == DeploymentInactive && !d.SucceededAt.IsZero())
}

// After returns the state a deployment in state s moves to when a status
// in state next arrives: next, unless it would move the deployment
// backwards — a queued after in_progress, or a status that is not final
// after a final one — which only a late delivery does (GitHub does not
// promise order). Between final states the newest status wins (GitHub's
// automatic inactive after success, for one).
func (s DeploymentState) After(next DeploymentState) DeploymentState {
	if next.progress() < s.progress() {
		return s
	}
	return next
}

func (s DeploymentState) progress() int {
	switch {
	case s.Terminal():
		return 2
	case s == DeploymentInProgress:
		return 1
	}
	return 0
}

// Started reports whether the deploy itself has begun (so it must not be
// superseded midway).
func (s DeploymentState) Started() bool {
	return s == DeploymentInProgress || s.Terminal()
}

// Realized reports whether the deployment exists on GitHub.
func (s DeploymentState) Realized() bool {
	switch s {
	case DeploymentIntent, DeploymentWaiting, DeploymentAbandoned:
		return false
	}
	return true
}

// ParseStatusState checks a GitHub deployment status state. GitHub's
// "waiting" (a job's own deployment waiting for its environment's
// reviewers) is taken as queued: lastmile's DeploymentWaiting means
// something else (not created yet).
func ParseStatusState(s string) (DeploymentState, error) {
	if s == "waiting" {
		return DeploymentQueued, nil
	}
	switch st := DeploymentState(s); st {
	case DeploymentPending, DeploymentQueued, DeploymentInProgress, DeploymentSuccess, DeploymentFailure, DeploymentError, DeploymentInactive:
		return st, nil
	}
	return "", fmt.Errorf("unknown deployment status state %q", s)
}

// Origin says who created a deployment.
type Origin string

const (
	OriginLastmile Origin = "lastmile" // created by lastmile: drives promotion and metrics
	OriginExternal Origin = "external" // created by someone else (e.g. an Actions job): recorded, linked; drives promotion only where the workflow creates the deployments (Config.WorkflowDeploys)
)

// Deployment is one deployment of a release to an environment.
type Deployment struct {
	ID          int64           `json:"id"` // lastmile's own
	ReleaseID   int64           `json:"release_id,omitempty"`
	Repo        Repo            `json:"-"`
	Environment string          `json:"environment"`
	Stage       int             `json:"stage"` // index in the release's config; -1 for external ones not in it
	SHA         string          `json:"sha"`
	Origin      Origin          `json:"origin"`
	GitHubID    int64           `json:"github_id,omitempty"`
	State       DeploymentState `json:"state"`
	Production  bool            `json:"production"`
	Creator     string          `json:"creator,omitempty"`
	Attempts    int             `json:"attempts,omitempty"` // creation attempts (intent recovery)
	// AttemptedAt is as late as the latest of them may have made the
	// deployment: when its answer was lost, or, not known, when its
	// request could make it at the latest (see Engine.listLag).
	AttemptedAt    time.Time `json:"-"`
	Reason         string    `json:"reason,omitempty"`   // why it is waiting, abandoned, failed or inactive
	Rejected       bool      `json:"rejected,omitempty"` // a reviewer rejected it
	RunID          int64     `json:"run_id,omitempty"`
	LogURL         string    `json:"log_url,omitempty"`
	EnvironmentURL string    `json:"environment_url,omitempty"`
	TwinOf         int64     `json:"twin_of,omitempty"` // external: the lastmile deployment it duplicates
	// RunEvent, of an external deployment Actions made for a job, is the
	// event that triggered the job's run ("push", "workflow_dispatch",
	// "deployment", …); "" while lastmile does not know it.
	RunEvent string `json:"run_event,omitempty"`
	// WorkflowOwned: an external deployment that counts in the delivery
	// metrics as lastmile's do (see Counts).
	WorkflowOwned bool      `json:"workflow_owned,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	TerminalAt    time.Time `json:"terminal_at,omitzero"`  // first success, failure or error
	SucceededAt   time.Time `json:"succeeded_at,omitzero"` // first success
	// RequiredContexts, for an intent of a release's first stage (waiting
	// or not), are the contexts GitHub must see green (from the release's
	// configuration).
	RequiredContexts []string `json:"-"`
	// Notify is a status lastmile still has to write to GitHub for this
	// deployment (inactive when superseded; failure or error when its run
	// ended without one).
	Notify       DeploymentState `json:"notify,omitempty"`
	NotifyReason string          `json:"notify_reason,omitempty"`
	// NotifyAt is when what Notify reports happened (its run's end), if
	// known: the metrics date the status by it, not by when lastmile
	// wrote it.
	NotifyAt time.Time `json:"notify_at,omitzero"`
	// ReadBack: lastmile made it inactive and has still to read its
	// statuses back from GitHub (its deploy may have begun).
	ReadBack bool `json:"-"`
}

// Counts reports whether the deployment counts in the delivery metrics:
// lastmile's, or one a workflow owns — Actions' own deployment for a job
// of a run that no deployment triggered (on push, by hand: a workflow
// that deploys through the environments itself, lastmile its protection
// rule), of a commit of a release whose configuration names the
// environment. Not a job's twin of lastmile's deployment (lastmile's
// counts), nor a deployment made through the API (no deploy job behind
// it), nor one of an environment or a commit outside the pipeline.
func (d *Deployment) Counts() bool {
	return d.Origin == OriginLastmile || d.WorkflowOwned
}

// A MissingJobLog is a deploy job that GitHub had no log for when lastmile
// asked.
type MissingJobLog struct {
	DeploymentID int64
	Job          WorkflowJob // Repo, JobID and Name
}

// Marker is the part of a deployment payload that identifies lastmile's
// deployments: which lastmile database (Instance), which release and stage.
type Marker struct {
	Instance string `json:"instance"`
	Release  int64  `json:"release"`
	Stage    string `json:"stage"`
	Index    int    `json:"index"`
}

// DeploymentPayload is the payload lastmile puts on its deployments; the
// workflow sees it as github.event.deployment.payload.
type DeploymentPayload struct {
	Lastmile Marker `json:"lastmile"`
}

// ParseMarker extracts lastmile's marker from a deployment payload, if any.
func ParseMarker(payload json.RawMessage) (Marker, bool) {
	if len(payload) == 0 {
		return Marker{}, false
	}
	var p DeploymentPayload
	if err := json.Unmarshal(payload, &p); err != nil {
		// GitHub may hand the payload back as a JSON string.
		var s string
		if json.Unmarshal(payload, &s) != nil || json.Unmarshal([]byte(s), &p) != nil {
			return Marker{}, false
		}
	}
	if p.Lastmile.Instance == "" || p.Lastmile.Release == 0 {
		return Marker{}, false
	}
	return p.Lastmile, true
}
