package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// SetInstallation records where an installation of the App stands now:
// the caller asked GitHub (see pipeline.Engine.HandleInstallation), or
// was told of its uninstallation, which is final — GitHub never gives an
// installation's ID to another, so nothing recorded after it (an
// unsuspension delivered late) changes it. The state's since and by are
// kept while it stays in that state, so that an event handled again
// changes nothing — but for a suspension with another suspended_at: the
// installation was suspended again since. An installation recorded
// active (unsuspended, installed again, first heard of — or active still)
// or that becomes uninstalled (for them to be ignored) has its deliveries that wait for a later attempt made due at
// once, in the same transaction, and the count of them returned: while it
// was suspended they were put off until it would be unsuspended (see
// app.Worker) — also when lastmile did not hear of the suspension, GitHub's
// refusal saying it. Any other wait of them (a rate limit) costs a look at
// most: the transport holds back a call whose quota is known to be spent.
func (db *DB) SetInstallation(ctx context.Context, st pipeline.InstallationState) (woken int, err error) {
	now := db.Now()
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		var was string
		err := tx.QueryRowContext(ctx, `SELECT state FROM installations WHERE id = ?`, st.ID).Scan(&was)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		switch {
		case was == string(pipeline.InstallationUninstalled):
			return nil
		case was == string(st.State) && st.State == pipeline.InstallationSuspended:
			if st.Since.IsZero() {
				return nil
			}
			// Suspended again since (GitHub's suspended_at tells one
			// suspension from another): its time and who did it.
			_, err := tx.ExecContext(ctx, `UPDATE installations SET since = ?, by = ?, updated_at = ? WHERE id = ? AND since != ?`,
				millis(st.Since), st.By, millis(now), st.ID, millis(st.Since))
			return err
		case was == string(st.State):
			// Active still: nothing to record, but its deliveries put off
			// are woken all the same — GitHub's refusal may have put them
			// off while lastmile had not heard of the suspension.
		default:
			since := st.Since
			if since.IsZero() {
				since = now
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO installations (id, account, state, since, by, updated_at) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET account = CASE WHEN excluded.account != '' THEN excluded.account ELSE account END,
			state = excluded.state, since = excluded.since, by = excluded.by, updated_at = excluded.updated_at`,
				st.ID, st.Account, string(st.State), millis(since), st.By, millis(now)); err != nil {
				return err
			}
		}
		if st.State == pipeline.InstallationSuspended {
			return nil
		}
		res, err := tx.ExecContext(ctx, `UPDATE deliveries SET next_attempt_at = ?
			WHERE state = 'pending' AND installation_id = ? AND next_attempt_at > ?`, millis(now), st.ID, millis(now))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		woken = int(n)
		return err
	})
	if woken > 0 {
		db.queue.forget() // the heads' times changed behind the cache
	}
	return woken, err
}

// Installation is what lastmile recorded of an installation;
// pipeline.ErrNotFound if nothing (it is taken to be active).
func (db *DB) Installation(ctx context.Context, id int64) (pipeline.InstallationState, error) {
	st := pipeline.InstallationState{ID: id}
	var state string
	var since int64
	err := db.queryRow(ctx, `SELECT account, state, since, by FROM installations WHERE id = ?`, id).Scan(&st.Account, &state, &since, &st.By)
	if errors.Is(err, sql.ErrNoRows) {
		return st, pipeline.ErrNotFound
	}
	st.State, st.Since = pipeline.InstallationStatus(state), fromMillis(since)
	return st, err
}

// InstallationRepos lists the repositories lastmile recorded as reached
// through an installation (the installation of their latest event).
func (db *DB) InstallationRepos(ctx context.Context, installationID int64) ([]pipeline.Repo, error) {
	return db.repos(ctx, `WHERE installation_id = ?`, installationID)
}

// Repos lists the repositories of ids that lastmile has recorded, by ID;
// the others are left out.
func (db *DB) Repos(ctx context.Context, ids []int64) ([]pipeline.Repo, error) {
	list, err := json.Marshal(ids)
	if err != nil {
		return nil, err
	}
	return db.repos(ctx, `WHERE id IN (SELECT value FROM json_each(?))`, string(list))
}

func (db *DB) repos(ctx context.Context, where string, args ...any) ([]pipeline.Repo, error) {
	rows, err := db.query(ctx, `SELECT id, full_name, installation_id FROM repositories `+where+` ORDER BY id`, args...)
	if err != nil {
		return nil, err
	}
	return scanRepos(rows)
}

// scanRepos reads rows of (id, full_name, installation_id), and closes them.
func scanRepos(rows *sql.Rows) ([]pipeline.Repo, error) {
	defer rows.Close()
	var out []pipeline.Repo
	for rows.Next() {
		var r pipeline.Repo
		var full string
		if err := rows.Scan(&r.ID, &full, &r.InstallationID); err != nil {
			return nil, err
		}
		r.Owner, r.Name, _ = pipeline.SplitFullName(full)
		out = append(out, r)
	}
	return out, rows.Err()
}

// AttachRepo records that a repository lastmile knows is reached through
// installation id since at (added to it: transferred to another account,
// or removed and added again); one it does not know is left for its first
// event. A push made before at, delivered after, does not record its
// installation over this (SaveRepo).
func (db *DB) AttachRepo(ctx context.Context, repoID, id int64, at time.Time) error {
	_, err := db.exec(ctx, `UPDATE repositories SET installation_id = ?, installation_at = ? WHERE id = ?`, id, db.millisOr(at), repoID)
	return err
}

// DetachRepo records that a repository is reached through no installation
// of the App since at (removed from its installation): its installation
// becomes 0.
func (db *DB) DetachRepo(ctx context.Context, repoID int64, at time.Time) error {
	return db.AttachRepo(ctx, repoID, 0, at)
}

// InstallationsIn lists the installations recorded in a state, by ID.
func (db *DB) InstallationsIn(ctx context.Context, state pipeline.InstallationStatus) ([]int64, error) {
	rows, err := db.query(ctx, `SELECT id FROM installations WHERE state = ? ORDER BY id`, string(state))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// millisOr is at in milliseconds, or now's when at is zero.
func (db *DB) millisOr(at time.Time) int64 {
	if at.IsZero() {
		at = db.Now()
	}
	return millis(at)
}

// RecordedInstallation is the installation lastmile recorded as reaching
// a repository (0: none, detached, or not recorded), and since when.
func (db *DB) RecordedInstallation(ctx context.Context, repoID int64) (int64, time.Time, error) {
	var id, since int64
	err := db.queryRow(ctx, `SELECT installation_id, installation_at FROM repositories WHERE id = ?`, repoID).Scan(&id, &since)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, time.Time{}, nil
	}
	return id, time.UnixMilli(since), err
}

// Detached reports whether lastmile recorded a repository as removed from
// the installation it was reached through (DetachRepo).
func (db *DB) Detached(ctx context.Context, repoID int64) (bool, error) {
	var id int64
	err := db.queryRow(ctx, `SELECT installation_id FROM repositories WHERE id = ?`, repoID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil && id == 0, err
}

// DropWork gives up, in one transaction, what lastmile still owes GitHub
// for a repository it can no longer reach (the App was uninstalled, or the
// repository removed from its installation): its deployments not created
// yet (intents, and those waiting for required contexts) are abandoned
// with reason, the statuses it had still to write and the read-backs it
// had still to make are dropped (and MissingJobLogs no longer lists the
// deploy logs GitHub did not have yet). Work then lists nothing for it, so that no
// advance of it (the sweep's, say) calls GitHub in vain. The caller
// records the statuses first, as lastmile's alone.
func (db *DB) DropWork(ctx context.Context, repoID int64, reason string) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE deployments SET state = 'abandoned', reason = ?
			WHERE repository_id = ? AND origin = 'lastmile' AND state IN ('intent', 'waiting')`, reason, repoID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE deployments SET notify = '', notify_reason = '', read_back = 0
			WHERE repository_id = ? AND origin = 'lastmile' AND (notify != '' OR read_back = 1)`, repoID)
		return err
	})
}
