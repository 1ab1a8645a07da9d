package storage

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// Audit reads the full record of the newest release of sha in repository
// (owner/name): a commit is released again when the branch is rolled back
// to it. sha may be abbreviated (at least 7 characters). A commit that is
// no release's head but one a release brought (pushed with it, or since
// the release before) is shown in the newest release that brought it, the
// record's BroughtCommit saying so. ErrNotFound (wrapped) when there is no
// such repository, or no release brought the commit.
func (db *DB) Audit(ctx context.Context, repository, sha string) (*pipeline.AuditRecord, error) {
	return db.AuditRelease(ctx, repository, sha, 0)
}

// AuditRelease is Audit of one release of sha, by its ID (0: the newest).
func (db *DB) AuditRelease(ctx context.Context, repository, sha string, releaseID int64) (*pipeline.AuditRecord, error) {
	tx, err := db.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	repoIDs, err := repositoriesNamed(ctx, tx, repository)
	if err != nil {
		return nil, err
	}
	if err := pipeline.CheckSHA(sha); err != nil {
		return nil, fmt.Errorf("%w: %w", pipeline.ErrInvalid, err)
	}
	if releaseID != 0 {
		// The repository of that release first, of those by that name.
		var owner int64
		if err := tx.QueryRowContext(ctx, `SELECT repository_id FROM releases WHERE id = ?`, releaseID).Scan(&owner); err == nil {
			if i := slices.Index(repoIDs, owner); i > 0 {
				repoIDs = append([]int64{owner}, slices.Delete(repoIDs, i, i+1)...)
			}
		} else if !errors.Is(err, sql.ErrNoRows) {
			return nil, err
		}
	}
	// The commits of the releases: their heads, and those they brought; of
	// the first repository by that name (the newest) that has the commit.
	prefix := strings.ToLower(sha) + "%"
	var repoID int64
	var shas []string
	for _, repoID = range repoIDs {
		shas, err = queryColumn[string](ctx, tx, `SELECT sha FROM releases WHERE repository_id = ? AND sha LIKE ?
			UNION SELECT c.sha FROM releases r JOIN release_commits c ON c.release_id = r.id WHERE r.repository_id = ? AND c.sha LIKE ?
			LIMIT 2`, repoID, prefix, repoID, prefix)
		if err != nil || len(shas) > 0 {
			break
		}
	}
	switch {
	case err != nil:
		return nil, err
	case len(shas) == 0:
		return nil, noRelease(ctx, tx, repoIDs, repository, sha)
	case len(shas) > 1:
		return nil, fmt.Errorf("%w: %s@%s: the abbreviation matches several commits; give more of the SHA", pipeline.ErrInvalid, repository, sha)
	}
	commit := shas[0]
	// The releases of the commit, newest first: those it is the head of,
	// and those that brought it (a roll-forward after a rollback brings a
	// commit that was a release's head again).
	heads, err := queryColumn[int64](ctx, tx, `SELECT id FROM releases WHERE repository_id = ? AND sha = ? ORDER BY id DESC`, repoID, commit)
	if err != nil {
		return nil, err
	}
	brings, err := queryColumn[int64](ctx, tx, `SELECT DISTINCT r.id FROM releases r JOIN release_commits c ON c.release_id = r.id
		WHERE r.repository_id = ? AND c.sha = ? AND r.sha != ? ORDER BY r.id DESC`, repoID, commit, commit)
	if err != nil {
		return nil, err
	}
	// By default the newest it is the head of, else the newest that
	// brought it.
	var head bool
	switch {
	case releaseID == 0 && len(heads) > 0:
		releaseID, head = heads[0], true
	case releaseID == 0:
		releaseID = brings[0]
	case slices.Contains(heads, releaseID):
		head = true
	case !slices.Contains(brings, releaseID):
		return nil, fmt.Errorf("%s@%s: %w: release #%d is not a release of that commit", repository, sha, pipeline.ErrNotFound, releaseID)
	}
	brought := "" // the commit asked about, when the release brought it
	if !head {
		brought = commit
	}
	rec, err := db.auditRecord(ctx, tx, repoID, releaseID, brought)
	if err != nil {
		return nil, err
	}
	for _, id := range slices.Backward(slices.Sorted(slices.Values(slices.Concat(heads, brings)))) {
		if id != releaseID {
			rec.OtherReleases = append(rec.OtherReleases, id)
		}
	}
	if !head {
		i := slices.IndexFunc(rec.Commits, func(c pipeline.Commit) bool { return c.SHA == commit })
		brought := rec.Commits[i]
		rec.BroughtCommit = &brought
	}
	return rec, nil
}

