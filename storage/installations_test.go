package storage

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// Migration 0020 adds the installations' states to a database written
// before it; its repositories and deliveries stay as they were, and an
// installation lastmile heard nothing of is unknown (taken to be active).
func TestInstallationsMigration(t *testing.T) {
	ctx := context.Background()
	db := upgradedFrom(t, 19,
		`INSERT INTO repositories (id, full_name, installation_id, updated_at) VALUES (42, 'acme/shop', 7, 1), (43, 'acme/api', 7, 1), (44, 'globex/web', 8, 1)`,
		`INSERT INTO deliveries (delivery_id, event, installation_id, repository_id, repository, received_at, state, next_attempt_at)
			VALUES ('d1', 'push', 7, 42, 'acme/shop', 1, 'pending', 0)`,
	)
	if _, err := db.Installation(ctx, 7); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("installation 7 before any event: %v, want ErrNotFound", err)
	}
	repos, err := db.InstallationRepos(ctx, 7)
	if err != nil || len(repos) != 2 || repos[0].FullName() != "acme/shop" || repos[1].FullName() != "acme/api" || repos[0].InstallationID != 7 {
		t.Errorf("repositories of installation 7: %+v (%v); want acme/shop and acme/api", repos, err)
	}
	since := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	if _, err := db.SetInstallation(ctx, pipeline.InstallationState{ID: 7, Account: "acme", State: pipeline.InstallationSuspended,
		Since: since, By: "alice"}); err != nil {
		t.Fatal(err)
	}
	st, err := db.Installation(ctx, 7)
	if err != nil || st.State != pipeline.InstallationSuspended || !st.Since.Equal(since) || st.By != "alice" || st.Account != "acme" {
		t.Errorf("installation 7: %+v (%v); want suspended by alice at %v", st, err, since)
	}
	var n int
	if err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'repositories_installation'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("index of the repositories by installation: %d (%v), want it", n, err)
	}
	var pending int
	if err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM deliveries WHERE state = 'pending' AND installation_id = 7`).Scan(&pending); err != nil || pending != 1 {
		t.Errorf("pending deliveries of installation 7 after the migration: %d (%v), want 1", pending, err)
	}
}

// An installation's state keeps its time and author while it stays in it
// (a redelivered event), and one that becomes active again makes due at
// once its pending deliveries that wait for later — and only those.
func TestSetInstallationWakesItsWaitingDeliveries(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return now }
	later := now.Add(time.Hour)
	type seed struct {
		id    string
		inst  int64
		repo  string
		state pipeline.DeliveryState
		wait  bool // postponed until later
	}
	repoIDs := map[string]int64{"acme/shop": 100, "acme/api": 101, "globex/web": 102, "acme/docs": 103}
	for _, s := range []seed{
		{"shop-waits", 7, "acme/shop", pipeline.DeliveryPending, true},
		{"api-waits", 7, "acme/api", pipeline.DeliveryPending, true},
		{"shop-behind", 7, "acme/shop", pipeline.DeliveryPending, false},
		{"other-installation", 8, "globex/web", pipeline.DeliveryPending, true},
		{"done", 7, "acme/docs", pipeline.DeliveryDone, false},
	} {
		d := &pipeline.Delivery{ID: s.id, Event: "push", InstallationID: s.inst, RepositoryID: repoIDs[s.repo], Repository: s.repo,
			State: s.state, Body: []byte(`{}`)}
		if _, err := db.Accept(ctx, d, "push", "accepted"); err != nil {
			t.Fatal(err)
		}
		if s.wait {
			got, err := db.GetDelivery(ctx, s.id)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.PostponeDelivery(ctx, got.Seq, "installation 7 is suspended", later); err != nil {
				t.Fatal(err)
			}
		}
	}
	due := func() []string {
		t.Helper()
		ds, _, err := db.NextWork(ctx, now, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, d := range ds {
			out = append(out, d.ID)
		}
		slices.Sort(out)
		return out
	}
	if got := due(); len(got) != 0 {
		t.Fatalf("due before the unsuspension: %v, want none (the queue heads wait)", got)
	}

	suspendedAt := now.Add(-time.Minute)
	for range 2 { // the second: GitHub redelivers the event
		woken, err := db.SetInstallation(ctx, pipeline.InstallationState{ID: 7, State: pipeline.InstallationSuspended, Since: suspendedAt, By: "alice"})
		if err != nil || woken != 0 {
			t.Fatalf("suspension: %d woken, %v; want none", woken, err)
		}
		now = now.Add(time.Second)
	}
	if st, _ := db.Installation(ctx, 7); !st.Since.Equal(suspendedAt) || st.By != "alice" {
		t.Errorf("after the redelivered suspension: %+v; want since %v by alice", st, suspendedAt)
	}

	woken, err := db.SetInstallation(ctx, pipeline.InstallationState{ID: 7, State: pipeline.InstallationActive, By: "bob"})
	if err != nil || woken != 2 {
		t.Fatalf("unsuspension: %d woken, %v; want 2 (the waiting deliveries of installation 7)", woken, err)
	}
	if got, want := due(), []string{"api-waits", "shop-waits"}; !slices.Equal(got, want) {
		t.Errorf("due after the unsuspension: %v, want %v (installation 8's still waits)", got, want)
	}
	if d, _ := db.GetDelivery(ctx, "shop-waits"); d.Attempts != 0 || d.Waits != 1 || d.State != pipeline.DeliveryPending {
		t.Errorf("shop-waits: %+v; want pending, no attempt, one wait", d)
	}
	if woken, err := db.SetInstallation(ctx, pipeline.InstallationState{ID: 7, State: pipeline.InstallationActive, By: "bob"}); err != nil || woken != 0 {
		t.Errorf("unsuspension redelivered: %d woken, %v; want nothing changed", woken, err)
	}
	if st, _ := db.Installation(ctx, 7); st.State != pipeline.InstallationActive || st.By != "bob" || !st.Since.Equal(now) {
		t.Errorf("installation 7: %+v; want active since %v by bob", st, now)
	}
}

// DropWork leaves nothing owed to GitHub for a repository: its intents are
// abandoned, its statuses to write and read-backs dropped; another
// repository's work stays.
func TestDropWork(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	for _, q := range []string{
		`INSERT INTO repositories (id, full_name, installation_id, updated_at) VALUES (42, 'acme/shop', 7, 1), (43, 'acme/api', 7, 1)`,
		`INSERT INTO releases (id, repository_id, sha, ref, pushed_at, config, state, created_at, updated_at) VALUES
			(1, 42, 'a', 'refs/heads/main', 1, '{}', 'stopped', 1, 1), (2, 42, 'b', 'refs/heads/main', 1, '{}', 'active', 1, 1),
			(3, 43, 'c', 'refs/heads/main', 1, '{}', 'active', 1, 1)`,
		`INSERT INTO deployments (id, repository_id, release_id, environment, stage, sha, origin, github_id, state, notify, notify_reason, read_back, created_at) VALUES
			(10, 42, 1, 'staging', 1, 'a', 'lastmile', 100, 'queued', 'inactive', 'superseded', 0, 1),
			(11, 42, 1, 'test', 0, 'a', 'lastmile', 101, 'inactive', '', '', 1, 1),
			(12, 42, 2, 'test', 0, 'b', 'lastmile', NULL, 'intent', '', '', 0, 1),
			(13, 43, 3, 'test', 0, 'c', 'lastmile', NULL, 'intent', '', '', 0, 1)`,
		`INSERT INTO job_logs (job_id, deployment_id, size, fetched_at, missing) VALUES (500, 11, 0, 1, 1)`,
	} {
		if _, err := db.write.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if work, err := db.Work(ctx, 42); err != nil || len(work) != 3 {
		t.Fatalf("acme/shop's work before: %d (%v), want 3", len(work), err)
	}
	if err := db.DropWork(ctx, 42, "lastmile no longer has access to the repository"); err != nil {
		t.Fatal(err)
	}
	if work, err := db.Work(ctx, 42); err != nil || len(work) != 0 {
		t.Errorf("acme/shop's work after: %+v (%v), want none", work, err)
	}
	if work, err := db.Work(ctx, 43); err != nil || len(work) != 1 {
		t.Errorf("acme/api's work after: %d (%v), want its intent still", len(work), err)
	}
	var state, reason string
	if err := db.read.QueryRowContext(ctx, `SELECT state, reason FROM deployments WHERE id = 12`).Scan(&state, &reason); err != nil ||
		state != "abandoned" || reason != "lastmile no longer has access to the repository" {
		t.Errorf("acme/shop's intent: %s %q (%v), want abandoned with the reason", state, reason, err)
	}
	// A deploy job GitHub had no log for stays recorded so (not as a log
	// kept); it is no longer looked for once lastmile recorded why it
	// cannot reach the repository: removed from its installation, or the
	// installation uninstalled.
	var stillMissing bool
	if err := db.read.QueryRowContext(ctx, `SELECT missing FROM job_logs WHERE job_id = 500`).Scan(&stillMissing); err != nil || !stillMissing {
		t.Errorf("job 500 after DropWork: missing %v (%v), want still recorded as GitHub having no log", stillMissing, err)
	}
	lookedFor := func() int {
		t.Helper()
		missing, err := db.MissingJobLogs(ctx, time.UnixMilli(0))
		if err != nil {
			t.Fatal(err)
		}
		return len(missing)
	}
	if n := lookedFor(); n != 1 {
		t.Fatalf("deploy logs looked for, repository reachable: %d, want 1", n)
	}
	if err := db.DetachRepo(ctx, 42, time.UnixMilli(2)); err != nil {
		t.Fatal(err)
	}
	if n := lookedFor(); n != 0 {
		t.Errorf("deploy logs looked for, repository removed from its installation: %d, want none", n)
	}
	if err := db.AttachRepo(ctx, 42, 7, time.UnixMilli(3)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SetInstallation(ctx, pipeline.InstallationState{ID: 7, State: pipeline.InstallationUninstalled, By: "octocat"}); err != nil {
		t.Fatal(err)
	}
	if n := lookedFor(); n != 0 {
		t.Errorf("deploy logs looked for, installation uninstalled: %d, want none", n)
	}
}

// An uninstalled installation stays so: GitHub never reuses its ID, so an
// unsuspension or a repository added delivered after its deletion changes
// nothing.
func TestUninstalledIsFinal(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	deleted := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	if _, err := db.SetInstallation(ctx, pipeline.InstallationState{ID: 7, State: pipeline.InstallationUninstalled, Since: deleted, By: "alice"}); err != nil {
		t.Fatal(err)
	}
	for _, late := range []pipeline.InstallationStatus{pipeline.InstallationActive, pipeline.InstallationSuspended} {
		if _, err := db.SetInstallation(ctx, pipeline.InstallationState{ID: 7, State: late, Since: deleted.Add(-time.Hour), By: "bob"}); err != nil {
			t.Fatal(err)
		}
		if st, err := db.Installation(ctx, 7); err != nil || st.State != pipeline.InstallationUninstalled || st.By != "alice" {
			t.Errorf("after a late %s: %+v (%v), want uninstalled by alice", late, st, err)
		}
	}
}

// Migration 0021 keeps each repository's pipeline branch, its source not
// known; a change records the commit whose configuration made it.
func TestPipelineBranchSource(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lastmile.db")
	db, err := openUpTo(ctx, path, 20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.write.ExecContext(ctx, `INSERT INTO repositories (id, full_name, installation_id, pipeline_branch, updated_at)
		VALUES (42, 'acme/shop', 7, 'release', 1)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if db, err = Open(ctx, path); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	defer db.Close()
	if b, sha, err := db.PipelineBranchSource(ctx, 42); err != nil || b != "release" || sha != "" {
		t.Errorf("after the migration: %q %q (%v), want release, source unknown", b, sha, err)
	}
	for _, step := range []struct{ branch, sha, wantSHA string }{
		{"release", "c1", ""}, // unchanged: the source stays unknown
		{"main", "c2", "c2"},  // moved by c2
		{"main", "c3", "c2"},  // unchanged
		{"release", "", ""},   // moved, source not known
	} {
		if err := db.SetPipelineBranch(ctx, 42, step.branch, step.sha); err != nil {
			t.Fatal(err)
		}
		if b, sha, err := db.PipelineBranchSource(ctx, 42); err != nil || b != step.branch || sha != step.wantSHA {
			t.Errorf("after %s at %q: %q %q (%v), want %s at %q", step.branch, step.sha, b, sha, err, step.branch, step.wantSHA)
		}
	}
}

