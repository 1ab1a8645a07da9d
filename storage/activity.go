package storage

import (
	"bytes"
	"compress/gzip"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
)

// pipelineEnvironment returns env as the repository's configuration, as
// its latest valid release read it, spells it (GitHub's environment names
// ignore case), or "" when the configuration does not name it.
func pipelineEnvironment(ctx context.Context, tx *sql.Tx, repoID int64, env string) (string, error) {
	e, ok, err := configuredEnvironment(ctx, tx, repoID, env)
	if !ok {
		return "", err
	}
	return e.Name, nil
}

// configuredEnvironment returns env as the repository's configuration, as
// its latest valid release read it, declares it (its name compared ignoring
// case, as GitHub compares environment names); false when the
// configuration does not name it.
func configuredEnvironment(ctx context.Context, tx *sql.Tx, repoID int64, env string) (pipeline.Environment, bool, error) {
	var cfg string
	err := tx.QueryRowContext(ctx, `SELECT config FROM releases WHERE repository_id = ? AND config IS NOT NULL
		ORDER BY id DESC LIMIT 1`, repoID).Scan(&cfg)
	if errors.Is(err, sql.ErrNoRows) {
		return pipeline.Environment{}, false, nil
	}
	if err != nil {
		return pipeline.Environment{}, false, err
	}
	var c pipeline.Config
	if err := json.Unmarshal([]byte(cfg), &c); err != nil {
		return pipeline.Environment{}, false, err
	}
	if i := c.Index(env); i >= 0 {
		return c.Environments[i], true, nil
	}
	return pipeline.Environment{}, false, nil
}

