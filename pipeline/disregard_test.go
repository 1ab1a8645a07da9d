package pipeline_test

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// A success a person posts by hand on lastmile's deployment (anyone who
// may write deployments can) proves no deploy: after staging's deploy
// failed, mallory's success is kept for the audit record only — no
// production deployment, the commit not proven to the protection rule, a
// warning logged — while an App's success (a deploy system that is an App)
// carries the release on as the Action's does.
func TestAPersonsSuccessIsDisregarded(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	var logged bytes.Buffer
	h.engine.Log = slog.New(slog.NewJSONHandler(&logged, nil))
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
	h.status(c1, "test", pipeline.DeploymentSuccess, 11, true)
	h.status(c1, "staging", pipeline.DeploymentInProgress, 12, true)
	h.status(c1, "staging", pipeline.DeploymentFailure, 12, true)
	h.runCompleted(12, c1, "failure")

	staging := h.gh.deployment(c1, "staging")
	h.gh.mu.Lock()
	forged := h.gh.postAs(staging.id, pipeline.DeploymentSuccess, "", "mallory")
	h.gh.mu.Unlock()
	h.deliver(c1, "staging", forged)
	h.deliver(c1, "staging", forged) // a redelivery: recorded and logged once

	if h.gh.deployment(c1, "production") != nil {
		t.Fatal("a production deployment was created after a person's success on the failed staging deployment")
	}
	if ok, err := h.db.Succeeded(ctx, shop.ID, c1, "staging"); err != nil || ok {
		t.Errorf("Succeeded(c1, staging) = %v, %v; want false", ok, err)
	}
	if err := h.engine.HandleProtectionRule(ctx, pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: "rule-99",
		Environment: "production", SHA: c1, RunID: 99}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(h.gh.answers, "; "); got != "99 production rejected" {
		t.Errorf("protection rule answers %q, want the production job rejected", got)
	}
	rec, err := h.db.Audit(ctx, shop.FullName(), c1)
	if err != nil {
		t.Fatal(err)
	}
	var kept []pipeline.StatusInfo
	for _, env := range rec.Environments {
		if env.Name != "staging" {
			continue
		}
		if env.Outcome != pipeline.DeploymentFailure {
			t.Errorf("staging's outcome %q, want failure", env.Outcome)
		}
		for _, d := range env.Deployments {
			for _, s := range d.Statuses {
				if s.Disregarded != "" {
					kept = append(kept, s)
				}
			}
		}
	}
	if len(kept) != 1 || kept[0].Creator != "mallory" || kept[0].State != pipeline.DeploymentSuccess ||
		!strings.Contains(kept[0].Disregarded, "a success posted by mallory, a person") {
		t.Errorf("staging's statuses kept for the record only: %+v; want mallory's success, saying why", kept)
	}
	if n := strings.Count(logged.String(), `"msg":"deployment status disregarded"`); n != 1 || !strings.Contains(logged.String(), `"creator":"mallory"`) {
		t.Errorf("%d warnings of the disregarded status logged, want 1 naming mallory:\n%s", n, logged.String())
	}

	// An App's success, on the next release's deployment, carries it on.
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	test := h.gh.deployment(c2, "test")
	h.gh.mu.Lock()
	byApp := h.gh.postAs(test.id, pipeline.DeploymentSuccess, "", "deploy-bot[bot]")
	h.gh.mu.Unlock()
	h.deliver(c2, "test", byApp)
	if h.gh.deployment(c2, "staging") == nil {
		t.Error("an App's success in test did not carry the release on to staging")
	}
}

// Actions posts the statuses of a job's own deployment as the run's
// triggering actor, a User (the simulator's reportOnTwin;
// githubapp/testdata/workflow_job_queued.json's deployment.creator): for a
// workflow that owns its deployments (push-triggered), that actor is the
// pusher. Its success must prove the commit to the protection rule.
func TestAJobsOwnSuccessByItsActorProves(t *testing.T) {
	for _, actor := range []string{"github-actions[bot]", "octocat"} {
		t.Run(actor, func(t *testing.T) { actionsOwnJobSuccess(t, actor) })
	}
}

