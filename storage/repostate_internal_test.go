package storage

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// What the planner reads of a repository's deployments — the newest
// release to reach each environment, the releases holding one, the newest
// success — is read from indexes, a few entries each, however long the
// history: these run at every delivery of a repository, some of them up
// to 8 times, and deployments are never pruned.
func TestPlannerQueriesReadIndexesNotTheHistory(t *testing.T) {
	db := openTemp(t)
	for name, c := range map[string]struct {
		query string
		args  []any
		want  []string // in the plan
		sorts bool     // what the index found is sorted (a few rows)
	}{
		"revivable":       {revivableQuery, []any{1, 0, 20}, []string{"r USING INDEX releases_revivable (repository_id=? AND updated_at>?)"}, true},
		"active releases": {activeReleasesQuery, []any{1}, []string{"r USING INDEX releases_active (repository_id=?)"}, false},
		"reached": {reachedQuery, []any{1},
			[]string{"deployments_reached (repository_id=?)", "deployments_reached (repository_id=? AND environment>?)",
				"d USING INDEX deployments_reached (repository_id=? AND environment=?)"}, false},
		"running":   {runningQuery, []any{1, 0}, []string{"d USING INDEX deployments_in_progress (repository_id=?)"}, false},
		"held by":   {heldByQuery, []any{1, "production", 0}, []string{"deployments_in_progress (repository_id=?)", "deployments_work (repository_id=?)"}, false},
		"succeeded": {succeededQuery, []any{1, "abc", "production"}, []string{"deployments_sha (repository_id=? AND sha=?"}, false},
		"owned of release": {"SELECT d.id FROM deployments d JOIN repositories p ON p.id = d.repository_id " + ownedOfRelease, []any{1, "abc", 2},
			[]string{"d USING INDEX deployments_sha (repository_id=? AND sha=?)"}, true},
		"newer workflow": {newerWorkflowQuery, []any{1, 5, "workflow"}, []string{"releases USING INDEX releases_repository (repository_id=? AND id>?)"}, false},
		"newest success": {newestSuccessQuery, []any{1, "production"}, []string{"deployments_succeeded (repository_id=? AND environment=?"}, false},
	} {
		plan := queryPlan(t, db, c.query, c.args...)
		for _, w := range c.want {
			if !strings.Contains(plan, w) {
				t.Errorf("%s: query plan %s; want %s", name, plan, w)
			}
		}
		// No scan of a table, nor a sort of what a scan found: the
		// in-progress deployments grouped by environment are the few
		// running, the releases a recent failure stopped few too.
		for _, bad := range []string{"SCAN d ", "SCAN deployments", "SCAN r ", "releases_repository", "TEMP B-TREE FOR ORDER BY"} {
			if strings.Contains(plan+" ", bad) && !(c.sorts && strings.HasPrefix(bad, "TEMP")) && !strings.Contains(strings.Join(c.want, " "), bad) {
				t.Errorf("%s: query plan %s; want no %s", name, plan, strings.TrimSpace(bad))
			}
		}
	}
}