// RecordReview stores a deployment review, linked to the deployment its run
// works on, and observes the approval wait when a reviewer decides.
func (db *DB) RecordReview(ctx context.Context, rv pipeline.Review) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		if err := saveRepoTx(ctx, tx, rv.Repo, db.Now()); err != nil {
			return err
		}
		reviewers, err := json.Marshal(rv.Reviewers)
		if err != nil {
			return err
		}
		for _, env := range rv.Environments {
			dep, err := runDeployment(ctx, tx, rv.Repo.ID, rv.RunID, rv.HeadSHA, env, rv.Since)
			if err != nil {
				return err
			}
			var depID sql.NullInt64
			if dep != nil {
				depID = sql.NullInt64{Int64: dep.ID, Valid: true}
			}
			at := rv.At
			if at.IsZero() {
				at = db.Now()
			}
			res, err := tx.ExecContext(ctx, `INSERT INTO reviews (repository_id, delivery_id, action, environment, run_id,
				deployment_id, reviewers, actor, comment, since, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT (delivery_id, environment) DO NOTHING`, rv.Repo.ID, rv.DeliveryID, string(rv.Action), env,
				rv.RunID, depID, string(reviewers), rv.Actor, rv.Comment, millis(rv.Since), millis(at))
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 || rv.Action == pipeline.ReviewRequested {
				continue
			}
			// The wait is a delivery metric: of the pipeline's environments
			// (those of the configuration, where workflows may own the
			// deployments, lastmile judging them as a protection rule), not
			// of any other environment a workflow uses. It is observed under
			// the environment's name as lastmile's deployment, else the
			// configuration, spells it, like the environment's other series:
			// the review's may differ in case.
			metricEnv := env
			if dep != nil && dep.Origin == pipeline.OriginLastmile {
				metricEnv = dep.Environment
			} else {
				if metricEnv, err = pipelineEnvironment(ctx, tx, rv.Repo.ID, env); err != nil {
					return err
				}
				if metricEnv == "" {
					continue
				}
			}
			since := rv.Since
			if since.IsZero() {
				var req sql.NullInt64
				if err := tx.QueryRowContext(ctx, `SELECT MAX(at) FROM reviews WHERE repository_id = ? AND run_id = ?
					AND environment = ? COLLATE NOCASE AND action = 'requested'`, rv.Repo.ID, rv.RunID, env).Scan(&req); err != nil {
					return err
				}
				since = fromMillis(req.Int64)
			}
			if !since.IsZero() {
				wait := max(at.Sub(since).Seconds(), 0)
				name, err := repoName(ctx, tx, rv.Repo.ID)
				if err != nil {
					return err
				}
				if err := observe(ctx, tx, metrics.ApprovalWait, name, metricEnv, wait); err != nil {
					return err
				}
			}
			// A rejection delivered after a re-run of the job, approved
			// then, succeeded is the first attempt's: the deployment stands
			// as the success, not as rejected, in the record. So too one
			// delivered after a re-run began (it deploys, or its deploy
			// failed: a failure, not a rejection). One of a job whose
			// deployment lastmile had withdrawn (inactive: superseded) is
			// kept as a review; the deployment's why stays the withdrawal.
			if rv.Action != pipeline.ReviewRejected || dep == nil || dep.State == pipeline.DeploymentSuccess ||
				dep.State == pipeline.DeploymentInactive {
				continue
			}
			later, err := attemptSince(ctx, tx, dep.ID, at)
			if err != nil {
				return err
			}
			if later {
				continue
			}
			reason := "rejected by " + rv.Actor
			if rv.Comment != "" {
				reason += ": " + rv.Comment
			}
			if _, err := tx.ExecContext(ctx, `UPDATE deployments SET rejected = 1, reason = ? WHERE id = ?`, reason, dep.ID); err != nil {
				return err
			}
			// Delivered after the run's end had already stopped the
			// release as failed on this deployment: it was a rejection.
			if dep.State == pipeline.DeploymentFailure || dep.State == pipeline.DeploymentError {
				if _, err := tx.ExecContext(ctx, `UPDATE releases SET stop_kind = 'rejected', stop_reason = ?, updated_at = ?
					WHERE id = ? AND state = 'stopped' AND stop_kind = 'failed'`,
					fmt.Sprintf("deployment to %s ended in %s: %s", env, dep.State, reason), millis(db.Now()), dep.ReleaseID); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// attemptSince reports whether an attempt of deployment id later than the
// one reviewed at at has begun since — a re-run of its job, which keeps
// the run's ID: a status made after the review, or in its second (GitHub's
// times are whole seconds, and the attempt's end often shares the
// rejection's), reports a deploy that started (in_progress) or ended
// (success, failure, error), other than the reviewed attempt's own end. A
// rejection ends its run without a result, and lastmile writes that end
// (on GitHub, or recorded alone when GitHub refused it): the first final
// status since the review, when it is lastmile's, is the reviewed
// attempt's.
func attemptSince(ctx context.Context, tx *sql.Tx, id int64, at time.Time) (bool, error) {
	rows, err := tx.QueryContext(ctx, `SELECT state = 'in_progress',
		COALESCE(creator = 'lastmile' OR creator != '' AND creator = (SELECT value FROM settings WHERE key = ?), 0)
		FROM deployment_statuses WHERE deployment_id = ? AND created_at >= ?
		AND state IN ('in_progress', 'success', 'failure', 'error') ORDER BY created_at, id`, appLoginKey, id, millis(at))
	if err != nil {
		return false, err
	}
	defer rows.Close()
	first := true
	for rows.Next() {
		var started, lastmiles bool
		if err := rows.Scan(&started, &lastmiles); err != nil {
			return false, err
		}
		if started || !first || !lastmiles {
			return true, nil
		}
		first = false
	}
	return false, rows.Err()
}

// rerunAfterRejection undoes a rejection's label once a later attempt of
// the deployment it rejected has begun (attemptSince, from the deployment's
// latest rejection): a re-run of the job, approved, deploys it again. The
// deployment is no longer rejected, its reason no longer the rejection's;
// and once that attempt has failed (its end recorded, no re-run deploying
// since), the release the rejection stopped on this deployment stopped on
// a failure, as on any failed deployment (see pipeline.Plan), for the
// failure's reason. The review stays in the record.
func rerunAfterRejection(ctx context.Context, tx *sql.Tx, id int64, now time.Time) error {
	var actor, comment string
	var at int64
	err := tx.QueryRowContext(ctx, `SELECT actor, comment, at FROM reviews WHERE deployment_id = ? AND action = 'rejected'
		ORDER BY at DESC, id DESC LIMIT 1`, id).Scan(&actor, &comment, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	later, err := attemptSince(ctx, tx, id, fromMillis(at))
	if err != nil || !later {
		return err
	}
	rejection := "rejected by " + actor
	if comment != "" {
		rejection += ": " + comment
	}
	if _, err := tx.ExecContext(ctx, `UPDATE deployments SET rejected = 0, reason = CASE WHEN reason = ? THEN '' ELSE reason END
		WHERE id = ? AND rejected = 1`, rejection, id); err != nil {
		return err
	}
	d, err := oneDeployment(ctx, tx, `WHERE d.id = ?`, id)
	if err != nil {
		return err
	}
	var rerun bool
	if err := tx.QueryRowContext(ctx, `SELECT rerun FROM deployments WHERE id = ?`, id).Scan(&rerun); err != nil {
		return err
	}
	if d.ReleaseID == 0 || rerun || d.State != pipeline.DeploymentFailure && d.State != pipeline.DeploymentError {
		return nil
	}
	var kind, stopped string
	if err := tx.QueryRowContext(ctx, `SELECT stop_kind, stop_reason FROM releases WHERE id = ? AND state = 'stopped'`,
		d.ReleaseID).Scan(&kind, &stopped); errors.Is(err, sql.ErrNoRows) {
		return nil
	} else if err != nil {
		return err
	}
	// Stopped by this deployment's rejection (the reason names its
	// environment, spelled as the configuration or the review did), not by
	// another environment's.
	prefix := "deployment to " + d.Environment + " ended in "
	if kind != string(pipeline.StopRejected) || len(stopped) < len(prefix) || !strings.EqualFold(stopped[:len(prefix)], prefix) {
		return nil
	}
	reason := fmt.Sprintf("deployment to %s ended in %s", d.Environment, d.State)
	if d.Reason != "" {
		reason += ": " + d.Reason
	}
	_, err = tx.ExecContext(ctx, `UPDATE releases SET stop_kind = 'failed', stop_reason = ?, updated_at = ? WHERE id = ?`,
		reason, millis(now), d.ReleaseID)
	return err
}

// runDeployment finds the lastmile deployment a run works on in env (its
// name compared ignoring case, as GitHub does): the one linked to the run,
// or else the newest one of the run's commit in env that existed when the
// run's job began to wait (since, when known), which it then links if it
// is unlinked and unfinished (a superseded one, inactive, can be the
// run's; an older one than the newest cannot: a rollback's deployment of
// the same commit, finished, is not a reason to take the one it
// superseded) — unless the run is known to be on another event than
// deployment (a workflow on push with a job in the environment deploys none
// of lastmile's deployments).
func runDeployment(ctx context.Context, tx *sql.Tx, repoID, runID int64, sha, env string, since time.Time) (*pipeline.Deployment, error) {
	d, err := oneDeployment(ctx, tx, `WHERE d.repository_id = ? AND d.run_id = ? AND d.environment = ? COLLATE NOCASE AND d.origin = 'lastmile'
		ORDER BY d.id DESC LIMIT 1`, repoID, runID, env)
	if err == nil || !errors.Is(err, pipeline.ErrNotFound) {
		return d, err
	}
	if sha == "" || runID == 0 {
		return nil, nil
	}
	var event string
	err = tx.QueryRowContext(ctx, `SELECT event FROM workflow_runs WHERE run_id = ?`, runID).Scan(&event)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	if event != "" && event != "deployment" {
		return nil, nil
	}
	before := int64(math.MaxInt64)
	if !since.IsZero() {
		before = millis(since)
	}
	d, err = oneDeployment(ctx, tx, `WHERE d.repository_id = ? AND d.sha = ? AND d.environment = ? COLLATE NOCASE AND d.origin = 'lastmile'
		AND d.github_id IS NOT NULL AND d.created_at <= ? ORDER BY d.id DESC LIMIT 1`,
		repoID, sha, env, before)
	if errors.Is(err, pipeline.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if d.RunID != 0 || !d.TerminalAt.IsZero() {
		return nil, nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE deployments SET run_id = ? WHERE id = ?`, runID, d.ID); err != nil {
		return nil, err
	}
	d.RunID = runID
	return d, nil
}

// RecordWorkflowRun stores the latest state of a workflow run: a state
// older than the one recorded (delivered late: an earlier update, or an
// earlier attempt's end after a re-run began) changes nothing, and current
// is then false. GitHub's updated_at has whole seconds: of two states of
// the same second, the one further on stands (a run may start and end
// within one, and its in_progress be delivered after its end).
func (db *DB) RecordWorkflowRun(ctx context.Context, run pipeline.WorkflowRun) (current bool, err error) {
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO workflow_runs (run_id, repository_id, name, event, head_sha, head_branch,
			status, conclusion, url, attempt, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (run_id) DO UPDATE SET status = excluded.status, conclusion = excluded.conclusion,
			attempt = excluded.attempt, updated_at = excluded.updated_at
			WHERE excluded.attempt > workflow_runs.attempt
				OR (excluded.attempt = workflow_runs.attempt AND (excluded.updated_at > workflow_runs.updated_at
					OR (excluded.updated_at = workflow_runs.updated_at AND `+jobProgress("excluded.status")+` >= `+jobProgress("workflow_runs.status")+`)
					OR (excluded.updated_at = 0 AND excluded.status = 'completed')))`,
			run.RunID, run.Repo.ID, run.Name, run.Event, run.HeadSHA, run.HeadBranch, run.Status, run.Conclusion,
			run.URL, max(run.Attempt, 1), millis(run.CreatedAt), millis(run.UpdatedAt))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		current = n > 0
		if run.Event != "" {
			// The jobs' own deployments recorded before the run's event
			// was known.
			if _, err := tx.ExecContext(ctx, learnRunSQL+`repository_id = ?1 AND run_id = ?2 AND run_id != 0 AND run_event = ''`,
				run.Repo.ID, run.RunID, run.Event); err != nil {
				return err
			}
			if err := settleOwned(ctx, tx, `repository_id = ? AND run_id = ?`, run.Repo.ID, run.RunID); err != nil {
				return err
			}
		}
		if otherEvent(run.Event) {
			// A run on another event (a workflow on push with a job in
			// the environment) deploys none of lastmile's deployments: a
			// link that a review of it guessed before its event was known
			// (runDeployment) is undone, with the rejection it recorded,
			// and its reviews, so that neither its end nor its rejection is
			// taken for the deployment's.
			if _, err := tx.ExecContext(ctx, `UPDATE reviews SET deployment_id = NULL WHERE run_id = ? AND repository_id = ?
				AND deployment_id IN (SELECT id FROM deployments WHERE run_id = ? AND origin = 'lastmile' AND terminal_at = 0)`,
				run.RunID, run.Repo.ID, run.RunID); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE deployments SET run_id = 0,
					reason = CASE WHEN rejected = 1 THEN '' ELSE reason END, rejected = 0
				WHERE run_id = ? AND repository_id = ? AND origin = 'lastmile' AND terminal_at = 0`, run.RunID, run.Repo.ID); err != nil {
				return err
			}
		}
		return nil
	})
	return current, err
}

// OtherRunsInProgress counts the recorded runs of the repository on the
// deployment event for run's commit, other than run, that have not
// completed.
func (db *DB) OtherRunsInProgress(ctx context.Context, run pipeline.WorkflowRun) (int, error) {
	var n int
	err := db.queryRow(ctx, `SELECT COUNT(*) FROM workflow_runs WHERE repository_id = ? AND head_sha = ? AND event = 'deployment'
		AND run_id != ? AND status != 'completed'`, run.Repo.ID, run.HeadSHA, run.RunID).Scan(&n)
	return n, err
}

// UnjudgedRuns lists the other completed runs on the deployment event for
// run's commit that did not end well (success, skipped, neutral: a
// notifier's, whose judgement never writes anything) and worked on no
// deployment known to have a result: no deployment is linked to them, or
// one is (a review linked it later) and is unfinished. Those are the runs
// whose judgement waited for another run of the commit.
func (db *DB) UnjudgedRuns(ctx context.Context, run pipeline.WorkflowRun) ([]pipeline.WorkflowRun, error) {
	rows, err := db.query(ctx, `SELECT r.run_id, r.name, r.event, r.head_sha, r.head_branch, r.status, r.conclusion, r.url,
			r.attempt, r.created_at, r.updated_at
		FROM workflow_runs r WHERE r.repository_id = ? AND r.head_sha = ? AND r.event = 'deployment' AND r.run_id != ?
			AND r.status = 'completed' AND r.conclusion NOT IN ('success', 'skipped', 'neutral')
			AND NOT EXISTS (SELECT 1 FROM deployments d WHERE d.run_id = r.run_id AND d.origin = 'lastmile'
				AND (d.terminal_at != 0 OR d.notify != ''))
		ORDER BY r.run_id`, run.Repo.ID, run.HeadSHA, run.RunID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var runs []pipeline.WorkflowRun
	for rows.Next() {
		w := pipeline.WorkflowRun{Repo: run.Repo, Action: "completed"}
		var created, updated int64
		if err := rows.Scan(&w.RunID, &w.Name, &w.Event, &w.HeadSHA, &w.HeadBranch, &w.Status, &w.Conclusion, &w.URL,
			&w.Attempt, &created, &updated); err != nil {
			return nil, err
		}
		w.CreatedAt, w.UpdatedAt = fromMillis(created), fromMillis(updated)
		runs = append(runs, w)
	}
	return runs, rows.Err()
}

// RecordWorkflowJob stores the latest state of a workflow job.
//
// A job only goes forward (a re-run is a new job): an earlier event
// delivered late, or GitHub's second queued once a reviewer approved the
// job, changes nothing.
func (db *DB) RecordWorkflowJob(ctx context.Context, job pipeline.WorkflowJob) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO workflow_jobs (job_id, run_id, repository_id, name, head_sha, status,
			conclusion, url, started_at, completed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (job_id) DO UPDATE SET status = excluded.status, conclusion = excluded.conclusion,
			started_at = CASE WHEN excluded.started_at > 0 THEN excluded.started_at ELSE workflow_jobs.started_at END,
			completed_at = CASE WHEN excluded.completed_at > 0 THEN excluded.completed_at ELSE workflow_jobs.completed_at END
			WHERE `+jobProgress("excluded.status")+` >= `+jobProgress("workflow_jobs.status"),
			job.JobID, job.RunID, job.Repo.ID, job.Name, job.HeadSHA, job.Status, job.Conclusion, job.URL,
			millis(job.StartedAt), millis(job.CompletedAt))
		return err
	})
}

// jobProgress ranks a workflow job's or run's status column (SQL) by how
// far it has come.
func jobProgress(column string) string {
	return `(CASE ` + column + ` WHEN 'completed' THEN 3 WHEN 'in_progress' THEN 2 ELSE 1 END)`
}

// RunHeadSHA is the commit of a recorded workflow run.
func (db *DB) RunHeadSHA(ctx context.Context, runID int64) (string, error) {
	var sha string
	err := db.read.QueryRowContext(ctx, `SELECT head_sha FROM workflow_runs WHERE run_id = ?`, runID).Scan(&sha)
	if errors.Is(err, sql.ErrNoRows) {
		return "", pipeline.ErrNotFound
	}
	return sha, err
}

// RunDeployments lists the lastmile deployments a run worked on: those
// linked to it, or else (guessed) the one a run of its commit may have
// worked on, not linked.
func (db *DB) RunDeployments(ctx context.Context, run pipeline.WorkflowRun) (deps []*pipeline.Deployment, guessed bool, err error) {
	deps, err = queryDeployments(ctx, db.read, `WHERE d.repository_id = ? AND d.run_id = ? AND d.origin = 'lastmile' ORDER BY d.id`,
		run.Repo.ID, run.RunID)
	if err != nil || len(deps) > 0 || run.Event != "deployment" || run.HeadSHA == "" {
		return deps, false, err
	}
	// Not linked (the workflow has no register step and no review
	// happened): the run's deployment event came before the run (both
	// times are GitHub's, so a rollback's deployment of the same commit,
	// made after the run of the superseded one began, is not a candidate),
	// and it is a guess only when one unfinished lastmile deployment of
	// the commit could be it. A superseded one (inactive) is none: it
	// stays unfinished for good, and would make every later guess
	// ambiguous.
	created := run.CreatedAt
	if created.IsZero() {
		created = db.Now()
	}
	cands, err := queryDeployments(ctx, db.read, `WHERE d.repository_id = ? AND d.sha = ? AND d.origin = 'lastmile'
		AND d.run_id = 0 AND d.github_id IS NOT NULL AND d.terminal_at = 0 AND d.state NOT IN ('inactive', 'abandoned')
		AND d.created_at <= ? ORDER BY d.id DESC`, run.Repo.ID, run.HeadSHA, millis(created))
	if err != nil || len(cands) != 1 {
		return nil, false, err
	}
	// Nor is it a guess when another deployment of the commit, finished or
	// superseded, lastmile's or another tool's, was created after it and
	// before the run: GitHub starts a deployment's run right after creating
	// it, so the run may be that one's (a superseded deployment's run that
	// ended is not the unfinished one's).
	var later int
	if err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM deployments d WHERE d.repository_id = ? AND d.sha = ?
		AND d.github_id IS NOT NULL AND d.id != ? AND d.created_at >= ? AND d.created_at <= ?`,
		run.Repo.ID, run.HeadSHA, cands[0].ID, millis(cands[0].CreatedAt), millis(created)).Scan(&later); err != nil {
		return nil, false, err
	}
	if later > 0 {
		return nil, false, nil
	}
	return cands, true, nil
}

// DeployJob returns the deployment that a completed job deployed: the job
// named in the deployment's log_url, or else (as match says: see
// pipeline.JobMatch) the job of its run that was running when the
// deployment went in_progress (in any
// attempt: a re-run's job when it did again). The deployment is one of
// lastmile's linked to the job's run, or else Actions' own for a job of
// that run (a workflow that owns its deployments): one GitHub linked to the
// run, as Succeeded trusts — never one made through the API, whose
// statuses' log_url anyone who may write deployments can point at any job —
// and without a twin of lastmile's, which keeps the job's log.
func (db *DB) DeployJob(ctx context.Context, job pipeline.WorkflowJob, match pipeline.JobMatch) (*pipeline.Deployment, error) {
	if job.RunID == 0 {
		return nil, pipeline.ErrNotFound
	}
	deps, err := queryDeployments(ctx, db.read, `WHERE d.repository_id = ? AND d.run_id = ?
		AND (d.origin = 'lastmile' OR d.origin = 'external' AND COALESCE(d.twin_of, 0) = 0)
		ORDER BY d.origin = 'lastmile' DESC, d.id`,
		job.Repo.ID, job.RunID)
	if err != nil {
		return nil, err
	}
	named := make(map[int64][]int64, len(deps)) // the jobs each deployment's statuses name
	for _, d := range deps {
		if named[d.ID], err = db.namedJobs(ctx, d.ID); err != nil {
			return nil, err
		}
		if slices.Contains(named[d.ID], job.JobID) {
			return d, nil
		}
	}
	if match == pipeline.JobNamed || job.StartedAt.IsZero() || job.CompletedAt.IsZero() {
		return nil, pipeline.ErrNotFound
	}
	end := millis(job.CompletedAt)
	if match == pipeline.JobTimesBeforeEnd {
		end-- // strictly before the end: millis of whole seconds
	}
	for _, d := range deps {
		if d.Origin != pipeline.OriginLastmile {
			// Actions' own deployment names its job in its statuses'
			// log_url: another job of the run running at its in_progress
			// (a lint, a matrix leg) is not its deploy job.
			continue
		}
		// An in_progress of any attempt: a re-run's job went in_progress
		// again, within its own times. Both are GitHub's times, in whole
		// seconds, so a job's in_progress is neither before it started
		// nor after it completed — and a job that ended the second before
		// (a re-run's register job) is not taken for the deploy job.
		if len(named[d.ID]) > 0 {
			// Its statuses name their job (the Action given job-id): the
			// job named is its deploy job, and another that the times
			// would take (the register job, ended the second the deploy
			// began) is not.
			continue
		}
		var n int
		if err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM deployment_statuses WHERE deployment_id = ?
			AND state = 'in_progress' AND created_at BETWEEN ? AND ?`,
			d.ID, millis(job.StartedAt), end).Scan(&n); err != nil {
			return nil, err
		}
		if n > 0 {
			return d, nil
		}
	}
	return nil, pipeline.ErrNotFound
}

