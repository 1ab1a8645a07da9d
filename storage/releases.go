package storage

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
)

var _ pipeline.Store = (*DB)(nil)

const instanceKey = "instance"

// Instance returns this database's identity, created on first use. It is
// written into deployment payloads so lastmile recognises its own
// deployments, and only its own.
func (db *DB) Instance(ctx context.Context) (string, error) {
	if v, ok, err := db.Setting(ctx, instanceKey); err != nil || ok {
		return v, err
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b)
	// Durably, as the intent it goes out with: rolled back by a power cut
	// after a deployment carried it, a new identity would not know that
	// deployment for lastmile's, and an interrupted creation would not
	// find it before making another.
	err := db.durableTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`, instanceKey, id)
		return err
	})
	if err != nil {
		return "", err
	}
	v, _, err := db.Setting(ctx, instanceKey)
	return v, err
}

// SaveRepo records a repository and the installation that reaches it, as
// an event of time at says (zero: a time not known, such as a push
// without pushed_at, dated by its receipt: the installation as of now,
// and the name only of a repository that has none dated yet — a receipt
// time says nothing of when the name was true) — unless an installation event
// after it recorded another (AttachRepo, DetachRepo: a push made before the
// repository was removed or transferred, delivered late). Its name, the
// same way, unless an event after it recorded another (name_at): a push
// made before a rename, handled after it (redelivered, or a dead delivery
// retried), does not put the old name back. The name replaced, and the
// older one a late event carries, are kept as names the repository had
// (repository_names), so that a lookup by an old name finds the
// repository (audit, history). A new name (the repository was renamed or
// transferred) becomes the repository label of its delivery metrics from
// then on: in the same transaction, its environments' series are created
// at zero under the new name, so that Prometheus sees each at 0 before its
// first increment, and lastmile_environment_info and the last success
// follow the new name. The series under the old name keep their totals
// and stop moving.
func (db *DB) SaveRepo(ctx context.Context, r pipeline.Repo, at time.Time) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		var old string
		var nameAt int64
		err := tx.QueryRowContext(ctx, `SELECT full_name, name_at FROM repositories WHERE id = ?`, r.ID).Scan(&old, &nameAt)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		// The event's time for the name and the installation (0: not
		// known, and then the installation is taken only where no
		// installation event recorded one: the event may be older).
		eventAt := int64(0)
		if !at.IsZero() {
			eventAt = millis(at)
		}
		name, current := r.FullName(), eventAt >= nameAt
		_, err = tx.ExecContext(ctx, `INSERT INTO repositories (id, full_name, installation_id, updated_at, name_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET
			full_name = CASE WHEN excluded.name_at >= name_at THEN excluded.full_name ELSE full_name END,
			name_at = MAX(name_at, excluded.name_at),
			installation_id = CASE WHEN ? > installation_at OR installation_at = 0 THEN excluded.installation_id ELSE installation_id END,
			updated_at = excluded.updated_at`, r.ID, name, r.InstallationID, millis(db.Now()), eventAt, eventAt)
		if err != nil || old == "" || old == name {
			return err
		}
		if !strings.EqualFold(old, name) { // a name in another case is the same name
			past := name // the event's, older than the one recorded
			if current {
				past = old
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO repository_names (repository_id, full_name, until_at) VALUES (?, ?, ?)
				ON CONFLICT (repository_id, full_name) DO UPDATE SET until_at = MAX(until_at, excluded.until_at)`,
				r.ID, past, cmp.Or(eventAt, millis(db.Now()))); err != nil {
				return err
			}
		}
		if !current {
			return nil
		}
		return renameSeries(ctx, tx, r.ID, name)
	})
}

// renameSeries moves a renamed repository's environments to its new name:
// their delivery series are created at zero under it, and environment_state
// (lastmile_environment_info, the last success) carries it.
func renameSeries(ctx context.Context, tx *sql.Tx, repoID int64, name string) error {
	rows, err := tx.QueryContext(ctx, `SELECT environment FROM environment_state WHERE repository_id = ? ORDER BY environment`, repoID)
	if err != nil {
		return err
	}
	var envs []string
	for rows.Next() {
		var env string
		if err := rows.Scan(&env); err != nil {
			rows.Close()
			return err
		}
		envs = append(envs, env)
	}
	if err := closeRows(rows); err != nil {
		return err
	}
	for _, env := range envs {
		if err := zeroSeries(ctx, tx, name, env); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE environment_state SET repository = ? WHERE repository_id = ?`, name, repoID); err != nil {
		return err
	}
	return bumpRollups(ctx, tx)
}

// repoName is a repository's full name as the database records it, the
// repository label of every delivery metric: never the name an event
// carries, which is the old one for a delivery queued before a rename.
func repoName(ctx context.Context, tx *sql.Tx, repoID int64) (string, error) {
	var name string
	err := tx.QueryRowContext(ctx, `SELECT full_name FROM repositories WHERE id = ?`, repoID).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("repository %d is not recorded", repoID)
	}
	return name, err
}

// PipelineBranch returns the branch named by the last configuration read.
func (db *DB) PipelineBranch(ctx context.Context, repoID int64) (string, error) {
	b, _, err := db.PipelineBranchSource(ctx, repoID)
	return b, err
}

// PipelineBranchSource returns the branch named by the last configuration
// read, and the commit whose configuration last changed it ("" if not
// known).
func (db *DB) PipelineBranchSource(ctx context.Context, repoID int64) (branch, sha string, err error) {
	err = db.queryRow(ctx, `SELECT pipeline_branch, pipeline_branch_sha FROM repositories WHERE id = ?`, repoID).Scan(&branch, &sha)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", nil
	}
	return branch, sha, err
}

// SetPipelineBranch remembers the branch a repository's configuration
// names, and, when that changes it, the commit of that configuration (sha,
// "" if not known).
func (db *DB) SetPipelineBranch(ctx context.Context, repoID int64, branch, sha string) error {
	_, err := db.exec(ctx, `UPDATE repositories SET
		pipeline_branch_sha = CASE WHEN pipeline_branch != ? THEN ? ELSE pipeline_branch_sha END,
		pipeline_branch = ? WHERE id = ?`, branch, sha, branch, repoID)
	return err
}

// NotePush records that a push of the pipeline branch made at at (or, when
// guessed, whose delivery was received at at) is being handled, and returns
// the newest pushes handled before it.
func (db *DB) NotePush(ctx context.Context, repoID int64, at time.Time, guessed bool) (pipeline.PushMarks, error) {
	var known, received int64
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT last_push_at, last_receipt_at FROM repositories WHERE id = ?`, repoID).Scan(&known, &received); err != nil {
			return err
		}
		col := "last_push_at"
		if guessed {
			col = "last_receipt_at"
		}
		_, err := tx.ExecContext(ctx, `UPDATE repositories SET `+col+` = MAX(`+col+`, ?) WHERE id = ?`, millis(at), repoID)
		return err
	})
	if err != nil {
		return pipeline.PushMarks{}, err
	}
	return pipeline.PushMarks{Newest: fromMillis(max(known, received)), NewestKnown: fromMillis(known)}, nil
}

