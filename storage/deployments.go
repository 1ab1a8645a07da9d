package storage

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
)

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

const deploymentColumns = `d.id, COALESCE(d.release_id, 0), d.repository_id, p.full_name, p.installation_id, d.environment, d.stage,
	d.sha, d.origin, COALESCE(d.github_id, 0), d.state, d.production, d.creator, d.attempts, d.reason, d.rejected, d.run_id,
	d.log_url, d.environment_url, COALESCE(d.twin_of, 0), d.notify, d.notify_reason, d.notify_at, d.created_at, d.terminal_at, d.succeeded_at, d.read_back, d.attempted_at,
	d.run_event, d.workflow_owned`

func scanDeployment(row rowScanner) (*pipeline.Deployment, error) {
	var d pipeline.Deployment
	var full, origin, state, notify string
	var notifyAt, created, terminal, succeeded, attempted int64
	if err := row.Scan(&d.ID, &d.ReleaseID, &d.Repo.ID, &full, &d.Repo.InstallationID, &d.Environment, &d.Stage,
		&d.SHA, &origin, &d.GitHubID, &state, &d.Production, &d.Creator, &d.Attempts, &d.Reason, &d.Rejected, &d.RunID,
		&d.LogURL, &d.EnvironmentURL, &d.TwinOf, &notify, &d.NotifyReason, &notifyAt, &created, &terminal, &succeeded, &d.ReadBack, &attempted,
		&d.RunEvent, &d.WorkflowOwned); err != nil {
		return nil, err
	}
	d.Repo.Owner, d.Repo.Name, _ = pipeline.SplitFullName(full)
	d.Origin, d.State, d.Notify = pipeline.Origin(origin), pipeline.DeploymentState(state), pipeline.DeploymentState(notify)
	d.NotifyAt, d.CreatedAt, d.TerminalAt, d.SucceededAt = fromMillis(notifyAt), fromMillis(created), fromMillis(terminal), fromMillis(succeeded)
	d.AttemptedAt = fromMillis(attempted)
	return &d, nil
}