// NoReleaseError is the ErrNotFound of a commit no release brought. Its
// Decisions are lastmile's protection-rule decisions about deployments of
// the commit all the same (a hotfix on another branch deployed by hand to
// a protected environment), oldest first: no release's record holds them,
// and lastmile knows the commit by them.
type NoReleaseError struct {
	Repository, SHA string // as asked for
	Decisions       []pipeline.ProtectionDecision
}

func (e *NoReleaseError) Error() string {
	msg := fmt.Sprintf("%s@%s: %v: no release of that commit", e.Repository, e.SHA, pipeline.ErrNotFound)
	switch n := len(e.Decisions); n {
	case 0:
	case 1:
		msg += "; lastmile decided on a deployment of it, as its protection rule (1 decision)"
	default:
		msg += fmt.Sprintf("; lastmile decided on deployments of it, as their protection rule (%d decisions)", n)
	}
	return msg
}

func (e *NoReleaseError) Unwrap() error { return pipeline.ErrNotFound }

// noRelease is the error for a commit (sha, maybe abbreviated) no release
// of the repositories by that name brought: a *NoReleaseError, with the
// decisions about it of the first (the newest) that has any; ErrInvalid
// when the abbreviation matches the decisions of several commits.
func noRelease(ctx context.Context, tx *sql.Tx, repoIDs []int64, repository, sha string) error {
	e := &NoReleaseError{Repository: repository, SHA: sha}
	for _, repoID := range repoIDs {
		rows, err := tx.QueryContext(ctx, `SELECT `+protectionColumns+`, r.full_name
			FROM protection_decisions d JOIN repositories r ON r.id = d.repository_id
			WHERE d.repository_id = ? AND d.sha LIKE ? ORDER BY d.id`, repoID, strings.ToLower(sha)+"%")
		if err != nil {
			return err
		}
		for rows.Next() {
			p := pipeline.ProtectionDecision{Repo: pipeline.Repo{ID: repoID}}
			var full string
			if err := scanProtection(rows.Scan, &p, &full); err != nil {
				rows.Close()
				return err
			}
			p.Repo.Owner, p.Repo.Name, _ = pipeline.SplitFullName(full)
			e.Decisions = append(e.Decisions, p)
		}
		if err := closeRows(rows); err != nil {
			return err
		}
		if len(e.Decisions) > 0 {
			break
		}
	}
	for _, p := range e.Decisions {
		if p.SHA != e.Decisions[0].SHA {
			return fmt.Errorf("%w: %s@%s: the abbreviation matches several commits; give more of the SHA", pipeline.ErrInvalid, repository, sha)
		}
	}
	return e
}

// queryColumn runs a query of one column and returns its values.
func queryColumn[T any](ctx context.Context, q querier, query string, args ...any) ([]T, error) {
	return queryRows(ctx, q, func(rows *sql.Rows, v *T) error { return rows.Scan(v) }, query, args...)
}

