package simulator_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

// deploy creates a deployment as lastmile does and returns its id.
func (h *harness) deploy(repo, env string) int64 {
	h.t.Helper()
	owner, name, _ := strings.Cut(repo, "/")
	d, _, err := h.client(h.org, nil).Repositories.CreateDeployment(h.ctx(), owner, name, &github.DeploymentRequest{
		Ref: github.String(h.sim.Branch(repo, "main")), Environment: github.String(env),
		AutoMerge: github.Bool(false), RequiredContexts: &[]string{}, Payload: map[string]any{"stage": env},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return d.GetID()
}

// eventsFrom returns "event/action" of deliveries from index i on.
func (h *harness) eventsFrom(i int) []string {
	return h.events()[i:]
}

// payload decodes the n-th delivery of event/action from index from.
func (h *harness) payload(from int, event, action string) map[string]any {
	h.t.Helper()
	for _, d := range h.sim.Deliveries()[from:] {
		if d.Event == event && d.Action == action {
			var m map[string]any
			if err := json.Unmarshal(d.Body, &m); err != nil {
				h.t.Fatal(err)
			}
			return m
		}
	}
	h.t.Fatalf("no %s/%s delivery", event, action)
	return nil
}

// statusEvents decodes the deployment_status deliveries of deployment id
// from index from.
func (h *harness) statusEvents(from int, id int64) []map[string]any {
	h.t.Helper()
	var out []map[string]any
	for _, d := range h.sim.Deliveries()[from:] {
		var m map[string]any
		if d.Event != "deployment_status" || json.Unmarshal(d.Body, &m) != nil || dig(m, "deployment", "id") != float64(id) {
			continue
		}
		out = append(out, m)
	}
	return out
}

func dig(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[p]
	}
	return v
}

// deployedHarness is a harness whose acme/shop has the default workflow and
// a deployment to test, played to its end; it returns the deployment's id.
func deployedHarness(t *testing.T) (*harness, int64) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{})
	id := h.deploy("acme/shop", "test")
	h.waitIdle()
	return h, id
}

func TestWorkflowUngatedOrder(t *testing.T) {
	h, id := deployedHarness(t)
	want := []string{
		"deployment/created",
		"workflow_run/requested",
		"workflow_job/queued", // register
		"workflow_run/in_progress",
		"workflow_job/in_progress",
		"deployment_status/created", // queued, log_url = run URL
		"workflow_job/completed",
		"workflow_job/queued", // deploy
		"workflow_job/in_progress",
		"deployment_status/created", // in_progress
		"deployment_status/created", // success
		"workflow_job/completed",
		"workflow_run/completed",
	}
	if got := h.events(); !reflect.DeepEqual(got, want) {
		t.Fatalf("events:\n got %v\nwant %v", got, want)
	}
	runs := h.sim.Runs("acme/shop")
	if len(runs) != 1 || runs[0].Conclusion != "success" || runs[0].DeploymentID != id || len(runs[0].Jobs) != 2 {
		t.Fatalf("runs: %+v", runs)
	}
	runURL := fmt.Sprintf("https://github.com/acme/shop/actions/runs/%d", runs[0].ID)
	if runs[0].HTMLURL != runURL {
		t.Errorf("run URL %s", runs[0].HTMLURL)
	}
	dep := h.sim.Deployments("acme/shop")[0]
	var states []string
	for _, s := range dep.Statuses {
		states = append(states, s.State)
		if s.LogURL != runURL || s.TargetURL != runURL || s.Creator != "github-actions[bot]" {
			t.Errorf("status %s: log %s target %s creator %s", s.State, s.LogURL, s.TargetURL, s.Creator)
		}
	}
	if !reflect.DeepEqual(states, []string{"queued", "in_progress", "success"}) || dep.Statuses[2].EnvironmentURL != "https://test.example.com" {
		t.Errorf("statuses %v", states)
	}
	if len(h.sim.Deployments("acme/shop")) != 1 {
		t.Error("deployment: false created a second deployment")
	}
	run := h.payload(0, "workflow_run", "completed")
	if dig(run, "workflow_run", "event") != "deployment" || dig(run, "workflow_run", "conclusion") != "success" || dig(run, "workflow_run", "head_sha") != dep.SHA {
		t.Errorf("workflow_run: %v", run["workflow_run"])
	}
	// The job log is behind a 302 to a URL that needs no credentials.
	tok := h.token(h.org)
	r := h.do("GET", fmt.Sprintf("/repos/acme/shop/actions/jobs/%d/logs", runs[0].Jobs[1].ID), tok, nil)
	if r.status != 302 {
		t.Fatalf("logs: %d", r.status)
	}
	resp, err := http.Get(r.header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(text), "Deploying "+dep.SHA+" to test") {
		t.Errorf("log %d:\n%s", resp.StatusCode, text)
	}
	if r := h.do("GET", "/repos/acme/shop/actions/jobs/1/logs", tok, nil); r.status != 404 {
		t.Errorf("unknown job: %d", r.status)
	}
}