func queryDeployments(ctx context.Context, q querier, where string, args ...any) ([]*pipeline.Deployment, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+deploymentColumns+` FROM deployments d
		JOIN repositories p ON p.id = d.repository_id `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*pipeline.Deployment
	for rows.Next() {
		d, err := scanDeployment(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

func oneDeployment(ctx context.Context, q querier, where string, args ...any) (*pipeline.Deployment, error) {
	d, err := scanDeployment(q.QueryRowContext(ctx, `SELECT `+deploymentColumns+` FROM deployments d
		JOIN repositories p ON p.id = d.repository_id `+where, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, pipeline.ErrNotFound
	}
	return d, err
}

// Deployment finds a deployment by its GitHub ID.
func (db *DB) Deployment(ctx context.Context, githubID int64) (*pipeline.Deployment, error) {
	return oneDeployment(ctx, db.read, `WHERE d.github_id = ?`, githubID)
}

// RecordExternal stores a deployment lastmile did not create, linked to the
// release of its commit and to lastmile's deployment of that commit to the
// same environment (its twin), when they exist; a workflow's own counts in
// the delivery metrics (see pipeline.Deployment.Counts).
func (db *DB) RecordExternal(ctx context.Context, repo pipeline.Repo, info pipeline.DeploymentInfo) (*pipeline.Deployment, error) {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if err := saveRepoTx(ctx, tx, repo, db.Now()); err != nil {
			return err
		}
		event, err := runEvent(ctx, tx, info)
		if err != nil {
			return err
		}
		var release, twin sql.NullInt64
		var cfg sql.NullString
		// The twin is the one the same workflow run deploys, if known
		// (a commit released again after a rollback has one lastmile
		// deployment per release), else the newest whose run is not
		// known yet. Actions' deployment for a job of another run than
		// the one a lastmile deployment is known to have triggered (a
		// workflow run by hand or on push redeploying the commit) is no
		// twin: it is a deployment of its own, its job's log kept with it.
		// Nor is one of a run that no deployment triggered, whatever
		// lastmile knows of its own deployment's run.
		if !otherEvent(event) {
			err = tx.QueryRowContext(ctx, `SELECT id FROM deployments WHERE repository_id = ? AND sha = ? AND environment = ? COLLATE NOCASE
				AND origin = 'lastmile' AND github_id IS NOT NULL AND (? = 0 OR run_id = 0 OR run_id = ?)
				ORDER BY (run_id = ? AND run_id != 0) DESC, id DESC LIMIT 1`,
				repo.ID, info.SHA, info.Environment, info.WorkflowRunID, info.WorkflowRunID, info.WorkflowRunID).Scan(&twin)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		// The twin's release; without a twin, the commit's newest (a
		// rollback releases a commit again).
		err = tx.QueryRowContext(ctx, `SELECT id, config FROM releases WHERE repository_id = ? AND sha = ?
			AND (? IS NULL OR id = (SELECT release_id FROM deployments WHERE id = ?))
			ORDER BY id DESC LIMIT 1`, repo.ID, info.SHA, twin, twin).Scan(&release, &cfg)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		stage := -1
		if cfg.Valid {
			var c pipeline.Config
			if json.Unmarshal([]byte(cfg.String), &c) == nil {
				stage = c.Index(info.Environment)
			}
		}
		created := info.CreatedAt
		if created.IsZero() {
			created = db.Now()
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO deployments (repository_id, release_id, environment, stage, sha, origin,
			github_id, state, production, creator, run_id, twin_of, created_at, run_event)
			VALUES (?, ?, ?, ?, ?, 'external', ?, 'created', ?, ?, ?, ?, ?, ?) ON CONFLICT (github_id) DO NOTHING`,
			repo.ID, release, info.Environment, stage, info.SHA, info.GitHubID, info.Production, info.Creator,
			info.WorkflowRunID, twin, millis(created), event)
		if err != nil {
			return err
		}
		return settleOwned(ctx, tx, `github_id = ?`, info.GitHubID)
	})
	if err != nil {
		return nil, fmt.Errorf("record deployment %d: %w", info.GitHubID, err)
	}
	return db.Deployment(ctx, info.GitHubID)
}

// otherEvent reports whether a workflow run's triggering event is known
// and is not a deployment: the run deploys none of lastmile's.
func otherEvent(event string) bool {
	return event != "" && event != "deployment"
}

// runEvent is the event that triggered the run of the job Actions made
// deployment info for: as the webhook says, or as the run's own webhook
// told; "" when not known (or no run).
func runEvent(ctx context.Context, q querier, info pipeline.DeploymentInfo) (string, error) {
	if info.WorkflowRunID == 0 || info.WorkflowRunEvent != "" {
		return info.WorkflowRunEvent, nil
	}
	var event string
	err := q.QueryRowContext(ctx, `SELECT event FROM workflow_runs WHERE run_id = ?`, info.WorkflowRunID).Scan(&event)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return event, err
}

// learnRunSQL records, for an external deployment whose run (?2) or its
// event (?3) lastmile did not know when it recorded it, what it learnt: a
// job of a run that no deployment triggered has no twin of lastmile's
// (see RecordExternal). The WHERE clause that picks the deployments
// follows; settleOwned then says whether they count.
const learnRunSQL = `UPDATE deployments SET run_id = ?2, run_event = ?3,
	twin_of = CASE WHEN ?3 NOT IN ('', 'deployment') THEN NULL ELSE twin_of END
	WHERE origin = 'external' AND `

// ownedSQL is the condition on a row of deployments that it is a
// deployment a workflow owns (see pipeline.Deployment.Counts): Actions'
// own for a job of a run that no deployment triggered, no twin of
// lastmile's, of a commit of a release whose configuration names the
// environment, and a job that asked lastmile, as the environment's custom
// protection rule, whether it may deploy, and that lastmile let deploy:
// the decision on this deployment (a re-run's job asks again, for a
// deployment of its own; a decision recorded before lastmile kept which
// deployment it was on stands for every attempt of the run there), an
// approval GitHub took: one not withdrawn (refused or not: the run then
// no longer waited — the approval taken, its reply lost, or the run
// cancelled), or, withdrawn, one whose job started (in_progress): GitHub
// lets no job it holds run, and its refusal of the rejection sent instead
// does not say which answer of the run's it took.
// An environment whose jobs lastmile gates is one where workflows own the
// deployments (a job with `deployment: false`, as the deploy jobs of
// lastmile's own deployments have, cannot run under a custom rule); a job
// it refused (a superseded release's, say) never deployed, and counts no
// more than lastmile's own deployment of a superseded release, made
// inactive. Not, so, a job that names an environment for its secrets in a
// workflow on push (a CI job), where lastmile's deployments are the ones
// that deploy.
var ownedSQL = ownedBy("deployments")

// ownedOfRelease picks, for queryDeployments, the deployments workflows
// own of release ?3, at commit ?2 of repository ?1, oldest first in
// GitHub's order: those counted in the metrics (workflow_owned), and those
// that ended before lastmile knew them for a workflow's (see settleOwned),
// which are not counted but are where the release stands. It reads the
// commit's few deployments (deployments_sha).
var ownedOfRelease = `WHERE d.repository_id = ?1 AND d.sha = ?2 AND d.release_id = ?3
	AND (d.workflow_owned = 1 OR ` + ownedBy("d") + `) ORDER BY COALESCE(d.github_id, 0), d.id`

// ownedBy is ownedSQL for the row of deployments named t in the query.
func ownedBy(t string) string {
	return strings.NewReplacer("T.", t+".").Replace(`T.origin = 'external' AND T.run_id != 0 AND T.run_event NOT IN ('', 'deployment')
	AND T.twin_of IS NULL AND T.release_id IS NOT NULL AND T.stage >= 0
	AND EXISTS (SELECT 1 FROM protection_decisions p WHERE p.run_id = T.run_id
		AND p.repository_id = T.repository_id AND p.environment = T.environment COLLATE NOCASE
		AND p.deployment_id IN (0, T.github_id) AND p.state = 'approved' AND (p.withdrawn_at IS NULL
			OR EXISTS (SELECT 1 FROM deployment_statuses s WHERE s.deployment_id = T.id AND s.state = 'in_progress')))`)
}

// settleOwned marks the deployments that where picks (a condition, with
// args) as a workflow's own when they are (ownedSQL) and have not ended:
// they count in the delivery metrics from their first final status on. One
// that ended before lastmile knew it is not counted (it would be, in part:
// its first final status was not).
func settleOwned(ctx context.Context, tx *sql.Tx, where string, args ...any) error {
	_, err := tx.ExecContext(ctx, `UPDATE deployments SET workflow_owned = 1
		WHERE workflow_owned = 0 AND terminal_at = 0 AND succeeded_at = 0 AND `+ownedSQL+` AND `+where, args...)
	return err
}

// unsettleOwned takes back the mark of a workflow's own from the
// deployments that where picks when they no longer are one (ownedSQL: an
// approval withdrawn) and have not ended: nothing of theirs has been
// counted yet.
func unsettleOwned(ctx context.Context, tx *sql.Tx, where string, args ...any) error {
	_, err := tx.ExecContext(ctx, `UPDATE deployments SET workflow_owned = 0
		WHERE workflow_owned = 1 AND terminal_at = 0 AND succeeded_at = 0 AND NOT (`+ownedSQL+`) AND `+where, args...)
	return err
}

// LearnRun records that external deployment deploymentID is Actions' own
// for a job of run runID, triggered by event (when known), if it did not
// know that yet.
func (db *DB) LearnRun(ctx context.Context, deploymentID, runID int64, event string) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		if event == "" && runID != 0 {
			var err error
			if event, err = runEvent(ctx, tx, pipeline.DeploymentInfo{WorkflowRunID: runID}); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, learnRunSQL+`id = ?1 AND (run_id = 0 OR run_id = ?2) AND run_event = ''`,
			deploymentID, runID, event); err != nil {
			return err
		}
		return settleOwned(ctx, tx, `id = ?`, deploymentID)
	})
}

func saveRepoTx(ctx context.Context, tx *sql.Tx, r pipeline.Repo, now time.Time) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO repositories (id, full_name, installation_id, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (id) DO NOTHING`, r.ID, r.FullName(), r.InstallationID, millis(now))
	return err
}

// LinkRun ties a workflow run to a deployment.
func (db *DB) LinkRun(ctx context.Context, deploymentID, runID int64) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE deployments SET run_id = ? WHERE id = ? AND run_id = 0`, runID, deploymentID)
		return err
	})
}

// RecordStatus stores a deployment status and moves the deployment on. The
// first terminal status of a lastmile deployment updates the delivery
// metrics in the same transaction, so each deployment is counted once (and
// once more, as a success, when it succeeds after failing), whatever order
// its statuses are delivered in.
func (db *DB) RecordStatus(ctx context.Context, dep *pipeline.Deployment, s pipeline.StatusInfo) (bool, error) {
	isNew := false
	record := func(tx *sql.Tx) error {
		at := s.CreatedAt
		if at.IsZero() {
			at = db.Now()
		}
		var statusID any
		if s.GitHubID != 0 {
			statusID = s.GitHubID
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO deployment_statuses (deployment_id, github_id, state, description, log_url,
			environment_url, creator, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (github_id) DO NOTHING`,
			dep.ID, statusID, string(s.State), s.Description, s.LogURL, s.EnvironmentURL, s.Creator, millis(at))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		isNew = true
		rowID, err := res.LastInsertId()
		if err != nil {
			return err
		}
		d, err := oneDeployment(ctx, tx, `WHERE d.id = ?`, dep.ID)
		if err != nil {
			return err
		}
		if d.Origin == pipeline.OriginExternal && !d.WorkflowOwned && s.State == pipeline.DeploymentInProgress {
			// A job that runs, whose approval lastmile withdrew: GitHub had
			// taken it (see ownedSQL).
			if err := settleOwned(ctx, tx, `id = ?`, d.ID); err != nil {
				return err
			}
			if d, err = oneDeployment(ctx, tx, `WHERE d.id = ?`, dep.ID); err != nil {
				return err
			}
		}
		if s.ByLastmile && s.Creator != "" {
			if _, err := tx.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES (?, ?)
				ON CONFLICT (key) DO UPDATE SET value = excluded.value`, appLoginKey, s.Creator); err != nil {
				return err
			}
		}
		if s.ByLastmile && s.State == pipeline.DeploymentInactive && d.Origin == pipeline.OriginLastmile {
			// Its statuses are read back next (see pipeline.Engine's
			// notify): owed until then.
			if _, err := tx.ExecContext(ctx, `UPDATE deployments SET read_back = 1 WHERE id = ?`, d.ID); err != nil {
				return err
			}
		}
		if d.Origin == pipeline.OriginLastmile && s.GitHubID != 0 &&
			(d.State == pipeline.DeploymentInactive && s.State == pipeline.DeploymentInProgress ||
				d.State == pipeline.DeploymentInProgress && s.State == pipeline.DeploymentInactive) {
			// lastmile made a deployment inactive that the workflow had
			// begun to deploy (its in_progress not yet delivered): the
			// deploy runs all the same, and holds its environment, until
			// the workflow reports an end.
			runs, err := attemptRuns(ctx, tx, d.ID)
			if err != nil {
				return err
			}
			if runs {
				_, err := tx.ExecContext(ctx, `UPDATE deployments SET state = 'in_progress',
					notify = CASE WHEN notify = ? THEN '' ELSE notify END WHERE id = ?`, string(s.State), d.ID)
				return err
			}
		}
		if s.State == d.Notify && !d.NotifyAt.IsZero() && d.NotifyAt.Before(at) {
			// The status lastmile owed for a run that ended earlier (the
			// Action's own, posted before the run ended, keeps its time).
			at = d.NotifyAt
			if _, err := tx.ExecContext(ctx, `UPDATE deployment_statuses SET ended_at = ? WHERE id = ?`, millis(at), rowID); err != nil {
				return err
			}
		}
		if d.State.After(s.State) != s.State {
			// A late status (a queued after in_progress, an in_progress
			// after success): kept in the record, but it does not move the
			// deployment backwards.
			if s.State == pipeline.DeploymentInProgress {
				return lateStart(ctx, tx, d, rowID)
			}
			return nil
		}
		stale := false
		if d.State.Terminal() && s.State.Terminal() && s.GitHubID != 0 {
			// Between final statuses the newest on GitHub wins (its IDs
			// grow), not the last delivered: a first attempt's failure
			// delivered after its re-run's success stays in the record
			// only. A stale status still counts in the metrics below (a
			// success delivered after GitHub's automatic inactive).
			var newer int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM deployment_statuses WHERE deployment_id = ? AND github_id > ?
				AND state IN ('success', 'failure', 'error', 'inactive')`, d.ID, s.GitHubID).Scan(&newer); err != nil {
				return err
			}
			stale = newer > 0
		}
		if !stale {
			// The end lastmile owes for a run that ended without one
			// (failure, error) is moot once GitHub has an end of the
			// deployment, or a start made after that run ended (a re-run
			// deploys it, and reports its own end): written after them, it
			// would be the newest status, over the re-run's.
			moot := s.GitHubID != 0 && !s.ByLastmile && (s.State == pipeline.DeploymentSuccess || s.State == pipeline.DeploymentFailure || s.State == pipeline.DeploymentError ||
				s.State == pipeline.DeploymentInProgress && !d.NotifyAt.IsZero() && at.After(d.NotifyAt))
			_, err = tx.ExecContext(ctx, `UPDATE deployments SET state = ?,
				log_url = CASE WHEN ? != '' THEN ? ELSE log_url END,
				environment_url = CASE WHEN ? != '' THEN ? ELSE environment_url END,
				notify = CASE WHEN notify = ? THEN '' WHEN ? AND notify IN ('failure', 'error') THEN '' ELSE notify END,
				reason = CASE WHEN ? = 'success' THEN '' WHEN ? IN ('failure', 'error', 'inactive') AND ? != '' THEN ? ELSE reason END
				WHERE id = ?`, string(s.State), s.LogURL, s.LogURL, s.EnvironmentURL, s.EnvironmentURL, string(s.State), moot,
				string(s.State), string(s.State), s.Description, s.Description, d.ID)
			if err != nil {
				return err
			}
		}
		if !d.Counts() {
			// Recorded, not counted: its first final status and first
			// success, for the audit record.
			final := s.State == pipeline.DeploymentSuccess || s.State == pipeline.DeploymentFailure || s.State == pipeline.DeploymentError
			if final && d.TerminalAt.IsZero() {
				if _, err := tx.ExecContext(ctx, `UPDATE deployments SET terminal_at = ? WHERE id = ?`, millis(at), d.ID); err != nil {
					return err
				}
			}
			if s.State == pipeline.DeploymentSuccess && d.SucceededAt.IsZero() {
				_, err = tx.ExecContext(ctx, `UPDATE deployments SET succeeded_at = ? WHERE id = ?`, millis(at), d.ID)
			}
			return err
		}
		return db.rollUp(ctx, tx, d, s.State, rowID, at, stale)
	}
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if err := record(tx); err != nil || !isNew || !s.State.Started() {
			return err
		}
		if err := markRerun(ctx, tx, dep.ID); err != nil {
			return err
		}
		return rerunAfterRejection(ctx, tx, dep.ID, db.Now())
	})
	return isNew, err
}

