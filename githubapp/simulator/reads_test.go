package simulator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

// notFound checks GitHub's 404 body: "Not Found" and the operation's
// documentation.
func notFound(t *testing.T, what string, r apiResponse, doc string) {
	t.Helper()
	if r.status != 404 {
		t.Errorf("%s: %d %s, want 404", what, r.status, r.body)
		return
	}
	if body := r.json(t); body["message"] != "Not Found" || body["documentation_url"] != doc {
		t.Errorf("%s: 404 body %s, want Not Found and %s", what, r.body, doc)
	}
}

const (
	getInstallationDoc     = "https://docs.github.com/rest/apps/apps#get-an-installation-for-the-authenticated-app"
	getRepoInstallationDoc = "https://docs.github.com/rest/apps/apps#get-a-repository-installation-for-the-authenticated-app"
	getWorkflowRunDoc      = "https://docs.github.com/rest/actions/workflow-runs#get-a-workflow-run"
)

// GET /app/installations/{id} and GET /repos/{owner}/{repo}/installation
// with the App's JWT: the installation, the same body from both; once
// suspended, with suspended_at and suspended_by; once the App is
// uninstalled, 404 from both, as for an installation it never had.
func TestGetInstallation(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	jwt := "Bearer " + h.jwt()
	byID := fmt.Sprintf("/app/installations/%d", h.org)

	r := h.do("GET", byID, jwt, nil)
	if r.status != 200 {
		t.Fatalf("GET %s: %d %s", byID, r.status, r.body)
	}
	inst := r.json(t)
	account, _ := inst["account"].(map[string]any)
	for field, want := range map[string]any{
		"id": float64(h.org), "app_id": float64(testAppID), "app_slug": "lastmile", "target_type": "Organization",
		"repository_selection": "all", "suspended_at": nil, "suspended_by": nil,
		"access_tokens_url": fmt.Sprintf("%s/app/installations/%d/access_tokens", strings.TrimSuffix(h.api, "/"), h.org),
		"html_url":          fmt.Sprintf("https://github.com/organizations/acme/settings/installations/%d", h.org),
	} {
		if inst[field] != want {
			t.Errorf("%s = %v, want %v", field, inst[field], want)
		}
	}
	if account["login"] != "acme" || account["type"] != "Organization" || inst["target_id"] != account["id"] {
		t.Errorf("account %v, target_id %v", account, inst["target_id"])
	}
	if perms, _ := inst["permissions"].(map[string]any); perms["deployments"] != "write" || perms["actions"] != "read" {
		t.Errorf("permissions %v", inst["permissions"])
	}
	if r := h.do("GET", "/repos/acme/shop/installation", jwt, nil); r.status != 200 || !reflect.DeepEqual(r.json(t), inst) {
		t.Errorf("GET /repos/acme/shop/installation: %d %s, want the body of %s", r.status, r.body, byID)
	}
	// Owner and name ignore case, as on GitHub.
	if r := h.do("GET", "/repos/ACME/Shop/installation", jwt, nil); r.status != 200 || r.json(t)["id"] != float64(h.org) {
		t.Errorf("GET /repos/ACME/Shop/installation: %d %s", r.status, r.body)
	}

	notFound(t, "an installation the App never had", h.do("GET", "/app/installations/999", jwt, nil), getInstallationDoc)
	notFound(t, "a repository that does not exist", h.do("GET", "/repos/acme/nothing/installation", jwt, nil), getRepoInstallationDoc)
	// The endpoints are the App's: an installation token is refused as on
	// GET /app.
	tok := h.token(h.org)
	for _, path := range []string{byID, "/repos/acme/shop/installation"} {
		if r := h.do("GET", path, tok, nil); r.status != 401 {
			t.Errorf("GET %s with an installation token: %d %s, want 401", path, r.status, r.body)
		}
		if r := h.do("GET", path, "", nil); r.status != 401 {
			t.Errorf("GET %s without credentials: %d %s, want 401", path, r.status, r.body)
		}
	}

	h.sim.SuspendInstallation(h.org, "alice")
	for _, path := range []string{byID, "/repos/acme/shop/installation"} {
		r := h.do("GET", path, jwt, nil)
		if r.status != 200 {
			t.Errorf("GET %s, suspended: %d %s, want 200", path, r.status, r.body)
			continue
		}
		body := r.json(t)
		by, _ := body["suspended_by"].(map[string]any)
		if at, _ := body["suspended_at"].(string); at == "" || by["login"] != "alice" || body["id"] != float64(h.org) {
			t.Errorf("GET %s, suspended: suspended_at %v, suspended_by %v", path, body["suspended_at"], body["suspended_by"])
		}
	}
	h.sim.UnsuspendInstallation(h.org, "alice")
	if r := h.do("GET", byID, jwt, nil); r.status != 200 || r.json(t)["suspended_at"] != nil || r.json(t)["suspended_by"] != nil {
		t.Errorf("GET %s, unsuspended: %d %s", byID, r.status, r.body)
	}

	h.sim.DeleteInstallation(h.org, "octocat")
	notFound(t, "an uninstalled installation", h.do("GET", byID, jwt, nil), getInstallationDoc)
	notFound(t, "a repository of an uninstalled installation", h.do("GET", "/repos/acme/shop/installation", jwt, nil), getRepoInstallationDoc)
}

