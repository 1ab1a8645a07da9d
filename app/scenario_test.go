package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/githubapp/simulator/oasvalidate"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

const threeEnvs = `environments:
  - name: test
  - name: staging
  - name: production
`

// sandbox starts lastmile against the simulator for one test.
func sandbox(t *testing.T, configure func(*Config)) *Sandbox {
	t.Helper()
	var log *slog.Logger
	if os.Getenv("LASTMILE_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	// Every request lastmile sends to the simulator, and every answer, is
	// checked against GitHub's REST description; the test fails with each
	// mismatch once it ends.
	sb, err := NewSandbox(context.Background(), SandboxOptions{Dir: t.TempDir(), Logger: log, Configure: configure, WrapGitHub: oasvalidate.Wrap(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sb.Close(); err != nil {
			t.Errorf("close sandbox: %v", err)
		}
	})
	return sb
}

// repo creates acme/<name> with the given environments' reviewers and the
// workflow wf, whose jobs run, as the example workflow's, for lastmile's
// deployments only unless wf says otherwise.
func (sb *Sandbox) repo(name string, reviewed map[string]simulator.ReviewPolicy, wf simulator.WorkflowOptions) string {
	return sb.repoWith(name, simulator.RepoOptions{}, reviewed, wf)
}

// repoWith is repo, the repository created with opts.
func (sb *Sandbox) repoWith(name string, opts simulator.RepoOptions, reviewed map[string]simulator.ReviewPolicy, wf simulator.WorkflowOptions) string {
	if wf.JobsIf == "" {
		wf.JobsIf = "lastmile"
	}
	full := "acme/" + name
	inst := sb.Sim.CreateInstallation("acme", "Organization")
	sb.Sim.CreateRepo(inst, full, opts)
	for env, policy := range reviewed {
		sb.Sim.SetEnvironment(full, env, simulator.EnvironmentOptions{Reviewers: []string{"alice", "bob"}, Review: policy})
	}
	sb.Sim.SetWorkflow(full, wf)
	return full
}

func waitFor(t *testing.T, sb *Sandbox, what string, cond func(*simulator.Simulator) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sb.Sim.WaitFor(ctx, cond); err != nil {
		t.Fatalf("waiting for %s: %v\n%s", what, err, describe(sb))
	}
}

// settle waits until the simulator is idle and lastmile's inbox is drained.
func settle(t *testing.T, sb *Sandbox) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err := sb.Sim.WaitIdle(ctx)
		cancel()
		if err != nil {
			t.Fatalf("simulator never idle: %v\n%s", err, describe(sb))
		}
		stats, err := sb.App.DB().InboxStats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if stats[pipeline.DeliveryPending] == 0 && sb.Sim.Idle() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("inbox never drained: %v\n%s", stats, describe(sb))
		}
		// Wait for the worker's next state change rather than spinning.
		ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
		_ = sb.Sim.WaitFor(ctx, func(*simulator.Simulator) bool { return false })
		cancel()
	}
}

func describe(sb *Sandbox) string {
	var b strings.Builder
	for _, d := range sb.Sim.Deliveries() {
		fmt.Fprintf(&b, "  webhook %s.%s -> %d\n", d.Event, d.Action, d.StatusCode)
	}
	list, _ := sb.App.DB().ListDeliveries(context.Background(), storageFilterAll())
	for _, d := range list {
		fmt.Fprintf(&b, "  inbox %s %s.%s %s attempts=%d err=%q note=%q\n", d.ID, d.Event, d.Action, d.State, d.Attempts, d.LastError, d.Note)
	}
	return b.String()
}

func deploymentsByEnv(sb *Sandbox, repo, sha string) map[string][]simulator.Deployment {
	out := map[string][]simulator.Deployment{}
	for _, d := range sb.Sim.Deployments(repo) {
		if d.SHA == sha {
			out[d.Environment] = append(out[d.Environment], d)
		}
	}
	return out
}

func TestHappyPathThroughThreeEnvironments(t *testing.T) {
	happyPath(t, simulator.RepoOptions{}, simulator.WorkflowOptions{})
}

// A workflow beside the deploy workflow that runs for every deployment
// too — one that tells a chat, ending before the deploy does — changes
// nothing: its run is no deploy run, and its end says nothing of the
// deployment's.
func TestHappyPathBesideANotifierWorkflow(t *testing.T) {
	notifier := simulator.WorkflowOptions{Name: "Notify", Path: ".github/workflows/notify.yml", Notifier: true}
	t.Run("the deploy run registered", func(t *testing.T) {
		happyPath(t, simulator.RepoOptions{}, simulator.WorkflowOptions{}, notifier)
	})
	// Without the register job, the runs are told apart by what they do:
	// the deploy job's statuses.
	t.Run("the deploy run unregistered", func(t *testing.T) {
		happyPath(t, simulator.RepoOptions{}, simulator.WorkflowOptions{NoRegister: true}, notifier)
	})
}