// auditRecord reads the record of release id (of repository repoID); with
// brought, a commit the release brought, also the deployments of that
// commit lastmile did not make and the protection-rule decisions about it
// (a deployment of it made by hand), which no release of its own holds.
func (db *DB) auditRecord(ctx context.Context, tx *sql.Tx, repoID, id int64, brought string) (*pipeline.AuditRecord, error) {
	// found: the releases of its head commit, newest first.
	rows, err := tx.QueryContext(ctx, `SELECT `+releaseColumns+` FROM releases r JOIN repositories p ON p.id = r.repository_id
		WHERE r.repository_id = ? AND r.sha = (SELECT sha FROM releases WHERE id = ?) ORDER BY r.id DESC`, repoID, id)
	if err != nil {
		return nil, err
	}
	var found []*pipeline.Release
	for rows.Next() {
		r, err := scanRelease(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		found = append(found, r)
	}
	if err := closeRows(rows); err != nil {
		return nil, err
	}
	at := slices.IndexFunc(found, func(r *pipeline.Release) bool { return r.ID == id })
	rel := found[at]
	rec := &pipeline.AuditRecord{Release: *rel, Environments: []pipeline.EnvironmentRecord{}}
	// Protection decisions are about the commit: each release of it owns
	// those made from its creation until the next release of it.
	from, until := int64(0), int64(math.MaxInt64)
	if at+1 < len(found) {
		from = millis(rel.CreatedAt)
	}
	if at > 0 {
		until = millis(found[at-1].CreatedAt)
	}
	if rec.Commits, err = releaseCommits(ctx, tx, rel.ID); err != nil {
		return nil, err
	}
	about := rel.SHA // the commits whose unlinked deployments and decisions belong here
	if brought != "" {
		about = brought
	}
	deps, err := queryDeployments(ctx, tx, `WHERE d.repository_id = ? AND (d.release_id = ?
		OR (d.release_id IS NULL AND d.sha IN (?, ?) AND d.created_at >= ? AND d.created_at < ?)) ORDER BY d.id`,
		repoID, rel.ID, rel.SHA, about, from, until)
	if err != nil {
		return nil, err
	}
	// GitHub's environment names ignore case: a deployment to "Production"
	// belongs under the configuration's "production".
	envIndex := map[string]int{}
	if rel.Config != nil {
		for _, e := range rel.Config.Environments {
			envIndex[strings.ToLower(e.Name)] = len(rec.Environments)
			rec.Environments = append(rec.Environments, pipeline.EnvironmentRecord{Name: e.Name, Production: e.Production,
				Deployments: []pipeline.DeploymentRecord{}}) // [] in JSON, not null, where none was made
		}
	}
	for _, d := range deps {
		i, ok := envIndex[strings.ToLower(d.Environment)]
		if !ok {
			i = len(rec.Environments)
			envIndex[strings.ToLower(d.Environment)] = i
			rec.Environments = append(rec.Environments, pipeline.EnvironmentRecord{Name: d.Environment, Production: d.Production})
		}
		dr, err := deploymentRecord(ctx, tx, d)
		if err != nil {
			return nil, err
		}
		env := &rec.Environments[i]
		env.Deployments = append(env.Deployments, *dr)
		if d.ReleaseID == rel.ID && (d.Origin == pipeline.OriginLastmile || d.WorkflowOwned) {
			o, err := outcome(ctx, tx, d)
			if err != nil {
				return nil, err
			}
			if d.Origin == pipeline.OriginLastmile {
				env.Outcome = o
			} else {
				env.WorkflowOutcome = o // the newest: deps come in order
			}
		}
	}
	for i := range rec.Environments {
		if env := &rec.Environments[i]; env.Outcome != pipeline.DeploymentSuccess && env.WorkflowOutcome != pipeline.DeploymentSuccess {
			if env.ReachedWith, err = reachedWith(ctx, tx, repoID, rel.ID, env.Name, about); err != nil {
				return nil, err
			}
		}
	}
	if rec.Waiting, err = waitingBehind(ctx, tx, repoID, rel, rec.Environments, db.Now()); err != nil {
		return nil, err
	}
	if rec.Waiting == "" {
		if rec.Waiting, err = untaken(ctx, tx, repoID, rel, rec.Environments, db.Now()); err != nil {
			return nil, err
		}
	}
	prows, err := tx.QueryContext(ctx, `SELECT `+protectionColumns+`
		FROM protection_decisions d WHERE repository_id = ? AND sha IN (?, ?) AND decided_at >= ? AND decided_at < ? ORDER BY id`,
		repoID, rel.SHA, about, from, until)
	if err != nil {
		return nil, err
	}
	defer prows.Close()
	for prows.Next() {
		p := pipeline.ProtectionDecision{Repo: rel.Repo}
		if err := scanProtection(prows.Scan, &p); err != nil {
			return nil, err
		}
		rec.ProtectionDecisions = append(rec.ProtectionDecisions, p)
	}
	return rec, prows.Err()
}

// reachedWith is the successful deployment of a release other than
// releaseID that first brought sha to the environment (the one its lead
// time there is measured to: see environment_commits), or nil.
func reachedWith(ctx context.Context, q querier, repoID, releaseID int64, environment, sha string) (*pipeline.Arrival, error) {
	return scanArrival(q.QueryRowContext(ctx, `SELECT r.id, r.sha, COALESCE(d.github_id, 0), ec.reached_at
		FROM environment_commits ec JOIN deployments d ON d.id = ec.deployment_id JOIN releases r ON r.id = d.release_id
		WHERE ec.repository_id = ? AND ec.environment = ? AND ec.sha = ? AND r.id != ?`,
		repoID, environment, sha, releaseID))
}

// scanArrival reads a row of release ID, commit, GitHub's deployment ID
// and time of success; nil for no row.
func scanArrival(row *sql.Row) (*pipeline.Arrival, error) {
	var a pipeline.Arrival
	var at int64
	err := row.Scan(&a.ReleaseID, &a.SHA, &a.DeploymentID, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	a.At = fromMillis(at)
	return &a, nil
}

// waitingBehind says why an active release has no deployment yet in the
// environment it goes to next, when that is another release's deployment
// running there (one deploy at a time per environment), or "".
func waitingBehind(ctx context.Context, q querier, repoID int64, rel *pipeline.Release, envs []pipeline.EnvironmentRecord, now time.Time) (string, error) {
	if rel.State != pipeline.ReleaseActive || rel.Config == nil {
		return "", nil
	}
	next := ""
	for i, e := range rel.Config.Environments {
		if envs[i].Outcome == "" {
			if i == 0 || envs[i-1].Outcome == pipeline.DeploymentSuccess {
				next = e.Name
			}
			break
		}
	}
	if next == "" {
		return "", nil
	}
	var other int64
	err := q.QueryRowContext(ctx, `SELECT release_id FROM deployments d WHERE d.repository_id = ? AND d.origin = 'lastmile'
		AND d.environment = ? COLLATE NOCASE AND (d.state = 'in_progress' OR d.rerun = 1) AND d.release_id != ?
		AND `+statusSince+` > ?
		ORDER BY d.release_id DESC LIMIT 1`, repoID, next, rel.ID, millis(now.Add(-pipeline.HoldRunning))).Scan(&other)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("waits for release #%d's deployment to %s to end: one deploy at a time per environment", other, next), nil
}

// untakenAfter is how long after its creation a deployment no workflow
// run has taken up is said to wait for one: GitHub starts the runs of a
// deployment within seconds, and makes a run that waits for its reviewers
// or a runner at once all the same.
const untakenAfter = 10 * time.Minute

// mayYetRun is the SQL condition under which lastmile's deployment of a
// commit to an environment, that no run has taken up so far, is not said
// to wait for one: a run may yet take it up, or none ever will. Its
// arguments are SQL expressions: the repository ID (it stands in two
// places), the commit, the deployment's creation time (unix ms) and the
// environment. A run of the commit on the deployment event, made since (a
// minute's leeway for clocks), that has not completed may yet take it up
// (one waiting for a runner); one that completed without a status did not
// (a notifier's, one whose jobs its if: skipped). And where a job's own
// deployment has ever been in the environment (a workflow that owns its
// deployments, run on a push), lastmile's never runs. The audit (untaken)
// and the metrics (awaitingRunQuery) ask it alike.
func mayYetRun(repo, sha, created, env string) string {
	return `(EXISTS (SELECT 1 FROM workflow_runs w WHERE w.repository_id = ` + repo + ` AND w.head_sha = ` + sha + `
			AND w.event = 'deployment' AND w.status != 'completed' AND w.created_at >= ` + created + ` - 60000)
		OR EXISTS (SELECT 1 FROM deployments x WHERE x.repository_id = ` + repo + ` AND x.environment = ` + env + ` COLLATE NOCASE
			AND x.origin = 'external' AND x.run_id != 0))`
}

// untaken says, of an active release, that its deployment has waited
// untakenAfter for a workflow run to take it up (no status, no run linked,
// no run of the commit on the deployment event since), or "". GitHub runs
// the deploy workflow of the deployed commit, which a commit from before
// the workflow was added (a rollback) does not have; lastmile goes on
// waiting, as a run may yet come (an outage of Actions), and says why
// nothing happens.
func untaken(ctx context.Context, q querier, repoID int64, rel *pipeline.Release, envs []pipeline.EnvironmentRecord, now time.Time) (string, error) {
	if rel.State != pipeline.ReleaseActive {
		return "", nil
	}
	for _, env := range envs {
		if env.Outcome != pipeline.DeploymentCreated {
			continue
		}
		for _, d := range env.Deployments {
			if d.Origin != pipeline.OriginLastmile || d.State != pipeline.DeploymentCreated || d.RunID != 0 ||
				slices.ContainsFunc(d.Statuses, counted) || now.Sub(d.CreatedAt) < untakenAfter {
				continue
			}
			var busy bool
			if err := q.QueryRowContext(ctx, `SELECT `+mayYetRun("?", "?", "?", "?"),
				repoID, d.SHA, millis(d.CreatedAt), repoID, env.Name).Scan(&busy); err != nil {
				return "", err
			}
			if busy {
				continue
			}
			return fmt.Sprintf("no workflow run has taken up its deployment to %s, created %s ago: GitHub runs the deploy workflow (on: deployment) of the deployed commit — does %s have it? (Where a workflow owns %s's deployments, lastmile's own never runs.)",
				env.Name, now.Sub(d.CreatedAt).Truncate(time.Minute), d.SHA[:min(7, len(d.SHA))], env.Name), nil
		}
	}
	return "", nil
}

func releaseCommits(ctx context.Context, q querier, releaseID int64) ([]pipeline.Commit, error) {
	rows, err := q.QueryContext(ctx, `SELECT sha, author, timestamp, title FROM release_commits WHERE release_id = ? ORDER BY position`, releaseID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []pipeline.Commit{}
	for rows.Next() {
		var c pipeline.Commit
		var ts int64
		if err := rows.Scan(&c.SHA, &c.Author, &ts, &c.Title); err != nil {
			return nil, err
		}
		c.Timestamp = fromMillis(ts)
		out = append(out, c)
	}
	return out, rows.Err()
}

// outcome is a deployment's result as a record shows it: GitHub marks a
// deployment inactive once a newer one to its environment succeeds (or
// Actions' own for the job), but it had succeeded; lastmile marks a failed
// one inactive when it withdraws its release (so that a re-run deploys
// nothing), but it had failed.
func outcome(ctx context.Context, q querier, d *pipeline.Deployment) (pipeline.DeploymentState, error) {
	switch {
	case d.State != pipeline.DeploymentInactive:
	case d.Succeeded():
		return pipeline.DeploymentSuccess, nil
	case !d.TerminalAt.IsZero():
		var state string
		err := q.QueryRowContext(ctx, `SELECT state FROM deployment_statuses WHERE deployment_id = ? AND state IN ('failure', 'error')
			ORDER BY COALESCE(github_id, 0) DESC, id DESC LIMIT 1`, d.ID).Scan(&state)
		if err == nil {
			return pipeline.DeploymentState(state), nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return "", err
		}
	}
	return d.State, nil
}

// counted tells whether a status in an audit record is one of its
// deployment's own, not one kept for the record only.
func counted(s pipeline.StatusInfo) bool { return s.Disregarded == "" }

// OthersOutcome is what the deployments in an audit record's environment
// that lastmile did not make came to: the outcome of the newest of them,
// read as outcome reads lastmile's (success once it succeeded, though
// GitHub marked it inactive since), or "" when there is none. A job's own
// twin of lastmile's deployment is not one: it is lastmile's deploy.
func OthersOutcome(env *pipeline.EnvironmentRecord) pipeline.DeploymentState {
	var newest *pipeline.DeploymentRecord
	for i := range env.Deployments {
		d := &env.Deployments[i]
		if d.Origin == pipeline.OriginExternal && d.TwinOf == 0 && (newest == nil || !d.CreatedAt.Before(newest.CreatedAt)) {
			newest = d
		}
	}
	switch {
	case newest == nil:
		return ""
	case newest.Succeeded():
		return pipeline.DeploymentSuccess
	case newest.State == pipeline.DeploymentInactive && !newest.TerminalAt.IsZero():
		for _, s := range slices.Backward(newest.Statuses) {
			if s.State == pipeline.DeploymentFailure || s.State == pipeline.DeploymentError {
				return s.State
			}
		}
	}
	return newest.State
}

// readStatuses reads the deployment statuses query selects: GitHub's ID
// (0 for none), state, description, log_url, environment_url, creator,
// created_at and why it is disregarded (empty for one that counts).
func readStatuses(ctx context.Context, q querier, query string, args ...any) ([]pipeline.StatusInfo, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	var out []pipeline.StatusInfo
	for rows.Next() {
		var s pipeline.StatusInfo
		var state string
		var at int64
		if err := rows.Scan(&s.GitHubID, &state, &s.Description, &s.LogURL, &s.EnvironmentURL, &s.Creator, &at, &s.Disregarded); err != nil {
			rows.Close()
			return nil, err
		}
		s.State, s.CreatedAt = pipeline.DeploymentState(state), fromMillis(at)
		out = append(out, s)
	}
	return out, closeRows(rows)
}

func deploymentRecord(ctx context.Context, q querier, d *pipeline.Deployment) (*pipeline.DeploymentRecord, error) {
	statuses, err := readStatuses(ctx, q, `SELECT COALESCE(github_id, 0), state, description, log_url, environment_url, creator, created_at, ''
		FROM deployment_statuses WHERE deployment_id = ? ORDER BY id`, d.ID)
	if err != nil {
		return nil, err
	}
	dr := &pipeline.DeploymentRecord{Deployment: *d, Statuses: append([]pipeline.StatusInfo{}, statuses...)}
	// Those kept for the record only, among the others: each before the
	// first one GitHub made after it, or lastmile recorded alone (without
	// GitHub's ID, sorted below by the statuses recorded before it) at a
	// later time.
	disregarded, err := readStatuses(ctx, q, `SELECT github_id, state, description, log_url, environment_url, creator, created_at, why
		FROM disregarded_statuses WHERE deployment_id = ? ORDER BY github_id`, d.ID)
	if err != nil {
		return nil, err
	}
	for _, s := range disregarded {
		i := slices.IndexFunc(dr.Statuses, func(o pipeline.StatusInfo) bool {
			return o.GitHubID > s.GitHubID || o.GitHubID == 0 && o.CreatedAt.After(s.CreatedAt)
		})
		if i < 0 {
			i = len(dr.Statuses)
		}
		dr.Statuses = slices.Insert(dr.Statuses, i, s)
	}
	// In the order they happened, not the order they arrived in.
	inGitHubOrder(dr.Statuses, func(s pipeline.StatusInfo) int64 { return s.GitHubID })
	// A deployment lastmile did not create shows its run, jobs and reviews
	// when it has no twin of lastmile's (which shows them): a workflow that
	// owns its deployments, gated by reviewers or by lastmile's protection
	// rule.
	if d.RunID == 0 || (d.Origin == pipeline.OriginExternal && d.TwinOf != 0) {
		return dr, nil
	}
	if dr.Reviews, err = reviewsOf(ctx, q, d); err != nil {
		return nil, err
	}
	rows, err := q.QueryContext(ctx, `SELECT run_id, name, url, status, conclusion, attempt FROM workflow_runs WHERE run_id = ?`, d.RunID)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var r pipeline.RunRecord
		if err := rows.Scan(&r.ID, &r.Name, &r.URL, &r.Status, &r.Conclusion, &r.Attempt); err != nil {
			rows.Close()
			return nil, err
		}
		dr.Runs = append(dr.Runs, r)
	}
	if err := closeRows(rows); err != nil {
		return nil, err
	}
	rows, err = q.QueryContext(ctx, `SELECT j.job_id, j.name, j.url, j.conclusion, j.started_at, j.completed_at,
		COALESCE(l.size, 0), COALESCE(l.truncated, 0), l.job_id IS NOT NULL AND l.log IS NULL, COALESCE(l.missing, 0),
		CASE WHEN l.missing = 1 THEN l.log END
		FROM workflow_jobs j LEFT JOIN job_logs l ON l.job_id = j.job_id AND l.deployment_id = ?
		WHERE j.run_id = ? ORDER BY j.job_id`, d.ID, d.RunID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var j pipeline.JobRecord
		var started, completed int64
		var placeholder []byte
		if err := rows.Scan(&j.ID, &j.Name, &j.URL, &j.Conclusion, &started, &completed, &j.LogBytes, &j.LogTruncated, &j.LogPruned, &j.LogMissing, &placeholder); err != nil {
			return nil, err
		}
		if j.LogMissing {
			// What is kept is lastmile's placeholder (SaveMissingJobLog),
			// not a log: nothing of the job's was kept, or pruned. It says
			// why.
			j.LogBytes, j.LogTruncated, j.LogPruned = 0, false, false
			j.LogMissingWhy = missingWhy(placeholder)
		}
		j.StartedAt, j.CompletedAt = fromMillis(started), fromMillis(completed)
		dr.Jobs = append(dr.Jobs, j)
	}
	return dr, rows.Err()
}

// reviewsOf are the deployment reviews of a deployment a workflow run took
// up, oldest first: those linked to it, and those of its run and
// environment (a review delivered before lastmile linked the run).
func reviewsOf(ctx context.Context, q querier, d *pipeline.Deployment) ([]pipeline.ReviewRecord, error) {
	rows, err := q.QueryContext(ctx, `SELECT action, actor, reviewers, comment, since, at FROM reviews
		WHERE deployment_id = ? OR (repository_id = ? AND run_id = ? AND environment = ? COLLATE NOCASE) ORDER BY at, id`,
		d.ID, d.Repo.ID, d.RunID, d.Environment)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []pipeline.ReviewRecord
	for rows.Next() {
		var r pipeline.ReviewRecord
		var action, reviewers string
		var since, at int64
		if err := rows.Scan(&action, &r.Actor, &reviewers, &r.Comment, &since, &at); err != nil {
			return nil, err
		}
		r.Action, r.Since, r.At = pipeline.ReviewAction(action), fromMillis(since), fromMillis(at)
		_ = json.Unmarshal([]byte(reviewers), &r.Reviewers)
		out = append(out, r)
	}
	return out, rows.Err()
}

// missingWhy is the placeholder of a deploy log not kept (gzipped, as
// SaveMissingJobLog stores it) as the reason it gives, without its
// parentheses: "" if there is none (pruned) or it cannot be read.
func missingWhy(placeholder []byte) string {
	if placeholder == nil {
		return ""
	}
	zr, err := gzip.NewReader(bytes.NewReader(placeholder))
	if err != nil {
		return ""
	}
	text, err := io.ReadAll(io.LimitReader(zr, 4096))
	if err != nil {
		return ""
	}
	why := strings.TrimSpace(string(text))
	if inner, ok := strings.CutPrefix(why, "("); ok {
		why = strings.TrimSuffix(inner, ")")
	}
	// Placeholders written before the reason was shown said "this job".
	return strings.Replace(why, "GitHub had no log for this job", "GitHub had no log for it", 1)
}

// ErrPruned is returned for a deploy log that retention removed (the record
// of it stays).
var ErrPruned = errors.New("the log was pruned by retention")

// JobLog returns a kept deploy job log, decompressed: not one GitHub had
// no log for (lastmile keeps a placeholder, for the record to say so).
func (db *DB) JobLog(ctx context.Context, jobID int64) ([]byte, error) {
	var blob []byte
	var missing bool
	err := db.read.QueryRowContext(ctx, `SELECT log, missing FROM job_logs WHERE job_id = ?`, jobID).Scan(&blob, &missing)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("job %d: %w: no log kept", jobID, pipeline.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if missing {
		return nil, fmt.Errorf("job %d: %w: %s", jobID, pipeline.ErrNotFound, cmp.Or(missingWhy(blob), "GitHub had no log for it"))
	}
	if blob == nil {
		return nil, fmt.Errorf("job %d: %w", jobID, ErrPruned)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err == nil {
		var log []byte
		if log, err = io.ReadAll(zr); err == nil {
			return log, nil
		}
	}
	return nil, &DamagedLogError{JobID: jobID, Err: err}
}

// DamagedLogError is JobLog's error for a kept log that does not
// decompress: the database file was damaged or changed by hand. The record
// of the job stays readable; `lastmile backup` of an earlier day, or the
// Actions run while GitHub keeps it, has the log.
type DamagedLogError struct {
	JobID int64
	Err   error
}

func (e *DamagedLogError) Error() string {
	return fmt.Sprintf("job %d: the kept log is damaged and cannot be read (%v)", e.JobID, e.Err)
}

func (e *DamagedLogError) Unwrap() error { return e.Err }

// HistoryFilter selects releases for History.
type HistoryFilter struct {
	Repository  string // owner/name; "" for all
	Environment string // only releases deployed to it (see History); "" for all
	Limit       int    // default 20
	Before      int64  // only releases numbered below it (the next page after one ending there); 0 for no bound
}

// deployedThere is the condition on a deployment d that it was deployed
// to its environment, as History's environment filter reads it: GitHub
// has it, and it was not withdrawn (made inactive: its release superseded
// or stopped) before its deploy began.
const deployedThere = `d.github_id IS NOT NULL AND ((d.state != 'inactive' AND d.notify != 'inactive') OR d.terminal_at != 0
	OR EXISTS (SELECT 1 FROM deployment_statuses s WHERE s.deployment_id = d.id AND s.state = 'in_progress'))`

// historyThere is History's environment filter on release r, for one
// kind of deployment (%s): one of that kind deployed in environment ?.
// lastmile's own are read by their index; those workflows own
// (historyOwned), counted or not, among the commit's few.
const historyThere = `EXISTS (SELECT 1 FROM deployments d WHERE d.repository_id = r.repository_id
	AND d.environment = ? COLLATE NOCASE AND d.release_id = r.id AND %s AND ` + deployedThere + `)`

var historyOwned = "d.sha = r.sha AND (d.workflow_owned = 1 OR " + ownedBy("d") + ")"

// History lists recent releases, newest first, with where each stands in
// every environment: where lastmile's deployment stands, or, where it has
// not ended, the newest a workflow owns there (see
// pipeline.Deployment.Counts). Filtered by environment, it lists the
// releases deployed there: those with a deployment of lastmile's there (or
// one a workflow owns) that exists on GitHub — waiting for its reviewers, deploying, or ended — unless it
// was withdrawn (made inactive: its release superseded or stopped) before
// its deploy began. Not those lastmile never created there (an intent, one
// GitHub refused for now or for good, one its release stopped first).
func (db *DB) History(ctx context.Context, f HistoryFilter) ([]pipeline.HistoryEntry, error) {
	if f.Limit <= 0 {
		f.Limit = 20
	}
	tx, err := db.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	where, args := []string{"1 = 1"}, []any{}
	if f.Repository != "" {
		// By the repository lastmile knows by that name, now or before
		// a rename: its releases, under its current name.
		ids, err := repositoriesNamed(ctx, tx, f.Repository)
		if err != nil {
			return nil, err
		}
		where = append(where, "r.repository_id IN (?"+strings.Repeat(", ?", len(ids)-1)+")")
		for _, id := range ids {
			args = append(args, id)
		}
	}
	if f.Before > 0 {
		where = append(where, "r.id < ?")
		args = append(args, f.Before)
	}
	if f.Environment != "" {
		where = append(where, "("+fmt.Sprintf(historyThere, "d.origin = 'lastmile'")+" OR "+fmt.Sprintf(historyThere, historyOwned)+")")
		args = append(args, f.Environment, f.Environment)
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+releaseColumns+` FROM releases r JOIN repositories p ON p.id = r.repository_id
		WHERE `+strings.Join(where, " AND ")+` ORDER BY r.id DESC LIMIT ?`, append(args, f.Limit)...)
	if err != nil {
		return nil, err
	}
	var out []pipeline.HistoryEntry
	for rows.Next() {
		r, err := scanRelease(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		// [] for a release with no configuration (stopped for an
		// invalid one), as for one not deployed yet: not null.
		out = append(out, pipeline.HistoryEntry{Release: *r, Stages: []pipeline.StageOutcome{}})
	}
	if err := closeRows(rows); err != nil {
		return nil, err
	}
	for i := range out {
		e := &out[i]
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM release_commits WHERE release_id = ?`, e.Release.ID).Scan(&e.Commits); err != nil {
			return nil, err
		}
		// Two reads, each by its index: lastmile's deployments of the
		// release, and those a workflow owns (see
		// pipeline.Deployment.Counts).
		deps, err := queryDeployments(ctx, tx, `WHERE d.release_id = ? AND d.origin = 'lastmile' ORDER BY d.id`, e.Release.ID)
		if err != nil {
			return nil, err
		}
		owned, err := queryDeployments(ctx, tx, ownedOfRelease, e.Release.Repo.ID, e.Release.SHA, e.Release.ID)
		if err != nil {
			return nil, err
		}
		deps = append(deps, owned...)
		// lastmile's deployment there, or, where it has not ended (a
		// workflow owns the environment's deployments: lastmile's never
		// runs), the newest a workflow owns.
		ours, newestOwned := map[string]*pipeline.Deployment{}, map[string]*pipeline.Deployment{}
		for _, d := range deps {
			if d.Origin == pipeline.OriginLastmile {
				ours[strings.ToLower(d.Environment)] = d
			} else {
				newestOwned[strings.ToLower(d.Environment)] = d // the newest: they come in order
			}
		}
		byEnv := ours
		for key, d := range newestOwned {
			if byEnv[key] == nil || byEnv[key].TerminalAt.IsZero() {
				byEnv[key] = d
			}
		}
		if e.Release.Config != nil {
			for _, env := range e.Release.Config.Environments {
				st := pipeline.StageOutcome{Environment: env.Name}
				if d := byEnv[strings.ToLower(env.Name)]; d != nil {
					st.Workflow = d.Origin != pipeline.OriginLastmile
					if st.State, err = outcome(ctx, tx, d); err != nil {
						return nil, err
					}
					st.At = d.CreatedAt
					if !d.TerminalAt.IsZero() {
						st.At = d.TerminalAt
					}
				}
				e.Stages = append(e.Stages, st)
			}
		}
	}
	return out, nil
}

// repositoriesNamed are the IDs of the repositories lastmile knows by that
// name, the newest first: more than one when a repository was deleted (or
// renamed without lastmile hearing of it) and another took its name, each
// keeping its records. When none has the name now, the one that had it
// before its current one (renamed or transferred; the last to have it, if
// several did). ErrNotFound if no repository has or had it.
func repositoriesNamed(ctx context.Context, tx *sql.Tx, name string) ([]int64, error) {
	ids, err := queryColumn[int64](ctx, tx, `SELECT id FROM repositories WHERE full_name = ? COLLATE NOCASE
		ORDER BY updated_at DESC, id DESC`, name)
	if err == nil && len(ids) == 0 {
		ids, err = queryColumn[int64](ctx, tx, `SELECT repository_id FROM repository_names WHERE full_name = ?
			ORDER BY until_at DESC, repository_id DESC LIMIT 1`, name)
	}
	if err == nil && len(ids) == 0 {
		return nil, fmt.Errorf("repository %s: %w: lastmile has no record of it", name, pipeline.ErrNotFound)
	}
	return ids, err
}
