package app

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/pipeline"
)

const testThenStaging = "environments:\n  - name: test\n  - name: staging\n"

// holdTestResults holds back the deployment statuses of state in test —
// lastmile's deployment's and the test job's own — and, with runEnd, the
// end of the runs, as GitHub, which does not keep webhooks in order, may.
func holdTestResults(sb *Sandbox, state string, runEnd bool) {
	sb.Sim.HoldWebhooks(simulator.WebhookHold{Event: "deployment_status", Match: func(w simulator.Webhook) bool {
		return w.Field("deployment_status", "state") == state && w.Field("deployment", "environment") == "test"
	}})
	if runEnd {
		sb.Sim.HoldWebhooks(simulator.WebhookHold{Event: "workflow_run", Action: "completed"})
	}
}

// protectionDecisions returns lastmile's recorded decisions for the
// commit's jobs in env.
func protectionDecisions(t *testing.T, sb *Sandbox, repo, sha, env string) []pipeline.ProtectionDecision {
	t.Helper()
	rec, err := sb.App.DB().Audit(context.Background(), repo, sha)
	if err != nil {
		t.Fatal(err)
	}
	var out []pipeline.ProtectionDecision
	for _, d := range rec.ProtectionDecisions {
		if d.Environment == env {
			out = append(out, d)
		}
	}
	return out
}

// protectedStaging creates acme/shop, in its own installation, with
// lastmile as its staging environment's custom protection rule and the
// workflow given.
func protectedStaging(sb *Sandbox, wf simulator.WorkflowOptions) (full string, inst int64) {
	full = "acme/shop"
	inst = sb.Sim.CreateInstallation("acme", "Organization")
	sb.Sim.CreateRepo(inst, full, simulator.RepoOptions{})
	sb.Sim.SetEnvironment(full, "staging", simulator.EnvironmentOptions{CustomProtectionRule: true})
	sb.Sim.SetWorkflow(full, wf)
	return full, inst
}