// SetInstallation records the state it is given, whatever its time: the
// engine asked GitHub where the installation stands, and an unsuspension's
// time (when lastmile received it) and a suspension's (GitHub's
// suspended_at) are on two clocks. A state recorded again keeps its since
// and by.
func TestSetInstallationRecordsTheStateGiven(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	t1 := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	for _, step := range []struct {
		set  pipeline.InstallationState
		want pipeline.InstallationState
	}{
		{pipeline.InstallationState{ID: 7, State: pipeline.InstallationSuspended, Since: t1, By: "alice"},
			pipeline.InstallationState{State: pipeline.InstallationSuspended, Since: t1, By: "alice"}},
		// Its since before the suspension's: GitHub's clock ahead of lastmile's.
		{pipeline.InstallationState{ID: 7, State: pipeline.InstallationActive, Since: t1.Add(-time.Second), By: "bob"},
			pipeline.InstallationState{State: pipeline.InstallationActive, Since: t1.Add(-time.Second), By: "bob"}},
		{pipeline.InstallationState{ID: 7, State: pipeline.InstallationActive, Since: t1.Add(time.Hour), By: "carol"},
			pipeline.InstallationState{State: pipeline.InstallationActive, Since: t1.Add(-time.Second), By: "bob"}},
	} {
		if _, err := db.SetInstallation(ctx, step.set); err != nil {
			t.Fatal(err)
		}
		st, err := db.Installation(ctx, 7)
		if err != nil || st.State != step.want.State || !st.Since.Equal(step.want.Since) || st.By != step.want.By {
			t.Errorf("after %+v: %+v (%v); want %+v", step.set, st, err, step.want)
		}
	}
}

