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

// untaken says that an active release's deployment waits for a workflow
// run only once it has waited untakenAfter with no status, no run linked
// and no run of the commit on the deployment event since its creation;
// not where a job's own deployment of the commit shows that a workflow
// owns the environment's deployments (lastmile's never runs there).
func TestUntaken(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	const sha = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
	rel := &pipeline.Release{ID: 1, SHA: sha, State: pipeline.ReleaseActive}
	lastmiles := pipeline.DeploymentRecord{Deployment: pipeline.Deployment{ID: 1, SHA: sha, Environment: "staging",
		Origin: pipeline.OriginLastmile, State: pipeline.DeploymentCreated, CreatedAt: t0}}
	envs := func(more ...pipeline.DeploymentRecord) []pipeline.EnvironmentRecord {
		return []pipeline.EnvironmentRecord{
			{Name: "test", Outcome: pipeline.DeploymentSuccess},
			{Name: "staging", Outcome: pipeline.DeploymentCreated, Deployments: append([]pipeline.DeploymentRecord{lastmiles}, more...)},
		}
	}
	says := func(rel *pipeline.Release, envs []pipeline.EnvironmentRecord, now time.Time) string {
		t.Helper()
		got, err := untaken(ctx, db.read, 42, rel, envs, now)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := says(rel, envs(), t0.Add(untakenAfter-time.Second)); got != "" {
		t.Errorf("before %s: %q, want nothing said", untakenAfter, got)
	}
	if got := says(rel, envs(), t0.Add(untakenAfter)); !strings.HasPrefix(got, "no workflow run has taken up its deployment to staging, created 10m0s ago") {
		t.Errorf("after %s: %q, want the untaken deployment said", untakenAfter, got)
	}
	stopped := *rel
	stopped.State = pipeline.ReleaseStopped
	if got := says(&stopped, envs(), t0.Add(time.Hour)); got != "" {
		t.Errorf("a release no longer active: %q, want nothing said", got)
	}
	// Runs of the commit: one that may yet take the deployment up (on the
	// deployment event, not completed, made since) silences it; one that
	// completed (a notifier's), one of another event, or one made before
	// the deployment does not.
	for _, run := range []struct {
		event, status string
		at            time.Time
		takes         bool
	}{
		{"push", "in_progress", t0.Add(time.Second), false},
		{"deployment", "completed", t0.Add(time.Second), false},
		{"deployment", "in_progress", t0.Add(-2 * time.Minute), false},
		{"deployment", "queued", t0.Add(time.Second), true},
	} {
		if _, err := db.exec(ctx, `DELETE FROM workflow_runs`); err != nil {
			t.Fatal(err)
		}
		if _, err := db.exec(ctx, `INSERT INTO workflow_runs (run_id, repository_id, event, status, head_sha, created_at) VALUES (5, 42, ?, ?, ?, ?)`,
			run.event, run.status, sha, millis(run.at)); err != nil {
			t.Fatal(err)
		}
		if got := says(rel, envs(), t0.Add(time.Hour)); (got == "") != run.takes {
			t.Errorf("with a %s run (%s) of the commit made at %s: %q; want it said: %v", run.event, run.status, run.at, got, !run.takes)
		}
	}
	if _, err := db.exec(ctx, `DELETE FROM workflow_runs`); err != nil {
		t.Fatal(err)
	}
	// A job's own deployment in the environment, of any commit: a
	// workflow owns its deployments, and lastmile's never runs there.
	if err := db.SaveRepo(ctx, pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := db.exec(ctx, `INSERT INTO deployments (repository_id, environment, stage, sha, origin, state, run_id, created_at)
		VALUES (42, 'Staging', -1, 'b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2', 'external', 'success', 77, ?)`, millis(t0)); err != nil {
		t.Fatal(err)
	}
	if got := says(rel, envs(), t0.Add(time.Hour)); got != "" {
		t.Errorf("where a job's own deployment has been: %q, want nothing said", got)
	}
}

// The metric of deployments awaiting a run reads the deployments no run
// has taken up through their own index, never the whole history.
func TestAwaitingRunQueryPlan(t *testing.T) {
	db := openTemp(t)
	got := queryPlan(t, db, awaitingRunQuery)
	if !strings.Contains(got, "d USING INDEX deployments_awaiting_run") {
		t.Errorf("query plan of %s: %s; want the deployments_awaiting_run index", "awaitingRunQuery", got)
	}
	if strings.Contains(got, "SCAN x") || strings.Contains(got, "SCAN w") || strings.Contains(got, "SCAN rel") {
		t.Errorf("query plan of %s: %s; want every other table searched, not scanned", "awaitingRunQuery", got)
	}
}

// awaitingRun lists, per repository and environment, the oldest of
// lastmile's deployments that no run has taken up, of active releases of
// repositories lastmile still hears from, leaving out those a run may
// yet take up (mayYetRun).
func TestAwaitingRun(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	for _, r := range []pipeline.Repo{
		{ID: 1, Owner: "acme", Name: "shop", InstallationID: 7},
		{ID: 2, Owner: "acme", Name: "gone", InstallationID: 7},
		{ID: 3, Owner: "other", Name: "app", InstallationID: 8},
	} {
		if err := db.SaveRepo(ctx, r, t0); err != nil {
			t.Fatal(err)
		}
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.exec(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	// Releases 1 and 2 of acme/shop are active, 3 stopped; 4 of
	// acme/gone and 5 of other/app active.
	for _, r := range []struct {
		id, repo int64
		state    string
	}{{1, 1, "active"}, {2, 1, "active"}, {3, 1, "stopped"}, {4, 2, "active"}, {5, 3, "active"}} {
		exec(`INSERT INTO releases (id, repository_id, sha, ref, pushed_at, state, created_at, updated_at) VALUES (?, ?, ?, 'refs/heads/main', 0, ?, 0, 0)`,
			r.id, r.repo, fmt.Sprintf("%040d", r.id), r.state)
	}
	deploy := func(release, repo int64, env, state string, runID int64, at time.Time) {
		t.Helper()
		exec(`INSERT INTO deployments (repository_id, release_id, environment, stage, sha, origin, state, run_id, created_at)
			VALUES (?, ?, ?, (SELECT COUNT(*) FROM deployments WHERE release_id = ?), ?, 'lastmile', ?, ?, ?)`,
			repo, release, env, release, fmt.Sprintf("%040d", release), state, runID, millis(at))
	}
	deploy(1, 1, "staging", "created", 0, t0)                       // awaiting, the older of two
	deploy(2, 1, "staging", "created", 0, t0.Add(time.Minute))      // awaiting
	deploy(2, 1, "test", "success", 5, t0.Add(-time.Minute))        // ended
	deploy(3, 1, "production", "created", 0, t0)                    // its release stopped
	deploy(4, 2, "test", "created", 0, t0.Add(2*time.Minute))       // awaiting, until acme/gone is removed from its installation
	deploy(5, 3, "test", "created", 0, t0.Add(3*time.Minute))       // awaiting, until installation 8 is suspended
	deploy(1, 1, "production", "created", 9, t0.Add(4*time.Minute)) // a run linked
	read := func() map[string]float64 {
		t.Helper()
		snap, err := db.MetricsSnapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, s := range snap.AwaitingRun {
			out[s.Labels[0]+" "+s.Labels[1]] = s.Value
		}
		return out
	}
	secs := func(d time.Duration) float64 { return float64(t0.Add(d).Unix()) }
	want := map[string]float64{"acme/shop staging": secs(0), "acme/gone test": secs(2 * time.Minute), "other/app test": secs(3 * time.Minute)}
	if got := read(); !maps.Equal(got, want) {
		t.Errorf("awaiting a run: %v, want %v", got, want)
	}
	// A run of release 1's commit on the deployment event under way may
	// yet take its deployment up: release 2's is then the oldest waiting.
	exec(`INSERT INTO workflow_runs (run_id, repository_id, event, status, head_sha, created_at) VALUES (11, 1, 'deployment', 'queued', ?, ?)`,
		fmt.Sprintf("%040d", 1), millis(t0.Add(time.Second)))
	want["acme/shop staging"] = secs(time.Minute)
	if err := db.DetachRepo(ctx, 2, t0); err != nil {
		t.Fatal(err)
	}
	delete(want, "acme/gone test")
	if _, err := db.SetInstallation(ctx, pipeline.InstallationState{ID: 8, State: pipeline.InstallationSuspended, Since: t0}); err != nil {
		t.Fatal(err)
	}
	delete(want, "other/app test")
	if got := read(); !maps.Equal(got, want) {
		t.Errorf("with a run under way for release 1, acme/gone detached and installation 8 suspended: %v, want %v", got, want)
	}
	// A job's own deployment ever in the environment: a workflow owns
	// its deployments, lastmile's never run.
	exec(`INSERT INTO deployments (repository_id, environment, stage, sha, origin, state, run_id, created_at)
		VALUES (1, 'Staging', -1, ?, 'external', 'success', 12, ?)`, fmt.Sprintf("%040d", 2), millis(t0))
	if got := read(); len(got) != 0 {
		t.Errorf("with a job's own deployment in staging: %v, want nothing", got)
	}
}