func TestWorkflowManualReview(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{NoRegister: true})
	h.sim.SetEnvironment("acme/shop", "staging", simulator.EnvironmentOptions{Reviewers: []string{"alice", "bob"}})
	id := h.deploy("acme/shop", "staging")
	h.waitIdle() // the run waits for a reviewer: idle
	want := []string{
		"deployment/created",
		"workflow_run/requested",
		"workflow_run/in_progress",
		"workflow_job/queued",
		"workflow_job/waiting",
		"deployment_review/requested",
	}
	if got := h.events(); !reflect.DeepEqual(got, want) {
		t.Fatalf("events:\n got %v\nwant %v", got, want)
	}
	req := h.payload(0, "deployment_review", "requested")
	if dig(req, "requestor", "login") != "lastmile[bot]" || dig(req, "environment") != "staging" || dig(req, "workflow_job_run", "name") != "deploy" || req["since"] == nil {
		t.Errorf("requested: %v", req)
	}
	if revs := req["reviewers"].([]any); len(revs) != 2 || dig(revs[0].(map[string]any), "reviewer", "login") != "alice" {
		t.Errorf("reviewers: %v", req["reviewers"])
	}
	// As in GitHub's example: the run waits.
	if got := dig(req, "workflow_run", "status"); got != "waiting" {
		t.Errorf("requested: workflow_run.status %v, want waiting", got)
	}
	queued := h.payload(0, "workflow_job", "queued")
	if dig(queued, "workflow_job", "status") != "waiting" || queued["deployment"] != nil {
		t.Errorf("queued: status %v deployment %v", dig(queued, "workflow_job", "status"), queued["deployment"])
	}
	pending := h.sim.PendingReviews("acme/shop")
	runs := h.sim.Runs("acme/shop")
	if len(pending) != 1 || pending[0].RunID != runs[0].ID || pending[0].Environment != "staging" || !runs[0].Waiting {
		t.Fatalf("pending %+v runs %+v", pending, runs)
	}
	if err := h.sim.Approve("acme/shop", pending[0].RunID, "staging", "mallory", "me"); err == nil {
		t.Error("a non-reviewer approved")
	}
	if err := h.sim.Approve("acme/shop", pending[0].RunID, "production", "alice", ""); err == nil {
		t.Error("approved the wrong environment")
	}
	n := len(h.sim.Deliveries())
	if err := h.sim.Approve("acme/shop", pending[0].RunID, "staging", "bob", "ship it"); err != nil {
		t.Fatal(err)
	}
	h.waitIdle()
	want = []string{
		"deployment_review/approved",
		"workflow_job/queued", // again, released to a runner
		"workflow_job/in_progress",
		"deployment_status/created",
		"deployment_status/created",
		"workflow_job/completed",
		"workflow_run/completed",
	}
	if got := h.eventsFrom(n); !reflect.DeepEqual(got, want) {
		t.Fatalf("after approval:\n got %v\nwant %v", got, want)
	}
	if again := h.payload(n, "workflow_job", "queued"); dig(again, "workflow_job", "status") != "queued" || dig(again, "workflow_job", "id") != dig(queued, "workflow_job", "id") {
		t.Errorf("queued again: %v", again["workflow_job"])
	}
	ap := h.payload(n, "deployment_review", "approved")
	if dig(ap, "approver", "login") != "bob" || ap["comment"] != "ship it" || len(ap["workflow_job_runs"].([]any)) != 1 || dig(ap, "workflow_run", "id") != float64(runs[0].ID) {
		t.Errorf("approved: %v", ap)
	}
	if d := h.sim.Deployments("acme/shop")[0]; d.ID != id || d.State() != "success" {
		t.Errorf("deployment %+v", d)
	}
	if len(h.sim.PendingReviews("acme/shop")) != 0 {
		t.Error("still pending")
	}
}

// GitHub's environment names ignore case: a deployment to "Staging" runs
// its job in the environment "staging", gated by that environment's
// reviewers, and it approves as "STAGING" as well.
func TestWorkflowEnvironmentNamesIgnoreCase(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{NoRegister: true})
	h.sim.SetEnvironment("acme/shop", "staging", simulator.EnvironmentOptions{Reviewers: []string{"alice"}})
	id := h.deploy("acme/shop", "Staging")
	h.waitIdle()
	pending := h.sim.PendingReviews("acme/shop")
	if len(pending) != 1 {
		t.Fatalf("a deployment to %q waits for %d reviews, want 1 (the environment %q's reviewers); events %v", "Staging", len(pending), "staging", h.events())
	}
	if err := h.sim.Approve("acme/shop", pending[0].RunID, "STAGING", "alice", ""); err != nil {
		t.Fatal(err)
	}
	h.waitIdle()
	if d := h.sim.Deployments("acme/shop")[0]; d.ID != id || d.State() != "success" {
		t.Errorf("deployment %+v, want %d in success", d, id)
	}
}

