package simulator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/githubapp/simulator/oasvalidate"
)

// The conformance test drives the simulator through a full flow with the
// real clients (ghinstallation v2 + go-github v62) and checks, against
// GitHub's own published descriptions (trimmed copies in testdata/, see
// testdata/README.md):
//   - every request the clients sent and every response the simulator gave,
//     against the REST OpenAPI description (operation exists, request body,
//     declared response status, response body);
//   - every webhook body, against the webhook schema of its event and action
//     in both the description's x-webhooks and @octokit/openapi-webhooks,
//     with oasvalidate: the harness's receiver checks every webhook it gets
//     (newReceiver).

// restValidator validates traffic against the REST description, with
// oasvalidate (which the app and Action tests use on the simulator's side),
// and checks the headers every GitHub answer has.
type restValidator struct {
	t    *testing.T
	v    *oasvalidate.Validator
	base http.RoundTripper

	mu      sync.Mutex
	checked map[string]map[int]bool // "METHOD path-template" -> statuses seen
}

func newRESTValidator(t *testing.T) *restValidator {
	t.Helper()
	v, err := oasvalidate.Load()
	if err != nil {
		t.Fatal(err)
	}
	return &restValidator{t: t, v: v, base: http.DefaultTransport, checked: map[string]map[int]bool{}}
}

// RoundTrip validates the request, sends it, and validates the response.
func (v *restValidator) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasPrefix(req.URL.Path, "/_simulator/") {
		// The job-log blob behind a 302: not part of the API.
		return v.base.RoundTrip(req)
	}
	var reqBody []byte
	if req.Body != nil {
		reqBody, _ = io.ReadAll(req.Body)
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	op, err := v.v.Request(req, reqBody)
	if op == nil {
		v.t.Errorf("%s %s: %v", req.Method, req.URL.Path, err)
		return v.base.RoundTrip(req)
	}
	if invalid, _ := req.Context().Value(expectInvalidKey{}).(bool); err != nil && !invalid {
		v.t.Errorf("%s %s: %v\nbody: %s", req.Method, req.URL.Path, err, reqBody)
	}
	resp, err := v.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	respBody, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(respBody))
	if err := v.v.Response(op, resp.StatusCode, resp.Header, respBody); err != nil {
		v.t.Errorf("%s %s: %v\nbody: %.2000s", req.Method, req.URL.Path, err, respBody)
	}
	for _, h := range []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Used", "X-RateLimit-Reset", "X-RateLimit-Resource", "X-GitHub-Request-Id"} {
		if resp.Header.Get(h) == "" {
			v.t.Errorf("%s %s: no %s header", req.Method, req.URL.Path, h)
		}
	}
	if len(respBody) > 0 && !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		v.t.Errorf("%s %s: Content-Type %q", req.Method, req.URL.Path, resp.Header.Get("Content-Type"))
	}
	v.mu.Lock()
	key := op.String()
	if v.checked[key] == nil {
		v.checked[key] = map[int]bool{}
	}
	v.checked[key][resp.StatusCode] = true
	v.mu.Unlock()
	return resp, nil
}

// expectInvalidKey marks a request context whose request is deliberately
// invalid (to test the simulator's 422 answers); its request is not
// validated, its response still is.
type expectInvalidKey struct{}

// schemaName maps an event and action to GitHub's schema name, e.g.
// deployment_review + approved -> webhook-deployment-review-approved.
func schemaName(event, action string) string {
	name := "webhook-" + strings.ReplaceAll(event, "_", "-")
	if action != "" {
		name += "-" + strings.ReplaceAll(action, "_", "-")
	}
	return name
}