// GET /repos/{owner}/{repo}/installation: a user's repository answers with
// its user installation; a repository removed from the installation
// answers 404, the installation's others still 200 (selection "selected").
func TestGetRepoInstallation(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.CreateRepo(h.org, "acme/api", simulator.RepoOptions{Private: true})
	user := h.sim.CreateInstallation("mona", "User")
	h.sim.CreateRepo(user, "mona/dotfiles", simulator.RepoOptions{})
	jwt := "Bearer " + h.jwt()

	r := h.do("GET", "/repos/mona/dotfiles/installation", jwt, nil)
	body := r.json(t)
	if account, _ := body["account"].(map[string]any); r.status != 200 || body["id"] != float64(user) || body["target_type"] != "User" ||
		account["login"] != "mona" || body["html_url"] != fmt.Sprintf("https://github.com/settings/installations/%d", user) {
		t.Errorf("GET /repos/mona/dotfiles/installation: %d %s", r.status, r.body)
	}
	if r := h.do("GET", "/repos/acme/api/installation", jwt, nil); r.status != 200 || r.json(t)["id"] != float64(h.org) {
		t.Errorf("GET /repos/acme/api/installation before its removal: %d %s", r.status, r.body)
	}

	h.sim.RemoveRepositoryFromInstallation("acme/api", "octocat")
	notFound(t, "a repository removed from the installation", h.do("GET", "/repos/acme/api/installation", jwt, nil), getRepoInstallationDoc)
	r = h.do("GET", "/repos/acme/shop/installation", jwt, nil)
	if r.status != 200 || r.json(t)["id"] != float64(h.org) || r.json(t)["repository_selection"] != "selected" {
		t.Errorf("GET /repos/acme/shop/installation after acme/api's removal: %d %s", r.status, r.body)
	}
	if r := h.do("GET", fmt.Sprintf("/app/installations/%d", h.org), jwt, nil); r.status != 200 || r.json(t)["repository_selection"] != "selected" {
		t.Errorf("GET /app/installations/%d after acme/api's removal: %d %s", h.org, r.status, r.body)
	}
}

