package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// Migration 0006 rebuilds the releases table that deployments and commits
// refer to: a database written before it keeps every release, its commits
// and deployments under the same IDs, with foreign keys intact and enforced
// afterwards, and a commit can then be released again.
func TestReleasePerPushMigrationKeepsTheLedger(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lastmile.db")
	db, err := openUpTo(ctx, path, 5)
	if err != nil {
		t.Fatal(err)
	}
	repo := pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}
	cfg, err := pipeline.ParseConfig([]byte("environments:\n  - name: test\n  - name: production\n"))
	if err != nil {
		t.Fatal(err)
	}
	const c1, c2 = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1", "c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2"
	// The ledger as version 5 wrote it (SQL of that schema: this version's
	// code expects the later columns).
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO repositories (id, full_name, installation_id, updated_at) VALUES (42, 'acme/shop', 7, ?)`, []any{now}},
		{`INSERT INTO releases (repository_id, sha, ref, pusher, pushed_at, delivery_id, config, state, created_at, updated_at, parent_id)
			VALUES (42, ?, 'refs/heads/main', 'octocat', ?, 'd1', ?, 'active', ?, ?, 0)`, []any{c1, now, string(cfgJSON), now, now}},
		{`INSERT INTO release_commits (release_id, position, sha, author, timestamp, title) VALUES (1, 0, ?, 'octocat', ?, 'one')`, []any{c1, now}},
		{`INSERT INTO deployments (repository_id, release_id, environment, stage, sha, origin, github_id, state, attempts, created_at)
			VALUES (42, 1, 'test', 0, ?, 'lastmile', 1001, 'created', 1, ?)`, []any{c1, now}},
	} {
		if _, err := db.write.ExecContext(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	first := &pipeline.Release{ID: 1}
	// Release IDs were handed out up to 100 (releases are never deleted
	// today, but IDs must never be reused).
	if _, err := db.write.ExecContext(ctx, `UPDATE sqlite_sequence SET seq = 100 WHERE name = 'releases'`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db, err = Open(ctx, path)
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	defer db.Close()
	rel, err := db.ReleaseOf(ctx, repo.ID, c1)
	if err != nil || rel.ID != first.ID || rel.DeliveryID != "d1" || rel.Config == nil || rel.State != pipeline.ReleaseActive {
		t.Fatalf("release after the migration: %+v, %v; want #%d as it was", rel, err, first.ID)
	}
	d, err := db.Deployment(ctx, 1001)
	if err != nil || d.ReleaseID != first.ID {
		t.Fatalf("deployment after the migration: %+v, %v", d, err)
	}
	rec, err := db.Audit(ctx, "acme/shop", c1)
	if err != nil || len(rec.Commits) != 1 || rec.Commits[0].Title != "one" {
		t.Fatalf("audit after the migration: %+v, %v", rec, err)
	}
	var on int
	if err := db.write.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&on); err != nil || on != 1 {
		t.Errorf("foreign keys after migrating: %d, %v; want on", on, err)
	}
	if _, err := db.write.ExecContext(ctx, `INSERT INTO release_commits (release_id, position, sha, author, timestamp, title)
		VALUES (999, 0, 'x', 'x', 0, 'x')`); err == nil {
		t.Error("a commit of a release that does not exist was stored: foreign keys are not enforced")
	}

	// c2, then the branch rolled back to c1: a second release of c1, with
	// an ID after every earlier one.
	second := &pipeline.Release{Repo: repo, SHA: c2, Ref: "refs/heads/main", PushedAt: time.Now(), DeliveryID: "d2",
		Config: cfg, State: pipeline.ReleaseActive, ParentID: first.ID}
	again := &pipeline.Release{Repo: repo, SHA: c1, Ref: "refs/heads/main", PushedAt: time.Now(), DeliveryID: "d3",
		Config: cfg, State: pipeline.ReleaseActive}
	for _, r := range []*pipeline.Release{second, again} {
		if created, err := db.RecordRelease(ctx, r, nil); err != nil || !created {
			t.Fatalf("release of %s: created %v, %v", r.SHA[:2], created, err)
		}
	}
	if second.ID != 101 || again.ID != 102 {
		t.Errorf("release IDs after the migration: %d, %d; want 101, 102 (the sequence goes on)", second.ID, again.ID)
	}
	// The same push handled again finds its release: as the latest of its
	// commit, or, once a newer release exists (a dead delivery retried), by
	// its delivery.
	dup := *again
	if created, err := db.RecordRelease(ctx, &dup, nil); err != nil || created || dup.ID != again.ID {
		t.Errorf("the rollback recorded again: created %v, #%d, %v; want #%d found", created, dup.ID, err, again.ID)
	}
	newer := &pipeline.Release{Repo: repo, SHA: c2, Ref: "refs/heads/main", PushedAt: time.Now(), DeliveryID: "d4",
		Config: cfg, State: pipeline.ReleaseActive}
	if created, err := db.RecordRelease(ctx, newer, nil); err != nil || !created {
		t.Fatalf("release of c2 again: created %v, %v", created, err)
	}
	dup = *again
	if created, err := db.RecordRelease(ctx, &dup, nil); err != nil || created || dup.ID != again.ID {
		t.Errorf("the rollback recorded again after a newer release: created %v, #%d, %v; want #%d found", created, dup.ID, err, again.ID)
	}
}

// Migration 0009 records which commits have reached each environment, from
// the successful lastmile deployments already in the ledger: the first
// success that brought a commit is the one kept; a success brought the
// commits of the releases it builds on, back to one that succeeded there
// itself; and a deployment that did not succeed, or was not lastmile's,
// brought nothing.
func TestEnvironmentCommitsMigrationRecordsEarlierArrivals(t *testing.T) {
	ctx := context.Background()
	db := upgradedFrom(t, 8,
		`INSERT INTO repositories (id, full_name, installation_id, updated_at) VALUES (42, 'acme/shop', 7, 1)`,
		// Release 1 brought a and b; release 2 (a roll-forward) b again and
		// c; release 3 c again.
		`INSERT INTO releases (id, repository_id, sha, ref, pusher, pushed_at, delivery_id, config, state, created_at, updated_at)
			VALUES (1, 42, 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', 'refs/heads/main', 'o', 1, 'd1', '{}', 'completed', 1, 1),
			       (2, 42, 'cccccccccccccccccccccccccccccccccccccccc', 'refs/heads/main', 'o', 2, 'd2', '{}', 'completed', 2, 2),
			       (3, 42, 'cccccccccccccccccccccccccccccccccccccccc', 'refs/heads/main', 'o', 3, 'd3', '{}', 'active', 3, 3)`,
		`INSERT INTO release_commits (release_id, position, sha, author, timestamp, title) VALUES
			(1, 0, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'o', 1, 'a'), (1, 1, 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', 'o', 1, 'b'),
			(2, 0, 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', 'o', 1, 'b'), (2, 1, 'cccccccccccccccccccccccccccccccccccccccc', 'o', 2, 'c'),
			(3, 0, 'cccccccccccccccccccccccccccccccccccccccc', 'o', 2, 'c')`,
		// Production: release 2 succeeded at 2000 (its deployment created
		// after release 1's, which succeeded at 3000: the earlier success
		// wins for b); release 3 failed; an external deployment of c
		// succeeded at 1500 but is not lastmile's.
		`INSERT INTO deployments (id, repository_id, release_id, environment, stage, sha, origin, github_id, state, created_at, terminal_at, succeeded_at) VALUES
			(10, 42, 1, 'production', 0, 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', 'lastmile', 1010, 'success', 1, 3000, 3000),
			(11, 42, 2, 'production', 0, 'cccccccccccccccccccccccccccccccccccccccc', 'lastmile', 1011, 'success', 2, 2000, 2000),
			(12, 42, 3, 'production', 0, 'cccccccccccccccccccccccccccccccccccccccc', 'lastmile', 1012, 'failure', 3, 4000, 0),
			(13, 42, 3, 'staging', -1, 'cccccccccccccccccccccccccccccccccccccccc', 'external', 1013, 'success', 3, 1500, 1500)`,
		// Release 4 (d, building on 3) was superseded before production;
		// release 5 (e, building on 4) succeeded there at 5000 and brought
		// d with it — and not c again, which release 3 (whose own deploy
		// failed) built on release 2, where production got it.
		`UPDATE releases SET parent_id = 2 WHERE id = 3`,
		`INSERT INTO releases (id, repository_id, sha, ref, pusher, pushed_at, delivery_id, config, state, created_at, updated_at, parent_id)
			VALUES (4, 42, 'dddddddddddddddddddddddddddddddddddddddd', 'refs/heads/main', 'o', 4, 'd4', '{}', 'stopped', 4, 4, 3),
			       (5, 42, 'eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee', 'refs/heads/main', 'o', 5, 'd5', '{}', 'completed', 5, 5, 4)`,
		`INSERT INTO release_commits (release_id, position, sha, author, timestamp, title) VALUES
			(4, 0, 'dddddddddddddddddddddddddddddddddddddddd', 'o', 4, 'd'), (5, 0, 'eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee', 'o', 5, 'e')`,
		`INSERT INTO deployments (id, repository_id, release_id, environment, stage, sha, origin, github_id, state, created_at, terminal_at, succeeded_at) VALUES
			(14, 42, 5, 'production', 0, 'eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee', 'lastmile', 1014, 'success', 5, 5000, 5000)`,
	)
	rows, err := db.read.QueryContext(ctx, `SELECT environment, sha, deployment_id, reached_at FROM environment_commits
		WHERE repository_id = 42 ORDER BY environment, sha`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var env, sha string
		var dep, at int64
		if err := rows.Scan(&env, &sha, &dep, &at); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s #%d %d", env, sha[:1], dep, at))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{"production a #10 3000", "production b #11 2000", "production c #11 2000", "production d #14 5000", "production e #14 5000"}
	if !slices.Equal(got, want) {
		t.Errorf("environment_commits after the migration:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// foreignKeyCheck, run before a migration commits, finds a row that refers
// to a missing one.
func TestForeignKeyCheckFindsDanglingRows(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	conn, err := db.write.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "PRAGMA foreign_keys = OFF"); err != nil {
		t.Fatal(err)
	}
	defer conn.ExecContext(ctx, "PRAGMA foreign_keys = ON")
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := foreignKeyCheck(ctx, tx); err != nil {
		t.Fatalf("a fresh database: %v", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO release_commits (release_id, position, sha, author, timestamp, title)
		VALUES (999, 0, 'x', 'x', 0, 'x')`); err != nil {
		t.Fatal(err)
	}
	if err := foreignKeyCheck(ctx, tx); err == nil || !strings.Contains(err.Error(), "release_commits") {
		t.Errorf("a commit of a missing release: %v, want an error naming release_commits", err)
	}
}

// Migration 0013 rebuilds protection_decisions to let a request wait: the
// decisions recorded before keep their IDs and answers, a decision can then
// be recorded as waiting and replaced once, and an answer already given is
// never replaced.
func TestProtectionWaitingMigrationKeepsTheDecisions(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lastmile.db")
	db, err := openUpTo(ctx, path, 12)
	if err != nil {
		t.Fatal(err)
	}
	const sha = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1"
	if _, err := db.write.ExecContext(ctx, `INSERT INTO protection_decisions (repository_id, delivery_id, run_id, environment,
		sha, state, comment, decided_at, posted) VALUES (42, 'rule-1', 66, 'staging', ?, 'rejected', 'not proven', 1000, 1)`, sha); err != nil {
		t.Fatal(err)
	}
	if _, err := db.write.ExecContext(ctx, `UPDATE sqlite_sequence SET seq = 50 WHERE name = 'protection_decisions'`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db, err = Open(ctx, path)
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	defer db.Close()
	repo := pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}
	old, err := db.ProtectionDecision(ctx, pipeline.ProtectionRuleRequest{DeliveryID: "rule-1"})
	if err != nil || old.ID != 1 || old.State != pipeline.ProtectionRejected || !old.Posted || old.Comment != "not proven" {
		t.Fatalf("decision after the migration: %+v, %v", old, err)
	}
	decide := func(id, state string) *pipeline.ProtectionDecision {
		t.Helper()
		d := &pipeline.ProtectionDecision{Repo: repo, DeliveryID: id, RunID: 77, Environment: "staging", SHA: sha,
			State: state, Comment: state, DecidedAt: time.Now()}
		if err := db.RecordProtectionDecision(ctx, d); err != nil {
			t.Fatal(err)
		}
		got, err := db.ProtectionDecision(ctx, pipeline.ProtectionRuleRequest{DeliveryID: id})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if d := decide("rule-2", pipeline.ProtectionWaiting); d.ID != 51 || d.State != pipeline.ProtectionWaiting {
		t.Errorf("waiting decision: #%d %s; want #51 waiting (IDs go on)", d.ID, d.State)
	}
	if w, err := db.WaitingProtectionDecisions(ctx, repo, sha); err != nil || len(w) != 1 || w[0].DeliveryID != "rule-2" {
		t.Errorf("waiting decisions: %+v, %v; want rule-2", w, err)
	}
	if d := decide("rule-2", pipeline.ProtectionApproved); d.ID != 51 || d.State != pipeline.ProtectionApproved {
		t.Errorf("decided after waiting: #%d %s; want #51 approved", d.ID, d.State)
	}
	if d := decide("rule-2", pipeline.ProtectionRejected); d.State != pipeline.ProtectionApproved {
		t.Errorf("an answer was replaced: %s", d.State)
	}
	if d := decide("rule-1", pipeline.ProtectionWaiting); d.State != pipeline.ProtectionRejected {
		t.Errorf("an answer given before the migration was replaced: %s", d.State)
	}
	if w, err := db.WaitingProtectionDecisions(ctx, repo, sha); err != nil || len(w) != 0 {
		t.Errorf("waiting decisions after the answer: %+v, %v; want none", w, err)
	}
	if _, err := db.write.ExecContext(ctx, `UPDATE protection_decisions SET state = 'maybe' WHERE id = 1`); err == nil {
		t.Error("state 'maybe' stored: the CHECK was lost in the rebuild")
	}
}

// Migration 0018 makes environment names compare without case in
// environment_state and environment_commits, as on GitHub. A database that
// holds an environment under two spellings (a configuration respelled it
// in case) keeps one row of each: the live spelling (else the one with the
// latest success), the latest watermark and success, the restore clock of
// a failure after that success, and each commit's first arrival.
func TestEnvironmentNocaseMigrationMergesSpellings(t *testing.T) {
	ctx := context.Background()
	db := upgradedFrom(t, 17,
		`INSERT INTO repositories (id, full_name, installation_id, updated_at) VALUES (42, 'acme/shop', 7, 1), (43, 'acme/cart', 7, 1)`,
		`INSERT INTO deployments (id, repository_id, environment, stage, sha, origin, state, created_at) VALUES
			(10, 42, 'Production', 0, 'a', 'lastmile', 'success', 1), (11, 42, 'production', 0, 'b', 'lastmile', 'success', 2),
			(12, 42, 'staging', 0, 'a', 'lastmile', 'success', 1)`,
		// acme/shop: Production, retired, succeeded last at 5000; production
		// (the configuration's now) succeeded at 4000 and failed at 6000.
		// acme/cart: neither spelling live, Staging's success the latest;
		// STAGING's failure was before it.
		`INSERT INTO environment_state (repository_id, environment, repository, production, lead_watermark, failing_since,
			last_success_at, retired) VALUES
			(42, 'Production', 'acme/shop', 0, 3, 0, 5000, 1),
			(42, 'production', 'acme/shop', 1, 5, 6000, 4000, 0),
			(42, 'staging', 'acme/shop', 0, 5, 0, 3000, 0),
			(43, 'STAGING', 'acme/cart', 0, 4, 3500, 3000, 1),
			(43, 'Staging', 'acme/cart', 0, 2, 0, 7000, 1)`,
		`INSERT INTO environment_commits (repository_id, environment, sha, deployment_id, reached_at) VALUES
			(42, 'Production', 'a', 10, 3000), (42, 'production', 'a', 11, 4000), (42, 'production', 'b', 11, 4000),
			(42, 'staging', 'a', 12, 1000)`,
	)
	rows := func(q string) []string {
		t.Helper()
		r, err := db.read.QueryContext(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		cols, _ := r.Columns()
		var out []string
		for r.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := r.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			out = append(out, strings.TrimSpace(fmt.Sprintln(vals...)))
		}
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	got := rows(`SELECT repository_id, environment, repository, production, lead_watermark, failing_since, last_success_at, retired
		FROM environment_state ORDER BY repository_id, environment`)
	want := []string{
		"42 production acme/shop 1 5 6000 5000 0",
		"42 staging acme/shop 0 5 0 3000 0",
		"43 Staging acme/cart 0 4 0 7000 1",
	}
	if !slices.Equal(got, want) {
		t.Errorf("environment_state after the migration:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	got = rows(`SELECT repository_id, environment, sha, deployment_id, reached_at FROM environment_commits ORDER BY repository_id, environment, sha`)
	want = []string{"42 Production a 10 3000", "42 production b 11 4000", "42 staging a 12 1000"}
	if !slices.Equal(got, want) {
		t.Errorf("environment_commits after the migration:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Another spelling is the same environment from now on.
	for _, q := range []string{
		`INSERT INTO environment_state (repository_id, environment, repository) VALUES (42, 'PRODUCTION', 'acme/shop')`,
		`INSERT INTO environment_commits (repository_id, environment, sha, deployment_id, reached_at) VALUES (42, 'PRODUCTION', 'b', 11, 1)`,
	} {
		if _, err := db.write.ExecContext(ctx, q); err == nil {
			t.Errorf("%s: stored, want a conflict with the environment's other spelling", q)
		}
	}
	// The restore clock reads an environment's deployments in any case by
	// its index.
	plan := rows(`EXPLAIN QUERY PLAN SELECT s.id FROM deployment_statuses s JOIN deployments d ON d.id = s.deployment_id
		WHERE d.repository_id = 42 AND d.environment = 'production' COLLATE NOCASE AND d.origin = 'lastmile' AND s.state = 'success'`)
	if !strings.Contains(strings.Join(plan, " | "), "deployments_reached (repository_id=? AND environment=?)") {
		t.Errorf("query plan of an environment's successes: %v, want the deployments_reached index on repository and environment", plan)
	}
}

// Migration 0019 marks the deployments a re-run deploys again at the time
// of the migration — the newest in_progress after the newest final status,
// in GitHub's order — so that they hold their environment, have a
// protection-rule request wait, and are seen by the sweep when their hold
// ends; a first attempt's start heard of after its end, and a re-run that
// ended (with a status lastmile recorded alone too), are not.
func TestRerunMigrationMarksTheRerunsInProgress(t *testing.T) {
	ctx := context.Background()
	started := time.Now().Add(-time.Hour)
	db := upgradedFrom(t, 18,
		`INSERT INTO repositories (id, full_name, installation_id, updated_at) VALUES (42, 'acme/shop', 7, 1)`,
		`INSERT INTO releases (id, repository_id, sha, ref, pushed_at, config, state, created_at, updated_at) VALUES
			(1, 42, 'a', 'refs/heads/main', 1, '{}', 'stopped', 1, 1), (2, 42, 'b', 'refs/heads/main', 1, '{}', 'stopped', 1, 1),
			(3, 42, 'c', 'refs/heads/main', 1, '{}', 'stopped', 1, 1), (4, 42, 'd', 'refs/heads/main', 1, '{}', 'active', 1, 1)`,
		`INSERT INTO deployments (id, repository_id, release_id, environment, stage, sha, origin, github_id, state, created_at) VALUES
			(10, 42, 1, 'staging', 1, 'a', 'lastmile', 100, 'failure', 1),
			(11, 42, 2, 'production', 2, 'b', 'lastmile', 101, 'failure', 1),
			(12, 42, 3, 'test', 0, 'c', 'lastmile', 102, 'success', 1)`,
		// 10: started, failed, re-run in progress. 11: its start delivered
		// after its failure. 12: succeeded, re-run, which lastmile ended
		// with a failure GitHub did not take.
		fmt.Sprintf(`INSERT INTO deployment_statuses (id, deployment_id, github_id, state, created_at) VALUES
			(1, 10, 1001, 'in_progress', 1), (2, 10, 1002, 'failure', 2), (3, 10, 1003, 'in_progress', %d),
			(4, 11, 1005, 'failure', 2), (5, 11, 1004, 'in_progress', 1),
			(6, 12, 1006, 'in_progress', 1), (7, 12, 1007, 'success', 2), (8, 12, 1008, 'in_progress', 3),
			(9, 12, NULL, 'failure', 4)`, millis(started)),
	)
	rerun := column[int64](t, db, `SELECT id FROM deployments WHERE rerun = 1 ORDER BY id`)
	if !slices.Equal(rerun, []int64{10}) {
		t.Errorf("deployments marked as re-run in progress: %v; want [10]", rerun)
	}
	if held, err := db.HeldBy(ctx, 42, "staging"); err != nil || held != 1 {
		t.Errorf("staging held by release %d (%v); want 1, whose re-run deploys there", held, err)
	}
	if run, err := db.Unfinished(ctx, 42, "a", "staging"); err != nil || !run {
		t.Errorf("a's staging deployment unfinished: %v (%v); want true", run, err)
	}
	if run, err := db.Unfinished(ctx, 42, "b", "production"); err != nil || run {
		t.Errorf("b's production deployment unfinished: %v (%v); want false", run, err)
	}
	ended := started.Add(pipeline.HoldRunning)
	if repos, err := db.HoldEnded(ctx, ended.Add(-time.Minute), ended.Add(time.Minute)); err != nil || len(repos) != 1 || repos[0].ID != 42 {
		t.Errorf("holds ended around %v: %+v (%v); want acme/shop's", ended, repos, err)
	}
}

// Migration 0023 starts the live-since time of the live environments that
// never succeeded at the migration, so that upgrading raises no alert at
// once for them; one that succeeded keeps counting from its last success
// (an alert due stays due); a retired one has none.
func TestLiveSinceMigrationStartsTheNeverSucceeded(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lastmile.db")
	db, err := openUpTo(ctx, path, 22)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO repositories (id, full_name, installation_id, updated_at) VALUES (42, 'acme/shop', 7, 1)`,
		`INSERT INTO environment_state (repository_id, environment, repository, production, last_success_at, retired) VALUES
			(42, 'production', 'acme/shop', 1, 0, 0), (42, 'staging', 'acme/shop', 0, 5000, 0), (42, 'qa', 'acme/shop', 0, 0, 1)`,
	} {
		if _, err := db.write.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	before := time.Now().Add(-time.Second).UnixMilli()
	if db, err = Open(ctx, path); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	defer db.Close()
	since := map[string]int64{}
	r, err := db.read.QueryContext(ctx, `SELECT environment, live_since FROM environment_state`)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for r.Next() {
		var env string
		var at int64
		if err := r.Scan(&env, &at); err != nil {
			t.Fatal(err)
		}
		since[env] = at
	}
	if since["production"] < before || since["production"] > time.Now().UnixMilli() || since["staging"] != 0 || since["qa"] != 0 {
		t.Errorf("live since after the migration: %v; want production's at the migration (after %d), staging (succeeded) and qa (retired) 0", since, before)
	}
}

// Writable: after the intake's commit failed, the inbox is reported unable
// to store deliveries while a write fails too (the write connection stuck,
// here), and able again once a write goes through.
func TestWritableAfterAFailedCommit(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	if err := db.Writable(ctx); err != nil {
		t.Fatalf("a new database: %v, want writable", err)
	}
	// A commit that fails (here a state the schema refuses; on a full
	// disk, any).
	if _, err := db.Accept(ctx, &pipeline.Delivery{ID: "bad", Event: "push", State: "bogus"}, "push", "accepted"); err == nil {
		t.Fatal("Accept of a delivery the schema refuses: no error")
	}
	conn, err := db.write.Conn(ctx) // a writer that does not let go
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := db.Writable(short); err == nil {
		t.Error("after a failed commit, with no write possible: writable, want an error")
	}
	conn.Close()
	if err := db.Writable(ctx); err != nil {
		t.Errorf("once a write goes through: %v, want writable", err)
	}
	if db.intake.failing.Load() != 0 {
		t.Error("still failing after a write went through")
	}
}

// Writable on a full disk (here the database's page limit, which SQLite
// answers as a full disk does): a write of a few bytes still fits in what
// is left, a delivery does not; the probe writes as much as the failed
// commit held, and reports the inbox unable to store until that fits.
func TestWritableOnAFullDisk(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	var pages int64
	if err := db.write.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	limit := func(n int64) {
		t.Helper()
		if _, err := db.write.ExecContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", n)); err != nil {
			t.Fatal(err)
		}
	}
	limit(pages + 4) // room for a settings row, not for a 100 KB body
	// (kept whole: it does not compress)
	body := []byte(`{"pad":"` + string(noise(100<<10)) + `"}`)
	if _, err := db.Accept(ctx, &pipeline.Delivery{ID: "big", Event: "push", Body: body}, "push", "accepted"); err == nil {
		t.Fatal("Accept of a 100 KB delivery on a full disk: no error")
	}
	if err := db.Writable(ctx); err == nil {
		t.Error("on a full disk that still fits a few bytes: writable, want an error")
	}
	limit(pages + 1000) // space is back
	if err := db.Writable(ctx); err != nil {
		t.Errorf("once space is back: %v, want writable", err)
	}
	if _, err := db.Accept(ctx, &pipeline.Delivery{ID: "big", Event: "push", Body: body}, "push", "accepted"); err != nil {
		t.Errorf("Accept once space is back: %v", err)
	}
}

// Migration 0028 marks as baselines the first releases recorded before
// 0026 whose push created the branch (its stored body says before is all
// zeros) — not one whose push followed a commit, nor one whose body was
// pruned (nothing known) — and records the history a baseline lists as
// having reached every environment its commit reached.
func TestBaselineBackfillMigration(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lastmile.db")
	db, err := openUpTo(ctx, path, 27)
	if err != nil {
		t.Fatal(err)
	}
	sha := func(c byte) string { return strings.Repeat(string(c), 40) }
	zeros := sha('0')
	for _, d := range []struct{ id, repo, before string }{
		{"d-created", "acme/new", zeros},
		{"d-followed", "acme/old", sha('9')},
		{"d-later", "acme/new", sha('c')},
	} {
		body := fmt.Sprintf(`{"ref":"refs/heads/main","before":%q,"repository":{"id":1,"full_name":%q},"installation":{"id":7}}`, d.before, d.repo)
		if _, err := db.Accept(ctx, &pipeline.Delivery{ID: d.id, Event: "push", Repository: d.repo, State: pipeline.DeliveryPending}, "push", "accepted"); err != nil {
			t.Fatal(err)
		}
		// Kept as received, as lastmile kept bodies before it compressed
		// them (after this migration).
		if _, err := db.write.ExecContext(ctx, `INSERT INTO delivery_bodies (seq, body) SELECT seq, ? FROM deliveries WHERE delivery_id = ?`, []byte(body), d.id); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		`INSERT INTO repositories (id, full_name, installation_id, updated_at) VALUES (42, 'acme/new', 7, 1), (43, 'acme/old', 7, 1), (44, 'acme/pruned', 7, 1)`,
		// acme/new: its first release (c, from the push that created main,
		// with history a and b) reached test; a later release, d.
		// acme/old: its first push followed a commit. acme/pruned: its
		// push's body is gone.
		`INSERT INTO releases (id, repository_id, sha, ref, pusher, pushed_at, delivery_id, config, state, created_at, updated_at) VALUES
			(1, 42, '` + sha('c') + `', 'refs/heads/main', 'o', 1, 'd-created', '{}', 'active', 1, 1),
			(2, 43, '` + sha('e') + `', 'refs/heads/main', 'o', 1, 'd-followed', '{}', 'active', 1, 1),
			(3, 44, '` + sha('f') + `', 'refs/heads/main', 'o', 1, 'd-pruned', '{}', 'active', 1, 1),
			(4, 42, '` + sha('d') + `', 'refs/heads/main', 'o', 2, 'd-later', '{}', 'active', 2, 2)`,
		`INSERT INTO release_commits (release_id, position, sha, author, timestamp, title) VALUES
			(1, 0, '` + sha('a') + `', 'o', 1, 'a'), (1, 1, '` + sha('b') + `', 'o', 1, 'b'), (1, 2, '` + sha('c') + `', 'o', 1, 'c'),
			(2, 0, '` + sha('e') + `', 'o', 1, 'e'), (3, 0, '` + sha('f') + `', 'o', 1, 'f'), (4, 0, '` + sha('d') + `', 'o', 2, 'd')`,
		`INSERT INTO deployments (id, repository_id, release_id, environment, stage, sha, origin, github_id, state, created_at, terminal_at, succeeded_at) VALUES
			(10, 42, 1, 'test', 0, '` + sha('c') + `', 'lastmile', 1010, 'success', 1, 1000, 1000)`,
		`INSERT INTO environment_commits (repository_id, environment, sha, deployment_id, reached_at) VALUES (42, 'test', '` + sha('c') + `', 10, 1000)`,
	} {
		if _, err := db.write.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	if db, err = Open(ctx, path); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	defer db.Close()
	baselines := column[int64](t, db, `SELECT id FROM releases WHERE baseline ORDER BY id`)
	if !slices.Equal(baselines, []int64{1}) {
		t.Errorf("baselines after the migration: %v, want [1] (acme/new's first release only)", baselines)
	}
	reached := column[string](t, db, `SELECT environment || ' ' || substr(sha, 1, 1) || ' #' || deployment_id || ' ' || reached_at
		FROM environment_commits WHERE repository_id = 42 ORDER BY environment, sha`)
	if want := []string{"test a #10 1000", "test b #10 1000", "test c #10 1000"}; !slices.Equal(reached, want) {
		t.Errorf("environment_commits after the migration: %v, want %v", reached, want)
	}
}

// column reads the one column of query's rows.
func column[T any](t *testing.T, db *DB, query string, args ...any) []T {
	t.Helper()
	rows, err := db.read.QueryContext(context.Background(), query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		var v T
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Migration 0042 counts the deployments workflows own from the upgrade
// on: a job's own deployment of a run on push (its event from the run's
// webhook) is no twin of lastmile's, and counts if it has not ended and
// its job asked lastmile as the environment's protection rule; one that
// ended keeps out of the counters, its success being the environment's
// last and its release the lead-time watermark. A job's twin in a run on
// the deployment event, one whose run lastmile never heard of, and one
// whose job did not ask lastmile (a CI job in an environment lastmile
// does not gate), are left as they were.
func TestWorkflowOwnedMigration(t *testing.T) {
	db := upgradedFrom(t, 41,
		`INSERT INTO repositories (id, full_name, installation_id, updated_at) VALUES (42, 'acme/shop', 7, 1)`,
		`INSERT INTO releases (id, repository_id, sha, ref, pushed_at, config, state, created_at, updated_at) VALUES
			(1, 42, 'a', 'refs/heads/main', 1, '{}', 'active', 1, 1), (2, 42, 'b', 'refs/heads/main', 1, '{}', 'active', 1, 1)`,
		`INSERT INTO environment_state (repository_id, environment, repository, lead_watermark, last_success_at) VALUES
			(42, 'test', 'acme/shop', 1, 3000), (42, 'staging', 'acme/shop', 0, 0), (42, 'production', 'acme/shop', 0, 0)`,
		`INSERT INTO workflow_runs (run_id, repository_id, event) VALUES (500, 42, 'push'), (501, 42, 'deployment')`,
		// lastmile was asked for run 500's jobs in test and staging (not
		// production), and for run 501's in production.
		`INSERT INTO protection_decisions (repository_id, delivery_id, run_id, environment, sha, state, comment, decided_at) VALUES
			(42, 'r1', 500, 'test', 'b', 'approved', '', 1), (42, 'r2', 500, 'Staging', 'b', 'approved', '', 1),
			(42, 'r3', 501, 'production', 'b', 'approved', '', 1)`,
		`INSERT INTO deployments (id, repository_id, release_id, environment, stage, sha, origin, github_id, state, run_id,
			twin_of, created_at, terminal_at, succeeded_at) VALUES
			(10, 42, 2, 'test', 0, 'b', 'lastmile', 100, 'created', 0, NULL, 1, 0, 0),
			(11, 42, 2, 'TEST', 0, 'b', 'external', 101, 'success', 500, 10, 1, 5000, 5000),
			(12, 42, 2, 'staging', 1, 'b', 'external', 102, 'in_progress', 500, NULL, 1, 0, 0),
			(13, 42, 2, 'production', 2, 'b', 'external', 103, 'success', 501, NULL, 1, 9000, 9000),
			(14, 42, 2, 'production', 2, 'b', 'external', 104, 'in_progress', 502, NULL, 1, 0, 0),
			(15, 42, NULL, 'staging', -1, 'z', 'external', 105, 'in_progress', 500, NULL, 1, 0, 0),
			(16, 42, 2, 'production', 2, 'b', 'external', 106, 'in_progress', 500, NULL, 1, 0, 0),
			(17, 42, 2, 'production', 2, 'b', 'external', 107, 'success', 500, NULL, 1, 9500, 9500)`,
	)
	if got := column[int64](t, db, `SELECT id FROM deployments WHERE workflow_owned = 1 ORDER BY id`); !slices.Equal(got, []int64{12}) {
		t.Errorf("deployments counted from now on: %v; want [12] (on push, lastmile asked, not ended)", got)
	}
	if got := column[int64](t, db, `SELECT id FROM deployments WHERE twin_of IS NOT NULL ORDER BY id`); len(got) != 0 {
		t.Errorf("twins: %v; want none (11's run is on push)", got)
	}
	if got := column[string](t, db, `SELECT id || ':' || run_event FROM deployments WHERE origin = 'external' ORDER BY id`); !slices.Equal(got,
		[]string{"11:push", "12:push", "13:deployment", "14:", "15:push", "16:push", "17:push"}) {
		t.Errorf("run events: %v", got)
	}
	got := column[string](t, db, `SELECT environment || ':' || lead_watermark || ':' || last_success_at FROM environment_state ORDER BY environment`)
	if !slices.Equal(got, []string{"production:0:0", "staging:0:0", "test:2:5000"}) {
		t.Errorf("environments (watermark, last success): %v; want test's moved by 11's success, no other (no job in production asked lastmile)", got)
	}
}

// upgradedFrom is a database that a lastmile at migration version wrote
// (stmts its rows), then opened by this one, which migrates it; closed
// when the test ends.
func upgradedFrom(t *testing.T, version int, stmts ...string) *DB {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lastmile.db")
	db, err := openUpTo(ctx, path, version)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range stmts {
		if _, err := db.write.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	if db, err = Open(ctx, path); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Migration 0043 keeps the decisions' deployment (0 for those recorded
// before), and judges again the deployments 0042 counted as a workflow's
// own that have not ended: only a job lastmile approved — and did not
// withdraw the approval of before GitHub took it — still counts; one that
// ended was counted already, and stays so.
func TestProtectionDecisionDeploymentMigration(t *testing.T) {
	db := upgradedFrom(t, 42,
		`INSERT INTO repositories (id, full_name, installation_id, updated_at) VALUES (42, 'acme/shop', 7, 1)`,
		`INSERT INTO releases (id, repository_id, sha, ref, pushed_at, config, state, created_at, updated_at) VALUES
			(2, 42, 'b', 'refs/heads/main', 1, '{}', 'active', 1, 1)`,
		`INSERT INTO protection_decisions (repository_id, delivery_id, run_id, environment, sha, state, comment, decided_at,
			posted, refused, withdrawn_at) VALUES
			(42, 'r1', 501, 'staging', 'b', 'approved', '', 1, 1, 0, NULL),
			(42, 'r2', 502, 'staging', 'b', 'waiting', '', 1, 0, 0, NULL),
			(42, 'r3', 503, 'staging', 'b', 'rejected', '', 1, 1, 0, NULL),
			(42, 'r4', 504, 'staging', 'b', 'approved', '', 1, 1, 0, 5),
			(42, 'r5', 505, 'Staging', 'b', 'approved', '', 1, 1, 1, 5),
			(42, 'r6', 506, 'staging', 'b', 'rejected', '', 1, 1, 0, NULL),
			(42, 'r7', 507, 'staging', 'b', 'approved', '', 1, 0, 0, 5)`,
		`INSERT INTO deployments (id, repository_id, release_id, environment, stage, sha, origin, github_id, state, run_id,
			run_event, workflow_owned, created_at, terminal_at, succeeded_at) VALUES
			(11, 42, 2, 'staging', 1, 'b', 'external', 101, 'in_progress', 501, 'push', 1, 1, 0, 0),
			(12, 42, 2, 'staging', 1, 'b', 'external', 102, 'queued', 502, 'push', 1, 1, 0, 0),
			(13, 42, 2, 'staging', 1, 'b', 'external', 103, 'queued', 503, 'push', 1, 1, 0, 0),
			(14, 42, 2, 'staging', 1, 'b', 'external', 104, 'queued', 504, 'push', 1, 1, 0, 0),
			(15, 42, 2, 'staging', 1, 'b', 'external', 105, 'in_progress', 505, 'push', 1, 1, 0, 0),
			(16, 42, 2, 'staging', 1, 'b', 'external', 106, 'failure', 506, 'push', 1, 1, 2, 0),
			(17, 42, 2, 'staging', 1, 'b', 'external', 107, 'in_progress', 507, 'push', 1, 1, 0, 0)`,
		`INSERT INTO deployment_statuses (deployment_id, github_id, state, created_at) VALUES (17, 1071, 'in_progress', 1)`,
	)
	if got := column[int64](t, db, `SELECT id FROM deployments WHERE workflow_owned = 1 ORDER BY id`); !slices.Equal(got, []int64{11, 16, 17}) {
		t.Errorf("counted after the migration: %v; want 11 (approved), 17 (withdrawn, but its job started: GitHub took the approval) and 16 (ended, counted); not 15 (withdrawn, the rejection refused: which answer GitHub took is not known, and the job has not started)", got)
	}
	if got := column[int64](t, db, `SELECT id FROM deployments WHERE terminal_at = 0 AND `+ownedSQL+` ORDER BY id`); !slices.Equal(got, []int64{11, 17}) {
		t.Errorf("owned now, of those not ended: %v; want what the migration kept counted", got)
	}
	if got := column[int64](t, db, `SELECT DISTINCT deployment_id FROM protection_decisions`); !slices.Equal(got, []int64{0}) {
		t.Errorf("the decisions' deployments: %v; want 0 (not known)", got)
	}
	if got := column[string](t, db, `SELECT name FROM sqlite_master WHERE name = 'deployments_workflow_owned_release'`); len(got) != 0 {
		t.Errorf("index %v still there", got)
	}
}