// RetireEnvironments retires every environment of a repository: it has left
// lastmile (its configuration file is gone), so dashboards and alerts forget
// its environments. Its history stays, and a configuration naming an
// environment again makes it live again (its releases are withdrawn:
// nothing is deployed meanwhile).
func (db *DB) RetireEnvironments(ctx context.Context, repoID int64) error {
	return db.inTx(ctx, func(tx *sql.Tx) error { return retireAllBut(ctx, tx, repoID, []string{}) })
}

// RecordRelease stores a release and its commits, or finds the existing
// one: the release its push made already (the push handled again after a
// crash), or the repository's latest when that is of the same commit and
// still stands (not withdrawn: stopped as superseded). A commit released
// before that is not the latest, or whose latest release was withdrawn
// (the branch was rolled back to it, or put back on it), is released
// again. A repository recorded as no longer
// reached (DetachRepo, or its installation uninstalled) is given no new
// release: pipeline.ErrUnreachable. Checked in the same transaction, so
// that a push handled beside the repository's departure either records its
// release before the departure is recorded (and the departure stops it) or
// is refused.
func (db *DB) RecordRelease(ctx context.Context, rel *pipeline.Release, commits []pipeline.Commit) (bool, error) {
	created := false
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		var installation int64
		var state sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT r.installation_id, i.state FROM repositories r
			LEFT JOIN installations i ON i.id = r.installation_id WHERE r.id = ?`, rel.Repo.ID).Scan(&installation, &state)
		if err == nil && (installation == 0 || state.String == string(pipeline.InstallationUninstalled)) {
			return pipeline.ErrUnreachable
		}
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		err = tx.QueryRowContext(ctx, `SELECT id FROM releases WHERE repository_id = ? AND sha = ?
			AND ((id = (SELECT MAX(id) FROM releases WHERE repository_id = ?) AND NOT (state = ? AND stop_kind = ?))
				OR (delivery_id = ? AND delivery_id != ''))
			ORDER BY id DESC LIMIT 1`, rel.Repo.ID, rel.SHA, rel.Repo.ID, string(pipeline.ReleaseStopped), string(pipeline.StopSuperseded),
			rel.DeliveryID).Scan(&rel.ID)
		if err == nil {
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var cfg sql.NullString
		if rel.Config != nil {
			b, err := json.Marshal(rel.Config)
			if err != nil {
				return err
			}
			cfg = sql.NullString{String: string(b), Valid: true}
		}
		now := db.Now()
		rel.CreatedAt, rel.UpdatedAt = now, now
		res, err := tx.ExecContext(ctx, `INSERT INTO releases (repository_id, sha, ref, pusher, pushed_at, delivery_id, config,
			state, stop_kind, stop_reason, created_at, updated_at, parent_id, baseline, base_sha) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			rel.Repo.ID, rel.SHA, rel.Ref, rel.Pusher, millis(rel.PushedAt), rel.DeliveryID, cfg,
			string(rel.State), string(rel.StopKind), rel.StopReason, millis(now), millis(now), rel.ParentID, rel.Baseline, rel.Base)
		if err != nil {
			return fmt.Errorf("insert release %s@%s: %w", rel.Repo.FullName(), rel.SHA, err)
		}
		if rel.ID, err = res.LastInsertId(); err != nil {
			return err
		}
		ins, err := tx.PrepareContext(ctx, `INSERT INTO release_commits (release_id, position, sha, author, timestamp, title)
			VALUES (?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer ins.Close()
		for i, c := range commits {
			if _, err := ins.ExecContext(ctx, rel.ID, i, c.SHA, c.Author, millis(c.Timestamp), c.Title); err != nil {
				return err
			}
		}
		created = true
		if err := linkEarlierExternals(ctx, tx, rel); err != nil {
			return err
		}
		if rel.Config == nil {
			return nil
		}
		// The environments this configuration names are the pipeline's:
		// each is live, with its delivery series at zero from now on, long
		// before lastmile's first deployment there ends (see zeroSeries).
		// The environments it no longer names are retired.
		if err := saveRepoTx(ctx, tx, rel.Repo, now); err != nil {
			return err
		}
		name, err := repoName(ctx, tx, rel.Repo.ID)
		if err != nil {
			return err
		}
		// Most pushes name the environments the previous one did: those
		// already live under this name, flag and all, have their series.
		type live struct {
			env        string
			production bool
		}
		known := map[live]bool{}
		rows, err := tx.QueryContext(ctx, `SELECT environment, production FROM environment_state
			WHERE repository_id = ? AND repository = ? AND NOT retired`, rel.Repo.ID, name)
		if err != nil {
			return err
		}
		for rows.Next() {
			var l live
			if err := rows.Scan(&l.env, &l.production); err != nil {
				rows.Close()
				return err
			}
			known[l] = true
		}
		if err := closeRows(rows); err != nil {
			return err
		}
		names := make([]string, len(rel.Config.Environments))
		for i, e := range rel.Config.Environments {
			names[i] = e.Name
			if known[live{e.Name, e.Production}] {
				continue
			}
			// An environment spelled otherwise before ("Production" become
			// "production") is the same one, as on GitHub: its row (names
			// compare without case) takes the configuration's spelling, the
			// label of lastmile_environment_info and the last success.
			// Live since now when new, brought back (retired: see
			// retireAllBut), or made a production one.
			res, err := tx.ExecContext(ctx, `INSERT INTO environment_state (repository_id, environment, repository, production, live_since)
				VALUES (?, ?, ?, ?, ?) ON CONFLICT (repository_id, environment) DO UPDATE SET environment = excluded.environment,
				live_since = CASE WHEN retired OR (excluded.production AND NOT production) THEN excluded.live_since ELSE live_since END,
				production = excluded.production, repository = excluded.repository
				WHERE production != excluded.production OR repository != excluded.repository
				OR environment != excluded.environment COLLATE BINARY OR retired`,
				rel.Repo.ID, e.Name, name, e.Production, millis(now))
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n > 0 {
				if err := bumpRollups(ctx, tx); err != nil {
					return err
				}
			}
			if err := zeroSeries(ctx, tx, name, e.Name); err != nil {
				return err
			}
		}
		return retireAllBut(ctx, tx, rel.Repo.ID, names)
	})
	return created, err
}

// retireAllBut makes a repository's environments named in live (in any
// case: environment_state compares names without case) live, and retires
// the others. An environment retired, or made live again, has its clock of
// time to restore stopped without an observation: a failure there — before
// it was retired, or one a deployment in flight then reported after — is
// not restored by a success after lastmile was out of it (the environment
// deployed by other means meanwhile, perhaps for weeks). A retired environment that never finished
// a deployment loses the zero series zeroSeries gave it: they measured
// nothing, and a configuration renamed push after push would otherwise add
// series to every scrape for good.
func retireAllBut(ctx context.Context, tx *sql.Tx, repoID int64, live []string) error {
	list, err := json.Marshal(live)
	if err != nil {
		return err
	}
	rows, err := tx.QueryContext(ctx, `UPDATE environment_state SET retired = (environment NOT IN (SELECT value FROM json_each(?))),
			failing_since = 0
		WHERE repository_id = ? AND retired != (environment NOT IN (SELECT value FROM json_each(?)))
		RETURNING repository, environment, retired`, string(list), repoID, string(list))
	if err != nil {
		return err
	}
	type env struct{ repo, name string }
	var retired []env
	changed := false
	for rows.Next() {
		var e env
		var gone bool
		if err := rows.Scan(&e.repo, &e.name, &gone); err != nil {
			rows.Close()
			return err
		}
		changed = true
		if gone {
			retired = append(retired, e)
		}
	}
	if err := closeRows(rows); err != nil {
		return err
	}
	for _, e := range retired {
		if err := dropZeroSeries(ctx, tx, repoID, e.repo, e.name); err != nil {
			return err
		}
	}
	if changed {
		return bumpRollups(ctx, tx)
	}
	return nil
}

// dropZeroSeries removes an environment's delivery series (under every
// spelling of its name) when lastmile never deployed there: all of them are
// still at zero, and no deployment in flight will end there and count (its
// first increment would then go unseen by increase()). Series are kept by
// name: they stay while another repository of that name (see
// readEnvironments) has the environment live.
func dropZeroSeries(ctx context.Context, tx *sql.Tx, repoID int64, repo, env string) error {
	// The repository's counters, by their key's range: the labels are
	// the JSON array [repository, environment, state].
	name, err := json.Marshal([]string{repo})
	if err != nil {
		return err
	}
	from := string(name[:len(name)-1]) + ","
	to := string(name[:len(name)-1]) + "-" // ',' + 1
	const counters = `FROM counters WHERE name = ? AND labels >= ? AND labels < ?
		AND json_extract(labels, '$[1]') = ? COLLATE NOCASE`
	const histograms = `FROM histograms WHERE name IN (SELECT value FROM json_each(?)) AND repository = ? AND environment = ? COLLATE NOCASE`
	names, err := json.Marshal(deliveryHistograms)
	if err != nil {
		return err
	}
	hist := []any{string(names), repo, env}
	var used bool
	err = tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM deployments WHERE repository_id = ?
			AND environment = ? COLLATE NOCASE AND origin = 'lastmile')
		OR EXISTS (SELECT 1 `+counters+` AND value != 0)
		OR EXISTS (SELECT 1 `+histograms+` AND count != 0)
		OR EXISTS (SELECT 1 FROM environment_state WHERE repository = ? AND environment = ? AND NOT retired)`,
		append(append([]any{repoID, env, MetricDeployments, from, to, env}, hist...), repo, env)...).Scan(&used)
	if err != nil || used {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE `+counters, MetricDeployments, from, to, env); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `DELETE `+histograms, hist...)
	return err
}

const releaseColumns = `r.id, r.repository_id, p.full_name, p.installation_id, r.sha, r.ref, r.pusher, r.pushed_at, r.delivery_id,
	r.config, r.state, r.stop_kind, r.stop_reason, r.created_at, r.updated_at, r.parent_id, r.baseline, r.base_sha`

func scanRelease(row rowScanner) (*pipeline.Release, error) {
	var r pipeline.Release
	var full string
	var pushed, created, updated int64
	var cfg sql.NullString
	var state, kind string
	if err := row.Scan(&r.ID, &r.Repo.ID, &full, &r.Repo.InstallationID, &r.SHA, &r.Ref, &r.Pusher, &pushed, &r.DeliveryID,
		&cfg, &state, &kind, &r.StopReason, &created, &updated, &r.ParentID, &r.Baseline, &r.Base); err != nil {
		return nil, err
	}
	r.Repo.Owner, r.Repo.Name, _ = pipeline.SplitFullName(full)
	r.PushedAt, r.CreatedAt, r.UpdatedAt = fromMillis(pushed), fromMillis(created), fromMillis(updated)
	r.State, r.StopKind = pipeline.ReleaseState(state), pipeline.StopKind(kind)
	if cfg.Valid {
		r.Config = &pipeline.Config{}
		if err := json.Unmarshal([]byte(cfg.String), r.Config); err != nil {
			return nil, fmt.Errorf("release %d: stored configuration: %w", r.ID, err)
		}
	}
	return &r, nil
}

// LatestRelease returns the newest release of a repository.
func (db *DB) LatestRelease(ctx context.Context, repoID int64) (*pipeline.Release, error) {
	r, err := scanRelease(db.read.QueryRowContext(ctx, `SELECT `+releaseColumns+` FROM releases r
		JOIN repositories p ON p.id = r.repository_id WHERE r.repository_id = ? ORDER BY r.id DESC LIMIT 1`, repoID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, pipeline.ErrNotFound
	}
	return r, err
}

// LatestConfigured returns the newest release of a repository with a
// valid configuration.
func (db *DB) LatestConfigured(ctx context.Context, repoID int64) (*pipeline.Release, error) {
	return latestConfigured(ctx, db.read, repoID)
}

func latestConfigured(ctx context.Context, q querier, repoID int64) (*pipeline.Release, error) {
	r, err := scanRelease(q.QueryRowContext(ctx, `SELECT `+releaseColumns+` FROM releases r
		JOIN repositories p ON p.id = r.repository_id WHERE r.repository_id = ? AND r.config IS NOT NULL ORDER BY r.id DESC LIMIT 1`, repoID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, pipeline.ErrNotFound
	}
	return r, err
}

// NewerReleases lists the repository's releases numbered above after,
// newest first, up to limit.
func (db *DB) NewerReleases(ctx context.Context, repoID, after int64, limit int) ([]*pipeline.Release, error) {
	return queryReleases(ctx, db.read, `SELECT `+releaseColumns+` FROM releases r
		JOIN repositories p ON p.id = r.repository_id WHERE r.repository_id = ? AND r.id > ? ORDER BY r.id DESC LIMIT ?`, repoID, after, limit)
}

// queryReleases is the releases query lists.
func queryReleases(ctx context.Context, q querier, query string, args ...any) ([]*pipeline.Release, error) {
	return queryRows(ctx, q, func(rows *sql.Rows, r **pipeline.Release) (err error) {
		*r, err = scanRelease(rows)
		return err
	}, query, args...)
}

// statusSince is when deployment d got its latest status (its creation
// when it has none): the start of the hold of a deployment in progress.
const statusSince = `COALESCE((SELECT MAX(created_at) FROM deployment_statuses s WHERE s.deployment_id = d.id), d.created_at)`

// HoldEnded lists the repositories with an active release where a lastmile
// deployment, in progress (or re-run: see markRerun) since its latest
// status, stopped holding its
// environment (pipeline.HoldRunning) after from and until to (consecutive
// windows see each end once): a release waiting behind it can go on, and
// nothing else would tell the pipeline so. It reads the deployments in
// progress only (their own index), however long the history.
func (db *DB) HoldEnded(ctx context.Context, from, to time.Time) ([]pipeline.Repo, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT DISTINCT p.id, p.full_name, p.installation_id
		FROM deployments d INDEXED BY deployments_in_progress JOIN repositories p ON p.id = d.repository_id
		WHERE d.origin = 'lastmile' AND (d.state = 'in_progress' OR d.rerun = 1) AND `+statusSince+` BETWEEN ? AND ?
			AND EXISTS (SELECT 1 FROM releases r WHERE r.repository_id = p.id AND r.state = 'active')
		ORDER BY p.id`, millis(from.Add(-pipeline.HoldRunning))+1, millis(to.Add(-pipeline.HoldRunning)))
	if err != nil {
		return nil, err
	}
	return scanRepos(rows)
}