func TestWorkflowRejectedAndTimedOut(t *testing.T) {
	for name, tc := range map[string]struct {
		policy simulator.ReviewPolicy
		review string // the deployment_review action sent, if any
	}{
		"rejected":  {simulator.AutoReject("alice", "no"), "deployment_review/rejected"},
		"timed out": {simulator.Timeout(), ""},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, simulator.Options{})
			h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
			h.sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{NoRegister: true})
			h.sim.SetEnvironment("acme/shop", "production", simulator.EnvironmentOptions{Reviewers: []string{"alice"}, Review: tc.policy})
			h.deploy("acme/shop", "production")
			h.waitIdle()
			want := []string{"deployment/created", "workflow_run/requested", "workflow_run/in_progress", "workflow_job/queued", "workflow_job/waiting", "deployment_review/requested"}
			if tc.review != "" {
				want = append(want, tc.review)
			}
			want = append(want, "workflow_job/completed", "workflow_run/completed")
			if got := h.events(); !reflect.DeepEqual(got, want) {
				t.Fatalf("events:\n got %v\nwant %v", got, want)
			}
			run := h.sim.Runs("acme/shop")[0]
			if run.Conclusion != "failure" || run.Jobs[0].Conclusion != "failure" {
				t.Errorf("run %+v", run)
			}
			// Nothing reports on the app's deployment: the app must.
			if d := h.sim.Deployments("acme/shop")[0]; len(d.Statuses) != 0 {
				t.Errorf("statuses: %+v", d.Statuses)
			}
		})
	}
}

func TestWorkflowCustomRuleWithoutDeploymentFails(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{NoRegister: true})
	h.sim.SetEnvironment("acme/shop", "production", simulator.EnvironmentOptions{CustomProtectionRule: true})
	h.deploy("acme/shop", "production")
	h.waitIdle()
	want := []string{"deployment/created", "workflow_run/requested", "workflow_run/in_progress", "workflow_job/queued", "workflow_job/completed", "workflow_run/completed"}
	if got := h.events(); !reflect.DeepEqual(got, want) {
		t.Fatalf("events:\n got %v\nwant %v", got, want)
	}
	if run := h.sim.Runs("acme/shop")[0]; run.Conclusion != "failure" || !strings.Contains(run.Jobs[0].Log, "custom deployment protection rule") {
		t.Errorf("run %+v", run)
	}
}

