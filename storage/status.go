package storage

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"

	"github.com/lastmile-app/lastmile/pipeline"
)

// Status says where each environment of the pipelines stands now: per
// repository (those lastmile knows by that name, or all for ""), in the
// order of its configuration, each environment it names — the release
// live there and lastmile's newest deployment there when that is of a
// newer release. A repository whose configuration was removed, and
// environments no longer named, are not listed (lastmile no longer
// deploys them); nor a repository never enrolled.
func (db *DB) Status(ctx context.Context, repository string) ([]pipeline.EnvironmentStatus, error) {
	tx, err := db.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	where, args := "", []any{}
	if repository != "" {
		ids, err := repositoriesNamed(ctx, tx, repository)
		if err != nil {
			return nil, err
		}
		where = " AND s.repository_id IN (?" + strings.Repeat(", ?", len(ids)-1) + ")"
		for _, id := range ids {
			args = append(args, id)
		}
	}
	type row struct {
		repoID, nameAt int64
		status         pipeline.EnvironmentStatus
		failing        int64
	}
	rows, err := tx.QueryContext(ctx, `SELECT s.repository_id, p.name_at, p.full_name, s.environment, s.production, s.failing_since
		FROM environment_state s JOIN repositories p ON p.id = s.repository_id
		WHERE NOT s.retired`+where+` ORDER BY p.full_name COLLATE NOCASE, s.repository_id`, args...)
	if err != nil {
		return nil, err
	}
	var all []row
	// Two repositories lastmile knows by one name (one deleted, or renamed
	// or transferred before lastmile heard of it, and another created or
	// renamed under that name): the one whose name came from the newest
	// event (the higher ID, the newer repository, on a tie) is the one by
	// that name now, as for the metrics' repository label.
	owner := map[string]row{}
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.repoID, &r.nameAt, &r.status.Repository, &r.status.Environment, &r.status.Production, &r.failing); err != nil {
			rows.Close()
			return nil, err
		}
		r.status.FailingSince = fromMillis(r.failing)
		all = append(all, r)
		name := strings.ToLower(r.status.Repository)
		if o, ok := owner[name]; !ok || r.nameAt > o.nameAt || r.nameAt == o.nameAt && r.repoID > o.repoID {
			owner[name] = r
		}
	}
	if err := closeRows(rows); err != nil {
		return nil, err
	}
	all = slices.DeleteFunc(all, func(r row) bool { return owner[strings.ToLower(r.status.Repository)].repoID != r.repoID })
	// Each repository's environments in its configuration's order (the
	// latest one read that was valid: that is the one that named them).
	order := map[int64]*pipeline.Config{}
	for _, r := range all {
		if _, ok := order[r.repoID]; ok {
			continue
		}
		rel, err := latestConfigured(ctx, tx, r.repoID)
		switch {
		case err != nil && !errors.Is(err, pipeline.ErrNotFound):
			return nil, err
		case err == nil && rel.Config != nil:
			order[r.repoID] = rel.Config
		default:
			order[r.repoID] = &pipeline.Config{}
		}
	}
	position := func(r row) int {
		if i := order[r.repoID].Index(r.status.Environment); i >= 0 {
			return i
		}
		return len(order[r.repoID].Environments) // not named there (a row of before): last
	}
	// The rows come by repository; sort each one's run.
	for start := 0; start < len(all); {
		end := start + 1
		for end < len(all) && all[end].repoID == all[start].repoID {
			end++
		}
		slices.SortStableFunc(all[start:end], func(a, b row) int { return cmp.Compare(position(a), position(b)) })
		start = end
	}
	out := make([]pipeline.EnvironmentStatus, 0, len(all))
	owns := map[int64]bool{} // a workflow owns deployments of the repository (most have none)
	for _, r := range all {
		if _, ok := owns[r.repoID]; !ok {
			var any bool
			if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM deployments WHERE repository_id = ? AND workflow_owned = 1)`,
				r.repoID).Scan(&any); err != nil {
				return nil, err
			}
			owns[r.repoID] = any
		}
		st := r.status
		if st.Live, err = liveIn(ctx, tx, r.repoID, st.Environment); err != nil {
			return nil, err
		}
		var after int64
		if st.Live != nil {
			after = st.Live.ReleaseID
		}
		if st.Latest, err = latestIn(ctx, tx, r.repoID, st.Environment, after, owns[r.repoID]); err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// liveIn is the newest release with a success in env that NewestSuccess
// counts (lastmile's deployment, or one a workflow run made), with that
// success, or nil.
func liveIn(ctx context.Context, q querier, repoID int64, env string) (*pipeline.Arrival, error) {
	return scanArrival(q.QueryRowContext(ctx, `SELECT release_id, sha, COALESCE(github_id, 0), succeeded_at FROM deployments
		WHERE repository_id = ?1 AND environment = ?2 COLLATE NOCASE AND succeeded_at > 0 AND release_id IS NOT NULL
		AND (origin = 'lastmile' OR run_id != 0)
		ORDER BY environment COLLATE NOCASE DESC, release_id DESC, origin = 'lastmile' DESC, succeeded_at LIMIT 1`,
		repoID, env))
}

// latestWhere picks latestIn's deployment of those that which says
// (lastmile's, or the workflows' own) — repository, environment, the
// release it must be newer than — by an index of those.
func latestWhere(which string) string {
	return `WHERE d.repository_id = ? AND d.environment = ? COLLATE NOCASE AND ` + which + `
	AND d.release_id > ?
	AND (d.state IN ('intent', 'waiting') AND EXISTS (SELECT 1 FROM releases r WHERE r.id = d.release_id AND r.state = 'active')
		OR ` + deployedThere + `)
	ORDER BY d.release_id DESC, d.id DESC LIMIT 1`
}

// latestIn is lastmile's (or a workflow's own) newest deployment in env of
// a release numbered above after, or nil: one being created or waiting for
// its commit's required contexts (its release still on its way), or one
// GitHub has, unless it was withdrawn (made inactive: its release
// superseded or stopped) before its deploy began — as History's
// environment filter reads "deployed to". Where a workflow owns the
// environment's deployments (owns: the repository has some a workflow
// owns), the newest its jobs made of that release, unless lastmile's has
// ended (lastmile's own never runs there).
func latestIn(ctx context.Context, q querier, repoID int64, env string, after int64, owns bool) (*pipeline.LatestDeployment, error) {
	d, err := oneDeployment(ctx, q, latestWhere(`d.origin = 'lastmile'`), repoID, env, after)
	if err != nil && !errors.Is(err, pipeline.ErrNotFound) {
		return nil, err
	}
	var owned *pipeline.Deployment
	if owns {
		owned, err = oneDeployment(ctx, q, latestWhere(`d.workflow_owned = 1`), repoID, env, after)
		if err != nil && !errors.Is(err, pipeline.ErrNotFound) {
			return nil, err
		}
	}
	// The newer release's; of one release, lastmile's once it has ended.
	if owned != nil && (d == nil || owned.ReleaseID > d.ReleaseID || owned.ReleaseID == d.ReleaseID && d.TerminalAt.IsZero()) {
		d = owned
	}
	if d == nil {
		return nil, nil
	}
	l := &pipeline.LatestDeployment{ReleaseID: d.ReleaseID, SHA: d.SHA, DeploymentID: d.GitHubID, Reason: d.Reason, Since: d.CreatedAt}
	if l.State, err = outcome(ctx, q, d); err != nil {
		return nil, err
	}
	if !d.TerminalAt.IsZero() {
		l.Since = d.TerminalAt
	}
	// Its newest status: since when it is in its state — the latest end of
	// one that ended more than once (a re-run of its job failed too) —, or
	// a re-run of its job under way after its end (queued again, waiting
	// for its reviewers, or deploying), which it is then.
	var newest string
	var newestAt int64
	err = q.QueryRowContext(ctx, `SELECT state, created_at FROM deployment_statuses WHERE deployment_id = ?
		ORDER BY created_at DESC, COALESCE(github_id, 0) DESC, id DESC LIMIT 1`, d.ID).Scan(&newest, &newestAt)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	switch at, state := fromMillis(newestAt), pipeline.DeploymentState(newest); {
	case err != nil || at.Before(l.Since):
	case !state.Terminal() && !d.TerminalAt.IsZero():
		l.State, l.Since = state, at
	case state == l.State || d.TerminalAt.IsZero():
		l.Since = at
	}
	if d.RunID != 0 {
		reviews, err := reviewsOf(ctx, q, d)
		if err != nil {
			return nil, err
		}
		if n := len(reviews); n > 0 {
			l.Review = &reviews[n-1]
		}
	}
	return l, nil
}