// RecordDisregardedStatus keeps status s of deployment dep, and why it is
// disregarded, for the audit record only (see pipeline.DisregardedStatus).
func (db *DB) RecordDisregardedStatus(ctx context.Context, dep *pipeline.Deployment, s pipeline.StatusInfo, why string) (bool, error) {
	if s.GitHubID == 0 {
		return false, fmt.Errorf("deployment %d: a disregarded status without GitHub's ID", dep.GitHubID)
	}
	at := s.CreatedAt
	if at.IsZero() {
		at = db.Now()
	}
	res, err := db.exec(ctx, `INSERT INTO disregarded_statuses (github_id, deployment_id, state, description, log_url, environment_url,
		creator, created_at, why) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (github_id) DO NOTHING`,
		s.GitHubID, dep.ID, string(s.State), s.Description, s.LogURL, s.EnvironmentURL, s.Creator, millis(at), why)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// markRerun records whether a re-run of a deployment is deploying it again
// after its final status: its newest in_progress comes after its newest
// final status (success, failure, error, inactive) in GitHub's order,
// whatever order they were delivered in. Its state stays the final one
// (see pipeline.DeploymentState.After), but like a first attempt in
// progress the re-run holds its environment and has a protection-rule
// request wait for it (see Running, HeldBy, RepoState); the re-run's own
// final status ends that.
func markRerun(ctx context.Context, tx *sql.Tx, deploymentID int64) error {
	type status struct {
		github int64
		state  pipeline.DeploymentState
	}
	rows, err := tx.QueryContext(ctx, `SELECT COALESCE(github_id, 0), state FROM deployment_statuses
		WHERE deployment_id = ? ORDER BY id`, deploymentID)
	if err != nil {
		return err
	}
	var all []status
	for rows.Next() {
		var st status
		if err := rows.Scan(&st.github, &st.state); err != nil {
			rows.Close()
			return err
		}
		all = append(all, st)
	}
	if err := closeRows(rows); err != nil {
		return err
	}
	inGitHubOrder(all, func(st status) int64 { return st.github })
	rerun := false
	for _, st := range slices.Backward(all) {
		if st.state.Started() {
			rerun = st.state == pipeline.DeploymentInProgress
			break
		}
	}
	_, err = tx.ExecContext(ctx, `UPDATE deployments SET rerun = (? AND state IN ('success', 'failure', 'error', 'inactive'))
		WHERE id = ? AND rerun != (? AND state IN ('success', 'failure', 'error', 'inactive'))`, rerun, deploymentID, rerun)
	return err
}

// appLoginKey names the setting that holds lastmile's login on GitHub (its
// App's bot), as GitHub shows it on the statuses lastmile writes.
const appLoginKey = "github_app_login"

// attemptRuns reports whether the deploy a deployment's newest in_progress
// began still runs although the deployment was made inactive: no one but
// lastmile has written a status on GitHub since — neither an end (success,
// failure, error) nor the inactive the Action writes when it finds, right
// after its in_progress, that lastmile made the deployment inactive, and
// deploys nothing. lastmile's own inactive does not stop a deploy that has
// begun.
func attemptRuns(ctx context.Context, tx *sql.Tx, deploymentID int64) (bool, error) {
	var runs bool
	err := tx.QueryRowContext(ctx, `SELECT p.started IS NOT NULL AND NOT EXISTS (SELECT 1 FROM deployment_statuses s
			WHERE s.deployment_id = ? AND s.github_id > p.started
			AND (s.state != 'inactive' OR s.creator != COALESCE((SELECT value FROM settings WHERE key = ?), '')))
		FROM (SELECT MAX(github_id) AS started FROM deployment_statuses WHERE deployment_id = ? AND state = 'in_progress') p`,
		deploymentID, appLoginKey, deploymentID).Scan(&runs)
	return runs, err
}

// lateStart handles an in_progress delivered after a final status of its
// deployment: a report, delivered late, that the attempt which then failed
// had started (its clock of time to restore runs from that failure), or
// the start of a re-run. An attempt already known to have started was
// counted then.
func lateStart(ctx context.Context, tx *sql.Tx, d *pipeline.Deployment, rowID int64) error {
	if !d.Counts() {
		return nil
	}
	a, err := failedAttempt(ctx, tx, d.ID, rowID)
	if err != nil || a.failedAt == 0 || a.starts > 1 {
		return err
	}
	es, _, err := envStateOf(ctx, tx, d)
	if err != nil {
		return err
	}
	if err := es.failedDeploy(ctx, tx, a); err != nil {
		return err
	}
	return es.save(ctx, tx)
}

// attempt is one attempt of a deployment (see failedAttempt).
type attempt struct {
	failedAt int64 // when it failed (unix milliseconds); 0 if it succeeded, has not ended, or never started
	final    int64 // the row of its final status, if it failed
	starts   int   // its in_progress statuses
}

// failedAttempt finds the attempt that the status recorded as row rowID
// belongs to — a deployment is deployed again by each re-run of its
// workflow, and its statuses, between one final status and the next, are
// one attempt — and returns when that attempt failed (its failure or
// error, unix milliseconds) if it had started (an in_progress), with the
// row of that final status; zero if it succeeded, has not ended, or never
// started (rejected, cancelled while it waited).
//
// The statuses are taken in GitHub's order (its IDs grow), whatever order
// they were delivered in. A status lastmile recorded without a GitHub ID
// (its own, which GitHub refused) comes right after the newest status
// recorded before it.
func failedAttempt(ctx context.Context, tx *sql.Tx, deploymentID, rowID int64) (attempt, error) {
	type status struct {
		row, github int64
		state       string
		at          int64
	}
	rows, err := tx.QueryContext(ctx, `SELECT id, COALESCE(github_id, 0), state,
		CASE WHEN ended_at > 0 THEN ended_at ELSE created_at END FROM deployment_statuses
		WHERE deployment_id = ? ORDER BY id`, deploymentID)
	if err != nil {
		return attempt{}, err
	}
	var all []status
	for rows.Next() {
		var s status
		if err := rows.Scan(&s.row, &s.github, &s.state, &s.at); err != nil {
			rows.Close()
			return attempt{}, err
		}
		all = append(all, s)
	}
	if err := closeRows(rows); err != nil {
		return attempt{}, err
	}
	inGitHubOrder(all, func(s status) int64 { return s.github })
	final := func(s status) bool {
		return s.state == string(pipeline.DeploymentSuccess) || s.state == string(pipeline.DeploymentFailure) ||
			s.state == string(pipeline.DeploymentError)
	}
	at := slices.IndexFunc(all, func(s status) bool { return s.row == rowID })
	if at < 0 {
		return attempt{}, nil
	}
	start := at
	for start > 0 && !final(all[start-1]) {
		start--
	}
	end := at
	for end < len(all) && !final(all[end]) {
		end++
	}
	if end == len(all) || all[end].state == string(pipeline.DeploymentSuccess) {
		return attempt{}, nil
	}
	starts := 0
	for _, s := range all[start:end] {
		if s.state == string(pipeline.DeploymentInProgress) {
			starts++
		}
	}
	if starts == 0 {
		return attempt{}, nil
	}
	return attempt{failedAt: all[end].at, final: all[end].row, starts: starts}, nil
}

// EndUnheard reports whether the final status s of a deployment, not yet
// recorded, comes after the start of an earlier attempt whose end lastmile
// has not heard of: in GitHub's order (its IDs grow), an in_progress
// followed by a queued or another in_progress with no final status
// (success, failure, error, inactive) between — a re-run's statuses
// delivered before the first attempt's failure, say. The engine then
// reads that end back from GitHub before it records s.
//
// So too for an inactive that someone other than lastmile wrote (GitHub's
// automatic inactive, when another deployment to the environment
// succeeds) over a deployment with no final status recorded, or whose
// re-run runs: GitHub makes only a successful deployment inactive so, and
// that success, if it came first, carries the release on (an inactive
// with no success before it stops the release, as superseded).
func (db *DB) EndUnheard(ctx context.Context, deploymentID int64, s pipeline.StatusInfo) (bool, error) {
	type status struct {
		github int64
		state  string
	}
	if s.GitHubID != 0 && s.State == pipeline.DeploymentInactive && !s.ByLastmile {
		var unheard bool
		err := db.read.QueryRowContext(ctx, `SELECT (d.state NOT IN ('success', 'failure', 'error', 'inactive') OR d.rerun = 1)
			AND ? != COALESCE((SELECT value FROM settings WHERE key = ?), '')
			AND NOT EXISTS (SELECT 1 FROM deployment_statuses WHERE deployment_id = d.id AND github_id = ?)
			FROM deployments d WHERE d.id = ?`, s.Creator, appLoginKey, s.GitHubID, deploymentID).Scan(&unheard)
		if errors.Is(err, sql.ErrNoRows) {
			return false, nil
		}
		return unheard, err
	}
	if s.GitHubID == 0 || !(s.State == pipeline.DeploymentSuccess || s.State == pipeline.DeploymentFailure || s.State == pipeline.DeploymentError) {
		return false, nil
	}
	rows, err := db.read.QueryContext(ctx, `SELECT COALESCE(github_id, 0), state FROM deployment_statuses
		WHERE deployment_id = ? ORDER BY id`, deploymentID)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	var all []status
	for rows.Next() {
		var st status
		if err := rows.Scan(&st.github, &st.state); err != nil {
			return false, err
		}
		if st.github == s.GitHubID {
			return false, nil // recorded already
		}
		all = append(all, st)
	}
	if err := rows.Err(); err != nil {
		return false, err
	}
	all = append(all, status{s.GitHubID, string(s.State)})
	inGitHubOrder(all, func(st status) int64 { return st.github })
	started := false // an attempt has started, its end not heard of
	for _, st := range all {
		if st.github == s.GitHubID {
			break
		}
		switch pipeline.DeploymentState(st.state) {
		case pipeline.DeploymentQueued, pipeline.DeploymentInProgress:
			if started {
				return true, nil
			}
			started = st.state == string(pipeline.DeploymentInProgress)
		case pipeline.DeploymentSuccess, pipeline.DeploymentFailure, pipeline.DeploymentError, pipeline.DeploymentInactive:
			started = false
		}
	}
	return false, nil
}

// inGitHubOrder sorts a deployment's statuses, given in the order they were
// recorded, into GitHub's order — its IDs grow — whatever order they were
// delivered in. A status lastmile recorded without a GitHub ID (its own,
// which GitHub refused) stays right after the newest status recorded
// before it.
func inGitHubOrder[T any](list []T, githubID func(T) int64) {
	after := make([]int64, len(list)) // by index: the GitHub ID it sorts under
	newest := int64(0)
	for i, s := range list {
		if id := githubID(s); id != 0 {
			newest = max(newest, id)
			after[i] = id
		} else {
			after[i] = newest
		}
	}
	idx := make([]int, len(list))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		if c := cmp.Compare(after[a], after[b]); c != 0 {
			return c
		}
		// Under one GitHub status, it first, then lastmile's own.
		return cmp.Compare(githubID(list[b]), githubID(list[a]))
	})
	sorted := make([]T, len(list))
	for i, j := range idx {
		sorted[i] = list[j]
	}
	copy(list, sorted)
}