func TestWorkflowTwinDeploymentAndProtectionRule(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{NoRegister: true, CreateDeployment: true})
	h.sim.SetEnvironment("acme/shop", "production", simulator.EnvironmentOptions{CustomProtectionRule: true})
	id := h.deploy("acme/shop", "production")
	h.waitIdle()
	want := []string{
		"deployment/created", // the app's
		"workflow_run/requested",
		"workflow_run/in_progress",
		"deployment/created", // Actions' twin
		"workflow_job/queued",
		"workflow_job/waiting",
		"deployment_status/created", // twin waiting
		"deployment_protection_rule/requested",
	}
	if got := h.events(); !reflect.DeepEqual(got, want) {
		t.Fatalf("events:\n got %v\nwant %v", got, want)
	}
	deps := h.sim.Deployments("acme/shop")
	run := h.sim.Runs("acme/shop")[0]
	if len(deps) != 2 || deps[1].SHA != deps[0].SHA || deps[1].Environment != "production" || deps[1].Creator != "lastmile[bot]" ||
		deps[1].App != "github-actions" || deps[1].WorkflowRunID != run.ID || run.Jobs[0].TwinDeploymentID != deps[1].ID {
		t.Fatalf("twin: %+v run %+v", deps, run)
	}
	var twinEvent map[string]any
	for _, d := range h.sim.Deliveries() {
		if d.Event == "deployment" {
			json.Unmarshal(d.Body, &twinEvent) // the last one
		}
	}
	if dig(twinEvent, "workflow_run", "id") != float64(run.ID) || dig(twinEvent, "workflow", "path") != ".github/workflows/deploy.yml" {
		t.Errorf("twin deployment event: workflow_run %v", twinEvent["workflow_run"])
	}
	if q := h.payload(0, "workflow_job", "queued"); dig(q, "deployment", "id") != float64(deps[1].ID) {
		t.Errorf("queued job deployment: %v", q["deployment"])
	}
	// Only queued carries it (GitHub's example of run 4747967848 sends it
	// with queued, not with waiting).
	if d, found := h.payload(0, "workflow_job", "waiting")["deployment"]; found {
		t.Errorf("waiting job deployment: %v", d)
	}
	rule := h.payload(0, "deployment_protection_rule", "requested")
	callback := fmt.Sprintf("%srepos/acme/shop/actions/runs/%d/deployment_protection_rule", h.api, run.ID)
	if rule["deployment_callback_url"] != callback || rule["environment"] != "production" || rule["event"] != "deployment" ||
		rule["sha"] != deps[0].SHA || rule["ref"] != deps[0].Ref || dig(rule, "deployment", "id") != float64(deps[1].ID) {
		t.Errorf("rule event: %v", rule)
	}

	// Answering: only this app's pending rule, with an installation token.
	tok := h.token(h.org)
	path := fmt.Sprintf("/repos/acme/shop/actions/runs/%d/deployment_protection_rule", run.ID)
	if r := h.do("POST", path, tok, map[string]string{"environment_name": "staging", "state": "approved"}); r.status != 422 {
		t.Errorf("wrong environment: %d", r.status)
	}
	if r := h.do("POST", "/repos/acme/shop/actions/runs/1/deployment_protection_rule", tok, map[string]string{"environment_name": "production", "state": "approved"}); r.status != 404 {
		t.Errorf("unknown run: %d", r.status)
	}
	if r := h.do("POST", path, tok, map[string]string{"environment_name": "production", "state": "maybe"}); r.status != 422 {
		t.Errorf("bad state: %d", r.status)
	}
	if r := h.do("POST", path, tok, map[string]string{"environment_name": "production", "comment": "checking"}); r.status != 204 {
		t.Errorf("status report: %d", r.status)
	}
	n := len(h.sim.Deliveries())
	if r := h.do("POST", path, tok, map[string]string{"environment_name": "production", "state": "approved", "comment": "ok"}); r.status != 204 || len(r.body) != 0 {
		t.Fatalf("approve: %d %s", r.status, r.body)
	}
	h.waitIdle()
	if r := h.do("POST", path, tok, map[string]string{"environment_name": "production", "state": "approved"}); r.status != 422 {
		t.Errorf("answer after the run: %d", r.status)
	}
	want = []string{
		"deployment_status/created", // twin queued
		"workflow_job/queued",       // again, released to a runner
		"workflow_job/in_progress",
		"deployment_status/created", // twin in_progress (Actions)
		"deployment_status/created", // app's deployment in_progress
		"deployment_status/created", // app's deployment success
		"deployment_status/created", // twin success
		"workflow_job/completed",
		"workflow_run/completed",
	}
	if got := h.eventsFrom(n); !reflect.DeepEqual(got, want) {
		t.Fatalf("after approval:\n got %v\nwant %v", got, want)
	}
	// Queued again, with the twin as the first time.
	if again := h.payload(n, "workflow_job", "queued"); dig(again, "workflow_job", "status") != "queued" || dig(again, "deployment", "id") != float64(deps[1].ID) {
		t.Errorf("queued again: status %v, deployment %v", dig(again, "workflow_job", "status"), again["deployment"])
	}
	// Actions reports on the twin as the run's actor, via no App.
	var twinStates []any
	for _, p := range h.statusEvents(0, deps[1].ID) {
		ds := p["deployment_status"].(map[string]any)
		twinStates = append(twinStates, ds["state"])
		if via, ok := ds["performed_via_github_app"]; dig(ds, "creator", "login") != "lastmile[bot]" || dig(p, "sender", "login") != "lastmile[bot]" || !ok || via != nil {
			t.Errorf("twin status %v: creator %v, sender %v, performed_via_github_app %v", ds["state"], dig(ds, "creator", "login"), dig(p, "sender", "login"), via)
		}
	}
	if want := []any{"waiting", "queued", "in_progress", "success"}; !reflect.DeepEqual(twinStates, want) {
		t.Errorf("twin statuses %v, want %v", twinStates, want)
	}
	reviews := h.sim.ProtectionRuleReviews("acme/shop")
	if len(reviews) != 2 || reviews[0].State != "" || reviews[1].State != "approved" || reviews[1].Comment != "ok" {
		t.Errorf("reviews: %+v", reviews)
	}
	for _, d := range h.sim.Deployments("acme/shop") {
		if d.State() != "success" {
			t.Errorf("deployment %d (%s): %s", d.ID, d.App, d.State())
		}
	}
	_ = id

	// A rejection fails the job.
	h.deploy("acme/shop", "production")
	h.waitIdle()
	run2 := h.sim.Runs("acme/shop")[1]
	path = fmt.Sprintf("/repos/acme/shop/actions/runs/%d/deployment_protection_rule", run2.ID)
	if r := h.do("POST", path, tok, map[string]string{"environment_name": "production", "state": "rejected", "comment": "staging first"}); r.status != 204 {
		t.Fatalf("reject: %d", r.status)
	}
	h.waitIdle()
	if run2, _ = h.sim.Run("acme/shop", run2.ID); run2.Conclusion != "failure" {
		t.Errorf("rejected run: %+v", run2)
	}
	var rejected []string
	for _, p := range h.statusEvents(0, run2.Jobs[0].TwinDeploymentID) {
		rejected = append(rejected, fmt.Sprint(dig(p, "deployment_status", "state")))
	}
	if want := []string{"waiting", "failure"}; !reflect.DeepEqual(rejected, want) {
		t.Errorf("the rejected job's deployment: statuses %v, want %v", rejected, want)
	}
}