// Owing lists the repositories that owe GitHub something — a deployment to
// create, a status to write, statuses to read back (Work; not the
// deployments waiting for required contexts, which their events or the
// timeout settle) — while no delivery of theirs is pending to see to it:
// the delivery that owed it went dead (GitHub failing it for long) or was
// discarded. Not a repository removed from its installation (lastmile
// settles what it owed as it leaves). It reads the owed deployments' index
// and, for each of their repositories, the pending deliveries'
// (owingQuery).
func (db *DB) Owing(ctx context.Context) ([]pipeline.Repo, error) {
	rows, err := db.read.QueryContext(ctx, owingQuery)
	if err != nil {
		return nil, err
	}
	return scanRepos(rows)
}

// The first condition on d is the partial index's own, which SQLite must
// see to read deployments_work; the second leaves out what only waits for
// required contexts.
const owingQuery = `SELECT p.id, p.full_name, p.installation_id FROM repositories p
	WHERE p.id IN (SELECT d.repository_id FROM deployments d INDEXED BY deployments_work
		WHERE (d.state IN ('intent', 'waiting') OR d.notify != '' OR d.read_back = 1)
			AND (d.state = 'intent' OR d.notify != '' OR d.read_back = 1) AND d.origin = 'lastmile')
	AND NOT EXISTS (SELECT 1 FROM deliveries WHERE state = 'pending' AND repository_id = p.id)
	AND p.installation_id != 0
	ORDER BY p.id`