// namedJobs lists the jobs that the statuses of deployment id name in
// their log_url (pipeline.JobIDFromURL).
func (db *DB) namedJobs(ctx context.Context, id int64) ([]int64, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT DISTINCT log_url FROM deployment_statuses WHERE deployment_id = ? AND log_url != ''`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var jobs []int64
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		if job := pipeline.JobIDFromURL(u); job != 0 {
			jobs = append(jobs, job)
		}
	}
	return jobs, rows.Err()
}

// UnloggedJobs lists the completed jobs of a run that have no kept log.
func (db *DB) UnloggedJobs(ctx context.Context, repo pipeline.Repo, runID int64) ([]pipeline.WorkflowJob, error) {
	rows, err := db.query(ctx, `SELECT j.job_id, j.name, j.head_sha, j.status, j.conclusion, j.url, j.started_at, j.completed_at
		FROM workflow_jobs j WHERE j.run_id = ? AND j.repository_id = ? AND j.status = 'completed'
		AND NOT EXISTS (SELECT 1 FROM job_logs l WHERE l.job_id = j.job_id) ORDER BY j.job_id`, runID, repo.ID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var jobs []pipeline.WorkflowJob
	for rows.Next() {
		job := pipeline.WorkflowJob{Repo: repo, RunID: runID, Action: "completed"}
		var started, completed int64
		if err := rows.Scan(&job.JobID, &job.Name, &job.HeadSHA, &job.Status, &job.Conclusion, &job.URL, &started, &completed); err != nil {
			return nil, err
		}
		job.StartedAt, job.CompletedAt = fromMillis(started), fromMillis(completed)
		jobs = append(jobs, job)
	}
	return jobs, rows.Err()
}

// SaveJobLog keeps a deploy job's log, compressed, with the record.
func (db *DB) SaveJobLog(ctx context.Context, deploymentID int64, job pipeline.WorkflowJob, log []byte, truncated bool) error {
	zipped, err := gzipped(log)
	if err != nil {
		return err
	}
	return db.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO job_logs (job_id, deployment_id, name, log, size, truncated, fetched_at)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET log = excluded.log, size = excluded.size,
			truncated = excluded.truncated, fetched_at = excluded.fetched_at, missing = 0`,
			job.JobID, deploymentID, job.Name, zipped, len(log), truncated, millis(db.Now()))
		return err
	})
}