func TestWorkflowDeployFunc(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.CreateRepo(h.org, "acme/other", simulator.RepoOptions{})
	var seen simulator.JobContext
	h.sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{
		NoRegister: true,
		Deploy: func(ctx context.Context, job simulator.JobContext) error {
			seen = job
			fmt.Fprintln(job.Log, "hello from the runner")
			var ev struct {
				Deployment struct {
					ID          int64  `json:"id"`
					Environment string `json:"environment"`
				} `json:"deployment"`
			}
			if err := json.Unmarshal(job.Event, &ev); err != nil {
				return err
			}
			// What the lastmile Action does: report with GITHUB_TOKEN.
			c := github.NewClient(nil).WithAuthToken(job.Token)
			c.BaseURL, _ = c.BaseURL.Parse(job.APIURL + "/")
			owner, name, _ := strings.Cut(job.Repository, "/")
			if _, _, err := c.Repositories.CreateDeploymentStatus(ctx, owner, name, ev.Deployment.ID, &github.DeploymentStatusRequest{
				State: github.String("success"), LogURL: github.String(job.RunURL), Environment: github.String(ev.Deployment.Environment),
			}); err != nil {
				return err
			}
			// The token is for this repository only.
			if _, _, err := c.Repositories.ListDeployments(ctx, "acme", "other", nil); err == nil {
				return errors.New("workflow token reached another repository")
			}
			// Deployments it creates do not start workflows.
			if _, _, err := c.Repositories.CreateDeployment(ctx, owner, name, &github.DeploymentRequest{Ref: github.String(job.SHA), Environment: github.String("side"), AutoMerge: github.Bool(false), RequiredContexts: &[]string{}}); err != nil {
				return err
			}
			return errors.New("smoke test failed")
		},
	})
	id := h.deploy("acme/shop", "test")
	h.waitIdle()
	if seen.DeploymentID != id || seen.Environment != "test" || seen.Repository != "acme/shop" || seen.Token == "" || seen.EventName != "deployment" || seen.APIURL+"/" != h.api {
		t.Errorf("job context: %+v", seen)
	}
	runs := h.sim.Runs("acme/shop")
	if len(runs) != 1 || runs[0].Conclusion != "failure" || !strings.Contains(runs[0].Jobs[0].Log, "hello from the runner") || !strings.Contains(runs[0].Jobs[0].Log, "smoke test failed") {
		t.Fatalf("runs: %+v", runs)
	}
	deps := h.sim.Deployments("acme/shop")
	if len(deps) != 2 || deps[0].State() != "success" || deps[0].Statuses[0].Creator != "github-actions[bot]" || deps[1].Creator != "github-actions[bot]" {
		t.Errorf("deployments: %+v", deps)
	}
	// The token ends with the run.
	if r := h.do("GET", "/repos/acme/shop/deployments", "token "+seen.Token, nil); r.status != 401 {
		t.Errorf("token after the run: %d", r.status)
	}
	var byWorkflow int
	for _, r := range h.sim.Requests() {
		if r.Auth == simulator.AuthWorkflow {
			byWorkflow++
		}
	}
	if byWorkflow != 3 {
		t.Errorf("workflow-token requests: %d", byWorkflow)
	}
}

func TestCancelRun(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{})
	h.sim.SetEnvironment("acme/shop", "staging", simulator.EnvironmentOptions{Reviewers: []string{"alice"}, Review: simulator.Manual()})
	h.deploy("acme/shop", "staging")
	h.waitIdle()
	run := h.sim.Runs("acme/shop")[0]
	if err := h.sim.CancelRun("acme/shop", run.ID); err != nil {
		t.Fatal(err)
	}
	if err := h.sim.WaitFor(h.ctx(), func(s *simulator.Simulator) bool {
		r, _ := s.Run("acme/shop", run.ID)
		return r.Status == "completed"
	}); err != nil {
		t.Fatal(err)
	}
	h.waitIdle()
	run, _ = h.sim.Run("acme/shop", run.ID)
	if run.Conclusion != "cancelled" || run.Jobs[1].Conclusion != "cancelled" {
		t.Errorf("run %+v", run)
	}
	if err := h.sim.CancelRun("acme/shop", run.ID); err == nil {
		t.Error("cancelled a finished run")
	}
	if got := h.events(); got[len(got)-1] != "workflow_run/completed" {
		t.Errorf("events %v", got)
	}
}

func TestWorkflowWaitTimer(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{NoRegister: true})
	h.sim.SetEnvironment("acme/shop", "production", simulator.EnvironmentOptions{WaitTimer: 20 * time.Millisecond})
	start := time.Now()
	id := h.deploy("acme/shop", "production")
	waitState(t, h, "acme/shop", id, "success")
	if elapsed := time.Since(start); elapsed < 20*time.Millisecond {
		t.Errorf("wait timer not applied: %v", elapsed)
	}
	h.waitIdle()
	want := []string{"deployment/created", "workflow_run/requested", "workflow_run/in_progress", "workflow_job/queued", "workflow_job/waiting",
		"workflow_job/queued", "workflow_job/in_progress", "deployment_status/created", "deployment_status/created", "workflow_job/completed", "workflow_run/completed"}
	if got := h.events(); !reflect.DeepEqual(got, want) {
		t.Fatalf("events:\n got %v\nwant %v", got, want)
	}
}