// A workflow whose jobs own their deployments, test then staging, with
// lastmile as staging's custom protection rule. The test job's success
// reaches lastmile only after the staging job's protection-rule request:
// lastmile waits (the test deployment is in_progress as far as it knows),
// then approves once the success arrives — it never rejects. (GitHub's
// automatic inactive on lastmile's deployment, after the job's own
// deployment succeeds, sends no webhook, as GitHub documents.)
func TestProtectionRuleWaitsForASuccessDeliveredLate(t *testing.T) {
	sb := sandbox(t, nil)
	full, _ := protectedStaging(sb, simulator.WorkflowOptions{CreateDeployment: true, NextEnvironments: []string{"staging"}})
	holdTestResults(sb, "success", false)
	push := sb.Sim.Push(full, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": testThenStaging}})

	waitFor(t, sb, "the staging job's protection-rule request", func(s *simulator.Simulator) bool {
		for _, d := range s.Deliveries() {
			if d.Event == "deployment_protection_rule" && d.OK() {
				return true
			}
		}
		return false
	})
	settle(t, sb) // lastmile has handled it
	if reviews := sb.Sim.ProtectionRuleReviews(full); len(reviews) != 0 {
		t.Fatalf("lastmile answered before the test success reached it: %+v", reviews)
	}
	if held := sb.Sim.HeldWebhooks(); len(held) != 2 {
		t.Fatalf("held %d statuses in test, want 2 (the success of lastmile's deployment and of the job's)", len(held))
	}
	run := sb.Sim.Runs(full)[0]
	if len(run.Jobs) != 3 || run.Jobs[2].Environment != "staging" || !run.Waiting {
		t.Fatalf("the run should wait with its staging job: %+v", run)
	}
	decs := protectionDecisions(t, sb, full, push.After, "staging")
	if len(decs) != 1 || decs[0].State != "waiting" || decs[0].RunID != run.ID || decs[0].Posted {
		t.Fatalf("decision while the test success is held: %+v", decs)
	}

	if n := sb.Sim.ReleaseWebhooks(); n != 2 {
		t.Fatalf("released %d", n)
	}
	waitFor(t, sb, "the run's end", func(s *simulator.Simulator) bool {
		r, _ := s.Run(full, run.ID)
		return r.Status == "completed"
	})
	settle(t, sb)
	run, _ = sb.Sim.Run(full, run.ID)
	if run.Conclusion != "success" {
		t.Errorf("run: %+v", run)
	}
	reviews := sb.Sim.ProtectionRuleReviews(full)
	if len(reviews) == 0 || reviews[0].RunID != run.ID || reviews[0].State != "approved" ||
		!strings.Contains(reviews[0].Comment, "succeeded in test") {
		t.Errorf("answer to the staging job: %+v", reviews)
	}
	for _, r := range reviews {
		if r.State != "approved" {
			t.Errorf("lastmile answered %s: %+v", r.State, r)
		}
	}
	decs = protectionDecisions(t, sb, full, push.After, "staging")
	for _, d := range decs {
		if d.RunID == run.ID && (d.State != "approved" || !d.Posted) {
			t.Errorf("audit decision for the staging job: %+v", d)
		}
	}
	if len(decs) == 0 {
		t.Error("no protection decision in the audit record")
	}
}

// The test deploy fails, its failure held back: a staging job of the commit
// asking meanwhile (a deployment someone made to staging) is rejected once
// the failure arrives, never approved.
func TestProtectionRuleRejectsAfterAFailureDeliveredLate(t *testing.T) {
	sb := sandbox(t, nil)
	full, inst := protectedStaging(sb, simulator.WorkflowOptions{CreateDeployment: true, FailEnvironments: []string{"test"}})
	// The run's end would tell lastmile too (it then asks GitHub): held.
	holdTestResults(sb, "failure", true)
	push := sb.Sim.Push(full, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": testThenStaging}})
	waitFor(t, sb, "the test run's end", func(s *simulator.Simulator) bool {
		runs := s.Runs(full)
		return len(runs) == 1 && runs[0].Status == "completed"
	})
	settle(t, sb)

	gh := appClient(t, sb, inst)
	if _, _, err := gh.Repositories.CreateDeployment(context.Background(), "acme", "shop", &github.DeploymentRequest{
		Ref: github.String(push.After), Environment: github.String("staging"), AutoMerge: github.Bool(false),
		RequiredContexts: &[]string{},
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, sb, "the staging job's protection-rule request", func(s *simulator.Simulator) bool {
		for _, d := range s.Deliveries() {
			if d.Event == "deployment_protection_rule" && d.OK() {
				return true
			}
		}
		return false
	})
	settle(t, sb)
	if reviews := sb.Sim.ProtectionRuleReviews(full); len(reviews) != 0 {
		t.Fatalf("lastmile answered before the test failure reached it: %+v", reviews)
	}
	decs := protectionDecisions(t, sb, full, push.After, "staging")
	if len(decs) != 1 || decs[0].State != "waiting" {
		t.Fatalf("decision while the test failure is held: %+v", decs)
	}

	if n := sb.Sim.ReleaseWebhooks(); n != 3 {
		t.Fatalf("released %d, want 3 (two failures, the run's end)", n)
	}
	waitFor(t, sb, "lastmile's answer", func(s *simulator.Simulator) bool { return len(s.ProtectionRuleReviews(full)) > 0 })
	settle(t, sb)
	reviews := sb.Sim.ProtectionRuleReviews(full)
	if len(reviews) != 1 || reviews[0].State != "rejected" || !strings.Contains(reviews[0].Comment, "has not succeeded in test") {
		t.Errorf("answers: %+v", reviews)
	}
	decs = protectionDecisions(t, sb, full, push.After, "staging")
	if len(decs) != 1 || decs[0].State != "rejected" || !decs[0].Posted {
		t.Errorf("audit decisions: %+v", decs)
	}
	if succeededIn(sb.Sim, full, push.After, "staging") {
		t.Error("the commit reached staging")
	}
}
