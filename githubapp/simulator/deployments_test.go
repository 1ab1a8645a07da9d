package simulator_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

func TestCreateDeploymentRequiredContexts(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	sha := h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "x", Files: map[string]string{"a": "1"}}).After
	tok := h.token(h.org)
	h.sim.SetCommitStatus("acme/shop", sha, "ci", "pending")
	h.sim.SetCommitStatus("acme/shop", sha, "lint", "success")

	// Default required_contexts: every context on the commit.
	r := h.do("POST", "/repos/acme/shop/deployments", tok, map[string]any{"ref": sha, "auto_merge": false})
	want := map[string]any{
		"message":           "Conflict: Commit status checks failed for " + sha,
		"documentation_url": "https://docs.github.com/rest/deployments/deployments#create-a-deployment",
		"errors": []any{map[string]any{
			// GitHub lists every context of the combined status.
			"contexts": []any{map[string]any{"context": "ci", "state": "pending"}, map[string]any{"context": "lint", "state": "success"}},
			"resource": "Deployment", "field": "required_contexts", "code": "invalid",
		}},
	}
	if got := r.json(t); r.status != 409 || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %d %v\nwant 409 %v", r.status, got, want)
	}
	// A required context never reported counts as failed.
	r = h.do("POST", "/repos/acme/shop/deployments", tok, map[string]any{"ref": sha, "auto_merge": false, "required_contexts": []string{"lint", "e2e"}})
	if r.status != 409 || !strings.Contains(string(r.body), `"contexts":[{"context":"ci","state":"pending"},{"context":"lint","state":"success"}]`) {
		t.Fatalf("missing context: %d %s", r.status, r.body)
	}
	// Only the listed contexts count.
	if r := h.do("POST", "/repos/acme/shop/deployments", tok, map[string]any{"ref": sha, "auto_merge": false, "required_contexts": []string{"lint"}, "environment": "qa"}); r.status != 201 {
		t.Fatalf("lint only: %d %s", r.status, r.body)
	}
	// [] bypasses the check; go-github sees 409 as ErrorResponse before.
	gh := h.client(h.org, nil)
	_, _, err := gh.Repositories.CreateDeployment(h.ctx(), "acme", "shop", &github.DeploymentRequest{Ref: github.String(sha), AutoMerge: github.Bool(false)})
	var er *github.ErrorResponse
	if !errors.As(err, &er) || er.Response.StatusCode != 409 {
		t.Fatalf("go-github 409: %v", err)
	}
	d, _, err := gh.Repositories.CreateDeployment(h.ctx(), "acme", "shop", &github.DeploymentRequest{Ref: github.String(sha), AutoMerge: github.Bool(false), RequiredContexts: &[]string{}})
	if err != nil {
		t.Fatal(err)
	}
	if d.GetEnvironment() != "production" || d.GetTask() != "deploy" || d.GetSHA() != sha || d.GetCreator().GetLogin() != "lastmile[bot]" {
		t.Errorf("defaults: env %s task %s creator %s", d.GetEnvironment(), d.GetTask(), d.GetCreator().GetLogin())
	}
	h.sim.SetCommitStatus("acme/shop", sha, "ci", "success")
	if r := h.do("POST", "/repos/acme/shop/deployments", tok, map[string]any{"ref": sha, "auto_merge": false}); r.status != 201 {
		t.Errorf("all green: %d %s", r.status, r.body)
	}
}