func actionsOwnJobSuccess(t *testing.T, actor string) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.release(c0, c1, 10, "test")
	info := pipeline.DeploymentInfo{GitHubID: 902, SHA: c1, Environment: "staging", Creator: actor,
		CreatedAt: time.Now(), WorkflowRunID: 77}
	if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: info}); err != nil {
		t.Fatal(err)
	}
	if err := h.engine.HandleDeploymentStatus(ctx, pipeline.NewDeploymentStatus{Repo: shop, Deployment: info,
		Status: pipeline.StatusInfo{GitHubID: 9020, State: pipeline.DeploymentSuccess, Creator: actor, CreatedAt: time.Now(),
			LogURL: "https://github.com/acme/shop/runs/555?check_suite_focus=true"}}); err != nil {
		t.Fatal(err)
	}
	if dec := h.judge("rule-92", "production", c1, 92); dec.State != "approved" {
		t.Errorf("production after the staging job's own success (Actions, as the run's actor): %s (%s)", dec.State, dec.Comment)
	}
}

// A run that ends without a result (its staging job rejected) owes
// the deployment a failure; a person's success posted meanwhile is the
// newest status on GitHub, and orphans takes it for the deploy's end:
// lastmile writes nothing and the release never stops.
func TestAPersonsSuccessDoesNotHideTheOwedFailure(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test")
	h.status(c1, "staging", pipeline.DeploymentQueued, 11, true)
	staging := h.gh.deployment(c1, "staging")
	h.gh.mu.Lock()
	forged := h.gh.postAs(staging.id, pipeline.DeploymentSuccess, "", "mallory")
	h.gh.mu.Unlock()
	h.deliver(c1, "staging", forged)
	h.runCompleted(11, c1, "failure") // the reviewer rejected the staging job
	if len(h.gh.written) != 1 || h.gh.written[0].State != pipeline.DeploymentFailure {
		t.Errorf("lastmile wrote %+v at the run's end, want a failure", h.gh.written)
	}
	rel, err := h.db.ReleaseOf(ctx, shop.ID, c1)
	if err != nil || rel.State != pipeline.ReleaseStopped {
		t.Errorf("release of c1 after its staging run ended without a result: %s %s, %v; want stopped", rel.State, rel.StopKind, err)
	}
}

// The audit record lists a deployment's statuses in the order they
// happened; one lastmile recorded alone (no GitHub ID) after a
// disregarded success is listed before it.
func TestTheAuditRecordOrdersADisregardedStatus(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.mustPush(c0, c1, false)
	h.status(c1, "test", pipeline.DeploymentQueued, 11, true)
	old := h.gh.deployment(c1, "test")
	h.gh.mu.Lock()
	forged := h.gh.postAs(old.id, pipeline.DeploymentSuccess, "", "mallory")
	h.gh.mu.Unlock()
	h.deliver(c1, "test", forged)
	h.gh.mu.Lock()
	h.gh.deps = slices.DeleteFunc(h.gh.deps, func(d *fakeDeployment) bool { return d == old })
	h.gh.mu.Unlock()
	h.mustPush(c1, c2, false) // lastmile's inactive on c1's test deployment: 404, recorded by lastmile alone
	rec, err := h.db.Audit(ctx, shop.FullName(), c1)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, env := range rec.Environments {
		for _, d := range env.Deployments {
			if d.GitHubID == old.id {
				for _, s := range d.Statuses {
					got = append(got, string(s.State))
				}
			}
		}
	}
	if strings.Join(got, " ") != "queued success inactive" {
		t.Errorf("statuses in the audit record: %v, want queued success inactive (as they happened)", got)
	}
}
