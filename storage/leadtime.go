package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/lastmile-app/lastmile/pipeline"
)

// leadPlan is where a success of a release in an environment finds the
// commits it brings there.
//
// Those of the release and of the releases it builds on (the chain of
// parents), back to the environment's newest success (its lead
// watermark) — or, at the environment's first success, to the first
// release whose configuration names the environment — when the chain
// reaches it: every push since moved the branch forward.
//
// Otherwise the release does not build on what the environment last ran
// (a rollback, a force push, history rewritten), and the chain misses
// commits that were never taken off the branch but had not reached the
// environment yet. Its commits there are then those of GitHub's
// comparison base...its commit, base being the newest success's commit —
// or, at the first success, the commit the first release naming the
// environment counts its commits from (the release before it, or its
// push's before), and when that is not known (a baseline, a release
// recorded before lastmile kept it) the first release's own commit,
// adding the commits that release brought (its commit alone for a
// baseline) when the comparison says the release contains it. The engine
// asks GitHub before it records the success (pipeline.Engine's
// leadCompare): if the comparison was given up, the chain's commits are
// all the success brings.
type leadPlan struct {
	stop    int64  // the chain takes the releases after stop
	base    string // not "": the commits are those of base...the release's commit
	first   int64  // with this release's commits, when that comparison says the release contains base
	nothing bool   // base is the release's own commit: the success brings no commit
}

// planLead plans the lead time of a success of release releaseID (of
// commit head) in env, whose lead watermark is watermark (below
// releaseID).
func planLead(ctx context.Context, q querier, repoID int64, env string, releaseID int64, head string, watermark int64) (leadPlan, error) {
	p := leadPlan{stop: watermark}
	var first int64
	if watermark == 0 {
		var err error
		if first, err = firstReleaseNaming(ctx, q, repoID, env, releaseID); err != nil {
			return p, err
		}
		p.stop = min(first, releaseID) - 1
	}
	// The oldest release of the chain, where it stops, and the release it
	// builds on.
	var oldest, parent int64
	var oldestBase string
	err := q.QueryRowContext(ctx, `WITH RECURSIVE chain(id, parent) AS (
			SELECT id, parent_id FROM releases WHERE id = ? AND id > ?
			UNION ALL
			SELECT r.id, r.parent_id FROM releases r JOIN chain ON r.id = chain.parent WHERE chain.parent > ?)
		SELECT c.id, c.parent, r.base_sha FROM chain c JOIN releases r ON r.id = c.id ORDER BY c.id LIMIT 1`,
		releaseID, watermark, p.stop).Scan(&oldest, &parent, &oldestBase)
	if errors.Is(err, sql.ErrNoRows) {
		return p, nil
	}
	if err != nil {
		return p, err
	}
	if watermark > 0 && parent == watermark || watermark == 0 && oldest == first {
		return p, nil // the branch moved forward all the way
	}
	if watermark > 0 {
		err = q.QueryRowContext(ctx, `SELECT sha FROM releases WHERE id = ?`, watermark).Scan(&p.base)
	} else {
		var sha string
		err = q.QueryRowContext(ctx, `SELECT sha, base_sha FROM releases WHERE id = ?`, first).Scan(&sha, &p.base)
		if p.base == "" {
			p.base, p.first = sha, first
		}
	}
	if err != nil {
		return p, err
	}
	switch {
	case p.first == 0 && p.base == head:
		// Back to the very commit the environment last ran (the rollback
		// of a release that failed before it got there).
		p.base, p.nothing = "", true
	case p.first == 0 && p.base == oldestBase:
		// The release the chain stops at counted its commits from that
		// commit (a rollback from the release the environment ran last):
		// the chain holds the comparison's commits already.
		p.base = ""
	}
	if p.base == "" {
		return p, nil
	}
	// A history that replaced the branch's since then (a baseline after
	// the first release: see pipeline.Release), before this release: when
	// the release is of that new history, the comparison with what the
	// environment last ran, of the old one, finds no common ancestor (404)
	// and is given up. The commits are then counted from the replacement:
	// its commit compared with the release's, its own commit added when
	// the release contains it. (The release may also have gone back to the
	// old history: the first comparison tells.)
	var state string
	err = q.QueryRowContext(ctx, `SELECT state FROM lead_compares WHERE release_id = ? AND base_sha = ?`, releaseID, p.base).Scan(&state)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return p, err
	}
	if state != "given_up" {
		return p, nil
	}
	var replaced int64
	var replacedSHA string
	err = q.QueryRowContext(ctx, `SELECT id, sha FROM releases WHERE repository_id = ? AND baseline AND id > ? AND id < ?
		ORDER BY id DESC LIMIT 1`, repoID, p.stop, releaseID).Scan(&replaced, &replacedSHA)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return p, nil
	case err != nil:
		return p, err
	}
	if replacedSHA != p.base {
		p.base, p.first = replacedSHA, replaced
	}
	return p, nil
}