func TestCreateDeploymentBody(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	main := h.sim.Branch("acme/shop", "main")
	tok := h.token(h.org)
	r := h.do("POST", "/repos/acme/shop/deployments", tok, map[string]any{
		"ref": "main", "environment": "staging", "payload": `{"release": 7}`, "description": "r7",
		"transient_environment": true, "required_contexts": []string{},
	})
	if r.status != 201 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	d := r.json(t)
	for k, want := range map[string]any{
		"sha": main, "ref": "main", "environment": "staging", "original_environment": "staging",
		"description": "r7", "transient_environment": true, "production_environment": false,
		"payload": `{"release": 7}`, "task": "deploy",
	} {
		if !reflect.DeepEqual(d[k], want) {
			t.Errorf("%s = %v, want %v", k, d[k], want)
		}
	}
	app := d["performed_via_github_app"].(map[string]any)
	if app["id"] != float64(testAppID) || d["creator"].(map[string]any)["type"] != "Bot" {
		t.Errorf("creator %v app %v", d["creator"], app["id"])
	}
	id := int64(d["id"].(float64))
	if got := h.do("GET", fmt.Sprintf("/repos/acme/shop/deployments/%d", id), tok, nil).json(t); got["id"] != d["id"] {
		t.Errorf("get: %v", got)
	}

	// Without a description, it is null (not ""), in the answers and in the
	// deployment webhook, as in every example of GitHub's.
	r = h.do("POST", "/repos/acme/shop/deployments", tok, map[string]any{"ref": "main", "environment": "qa", "required_contexts": []string{}})
	if desc, found := r.json(t)["description"]; r.status != 201 || !found || desc != nil {
		t.Errorf("no description: %d %s", r.status, r.body)
	}
	bare := int64(r.json(t)["id"].(float64))
	if desc, found := h.do("GET", fmt.Sprintf("/repos/acme/shop/deployments/%d", bare), tok, nil).json(t)["description"]; !found || desc != nil {
		t.Errorf("get, no description: %v", desc)
	}
	h.waitIdle()
	var hooked int
	for _, dl := range h.sim.Deliveries() {
		var ev struct {
			Deployment map[string]any `json:"deployment"`
		}
		if err := json.Unmarshal(dl.Body, &ev); dl.Event != "deployment" || err != nil || ev.Deployment["id"] != float64(bare) {
			continue
		}
		hooked++
		if desc, found := ev.Deployment["description"]; !found || desc != nil {
			t.Errorf("webhook, no description: %v", desc)
		}
	}
	if hooked != 1 {
		t.Errorf("%d deployment webhooks for deployment %d", hooked, bare)
	}

	for name, body := range map[string]string{
		"no ref":        `{"environment":"x"}`,
		"empty ref":     `{"ref":""}`,
		"unknown ref":   `{"ref":"nope"}`,
		"ref type":      `{"ref":1}`,
		"auto_merge":    `{"ref":"main","auto_merge":"yes"}`,
		"contexts type": `{"ref":"main","required_contexts":"ci"}`,
		"payload type":  `{"ref":"main","payload":3}`,
	} {
		r := h.do("POST", "/repos/acme/shop/deployments", tok, body)
		if r.status != 422 || r.json(t)["message"] == "" {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	if r := h.do("POST", "/repos/acme/shop/deployments", tok, `{"ref":`); r.status != 400 {
		t.Errorf("bad JSON: %d", r.status)
	}
}

func TestAutoMerge(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.Push("acme/shop", "topic", simulator.CommitSpec{Message: "topic", Files: map[string]string{"t.txt": "t"}})
	h.sim.Push("acme/shop", "clash", simulator.CommitSpec{Message: "clash", Files: map[string]string{"m.txt": "other"}})
	h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "main", Files: map[string]string{"m.txt": "m"}})
	tok := h.token(h.org)
	before := h.sim.Branch("acme/shop", "topic")

	r := h.do("POST", "/repos/acme/shop/deployments", tok, map[string]any{"ref": "topic", "required_contexts": []string{}})
	if r.status != 202 || r.json(t)["message"] != "Auto-merged main into topic on deployment." {
		t.Fatalf("got %d %s", r.status, r.body)
	}
	after := h.sim.Branch("acme/shop", "topic")
	if after == before {
		t.Fatal("topic did not move")
	}
	if got, _ := h.sim.FileAt("acme/shop", "topic", "m.txt"); got != "m" {
		t.Errorf("merged tree lacks main's change: %q", got)
	}
	if len(h.sim.Deployments("acme/shop")) != 0 {
		t.Error("202 created a deployment")
	}
	// Now topic contains main: the deployment is created.
	if r := h.do("POST", "/repos/acme/shop/deployments", tok, map[string]any{"ref": "topic", "required_contexts": []string{}}); r.status != 201 {
		t.Errorf("second request: %d %s", r.status, r.body)
	}
	// A conflict: 409.
	r = h.do("POST", "/repos/acme/shop/deployments", tok, map[string]any{"ref": "clash", "required_contexts": []string{}})
	if r.status != 409 || r.json(t)["message"] != "Conflict merging main into clash." {
		t.Errorf("conflict: %d %s", r.status, r.body)
	}
	// auto_merge false or a SHA: no merge.
	if r := h.do("POST", "/repos/acme/shop/deployments", tok, map[string]any{"ref": "clash", "auto_merge": false, "required_contexts": []string{}}); r.status != 201 {
		t.Errorf("auto_merge false: %d", r.status)
	}
	h.waitIdle()
	var pushes int
	for _, d := range h.sim.Deliveries() {
		if d.Event == "push" {
			pushes++
		}
	}
	if pushes != 4 { // three fixtures + the merge
		t.Errorf("push webhooks: %d", pushes)
	}
}