// Revivable lists a repository's releases, newest first, up to limit (all
// of them when limit < 0), that stopped after a failure or rejection since
// since: a re-run of the failed deployment that succeeds would carry them
// on.
func (db *DB) Revivable(ctx context.Context, repoID int64, since time.Time, limit int) ([]*pipeline.Release, error) {
	return queryReleases(ctx, db.read, revivableQuery, repoID, millis(since), limit)
}

// revivableQuery is Revivable's, for repository ?1, since ?2 and limit ?3:
// the releases stopped so since then, from their own index, however many
// releases came before.
const revivableQuery = `SELECT ` + releaseColumns + ` FROM releases r INDEXED BY releases_revivable
	JOIN repositories p ON p.id = r.repository_id WHERE r.repository_id = ?1 AND r.state = 'stopped'
	AND r.stop_kind IN ('failed', 'rejected') AND r.updated_at >= ?2 ORDER BY r.id DESC LIMIT ?3`

// Release returns a release by its ID.
func (db *DB) Release(ctx context.Context, id int64) (*pipeline.Release, error) {
	r, err := scanRelease(db.read.QueryRowContext(ctx, `SELECT `+releaseColumns+` FROM releases r
		JOIN repositories p ON p.id = r.repository_id WHERE r.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, pipeline.ErrNotFound
	}
	return r, err
}

// ReleaseOf returns the newest release of a commit.
func (db *DB) ReleaseOf(ctx context.Context, repoID int64, sha string) (*pipeline.Release, error) {
	r, err := scanRelease(db.read.QueryRowContext(ctx, `SELECT `+releaseColumns+` FROM releases r
		JOIN repositories p ON p.id = r.repository_id WHERE r.repository_id = ? AND r.sha = ? ORDER BY r.id DESC LIMIT 1`, repoID, sha))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, pipeline.ErrNotFound
	}
	return r, err
}

// RepoState gathers what the planner needs, in one read transaction.
func (db *DB) RepoState(ctx context.Context, repoID int64) (*pipeline.RepoState, error) {
	tx, err := db.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	s := &pipeline.RepoState{Reached: map[string]int64{}}
	rows, err := tx.QueryContext(ctx, activeReleasesQuery, repoID)
	if err != nil {
		return nil, err
	}
	byID := map[int64]*pipeline.ReleaseProgress{}
	for rows.Next() {
		r, err := scanRelease(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		p := &pipeline.ReleaseProgress{Release: r, ByStage: map[int]*pipeline.Deployment{}}
		s.Active = append(s.Active, p)
		byID[r.ID] = p
	}
	if err := closeRows(rows); err != nil {
		return nil, err
	}
	if len(s.Active) > 0 {
		deps, err := queryDeployments(ctx, tx, `WHERE d.origin = 'lastmile' AND d.release_id IN
			(SELECT id FROM releases WHERE repository_id = ? AND state = 'active')`, repoID)
		if err != nil {
			return nil, err
		}
		for _, d := range deps {
			if p := byID[d.ReleaseID]; p != nil {
				p.ByStage[d.Stage] = d
			}
		}
		if err := workflowProgress(ctx, tx, s, byID); err != nil {
			return nil, err
		}
	}
	// A running deployment may be a stopped release's (superseded, or
	// withdrawn by a force push, while it ran), which the active releases
	// above do not show.
	rows, err = tx.QueryContext(ctx, reachedQuery, repoID)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var env string
		var id sql.NullInt64
		if err := rows.Scan(&env, &id); err != nil {
			rows.Close()
			return nil, err
		}
		if id.Int64 != 0 {
			s.Reached[env] = id.Int64
		}
	}
	if err := closeRows(rows); err != nil {
		return nil, err
	}
	rows, err = tx.QueryContext(ctx, runningQuery, repoID, millis(db.Now().Add(-pipeline.HoldRunning)))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var env string
		var id int64
		if err := rows.Scan(&env, &id); err != nil {
			return nil, err
		}
		if s.Running == nil {
			s.Running = map[string]int64{}
		}
		s.Running[env] = id
	}
	return s, rows.Err()
}

// workflowProgress fills in, for the active releases whose workflow
// creates the deployments (deployments: workflow), the deployments it
// created; and, where there are such releases — active, or newer than an
// active one whose deployments lastmile creates (the configuration
// changed) —, s.Succeeded for the environments the active releases name.
func workflowProgress(ctx context.Context, tx *sql.Tx, s *pipeline.RepoState, byID map[int64]*pipeline.ReleaseProgress) error {
	repoID := s.Active[0].Release.Repo.ID
	var workflow []*pipeline.Release
	for _, p := range s.Active {
		if p.Release.Config.WorkflowDeploys() {
			workflow = append(workflow, p.Release)
		}
	}
	if len(workflow) == 0 {
		var newer bool
		if err := tx.QueryRowContext(ctx, newerWorkflowQuery, repoID, s.Active[0].Release.ID, pipeline.DeploymentsWorkflow).Scan(&newer); err != nil || !newer {
			return err
		}
	}
	for _, r := range workflow {
		owned, err := queryDeployments(ctx, tx, ownedOfRelease, repoID, r.SHA, r.ID)
		if err != nil {
			return err
		}
		byStage := map[int]*pipeline.Deployment{} // none of lastmile's: it made none
		last := len(r.Config.Environments) - 1
		for _, d := range owned {
			// The latest of each stage (a re-run's), but for a success in
			// the last environment, which completes the release whatever
			// comes after it (see pipeline.Plan).
			if prev := byStage[d.Stage]; d.Stage == last && prev != nil && prev.Succeeded() {
				continue
			}
			byStage[d.Stage] = d
		}
		byID[r.ID].ByStage = byStage
	}
	envs := map[string]string{} // by lower case, as Plan keys them
	for _, p := range s.Active {
		for _, env := range p.Release.Config.Environments {
			envs[strings.ToLower(env.Name)] = env.Name
		}
	}
	s.Succeeded = make(map[string]int64, len(envs))
	for key, env := range envs {
		var id int64
		var sha string
		err := tx.QueryRowContext(ctx, newestSuccessQuery, repoID, env).Scan(&id, &sha)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return err
		}
		s.Succeeded[key] = id
	}
	return nil
}

// newerWorkflowQuery says whether repository ?1 has a release newer than
// ?2 whose configuration's deployments key is ?3: the repository's
// releases after ?2 alone (releases_repository), few, the active releases
// being the newest or close to them.
const newerWorkflowQuery = `SELECT EXISTS (SELECT 1 FROM releases WHERE id > ?2 AND repository_id = ?1
	AND json_extract(config, '$.deployments') = ?3)`

// activeReleasesQuery lists repository ?1's active releases, oldest
// first, from their own index: SQLite, with no statistics, would as soon
// walk every release of the repository and look at each one's state.
const activeReleasesQuery = `SELECT ` + releaseColumns + ` FROM releases r INDEXED BY releases_active
	JOIN repositories p ON p.id = r.repository_id WHERE r.repository_id = ?1 AND r.state = 'active' ORDER BY r.id`

// reachedQuery lists, per environment with a lastmile deployment of
// repository ?1 (one row per name without case, under one of its
// spellings), the newest release whose deployment there counts as reached
// (see pipeline.RepoState.Reached): neither abandoned nor refused for a
// required context (waiting), nor a first deployment, still to be
// created, of a release with required contexts — NULL if none does. It
// reads a few index entries however long the history: the environments by
// a loose scan of deployments_reached (one seek each), then each one's
// deployments newest first, stopping at the first that counts.
const reachedQuery = `WITH RECURSIVE envs(name) AS (
	SELECT (SELECT environment FROM deployments WHERE repository_id = ?1 AND origin = 'lastmile'
		ORDER BY environment COLLATE NOCASE LIMIT 1)
	UNION ALL
	SELECT (SELECT environment FROM deployments WHERE repository_id = ?1 AND origin = 'lastmile'
		AND environment > envs.name COLLATE NOCASE ORDER BY environment COLLATE NOCASE LIMIT 1)
	FROM envs WHERE envs.name IS NOT NULL)
SELECT name, (SELECT d.release_id FROM deployments d
	WHERE d.repository_id = ?1 AND d.origin = 'lastmile' AND d.environment = envs.name COLLATE NOCASE
		AND d.state NOT IN ('abandoned', 'waiting')
		AND NOT (d.state = 'intent' AND d.stage = 0 AND COALESCE((SELECT json_array_length(r.config, '$.required_contexts')
			FROM releases r WHERE r.id = d.release_id), 0) > 0)
	ORDER BY d.environment COLLATE NOCASE DESC, d.release_id DESC LIMIT 1)
FROM envs WHERE name IS NOT NULL`

// holding is the condition on a lastmile deployment d that holds its
// environment for the next release (see pipeline.RepoState.Running): in
// progress, a first attempt or a re-run (see markRerun), since its latest
// status, for less than pipeline.HoldRunning (since after the time bound
// to it). With d.origin = 'lastmile' it is what the deployments_in_progress
// index holds, the few deployments running, however long the history.
const holding = `d.origin = 'lastmile' AND (d.state = 'in_progress' OR d.rerun = 1) AND ` + statusSince + ` > `

// runningQuery lists the environments of repository ?1 that a release's
// lastmile deployment holds (see holding, bound ?2), and the newest such
// release in each: environments compared without case, as GitHub names
// them (and Plan keys them), so that two spellings held at once make one
// entry, whatever order they are read in.
const runningQuery = `SELECT MIN(d.environment), MAX(d.release_id) FROM deployments d INDEXED BY deployments_in_progress
	WHERE d.repository_id = ?1 AND ` + holding + `?2 GROUP BY d.environment COLLATE NOCASE`

// Apply records the planner's decisions in one transaction. A decision to
// create a deployment is recorded durably, with its first attempt counted:
// the caller creates it right after, and whoever finds it again after an
// interruption must look for it on GitHub before creating it.
func (db *DB) Apply(ctx context.Context, repo pipeline.Repo, actions []pipeline.Action) error {
	now := db.Now()
	tx := db.inTx
	for _, a := range actions {
		if _, ok := a.(pipeline.CreateDeployment); ok {
			tx = db.durableTx
		}
	}
	return tx(ctx, func(tx *sql.Tx) error {
		for _, a := range actions {
			if err := db.apply(ctx, tx, repo, a, now); err != nil {
				return err
			}
		}
		return nil
	})
}

func (db *DB) apply(ctx context.Context, tx *sql.Tx, repo pipeline.Repo, a pipeline.Action, now time.Time) error {
	if deps, ok := pipeline.NotifyDeployments(a); ok {
		for _, d := range deps {
			if _, err := tx.ExecContext(ctx, `UPDATE deployments SET notify = ?, notify_reason = ?, notify_at = ? WHERE id = ? AND notify = ''`,
				string(d.Notify), d.NotifyReason, millis(d.NotifyAt), d.ID); err != nil {
				return err
			}
		}
		return nil
	}
	switch a := a.(type) {
	case pipeline.CreateDeployment:
		env := a.Release.Config.Environments[a.Stage]
		name, err := repoName(ctx, tx, repo.ID)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO deployments (repository_id, release_id, environment, stage, sha, origin,
			state, production, attempts, created_at, attempted_at) VALUES (?, ?, ?, ?, ?, 'lastmile', 'intent', ?, 1, ?, ?)
			ON CONFLICT DO NOTHING`, repo.ID, a.Release.ID, env.Name, a.Stage, a.Release.SHA, env.Production, millis(now),
			millis(now.Add(pipeline.CreateInFlight)))
		if err != nil {
			return err
		}
		// The environment is live (in lastmile_environment_info) only if
		// the configuration, as the newest valid release read it, names
		// it: a release from before an environment was renamed or removed
		// may still finish its way there, and that deployment does not
		// bring it back. Its production flag is the configuration's.
		cur, live, err := configuredEnvironment(ctx, tx, repo.ID, env.Name)
		if err != nil {
			return err
		}
		// Spelled otherwise now ("Staging" become "staging"): GitHub takes
		// both for one environment, and so does environment_state; the
		// configuration's spelling is the live one.
		spelling, production := env.Name, env.Production
		if live {
			spelling, production = cur.Name, cur.Production
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO environment_state (repository_id, environment, repository, production, retired, live_since)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (repository_id, environment) DO UPDATE SET
			environment = CASE WHEN excluded.retired THEN environment ELSE excluded.environment END,
			production = CASE WHEN excluded.retired THEN production ELSE excluded.production END,
			live_since = CASE WHEN retired AND NOT excluded.retired THEN excluded.live_since ELSE live_since END,
			repository = excluded.repository, retired = excluded.retired`, repo.ID, spelling, name, production, !live, millis(now))
		if err != nil {
			return err
		}
		if err := zeroSeries(ctx, tx, name, env.Name); err != nil {
			return err
		}
		return bumpRollups(ctx, tx)
	case pipeline.CompleteRelease:
		return setReleaseState(ctx, tx, a.Release.ID, pipeline.ReleaseCompleted, "", "", now)
	case pipeline.StopRelease:
		if d := a.Deactivate; d != nil {
			var err error
			if d.State.Realized() {
				_, err = tx.ExecContext(ctx, `UPDATE deployments SET notify = 'inactive', notify_reason = ? WHERE id = ? AND notify = ''`,
					a.Reason, d.ID)
			} else {
				// An intent that an attempt may have created (its answer
				// lost) stays one, owing an inactive: the engine looks
				// for it on GitHub first (Engine.realize), so that a
				// deployment GitHub did make is known as lastmile's, made
				// inactive, and, if its workflow began to deploy it, holds
				// its environment like any other.
				_, err = tx.ExecContext(ctx, `UPDATE deployments SET
					state = CASE WHEN state = 'intent' AND attempts > 0 THEN state ELSE 'abandoned' END,
					notify = CASE WHEN state = 'intent' AND attempts > 0 THEN 'inactive' ELSE notify END,
					notify_reason = CASE WHEN state = 'intent' AND attempts > 0 THEN ? ELSE notify_reason END,
					reason = ? WHERE id = ?`, a.Reason, a.Reason, d.ID)
			}
			if err != nil {
				return err
			}
		}
		if a.DeactivateEnded != "" {
			// Its newest deployment on GitHub, if it ended in failure or
			// error (a re-run in progress already is left to end).
			_, err := tx.ExecContext(ctx, `UPDATE deployments SET notify = 'inactive', notify_reason = ?
				WHERE id = (SELECT id FROM deployments WHERE release_id = ? AND origin = 'lastmile' AND github_id IS NOT NULL
					ORDER BY stage DESC, id DESC LIMIT 1) AND state IN ('failure', 'error') AND rerun = 0 AND notify = ''`, a.DeactivateEnded, a.Release.ID)
			if err != nil {
				return err
			}
		}
		return setReleaseState(ctx, tx, a.Release.ID, pipeline.ReleaseStopped, a.Kind, a.Reason, now)
	}
	return fmt.Errorf("unknown action %T", a)
}

func setReleaseState(ctx context.Context, tx *sql.Tx, id int64, state pipeline.ReleaseState, kind pipeline.StopKind, reason string, now time.Time) error {
	_, err := tx.ExecContext(ctx, `UPDATE releases SET state = ?, stop_kind = ?, stop_reason = ?, updated_at = ? WHERE id = ?`,
		string(state), string(kind), reason, millis(now), id)
	return err
}

// Work lists a repository's deployments that still need GitHub: intents to
// create and statuses to write.
func (db *DB) Work(ctx context.Context, repoID int64) ([]*pipeline.Deployment, error) {
	deps, err := queryDeployments(ctx, db.read, `WHERE d.repository_id = ? AND d.origin = 'lastmile'
		AND (d.state IN ('intent', 'waiting') OR d.notify != '' OR d.read_back = 1) ORDER BY d.id`, repoID)
	if err != nil {
		return nil, err
	}
	for _, d := range deps {
		if (d.State != pipeline.DeploymentIntent && d.State != pipeline.DeploymentWaiting) || d.Stage != 0 {
			continue
		}
		var cfg sql.NullString
		if err := db.read.QueryRowContext(ctx, `SELECT config FROM releases WHERE id = ?`, d.ReleaseID).Scan(&cfg); err != nil {
			return nil, err
		}
		var c pipeline.Config
		if cfg.Valid {
			if err := json.Unmarshal([]byte(cfg.String), &c); err != nil {
				return nil, err
			}
		}
		d.RequiredContexts = c.RequiredContexts
		if d.RequiredContexts == nil {
			d.RequiredContexts = []string{}
		}
	}
	return deps, nil
}

// ReadBackDone records that a deployment's statuses were read back after
// lastmile made it inactive.
func (db *DB) ReadBackDone(ctx context.Context, deploymentID int64) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE deployments SET read_back = 0 WHERE id = ?`, deploymentID)
		return err
	})
}

