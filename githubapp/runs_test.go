package githubapp_test

import (
	"context"
	"testing"

	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/pipeline"
)

// RunsInProgress against the simulator (its requests and answers checked
// against GitHub's REST description): the runs of a commit on the
// deployment event that have not completed, other than the one named.
func TestRunsInProgressAgainstTheSimulator(t *testing.T) {
	ctx := context.Background()
	w := newSimWorld(t)
	clients := w.clients(t)
	gh := &githubapp.GitHub{Clients: clients}
	repo := pipeline.Repo{ID: 1, Owner: "acme", Name: "shop", InstallationID: w.acme}
	started, release := make(chan struct{}), make(chan struct{})
	w.sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{Deploy: func(ctx context.Context, jc simulator.JobContext) error {
		if jc.Environment == "staging" { // goes on until released
			close(started)
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return nil
	}})
	defer close(release)
	sha := w.sim.Branch("acme/shop", "main")
	deploy := func(env string) {
		t.Helper()
		if _, _, err := gh.CreateDeployment(ctx, repo, pipeline.DeploymentRequest{SHA: sha, Environment: env, RequiredContexts: []string{}}); err != nil {
			t.Fatal(err)
		}
	}
	deploy("test")
	if err := w.sim.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	deploy("staging")
	<-started
	runs := w.sim.Runs("acme/shop")
	if len(runs) != 2 || runs[0].Status != "completed" || runs[1].Status != "in_progress" {
		t.Fatalf("runs %+v", runs)
	}
	for name, tc := range map[string]struct {
		sha, event string
		except     int64
		want       int
	}{
		"the ended run's view":   {sha, "deployment", runs[0].ID, 1},
		"the running run's view": {sha, "deployment", runs[1].ID, 0},
		"another commit":         {"0123456789abcdef0123456789abcdef01234567", "deployment", 0, 0},
		"another event":          {sha, "push", 0, 0},
	} {
		if n, err := gh.RunsInProgress(ctx, repo, tc.sha, tc.event, tc.except); err != nil || n != tc.want {
			t.Errorf("%s: %d, %v; want %d", name, n, err, tc.want)
		}
	}
}

// A repository with custom properties — a multi_select one among them,
// whose values go-github v62 cannot decode — has its workflow runs read
// all the same: they carry the repository.
func TestWorkflowRunsOfARepositoryWithCustomProperties(t *testing.T) {
	ctx := context.Background()
	w := newSimWorld(t)
	inst := w.sim.CreateInstallation("initech", "Organization")
	w.sim.CreateRepo(inst, "initech/billing", simulator.RepoOptions{CustomProperties: map[string]any{
		"teams": []string{"payments", "platform"}, "tier": "gold", "owner": nil}})
	w.sim.SetWorkflow("initech/billing", simulator.WorkflowOptions{})
	gh := &githubapp.GitHub{Clients: w.clients(t)}
	repo := pipeline.Repo{ID: 1, Owner: "initech", Name: "billing", InstallationID: inst}
	sha := w.sim.Branch("initech/billing", "main")
	if _, _, err := gh.CreateDeployment(ctx, repo, pipeline.DeploymentRequest{SHA: sha, Environment: "test", RequiredContexts: []string{}}); err != nil {
		t.Fatal(err)
	}
	if err := w.sim.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	runs := w.sim.Runs("initech/billing")
	if len(runs) != 1 {
		t.Fatalf("runs %+v, want one", runs)
	}
	run, err := gh.WorkflowRun(ctx, repo, runs[0].ID)
	if err != nil || run.RunID != runs[0].ID || run.HeadSHA != sha || run.Status != "completed" {
		t.Errorf("WorkflowRun: %+v, %v; want run %d of %s, completed", run, err, runs[0].ID, sha)
	}
	if n, err := gh.RunsInProgress(ctx, repo, sha, "deployment", 0); err != nil || n != 0 {
		t.Errorf("RunsInProgress: %d, %v; want 0", n, err)
	}
}