// rollUp updates the delivery metrics for a status of a deployment that
// counts (lastmile's, or one a workflow owns: see pipeline.Deployment.Counts).
// stale: the status is older than a final one already recorded, so it
// counts in the metrics but changes nothing else.
func (db *DB) rollUp(ctx context.Context, tx *sql.Tx, d *pipeline.Deployment, state pipeline.DeploymentState, rowID int64, at time.Time, stale bool) error {
	terminal := state == pipeline.DeploymentSuccess || state == pipeline.DeploymentFailure || state == pipeline.DeploymentError
	if !terminal {
		return nil
	}
	es, d, err := envStateOf(ctx, tx, d)
	if err != nil {
		return err
	}
	repo, env := d.Repo.FullName(), d.Environment
	if d.TerminalAt.IsZero() {
		if _, err := tx.ExecContext(ctx, `UPDATE deployments SET terminal_at = ? WHERE id = ?`, millis(at), d.ID); err != nil {
			return err
		}
		if err := addCounter(ctx, tx, MetricDeployments, []string{repo, env, string(state)}, 1); err != nil {
			return err
		}
		// Its duration: created to its first final status, observed once,
		// by the first final status lastmile hears of. An observation
		// cannot be undone, so the engine first reads back an earlier
		// attempt's end it knows it has not heard of (EndUnheard): a
		// re-run's success delivered before the first attempt's failure
		// measures that failure, as in GitHub's order. A final status
		// heard of before an earlier one lastmile had no sign of (a
		// rejection, of an attempt that never started) keeps its value.
		if err := observe(ctx, tx, metrics.DeploymentDuration, repo, env, max(at.Sub(d.CreatedAt).Seconds(), 0)); err != nil {
			return err
		}
	} else if state != pipeline.DeploymentSuccess && d.TerminalAt.Equal(d.SucceededAt) {
		// Counted as a success when it first ended, as lastmile heard it.
		// Its first failure counts as well, once — a re-run's after that
		// success, or one delivered late that came first in GitHub's order
		// (which then is when it first ended) — as a failure then a
		// success on a re-run count once each.
		var first, counted bool
		if err := tx.QueryRowContext(ctx, `SELECT s.github_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM deployment_statuses o
			WHERE o.deployment_id = s.deployment_id AND o.github_id < s.github_id AND o.state IN ('success', 'failure', 'error')),
			EXISTS (SELECT 1 FROM deployment_statuses o WHERE o.deployment_id = s.deployment_id AND o.id != s.id AND o.state IN ('failure', 'error'))
			FROM deployment_statuses s WHERE s.id = ?`, rowID).Scan(&first, &counted); err != nil {
			return err
		}
		if first {
			if _, err := tx.ExecContext(ctx, `UPDATE deployments SET terminal_at = ? WHERE id = ?`, millis(at), d.ID); err != nil {
				return err
			}
		}
		if !counted {
			if err := addCounter(ctx, tx, MetricDeployments, []string{repo, env, string(state)}, 1); err != nil {
				return err
			}
		}
	}
	// A failed deploy — the first attempt or a re-run — starts the clock of
	// time to restore, or, heard of after the success that restored the
	// environment, is measured to that success (failedDeploy). An attempt
	// that never started (rejected, cancelled while it waited) changed
	// nothing there.
	if state != pipeline.DeploymentSuccess {
		a, err := failedAttempt(ctx, tx, d.ID, rowID)
		if err != nil {
			return err
		}
		if a.failedAt != 0 {
			if err := es.failedDeploy(ctx, tx, a); err != nil {
				return err
			}
		}
	}
	// Any success — a re-run's too, of a deployment that had succeeded
	// before its failed re-run — is the environment's latest success and
	// ends time to restore; a success from before the failure (delivered
	// late) restores nothing. A success heard of after failures later than
	// it (delivered late) leaves the environment failing since the first
	// of those.
	if state == pipeline.DeploymentSuccess {
		es.lastSuccess = max(es.lastSuccess, millis(at))
		if es.failingSince != 0 && millis(at) >= es.failingSince {
			if err := observe(ctx, tx, metrics.TimeToRestore, repo, env, float64(millis(at)-es.failingSince)/1000); err != nil {
				return err
			}
			if es.failingSince, err = firstStartedFailure(ctx, tx, d.Repo.ID, env, millis(at)); err != nil {
				return err
			}
		}
	}
	if state == pipeline.DeploymentSuccess && d.SucceededAt.IsZero() {
		if _, err := tx.ExecContext(ctx, `UPDATE deployments SET succeeded_at = ? WHERE id = ?`, millis(at), d.ID); err != nil {
			return err
		}
		// Counted when it first ended as failure or error, a deployment
		// whose re-run succeeds is counted as a success too (once), so
		// that deploy frequency counts it.
		if !d.TerminalAt.IsZero() {
			if err := addCounter(ctx, tx, MetricDeployments, []string{repo, env, string(state)}, 1); err != nil {
				return err
			}
		}
		if d.ReleaseID > es.leadWatermark {
			if err := observeLeadTimes(ctx, tx, d, es.leadWatermark, at); err != nil {
				return err
			}
			es.leadWatermark = d.ReleaseID
		}
		// A re-run that succeeds after a failure carries the release on
		// (not a success older than the failure, delivered after it).
		// A workflow's own deployment carries on only a release whose
		// workflow creates the deployments (deployments: workflow) — and
		// a re-run of a job there is a deployment of its own, whose
		// success is its first —; elsewhere lastmile's do.
		if !stale && (d.Origin == pipeline.OriginLastmile || d.WorkflowOwned) {
			if _, err := tx.ExecContext(ctx, `UPDATE releases SET state = 'active', stop_kind = '', stop_reason = '', updated_at = ?1
				WHERE id = ?2 AND state = 'stopped' AND stop_kind IN ('failed', 'rejected')
				AND (?3 OR json_extract(config, '$.deployments') = ?4)`,
				millis(db.Now()), d.ReleaseID, d.Origin == pipeline.OriginLastmile, pipeline.DeploymentsWorkflow); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE deployments SET rejected = 0 WHERE id = ?`, d.ID); err != nil {
				return err
			}
		}
	}
	return es.save(ctx, tx)
}

// observeLeadTimes observes, for every commit that reaches env for the
// first time with this deployment, the time from the commit to now. The
// commits a deployment brings are those of its release and of the releases
// it builds on, back to the environment's watermark — or, when its release
// does not build on what the environment last ran, those of GitHub's
// comparison (see leadPlan); of those, a commit that an earlier success
// already brought there (a roll-forward after a rollback brings back what
// production ran before) is not observed again: environment_commits keeps,
// per environment, each commit's first arrival.
//
// A release that a force push left behind never reaches the environment
// through this one, and its commits do not count. The environment's first
// success (no watermark: a new repository, or an environment added to the
// configuration later) brings the commits of the releases since the first
// whose configuration names the environment — those that failed there,
// stopped before it or never got there — not the history from before the
// environment was in the pipeline. Nor does the history a baseline release
// lists (the branch's, when the push that created it made the repository's
// first release): only its own commit counts.
func observeLeadTimes(ctx context.Context, tx *sql.Tx, d *pipeline.Deployment, watermark int64, at time.Time) error {
	commits, err := leadCommits(ctx, tx, d.Repo.ID, d.Environment, d.ReleaseID, d.SHA, watermark)
	if err != nil {
		return err
	}
	var values []float64
	reached := map[string]bool{} // the commits that reach the environment now
	for _, c := range commits {
		res, err := tx.ExecContext(ctx, `INSERT INTO environment_commits (repository_id, environment, sha, deployment_id, reached_at)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`, d.Repo.ID, d.Environment, c.sha, d.ID, millis(at))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		reached[c.sha] = n == 1
		if n == 1 && c.ts.Valid && c.ts.Int64 <= millis(at) {
			// A commit's time is no later than its push (commitTime, when
			// the push's time is known), so one dated after the success
			// that brought it is one whose push time is unknown, or one
			// GitHub's clocks disagree on: left out, as Four Keys does,
			// rather than counted as the fastest.
			values = append(values, float64(millis(at)-c.ts.Int64)/1000)
		}
	}
	if err := reachBaselineHistory(ctx, tx, d, reached, at); err != nil {
		return err
	}
	return observe(ctx, tx, metrics.LeadTime, d.Repo.FullName(), d.Environment, values...)
}

// reachBaselineHistory records, when the commit of the repository's
// baseline release reaches d's environment (reached says which commits
// do now), the history that release lists as having reached it too —
// those commits are beneath it — without a lead time: a comparison that
// lists some of them later (a roll forward after a rollback into that
// history) does not count them as delivered then.
func reachBaselineHistory(ctx context.Context, tx *sql.Tx, d *pipeline.Deployment, reached map[string]bool, at time.Time) error {
	// A baseline is the repository's first release: one seek.
	var baseline int64
	var sha string
	var isBaseline bool
	err := tx.QueryRowContext(ctx, `SELECT id, sha, baseline FROM releases WHERE repository_id = ? ORDER BY id LIMIT 1`,
		d.Repo.ID).Scan(&baseline, &sha, &isBaseline)
	if errors.Is(err, sql.ErrNoRows) || err == nil && (!isBaseline || !reached[sha]) {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO environment_commits (repository_id, environment, sha, deployment_id, reached_at)
		SELECT ?, ?, sha, ?, ? FROM release_commits WHERE release_id = ? AND sha != ?
		ON CONFLICT DO NOTHING`, d.Repo.ID, d.Environment, d.ID, millis(at), baseline, sha)
	return err
}

// firstReleaseNaming returns the first release of the repository, up to
// upTo, whose configuration names env (GitHub's environment names ignore
// case); upTo if none does.
func firstReleaseNaming(ctx context.Context, q querier, repoID int64, env string, upTo int64) (int64, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, config FROM releases
		WHERE repository_id = ? AND id <= ? AND config IS NOT NULL ORDER BY id`, repoID, upTo)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var raw string
		if err := rows.Scan(&id, &raw); err != nil {
			return 0, err
		}
		var c pipeline.Config
		if json.Unmarshal([]byte(raw), &c) == nil && c.Index(env) >= 0 {
			return id, nil
		}
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	return upTo, nil
}

// envState is an environment's state in the ledger. GitHub's environment
// names ignore case, and so do environment_state and environment_commits
// (and the lookups of the environment's deployments here): a configuration
// that respells the environment in case only keeps its lead-time watermark
// and arrivals, its restore clock and its last success. env is the
// deployment's spelling, the label of the metrics it observes.
type envState struct {
	repo                                     pipeline.Repo
	env                                      string
	configured                               string // the environment's row's spelling, "" if it has none
	leadWatermark, failingSince, lastSuccess int64
}

func loadEnvState(ctx context.Context, tx *sql.Tx, repo pipeline.Repo, env string) (*envState, error) {
	es := &envState{repo: repo, env: env}
	err := tx.QueryRowContext(ctx, `SELECT environment, lead_watermark, failing_since, last_success_at FROM environment_state
		WHERE repository_id = ? AND environment = ?`, repo.ID, env).Scan(&es.configured, &es.leadWatermark, &es.failingSince, &es.lastSuccess)
	if errors.Is(err, sql.ErrNoRows) {
		return es, nil
	}
	return es, err
}

// envStateOf loads the state of deployment d's environment. A deployment
// a workflow owns names its environment as its job does, in any case: its
// metrics go under the configuration's spelling, as lastmile's own
// deployments' do (the series then join lastmile_environment_info's); the
// deployment returned is then a copy of d so spelt.
func envStateOf(ctx context.Context, tx *sql.Tx, d *pipeline.Deployment) (*envState, *pipeline.Deployment, error) {
	es, err := loadEnvState(ctx, tx, d.Repo, d.Environment)
	if err != nil || d.Origin == pipeline.OriginLastmile || es.configured == "" || es.configured == d.Environment {
		return es, d, err
	}
	spelt := *d
	spelt.Environment, es.env = es.configured, es.configured
	return es, &spelt, nil
}

// failed starts the clock of time to restore at a failed deploy's time,
// unless the environment has succeeded since (a status delivered late:
// see failedDeploy); a clock that runs already goes back to an earlier
// failure delivered after a later one.
func (es *envState) failed(at int64) {
	if at > es.lastSuccess && (es.failingSince == 0 || at < es.failingSince) {
		es.failingSince = at
	}
}

// failedDeploy counts a failed attempt that had started: it starts (or
// moves back) the clock, or — heard of after a success later than it, the
// clock long stopped — it is measured at once to the first success in the
// environment after it, as it would have been heard in GitHub's order.
// Unless another failed deploy between the success before it and that
// success was counted already: that one's clock ended at that success (or
// at a later one, that success unknown then), and the observation it made
// stays, though it may be shorter — a histogram observation cannot be
// replaced.
func (es *envState) failedDeploy(ctx context.Context, tx *sql.Tx, a attempt) error {
	if a.failedAt > es.lastSuccess {
		es.failed(a.failedAt)
		return nil
	}
	const successes = `SELECT CASE WHEN s.ended_at > 0 THEN s.ended_at ELSE s.created_at END AS at
		FROM deployment_statuses s JOIN deployments d ON d.id = s.deployment_id
		WHERE d.repository_id = ? AND d.environment = ? COLLATE NOCASE AND ` + countedSQL + ` AND s.state = 'success'`
	var before, restored int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(CASE WHEN at < ? THEN at END), 0),
		COALESCE(MIN(CASE WHEN at >= ? THEN at END), 0) FROM (`+successes+`)`,
		a.failedAt, a.failedAt, es.repo.ID, es.env).Scan(&before, &restored); err != nil {
		return err
	}
	if restored == 0 {
		return nil
	}
	counted, err := startedFailure(ctx, tx, es.repo.ID, es.env, before, restored, a.final)
	if err != nil || counted {
		return err
	}
	return observe(ctx, tx, metrics.TimeToRestore, es.repo.FullName(), es.env, float64(restored-a.failedAt)/1000)
}