func TestRerunFailedJobs(t *testing.T) {
	var mu sync.Mutex
	var later time.Duration // the simulator's clock runs ahead by this much
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(later) }
	h := newHarness(t, simulator.Options{Clock: clock})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{FailEnvironments: []string{"test"}})
	h.deploy("acme/shop", "test")
	h.waitIdle()
	run := h.sim.Runs("acme/shop")[0]
	if run.Conclusion != "failure" || run.Attempt != 1 {
		t.Fatalf("first attempt: %+v", run)
	}
	from := len(h.events())
	mu.Lock()
	later = time.Hour // someone re-runs it an hour later
	mu.Unlock()
	if err := h.sim.RerunFailedJobs("acme/shop", run.ID); err != nil {
		t.Fatal(err)
	}
	h.waitIdle()
	want := []string{
		"workflow_run/requested",
		"workflow_run/in_progress",
		"workflow_job/queued", // deploy, attempt 2; register is not run again
		"workflow_job/in_progress",
		"deployment_status/created", // in_progress
		"deployment_status/created", // failure: the workflow still fails
		"workflow_job/completed",
		"workflow_run/completed",
	}
	if got := h.eventsFrom(from); !reflect.DeepEqual(got, want) {
		t.Fatalf("re-run events:\n got %v\nwant %v", got, want)
	}
	for _, ev := range []string{"workflow_run", "workflow_job"} {
		p := h.payload(from, ev, "completed")
		if got := dig(p, ev, "run_attempt"); got != float64(2) {
			t.Errorf("%s completed: run_attempt %v, want 2", ev, got)
		}
	}
	first, second := h.payload(0, "workflow_run", "completed"), h.payload(from, "workflow_run", "completed")
	if prev, _ := dig(second, "workflow_run", "previous_attempt_url").(string); !strings.HasSuffix(prev, fmt.Sprintf("/actions/runs/%d/attempts/1", run.ID)) {
		t.Errorf("attempt 2's previous_attempt_url = %v", dig(second, "workflow_run", "previous_attempt_url"))
	}
	if dig(first, "workflow_run", "previous_attempt_url") != nil {
		t.Errorf("attempt 1's previous_attempt_url = %v, want null", dig(first, "workflow_run", "previous_attempt_url"))
	}
	if a, b := dig(first, "workflow_run", "run_started_at"), dig(second, "workflow_run", "run_started_at"); a == b {
		t.Errorf("run_started_at %v did not reset on the re-run", b)
	}
	run, _ = h.sim.Run("acme/shop", run.ID)
	if run.Attempt != 2 || run.Status != "completed" || len(run.Jobs) != 3 {
		t.Errorf("after the re-run: %+v", run)
	}

	// A run that succeeded has no failed jobs to re-run.
	h.sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{})
	if err := h.sim.RerunFailedJobs("acme/shop", run.ID); err != nil {
		t.Fatal(err)
	}
	h.waitIdle()
	if err := h.sim.RerunFailedJobs("acme/shop", run.ID); err == nil {
		t.Error("re-running a successful run's failed jobs was accepted")
	}
}