// UncountAttempt takes back an attempt counted for a creation that was not
// made after all (the intent waited): the next attempt need not look for
// the deployment on GitHub first.
func (db *DB) UncountAttempt(ctx context.Context, deploymentID int64) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE deployments SET attempts = MAX(attempts - 1, 0),
			attempted_at = CASE WHEN attempts <= 1 THEN 0 ELSE attempted_at END WHERE id = ?`, deploymentID)
		return err
	})
}

// MarkAttempt counts a creation attempt, durably, before the attempt, with
// the time until which it may make the deployment.
func (db *DB) MarkAttempt(ctx context.Context, deploymentID int64, until time.Time) error {
	return db.durableTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE deployments SET attempts = attempts + 1, attempted_at = ? WHERE id = ?`,
			millis(until), deploymentID)
		return err
	})
}

// AnswerLost records when an attempt to create an intent's deployment got
// no answer (a timeout, a 5xx): GitHub may have made it by then, and its
// list may show it only later. Durably, as the attempt.
func (db *DB) AnswerLost(ctx context.Context, deploymentID int64) error {
	return db.durableTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE deployments SET attempted_at = ? WHERE id = ? AND state = 'intent'`,
			millis(db.Now()), deploymentID)
		return err
	})
}

// Created records the GitHub deployment an intent became.
func (db *DB) Created(ctx context.Context, deploymentID, githubID int64, createdAt time.Time) error {
	if createdAt.IsZero() {
		createdAt = db.Now()
	}
	return db.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE deployments SET github_id = ?, state = 'created', reason = '', waiting_since = 0,
			created_at = ? WHERE id = ? AND state IN ('intent', 'waiting')`, githubID, millis(createdAt), deploymentID)
		if isUniqueViolation(err) {
			return fmt.Errorf("GitHub deployment %d is already recorded for another release: %w", githubID, err)
		}
		return err
	})
}