// leadCommit is a commit a success brings, with its timestamp (unix
// milliseconds; not valid when not known).
type leadCommit struct {
	sha string
	ts  sql.NullInt64
}

// leadCommits lists the commits that a success of release releaseID (of
// commit head) brings to env, whose lead watermark is watermark (see
// leadPlan), each once.
func leadCommits(ctx context.Context, tx *sql.Tx, repoID int64, env string, releaseID int64, head string, watermark int64) ([]leadCommit, error) {
	p, err := planLead(ctx, tx, repoID, env, releaseID, head, watermark)
	if err != nil || p.nothing {
		return nil, err
	}
	if p.base != "" {
		var status string
		err := tx.QueryRowContext(ctx, `SELECT status FROM lead_compares WHERE release_id = ? AND base_sha = ? AND state = 'compared'`,
			releaseID, p.base).Scan(&status)
		if err == nil {
			with := int64(0)
			if p.first != 0 && (status == "ahead" || status == "identical") {
				with = p.first
			}
			return queryLeadCommits(ctx, tx, `SELECT sha, MIN(`+commitTime("timestamp", "pushed_at")+`) FROM (
					SELECT l.sha, l.timestamp, r.pushed_at FROM lead_compare_commits l JOIN releases r ON r.id = l.release_id
					WHERE l.release_id = ? AND l.base_sha = ?
					UNION ALL
					SELECT c.sha, c.timestamp, r.pushed_at FROM release_commits c JOIN releases r ON r.id = c.release_id
					WHERE c.release_id = ? AND (NOT r.baseline OR c.sha = r.sha))
				GROUP BY sha`, releaseID, p.base, with)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return nil, err
		}
		// Given up (or not asked: a success recorded otherwise than
		// through the engine): what the chain tells.
	}
	// A baseline release brings its own commit, not the history it lists.
	return queryLeadCommits(ctx, tx, `WITH RECURSIVE chain(id) AS (
			SELECT id FROM releases WHERE id = ? AND id > ?
			UNION ALL
			SELECT r.parent_id FROM releases r JOIN chain ON r.id = chain.id WHERE r.parent_id > ?)
		SELECT c.sha, MIN(`+commitTime("c.timestamp", "r.pushed_at")+`) FROM release_commits c JOIN releases r ON r.id = c.release_id
		WHERE c.release_id IN (SELECT id FROM chain) AND (NOT r.baseline OR c.sha = r.sha)
		GROUP BY c.sha`,
		releaseID, watermark, p.stop)
}

// commitTime is the SQL of a commit's time for its lead time: its
// timestamp (none when 0), but no later than the push that brought it
// (pushed, in the release that lists it): a commit dated after it, its
// committer's clock ahead, existed by then. Measured from its own date it
// would be left out where the success came before that date, and counted
// as faster than it was in every environment after.
func commitTime(timestamp, pushed string) string {
	return fmt.Sprintf("CASE WHEN %[1]s > 0 AND %[2]s > 0 THEN MIN(%[1]s, %[2]s) WHEN %[1]s > 0 THEN %[1]s END", timestamp, pushed)
}