// GET /repos/{owner}/{repo}/actions/runs/{run_id} with an installation
// token: the run, the body its workflow_run webhooks carry; 404 for a run
// the repository does not have; without a token that reaches the
// repository, the answers of the other repository reads.
func TestGetWorkflowRun(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{Private: true})
	h.sim.CreateRepo(h.org, "acme/other", simulator.RepoOptions{Private: true})
	// The deploy step reads its own run with the run's GITHUB_TOKEN
	// (actions: read), as a step may.
	type seen struct {
		token  string
		status int
		err    error
	}
	fromStep := make(chan seen, 1)
	h.sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{Deploy: func(ctx context.Context, jc simulator.JobContext) error {
		req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/repos/%s/actions/runs/%d", jc.APIURL, jc.Repository, jc.RunID), nil)
		if err != nil {
			fromStep <- seen{err: err}
			return err
		}
		req.Header.Set("Authorization", "token "+jc.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fromStep <- seen{err: err}
			return err
		}
		resp.Body.Close()
		fromStep <- seen{token: jc.Token, status: resp.StatusCode}
		return nil
	}})
	dep := h.deploy("acme/shop", "test")
	h.waitIdle()
	step := <-fromStep
	if step.err != nil || step.status != 200 {
		t.Errorf("the run's GITHUB_TOKEN reading its run during the run: %d %v, want 200", step.status, step.err)
	}
	runs := h.sim.Runs("acme/shop")
	if len(runs) != 1 || runs[0].Conclusion != "success" || runs[0].DeploymentID != dep {
		t.Fatalf("runs %+v", runs)
	}
	run := runs[0]
	path := fmt.Sprintf("/repos/acme/shop/actions/runs/%d", run.ID)
	tok := h.token(h.org)

	r := h.do("GET", path, tok, nil)
	if r.status != 200 {
		t.Fatalf("GET %s: %d %s", path, r.status, r.body)
	}
	got := r.json(t)
	for field, want := range map[string]any{
		"id": float64(run.ID), "status": "completed", "conclusion": "success", "event": "deployment", "run_attempt": 1.0,
		"html_url": run.HTMLURL, "head_sha": h.sim.Branch("acme/shop", "main"), "name": "Deploy",
		"url": strings.TrimSuffix(h.api, "/") + path,
	} {
		if got[field] != want {
			t.Errorf("%s = %v, want %v", field, got[field], want)
		}
	}
	if dig(got, "repository", "full_name") != "acme/shop" || dig(got, "head_commit", "id") != got["head_sha"] {
		t.Errorf("repository %v, head_commit %v", got["repository"], got["head_commit"])
	}
	// The body is the completed webhook's workflow_run: nothing changed
	// since.
	completed := h.payload(0, "workflow_run", "completed")
	if want, _ := json.Marshal(completed["workflow_run"]); !reflect.DeepEqual(got, decode(t, want)) {
		t.Errorf("GET %s:\n%s\nwant the completed webhook's workflow_run:\n%s", path, r.body, want)
	}
	if r := h.do("GET", path+"?exclude_pull_requests=true", tok, nil); r.status != 200 || r.json(t)["id"] != float64(run.ID) {
		t.Errorf("GET %s?exclude_pull_requests=true: %d %s", path, r.status, r.body)
	}

	notFound(t, "an unknown run", h.do("GET", "/repos/acme/shop/actions/runs/999", tok, nil), getWorkflowRunDoc)
	notFound(t, "another repository's run", h.do("GET", fmt.Sprintf("/repos/acme/other/actions/runs/%d", run.ID), tok, nil), getWorkflowRunDoc)

	// Without an installation token that reaches the repository.
	user := h.sim.CreateInstallation("mona", "User")
	for name, tc := range map[string]struct {
		auth   string
		status int
	}{
		"no credentials":            {"", 404},
		"the App's JWT":             {"Bearer " + h.jwt(), 403},
		"an unknown token":          {"token ghs_unknown", 401},
		"another installation's":    {h.token(user), 404},
		"a token of another repo":   {scopedToken(t, h, "other"), 404},
		"the run's own, now ended":  {"token " + step.token, 401},
		"the installation's, again": {tok, 200},
	} {
		if r := h.do("GET", path, tc.auth, nil); r.status != tc.status {
			t.Errorf("%s: %d %s, want %d", name, r.status, r.body, tc.status)
		}
	}
	h.sim.SuspendInstallation(h.org, "alice")
	if r := h.do("GET", path, tok, nil); r.status != 403 || r.json(t)["message"] != "This installation has been suspended" {
		t.Errorf("suspended: %d %s, want 403", r.status, r.body)
	}
}

