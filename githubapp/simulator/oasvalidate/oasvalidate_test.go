package oasvalidate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/githubapp/simulator/oasvalidate"
)

func load(t *testing.T) *oasvalidate.Validator {
	t.Helper()
	v, err := oasvalidate.Load()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func request(method, target, body string) *http.Request {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	return r
}

// A deployment as GitHub describes it (every required field).
const deployment = `{"url":"https://api.github.com/repos/acme/shop/deployments/1","id":1,"node_id":"D_1","sha":"a84d88e7554fc1fa21bcbc4efae3c782a70d2b9d",
"ref":"main","task":"deploy","payload":{},"original_environment":"test","environment":"test","description":null,
"creator":null,"created_at":"2024-01-01T00:00:00Z","updated_at":"2024-01-01T00:00:00Z",
"statuses_url":"https://api.github.com/repos/acme/shop/deployments/1/statuses","repository_url":"https://api.github.com/repos/acme/shop"}`

func TestRequestMismatches(t *testing.T) {
	v := load(t)
	for _, c := range []struct {
		name, method, target, body string
		want                       string // in the error
	}{
		{"POST deployments without ref", "POST", "/repos/acme/shop/deployments", `{"environment":"test"}`, `"ref"`},
		{"a field of the wrong type", "POST", "/repos/acme/shop/deployments", `{"ref":"main","auto_merge":"yes"}`, "auto_merge"},
		{"a state GitHub does not have", "POST", "/repos/acme/shop/deployments/1/statuses", `{"state":"done"}`, "state"},
		{"a query parameter of the wrong type", "GET", "/repos/acme/shop/deployments?per_page=many", "", "per_page"},
		{"a path parameter of the wrong type", "GET", "/repos/acme/shop/deployments/abc", "", "deployment_id"},
		{"a query parameter the operation does not have", "GET", "/repos/acme/shop/deployments?state=success", "", `"state"`},
		{"a misspelt body field (GitHub would ignore it)", "POST", "/repos/acme/shop/deployments", `{"ref":"main","enviroment":"test"}`, `"enviroment"`},
		{"no such operation", "DELETE", "/app", "", "no such operation"},
		{"no such path", "GET", "/repos/acme/shop/branches", "", "no such operation"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := v.Request(request(c.method, c.target, c.body), []byte(c.body))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s %s %s: error %v, want one about %s", c.method, c.target, c.body, err, c.want)
			}
		})
	}
	if _, err := v.Request(request("DELETE", "/app", ""), nil); !errors.Is(err, oasvalidate.ErrNoOperation) {
		t.Errorf("DELETE /app: %v, want ErrNoOperation", err)
	}
	// And conforming ones pass: a file path with slashes, a compare of
	// branches with one, the JSON null of ghinstallation's token request.
	for _, c := range []struct{ method, target, body string }{
		{"POST", "/repos/acme/shop/deployments", `{"ref":"main","environment":"test","required_contexts":[],"payload":{"lastmile":{"release":1}}}`},
		{"GET", "/repos/acme/shop/contents/.github/lastmile.yml?ref=main", ""},
		{"GET", "/repos/acme/shop/compare/main...feature/x", ""},
		{"POST", "/app/installations/1/access_tokens", "null"},
	} {
		op, err := v.Request(request(c.method, c.target, c.body), []byte(c.body))
		if err != nil {
			t.Errorf("%s %s %s: %v", c.method, c.target, c.body, err)
		} else if !strings.HasPrefix(op.String(), c.method+" /") {
			t.Errorf("%s %s: operation %s", c.method, c.target, op)
		}
	}
}