// gzipped is b compressed, as deploy logs are kept.
func gzipped(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// SaveMissingJobLog keeps placeholder as the log of a deploy job that GitHub
// had no log for, marked missing, unless a log (or an earlier placeholder,
// whose time MissingJobLogs counts from) is kept already.
func (db *DB) SaveMissingJobLog(ctx context.Context, deploymentID int64, job pipeline.WorkflowJob, placeholder []byte) error {
	zipped, err := gzipped(placeholder)
	if err != nil {
		return err
	}
	return db.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO job_logs (job_id, deployment_id, name, log, size, truncated, fetched_at, missing)
			VALUES (?, ?, ?, ?, ?, 0, ?, 1) ON CONFLICT (job_id) DO NOTHING`,
			job.JobID, deploymentID, job.Name, zipped, len(placeholder), millis(db.Now()))
		return err
	})
}

// MissingJobLogs lists the deploy jobs first found without a log after
// since, of the repositories lastmile can reach: not one removed from its
// installation, nor one of an installation the App was uninstalled from
// (those jobs stay recorded as GitHub having no log for them).
func (db *DB) MissingJobLogs(ctx context.Context, since time.Time) ([]pipeline.MissingJobLog, error) {
	rows, err := db.query(ctx, `SELECT l.job_id, l.name, l.deployment_id, p.id, p.full_name, p.installation_id
		FROM job_logs l JOIN deployments d ON d.id = l.deployment_id JOIN repositories p ON p.id = d.repository_id
		WHERE l.missing = 1 AND l.fetched_at > ? AND `+reachable+`
		ORDER BY l.job_id`, millis(since))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var list []pipeline.MissingJobLog
	for rows.Next() {
		var m pipeline.MissingJobLog
		var full string
		if err := rows.Scan(&m.Job.JobID, &m.Job.Name, &m.DeploymentID, &m.Job.Repo.ID, &full, &m.Job.Repo.InstallationID); err != nil {
			return nil, err
		}
		m.Job.Repo.Owner, m.Job.Repo.Name, _ = pipeline.SplitFullName(full)
		list = append(list, m)
	}
	return list, rows.Err()
}

// Rejection returns the rejection of a deployment's current attempt, if a
// reviewer rejected it: a review linked to it, or one of its run in its
// environment (the name compared ignoring case: the review's may be spelled
// otherwise). A deployment is deployed again by each re-run of its run: a
// rejection made before its latest final status (success, failure or
// error, in GitHub's order) was an earlier attempt's, and one that an
// approval followed (a re-run approved) is not this attempt's either.
func (db *DB) Rejection(ctx context.Context, d *pipeline.Deployment) (*pipeline.Review, error) {
	type status struct {
		github, at int64
		final      bool
	}
	rows, err := db.read.QueryContext(ctx, `SELECT COALESCE(github_id, 0), created_at, state IN ('success', 'failure', 'error')
		FROM deployment_statuses WHERE deployment_id = ? ORDER BY id`, d.ID)
	if err != nil {
		return nil, err
	}
	var all []status
	for rows.Next() {
		var s status
		if err := rows.Scan(&s.github, &s.at, &s.final); err != nil {
			rows.Close()
			return nil, err
		}
		all = append(all, s)
	}
	if err := closeRows(rows); err != nil {
		return nil, err
	}
	inGitHubOrder(all, func(s status) int64 { return s.github })
	ended := int64(0) // the latest final status: the previous attempt's end
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].final {
			ended = all[i].at
			break
		}
	}
	var rv pipeline.Review
	var action string
	var at int64
	err = db.read.QueryRowContext(ctx, `SELECT action, actor, comment, at FROM reviews WHERE action IN ('rejected', 'approved')
		AND (deployment_id = ? OR (repository_id = ? AND run_id = ? AND run_id != 0 AND environment = ? COLLATE NOCASE))
		AND at > ? ORDER BY at DESC, id DESC LIMIT 1`, d.ID, d.Repo.ID, d.RunID, d.Environment, ended).Scan(&action, &rv.Actor, &rv.Comment, &at)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && action != string(pipeline.ReviewRejected)) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rv.Action, rv.At, rv.Environments = pipeline.ReviewRejected, fromMillis(at), []string{d.Environment}
	return &rv, nil
}

// ProtectionDecision returns the decision recorded for a request.
func (db *DB) ProtectionDecision(ctx context.Context, req pipeline.ProtectionRuleRequest) (*pipeline.ProtectionDecision, error) {
	d := &pipeline.ProtectionDecision{Repo: req.Repo}
	err := scanProtection(db.read.QueryRowContext(ctx, `SELECT `+protectionColumns+`
		FROM protection_decisions d WHERE delivery_id = ?`, req.DeliveryID).Scan, d)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, pipeline.ErrNotFound
	}
	return d, err
}

// protectionColumns are the columns of a protection decision (d) that
// scanProtection reads, in its order.
const protectionColumns = `d.id, d.delivery_id, d.run_id, d.environment, d.sha, d.state, d.comment, d.decided_at, d.posted,
	d.refused, d.withdrawn_at, d.withdrawn_comment, d.deployment_id`

// scanProtection reads the protectionColumns of a row into d, then the
// row's further columns into more.
func scanProtection(scan func(...any) error, d *pipeline.ProtectionDecision, more ...any) error {
	var decided int64
	var withdrawn sql.NullInt64
	var why string
	into := append([]any{&d.ID, &d.DeliveryID, &d.RunID, &d.Environment, &d.SHA, &d.State, &d.Comment, &decided, &d.Posted,
		&d.Refused, &withdrawn, &why, &d.DeploymentID}, more...)
	if err := scan(into...); err != nil {
		return err
	}
	d.DecidedAt, d.Withdrawn = fromMillis(decided), nil
	if withdrawn.Valid {
		d.Withdrawn = &pipeline.ProtectionWithdrawal{At: fromMillis(withdrawn.Int64), Comment: why}
	}
	return nil
}

// RecordProtectionDecision stores a decision before it is sent. A decision
// that waited (state waiting) is replaced by the one made when it is
// judged again: an answer, or a decision that still waits, which moves its
// time on (the sweep looks again at a request only pipeline.HoldRunning
// after it was last judged waiting); an approval or rejection is never
// replaced. d is left
// holding what is recorded — another handler's decision, made at the same
// time and recorded first, if there was one — so that the decision sent
// is the recorded one.
func (db *DB) RecordProtectionDecision(ctx context.Context, d *pipeline.ProtectionDecision) error {
	switch d.State {
	case pipeline.ProtectionApproved, pipeline.ProtectionRejected, pipeline.ProtectionWaiting:
	default:
		return fmt.Errorf("protection decision: state %q", d.State)
	}
	return db.inTx(ctx, func(tx *sql.Tx) error {
		if err := saveRepoTx(ctx, tx, d.Repo, db.Now()); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO protection_decisions (repository_id, delivery_id, run_id, environment, sha,
			state, comment, decided_at, deployment_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (delivery_id) DO UPDATE SET state = excluded.state, comment = excluded.comment, decided_at = excluded.decided_at
			WHERE protection_decisions.state = 'waiting'`,
			d.Repo.ID, d.DeliveryID, d.RunID, d.Environment, d.SHA, d.State, d.Comment, millis(d.DecidedAt), d.DeploymentID); err != nil {
			return err
		}
		// The job lastmile let deploy deploys in an environment a
		// workflow owns: its own deployment counts (its deployment may
		// have been recorded first).
		if err := settleOwned(ctx, tx, ofRunThere, d.RunID, d.Repo.ID, d.Environment); err != nil {
			return err
		}
		return scanProtection(tx.QueryRowContext(ctx, `SELECT `+protectionColumns+` FROM protection_decisions d WHERE delivery_id = ?`,
			d.DeliveryID).Scan, d)
	})
}