// Refused records that GitHub did not create a deployment, and why: it
// waits for its required contexts, stays an intent to be created again
// shortly, or is abandoned.
func (db *DB) Refused(ctx context.Context, deploymentID int64, state pipeline.DeploymentState, reason string) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		if state == pipeline.DeploymentWaiting {
			// GitHub created nothing: the next attempt need not look first.
			_, err = tx.ExecContext(ctx, `UPDATE deployments SET state = 'waiting', reason = ?, attempts = 0,
				waiting_since = CASE WHEN waiting_since = 0 THEN ? ELSE waiting_since END WHERE id = ?`,
				reason, millis(db.Now()), deploymentID)
		} else {
			// Abandoned, it owes GitHub nothing. An intent GitHub refused
			// for now (spam) had an answer: no attempt's deployment can
			// be on its way to the list (attempted_at 0).
			_, err = tx.ExecContext(ctx, `UPDATE deployments SET state = ?, reason = ?, attempted_at = 0,
				notify = CASE WHEN ? = 'abandoned' THEN '' ELSE notify END WHERE id = ?`, string(state), reason, string(state), deploymentID)
		}
		return err
	})
}

// Resume puts a repository's waiting intents for sha back in line.
func (db *DB) Resume(ctx context.Context, repoID int64, sha string) (int, error) {
	var n int64
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE deployments SET state = 'intent' WHERE repository_id = ? AND sha = ?
			AND origin = 'lastmile' AND state = 'waiting'`, repoID, sha)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return int(n), err
}

// ExpireWaiting abandons deployments that have waited for their required
// contexts since before cutoff, stopping their releases — but for those of
// a suspended installation. It returns how many.
func (db *DB) ExpireWaiting(ctx context.Context, cutoff time.Time) (int, error) {
	var n int
	now := db.Now()
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		// Not those of a suspended installation: GitHub sends no status
		// while it is suspended, and its unsuspension has them ask again.
		rows, err := tx.QueryContext(ctx, `SELECT id, release_id, environment, reason, waiting_since FROM deployments
			WHERE state = 'waiting' AND waiting_since > 0 AND waiting_since < ?
			AND repository_id NOT IN (SELECT r.id FROM repositories r JOIN installations i ON i.id = r.installation_id
				WHERE i.state = 'suspended')`, millis(cutoff))
		if err != nil {
			return err
		}
		type expired struct {
			id, release int64
			env, reason string
			since       int64
		}
		var list []expired
		for rows.Next() {
			var e expired
			if err := rows.Scan(&e.id, &e.release, &e.env, &e.reason, &e.since); err != nil {
				rows.Close()
				return err
			}
			list = append(list, e)
		}
		if err := closeRows(rows); err != nil {
			return err
		}
		for _, e := range list {
			// Since its first refusal: the cutoff is only now less the
			// timeout, the same for every deployment expired.
			reason := fmt.Sprintf("required contexts not green after waiting since %s (%s)",
				fromMillis(e.since).Format(time.RFC3339), e.reason)
			if _, err := tx.ExecContext(ctx, `UPDATE deployments SET state = 'abandoned', reason = ? WHERE id = ? AND state = 'waiting'`,
				reason, e.id); err != nil {
				return err
			}
			if err := setReleaseState(ctx, tx, e.release, pipeline.ReleaseStopped, pipeline.StopRefused,
				fmt.Sprintf("no deployment to %s: %s", e.env, reason), now); err != nil {
				return err
			}
		}
		n = len(list)
		return nil
	})
	return n, err
}

// StageSucceeded reports whether a release's lastmile deployment at a stage
// has succeeded.
func (db *DB) StageSucceeded(ctx context.Context, releaseID int64, stage int) (bool, error) {
	var n int
	err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM deployments WHERE release_id = ? AND stage = ?
		AND origin = 'lastmile' AND succeeded_at > 0`, releaseID, stage).Scan(&n)
	return n > 0, err
}