func TestResponseMismatches(t *testing.T) {
	v := load(t)
	op, err := v.Request(request("POST", "/repos/acme/shop/deployments", `{"ref":"main"}`), []byte(`{"ref":"main"}`))
	if err != nil {
		t.Fatal(err)
	}
	get, err := v.Request(request("GET", "/repos/acme/shop/deployments", ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	json := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
	for _, c := range []struct {
		name   string
		op     *oasvalidate.Operation
		status int
		header http.Header
		body   string
		want   string // in the error; "" for none
	}{
		{"a conforming deployment", op, 201, json, deployment, ""},
		{"an id that is not an integer", op, 201, json, strings.Replace(deployment, `"id":1`, `"id":"1"`, 1), "id"},
		{"a required field missing", op, 201, json, strings.Replace(deployment, `"sha":"a84d88e7554fc1fa21bcbc4efae3c782a70d2b9d",`, "", 1), "sha"},
		{"a URL that is not absolute", op, 201, json, strings.Replace(deployment, `"repository_url":"https://api.github.com/repos/acme/shop"`, `"repository_url":"/repos/acme/shop"`, 1), "repository_url"},
		{"a time that is not RFC 3339", op, 201, json, strings.Replace(deployment, `"created_at":"2024-01-01T00:00:00Z"`, `"created_at":"yesterday"`, 1), "created_at"},
		{"a status the operation does not declare", op, 200, json, deployment, "200"},
		{"a list that is not one", get, 200, json, deployment, "array"},
		{"a 422 without GitHub's validation error body", op, 422, json, `{"errors":[{"code":"missing_field"}]}`, "message"},
		// Exceptions: GitHub answers these to any operation.
		{"an injected 502", get, 502, json, `{"message":"Server Error","documentation_url":"https://docs.github.com/rest"}`, ""},
		{"a 502 that is not GitHub's error body", get, 502, json, `<html>bad gateway</html>`, "502"},
		{"a primary rate limit as 429", get, 429, http.Header{"X-Ratelimit-Remaining": {"0"}}, `{"message":"API rate limit exceeded","documentation_url":"x"}`, ""},
		{"a secondary rate limit", get, 403, json, `{"message":"You have exceeded a secondary rate limit.","documentation_url":"x"}`, ""},
		{"a 403 for another reason", get, 403, json, `{"message":"Forbidden","documentation_url":"x"}`, "403"},
		{"a 404", get, 404, json, `{"message":"Not Found","documentation_url":"x","status":"404"}`, ""},
		{"a 404 without a message", get, 404, json, `{"documentation_url":"x"}`, "no message"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := v.Response(c.op, c.status, c.header, []byte(c.body))
			switch {
			case c.want == "" && err != nil:
				t.Errorf("%s -> %d: %v", c.op, c.status, err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("%s -> %d %s: error %v, want one about %s", c.op, c.status, c.body, err, c.want)
			}
		})
	}
}

// examples returns GitHub's example payloads of an event
// (testdata/github-webhook-examples.json, from @octokit/webhooks-examples).
func examples(t *testing.T, event string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "github-webhook-examples.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Events []struct {
			Name     string           `json:"name"`
			Examples []map[string]any `json:"examples"`
		} `json:"events"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	for _, e := range f.Events {
		if e.Name == event {
			return e.Examples
		}
	}
	t.Fatalf("no example of %s", event)
	return nil
}

func TestWebhookMismatches(t *testing.T) {
	v := load(t)
	if got := len(v.Webhooks()); got != 20 {
		t.Errorf("the description has %d webhooks, want the 20 the simulator sends: %v", got, v.Webhooks())
	}
	// GitHub's own examples conform, those that are not older than the
	// description (many lack a field it has added since): one of each
	// kind the simulator sends that has a conforming example.
	for _, c := range []struct {
		event string
		index int
	}{
		{"check_suite", 0}, {"deployment", 2}, {"deployment_review", 0}, {"deployment_status", 0},
		{"installation", 5}, {"installation", 6}, {"workflow_job", 1}, {"workflow_job", 5}, {"workflow_job", 7},
		{"workflow_run", 1}, {"workflow_run", 3},
	} {
		ex := examples(t, c.event)[c.index]
		action, _ := ex["action"].(string)
		body, _ := json.Marshal(ex)
		if err := v.Webhook(c.event, action, body); err != nil {
			t.Errorf("GitHub's example %d of %s: %v", c.index, c.event, err)
		}
	}

	// A deployment_status example, changed.
	status := func(change func(m map[string]any)) []byte {
		ex := examples(t, "deployment_status")[0]
		change(ex)
		b, _ := json.Marshal(ex)
		return b
	}
	deploymentStatus := func(k string, val any) func(map[string]any) {
		return func(m map[string]any) { m["deployment_status"].(map[string]any)[k] = val }
	}
	for _, c := range []struct {
		name, event, action string
		body                []byte
		want                string // in the error; "" for none
	}{
		{"environment_url \"\" (EmptyURIs)", "deployment_status", "created", status(deploymentStatus("environment_url", "")), ""},
		{"a log_url", "deployment_status", "created", status(deploymentStatus("log_url", "https://example.com/log")), ""},
		{"an environment_url that is not a URL", "deployment_status", "created", status(deploymentStatus("environment_url", "staging")),
			`webhook deployment_status/created does not conform to webhook-deployment-status-created (x-webhooks deployment-status-created) of GitHub's description: Error at "/deployment_status/environment_url"`},
		{"an id that is not an integer", "deployment_status", "created", status(deploymentStatus("id", "1")), `"/deployment_status/id"`},
		{"a required field missing", "deployment_status", "created", status(func(m map[string]any) { delete(m["deployment"].(map[string]any), "sha") }), `"/deployment/sha": property "sha" is missing`},
		{"a time that is not RFC 3339", "deployment_status", "created", status(func(m map[string]any) { m["repository"].(map[string]any)["updated_at"] = "yesterday" }), `"/repository/updated_at"`},
		{"another action than the payload's", "deployment_status", "deleted", status(func(map[string]any) {}), "no such webhook"},
		{"the payload's action is not the webhook's", "deployment_status", "created", status(func(m map[string]any) { m["action"] = "deleted" }), `action is "deleted"`},
		{"a kind the simulator does not send", "issues", "opened", []byte(`{"action":"opened"}`), "no such webhook"},
		{"not JSON", "status", "", []byte(`{`), "not JSON"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := v.Webhook(c.event, c.action, c.body)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("%s/%s: %v", c.event, c.action, err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("%s/%s: error %v, want one about %s", c.event, c.action, err, c.want)
			}
		})
	}
	if err := v.Webhook("issues", "opened", []byte(`{"action":"opened"}`)); !errors.Is(err, oasvalidate.ErrNoWebhook) {
		t.Errorf("issues/opened: %v, want ErrNoWebhook", err)
	}
}