func TestDeploymentStatusesAndAutoInactive(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	gh := h.client(h.org, nil)
	ctx := h.ctx()
	create := func(env string, prod, transient bool) int64 {
		d, _, err := gh.Repositories.CreateDeployment(ctx, "acme", "shop", &github.DeploymentRequest{
			Ref: github.String("main"), Environment: github.String(env), AutoMerge: github.Bool(false),
			RequiredContexts: &[]string{}, ProductionEnvironment: github.Bool(prod), TransientEnvironment: github.Bool(transient),
		})
		if err != nil {
			t.Fatal(err)
		}
		return d.GetID()
	}
	status := func(id int64, req github.DeploymentStatusRequest) *github.DeploymentStatus {
		s, _, err := gh.Repositories.CreateDeploymentStatus(ctx, "acme", "shop", id, &req)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	old := create("staging", false, false)
	status(old, github.DeploymentStatusRequest{State: github.String("success")})
	failedOld := create("staging", false, false)
	status(failedOld, github.DeploymentStatusRequest{State: github.String("failure")})
	transient := create("staging", false, true)
	status(transient, github.DeploymentStatusRequest{State: github.String("success")})
	prodOld := create("production", true, false)
	status(prodOld, github.DeploymentStatusRequest{State: github.String("success")})

	cur := create("staging", false, false)
	s := status(cur, github.DeploymentStatusRequest{State: github.String("success"), LogURL: github.String("https://ci/1"), EnvironmentURL: github.String("https://staging")})
	if s.GetTargetURL() != "https://ci/1" || s.GetLogURL() != "https://ci/1" || s.GetEnvironment() != "staging" {
		t.Errorf("log_url sets target_url: %+v", s)
	}
	state := map[int64]string{}
	for _, d := range h.sim.Deployments("acme/shop") {
		state[d.ID] = d.State()
	}
	want := map[int64]string{old: "inactive", failedOld: "failure", transient: "success", prodOld: "success", cur: "success"}
	if !reflect.DeepEqual(state, want) {
		t.Errorf("states %v, want %v", state, want)
	}
	// auto_inactive false leaves the previous one alone.
	next := create("staging", false, false)
	status(next, github.DeploymentStatusRequest{State: github.String("success"), AutoInactive: github.Bool(false)})
	for _, d := range h.sim.Deployments("acme/shop") {
		if d.ID == cur && d.State() != "success" {
			t.Errorf("auto_inactive false: %s", d.State())
		}
	}

	// Statuses list newest first; bad input is 422.
	list, _, err := gh.Repositories.ListDeploymentStatuses(ctx, "acme", "shop", old, nil)
	if err != nil || len(list) != 2 || list[0].GetState() != "inactive" || list[1].GetState() != "success" {
		t.Errorf("statuses: %v", err)
	}
	tok := h.token(h.org)
	for name, body := range map[string]string{
		"no state":  `{}`,
		"bad state": `{"state":"done"}`,
		"too long":  `{"state":"success","description":"` + strings.Repeat("é", 141) + `"}`,
	} {
		if r := h.do("POST", fmt.Sprintf("/repos/acme/shop/deployments/%d/statuses", cur), tok, body); r.status != 422 {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	r := h.do("POST", fmt.Sprintf("/repos/acme/shop/deployments/%d/statuses", cur), tok, `{"state":"success","description":"`+strings.Repeat("é", 140)+`"}`)
	if r.status != 201 {
		t.Errorf("140 characters: %d", r.status)
	}
	// Unset URLs are "", not left out.
	for _, k := range []string{"target_url", "log_url", "environment_url"} {
		if v, found := r.json(t)[k]; !found || v != "" {
			t.Errorf("%s unset: %v (present %v)", k, v, found)
		}
	}
	// An unknown deployment is 404, even when the body is invalid too.
	for _, body := range []string{`{"state":"success"}`, `{}`, `{"state":"done"}`, `{"state":1}`,
		`{"state":"success","description":"` + strings.Repeat("é", 141) + `"}`} {
		if r := h.do("POST", "/repos/acme/shop/deployments/1/statuses", tok, body); r.status != 404 {
			t.Errorf("unknown deployment, body %s: %d %s", body, r.status, r.body)
		}
	}
}

func TestListDeploymentsFiltersAndPagination(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	gh := h.client(h.org, nil)
	ctx := h.ctx()
	var ids []int64
	for i := 0; i < 5; i++ {
		env := "test"
		if i%2 == 1 {
			env = "prod"
		}
		d, _, err := gh.Repositories.CreateDeployment(ctx, "acme", "shop", &github.DeploymentRequest{
			Ref: github.String("main"), Environment: github.String(env), AutoMerge: github.Bool(false), RequiredContexts: &[]string{},
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.GetID())
	}
	var got []int64
	opts := &github.DeploymentsListOptions{ListOptions: github.ListOptions{PerPage: 2}}
	pages := 0
	for {
		list, resp, err := gh.Repositories.ListDeployments(ctx, "acme", "shop", opts)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, d := range list {
			got = append(got, d.GetID())
		}
		if resp.NextPage == 0 {
			if pages > 1 && resp.FirstPage == 0 {
				t.Error("no first link on the last page")
			}
			break
		}
		opts.Page = resp.NextPage
	}
	want := []int64{ids[4], ids[3], ids[2], ids[1], ids[0]}
	if pages != 3 || !reflect.DeepEqual(got, want) {
		t.Errorf("pages %d, ids %v, want %v (newest first)", pages, got, want)
	}
	prod, _, _ := gh.Repositories.ListDeployments(ctx, "acme", "shop", &github.DeploymentsListOptions{Environment: "prod"})
	if len(prod) != 2 || prod[0].GetID() != ids[3] {
		t.Errorf("environment filter: %d", len(prod))
	}
	main := h.sim.Branch("acme/shop", "main")
	if l, _, _ := gh.Repositories.ListDeployments(ctx, "acme", "shop", &github.DeploymentsListOptions{SHA: main, Task: "deploy", Ref: "main"}); len(l) != 5 {
		t.Errorf("sha/task/ref filter: %d", len(l))
	}
	if l, _, _ := gh.Repositories.ListDeployments(ctx, "acme", "shop", &github.DeploymentsListOptions{Task: "migrate"}); len(l) != 0 {
		t.Errorf("task filter: %d", len(l))
	}
}

func TestCommitStatusesREST(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	sha := h.sim.Branch("acme/shop", "main")
	gh := h.client(h.org, nil)
	ctx := h.ctx()
	st, _, err := gh.Repositories.CreateStatus(ctx, "acme", "shop", sha, &github.RepoStatus{State: github.String("pending")})
	if err != nil || st.GetContext() != "default" {
		t.Fatalf("default context: %v %v", err, st.GetContext())
	}
	if _, _, err := gh.Repositories.CreateStatus(ctx, "acme", "shop", sha, &github.RepoStatus{State: github.String("success"), Context: github.String("ci")}); err != nil {
		t.Fatal(err)
	}
	combined, _, err := gh.Repositories.GetCombinedStatus(ctx, "acme", "shop", "main", nil)
	if err != nil || combined.GetState() != "pending" || combined.GetTotalCount() != 2 {
		t.Fatalf("combined: %v %s %d", err, combined.GetState(), combined.GetTotalCount())
	}
	if _, _, err := gh.Repositories.CreateStatus(ctx, "acme", "shop", sha, &github.RepoStatus{State: github.String("error"), Context: github.String("default")}); err != nil {
		t.Fatal(err)
	}
	if c, _, _ := gh.Repositories.GetCombinedStatus(ctx, "acme", "shop", sha, nil); c.GetState() != "failure" {
		t.Errorf("combined with error: %s", c.GetState())
	}
	list, _, err := gh.Repositories.ListStatuses(ctx, "acme", "shop", sha, nil)
	if err != nil || len(list) != 3 || list[0].GetState() != "error" {
		t.Errorf("list newest first: %d", len(list))
	}
	tok := h.token(h.org)
	if r := h.do("POST", "/repos/acme/shop/statuses/"+sha, tok, `{"state":"fine"}`); r.status != 422 {
		t.Errorf("bad state: %d", r.status)
	}
	if r := h.do("POST", "/repos/acme/shop/statuses/0000000000000000000000000000000000000001", tok, `{"state":"success"}`); r.status != 422 {
		t.Errorf("unknown sha: %d", r.status)
	}
	// A description is at most 140 characters (not bytes).
	r := h.do("POST", "/repos/acme/shop/statuses/"+sha, tok, `{"state":"success","context":"long","description":"`+strings.Repeat("é", 141)+`"}`)
	want := map[string]any{
		"message":           "Validation Failed",
		"documentation_url": "https://docs.github.com/rest/commits/statuses#create-a-commit-status",
		"status":            "422",
		"errors": []any{map[string]any{
			"resource": "Status", "code": "custom", "field": "description",
			"message": "description is too long (maximum is 140 characters)",
		}},
	}
	if got := r.json(t); r.status != 422 || !reflect.DeepEqual(got, want) {
		t.Errorf("description of 141 characters: %d %v", r.status, got)
	}
	if r := h.do("POST", "/repos/acme/shop/statuses/"+sha, tok, `{"state":"success","context":"long","description":"`+strings.Repeat("é", 140)+`"}`); r.status != 201 {
		t.Errorf("description of 140 characters: %d %s", r.status, r.body)
	}
	h.waitIdle()
	var statusEvents int
	for _, d := range h.sim.Deliveries() {
		if d.Event == "status" {
			statusEvents++
		}
	}
	if statusEvents != 4 {
		t.Errorf("status webhooks: %d", statusEvents)
	}
	if got := h.sim.CommitStatuses("acme/shop", sha); len(got) != 4 || got[1].Context != "ci" || got[1].Creator != "lastmile[bot]" {
		t.Errorf("CommitStatuses: %+v", got)
	}
}

// A commit status context is case-insensitive: "CI" and "ci" are one
// context, its newest status counts (and spells it), in the combined
// status, the required_contexts check and the 409's contexts.
func TestCommitStatusContextIsCaseInsensitive(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	sha := h.sim.Branch("acme/shop", "main")
	gh := h.client(h.org, nil)
	ctx := h.ctx()
	tok := h.token(h.org)
	h.sim.SetCommitStatus("acme/shop", sha, "CI", "failure")
	h.sim.SetCommitStatus("acme/shop", sha, "lint", "success")
	h.sim.SetCommitStatus("acme/shop", sha, "ci", "success")

	combined, _, err := gh.Repositories.GetCombinedStatus(ctx, "acme", "shop", sha, nil)
	if err != nil || combined.GetState() != "success" || combined.GetTotalCount() != 2 {
		t.Fatalf("combined: %v %s %d %+v", err, combined.GetState(), combined.GetTotalCount(), combined.Statuses)
	}
	var contexts []string
	for _, s := range combined.Statuses {
		contexts = append(contexts, s.GetContext()+"="+s.GetState())
	}
	if want := []string{"lint=success", "ci=success"}; !reflect.DeepEqual(contexts, want) {
		t.Errorf("combined statuses %v, want %v", contexts, want)
	}
	if r := h.do("POST", "/repos/acme/shop/deployments", tok, map[string]any{"ref": sha, "auto_merge": false, "required_contexts": []string{"Ci"}}); r.status != 201 {
		t.Errorf("required Ci, ci green: %d %s", r.status, r.body)
	}
	if r := h.do("POST", "/repos/acme/shop/deployments", tok, map[string]any{"ref": sha, "auto_merge": false, "environment": "qa"}); r.status != 201 {
		t.Errorf("every context, all green: %d %s", r.status, r.body)
	}

	h.sim.SetCommitStatus("acme/shop", sha, "Ci", "pending")
	r := h.do("POST", "/repos/acme/shop/deployments", tok, map[string]any{"ref": sha, "auto_merge": false, "required_contexts": []string{"CI"}})
	if r.status != 409 || !strings.Contains(string(r.body), `"contexts":[{"context":"Ci","state":"pending"},{"context":"lint","state":"success"}]`) {
		t.Errorf("required CI, Ci pending: %d %s", r.status, r.body)
	}
}

// The combined status pages its statuses, one per context, with page and
// per_page (default 30) and a Link header; state and total_count are of
// every context, whatever the page.
func TestCombinedStatusPagination(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	sha := h.sim.Branch("acme/shop", "main")
	gh := h.client(h.org, nil)
	ctx := h.ctx()
	var want []string
	for i := 0; i < 34; i++ {
		want = append(want, fmt.Sprintf("ctx-%02d", i))
		h.sim.SetCommitStatus("acme/shop", sha, want[i], "success")
	}
	want = append(want, "last")
	h.sim.SetCommitStatus("acme/shop", sha, "last", "failure")

	c, resp, err := gh.Repositories.GetCombinedStatus(ctx, "acme", "shop", sha, nil)
	if err != nil || len(c.Statuses) != 30 || c.GetTotalCount() != 35 || c.GetState() != "failure" || resp.NextPage != 2 || resp.LastPage != 2 {
		t.Fatalf("default page: %v, %d statuses, total %d, %s, next %d last %d", err, len(c.Statuses), c.GetTotalCount(), c.GetState(), resp.NextPage, resp.LastPage)
	}
	var got []string
	opts := &github.ListOptions{PerPage: 10}
	pages := 0
	for {
		c, resp, err := gh.Repositories.GetCombinedStatus(ctx, "acme", "shop", sha, opts)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if c.GetTotalCount() != 35 || c.GetState() != "failure" {
			t.Errorf("page %d: total %d, state %s", opts.Page, c.GetTotalCount(), c.GetState())
		}
		for _, s := range c.Statuses {
			got = append(got, s.GetContext())
		}
		if resp.NextPage == 0 {
			if resp.FirstPage != 1 {
				t.Error("no first link on the last page")
			}
			break
		}
		opts.Page = resp.NextPage
	}
	if pages != 4 || !reflect.DeepEqual(got, want) {
		t.Errorf("%d pages of %v, want 4 of %v", pages, got, want)
	}
	if c, _, err := gh.Repositories.GetCombinedStatus(ctx, "acme", "shop", sha, &github.ListOptions{Page: 5, PerPage: 10}); err != nil || len(c.Statuses) != 0 || c.GetTotalCount() != 35 {
		t.Errorf("past the last page: %v %+v", err, c)
	}
}

// GitHub keeps at most 1000 statuses per SHA and context: the 1001st is a
// 422 that names no field, counted by context as GitHub compares it (without
// regard to case). Other contexts of the commit can still be set.
func TestCommitStatusLimitPerContext(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	sha := h.sim.Branch("acme/shop", "main")
	for i := 0; i < 1000; i++ {
		h.sim.SetCommitStatus("acme/shop", sha, "ci", "pending")
	}
	tok := h.token(h.org)
	r := h.do("POST", "/repos/acme/shop/statuses/"+sha, tok, `{"state":"success","context":"CI"}`)
	want := map[string]any{
		"message":           "Validation Failed",
		"documentation_url": "https://docs.github.com/rest/commits/statuses#create-a-commit-status",
		"status":            "422",
		"errors": []any{map[string]any{
			"resource": "Status", "code": "custom",
			"message": "This SHA and context has reached the maximum number of statuses.",
		}},
	}
	if got := r.json(t); r.status != 422 || !reflect.DeepEqual(got, want) {
		t.Errorf("1001st status of ci: %d %v", r.status, got)
	}
	if r := h.do("POST", "/repos/acme/shop/statuses/"+sha, tok, `{"state":"success","context":"lint"}`); r.status != 201 {
		t.Errorf("another context: %d %s", r.status, r.body)
	}
	if got := h.sim.CommitStatuses("acme/shop", sha); len(got) != 1001 || got[1000].Context != "lint" {
		t.Errorf("statuses: %d, want the 1000 of ci and lint's", len(got))
	}
	// The fixture, which plays a CI system, cannot pass the limit either.
	func() {
		defer func() {
			if recover() == nil {
				t.Error("SetCommitStatus past the limit did not panic")
			}
		}()
		h.sim.SetCommitStatus("acme/shop", sha, "Ci", "success")
	}()
}

// Check runs count for required_contexts: a context is satisfied by a check
// run of that exact name completed with conclusion success; one queued, in
// progress or not successful makes GitHub answer 409, whose contexts list
// the check runs after the statuses, with their conclusion or status.
func TestCreateDeploymentRequiredContextsCheckRuns(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	sha := h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "x", Files: map[string]string{"a": "1"}}).After
	tok := h.token(h.org)
	h.sim.SetCommitStatus("acme/shop", sha, "lint", "success")
	h.sim.SetCheckRun("acme/shop", sha, "build", "in_progress", "")
	n := 0
	create := func(body map[string]any) apiResponse {
		n++
		body["ref"], body["auto_merge"], body["environment"] = sha, false, fmt.Sprintf("env%d", n)
		return h.do("POST", "/repos/acme/shop/deployments", tok, body)
	}
	conflict := func(what string, r apiResponse, contexts string) {
		t.Helper()
		if r.status != 409 || !strings.Contains(string(r.body), `"contexts":[`+contexts+`]`) {
			t.Errorf("%s: got %d %s\nwant 409 with contexts [%s]", what, r.status, r.body, contexts)
		}
	}

	r := create(map[string]any{"required_contexts": []string{"build"}})
	want := map[string]any{
		"message":           "Conflict: Commit status checks failed for " + sha,
		"documentation_url": "https://docs.github.com/rest/deployments/deployments#create-a-deployment",
		"errors": []any{map[string]any{
			"contexts": []any{map[string]any{"context": "lint", "state": "success"}, map[string]any{"context": "build", "state": "in_progress"}},
			"resource": "Deployment", "field": "required_contexts", "code": "invalid",
		}},
	}
	if got := r.json(t); r.status != 409 || !reflect.DeepEqual(got, want) {
		t.Fatalf("build in progress: got %d %v\nwant 409 %v", r.status, got, want)
	}
	conflict("every context, build in progress", create(map[string]any{}), `{"context":"lint","state":"success"},{"context":"build","state":"in_progress"}`)
	if r := create(map[string]any{"required_contexts": []string{"lint"}}); r.status != 201 {
		t.Errorf("lint only: %d %s", r.status, r.body)
	}

	h.sim.SetCheckRun("acme/shop", sha, "build", "completed", "failure")
	conflict("build failed", create(map[string]any{"required_contexts": []string{"build"}}), `{"context":"lint","state":"success"},{"context":"build","state":"failure"}`)
	// A re-run: its newest run counts, queued until it starts.
	h.sim.SetCheckRun("acme/shop", sha, "build", "queued", "")
	conflict("build re-run queued", create(map[string]any{"required_contexts": []string{"build"}}), `{"context":"lint","state":"success"},{"context":"build","state":"queued"}`)
	h.sim.SetCheckRun("acme/shop", sha, "build", "completed", "success")
	if r := create(map[string]any{"required_contexts": []string{"build", "lint"}}); r.status != 201 {
		t.Errorf("build and lint green: %d %s", r.status, r.body)
	}
	if r := create(map[string]any{}); r.status != 201 {
		t.Errorf("every context green: %d %s", r.status, r.body)
	}
	// A check run's name is matched exactly.
	conflict("Build required, build green", create(map[string]any{"required_contexts": []string{"Build"}}), `{"context":"lint","state":"success"},{"context":"build","state":"success"}`)

	// Only success satisfies a context: neutral does not.
	h.sim.SetCheckRun("acme/shop", sha, "docs", "completed", "neutral")
	conflict("docs neutral", create(map[string]any{"required_contexts": []string{"docs"}}),
		`{"context":"lint","state":"success"},{"context":"build","state":"success"},{"context":"docs","state":"neutral"}`)
	conflict("every context, docs neutral", create(map[string]any{}),
		`{"context":"lint","state":"success"},{"context":"build","state":"success"},{"context":"docs","state":"neutral"}`)
	if r := create(map[string]any{"required_contexts": []string{"build"}}); r.status != 201 {
		t.Errorf("build only, docs neutral: %d %s", r.status, r.body)
	}
	// A context is satisfied by either a success status or a successful
	// check run of its name.
	h.sim.SetCommitStatus("acme/shop", sha, "build", "failure")
	if r := create(map[string]any{"required_contexts": []string{"build"}}); r.status != 201 {
		t.Errorf("build status failed, build check run green: %d %s", r.status, r.body)
	}
	h.sim.SetCommitStatus("acme/shop", sha, "docs", "success")
	if r := create(map[string]any{"required_contexts": []string{"docs"}}); r.status != 201 {
		t.Errorf("docs status green, docs check run neutral: %d %s", r.status, r.body)
	}
}

// GitHub's REST description declares a Location header on the 201 of a
// new deployment status and of a new commit status: the new status's url.
func TestCreatedStatusLocation(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	sha := h.sim.Branch("acme/shop", "main")
	tok := h.token(h.org)
	r := h.do("POST", "/repos/acme/shop/deployments", tok, map[string]any{"ref": sha, "environment": "qa", "required_contexts": []string{}})
	if r.status != 201 {
		t.Fatalf("deployment: %d %s", r.status, r.body)
	}
	id := int64(r.json(t)["id"].(float64))
	for _, c := range []struct{ name, path string }{
		{"deployment status", fmt.Sprintf("/repos/acme/shop/deployments/%d/statuses", id)},
		{"commit status", "/repos/acme/shop/statuses/" + sha},
	} {
		r := h.do("POST", c.path, tok, map[string]any{"state": "success"})
		if r.status != 201 {
			t.Fatalf("%s: %d %s", c.name, r.status, r.body)
		}
		if loc, url := r.header.Get("Location"), r.json(t)["url"]; loc == "" || loc != url {
			t.Errorf("%s: Location %q, url %v", c.name, loc, url)
		}
	}
}