// firstStartedFailure returns the time of the first failed attempt that
// had started, of a lastmile deployment in env, after after (unix
// milliseconds); 0 if none.
func firstStartedFailure(ctx context.Context, tx *sql.Tx, repoID int64, env string, after int64) (int64, error) {
	rows, err := tx.QueryContext(ctx, `SELECT s.deployment_id, s.id FROM deployment_statuses s
		JOIN deployments d ON d.id = s.deployment_id
		WHERE d.repository_id = ? AND d.environment = ? COLLATE NOCASE AND `+countedSQL+` AND s.state IN ('failure', 'error')
		AND CASE WHEN s.ended_at > 0 THEN s.ended_at ELSE s.created_at END > ?
		ORDER BY CASE WHEN s.ended_at > 0 THEN s.ended_at ELSE s.created_at END, s.id`, repoID, env, after)
	if err != nil {
		return 0, err
	}
	finals, err := scanFinals(rows)
	if err != nil {
		return 0, err
	}
	for _, f := range finals {
		a, err := failedAttempt(ctx, tx, f.deployment, f.row)
		if err != nil || a.failedAt != 0 {
			return a.failedAt, err
		}
	}
	return 0, nil
}

// finalRow is a final status of a deployment: its deployment and row.
type finalRow struct{ deployment, row int64 }