// Every webhook is checked against both descriptions: the REST package's
// x-webhooks and the webhook package's (WebhooksFile), with
// WebhookExceptions for the latter and only those.
func TestWebhookBothDescriptions(t *testing.T) {
	v := load(t)
	// A protection rule request as the simulator sends it for a job with
	// no deployment of its own (deployment null), with the repository and
	// sender of GitHub's deployment_status example.
	rule := func(change func(m map[string]any)) []byte {
		ex := examples(t, "deployment_status")[0]
		m := map[string]any{
			"action": "requested", "environment": "production", "event": "push",
			"sha": ex["deployment"].(map[string]any)["sha"], "ref": "refs/heads/main",
			"deployment_callback_url": "https://api.github.com/repos/acme/shop/actions/runs/5/deployment_protection_rule",
			"deployment":              nil,
			"installation":            map[string]any{"id": 1, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="},
			"repository":              ex["repository"], "sender": ex["sender"],
		}
		change(m)
		b, _ := json.Marshal(m)
		return b
	}
	// GitHub's deployment example with a workflow_run (older than both
	// descriptions: it lacks the run's path and display_title), changed.
	deployment := func(change func(m map[string]any)) []byte {
		ex := examples(t, "deployment")[1]
		run := ex["workflow_run"].(map[string]any)
		run["path"], run["display_title"] = ".github/workflows/deploy.yml", "Deploy"
		change(ex)
		b, _ := json.Marshal(ex)
		return b
	}
	previousAttempt := func(val any) func(map[string]any) {
		return func(m map[string]any) { m["workflow_run"].(map[string]any)["previous_attempt_url"] = val }
	}
	// GitHub's push example (older than both descriptions: its repository
	// lacks has_discussions), changed.
	push := func(change func(m map[string]any)) []byte {
		ex := examples(t, "push")[1]
		ex["repository"].(map[string]any)["has_discussions"] = false
		change(ex)
		b, _ := json.Marshal(ex)
		return b
	}
	const rest, pkg = "(x-webhooks ", "of " + oasvalidate.WebhooksPackage + ":"
	for _, c := range []struct {
		name, event, action string
		body                []byte
		rest, pkg           string // in the error, about each description; "" for none
	}{
		{"a push", "push", "", push(func(map[string]any) {}), "", ""},
		{"a protection rule request, deployment null (WebhookExceptions)", "deployment_protection_rule", "requested", rule(func(map[string]any) {}), "", ""},
		{"a protection rule request, deployment not an object", "deployment_protection_rule", "requested", rule(func(m map[string]any) { m["deployment"] = "none" }),
			`"/deployment"`, "at '/deployment'"},
		{"a protection rule request without sender (required by 12.1.0 only)", "deployment_protection_rule", "requested", rule(func(m map[string]any) { delete(m, "sender") }),
			"", "missing property 'sender'"},
		{"a re-run's deployment, previous_attempt_url a URL (WebhookExceptions)", "deployment", "created", deployment(previousAttempt("https://api.github.com/repos/acme/shop/actions/runs/5/attempts/1")), "", ""},
		{"a deployment, previous_attempt_url a number (nullable of any type in 23.0.2)", "deployment", "created", deployment(previousAttempt(1)),
			"", "at '/workflow_run/previous_attempt_url'"},
		{"a push, forced not a boolean", "push", "", push(func(m map[string]any) { m["forced"] = "no" }),
			`webhook push does not conform to webhook-push (x-webhooks push) of GitHub's description: Error at "/forced"`,
			"webhook push does not conform to webhook-push (webhooks push) of " + oasvalidate.WebhooksPackage + ": at '/forced': got string, want boolean"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := v.Webhook(c.event, c.action, c.body)
			msg := ""
			if err != nil {
				msg = err.Error()
			}
			for _, d := range []struct{ name, marker, want string }{{"x-webhooks", rest, c.rest}, {oasvalidate.WebhooksPackage, pkg, c.pkg}} {
				switch failed := strings.Contains(msg, d.marker); {
				case d.want == "" && failed:
					t.Errorf("%s/%s does not conform to %s: %v", c.event, c.action, d.name, err)
				case d.want != "" && (!failed || !strings.Contains(msg, d.want)):
					t.Errorf("%s/%s: error %v, want one from %s about %s", c.event, c.action, err, d.name, d.want)
				}
			}
		})
	}
}