// Jobs that own their deployments, test then staging (`needs:`): the test
// job's deployment reports success when the job ends, then the staging
// job's deployment is created and its custom rule asked; a rejection fails
// the run, and a re-run runs the staging job again, not the test job.
func TestWorkflowNextEnvironments(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{NoRegister: true, CreateDeployment: true, NextEnvironments: []string{"staging"}})
	h.sim.SetEnvironment("acme/shop", "staging", simulator.EnvironmentOptions{CustomProtectionRule: true})
	h.deploy("acme/shop", "test")
	h.waitIdle()
	want := []string{
		"deployment/created", // the app's, to test
		"workflow_run/requested",
		"workflow_run/in_progress",
		"deployment/created", // the test job's
		"workflow_job/queued",
		"workflow_job/in_progress",
		"deployment_status/created", // test job's deployment in_progress
		"deployment_status/created", // app's deployment in_progress
		"deployment_status/created", // app's deployment success
		"deployment_status/created", // test job's deployment success (auto_inactive's inactive on the app's sends nothing)
		"workflow_job/completed",
		"deployment/created", // the staging job's
		"workflow_job/queued",
		"workflow_job/waiting",
		"deployment_status/created", // the staging job's deployment waiting
		"deployment_protection_rule/requested",
	}
	if got := h.events(); !reflect.DeepEqual(got, want) {
		t.Fatalf("events:\n got %v\nwant %v", got, want)
	}
	deps := h.sim.Deployments("acme/shop")
	run := h.sim.Runs("acme/shop")[0]
	if len(deps) != 3 || deps[2].Environment != "staging" || deps[2].SHA != deps[0].SHA || deps[2].WorkflowRunID != run.ID ||
		len(run.Jobs) != 2 || run.Jobs[1].Name != "deploy-staging" || run.Jobs[1].TwinDeploymentID != deps[2].ID || !run.Waiting {
		t.Fatalf("deployments %+v run %+v", deps, run)
	}
	if rule := h.payload(0, "deployment_protection_rule", "requested"); rule["environment"] != "staging" || dig(rule, "deployment", "id") != float64(deps[2].ID) {
		t.Errorf("rule event: %v", rule)
	}
	path := fmt.Sprintf("/repos/acme/shop/actions/runs/%d/deployment_protection_rule", run.ID)
	if r := h.do("POST", path, h.token(h.org), map[string]string{"environment_name": "staging", "state": "rejected"}); r.status != 204 {
		t.Fatalf("reject: %d %s", r.status, r.body)
	}
	h.waitIdle()
	run, _ = h.sim.Run("acme/shop", run.ID)
	if run.Conclusion != "failure" || run.Jobs[0].Conclusion != "success" || run.Jobs[1].Conclusion != "failure" {
		t.Fatalf("after the rejection: %+v", run)
	}
	if st := h.sim.Deployments("acme/shop")[2].State(); st != "failure" {
		t.Errorf("staging job's deployment: %s", st)
	}

	n := len(h.sim.Deliveries())
	if err := h.sim.RerunFailedJobs("acme/shop", run.ID); err != nil {
		t.Fatal(err)
	}
	h.waitIdle()
	want = []string{
		"workflow_run/requested",
		"workflow_run/in_progress",
		"deployment/created", // the staging job's, again
		"workflow_job/queued",
		"workflow_job/waiting",
		"deployment_status/created", // waiting
		"deployment_protection_rule/requested",
	}
	if got := h.eventsFrom(n); !reflect.DeepEqual(got, want) {
		t.Fatalf("re-run:\n got %v\nwant %v", got, want)
	}
	if r := h.do("POST", path, h.token(h.org), map[string]string{"environment_name": "staging", "state": "approved"}); r.status != 204 {
		t.Fatalf("approve: %d %s", r.status, r.body)
	}
	h.waitIdle()
	if run, _ = h.sim.Run("acme/shop", run.ID); run.Conclusion != "success" || run.Attempt != 2 {
		t.Errorf("re-run: %+v", run)
	}

	// A run for a deployment to staging has its deploy job only.
	h.deploy("acme/shop", "staging")
	h.waitIdle()
	runs := h.sim.Runs("acme/shop")
	if jobs := runs[1].Jobs; len(jobs) != 1 || jobs[0].Name != "deploy" || jobs[0].Environment != "staging" {
		t.Errorf("run for a deployment to staging: %+v", jobs)
	}
}

// Jobs that `needs:` a failed one are skipped, and so is every job of a
// run for a deployment whose payload lacks the key the jobs' `if:`
// requires: GitHub sends only their completed event, conclusion skipped,
// with no steps and no runner; a run whose every job was skipped concludes
// skipped, and nothing is posted on its deployment.
func TestWorkflowSkippedJobs(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{NoRegister: true, JobsIf: "stage",
		FailEnvironments: []string{"test"}, NextEnvironments: []string{"staging", "production"}})
	h.deploy("acme/shop", "test") // its payload has "stage"
	h.waitIdle()
	if got, want := h.events()[len(h.events())-4:], []string{
		"workflow_job/completed", // deploy: failure
		"workflow_job/completed", // deploy-staging: skipped
		"workflow_job/completed", // deploy-production: skipped
		"workflow_run/completed",
	}; !reflect.DeepEqual(got, want) {
		t.Fatalf("events after the failed deploy job: %v, want %v", got, want)
	}
	run := h.sim.Runs("acme/shop")[0]
	var jobs []string
	for _, j := range run.Jobs {
		jobs = append(jobs, j.Name+" "+j.Conclusion)
	}
	if run.Conclusion != "failure" || !slices.Equal(jobs, []string{"deploy failure", "deploy-staging skipped", "deploy-production skipped"}) {
		t.Errorf("run %s, jobs %v; want failure, the jobs after deploy skipped", run.Conclusion, jobs)
	}
	var skipped map[string]any
	for _, d := range h.sim.Deliveries() {
		var m map[string]any
		if d.Event == "workflow_job" && json.Unmarshal(d.Body, &m) == nil && dig(m, "workflow_job", "name") == "deploy-staging" {
			skipped = m
		}
	}
	if skipped == nil || dig(skipped, "workflow_job", "conclusion") != "skipped" || dig(skipped, "workflow_job", "runner_name") != nil ||
		len(dig(skipped, "workflow_job", "steps").([]any)) != 0 || dig(skipped, "workflow_job", "started_at") != dig(skipped, "workflow_job", "completed_at") {
		t.Errorf("the skipped job's event: %v", skipped)
	}

	n := len(h.sim.Deliveries())
	owner, name := "acme", "shop"
	d, _, err := h.client(h.org, nil).Repositories.CreateDeployment(h.ctx(), owner, name, &github.DeploymentRequest{
		Ref: github.String(h.sim.Branch("acme/shop", "main")), Environment: github.String("test"), RequiredContexts: &[]string{}})
	if err != nil {
		t.Fatal(err)
	}
	h.waitIdle()
	if got, want := h.eventsFrom(n), []string{"deployment/created", "workflow_run/requested", "workflow_job/completed", "workflow_run/completed"}; !reflect.DeepEqual(got, want) {
		t.Errorf("events for a deployment without the key: %v, want %v", got, want)
	}
	for _, ru := range h.sim.Runs("acme/shop") {
		if ru.DeploymentID == d.GetID() && ru.Conclusion != "skipped" {
			t.Errorf("its run concluded %q, want skipped", ru.Conclusion)
		}
	}
	for _, dep := range h.sim.Deployments("acme/shop") {
		if dep.ID == d.GetID() && len(dep.Statuses) != 0 {
			t.Errorf("statuses posted on it: %+v", dep.Statuses)
		}
	}
}