// A push made before its repository was removed from (or transferred out
// of) an installation, delivered late, does not record its older
// installation over the installation event's; a push made after does.
func TestSaveRepoAfterAnInstallationEvent(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	removedAt := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	r := pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}
	if err := db.SaveRepo(ctx, r, removedAt.Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := db.DetachRepo(ctx, 42, removedAt); err != nil {
		t.Fatal(err)
	}
	if err := db.SaveRepo(ctx, r, removedAt.Add(-time.Minute)); err != nil { // pushed before the removal
		t.Fatal(err)
	}
	if d, _ := db.Detached(ctx, 42); !d {
		t.Error("a late push re-attached a removed repository to installation 7")
	}
	if err := db.AttachRepo(ctx, 42, 5, removedAt.Add(time.Minute)); err != nil { // added to globex's
		t.Fatal(err)
	}
	if err := db.SaveRepo(ctx, r, removedAt); err != nil { // another late push through 7
		t.Fatal(err)
	}
	if repos, _ := db.InstallationRepos(ctx, 5); len(repos) != 1 {
		t.Errorf("repositories of installation 5 after a late push through 7: %v, want shop", repos)
	}
	moved := pipeline.Repo{ID: 42, Owner: "globex", Name: "shop", InstallationID: 6}
	if err := db.SaveRepo(ctx, moved, removedAt.Add(time.Hour)); err != nil { // a later push through 6
		t.Fatal(err)
	}
	if repos, _ := db.InstallationRepos(ctx, 6); len(repos) != 1 || repos[0].FullName() != "globex/shop" {
		t.Errorf("repositories of installation 6 after its push: %v, want globex/shop", repos)
	}
}

