package app

import (
	"context"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

// A workflow that owns its deployments: a workflow on push whose jobs
// deploy each commit of main through test, staging and production,
// lastmile the custom protection rule of the three. lastmile's own
// deployments never run (no workflow on deployment); the jobs' own
// deployments are the deployments that happened, and /metrics counts them:
// deployments, lead time, last success, and time to restore after a failed
// staging deploy that the next commit repaired.
func TestAWorkflowOnPushOwnsItsDeploymentsAndTheyCount(t *testing.T) {
	sb := sandbox(t, nil)
	full := "acme/shop"
	inst := sb.Sim.CreateInstallation("acme", "Organization")
	sb.Sim.CreateRepo(inst, full, simulator.RepoOptions{})
	envs := []string{"test", "staging", "production"}
	for _, env := range envs {
		sb.Sim.SetEnvironment(full, env, simulator.EnvironmentOptions{CustomProtectionRule: true})
	}
	sb.Sim.SetWorkflow(full, simulator.WorkflowOptions{Name: "CI", PushEnvironments: envs})

	first := sb.Sim.Push(full, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	waitFor(t, sb, "the first commit's production job", func(s *simulator.Simulator) bool { return succeededIn(s, full, first.After, "production") })
	settle(t, sb)

	// The second commit fails in staging: production's job is skipped.
	sb.Sim.SetWorkflow(full, simulator.WorkflowOptions{Name: "CI", PushEnvironments: envs, FailEnvironments: []string{"staging"}})
	second := sb.Sim.Push(full, "main", simulator.CommitSpec{Message: "Break staging", Files: map[string]string{"app.txt": "2"}})
	waitFor(t, sb, "the second commit's run", func(s *simulator.Simulator) bool {
		runs := s.Runs(full)
		return len(runs) == 2 && runs[1].Status == "completed"
	})
	settle(t, sb)
	// Where the pipeline stands is the jobs' deployments': the second
	// commit live in test, failed in staging; production still runs the
	// first.
	code, out, errOut := run(t, sb.Config.Database, "status", "--repo", full)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^acme/shop +test +#2 ` + second.After[:7] + ` .* -$`),
		regexp.MustCompile(`(?m)^acme/shop +staging +#1 ` + first.After[:7] + ` .* #2 ` + second.After[:7] + ` failure since `),
		regexp.MustCompile(`(?m)^acme/shop +production +#1 ` + first.After[:7] + ` .* -$`),
	} {
		if code != 0 || !want.MatchString(out) {
			t.Errorf("status: exit %d; no line matching %s\n%s%s", code, want, out, errOut)
		}
	}
	code, out, errOut = run(t, sb.Config.Database, "history", "--repo", full)
	if want := "test:success  staging:failure  production:-"; code != 0 || !strings.Contains(out, want) {
		t.Errorf("history: exit %d; lacks %q for the second release\n%s%s", code, want, out, errOut)
	}
	code, out, errOut = run(t, sb.Config.Database, "history", "--repo", full, "--env", "production")
	if code != 0 || !strings.Contains(out, first.After[:7]) || strings.Contains(out, second.After[:7]) {
		t.Errorf("history --env production: exit %d; want the first release only\n%s%s", code, out, errOut)
	}
	// The third repairs it.
	sb.Sim.SetWorkflow(full, simulator.WorkflowOptions{Name: "CI", PushEnvironments: envs})
	third := sb.Sim.Push(full, "main", simulator.CommitSpec{Message: "Repair staging", Files: map[string]string{"app.txt": "3"}})
	waitFor(t, sb, "the third commit's production job", func(s *simulator.Simulator) bool { return succeededIn(s, full, third.After, "production") })
	settle(t, sb)

	for _, r := range sb.Sim.ProtectionRuleReviews(full) {
		if r.State != "approved" {
			t.Errorf("protection rule answer %+v; want every job approved (each commit succeeded in the environment before)", r)
		}
	}
	if n := len(sb.Sim.ProtectionRuleReviews(full)); n != 8 {
		t.Errorf("protection rule answers: %d; want 8 (each environment of the first and third commits, test and staging of the second)", n)
	}
	for _, d := range sb.Sim.Deployments(full) {
		if d.WorkflowRunID == 0 && d.State() != "" && d.State() != "inactive" {
			t.Errorf("lastmile's deployment %d to %s: %s; want it never run", d.ID, d.Environment, d.State())
		}
	}

	body := get(t, sb.URL()+"/metrics")
	for _, want := range []string{
		`lastmile_deployments_total{environment="test",repository="acme/shop",state="success"} 3`,
		`lastmile_deployments_total{environment="staging",repository="acme/shop",state="success"} 2`,
		`lastmile_deployments_total{environment="staging",repository="acme/shop",state="failure"} 1`,
		`lastmile_deployments_total{environment="production",repository="acme/shop",state="success"} 2`,
		`lastmile_deployment_duration_seconds_count{environment="staging",repository="acme/shop"} 3`,
		`lastmile_time_to_restore_seconds_count{environment="staging",repository="acme/shop"} 1`,
		// The first commit's, then the second and third, which the
		// third's success brought to production.
		`lastmile_deployment_lead_time_seconds_count{environment="production",repository="acme/shop"} 3`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if regexp.MustCompile(`state="error"\} [1-9]|environment="(test|production)",repository="acme/shop",state="failure"\} [1-9]`).MatchString(body) {
		t.Errorf("/metrics counts a deployment that did not happen:\n%s", grepLines(body, "lastmile_deployments_total"))
	}
	if !regexp.MustCompile(`lastmile_last_success_timestamp_seconds\{environment="production",repository="acme/shop"\} [1-9]`).MatchString(body) {
		t.Errorf("/metrics: no last success in production:\n%s", grepLines(body, "lastmile_last_success"))
	}
	if strings.Contains(body, "lastmile_deployment_awaiting_run_since_timestamp_seconds{") {
		t.Errorf("/metrics: lastmile's own deployment reported as awaiting a run where the workflow owns the deployments:\n%s",
			grepLines(body, "awaiting_run"))
	}

	// The record says which deployments counted.
	code, out, errOut = run(t, sb.Config.Database, "audit", full, third.After)
	if want := "the job's own in a run on push (counted)): success"; code != 0 || strings.Count(out, want) != 3 {
		t.Errorf("audit: exit %d; want three deployments saying %q\n%s%s", code, want, out, errOut)
	}
	if code, out, errOut := run(t, sb.Config.Database, "audit", full, second.After); code != 0 ||
		!strings.Contains(out, "the job's own in a run on push (counted)): failure") ||
		!strings.Contains(out, "\n  staging: the workflow's own deployment: failure\n") {
		t.Errorf("audit of the second commit: exit %d; its staging deployment's failure not shown as counted\n%s%s", code, out, errOut)
	}
}

// grepLines is the lines of body that contain s.
func grepLines(body, s string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// With deployments: workflow the workflow on push creates every
// environment's deployment and lastmile creates none: it follows each
// release through the jobs' deployments — completed after production,
// stopped by a failure and carried on by the re-run that succeeds,
// superseded once a newer release has succeeded where it waits to go — as
// the protection rule of the three environments.
func TestDeploymentsWorkflowLastmileCreatesNone(t *testing.T) {
	sb := sandbox(t, nil)
	full := "acme/shop"
	inst := sb.Sim.CreateInstallation("acme", "Organization")
	sb.Sim.CreateRepo(inst, full, simulator.RepoOptions{})
	envs := []string{"test", "staging", "production"}
	for _, env := range envs {
		sb.Sim.SetEnvironment(full, env, simulator.EnvironmentOptions{CustomProtectionRule: true})
	}
	sb.Sim.SetWorkflow(full, simulator.WorkflowOptions{Name: "CI", PushEnvironments: envs})
	config := "deployments: workflow\n" + threeEnvs
	history := func() string {
		t.Helper()
		code, out, errOut := run(t, sb.Config.Database, "history", "--repo", full)
		if code != 0 {
			t.Fatalf("history: exit %d\n%s%s", code, out, errOut)
		}
		return out
	}
	release := func(out string, n int) string {
		t.Helper()
		line := regexp.MustCompile(`(?m)^#` + strconv.Itoa(n) + ` .*$`).FindString(out)
		if line == "" {
			t.Fatalf("history has no release #%d\n%s", n, out)
		}
		return line
	}

	// A commit through the three environments: completed.
	first := sb.Sim.Push(full, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": config}})
	waitFor(t, sb, "the first commit's production job", func(s *simulator.Simulator) bool { return succeededIn(s, full, first.After, "production") })
	settle(t, sb)
	if line := release(history(), 1); !strings.Contains(line, " completed ") || !strings.Contains(line, "production:success") {
		t.Errorf("release #1: %q; want completed, production:success", line)
	}

	// One that fails in staging stops; the re-run of its failed job
	// carries it on, to production.
	sb.Sim.SetWorkflow(full, simulator.WorkflowOptions{Name: "CI", PushEnvironments: envs, FailEnvironments: []string{"staging"}})
	second := sb.Sim.Push(full, "main", simulator.CommitSpec{Message: "Break staging", Files: map[string]string{"app.txt": "2"}})
	waitFor(t, sb, "the second commit's run", func(s *simulator.Simulator) bool {
		runs := s.Runs(full)
		return len(runs) == 2 && runs[1].Status == "completed"
	})
	settle(t, sb)
	if line := release(history(), 2); !strings.Contains(line, " stopped (failed) ") || !strings.Contains(line, "staging:failure") {
		t.Errorf("release #2: %q; want failed in staging", line)
	}
	sb.Sim.SetWorkflow(full, simulator.WorkflowOptions{Name: "CI", PushEnvironments: envs})
	if err := sb.Sim.RerunFailedJobs(full, sb.Sim.Runs(full)[1].ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, sb, "the second commit's production job", func(s *simulator.Simulator) bool { return succeededIn(s, full, second.After, "production") })
	settle(t, sb)
	if line := release(history(), 2); !strings.Contains(line, " completed ") || !strings.Contains(line, "staging:success  production:success") {
		t.Errorf("release #2 after the re-run: %q; want completed", line)
	}

	// Of two commits pushed one after the other, the newer passes test
	// (waiting then for staging's reviewer): the older is superseded — its
	// staging job refused by the protection rule, or, approved by it
	// before the newer passed test, rejected by the reviewer —, never to
	// go backwards.
	sb.Sim.SetEnvironment(full, "staging", simulator.EnvironmentOptions{CustomProtectionRule: true, Reviewers: []string{"lead"}})
	third := sb.Sim.Push(full, "main", simulator.CommitSpec{Message: "Three", Files: map[string]string{"app.txt": "3"}})
	fourth := sb.Sim.Push(full, "main", simulator.CommitSpec{Message: "Four", Files: map[string]string{"app.txt": "4"}})
	waitFor(t, sb, "the fourth commit's run waiting for staging's reviewer", func(s *simulator.Simulator) bool {
		runs := s.Runs(full)
		return len(runs) == 4 && (runs[2].Status == "completed" || runs[2].Waiting) && runs[3].Waiting && succeededIn(s, full, fourth.After, "test")
	})
	settle(t, sb)
	if line := release(history(), 3); !strings.Contains(line, " stopped (superseded) ") {
		t.Errorf("release #3 once the fourth passed test: %q; want superseded", line)
	}
	// Failed in staging: the second commit's first deploy; and the
	// third's job if its reviewer rejects it — not if the protection rule
	// refused it (it never deployed).
	stagingFailures := 1
	if runs := sb.Sim.Runs(full); runs[2].Waiting {
		if err := sb.Sim.Reject(full, runs[2].ID, "staging", "lead", "an older commit"); err != nil {
			t.Fatal(err)
		}
		stagingFailures++
	}
	if err := sb.Sim.Approve(full, sb.Sim.Runs(full)[3].ID, "staging", "lead", "ship it"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, sb, "the fourth commit's production job", func(s *simulator.Simulator) bool { return succeededIn(s, full, fourth.After, "production") })
	settle(t, sb)
	out := history()
	if line := release(out, 4); !strings.Contains(line, " completed ") {
		t.Errorf("release #4: %q; want completed", line)
	}
	if line := release(out, 3); !strings.Contains(line, " stopped (superseded) ") {
		t.Errorf("release #3: %q; want superseded", line)
	}
	code, out, errOut := run(t, sb.Config.Database, "audit", full, third.After)
	if want := regexp.MustCompile(`superseded: newer release #4 has (passed test, before staging|succeeded in test)`); code != 0 || !want.MatchString(out) {
		t.Errorf("audit of the third commit: exit %d; no match for %s\n%s%s", code, want, out, errOut)
	}
	if succeededIn(sb.Sim, full, third.After, "staging") {
		t.Errorf("the third commit deployed to staging after the fourth had passed test")
	}

	for _, d := range sb.Sim.Deployments(full) {
		if d.WorkflowRunID == 0 {
			t.Errorf("lastmile created deployment %d to %s; want none (deployments: workflow)", d.ID, d.Environment)
		}
	}
	// The third commit's test job ran unless the fourth passed test first
	// (its deployment may have been made inactive since, by the fourth's
	// success after it).
	tests := 3
	for _, d := range sb.Sim.Deployments(full) {
		if d.Environment == "test" && d.SHA == third.After &&
			slices.ContainsFunc(d.Statuses, func(st simulator.DeploymentStatus) bool { return st.State == "success" }) {
			tests = 4
		}
	}
	body := get(t, sb.URL()+"/metrics")
	for _, want := range []string{
		`lastmile_deployments_total{environment="test",repository="acme/shop",state="success"} ` + strconv.Itoa(tests),
		`lastmile_deployments_total{environment="staging",repository="acme/shop",state="success"} 3`,
		`lastmile_deployments_total{environment="production",repository="acme/shop",state="success"} 3`,
		`lastmile_deployments_total{environment="staging",repository="acme/shop",state="failure"} ` + strconv.Itoa(stagingFailures),
		`lastmile_deployments_total{environment="test",repository="acme/shop",state="failure"} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %s\n%s", want, grepLines(body, "lastmile_deployments_total"))
		}
	}
}

// workflowRepo is acme/shop with a workflow on push owning its
// deployments through test, staging and production, lastmile the three
// environments' protection rule (staging also with the reviewers given),
// and deployments: workflow in the configuration its first commit adds.
func workflowRepo(t *testing.T, sb *Sandbox, reviewers ...string) (full string, first simulator.PushResult) {
	t.Helper()
	full = "acme/shop"
	inst := sb.Sim.CreateInstallation("acme", "Organization")
	sb.Sim.CreateRepo(inst, full, simulator.RepoOptions{})
	envs := []string{"test", "staging", "production"}
	for _, env := range envs {
		sb.Sim.SetEnvironment(full, env, simulator.EnvironmentOptions{CustomProtectionRule: true})
	}
	sb.Sim.SetEnvironment(full, "staging", simulator.EnvironmentOptions{CustomProtectionRule: true, Reviewers: reviewers})
	sb.Sim.SetWorkflow(full, simulator.WorkflowOptions{Name: "CI", PushEnvironments: envs})
	first = sb.Sim.Push(full, "main", simulator.CommitSpec{Message: "Add lastmile",
		Files: map[string]string{".github/lastmile.yml": "deployments: workflow\n" + threeEnvs}})
	return full, first
}

// A release superseded where its workflow deploys it goes no further: its
// staging job, approved by the protection rule before the newer release
// passed test, is deployed once its reviewer approves it (GitHub takes no
// approval back), but its production job is refused.
func TestDeploymentsWorkflowSupersededGoesNoFurther(t *testing.T) {
	sb := sandbox(t, nil)
	full, first := workflowRepo(t, sb, "lead")
	waitFor(t, sb, "the first commit's staging job waiting for its reviewer", func(s *simulator.Simulator) bool {
		runs := s.Runs(full)
		return len(runs) == 1 && runs[0].Waiting && len(s.PendingReviews(full)) == 1
	})
	settle(t, sb)
	second := sb.Sim.Push(full, "main", simulator.CommitSpec{Message: "Two", Files: map[string]string{"app.txt": "2"}})
	waitFor(t, sb, "the second commit's test job", func(s *simulator.Simulator) bool { return succeededIn(s, full, second.After, "test") })
	settle(t, sb)
	if err := sb.Sim.Approve(full, sb.Sim.Runs(full)[0].ID, "staging", "lead", "late"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, sb, "the first commit's run", func(s *simulator.Simulator) bool { return s.Runs(full)[0].Status == "completed" })
	settle(t, sb)
	if succeededIn(sb.Sim, full, first.After, "production") {
		t.Errorf("the first commit, superseded, deployed to production")
	}
	var refused bool
	for _, r := range sb.Sim.ProtectionRuleReviews(full) {
		refused = refused || r.RunID == sb.Sim.Runs(full)[0].ID && r.Environment == "production" && r.State == "rejected"
	}
	if !refused {
		t.Errorf("no rejection of the first commit's production job: %+v", sb.Sim.ProtectionRuleReviews(full))
	}
	code, out, errOut := run(t, sb.Config.Database, "history", "--repo", full)
	if want := regexp.MustCompile(`(?m)^#1 .* stopped \(superseded\) `); code != 0 || !want.MatchString(out) {
		t.Errorf("history: exit %d; release #1 not superseded\n%s%s", code, out, errOut)
	}
}

// A release whose push reaches lastmile after its jobs have all run (the
// push's webhook delivered late) stands where they left it: completed.
func TestDeploymentsWorkflowPushHeardLast(t *testing.T) {
	sb := sandbox(t, nil)
	full, first := workflowRepo(t, sb)
	waitFor(t, sb, "the first commit's production job", func(s *simulator.Simulator) bool { return succeededIn(s, full, first.After, "production") })
	settle(t, sb)
	sb.Sim.HoldWebhooks(simulator.WebhookHold{Event: "push"})
	second := sb.Sim.Push(full, "main", simulator.CommitSpec{Message: "Two", Files: map[string]string{"app.txt": "2"}})
	waitFor(t, sb, "the second commit's production job", func(s *simulator.Simulator) bool { return succeededIn(s, full, second.After, "production") })
	settle(t, sb)
	if n := sb.Sim.ReleaseWebhooks(); n != 1 {
		t.Fatalf("%d webhooks held; want the push", n)
	}
	settle(t, sb)
	code, out, errOut := run(t, sb.Config.Database, "history", "--repo", full)
	if want := regexp.MustCompile(`(?m)^#2 .* completed +test:success  staging:success  production:success$`); code != 0 || !want.MatchString(out) {
		t.Errorf("history: exit %d; release #2 not completed\n%s%s", code, out, errOut)
	}
}

// A force push that takes a release's commit off the branch withdraws the
// release, and leaves its jobs' deployments alone: lastmile owes GitHub no
// status on a deployment a workflow made (its job, waiting for staging's
// reviewer, is refused by the protection rule if it asks again).
func TestDeploymentsWorkflowWithdrawnLeavesTheJobsDeployments(t *testing.T) {
	sb := sandbox(t, nil)
	full, first := workflowRepo(t, sb)
	waitFor(t, sb, "the first commit's production job", func(s *simulator.Simulator) bool { return succeededIn(s, full, first.After, "production") })
	settle(t, sb)
	sb.Sim.SetEnvironment(full, "staging", simulator.EnvironmentOptions{CustomProtectionRule: true, Reviewers: []string{"lead"}})
	second := sb.Sim.Push(full, "main", simulator.CommitSpec{Message: "Two", Files: map[string]string{"app.txt": "2"}})
	waitFor(t, sb, "the second commit's staging job waiting for its reviewer", func(s *simulator.Simulator) bool {
		runs := s.Runs(full)
		return len(runs) == 2 && runs[1].Waiting && len(s.PendingReviews(full)) == 1
	})
	settle(t, sb)
	sb.Sim.ForcePush(full, "main", first.After)
	settle(t, sb)
	code, out, errOut := run(t, sb.Config.Database, "history", "--repo", full)
	if want := regexp.MustCompile(`(?m)^#2 .* stopped \(superseded\) `); code != 0 || !want.MatchString(out) {
		t.Fatalf("history: exit %d; release #2 not withdrawn\n%s%s", code, out, errOut)
	}
	var staging int64
	for _, d := range sb.Sim.Deployments(full) {
		if d.SHA == second.After && d.Environment == "staging" {
			staging = d.ID
		}
	}
	d, err := sb.App.DB().Deployment(context.Background(), staging)
	if err != nil {
		t.Fatalf("the second commit's staging deployment (%d): %v", staging, err)
	}
	if d.Notify != "" {
		t.Errorf("lastmile owes GitHub %q on the staging job's deployment; want nothing", d.Notify)
	}
}
