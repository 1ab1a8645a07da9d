package pipeline

import "time"

// AuditRecord is everything lastmile knows about one release: what went
// where, who approved it, what happened. It is read, never written, as a
// whole.
type AuditRecord struct {
	Release      Release             `json:"release"`
	Commits      []Commit            `json:"commits"`
	Environments []EnvironmentRecord `json:"environments"`
	// ProtectionDecisions are lastmile's answers, as a custom deployment
	// protection rule, about this commit.
	ProtectionDecisions []ProtectionDecision `json:"protection_decisions,omitempty"`
	// Waiting says what an active release waits for before its next
	// deployment, when that is another release's deployment running in
	// the environment (one deploy at a time per environment).
	Waiting string `json:"waiting,omitempty"`
	// OtherReleases are the IDs of the other releases of the same commit
	// (with BroughtCommit, of that commit), newest first: those it is the
	// head of (a rollback releases a commit again) and those that brought
	// it (a roll-forward after a rollback brings it again).
	OtherReleases []int64 `json:"other_releases,omitempty"`
	// BroughtCommit is the commit asked for when it is not the release's
	// head but one the release brought (pushed with it, or since the
	// release before): the release deployed its head, which contains it.
	BroughtCommit *Commit `json:"brought_commit,omitempty"`
}

// EnvironmentRecord is a release's history in one environment.
type EnvironmentRecord struct {
	Name       string `json:"name"`
	Production bool   `json:"production"`
	// Outcome is the state of lastmile's deployment there ("" when the
	// release never reached it).
	Outcome DeploymentState `json:"outcome,omitempty"`
	// WorkflowOutcome is, where a workflow owns the environment's
	// deployments (see Deployment.Counts), the state of the newest of the
	// release's deployments its jobs made there ("" when none).
	WorkflowOutcome DeploymentState    `json:"workflow_outcome,omitempty"`
	Deployments     []DeploymentRecord `json:"deployments"`
	// ReachedWith is, where this release did not succeed itself, the
	// other release whose successful deployment first brought the commit
	// there: a newer release built on it (this one superseded, or
	// stopped, before it got there), or an earlier release of the same
	// commit. The commit's lead time there is measured to that success.
	ReachedWith *Arrival `json:"reached_with,omitempty"`
}

// Arrival is another release's successful deployment that brought a
// commit to an environment.
type Arrival struct {
	ReleaseID int64  `json:"release_id"`
	SHA       string `json:"sha"` // that release's commit
	// DeploymentID is GitHub's ID of that deployment.
	DeploymentID int64     `json:"deployment_id"`
	At           time.Time `json:"at"` // its success
}

// DeploymentRecord is one deployment with everything that happened to it.
type DeploymentRecord struct {
	Deployment
	Statuses []StatusInfo   `json:"statuses"`
	Reviews  []ReviewRecord `json:"reviews,omitempty"`
	Runs     []RunRecord    `json:"runs,omitempty"`
	Jobs     []JobRecord    `json:"jobs,omitempty"`
}

// ReviewRecord is a deployment review as recorded.
type ReviewRecord struct {
	Action    ReviewAction `json:"action"`
	Actor     string       `json:"actor"`
	Reviewers []string     `json:"reviewers,omitempty"`
	Comment   string       `json:"comment,omitempty"`
	Since     time.Time    `json:"since,omitzero"`
	At        time.Time    `json:"at"`
}

// RunRecord is the workflow run that carried a deployment.
type RunRecord struct {
	ID         int64  `json:"id"`
	Name       string `json:"name"`
	URL        string `json:"url"`
	Status     string `json:"status"`
	Conclusion string `json:"conclusion,omitempty"`
	Attempt    int    `json:"attempt"`
}