// Succeeded reports whether sha succeeded in env (its name in any case, as
// GitHub's environment names ignore case): by lastmile's deployment,
// or by the one GitHub Actions created for a workflow job there (a job the
// environment's protection rules gated). A deployment someone made through
// the API, with no job, proves nothing: anyone who may create deployments
// could make one and call it a success. Such a deployment has no run_id:
// one lastmile did not create is linked to a run only by what GitHub says
// of it (its events' workflow_run, a workflow_job naming it), never by a
// status's log_url, which whoever writes the status chooses.
func (db *DB) Succeeded(ctx context.Context, repoID int64, sha, env string) (bool, error) {
	var n int
	err := db.read.QueryRowContext(ctx, succeededQuery, repoID, sha, env).Scan(&n)
	return n > 0, err
}

// succeededQuery is Succeeded's, for repository ?1, commit ?2 and
// environment ?3: the commit's few deployments (deployments_sha). SQLite,
// with no statistics, would as soon take deployments_succeeded and read
// every success in the environment.
const succeededQuery = `SELECT COUNT(*) FROM deployments INDEXED BY deployments_sha WHERE repository_id = ?1 AND sha = ?2
	AND environment = ?3 COLLATE NOCASE AND succeeded_at > 0 AND (origin = 'lastmile' OR run_id != 0)`