// GET /repos/{owner}/{repo}/actions/runs with an installation token: the
// repository's runs, newest first, each the body GET .../runs/{run_id}
// answers; head_sha, event and status (a status or a conclusion) filter
// them, total_count counts every run the filters keep, and per_page and
// page page them with a Link header.
func TestListWorkflowRuns(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{Private: true})
	h.sim.CreateRepo(h.org, "acme/other", simulator.RepoOptions{Private: true})
	started, release := make(chan struct{}), make(chan struct{})
	h.sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{Deploy: func(ctx context.Context, jc simulator.JobContext) error {
		switch jc.Environment {
		case "production":
			return fmt.Errorf("deploy failed")
		case "staging": // goes on until released
			close(started)
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return nil
	}})
	a := h.sim.Branch("acme/shop", "main")
	h.deploy("acme/shop", "test")
	h.deploy("acme/shop", "production")
	h.deploy("acme/other", "test")
	h.waitIdle()
	b := h.sim.Push("acme/shop", "main", simulator.CommitSpec{Files: map[string]string{"f": "b"}}).After
	h.deploy("acme/shop", "test")
	h.waitIdle()
	h.deploy("acme/shop", "staging")
	<-started
	runs := h.sim.Runs("acme/shop") // oldest first: a test, a production, b test, b staging
	if len(runs) != 4 || runs[1].Conclusion != "failure" || runs[3].Status != "in_progress" {
		t.Fatalf("runs %+v", runs)
	}
	tok := h.token(h.org)
	list := func(query string) (total float64, ids []int64, r apiResponse) {
		t.Helper()
		r = h.do("GET", "/repos/acme/shop/actions/runs"+query, tok, nil)
		if r.status != 200 {
			t.Fatalf("GET runs%s: %d %s", query, r.status, r.body)
		}
		body := r.json(t)
		got, ok := body["workflow_runs"].([]any)
		if !ok {
			t.Fatalf("GET runs%s: workflow_runs %v, want an array", query, body["workflow_runs"])
		}
		for _, x := range got {
			run := x.(map[string]any)
			id := int64(run["id"].(float64))
			ids = append(ids, id)
			one := h.do("GET", fmt.Sprintf("/repos/acme/shop/actions/runs/%d", id), tok, nil)
			if !reflect.DeepEqual(run, one.json(t)) {
				t.Errorf("GET runs%s: run %d is\n%v\nwant the body of GET .../runs/%d:\n%s", query, id, run, id, one.body)
			}
		}
		return body["total_count"].(float64), ids, r
	}
	for query, want := range map[string][]int{
		"":                                       {3, 2, 1, 0},
		"?head_sha=" + a:                         {1, 0},
		"?head_sha=" + b + "&event=deployment":   {3, 2},
		"?event=push":                            {},
		"?head_sha=" + b + "&status=in_progress": {3},
		"?status=completed":                      {2, 1, 0},
		"?status=failure":                        {1},
		"?status=success&head_sha=" + a:          {0},
		"?status=queued":                         {},
		"?head_sha=" + strings.Repeat("0", 40):   {},
	} {
		var wantIDs []int64
		for _, i := range want {
			wantIDs = append(wantIDs, runs[i].ID)
		}
		if total, ids, _ := list(query); total != float64(len(want)) || !slices.Equal(ids, wantIDs) {
			t.Errorf("GET runs%s: total_count %v, runs %v; want %d, %v", query, total, ids, len(want), wantIDs)
		}
	}

	// Paging: per_page and page, with GitHub's Link header; total_count
	// is every run's.
	total, ids, r := list("?per_page=1&page=2")
	if total != 4 || !slices.Equal(ids, []int64{runs[2].ID}) {
		t.Errorf("page 2 of 1: total_count %v, runs %v; want 4, [%d]", total, ids, runs[2].ID)
	}
	link := r.header.Get("Link")
	for _, rel := range []string{`page=3&per_page=1>; rel="next"`, `page=4&per_page=1>; rel="last"`, `page=1&per_page=1>; rel="prev"`, `page=1&per_page=1>; rel="first"`} {
		if !strings.Contains(link, rel) {
			t.Errorf("page 2 of 1: Link %q, want %s", link, rel)
		}
	}
	if total, ids, r := list("?per_page=3&page=2&status=completed"); total != 3 || len(ids) != 0 || r.header.Get("Link") == "" {
		t.Errorf("past the last page: total_count %v, runs %v, Link %q; want 3, none, a Link", total, ids, r.header.Get("Link"))
	}
	if _, _, r := list("?per_page=100"); r.header.Get("Link") != "" {
		t.Errorf("one page: Link %q, want none", r.header.Get("Link"))
	}

	// Without an installation token that reaches the repository.
	for name, tc := range map[string]struct {
		auth   string
		status int
	}{
		"no credentials":          {"", 404},
		"the App's JWT":           {"Bearer " + h.jwt(), 403},
		"a token of another repo": {scopedToken(t, h, "other"), 404},
	} {
		if r := h.do("GET", "/repos/acme/shop/actions/runs", tc.auth, nil); r.status != tc.status {
			t.Errorf("%s: %d %s, want %d", name, r.status, r.body, tc.status)
		}
	}

	close(release)
	h.waitIdle()
	if total, ids, _ := list("?status=in_progress"); total != 0 || len(ids) != 0 {
		t.Errorf("once the run ended, in progress: total_count %v, runs %v; want none", total, ids)
	}
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// scopedToken returns a token of the acme installation for one repository.
func scopedToken(t *testing.T, h *harness, repo string) string {
	t.Helper()
	r := h.do("POST", fmt.Sprintf("/app/installations/%d/access_tokens", h.org), "Bearer "+h.jwt(), map[string]any{"repositories": []string{repo}})
	if r.status != 201 {
		t.Fatalf("scoped token: %d %s", r.status, r.body)
	}
	return "token " + r.json(t)["token"].(string)
}