// WithdrawProtectionApproval records that the approval d, which GitHub has
// not confirmed, is withdrawn for a rejection saying comment. d is left
// holding what is recorded: an approval GitHub confirmed meanwhile, or one
// another handler withdrew first (with its comment), stays as it is.
func (db *DB) WithdrawProtectionApproval(ctx context.Context, d *pipeline.ProtectionDecision, comment string, at time.Time) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE protection_decisions SET withdrawn_at = ?, withdrawn_comment = ?
			WHERE id = ? AND state = 'approved' AND posted = 0 AND withdrawn_at IS NULL`, millis(at), comment, d.ID); err != nil {
			return err
		}
		// Its job will not deploy (unless GitHub took the approval after
		// all: its deployment starts, see RecordStatus).
		if err := unsettleOwned(ctx, tx, ofRunThere, d.RunID, d.Repo.ID, d.Environment); err != nil {
			return err
		}
		return scanProtection(tx.QueryRowContext(ctx, `SELECT `+protectionColumns+` FROM protection_decisions d WHERE id = ?`,
			d.ID).Scan, d)
	})
}

// LaterProtectionRequest reports whether a protection-rule request of the
// same repository, run and environment (its case ignored, as GitHub
// ignores it) was recorded after d: a later attempt of the run asked
// again. (Not by commit: a request of an old payload, without one, may
// have been recorded with none.)
func (db *DB) LaterProtectionRequest(ctx context.Context, d *pipeline.ProtectionDecision) (bool, error) {
	var n int
	err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM protection_decisions
		WHERE repository_id = ? AND run_id = ? AND environment = ? COLLATE NOCASE AND id > ?`,
		d.Repo.ID, d.RunID, d.Environment, d.ID).Scan(&n)
	return n > 0, err
}