// HeldBy is the release whose lastmile deployment in env is in progress
// (a first attempt or a re-run: see markRerun) and holds the environment (for less than pipeline.HoldRunning since its
// latest status), or was made inactive and is still to be read back (its
// deploy may have begun), the newest if several; 0 if none.
func (db *DB) HeldBy(ctx context.Context, repoID int64, env string) (int64, error) {
	var id int64
	err := db.read.QueryRowContext(ctx, heldByQuery, repoID, env, millis(db.Now().Add(-pipeline.HoldRunning))).Scan(&id)
	return id, err
}

// heldByQuery is HeldBy's, for repository ?1, environment ?2 and the hold's
// bound ?3: two index reads of the few deployments that may hold an
// environment, those in progress and those to be read back, however long
// the history.
const heldByQuery = `SELECT COALESCE(MAX(id), 0) FROM (
	SELECT MAX(d.release_id) AS id FROM deployments d INDEXED BY deployments_in_progress
		WHERE d.repository_id = ?1 AND d.environment = ?2 COLLATE NOCASE AND ` + holding + `?3
	UNION ALL
	SELECT MAX(d.release_id) FROM deployments d INDEXED BY deployments_work
		WHERE d.repository_id = ?1 AND d.read_back = 1 AND d.origin = 'lastmile' AND d.environment = ?2 COLLATE NOCASE)`

// NewestSuccess is the newest release with a success in env that Succeeded
// would count, and its commit; pipeline.ErrNotFound if there is none.
func (db *DB) NewestSuccess(ctx context.Context, repoID int64, env string) (int64, string, error) {
	var id int64
	var sha string
	err := db.read.QueryRowContext(ctx, newestSuccessQuery, repoID, env).Scan(&id, &sha)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", pipeline.ErrNotFound
	}
	return id, sha, err
}

// newestSuccessQuery is NewestSuccess's, for repository ?1 and environment
// ?2: the successes there, newest release first (deployments_succeeded),
// up to the first that counts.
const newestSuccessQuery = `SELECT release_id, sha FROM deployments WHERE repository_id = ?1
	AND environment = ?2 COLLATE NOCASE AND succeeded_at > 0 AND release_id IS NOT NULL
	AND (origin = 'lastmile' OR run_id != 0) ORDER BY environment COLLATE NOCASE DESC, release_id DESC LIMIT 1`

// Unfinished reports whether sha has a deployment in env that runs and has
// not ended, and would prove the commit if it succeeded (one that
// Succeeded counts): one in progress (a first attempt, or a re-run after
// its final status, see markRerun), or one a workflow run has taken up
// (linked to its run) that has no status yet, or is pending or queued —
// waiting for its reviewers, say: GitHub does not deliver webhooks in
// order, and a deployment last heard queued may have succeeded already,
// its in_progress and success on their way. Not one no run has taken up
// (a workflow that owns its deployments never runs lastmile's), nor one
// whose latest status is older than pipeline.HoldRunning (it never
// reported an end).
func (db *DB) Unfinished(ctx context.Context, repoID int64, sha, env string) (bool, error) {
	var n int
	err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM deployments d WHERE d.repository_id = ? AND d.sha = ?
		AND d.environment = ? COLLATE NOCASE
		AND (d.state = 'in_progress' OR d.rerun = 1 OR d.state IN ('created', 'pending', 'queued') AND d.run_id != 0)
		AND (d.origin = 'lastmile' OR d.run_id != 0) AND `+statusSince+` > ?`,
		repoID, sha, env, millis(db.Now().Add(-pipeline.HoldRunning))).Scan(&n)
	return n > 0, err
}

// deliveryHistograms are the histograms kept per repository and
// environment.
var deliveryHistograms = []string{metrics.LeadTime, metrics.DeploymentDuration, metrics.ApprovalWait, metrics.TimeToRestore}

// zeroSeries creates the delivery metrics of an environment at zero, if
// they are not there yet, so that Prometheus sees each series before its
// first increment: rate() and increase() then count that first deployment
// too. They are created when a release whose configuration names the
// environment is recorded (and when lastmile deploys there, and under a
// repository's new name when it is renamed): a scrape then sees the zero
// unless the first deployment there ends within a scrape interval of the
// push that first named the environment.
func zeroSeries(ctx context.Context, tx *sql.Tx, repo, env string) error {
	added := int64(0)
	for _, state := range []string{"success", "failure", "error"} {
		key, err := json.Marshal([]string{repo, env, state})
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO counters (name, labels, value) VALUES (?, ?, 0) ON CONFLICT DO NOTHING`,
			MetricDeployments, string(key))
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		added += n
	}
	for _, name := range deliveryHistograms {
		res, err := tx.ExecContext(ctx, `INSERT INTO histograms (name, repository, environment) VALUES (?, ?, ?)
			ON CONFLICT DO NOTHING`, name, repo, env)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		added += n
	}
	if added > 0 {
		return bumpRollups(ctx, tx)
	}
	return nil
}

// linkEarlierExternals links to release rel the deployments of its commit
// that lastmile did not create and recorded before it, with no release
// (their webhooks came before the push's, or the push was redelivered
// late), as RecordExternal would have, and has those a workflow owns
// count (settleOwned).
func linkEarlierExternals(ctx context.Context, tx *sql.Tx, rel *pipeline.Release) error {
	type early struct {
		id  int64
		env string
	}
	found, err := queryRows(ctx, tx, func(rows *sql.Rows, e *early) error { return rows.Scan(&e.id, &e.env) },
		`SELECT id, environment FROM deployments WHERE repository_id = ? AND sha = ? AND origin = 'external' AND release_id IS NULL`,
		rel.Repo.ID, rel.SHA)
	if err != nil {
		return err
	}
	for _, e := range found {
		stage := -1
		if rel.Config != nil {
			stage = rel.Config.Index(e.env)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE deployments SET release_id = ?, stage = ? WHERE id = ?`, rel.ID, stage, e.id); err != nil {
			return err
		}
		if err := settleOwned(ctx, tx, `id = ?`, e.id); err != nil {
			return err
		}
	}
	return nil
}
