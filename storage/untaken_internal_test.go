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
	owned := pipeline.DeploymentRecord{Deployment: pipeline.Deployment{ID: 2, SHA: sha, Environment: "staging",
		Origin: pipeline.OriginExternal, State: pipeline.DeploymentSuccess, RunID: 77, CreatedAt: t0}}
	for name, got := range map[string]string{
		"a release no longer active":                    says(&stopped, envs(), t0.Add(time.Hour)),
		"a job's own deployment in the environment too": says(rel, envs(owned), t0.Add(time.Hour)),
	} {
		if got != "" {
			t.Errorf("%s: %q, want nothing said", name, got)
		}
	}
	// A run of the commit on the deployment event since: taken up (the
	// run not linked yet), nothing said; one of another event is no sign.
	if _, err := db.exec(ctx, `INSERT INTO workflow_runs (run_id, repository_id, event, head_sha, created_at) VALUES (5, 42, 'push', ?, ?)`,
		sha, millis(t0.Add(time.Second))); err != nil {
		t.Fatal(err)
	}
	if got := says(rel, envs(), t0.Add(time.Hour)); got == "" {
		t.Error("a push run of the commit taken for the deployment's")
	}
	if _, err := db.exec(ctx, `INSERT INTO workflow_runs (run_id, repository_id, event, head_sha, created_at) VALUES (6, 42, 'deployment', ?, ?)`,
		sha, millis(t0.Add(time.Second))); err != nil {
		t.Fatal(err)
	}
	if got := says(rel, envs(), t0.Add(time.Hour)); got != "" {
		t.Errorf("with a deployment run of the commit since: %q, want nothing said", got)
	}
}
