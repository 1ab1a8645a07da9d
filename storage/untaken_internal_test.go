package storage

import (
	"context"
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