func scanFinals(rows *sql.Rows) ([]finalRow, error) {
	defer rows.Close()
	var finals []finalRow
	for rows.Next() {
		var f finalRow
		if err := rows.Scan(&f.deployment, &f.row); err != nil {
			return nil, err
		}
		finals = append(finals, f)
	}
	return finals, rows.Err()
}

// startedFailure reports whether a lastmile deployment in env has a failed
// attempt that had started, other than the one ending at row except, that
// failed after from and no later than to (unix milliseconds).
func startedFailure(ctx context.Context, tx *sql.Tx, repoID int64, env string, from, to, except int64) (bool, error) {
	rows, err := tx.QueryContext(ctx, `SELECT s.deployment_id, s.id FROM deployment_statuses s
		JOIN deployments d ON d.id = s.deployment_id
		WHERE d.repository_id = ? AND d.environment = ? COLLATE NOCASE AND `+countedSQL+` AND s.state IN ('failure', 'error')
		AND s.id != ? AND CASE WHEN s.ended_at > 0 THEN s.ended_at ELSE s.created_at END > ?
		AND CASE WHEN s.ended_at > 0 THEN s.ended_at ELSE s.created_at END <= ?`, repoID, env, except, from, to)
	if err != nil {
		return false, err
	}
	finals, err := scanFinals(rows)
	if err != nil {
		return false, err
	}
	for _, f := range finals {
		a, err := failedAttempt(ctx, tx, f.deployment, f.row)
		if err != nil {
			return false, err
		}
		if a.failedAt != 0 {
			return true, nil
		}
	}
	return false, nil
}