// JobRecord is a job of that run, with its kept log (if it deployed).
type JobRecord struct {
	ID          int64     `json:"id"`
	Name        string    `json:"name"`
	URL         string    `json:"url,omitempty"`
	Conclusion  string    `json:"conclusion,omitempty"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	CompletedAt time.Time `json:"completed_at,omitzero"`
	// LogBytes is the size of the kept log (0 when none was kept);
	// LogTruncated says the log was cut to the configured maximum;
	// LogPruned says retention removed it; LogMissing says GitHub had no
	// log for the job when lastmile asked for it (and none since: lastmile
	// looks again for a while), so none is kept.
	LogBytes     int  `json:"log_bytes,omitempty"`
	LogTruncated bool `json:"log_truncated,omitempty"`
	LogPruned    bool `json:"log_pruned,omitempty"`
	LogMissing   bool `json:"log_missing,omitempty"`
	// LogMissingWhy says why, when LogMissing: "GitHub had no log for it",
	// or "lastmile could not download it from GitHub: " and GitHub's
	// error (a 403, a 5xx); "" when retention pruned that too.
	LogMissingWhy string `json:"log_missing_why,omitempty"`
	// Log is the kept log itself, where it was asked for (lastmile audit
	// --json --logs); the record alone leaves it out. LogError says why a
	// kept log asked for could not be read.
	Log      *string `json:"log,omitempty"`
	LogError string  `json:"log_error,omitempty"`
}

// EnvironmentStatus is where one environment of a repository's pipeline
// stands now: the release it runs, and lastmile's newest deployment there
// when that is of a newer release (on its way, or ended without success).
type EnvironmentStatus struct {
	Repository  string `json:"repository"`
	Environment string `json:"environment"` // as the configuration spells it
	Production  bool   `json:"production"`
	// Live is the newest release whose deployment there succeeded — what
	// the environment runs, since lastmile never deploys backwards —, or
	// nil when none has.
	Live *Arrival `json:"live,omitempty"`
	// Latest is lastmile's newest deployment there, when its release is
	// newer than Live's, or nil.
	Latest *LatestDeployment `json:"latest,omitempty"`
	// FailingSince is the environment's first failed deploy since its
	// last success (where time to restore counts from), zero when none.
	FailingSince time.Time `json:"failing_since,omitzero"`
}

// LatestDeployment is lastmile's newest deployment in an environment.
type LatestDeployment struct {
	ReleaseID int64  `json:"release_id"`
	SHA       string `json:"sha"`
	// DeploymentID is GitHub's ID of the deployment, 0 before GitHub
	// created it (waiting for the commit's required contexts, say).
	DeploymentID int64           `json:"deployment_id,omitempty"`
	State        DeploymentState `json:"state"`
	// Since is when it reached that state: its end, its latest status, or
	// its creation.
	Since time.Time `json:"since"`
	// Reason says why it failed, was refused, or waits.
	Reason string `json:"reason,omitempty"`
	// Review is its latest deployment review: a request still unanswered
	// while the deployment has not ended means it waits for its reviewers.
	Review *ReviewRecord `json:"review,omitempty"`
}

// AwaitingReview reports whether the deployment waits for its reviewers:
// they were asked, have not answered, and it has not ended.
func (l *LatestDeployment) AwaitingReview() bool {
	return l.Review != nil && l.Review.Action == ReviewRequested && !l.State.Terminal()
}

// HistoryEntry is one release in the history listing.
type HistoryEntry struct {
	Release Release `json:"release"`
	// Stages maps each environment to lastmile's deployment outcome there
	// (or, where it has not ended, that of the newest a workflow owns).
	Stages []StageOutcome `json:"stages"`
	// Commits is how many commits the release brought.
	Commits int `json:"commits"`
}

// StageOutcome is where a release stands in one environment.
type StageOutcome struct {
	Environment string          `json:"environment"`
	State       DeploymentState `json:"state"`
	At          time.Time       `json:"at,omitzero"` // created, or terminal when finished
	// Workflow: the state is that of the deployment a workflow's job made
	// there (a workflow owns the environment's deployments), lastmile's
	// own having not ended.
	Workflow bool `json:"workflow,omitempty"`
}