// A workflow on push that owns its deployments (PushEnvironments): a push
// to the default branch starts a run on "push" by the pusher, whose jobs
// deploy the commit through the environments in order, each with Actions'
// own deployment (no payload, its statuses on it) and its environment's
// rules; the job after a failed one is skipped. A push to another branch,
// and a deployment created through the API, start no run of it.
func TestWorkflowOnPushOwnsItsDeployments(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{Name: "CI", PushEnvironments: []string{"test", "staging", "production"},
		FailEnvironments: []string{"production"}})
	h.sim.SetEnvironment("acme/shop", "staging", simulator.EnvironmentOptions{CustomProtectionRule: true})
	h.sim.Push("acme/shop", "feature", simulator.CommitSpec{Message: "Not on main"})
	h.deploy("acme/shop", "test")
	h.waitIdle()
	if runs := h.sim.Runs("acme/shop"); len(runs) != 0 {
		t.Fatalf("runs after a push to another branch and a deployment: %+v; want none", runs)
	}
	from := len(h.sim.Deliveries())
	push := h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "Ship it", Author: simulator.Author{Login: "alice", Name: "Alice", Email: "alice@example.com"}})
	h.waitIdle()
	want := []string{
		"push",
		"workflow_run/requested",
		"workflow_run/in_progress",
		"deployment/created", // the test job's
		"workflow_job/queued",
		"workflow_job/in_progress",
		"deployment_status/created", // in_progress
		"deployment_status/created", // success
		"workflow_job/completed",
		"deployment/created", // the staging job's
		"workflow_job/queued",
		"workflow_job/waiting",
		"deployment_status/created", // waiting
		"deployment_protection_rule/requested",
	}
	if got := h.eventsFrom(from); !reflect.DeepEqual(got, want) {
		t.Fatalf("events:\n got %v\nwant %v", got, want)
	}
	run := h.sim.Runs("acme/shop")[0]
	if run.Event != "push" || run.DeploymentID != 0 || !run.Waiting {
		t.Errorf("run %+v; want one on push, waiting for staging's rule", run)
	}
	if wr := h.payload(from, "workflow_run", "requested"); dig(wr, "workflow_run", "event") != "push" ||
		dig(wr, "workflow_run", "head_sha") != push.After || dig(wr, "workflow_run", "actor", "login") != "alice" {
		t.Errorf("workflow_run requested: %v", wr["workflow_run"])
	}
	dep := h.payload(from, "deployment", "created")
	if dig(dep, "deployment", "sha") != push.After || dig(dep, "deployment", "environment") != "test" ||
		dig(dep, "deployment", "ref") != "refs/heads/main" || dig(dep, "workflow_run", "event") != "push" ||
		dig(dep, "deployment", "creator", "login") != "alice" {
		t.Errorf("the test job's deployment event: %v", dep)
	}
	if rule := h.payload(from, "deployment_protection_rule", "requested"); rule["event"] != "push" || rule["environment"] != "staging" {
		t.Errorf("rule event: event %v, environment %v; want push, staging", rule["event"], rule["environment"])
	}
	path := fmt.Sprintf("/repos/acme/shop/actions/runs/%d/deployment_protection_rule", run.ID)
	if r := h.do("POST", path, h.token(h.org), map[string]string{"environment_name": "staging", "state": "approved"}); r.status != 204 {
		t.Fatalf("approve: %d %s", r.status, r.body)
	}
	h.waitIdle()
	run, _ = h.sim.Run("acme/shop", run.ID)
	var jobs []string
	for _, j := range run.Jobs {
		jobs = append(jobs, j.Name+" "+j.Conclusion)
	}
	if run.Conclusion != "failure" || !slices.Equal(jobs, []string{"deploy-test success", "deploy-staging success", "deploy-production failure"}) {
		t.Errorf("run %s, jobs %v; want failure in production", run.Conclusion, jobs)
	}
	states := map[string]string{}
	for _, d := range h.sim.Deployments("acme/shop") {
		if d.WorkflowRunID == run.ID {
			states[d.Environment] = d.State()
		}
	}
	if fmt.Sprint(states) != "map[production:failure staging:success test:success]" {
		t.Errorf("the jobs' deployments' latest statuses: %v; want production's failure, staging's success and test's success (another environment's success leaves it active)", states)
	}
}