// RepoState's Reached and Running, HeldBy and NewestSuccess, on a ledger
// written by hand: environment names in several cases are one environment,
// deployments that do not count are passed over to the newest that does.
func TestPlannerQueriesOnAKnownLedger(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	now := time.Now()
	db.Now = func() time.Time { return now }
	long := millis(now.Add(-pipeline.HoldRunning - time.Hour))
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.write.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`INSERT INTO repositories (id, full_name, installation_id, updated_at) VALUES (1, 'acme/shop', 7, 0)`)
	plain := `{"required_contexts":[],"environments":[{"name":"test"},{"name":"staging"},{"name":"production"}]}`
	checked := `{"required_contexts":["ci"],"environments":[{"name":"test"},{"name":"staging"},{"name":"production"}]}`
	for id, cfg := range map[int]string{1: plain, 2: checked, 3: plain, 4: plain} {
		exec(`INSERT INTO releases (id, repository_id, sha, ref, pushed_at, config, state, created_at, updated_at)
			VALUES (?, 1, ?, 'refs/heads/main', 0, ?, 'active', 0, 0)`, id, strings.Repeat(string(rune('a'+id)), 40), cfg)
	}
	type dep struct {
		release                int
		env                    string
		stage                  int
		origin, state          string
		created, succeeded     int64
		runID, readBack, rerun int
	}
	for i, d := range []dep{
		{release: 1, env: "test", origin: "lastmile", state: "success", created: long, succeeded: long},
		{release: 2, env: "test", origin: "lastmile", state: "intent", created: long}, // may yet be refused for ci
		{release: 1, env: "staging", stage: 1, origin: "lastmile", state: "success", created: long, succeeded: long},
		{release: 3, env: "Staging", stage: 1, origin: "lastmile", state: "in_progress", created: millis(now.Add(-time.Hour))},
		{release: 1, env: "production", stage: 2, origin: "lastmile", state: "success", created: long, succeeded: long, rerun: 1},
		{release: 2, env: "Production", stage: 2, origin: "lastmile", state: "abandoned", created: long, readBack: 1},
		{release: 3, env: "PRODUCTION", stage: 2, origin: "lastmile", state: "waiting", created: long},
		{release: 3, env: "production", stage: -1, origin: "external", state: "success", created: long, succeeded: long},            // no run: proves nothing
		{release: 2, env: "Production", stage: -1, origin: "external", state: "success", created: long, succeeded: long, runID: 99}, // a job's
		{release: 4, env: "qa", stage: 0, origin: "lastmile", state: "abandoned", created: long},
		{release: 4, env: "demo", stage: -1, origin: "external", state: "in_progress", created: millis(now)},
		// Staging held twice, in two spellings (a re-run, say): one entry.
		{release: 4, env: "staging", stage: 1, origin: "lastmile", state: "in_progress", created: millis(now.Add(-30 * time.Minute))},
	} {
		exec(`INSERT INTO deployments (id, repository_id, release_id, environment, stage, sha, origin, state, created_at,
			succeeded_at, run_id, read_back, rerun) VALUES (?, 1, ?, ?, ?, 'sha', ?, ?, ?, ?, ?, ?, ?)`,
			i+1, d.release, d.env, d.stage, d.origin, d.state, d.created, d.succeeded, d.runID, d.readBack, d.rerun)
	}
	s, err := db.RepoState(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	reached := map[string]int64{}
	for env, id := range s.Reached {
		if _, twice := reached[strings.ToLower(env)]; twice {
			t.Errorf("Reached names %s in two spellings: %v", env, s.Reached)
		}
		reached[strings.ToLower(env)] = id
	}
	if want := map[string]int64{"test": 1, "staging": 4, "production": 1}; !maps.Equal(reached, want) {
		t.Errorf("Reached %v, want %v", s.Reached, want)
	}
	if want := map[string]int64{"Staging": 4}; !maps.Equal(s.Running, want) {
		t.Errorf("Running %v, want %v (staging held by 3 and 4, in two spellings: one entry, the newer release; production's success re-run long ago holds it no more)", s.Running, want)
	}
	for env, want := range map[string]int64{"STAGING": 4, "production": 2, "test": 0, "demo": 0} {
		if got, err := db.HeldBy(ctx, 1, env); err != nil || got != want {
			t.Errorf("HeldBy(%s) = %d, %v; want %d", env, got, err, want)
		}
	}
	if id, _, err := db.NewestSuccess(ctx, 1, "PRODUCTION"); err != nil || id != 2 {
		t.Errorf("NewestSuccess(PRODUCTION) = %d, %v; want 2 (the job's, not the one with no run)", id, err)
	}
	if _, _, err := db.NewestSuccess(ctx, 1, "qa"); err != pipeline.ErrNotFound {
		t.Errorf("NewestSuccess(qa) = %v, want ErrNotFound", err)
	}
}