func queryLeadCommits(ctx context.Context, tx *sql.Tx, query string, args ...any) ([]leadCommit, error) {
	return queryRows(ctx, tx, func(rows *sql.Rows, c *leadCommit) error { return rows.Scan(&c.sha, &c.ts) }, query, args...)
}

// LeadCompare returns the comparison a success of deployment d needs from
// GitHub for its lead times (see leadPlan), unless it is recorded already
// — made, or given up — or not needed: d does not count in the metrics
// (see pipeline.Deployment.Counts), has succeeded already, or its release is not newer than
// the environment's newest success (a success heard of late brings no
// commit), or the chain of releases tells the commits.
func (db *DB) LeadCompare(ctx context.Context, d *pipeline.Deployment) (*pipeline.LeadCompare, error) {
	tx, err := db.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var releaseID, succeeded, watermark int64
	var env, head string
	var repoID int64
	var counts bool
	err = tx.QueryRowContext(ctx, `SELECT COALESCE(d.release_id, 0), `+countedSQL+`, d.repository_id, d.environment, d.sha, d.succeeded_at
		FROM deployments d WHERE d.id = ?`, d.ID).Scan(&releaseID, &counts, &repoID, &env, &head, &succeeded)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil || releaseID == 0 || !counts || succeeded != 0 {
		return nil, err
	}
	err = tx.QueryRowContext(ctx, `SELECT lead_watermark FROM environment_state WHERE repository_id = ? AND environment = ?`,
		repoID, env).Scan(&watermark)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	if releaseID <= watermark {
		return nil, nil
	}
	p, err := planLead(ctx, tx, repoID, env, releaseID, head, watermark)
	if err != nil || p.base == "" {
		return nil, err
	}
	lc := &pipeline.LeadCompare{ReleaseID: releaseID, Base: p.base, Head: head}
	var state string
	err = tx.QueryRowContext(ctx, `SELECT state, attempts FROM lead_compares WHERE release_id = ? AND base_sha = ?`,
		releaseID, p.base).Scan(&state, &lc.Attempts)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return lc, nil
	case err != nil:
		return nil, err
	case state != "failing":
		return nil, nil
	}
	return lc, nil
}

// SaveLeadCompare records GitHub's comparison lc, cmp: the commits a
// success of lc's release brings to an environment whose newest success
// is of lc.Base.
func (db *DB) SaveLeadCompare(ctx context.Context, lc *pipeline.LeadCompare, cmp pipeline.Comparison) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO lead_compares (release_id, base_sha, state, status, updated_at)
			VALUES (?, ?, 'compared', ?, ?)
			ON CONFLICT (release_id, base_sha) DO UPDATE SET state = excluded.state, status = excluded.status, updated_at = excluded.updated_at`,
			lc.ReleaseID, lc.Base, cmp.Status, millis(db.Now()))
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM lead_compare_commits WHERE release_id = ? AND base_sha = ?`, lc.ReleaseID, lc.Base); err != nil {
			return err
		}
		ins, err := tx.PrepareContext(ctx, `INSERT INTO lead_compare_commits (release_id, base_sha, position, sha, timestamp) VALUES (?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer ins.Close()
		for i, c := range cmp.Commits {
			if _, err := ins.ExecContext(ctx, lc.ReleaseID, lc.Base, i, c.SHA, millis(c.Timestamp)); err != nil {
				return err
			}
		}
		return nil
	})
}

// LeadCompareFailed counts a failed request for comparison lc, keeping
// reason; giveUp: no further request is made.
func (db *DB) LeadCompareFailed(ctx context.Context, lc *pipeline.LeadCompare, reason string, giveUp bool) error {
	state := "failing"
	if giveUp {
		state = "given_up"
	}
	return db.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO lead_compares (release_id, base_sha, state, attempts, note, updated_at)
			VALUES (?, ?, ?, 1, ?, ?)
			ON CONFLICT (release_id, base_sha) DO UPDATE SET state = excluded.state, attempts = attempts + 1,
				note = excluded.note, updated_at = excluded.updated_at
			WHERE state = 'failing'`,
			lc.ReleaseID, lc.Base, state, reason, millis(db.Now()))
		return err
	})
}