// save writes the state back; a row that exists keeps its spelling (the
// configuration's: see RecordRelease).
func (es *envState) save(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO environment_state (repository_id, environment, repository, lead_watermark,
		failing_since, last_success_at) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (repository_id, environment) DO UPDATE SET repository = excluded.repository,
		lead_watermark = excluded.lead_watermark, failing_since = excluded.failing_since, last_success_at = excluded.last_success_at`,
		es.repo.ID, es.env, es.repo.FullName(), es.leadWatermark, es.failingSince, es.lastSuccess)
	if err != nil {
		return err
	}
	return bumpRollups(ctx, tx)
}

// observe adds observations to a histogram rollup.
func observe(ctx context.Context, tx *sql.Tx, name, repo, env string, values ...float64) error {
	if len(values) == 0 {
		return nil
	}
	var count int64
	var sum float64
	var raw string
	err := tx.QueryRowContext(ctx, `SELECT count, sum, buckets FROM histograms WHERE name = ? AND repository = ? AND environment = ?`,
		name, repo, env).Scan(&count, &sum, &raw)
	if errors.Is(err, sql.ErrNoRows) {
		raw = ""
	} else if err != nil {
		return err
	}
	buckets, err := decodeBuckets(raw)
	if err != nil {
		return fmt.Errorf("histogram %s: %w", name, err)
	}
	for _, v := range values {
		count++
		sum += v
		buckets[metrics.BucketFor(name, v)]++
	}
	enc, err := encodeBuckets(buckets)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO histograms (name, repository, environment, count, sum, buckets) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (name, repository, environment) DO UPDATE SET count = excluded.count, sum = excluded.sum, buckets = excluded.buckets`,
		name, repo, env, count, sum, enc)
	if err != nil {
		return err
	}
	return bumpRollups(ctx, tx)
}

// countedSQL is the condition on deployment d that it counts in the
// delivery metrics (see pipeline.Deployment.Counts), as the
// deployments_counted index has it.
const countedSQL = `(d.origin = 'lastmile' OR d.workflow_owned = 1)`