func TestConformance(t *testing.T) {
	// The simulator's clock runs behind the real one by ago, for deliveries
	// made in the past.
	var ago atomic.Int64
	h := newHarness(t, simulator.Options{Clock: func() time.Time { return time.Now().Add(-time.Duration(ago.Load())) }})
	sim := h.sim
	v := newRESTValidator(t)
	gh := h.client(h.org, v)
	app := h.appClient(v)
	ctx := h.ctx()

	// World: one organization repository per workflow flavour.
	const repo = "acme/shop"
	// Custom properties of every kind (a multi_select one's value is an
	// array) in its repository objects.
	sim.CreateRepo(h.org, repo, simulator.RepoOptions{Files: map[string]string{"big.bin": strings.Repeat("x", 1<<20+1)},
		CustomProperties: map[string]any{"teams": []string{"payments", "platform"}, "tier": "gold", "owner": nil}})
	sim.CreateRepo(h.org, "acme/twin", simulator.RepoOptions{})
	sim.SetWorkflow(repo, simulator.WorkflowOptions{FailEnvironments: []string{"broken"}})
	// And a workflow that tells a chat of each deployment: a run more.
	sim.AddWorkflow(repo, simulator.WorkflowOptions{Name: "Notify", Path: ".github/workflows/notify.yml", Notifier: true})
	sim.SetWorkflow("acme/twin", simulator.WorkflowOptions{CreateDeployment: true})
	sim.SetEnvironment(repo, "staging", simulator.EnvironmentOptions{Reviewers: []string{"alice"}, Review: simulator.Manual()})
	sim.SetEnvironment(repo, "production", simulator.EnvironmentOptions{Reviewers: []string{"bob"}, Review: simulator.AutoReject("bob", "not today")})
	sim.SetEnvironment("acme/twin", "production", simulator.EnvironmentOptions{
		Reviewers: []string{"carol"}, Review: simulator.AutoApprove("carol", "go"), CustomProtectionRule: true,
	})

	push := sim.Push(repo, "main",
		simulator.CommitSpec{Message: "Add config", Author: simulator.Author{Name: "Alice", Email: "alice@example.com", Login: "alice"},
			Files: map[string]string{".github/lastmile.yml": "environments:\n  - name: test\n"}},
		simulator.CommitSpec{Message: "Add app", Files: map[string]string{"app/main.go": "package main\n"}},
	)
	sha := push.After

	// Contents: a file at a commit, a directory, and a missing file.
	fc, _, _, err := gh.Repositories.GetContents(ctx, "acme", "shop", ".github/lastmile.yml", &github.RepositoryContentGetOptions{Ref: sha})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := fc.GetContent(); got != "environments:\n  - name: test\n" {
		t.Errorf("content = %q", got)
	}
	if _, _, _, err := gh.Repositories.GetContents(ctx, "acme", "shop", "app", &github.RepositoryContentGetOptions{Ref: "main"}); err != nil {
		t.Error(err)
	}
	if _, _, resp, _ := gh.Repositories.GetContents(ctx, "acme", "shop", "missing.txt", nil); resp == nil || resp.StatusCode != 404 {
		t.Errorf("missing file: %v", resp)
	}
	// A file over 1 MB: 403 with the default media type, its metadata with
	// the object media type.
	if _, _, resp, _ := gh.Repositories.GetContents(ctx, "acme", "shop", "big.bin", nil); resp == nil || resp.StatusCode != 403 {
		t.Errorf("file over 1 MB: %v", resp)
	}
	bigReq, _ := gh.NewRequest("GET", "repos/acme/shop/contents/big.bin", nil)
	bigReq.Header.Set("Accept", "application/vnd.github.object+json")
	if resp, err := gh.Do(ctx, bigReq, nil); err != nil || resp.StatusCode != 200 {
		t.Errorf("file over 1 MB, object media type: %v %v", resp, err)
	}

	// Compare and commits.
	cmp, _, err := gh.Repositories.CompareCommits(ctx, "acme", "shop", push.Before, sha, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cmp.GetTotalCommits() != 2 || cmp.GetStatus() != "ahead" || cmp.Commits[0].GetSHA() != push.Commits[0] {
		t.Errorf("compare: total %d status %s", cmp.GetTotalCommits(), cmp.GetStatus())
	}
	if _, _, err := gh.Repositories.CompareCommits(ctx, "acme", "shop", push.Before, sha, &github.ListOptions{PerPage: 1, Page: 2}); err != nil {
		t.Error(err)
	}
	if _, resp, _ := gh.Repositories.CompareCommits(ctx, "acme", "shop", "nope", sha, nil); resp == nil || resp.StatusCode != 404 {
		t.Errorf("compare unknown: %v", resp)
	}
	if _, _, err := gh.Repositories.GetCommit(ctx, "acme", "shop", sha, nil); err != nil {
		t.Error(err)
	}
	if _, resp, _ := gh.Repositories.GetCommit(ctx, "acme", "shop", "0123456789abcdef", nil); resp == nil || resp.StatusCode != 422 {
		t.Errorf("unknown commit: %v", resp)
	}

	// Commit statuses; then a deployment refused because "build" is pending.
	if _, _, err := gh.Repositories.CreateStatus(ctx, "acme", "shop", sha, &github.RepoStatus{State: github.String("pending"), Context: github.String("build"), Description: github.String("running"), TargetURL: github.String("https://ci.example.com/1")}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := gh.Repositories.ListStatuses(ctx, "acme", "shop", sha, nil); err != nil {
		t.Error(err)
	}
	if _, _, err := gh.Repositories.GetCombinedStatus(ctx, "acme", "shop", sha, nil); err != nil {
		t.Error(err)
	}
	_, resp, err := gh.Repositories.CreateDeployment(ctx, "acme", "shop", &github.DeploymentRequest{Ref: github.String(sha), Environment: github.String("test"), AutoMerge: github.Bool(false)})
	if resp == nil || resp.StatusCode != 409 {
		t.Fatalf("deployment with pending build: %v %v", resp, err)
	}
	sim.SetCommitStatus(repo, sha, "build", "success")

	// Invalid requests: 422.
	for _, body := range []string{`{"environment":"test"}`, `{"ref":"no-such-branch"}`} {
		req, _ := gh.NewRequest("POST", "repos/acme/shop/deployments", json.RawMessage(body))
		if resp, _ := gh.Do(context.WithValue(ctx, expectInvalidKey{}, true), req, nil); resp == nil || resp.StatusCode != 422 {
			t.Errorf("POST deployments %s: %v", body, resp)
		}
	}

	// A topic branch behind main: auto_merge answers 202.
	sim.PushSilently(repo, "topic", simulator.CommitSpec{Message: "topic work", Files: map[string]string{"topic.txt": "x\n"}})
	sim.Push(repo, "main", simulator.CommitSpec{Message: "more on main", Files: map[string]string{"main.txt": "y\n"}})
	if _, resp, err := gh.Repositories.CreateDeployment(ctx, "acme", "shop", &github.DeploymentRequest{Ref: github.String("topic"), RequiredContexts: &[]string{}}); resp == nil || resp.StatusCode != 202 {
		t.Errorf("auto-merge: %v %v", resp, err)
	}

	// A deployment to "test" (no gates): the workflow reports success.
	dep, _, err := gh.Repositories.CreateDeployment(ctx, "acme", "shop", &github.DeploymentRequest{
		Ref: github.String(sha), Environment: github.String("test"), AutoMerge: github.Bool(false),
		RequiredContexts: &[]string{"build"}, Payload: map[string]any{"release": 1},
		ProductionEnvironment: github.Bool(false), Description: github.String("release 1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, h, repo, dep.GetID(), "success")

	// Lists and gets.
	if _, resp, err := gh.Repositories.ListDeployments(ctx, "acme", "shop", &github.DeploymentsListOptions{Environment: "test", ListOptions: github.ListOptions{PerPage: 1}}); err != nil || resp.NextPage != 0 && resp.NextPage != 2 {
		t.Errorf("list deployments: %v", err)
	}
	if _, _, err := gh.Repositories.GetDeployment(ctx, "acme", "shop", dep.GetID()); err != nil {
		t.Error(err)
	}
	statuses, _, err := gh.Repositories.ListDeploymentStatuses(ctx, "acme", "shop", dep.GetID(), nil)
	if err != nil || len(statuses) == 0 {
		t.Fatalf("statuses: %v", err)
	}
	if _, _, err := gh.Repositories.GetDeploymentStatus(ctx, "acme", "shop", dep.GetID(), statuses[0].GetID()); err != nil {
		t.Error(err)
	}
	if _, resp, _ := gh.Repositories.GetDeployment(ctx, "acme", "shop", 1); resp == nil || resp.StatusCode != 404 {
		t.Errorf("unknown deployment: %v", resp)
	}
	long := strings.Repeat("x", 141)
	if _, resp, _ := gh.Repositories.CreateDeploymentStatus(ctx, "acme", "shop", dep.GetID(), &github.DeploymentStatusRequest{State: github.String("success"), Description: &long}); resp == nil || resp.StatusCode != 422 {
		t.Errorf("long description: %v", resp)
	}

	// Staging: a required reviewer approves by hand.
	stg, _, err := gh.Repositories.CreateDeployment(ctx, "acme", "shop", &github.DeploymentRequest{Ref: github.String(sha), Environment: github.String("staging"), AutoMerge: github.Bool(false), RequiredContexts: &[]string{}})
	if err != nil {
		t.Fatal(err)
	}
	var pending []simulator.PendingReview
	if err := sim.WaitFor(ctx, func(s *simulator.Simulator) bool { pending = s.PendingReviews(repo); return len(pending) == 1 }); err != nil {
		t.Fatal(err)
	}
	if err := sim.Approve(repo, pending[0].RunID, "staging", "alice", "lgtm"); err != nil {
		t.Fatal(err)
	}
	waitState(t, h, repo, stg.GetID(), "success")

	// Production: rejected; the app then reports failure itself.
	prd, _, err := gh.Repositories.CreateDeployment(ctx, "acme", "shop", &github.DeploymentRequest{Ref: github.String(sha), Environment: github.String("production"), AutoMerge: github.Bool(false), RequiredContexts: &[]string{}})
	if err != nil {
		t.Fatal(err)
	}
	h.waitIdle()
	if _, _, err := gh.Repositories.CreateDeploymentStatus(ctx, "acme", "shop", prd.GetID(), &github.DeploymentStatusRequest{State: github.String("failure"), Description: github.String("rejected by bob"), LogURL: github.String("https://example.com/log")}); err != nil {
		t.Error(err)
	}

	// Twin repository: custom protection rule answered by the app, and a
	// deployment created by Actions for the job.
	tw := sim.Push("acme/twin", "main", simulator.CommitSpec{Message: "init", Files: map[string]string{"x": "1"}})
	tdep, _, err := gh.Repositories.CreateDeployment(ctx, "acme", "twin", &github.DeploymentRequest{Ref: github.String("main"), Environment: github.String("production"), RequiredContexts: &[]string{}})
	if err != nil {
		t.Fatal(err)
	}
	rule, err := sim.WaitForDelivery(ctx, 0, "deployment_protection_rule", "requested")
	if err != nil {
		t.Fatal(err)
	}
	var ruleEvent struct {
		CallbackURL string `json:"deployment_callback_url"`
		SHA         string `json:"sha"`
	}
	if err := json.Unmarshal(rule.Body, &ruleEvent); err != nil || ruleEvent.SHA != tw.After {
		t.Fatalf("protection rule event: %v %+v", err, ruleEvent)
	}
	path := strings.TrimPrefix(ruleEvent.CallbackURL, strings.TrimSuffix(h.api, "/")+"/")
	req, _ := gh.NewRequest("POST", path, map[string]string{"environment_name": "production", "state": "approved", "comment": "previous stage ok"})
	if resp, err := gh.Do(ctx, req, nil); err != nil || resp.StatusCode != 204 {
		t.Fatalf("review protection rule: %v %v", resp, err)
	}
	h.waitIdle()
	runs := sim.Runs("acme/twin")
	if len(runs) != 1 || runs[0].Conclusion != "success" || runs[0].DeploymentID != tdep.GetID() {
		t.Fatalf("twin runs: %+v", runs)
	}

	// The job's own deployment: Actions' statuses on it, waiting while the
	// job waited (see waitingStatusOps), then queued once released.
	twinID := runs[0].Jobs[len(runs[0].Jobs)-1].TwinDeploymentID
	twinStatuses, _, err := gh.Repositories.ListDeploymentStatuses(ctx, "acme", "twin", twinID, nil)
	var twinStates []string
	for _, st := range twinStatuses {
		twinStates = append(twinStates, st.GetState())
	}
	if err != nil || strings.Join(twinStates, " ") != "success in_progress queued waiting" {
		t.Errorf("the twin's statuses, newest first: %v, %v; want success, in_progress, queued, waiting", twinStates, err)
	}
	if len(twinStatuses) > 0 {
		if _, _, err := gh.Repositories.GetDeploymentStatus(ctx, "acme", "twin", twinID, twinStatuses[len(twinStatuses)-1].GetID()); err != nil {
			t.Error(err)
		}
	}

	// The run, as lastmile reads it; an unknown one is 404 (GitHub's
	// description lists no 404 for this operation: an oasvalidate
	// exception).
	wr, _, err := gh.Actions.GetWorkflowRunByID(ctx, "acme", "twin", runs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if wr.GetID() != runs[0].ID || wr.GetConclusion() != "success" || wr.GetHeadSHA() != tw.After || wr.GetRepository().GetFullName() != "acme/twin" {
		t.Errorf("GET the twin run: id %d, conclusion %q, head_sha %s, repository %s", wr.GetID(), wr.GetConclusion(), wr.GetHeadSHA(), wr.GetRepository().GetFullName())
	}
	if _, resp, _ := gh.Actions.GetWorkflowRunByID(ctx, "acme", "twin", 1); resp == nil || resp.StatusCode != 404 {
		t.Errorf("unknown run: %v", resp)
	}
	// The commit's runs on the deployment event, as lastmile lists them
	// (the same run), and those not completed: none.
	listed, _, err := gh.Actions.ListRepositoryWorkflowRuns(ctx, "acme", "twin", &github.ListWorkflowRunsOptions{
		HeadSHA: tw.After, Event: "deployment", ListOptions: github.ListOptions{PerPage: 100}})
	if err != nil {
		t.Fatal(err)
	}
	if listed.GetTotalCount() != 1 || len(listed.WorkflowRuns) != 1 || listed.WorkflowRuns[0].GetID() != wr.GetID() {
		t.Errorf("the twin commit's runs: %d, %+v; want the run", listed.GetTotalCount(), listed.WorkflowRuns)
	}
	if listed, _, err := gh.Actions.ListRepositoryWorkflowRuns(ctx, "acme", "twin", &github.ListWorkflowRunsOptions{
		HeadSHA: tw.After, Status: "in_progress"}); err != nil || listed.GetTotalCount() != 0 || len(listed.WorkflowRuns) != 0 {
		t.Errorf("the twin commit's runs in progress: %v, %v; want none", listed, err)
	}

	// Job logs: 302 to a blob.
	jobID := runs[0].Jobs[len(runs[0].Jobs)-1].ID
	logURL, _, err := gh.Actions.GetWorkflowJobLogs(ctx, "acme", "twin", jobID, 2)
	if err != nil {
		t.Fatal(err)
	}
	lr, err := http.Get(logURL.String())
	if err != nil {
		t.Fatal(err)
	}
	logText, _ := io.ReadAll(lr.Body)
	lr.Body.Close()
	if !strings.Contains(string(logText), "protection rule") {
		t.Errorf("job log:\n%s", logText)
	}

	// Skipped jobs: the `needs:` of a failed job, and every job of a run
	// for a deployment without the payload key the jobs' `if:` requires.
	sim.CreateRepo(h.org, "acme/skips", simulator.RepoOptions{})
	sim.SetWorkflow("acme/skips", simulator.WorkflowOptions{JobsIf: "lastmile", FailEnvironments: []string{"test"}, NextEnvironments: []string{"staging"}})
	sim.Push("acme/skips", "main", simulator.CommitSpec{Message: "init", Files: map[string]string{"x": "1"}})
	for _, payload := range []any{map[string]any{"lastmile": map[string]any{"release": 1}}, nil} {
		if _, _, err := gh.Repositories.CreateDeployment(ctx, "acme", "skips", &github.DeploymentRequest{Ref: github.String("main"),
			Environment: github.String("test"), RequiredContexts: &[]string{}, Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	h.waitIdle()
	var conclusions []string
	for _, ru := range sim.Runs("acme/skips") {
		conclusions = append(conclusions, ru.Conclusion)
	}
	if sort.Strings(conclusions); strings.Join(conclusions, " ") != "failure skipped" {
		t.Errorf("runs of acme/skips: %v, want a failure and a skipped one", conclusions)
	}

	// Other webhooks: check suites (one of recorded check runs), branch
	// deletion, a force push back to an earlier commit.
	sim.CompleteCheckSuite(repo, sha, "success")
	sim.SetCheckRun(repo, sha, "build", "in_progress", "")
	sim.SetCheckRun(repo, sha, "build", "completed", "failure")
	sim.DeleteBranch(repo, "topic")
	sim.ForcePush(repo, "main", push.After)
	h.waitIdle()

	// The App itself, as lastmile's start-up check asks for it.
	self, _, err := app.Apps.Get(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if self.GetID() != sim.AppID() || self.GetInstallationsCount() != 1 {
		t.Errorf("GET /app: id %d, %d installations; want %d and 1", self.GetID(), self.GetInstallationsCount(), sim.AppID())
	}
	// Its installation, by id and by repository; none, 404.
	installation := func(id int64, repo string) (*github.Installation, int) {
		t.Helper()
		var (
			inst *github.Installation
			resp *github.Response
			err  error
		)
		if repo == "" {
			inst, resp, err = app.Apps.GetInstallation(ctx, id)
		} else {
			owner, name, _ := strings.Cut(repo, "/")
			inst, resp, err = app.Apps.FindRepositoryInstallation(ctx, owner, name)
		}
		if resp == nil {
			t.Fatalf("installation %d %s: %v", id, repo, err)
		}
		return inst, resp.StatusCode
	}
	for _, repo := range []string{"", repo} {
		if inst, code := installation(h.org, repo); code != 200 || inst.GetID() != h.org || inst.GetAccount().GetLogin() != "acme" ||
			inst.GetAppID() != sim.AppID() || inst.SuspendedAt != nil {
			t.Errorf("the installation (%q): %d %+v", repo, code, inst)
		}
	}
	if _, code := installation(1, ""); code != 404 {
		t.Errorf("unknown installation: %d, want 404", code)
	}
	if _, code := installation(0, "acme/nothing"); code != 404 {
		t.Errorf("installation of an unknown repository: %d, want 404", code)
	}

	// Hook deliveries: a failed one, listed with a cursor, then redelivered.
	h.hook.failNext(503)
	sim.SetCommitStatus(repo, sha, "lint", "success")
	h.waitIdle()
	items, resp, err := app.Apps.ListHookDeliveries(ctx, &github.ListCursorOptions{PerPage: 2})
	if err != nil || len(items) != 2 || resp.Cursor == "" {
		t.Fatalf("list deliveries: %v %d %q", err, len(items), resp.Cursor)
	}
	if items[0].GetStatusCode() != 503 || items[0].GetStatus() != "Invalid HTTP Response: 503" {
		t.Errorf("newest delivery: %d %q", items[0].GetStatusCode(), items[0].GetStatus())
	}
	if _, _, err := app.Apps.ListHookDeliveries(ctx, &github.ListCursorOptions{PerPage: 2, Cursor: resp.Cursor}); err != nil {
		t.Error(err)
	}
	if _, _, err := app.Apps.GetHookDelivery(ctx, items[0].GetID()); err != nil {
		t.Error(err)
	}
	if _, _, err := app.Apps.RedeliverHookDelivery(ctx, items[0].GetID()); err != nil {
		var accepted *github.AcceptedError
		if !errors.As(err, &accepted) {
			t.Error(err)
		}
	}
	h.waitIdle()
	ds := sim.Deliveries()
	last := ds[len(ds)-1]
	if !last.Redelivery || last.GUID != items[0].GetGUID() || !last.OK() {
		t.Errorf("redelivery: %+v", last)
	}
	// One that failed more than the redelivery window ago is refused.
	ago.Store(int64(simulator.RedeliveryWindow + time.Hour))
	h.hook.failNext(503)
	sim.SetCommitStatus(repo, sha, "old", "success")
	h.waitIdle()
	ago.Store(0)
	ds = sim.Deliveries()
	if _, resp, _ := app.Apps.RedeliverHookDelivery(ctx, ds[len(ds)-1].ID); resp == nil || resp.StatusCode != 422 {
		t.Errorf("redelivery past the window: %v", resp)
	}

	// The installation's lifecycle, on another account: a repository
	// removed from it (its token no longer reaches it), the installation
	// suspended (a call with the token minted before is refused, and so is
	// a new token), unsuspended, then uninstalled (the token minted before
	// is revoked, a new one is refused: no such installation).
	globex := sim.CreateInstallation("globex", "Organization")
	sim.CreateRepo(globex, "globex/web", simulator.RepoOptions{})
	sim.CreateRepo(globex, "globex/api", simulator.RepoOptions{})
	// gx keeps its first token. GitHub's description of an operation lists
	// no 401 or 403 for a token refused as a whole: those answers are
	// checked as oasvalidate's exceptions, against GitHub's error body.
	gx := h.client(globex, v)
	status := func(c *github.Client, repo string) int {
		t.Helper()
		_, resp, err := c.Repositories.GetCommit(ctx, "globex", repo, "main", nil)
		var tokenErr *ghinstallation.HTTPError
		switch {
		case errors.As(err, &tokenErr) && tokenErr.Response != nil:
			return tokenErr.Response.StatusCode
		case resp != nil:
			return resp.StatusCode
		}
		t.Fatalf("GET a commit of globex/%s: %v", repo, err)
		return 0
	}
	if got := status(gx, "api"); got != 200 {
		t.Fatalf("globex/api before its removal: %d", got)
	}
	if err := sim.RemoveRepositoryFromInstallation("globex/api", "octocat"); err != nil {
		t.Fatal(err)
	}
	if got := status(gx, "api"); got != 404 {
		t.Errorf("globex/api removed from the installation: %d, want 404", got)
	}
	if _, code := installation(0, "globex/api"); code != 404 {
		t.Errorf("installation of globex/api, removed: %d, want 404", code)
	}
	if err := sim.SuspendInstallation(globex, "octocat"); err != nil {
		t.Fatal(err)
	}
	for _, repo := range []string{"", "globex/web"} {
		if inst, code := installation(globex, repo); code != 200 || inst.GetID() != globex || inst.SuspendedAt == nil || inst.GetSuspendedBy().GetLogin() != "octocat" {
			t.Errorf("the suspended installation (%q): %d %+v", repo, code, inst)
		}
	}
	if got := status(gx, "web"); got != 403 {
		t.Errorf("suspended, the token minted before: %d, want 403", got)
	}
	if got := status(h.client(globex, v), "web"); got != 403 {
		t.Errorf("suspended, a new token: %d, want 403", got)
	}
	if err := sim.UnsuspendInstallation(globex, "octocat"); err != nil {
		t.Fatal(err)
	}
	if got := status(h.client(globex, v), "web"); got != 200 {
		t.Errorf("unsuspended: %d, want 200", got)
	}
	sim.DeleteInstallation(globex, "octocat")
	if got := status(gx, "web"); got != 401 {
		t.Errorf("uninstalled, the token minted before: %d, want 401", got)
	}
	if got := status(h.client(globex, v), "web"); got != 404 {
		t.Errorf("uninstalled, a new token: %d, want 404", got)
	}
	for _, repo := range []string{"", "globex/web"} {
		if _, code := installation(globex, repo); code != 404 {
			t.Errorf("the uninstalled installation (%q): %d, want 404", repo, code)
		}
	}
	h.waitIdle()
	ds = sim.Deliveries()

	// Every webhook conformed to its schemas in both descriptions (the
	// receiver checked them), and every kind was sent.
	examples := loadExamples(t)
	seen := map[string]bool{}
	for _, d := range ds {
		seen[schemaName(d.Event, d.Action)] = true
		// And it has every field GitHub's example payloads of that kind
		// have (testdata/github-webhook-examples.json).
		if m := missingKeys(examples[schemaName(d.Event, d.Action)], d.Body, exampleExceptions[d.Event+"/"+d.Action]); len(m) > 0 {
			t.Errorf("webhook %s/%s lacks fields GitHub's examples have: %v", d.Event, d.Action, m)
		}
		// Its bot users' URLs are built as in GitHub's examples.
		var body any
		_ = json.Unmarshal(d.Body, &body)
		if _, errs := botURLErrors(body, strings.TrimSuffix(h.api, "/")); len(errs) > 0 {
			t.Errorf("webhook %s/%s: %v", d.Event, d.Action, errs)
		}
	}
	for _, want := range []string{
		"webhook-push", "webhook-deployment-created", "webhook-deployment-status-created",
		"webhook-deployment-review-requested", "webhook-deployment-review-approved", "webhook-deployment-review-rejected",
		"webhook-deployment-protection-rule-requested",
		"webhook-workflow-run-requested", "webhook-workflow-run-in-progress", "webhook-workflow-run-completed",
		"webhook-workflow-job-queued", "webhook-workflow-job-waiting", "webhook-workflow-job-in-progress", "webhook-workflow-job-completed",
		"webhook-status", "webhook-check-suite-completed",
		"webhook-installation-deleted", "webhook-installation-suspend", "webhook-installation-unsuspend",
		"webhook-installation-repositories-removed",
	} {
		if !seen[want] {
			t.Errorf("no %s webhook was sent", want)
		}
	}
	// The receiver got them all, signed (checked by the receiver).
	if got := len(h.hook.received()); got != len(ds) {
		t.Errorf("receiver got %d deliveries, simulator recorded %d", got, len(ds))
	}

	// Every operation of the trimmed description was exercised.
	var ops []string
	for op := range v.checked {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	if len(ops) != 23 {
		t.Errorf("exercised %d of 23 operations: %v", len(ops), ops)
	}
	// The reads that answer 404 for what is not there (or no longer) were
	// seen answering it.
	for _, op := range []string{
		"GET /app/installations/{installation_id}",
		"GET /repos/{owner}/{repo}/installation",
		"GET /repos/{owner}/{repo}/actions/runs/{run_id}",
	} {
		if !v.checked[op][200] || !v.checked[op][404] {
			t.Errorf("%s answered %v, want 200 and 404 among them", op, v.checked[op])
		}
	}
}

// waitState waits until a deployment's latest status is state.
func waitState(t *testing.T, h *harness, repo string, id int64, state string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := h.sim.WaitFor(ctx, func(s *simulator.Simulator) bool {
		for _, d := range s.Deployments(repo) {
			if d.ID == id {
				return d.State() == state
			}
		}
		return false
	})
	if err != nil {
		for _, d := range h.sim.Deployments(repo) {
			if d.ID == id {
				t.Fatalf("deployment %d: state %q, want %q: %v", id, d.State(), state, err)
			}
		}
		t.Fatalf("deployment %d: %v", id, err)
	}
}

// exampleFile is testdata/github-webhook-examples.json.
type exampleFile struct {
	Events []struct {
		Name     string            `json:"name"`
		Examples []json.RawMessage `json:"examples"`
	} `json:"events"`
}

func loadExamples(t *testing.T) map[string][]json.RawMessage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "github-webhook-examples.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f exampleFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	out := map[string][]json.RawMessage{} // schema name -> examples
	for _, e := range f.Events {
		for _, ex := range e.Examples {
			var head struct {
				Action string `json:"action"`
			}
			_ = json.Unmarshal(ex, &head)
			out[schemaName(e.Name, head.Action)] = append(out[schemaName(e.Name, head.Action)], ex)
		}
	}
	return out
}

// missingKeys lists the keys (to depth 2, "a.b") that GitHub's examples
// have and got lacks.
func missingKeys(examples []json.RawMessage, got []byte, except []string) []string {
	var have map[string]any
	_ = json.Unmarshal(got, &have)
	missing := map[string]bool{}
	for _, ex := range examples {
		var want map[string]any
		_ = json.Unmarshal(ex, &want)
		for k, wv := range want {
			if k == "enterprise" {
				continue // only for enterprise accounts
			}
			hv, ok := have[k]
			if !ok {
				missing[k] = true
				continue
			}
			wm, _ := wv.(map[string]any)
			hm, _ := hv.(map[string]any)
			if wm == nil || hm == nil {
				continue
			}
			for kk := range wm {
				if _, ok := hm[kk]; !ok {
					missing[k+"."+kk] = true
				}
			}
		}
	}
	for _, k := range except {
		delete(missing, k)
	}
	var out []string
	for k := range missing {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// exampleExceptions are fields of GitHub's examples that the simulator
// leaves out on purpose.
var exampleExceptions = map[string][]string{
	// Only when Actions creates a deployment for the job (CreateDeployment).
	"workflow_job/queued": {"deployment"},
}

// botURLErrors checks every bot user in v (an object of type "Bot") the way
// GitHub's examples render them: url is the API root's /users/ and the
// login path-escaped ("renovate%5Bbot%5D"), the other API URLs extend it,
// and html_url is the App's page. It returns how many bots it checked.
func botURLErrors(v any, apiRoot string) (int, []string) {
	n := 0
	var errs []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			login, _ := x["login"].(string)
			if x["type"] == "Bot" && login != "" {
				n++
				self := apiRoot + "/users/" + url.PathEscape(login)
				if x["url"] != self {
					errs = append(errs, fmt.Sprintf("%s: url %v, want %s", login, x["url"], self))
				}
				if want := "https://github.com/apps/" + strings.TrimSuffix(login, "[bot]"); x["html_url"] != want {
					errs = append(errs, fmt.Sprintf("%s: html_url %v, want %s", login, x["html_url"], want))
				}
				for k, u := range x {
					if s, _ := u.(string); strings.HasSuffix(k, "_url") && k != "html_url" && k != "avatar_url" && !strings.HasPrefix(s, self+"/") {
						errs = append(errs, fmt.Sprintf("%s: %s %q, want it under %s/", login, k, s, self))
					}
				}
			}
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	return n, errs
}

// The rule botURLErrors checks is GitHub's: its examples' bot users follow
// it.
func TestBotURLsAsInGitHubsExamples(t *testing.T) {
	bots := 0
	for name, list := range loadExamples(t) {
		for _, ex := range list {
			var v any
			if err := json.Unmarshal(ex, &v); err != nil {
				t.Fatal(err)
			}
			n, errs := botURLErrors(v, "https://api.github.com")
			bots += n
			if len(errs) > 0 {
				t.Errorf("%s: %v", name, errs)
			}
		}
	}
	if bots == 0 {
		t.Fatal("GitHub's examples have no bot user")
	}
}