// reportT is a testing.TB that records what Wrap reports.
type reportT struct {
	testing.TB
	mu       sync.Mutex
	errors   []string
	cleanups []func()
}

func (r *reportT) Helper()          {}
func (r *reportT) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *reportT) Error(args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprint(args...))
}
func (r *reportT) Errorf(format string, args ...any) { r.Error(fmt.Sprintf(format, args...)) }

func (r *reportT) end() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

// breakPush stands in for a simulator bug in its push webhooks: it shows
// the webhook check of the handler it wraps a push whose "forced" is not a
// boolean.
type breakPush struct{ http.Handler }

func (b breakPush) ObserveWebhook(event, action string, body []byte) {
	if event == "push" {
		body = bytes.Replace(body, []byte(`"forced":false`), []byte(`"forced":"no"`), 1)
	}
	b.Handler.(simulator.WebhookObserver).ObserveWebhook(event, action, body)
}

// Wrap on a simulator fails the test for a bad request, for a bad answer
// (here from a handler that stands in for a simulator bug), and for a bad
// webhook, once each, and lets deliberate faults, the simulator's own
// paths and conforming webhooks pass.
func TestWrapReportsMismatches(t *testing.T) {
	rt := &reportT{TB: t}
	wrap := oasvalidate.Wrap(rt)
	bad := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == "GET" && strings.HasSuffix(r.URL.Path, "/deployments") {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, `{"not":"a list"}`)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	hook := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer hook.Close()
	sim := simulator.New(simulator.Options{AppID: 7, WebhookURL: hook.URL, Wrap: func(h http.Handler) http.Handler { return breakPush{wrap(bad(h))} }})
	api, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	inst := sim.CreateInstallation("acme", "Organization")
	sim.CreateRepo(inst, "acme/shop", simulator.RepoOptions{})
	sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "init", Files: map[string]string{"x": "1"}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := sim.WaitIdle(ctx); err != nil { // the push webhook is sent (and reported) first
		t.Fatal(err)
	}
	atr, err := ghinstallation.NewAppsTransport(http.DefaultTransport, sim.AppID(), sim.AppPrivateKeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	atr.BaseURL = strings.TrimSuffix(api, "/")
	token, err := ghinstallation.NewFromAppsTransport(atr, inst).Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, path, body string) int {
		t.Helper()
		req, _ := http.NewRequest(method, strings.TrimSuffix(api, "/")+path, strings.NewReader(body))
		req.Header.Set("Authorization", "token "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// A bad request: the simulator refuses it (422, which the operation
	// declares); the request is what is reported.
	if got := do("POST", "/repos/acme/shop/deployments", `{"environment":"test"}`); got != 422 {
		t.Errorf("POST deployments without ref: %d", got)
	}
	// A bad answer, twice: reported once, with its count.
	do("GET", "/repos/acme/shop/deployments", "")
	do("GET", "/repos/acme/shop/deployments", "")
	// Deliberate faults and conforming traffic: nothing to report.
	sim.InjectFault(simulator.Fault{Kind: simulator.FaultServerError, Method: "POST", Path: "/repos/{o}/{r}/deployments"})
	sim.InjectFault(simulator.Fault{Kind: simulator.FaultSecondaryRateLimit, Method: "GET", Path: "/repos/{o}/{r}/commits/{ref}", Status: 429})
	sim.InjectFault(simulator.Fault{Kind: simulator.FaultAppliedLost, Method: "POST", Path: "/repos/{o}/{r}/statuses/{sha}", DropConnection: true})
	if got := do("POST", "/repos/acme/shop/deployments", `{"ref":"main","required_contexts":[]}`); got != 502 {
		t.Errorf("injected 502: %d", got)
	}
	if got := do("GET", "/repos/acme/shop/commits/main", ""); got != 429 {
		t.Errorf("injected 429: %d", got)
	}
	if got := do("POST", "/repos/acme/shop/deployments", `{"ref":"main","required_contexts":[]}`); got != 201 {
		t.Errorf("deployment: %d", got)
	}
	req, _ := http.NewRequest("POST", strings.TrimSuffix(api, "/")+"/repos/acme/shop/statuses/main", strings.NewReader(`{"state":"success"}`))
	req.Header.Set("Authorization", "token "+token)
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("the dropped connection answered %d", resp.StatusCode)
	}
	if got := do("GET", "/_simulator/blobs/job-logs/none", ""); got != 404 {
		t.Errorf("a blob: %d", got)
	}
	// The webhooks: the push (broken), the deployments' (conforming).
	if err := sim.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	var sent []string
	for _, d := range sim.Deliveries() {
		sent = append(sent, d.Event+"/"+d.Action)
	}
	if strings.Join(sent, " ") != "push/ deployment/created" {
		t.Errorf("webhooks sent: %v", sent)
	}
	if err := sim.Close(); err != nil {
		t.Fatal(err)
	}

	rt.end()
	t.Log(strings.Join(rt.errors, "\n"))
	if len(rt.errors) != 3 {
		t.Fatalf("reported %d mismatches, want 3:\n%s", len(rt.errors), strings.Join(rt.errors, "\n"))
	}
	for i, want := range []string{
		"the simulator's webhook push does not conform to webhook-push (x-webhooks push) of GitHub's description: Error at \"/forced\"",
		"POST /repos/acme/shop/deployments: request does not conform to POST /repos/{owner}/{repo}/deployments of GitHub's REST description",
		"GET /repos/acme/shop/deployments: answer 200 does not conform to GET /repos/{owner}/{repo}/deployments of GitHub's REST description",
	} {
		if !strings.Contains(rt.errors[i], want) {
			t.Errorf("report %d:\n%s\nwant it to say %q", i, rt.errors[i], want)
		}
	}
	// The broken push is reported against both descriptions.
	if !strings.Contains(rt.errors[0], "webhook push does not conform to webhook-push (webhooks push) of "+oasvalidate.WebhooksPackage+": at '/forced'") ||
		!strings.Contains(rt.errors[1], `"ref"`) || !strings.Contains(rt.errors[2], "(2 times)") {
		t.Errorf("reports:\n%s", strings.Join(rt.errors, "\n"))
	}
}

// lastmile's binaries do not depend on kin-openapi, jsonschema, nor on this
// package.
func TestNotInBinaries(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/lastmile-app/lastmile/cmd/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/getkin/") || strings.HasPrefix(dep, "github.com/santhosh-tekuri/") || strings.HasSuffix(dep, "/oasvalidate") {
			t.Errorf("a command depends on %s", dep)
		}
	}
}