// A repository that has custom properties, a multi_select one among them,
// goes the same way: GitHub sends them with the repository in every event
// and workflow run, where go-github v62 cannot decode them all.
func TestHappyPathOfARepositoryWithCustomProperties(t *testing.T) {
	happyPath(t, simulator.RepoOptions{CustomProperties: map[string]any{
		"teams": []string{"payments", "platform"}, "tier": "gold", "owner": nil}}, simulator.WorkflowOptions{})
}

// happyPath takes a push of a repository created with opts, with the
// deploy workflow and others, through test, staging and production,
// reviewers approving the last two, and checks the record.
func happyPath(t *testing.T, opts simulator.RepoOptions, deploy simulator.WorkflowOptions, others ...simulator.WorkflowOptions) {
	sb := sandbox(t, nil)
	repo := sb.repoWith("shop", opts, map[string]simulator.ReviewPolicy{
		"staging":    simulator.AutoApprove("alice", "looks good"),
		"production": simulator.AutoApprove("bob", "ship it"),
	}, deploy)
	for _, w := range others {
		sb.Sim.AddWorkflow(repo, w)
	}

	push := sb.Sim.Push(repo, "main",
		simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}},
		simulator.CommitSpec{Message: "Feature", Files: map[string]string{"app.txt": "v1"}})

	waitFor(t, sb, "production success", func(s *simulator.Simulator) bool {
		for _, d := range s.Deployments(repo) {
			if d.Environment == "production" && d.SHA == push.After && d.State() == "success" {
				return true
			}
		}
		return false
	})
	settle(t, sb)

	byEnv := deploymentsByEnv(sb, repo, push.After)
	for _, env := range []string{"test", "staging", "production"} {
		if len(byEnv[env]) != 1 {
			t.Errorf("%s: %d deployments, want exactly 1", env, len(byEnv[env]))
			continue
		}
		d := byEnv[env][0]
		if d.State() != "success" || d.Ref != push.After {
			t.Errorf("%s: state %q ref %q", env, d.State(), d.Ref)
		}
	}
	rec, err := sb.App.DB().Audit(context.Background(), repo, push.After)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Release.State != pipeline.ReleaseCompleted || rec.Release.SHA != push.After {
		t.Errorf("release: %+v", rec.Release)
	}
	if len(rec.Commits) != 2 || rec.Commits[0].Title != "Add lastmile" || rec.Commits[1].Title != "Feature" {
		t.Errorf("commits: %+v", rec.Commits)
	}
	approvers := map[string]string{"staging": "alice", "production": "bob"}
	for _, env := range rec.Environments {
		if env.Outcome != pipeline.DeploymentSuccess || len(env.Deployments) != 1 {
			t.Errorf("%s: outcome %s, %d deployments", env.Name, env.Outcome, len(env.Deployments))
			continue
		}
		d := env.Deployments[0]
		var states []string
		for _, s := range d.Statuses {
			states = append(states, string(s.State))
		}
		want := "queued,in_progress,success"
		if deploy.NoRegister { // no register job to post the queued
			want = "in_progress,success"
		}
		if got := strings.Join(states, ","); got != want {
			t.Errorf("%s: statuses %s, want %s", env.Name, got, want)
		}
		if len(d.Runs) != 1 || d.Runs[0].Conclusion != "success" {
			t.Errorf("%s: runs %+v", env.Name, d.Runs)
		}
		logs := 0
		for _, j := range d.Jobs {
			if j.LogBytes > 0 {
				logs++
				log, err := sb.App.DB().JobLog(context.Background(), j.ID)
				if err != nil || len(log) != j.LogBytes {
					t.Errorf("%s: job %d log: %d bytes, %v", env.Name, j.ID, len(log), err)
				}
			}
		}
		if logs != 1 {
			t.Errorf("%s: %d job logs kept, want the deploy job's", env.Name, logs)
		}
		if want := approvers[env.Name]; want != "" {
			var decided []string
			for _, r := range d.Reviews {
				if r.Action == pipeline.ReviewApproved {
					decided = append(decided, r.Actor+":"+r.Comment)
				}
			}
			if len(decided) != 1 || !strings.HasPrefix(decided[0], want+":") {
				t.Errorf("%s: approvals %v, want %s", env.Name, decided, want)
			}
		}
	}
}

func storageFilterAll() storage.DeliveryFilter { return storage.DeliveryFilter{Limit: 200} }