// Where a workflow creates the deployments (deployments: workflow),
// RepoState gives its active releases the deployments the workflow owns,
// the latest of each stage, and Succeeded the newest success in every
// environment the active releases name — also when the only such release
// is a newer one, no longer active, than an active release whose
// deployments lastmile creates; and leaves Succeeded nil where there is
// none.
func TestRepoStateWhereTheWorkflowDeploys(t *testing.T) {
	ctx := context.Background()
	plain := `{"required_contexts":[],"environments":[{"name":"test"},{"name":"staging"},{"name":"production"}]}`
	workflow := `{"required_contexts":[],"environments":[{"name":"test"},{"name":"Staging"},{"name":"production"}],"deployments":"workflow"}`
	type rel struct {
		id          int
		cfg, state  string
		deployments [][4]any // environment, stage, state, workflow_owned; origin external and run 5 when owned
	}
	ledger := func(t *testing.T, extra []string, releases ...rel) *pipeline.RepoState {
		db := openTemp(t)
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := db.write.ExecContext(ctx, q, args...); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		exec(`INSERT INTO repositories (id, full_name, installation_id, updated_at) VALUES (1, 'acme/shop', 7, 0)`)
		id := 0
		for _, r := range releases {
			sha := strings.Repeat(string(rune('a'+r.id)), 40)
			exec(`INSERT INTO releases (id, repository_id, sha, ref, pushed_at, config, state, created_at, updated_at)
				VALUES (?, 1, ?, 'refs/heads/main', 0, ?, ?, 0, 0)`, r.id, sha, r.cfg, r.state)
			for _, d := range r.deployments {
				id++
				origin, run, succeeded := "lastmile", 0, 0
				if d[3] == 1 {
					origin, run = "external", 5
				}
				if d[2] == "success" {
					succeeded = 1000 + id
				}
				exec(`INSERT INTO deployments (id, repository_id, release_id, environment, stage, sha, origin, state, created_at,
					succeeded_at, run_id, run_event, workflow_owned) VALUES (?, 1, ?, ?, ?, ?, ?, ?, 0, ?, ?, 'push', ?)`,
					id, r.id, d[0], d[1], sha, origin, d[2], succeeded, run, d[3])
			}
		}
		for _, q := range extra {
			exec(q)
		}
		s, err := db.RepoState(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	byStage := func(s *pipeline.RepoState, release int64) map[int]string {
		out := map[int]string{}
		for _, p := range s.Active {
			if p.Release.ID == release {
				for stage, d := range p.ByStage {
					out[stage] = fmt.Sprintf("%d %s", d.ID, d.State)
				}
			}
		}
		return out
	}

	s := ledger(t, nil,
		rel{1, plain, "active", [][4]any{{"test", 0, "success", 0}, {"staging", 1, "success", 0}}},
		rel{2, workflow, "completed", [][4]any{{"test", 0, "success", 1}, {"Staging", 1, "success", 1}, {"production", 2, "success", 1}}},
		rel{3, workflow, "active", [][4]any{{"test", 0, "failure", 1}, {"test", 0, "success", 1}, {"Staging", 1, "queued", 1},
			{"staging", 1, "success", 0}}}, // lastmile's: not in ByStage, in Succeeded
	)
	if want := map[string]int64{"test": 3, "staging": 3, "production": 2}; !maps.Equal(s.Succeeded, want) {
		t.Errorf("Succeeded %v, want %v", s.Succeeded, want)
	}
	if got, want := byStage(s, 3), map[int]string{0: "7 success", 1: "8 queued"}; !maps.Equal(got, want) {
		t.Errorf("release 3 (the workflow's) ByStage %v, want %v: the latest of each stage it owns", got, want)
	}
	if got, want := byStage(s, 1), map[int]string{0: "1 success", 1: "2 success"}; !maps.Equal(got, want) {
		t.Errorf("release 1 (lastmile's) ByStage %v, want %v", got, want)
	}

	s = ledger(t, nil,
		rel{1, plain, "active", [][4]any{{"test", 0, "success", 0}, {"staging", 1, "success", 0}}},
		rel{2, workflow, "completed", [][4]any{{"production", 2, "success", 1}}},
	)
	if want := map[string]int64{"test": 1, "staging": 1, "production": 2}; !maps.Equal(s.Succeeded, want) {
		t.Errorf("only a newer release the workflow deployed: Succeeded %v, want %v", s.Succeeded, want)
	}

	s = ledger(t, nil,
		rel{1, workflow, "completed", [][4]any{{"production", 2, "success", 1}}},
		rel{2, plain, "active", [][4]any{{"test", 0, "success", 0}}},
	)
	if s.Succeeded != nil {
		t.Errorf("no active release, nor a newer one, that the workflow deploys: Succeeded %v, want nil", s.Succeeded)
	}

	// Its jobs' deployments that ended before lastmile knew them for the
	// workflow's (not counted): where the release stands all the same —
	// a job that asked lastmile as the protection rule; not one that did
	// not (another run's 6, made 0 by hand).
	s = ledger(t, []string{
		`UPDATE deployments SET workflow_owned = 0`,
		`UPDATE deployments SET run_id = 6 WHERE id = 3`,
		`INSERT INTO protection_decisions (repository_id, delivery_id, run_id, environment, sha, state, comment, decided_at)
			VALUES (1, 'g1', 5, 'TEST', 'x', 'approved', '', 0), (1, 'g2', 5, 'staging', 'x', 'approved', '', 0)`,
	}, rel{1, workflow, "active", [][4]any{{"test", 0, "success", 1}, {"Staging", 1, "success", 1}, {"production", 2, "in_progress", 1}}})
	if got, want := byStage(s, 1), map[int]string{0: "1 success", 1: "2 success"}; !maps.Equal(got, want) {
		t.Errorf("deployments not counted: ByStage %v, want %v", got, want)
	}
}