// WaitingProtectionDecisions lists the repository's protection-rule
// requests for sha that wait for a deployment to end.
func (db *DB) WaitingProtectionDecisions(ctx context.Context, repo pipeline.Repo, sha string) ([]*pipeline.ProtectionDecision, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT `+protectionColumns+`
		FROM protection_decisions d WHERE repository_id = ? AND sha = ? AND state = 'waiting' ORDER BY id`, repo.ID, sha)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*pipeline.ProtectionDecision
	for rows.Next() {
		d := &pipeline.ProtectionDecision{Repo: repo}
		if err := scanProtection(rows.Scan, d); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// LongWaitingProtectionDecisions lists the protection-rule requests, of
// every repository, that wait, last judged so before before.
func (db *DB) LongWaitingProtectionDecisions(ctx context.Context, before time.Time) ([]*pipeline.ProtectionDecision, error) {
	return db.protectionDecisions(ctx, longWaitingQuery, millis(before))
}

// UnpostedProtectionAnswers lists the approvals and rejections, of every
// repository lastmile can reach (not one removed from its installation,
// nor one of an installation uninstalled), that GitHub has not received
// (the call failed, or lastmile stopped before it), decided after after
// and before before.
func (db *DB) UnpostedProtectionAnswers(ctx context.Context, after, before time.Time) ([]*pipeline.ProtectionDecision, error) {
	return db.protectionDecisions(ctx, unpostedQuery, millis(after), millis(before))
}

// protectionDecisions reads the decisions that query selects, with their
// repositories (the columns of protectionDecisionsOf).
func (db *DB) protectionDecisions(ctx context.Context, query string, args ...any) ([]*pipeline.ProtectionDecision, error) {
	rows, err := db.read.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*pipeline.ProtectionDecision
	for rows.Next() {
		d := &pipeline.ProtectionDecision{}
		var full string
		if err := scanProtection(rows.Scan, d, &d.Repo.ID, &full, &d.Repo.InstallationID); err != nil {
			return nil, err
		}
		d.Repo.Owner, d.Repo.Name, _ = pipeline.SplitFullName(full)
		out = append(out, d)
	}
	return out, rows.Err()
}

// longWaitingQuery reads the waiting requests through the partial index
// protection_decisions_waiting alone, in its order (repository, commit,
// then ID): the answered decisions, never pruned, are not walked at each
// sweep. Ordered by ID alone, SQLite would scan the whole table in rowid
// order rather than sort the few waiting rows.
const longWaitingQuery = protectionDecisionsOf + `
	WHERE d.state = 'waiting' AND d.decided_at < ? ORDER BY d.repository_id, d.sha, d.id`

// unpostedQuery reads the answers GitHub has not received through the
// partial index protection_decisions_unposted alone: few, or none. Their
// time is the decision's, or the withdrawal's for the rejection that
// withdrew an approval.
const unpostedQuery = protectionDecisionsOf + `
	WHERE d.posted = 0 AND d.state != 'waiting' AND COALESCE(d.withdrawn_at, d.decided_at) > ?
		AND COALESCE(d.withdrawn_at, d.decided_at) < ? AND ` + reachable + `
	ORDER BY COALESCE(d.withdrawn_at, d.decided_at)`

// protectionDecisionsOf selects decisions (d) with their repositories (p),
// the columns protectionDecisions reads.
const protectionDecisionsOf = `SELECT ` + protectionColumns + `, p.id, p.full_name, p.installation_id
	FROM protection_decisions d JOIN repositories p ON p.id = d.repository_id`

// reachable is the condition on a repository p that lastmile can reach:
// not removed from its installation (DetachRepo), nor of an installation
// the App was uninstalled from.
const reachable = `p.installation_id != 0 AND p.installation_id NOT IN (SELECT id FROM installations WHERE state = 'deleted')`

// MarkProtectionPosted records that GitHub has the answer sent for d (its
// decision, or the rejection that withdrew it, as d says), or, refused,
// that it refused it for good (the run no longer waited for the rule) —
// unless the record has changed since d was read: another handler
// withdrew the approval sent (its rejection is still to be sent, and
// recorded, GitHub taking or refusing it), or recorded an answer first (a
// refusal never overwrites an answer taken).
func (db *DB) MarkProtectionPosted(ctx context.Context, d *pipeline.ProtectionDecision, refused bool) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE protection_decisions SET posted = 1, refused = ?
			WHERE id = ? AND posted = 0 AND (withdrawn_at IS NOT NULL) = ?`, refused, d.ID, d.Withdrawn != nil); err != nil {
			return err
		}
		return nil
	})
}

// ofRunThere picks, for settleOwned and unsettleOwned, the deployments of
// run ?, repository ? and environment ?: by the run's index (the
// repository's job deployments in the environment may be many).
const ofRunThere = `run_id = ? AND +repository_id = ? AND +environment = ? COLLATE NOCASE`