// The inbox gauges read the pending deliveries' index only: the done ones,
// which retention keeps by the million, are never walked at a scrape.
func TestInboxPendingQueryPlan(t *testing.T) {
	db := openTemp(t)
	got := queryPlan(t, db, inboxPendingQuery)
	if !strings.Contains(got, "deliveries USING INDEX deliveries_pending") || strings.Contains(got, "deliveries_received") {
		t.Errorf("query plan of the inbox gauges: %s; want the deliveries_pending index alone", got)
	}
}

// queryPlan is SQLite's plan for query, its steps joined by " | ".
func queryPlan(t *testing.T, db *DB, query string, args ...any) string {
	t.Helper()
	rows, err := db.read.QueryContext(context.Background(), "EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, " | ")
}

// The worker's queue queries read the pending deliveries' index alone, one
// seek per queue: never the done deliveries, which retention keeps by the
// million.
func TestQueueQueryPlans(t *testing.T) {
	db := openTemp(t)
	for name, q := range map[string]struct {
		sql  string
		args []any
	}{
		"every queue's head": {queueHeadsQuery, nil},
		"a repository's":     {queueHeadQuery, []any{int64(42), "", "", int64(0)}},
		"an installation's":  {queueHeadQuery, []any{int64(0), "", "", int64(7)}},
	} {
		got := queryPlan(t, db, q.sql, q.args...)
		for _, step := range strings.Split(got, " | ") {
			if strings.Contains(step, "deliveries") && !strings.Contains(step, "USING INDEX deliveries_pending") &&
				!strings.Contains(step, "INTEGER PRIMARY KEY") && !strings.Contains(step, "COVERING INDEX deliveries_pending") {
				t.Errorf("%s: %s reads deliveries otherwise than by the pending index (plan: %s)", name, step, got)
			}
			if strings.HasPrefix(step, "SCAN deliveries") && !strings.Contains(step, "deliveries_pending") {
				t.Errorf("%s: scans the deliveries table (plan: %s)", name, got)
			}
		}
		t.Logf("%s: %s", name, got)
	}
}

// Owing lists the repositories that owe GitHub work (a deployment to
// create, a status to write, statuses to read back) with no delivery of
// theirs pending: not one whose only work waits for required contexts, not
// one whose delivery is pending, not one that owes nothing; and reads the
// owed deployments' index and the pending deliveries' only.
func TestOwing(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	for _, q := range []string{
		`INSERT INTO repositories (id, full_name, installation_id, updated_at) VALUES
			(41, 'acme/intent', 7, 1), (42, 'acme/notify', 7, 1), (43, 'acme/read-back', 7, 1),
			(44, 'acme/contexts', 7, 1), (45, 'acme/pending', 7, 1), (46, 'acme/done', 7, 1), (47, 'acme/others', 7, 1)`,
		`INSERT INTO releases (id, repository_id, sha, ref, pushed_at, config, state, created_at, updated_at) VALUES
			(1, 41, 'a', 'refs/heads/main', 1, '{}', 'active', 1, 1), (2, 42, 'b', 'refs/heads/main', 1, '{}', 'active', 1, 1),
			(3, 43, 'c', 'refs/heads/main', 1, '{}', 'active', 1, 1), (4, 44, 'd', 'refs/heads/main', 1, '{}', 'active', 1, 1),
			(5, 45, 'e', 'refs/heads/main', 1, '{}', 'active', 1, 1), (6, 46, 'f', 'refs/heads/main', 1, '{}', 'active', 1, 1),
			(7, 47, 'g', 'refs/heads/main', 1, '{}', 'active', 1, 1)`,
		`INSERT INTO deployments (id, repository_id, release_id, environment, stage, sha, origin, github_id, state, notify, notify_reason, read_back, created_at) VALUES
			(10, 41, 1, 'test', 0, 'a', 'lastmile', NULL, 'intent', '', '', 0, 1),
			(11, 42, 2, 'test', 0, 'b', 'lastmile', 101, 'queued', 'inactive', 'superseded', 0, 1),
			(12, 43, 3, 'test', 0, 'c', 'lastmile', 102, 'inactive', '', '', 1, 1),
			(13, 44, 4, 'test', 0, 'd', 'lastmile', NULL, 'waiting', '', '', 0, 1),
			(14, 45, 5, 'test', 0, 'e', 'lastmile', NULL, 'intent', '', '', 0, 1),
			(15, 46, 6, 'test', 0, 'f', 'lastmile', 105, 'success', '', '', 0, 1),
			(16, 47, 7, 'test', 0, 'g', 'external', 106, 'queued', 'inactive', 'superseded', 0, 1)`,
	} {
		if _, err := db.write.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for _, d := range []*pipeline.Delivery{
		{ID: "pending", Event: "push", RepositoryID: 45, Repository: "acme/pending", InstallationID: 7, State: pipeline.DeliveryPending, Body: []byte(`{}`)},
		{ID: "dead", Event: "push", RepositoryID: 41, Repository: "acme/intent", InstallationID: 7, State: pipeline.DeliveryDead, Body: []byte(`{}`)},
	} {
		if _, err := db.Accept(ctx, d, "push", "accepted"); err != nil {
			t.Fatal(err)
		}
	}
	repos, err := db.Owing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range repos {
		got = append(got, r.FullName())
	}
	if want := "acme/intent acme/notify acme/read-back"; strings.Join(got, " ") != want {
		t.Errorf("Owing = %s; want %s", strings.Join(got, " "), want)
	}
	plan := queryPlan(t, db, owingQuery)
	if !strings.Contains(plan, "USING INDEX deployments_work") || !strings.Contains(plan, "INDEX deliveries_pending") {
		t.Errorf("query plan of Owing: %s; want the deployments_work and deliveries_pending indexes", plan)
	}
}
