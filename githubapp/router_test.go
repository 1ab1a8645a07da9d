package githubapp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/pipeline"
)

// recordingEngine is a githubapp.Engine that records the events it is given.
type recordingEngine struct {
	calls []any
	err   error // returned by every call
}

var _ githubapp.Engine = (*recordingEngine)(nil)

func (e *recordingEngine) record(ev any) error { e.calls = append(e.calls, ev); return e.err }

func (e *recordingEngine) HandlePush(_ context.Context, p pipeline.Push) error { return e.record(p) }
func (e *recordingEngine) HandleDeployment(_ context.Context, ev pipeline.NewDeployment) error {
	return e.record(ev)
}
func (e *recordingEngine) HandleDeploymentStatus(_ context.Context, ev pipeline.NewDeploymentStatus) error {
	return e.record(ev)
}
func (e *recordingEngine) HandleReview(_ context.Context, rv pipeline.Review) error {
	return e.record(rv)
}
func (e *recordingEngine) HandleWorkflowJob(_ context.Context, job pipeline.WorkflowJob) error {
	return e.record(job)
}
func (e *recordingEngine) HandleWorkflowRun(_ context.Context, run pipeline.WorkflowRun) error {
	return e.record(run)
}
func (e *recordingEngine) HandleProtectionRule(_ context.Context, req pipeline.ProtectionRuleRequest) error {
	return e.record(req)
}
func (e *recordingEngine) HandleContexts(_ context.Context, ev pipeline.ContextsChanged) error {
	return e.record(ev)
}
func (e *recordingEngine) HandleInstallation(_ context.Context, ev pipeline.InstallationEvent) error {
	return e.record(ev)
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// diff returns where got and want differ ("" if nowhere); times are
// compared as instants, whatever their location.
func diff(path string, got, want reflect.Value) string {
	if got.Type() != want.Type() {
		return fmt.Sprintf("%s: type %s, want %s", path, got.Type(), want.Type())
	}
	if t, ok := got.Interface().(time.Time); ok {
		if w := want.Interface().(time.Time); !t.Equal(w) {
			return fmt.Sprintf("%s: %v, want %v", path, t, w)
		}
		return ""
	}
	switch got.Kind() {
	case reflect.Struct:
		for i := range got.NumField() {
			if d := diff(path+"."+got.Type().Field(i).Name, got.Field(i), want.Field(i)); d != "" {
				return d
			}
		}
		return ""
	case reflect.Pointer:
		if got.IsNil() || want.IsNil() {
			if got.IsNil() != want.IsNil() {
				return fmt.Sprintf("%s: nil %v, want nil %v", path, got.IsNil(), want.IsNil())
			}
			return ""
		}
		return diff(path, got.Elem(), want.Elem())
	case reflect.Slice:
		if got.Len() != want.Len() {
			return fmt.Sprintf("%s: %d elements %v, want %d %v", path, got.Len(), got.Interface(), want.Len(), want.Interface())
		}
		for i := range got.Len() {
			if d := diff(fmt.Sprintf("%s[%d]", path, i), got.Index(i), want.Index(i)); d != "" {
				return d
			}
		}
		return ""
	}
	if !reflect.DeepEqual(got.Interface(), want.Interface()) {
		return fmt.Sprintf("%s: %#v, want %#v", path, got.Interface(), want.Interface())
	}
	return ""
}

// edit decodes a testdata payload, lets change modify it, and encodes it.
func edit(t *testing.T, file string, change func(p map[string]any)) []byte {
	t.Helper()
	var p map[string]any
	if err := json.Unmarshal(payload(t, file), &p); err != nil {
		t.Fatal(err)
	}
	change(p)
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRouterTranslatesGitHubPayloads(t *testing.T) {
	helloWorld := pipeline.Repo{ID: 186853002, Owner: "Codertocat", Name: "Hello-World", InstallationID: 1}
	pagesDeployment := pipeline.DeploymentInfo{
		GitHubID: 145988746, SHA: "f95f852bd8fca8fcc58a9a2d6c842781e32a215e", Ref: "gh-pages", Environment: "github-pages",
		Creator: "github-pages[bot]", CreatedAt: at("2022-01-03T01:28:30Z"), Payload: json.RawMessage(`{}`),
	}
	reviewRepo := pipeline.Repo{ID: 616901961, Owner: "terraform-test-github", Name: "sample-app", InstallationID: 35490125}

	tests := map[string]struct {
		event string
		body  []byte
		want  any
	}{
		"push": {
			event: "push", body: payload(t, "push.json"),
			want: pipeline.Push{
				Repo: helloWorld, DeliveryID: "delivery-1",
				Ref: "refs/heads/master", Before: "0000000000000000000000000000000000000000",
				After: "6113728f27ae82c7b1a177c8d03f9e96e0adf246", DefaultBranch: "master", Pusher: "Codertocat",
				PushedAt: time.Unix(1557933657, 0), // repository.pushed_at, epoch seconds in push payloads
				Commits: []pipeline.Commit{{SHA: "6113728f27ae82c7b1a177c8d03f9e96e0adf246", Author: "Codertocat",
					Timestamp: at("2019-05-15T15:19:25Z"), Title: "Initial commit"}},
			},
		},
		"deployment created by a workflow run": {
			event: "deployment", body: payload(t, "deployment.json"),
			want: pipeline.NewDeployment{Repo: helloWorld, Deployment: func() pipeline.DeploymentInfo {
				d := pagesDeployment
				d.WorkflowRunID, d.WorkflowRunEvent = 289782451, "dynamic"
				return d
			}()},
		},
		"production deployment": {
			event: "deployment",
			body: edit(t, "deployment.json", func(p map[string]any) {
				p["deployment"].(map[string]any)["production_environment"] = true
				p["workflow_run"] = nil
			}),
			want: pipeline.NewDeployment{Repo: helloWorld, Deployment: func() pipeline.DeploymentInfo {
				d := pagesDeployment
				d.Production = true
				return d
			}()},
		},
		"deployment status": {
			event: "deployment_status", body: payload(t, "deployment_status.json"),
			want: pipeline.NewDeploymentStatus{Repo: helloWorld,
				Deployment: func() pipeline.DeploymentInfo {
					d := pagesDeployment
					d.Ref, d.WorkflowRunID, d.WorkflowRunEvent = "master", 289782451, "dynamic"
					return d
				}(),
				Status: pipeline.StatusInfo{GitHubID: 209916254, State: pipeline.DeploymentInProgress,
					LogURL:  "https://github.com/CorsixTH/CorsixTH/runs/4687056418?check_suite_focus=true",
					Creator: "github-pages[bot]", CreatedAt: at("2022-01-03T01:28:40Z")},
			},
		},
		"deployment status without log_url falls back to target_url": {
			event: "deployment_status",
			body: edit(t, "deployment_status.json", func(p map[string]any) {
				st := p["deployment_status"].(map[string]any)
				delete(st, "log_url")
				st["state"], st["description"], st["environment_url"] = "success", "Deployed", "https://shop.example"
			}),
			want: pipeline.NewDeploymentStatus{Repo: helloWorld,
				Deployment: func() pipeline.DeploymentInfo {
					d := pagesDeployment
					d.Ref, d.WorkflowRunID, d.WorkflowRunEvent = "master", 289782451, "dynamic"
					return d
				}(),
				Status: pipeline.StatusInfo{GitHubID: 209916254, State: pipeline.DeploymentSuccess, Description: "Deployed",
					LogURL:         "https://github.com/Codertocat/Hello-World/runs/145988746?check_suite_focus=true",
					EnvironmentURL: "https://shop.example", Creator: "github-pages[bot]", CreatedAt: at("2022-01-03T01:28:40Z")},
			},
		},
		"queued workflow job with its deployment": {
			event: "workflow_job", body: payload(t, "workflow_job_queued.json"), want: queuedJob(false),
		},
		"queued workflow job with a production deployment": {
			event: "workflow_job",
			body: edit(t, "workflow_job_queued.json", func(p map[string]any) {
				p["deployment"].(map[string]any)["production_environment"] = true
			}),
			want: queuedJob(true),
		},
		"workflow job without a deployment": {
			event: "workflow_job",
			body: edit(t, "workflow_job_queued.json", func(p map[string]any) {
				delete(p, "deployment")
				p["action"] = "in_progress"
			}),
			want: func() pipeline.WorkflowJob {
				j := queuedJob(false)
				j.Action, j.Deployment = "in_progress", nil
				return j
			}(),
		},
		"completed workflow run": {
			event: "workflow_run", body: payload(t, "workflow_run_completed.json"),
			want: pipeline.WorkflowRun{
				Repo:   pipeline.Repo{ID: 300029405, Owner: "octo-org", Name: "octo-repo"},
				Action: "completed", RunID: 289782451, Name: "test", // the run's name empty: its workflow's
				Event:   "repository_dispatch",
				HeadSHA: "3484a3fb816e0859fd6e1cea078d76385ff50625", HeadBranch: "master", Status: "completed",
				Conclusion: "success", URL: "https://github.com/octo-org/octo-repo/actions/runs/289782451", Attempt: 1,
				CreatedAt: at("2020-10-05T16:33:24Z"), UpdatedAt: at("2020-10-05T16:33:49Z"),
			},
		},
		"deployment review requested": {
			event: "deployment_review", body: payload(t, "deployment_review_requested.json"),
			want: pipeline.Review{
				Repo: reviewRepo, DeliveryID: "delivery-1", Action: pipeline.ReviewRequested,
				Environments: []string{"TST"}, RunID: 5453085689,
				RunURL:    "https://github.com/terraform-test-github/sample-app/actions/runs/5453085689",
				HeadSHA:   "5275a45b7e99c7fd7265b790392c10a74101a67a",
				Reviewers: []string{"team:admins"}, Actor: "ilmax",
				Since: at("2023-07-04T09:28:15Z"), At: at("2023-07-04T09:28:15Z"),
			},
		},
		"deployment review approved": {
			// GitHub's approved payload: approver, comment and
			// workflow_job_runs instead of requestor and workflow_job_run.
			event: "deployment_review",
			body: edit(t, "deployment_review_requested.json", func(p map[string]any) {
				p["action"] = "approved"
				p["approver"] = map[string]any{"login": "octo-reviewer", "id": 99}
				p["comment"] = "ship it"
				delete(p, "requestor")
				delete(p, "workflow_job_run")
				delete(p, "environment")
				p["reviewers"] = []any{map[string]any{"type": "User", "reviewer": map[string]any{"login": "octo-reviewer"}}}
				p["workflow_job_runs"] = []any{
					map[string]any{"id": 9921448362, "environment": "TST", "updated_at": "2023-07-04T09:31:00Z"},
					map[string]any{"id": 9921448399, "environment": "PRD", "updated_at": "2023-07-04T09:32:30Z"},
					map[string]any{"id": 9921448400, "environment": "TST", "updated_at": "2023-07-04T09:30:00Z"},
				}
			}),
			want: pipeline.Review{
				Repo: reviewRepo, DeliveryID: "delivery-1", Action: pipeline.ReviewApproved,
				Environments: []string{"TST", "PRD"}, RunID: 5453085689,
				RunURL:    "https://github.com/terraform-test-github/sample-app/actions/runs/5453085689",
				HeadSHA:   "5275a45b7e99c7fd7265b790392c10a74101a67a",
				Reviewers: []string{"octo-reviewer"}, Actor: "octo-reviewer", Comment: "ship it",
				Since: at("2023-07-04T09:28:15Z"), At: at("2023-07-04T09:32:30Z"),
			},
		},
		"deployment review approved: the one job run's time, and reviewers null skipped": {
			// The schema allows workflow_job_run alone, and a reviewer null.
			event: "deployment_review",
			body: edit(t, "deployment_review_requested.json", func(p map[string]any) {
				p["action"] = "approved"
				p["approver"] = map[string]any{"login": "octo-reviewer", "id": 99}
				delete(p, "requestor")
				p["workflow_job_run"].(map[string]any)["updated_at"] = "2023-07-04T10:00:00Z"
				p["reviewers"] = []any{map[string]any{"type": "User", "reviewer": nil}, map[string]any{"type": "Team", "reviewer": nil},
					map[string]any{"type": "User", "reviewer": map[string]any{"login": "octo-reviewer"}}}
			}),
			want: pipeline.Review{
				Repo: reviewRepo, DeliveryID: "delivery-1", Action: pipeline.ReviewApproved,
				Environments: []string{"TST"}, RunID: 5453085689,
				RunURL:    "https://github.com/terraform-test-github/sample-app/actions/runs/5453085689",
				HeadSHA:   "5275a45b7e99c7fd7265b790392c10a74101a67a",
				Reviewers: []string{"octo-reviewer"}, Actor: "octo-reviewer",
				Since: at("2023-07-04T09:28:15Z"), At: at("2023-07-04T10:00:00Z"),
			},
		},
		"installation on an enterprise account: its name": {
			// An Enterprise account has a slug and a name, no login.
			event: "installation",
			body: edit(t, "installation_deleted.json", func(p map[string]any) {
				p["installation"].(map[string]any)["account"] = map[string]any{"id": 7, "slug": "acme-corp", "name": "Acme Corp",
					"node_id": "E_1", "html_url": "https://github.com/enterprises/acme-corp"}
				p["installation"].(map[string]any)["target_type"] = "Enterprise"
				p["repositories"] = []any{}
			}),
			want: pipeline.InstallationEvent{InstallationID: 2, Account: "Acme Corp", Action: pipeline.InstallationDeleted,
				Sender: "octocat", At: at("2030-01-01T00:00:00Z")},
		},
		"deployment review rejected without an approver names the sender": {
			event: "deployment_review",
			body: edit(t, "deployment_review_requested.json", func(p map[string]any) {
				p["action"] = "rejected"
				p["sender"] = map[string]any{"login": "octo-sender"}
				delete(p, "workflow_job_run")
				p["reviewers"] = []any{}
			}),
			want: pipeline.Review{
				Repo: reviewRepo, DeliveryID: "delivery-1", Action: pipeline.ReviewRejected,
				Environments: []string{"TST"}, RunID: 5453085689,
				RunURL:  "https://github.com/terraform-test-github/sample-app/actions/runs/5453085689",
				HeadSHA: "5275a45b7e99c7fd7265b790392c10a74101a67a", Actor: "octo-sender",
				Since: at("2023-07-04T09:28:15Z"), At: at("2023-07-04T09:28:15Z"), // workflow_run.updated_at
			},
		},
		"commit status": {
			event: "status", body: payload(t, "status.json"),
			want: pipeline.ContextsChanged{Repo: helloWorld, SHA: "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
				Context: "default", State: "success"},
		},
		"completed check suite": {
			event: "check_suite", body: payload(t, "check_suite_completed.json"),
			want: pipeline.ContextsChanged{Repo: pipeline.Repo{ID: 186853002, Owner: "Codertocat", Name: "Hello-World"},
				SHA: "ec26c3e57ca3a959ca5aad62de7213c562f8c821", Context: "github-actions", State: "success", CheckSuite: true},
		},
		"protection rule requested": {
			event: "deployment_protection_rule",
			body: []byte(`{"action":"requested","environment":"production","event":"deployment",
				"sha":"f95f852bd8fca8fcc58a9a2d6c842781e32a215e","ref":"refs/heads/main",
				"deployment_callback_url":"https://api.github.com/repos/acme/shop/actions/runs/1234567/deployment_protection_rule",
				"deployment":{"id":555,"sha":"f95f852bd8fca8fcc58a9a2d6c842781e32a215e"},
				"repository":{"id":77,"name":"shop","full_name":"acme/shop","owner":{"login":"acme"}},
				"installation":{"id":9}}`),
			want: pipeline.ProtectionRuleRequest{Repo: pipeline.Repo{ID: 77, Owner: "acme", Name: "shop", InstallationID: 9},
				DeliveryID: "delivery-1", Environment: "production", SHA: "f95f852bd8fca8fcc58a9a2d6c842781e32a215e",
				Ref: "refs/heads/main", Event: "deployment", RunID: 1234567, DeploymentID: 555},
		},
		"App uninstalled": {
			event: "installation", body: payload(t, "installation_deleted.json"),
			want: pipeline.InstallationEvent{InstallationID: 2, Account: "octocat", Action: pipeline.InstallationDeleted,
				Repos:  []pipeline.Repo{{ID: 1296269, Owner: "octocat", Name: "Hello-World", InstallationID: 2}},
				Sender: "octocat", At: at("2030-01-01T00:00:00Z")},
		},
		"installation suspended: by whom and when, as the installation says": {
			event: "installation", body: payload(t, "installation_suspend.json"),
			want: pipeline.InstallationEvent{InstallationID: 16598467, Account: "Codertocat", Action: pipeline.InstallationSuspend,
				Sender: "Codertocat", At: at("2021-04-29T02:32:50Z")},
		},
		"installation unsuspended": {
			event: "installation", body: payload(t, "installation_unsuspend.json"),
			want: pipeline.InstallationEvent{InstallationID: 16598467, Account: "Codertocat", Action: pipeline.InstallationUnsuspend,
				Sender: "Codertocat", At: at("2030-01-01T00:00:00Z")},
		},
		"repository removed from the installation": {
			event: "installation_repositories", body: payload(t, "installation_repositories_removed.json"),
			want: pipeline.InstallationEvent{InstallationID: 2, Account: "octocat", Action: pipeline.RepositoriesRemoved,
				Repos:  []pipeline.Repo{{ID: 1296269, Owner: "octocat", Name: "Hello-World", InstallationID: 2}},
				Sender: "octocat", At: at("2030-01-01T00:00:00Z")},
		},
		"repositories added: those added, not those removed": {
			event: "installation_repositories", body: edit(t, "installation_repositories_removed.json", func(p map[string]any) {
				p["action"] = "added"
				p["repositories_added"] = []any{map[string]any{"id": 7, "name": "api", "full_name": "octocat/api"}}
			}),
			want: pipeline.InstallationEvent{InstallationID: 2, Account: "octocat", Action: pipeline.RepositoriesAdded,
				Repos:  []pipeline.Repo{{ID: 7, Owner: "octocat", Name: "api", InstallationID: 2}},
				Sender: "octocat", At: at("2030-01-01T00:00:00Z")},
		},
		"protection rule without sha takes the deployment's": {
			event: "deployment_protection_rule",
			body: []byte(`{"action":"requested","environment":"staging","event":"push",
				"deployment_callback_url":"https://api.github.com/repos/acme/shop/actions/runs/42/deployment_protection_rule",
				"deployment":{"id":556,"sha":"abc123"},
				"repository":{"id":77,"full_name":"acme/shop"},"installation":{"id":9}}`),
			want: pipeline.ProtectionRuleRequest{Repo: pipeline.Repo{ID: 77, Owner: "acme", Name: "shop", InstallationID: 9},
				DeliveryID: "delivery-1", Environment: "staging", SHA: "abc123", Event: "push", RunID: 42, DeploymentID: 556},
		},
	}
	for name, tc := range tests {
		check := func(t *testing.T, body []byte) {
			eng := &recordingEngine{}
			rt := &githubapp.Router{Engine: eng}
			d := &pipeline.Delivery{ID: "delivery-1", Event: tc.event, Body: body, ReceivedAt: at("2030-01-01T00:00:00Z")}
			if err := rt.Handle(context.Background(), d); err != nil {
				t.Fatalf("Handle: %v", err)
			}
			if len(eng.calls) != 1 {
				t.Fatalf("engine called %d times, want once: %+v", len(eng.calls), eng.calls)
			}
			if d := diff("event", reflect.ValueOf(eng.calls[0]), reflect.ValueOf(tc.want)); d != "" {
				t.Errorf("%s\n got %+v\nwant %+v", d, eng.calls[0], tc.want)
			}
		}
		t.Run(name, func(t *testing.T) { check(t, tc.body) })
		// GitHub sends a repository's custom properties with it, whose
		// values go-github v62 cannot all decode (a multi_select
		// property's are arrays): the same event all the same.
		if body, ok := withCustomProperties(t, tc.body); ok {
			t.Run(name+"/repository with custom properties", func(t *testing.T) { check(t, body) })
		}
	}
}

// withCustomProperties is body with custom properties — a multi_select
// one among them — in each of its repository objects (repository,
// head_repository, at any depth); ok is false if it has none.
func withCustomProperties(t *testing.T, body []byte) (with []byte, ok bool) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, member := range v {
				if repo, isObject := member.(map[string]any); isObject && (k == "repository" || k == "head_repository") {
					repo["custom_properties"] = map[string]any{"teams": []any{"payments", "platform"}, "tier": "gold", "owner": nil}
					ok = true
				}
				walk(member)
			}
		case []any:
			for _, item := range v {
				walk(item)
			}
		}
	}
	walk(v)
	with, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return with, ok
}

func TestRouterPushDetails(t *testing.T) {
	t.Run("received time when the payload has no pushed_at", func(t *testing.T) {
		received := at("2030-01-02T03:04:05Z")
		body := edit(t, "push.json", func(p map[string]any) { delete(p["repository"].(map[string]any), "pushed_at") })
		eng := &recordingEngine{}
		if err := (&githubapp.Router{Engine: eng}).Handle(context.Background(),
			&pipeline.Delivery{ID: "d", Event: "push", Body: body, ReceivedAt: received}); err != nil {
			t.Fatal(err)
		}
		if got := eng.calls[0].(pipeline.Push); !got.PushedAt.Equal(received) || !got.PushedAtGuessed {
			t.Errorf("PushedAt = %v (guessed %v), want the delivery's %v, guessed", got.PushedAt, got.PushedAtGuessed, received)
		}
	})
	t.Run("a full commit list may be truncated", func(t *testing.T) {
		for _, n := range []int{githubapp.MaxPushCommits - 1, githubapp.MaxPushCommits} {
			body := edit(t, "push.json", func(p map[string]any) {
				c := p["commits"].([]any)[0]
				commits := make([]any, n)
				for i := range commits {
					commits[i] = c
				}
				p["commits"] = commits
			})
			eng := &recordingEngine{}
			if err := (&githubapp.Router{Engine: eng}).Handle(context.Background(),
				&pipeline.Delivery{ID: "d", Event: "push", Body: body}); err != nil {
				t.Fatal(err)
			}
			p := eng.calls[0].(pipeline.Push)
			if len(p.Commits) != n || p.Truncated != (n >= githubapp.MaxPushCommits) {
				t.Errorf("%d commits: got %d commits, truncated %v", n, len(p.Commits), p.Truncated)
			}
		}
	})
	t.Run("author name when GitHub has no login", func(t *testing.T) {
		body := edit(t, "push.json", func(p map[string]any) {
			c := p["commits"].([]any)[0].(map[string]any)
			c["author"] = map[string]any{"name": "Jane Doe", "email": "jane@example.com"}
			c["message"] = "Fix the build\n\nLonger explanation."
		})
		eng := &recordingEngine{}
		if err := (&githubapp.Router{Engine: eng}).Handle(context.Background(),
			&pipeline.Delivery{ID: "d", Event: "push", Body: body}); err != nil {
			t.Fatal(err)
		}
		c := eng.calls[0].(pipeline.Push).Commits[0]
		if c.Author != "Jane Doe" || c.Title != "Fix the build" {
			t.Errorf("commit = %+v", c)
		}
	})
}

func TestRouterRefusals(t *testing.T) {
	engineErr := errors.New("database is locked")
	tests := map[string]struct {
		event       string
		body        []byte
		engineErr   error
		malformed   bool
		ignored     string // a substring of the reason, when Ignored
		wantErr     error
		engineCalls int
	}{
		"push that is not JSON":         {event: "push", body: []byte("{"), malformed: true},
		"review that is not JSON":       {event: "deployment_review", body: []byte("[1,"), malformed: true},
		"protection rule not JSON":      {event: "deployment_protection_rule", body: []byte("nope"), malformed: true},
		"deployment without repository": {event: "deployment", body: edit(t, "deployment.json", func(p map[string]any) { delete(p, "repository") }), malformed: true},
		"push without repository":       {event: "push", body: edit(t, "push.json", func(p map[string]any) { delete(p, "repository") }), malformed: true},
		"push without installation":     {event: "push", body: edit(t, "push.json", func(p map[string]any) { delete(p, "installation") }), malformed: true},
		"push after not a SHA":          {event: "push", body: edit(t, "push.json", func(p map[string]any) { p["after"] = "not-a-sha" }), malformed: true},
		"push without before":           {event: "push", body: edit(t, "push.json", func(p map[string]any) { delete(p, "before") }), malformed: true},
		"push of a nameless repository": {event: "push", body: edit(t, "push.json", func(p map[string]any) { p["repository"].(map[string]any)["full_name"] = "nameless" }), malformed: true},
		"review without repository": {event: "deployment_review",
			body: edit(t, "deployment_review_requested.json", func(p map[string]any) { delete(p, "repository") }), malformed: true},
		"status without repository": {event: "status", body: edit(t, "status.json", func(p map[string]any) { delete(p, "repository") }), malformed: true},
		"workflow run without repository": {event: "workflow_run",
			body: edit(t, "workflow_run_completed.json", func(p map[string]any) { delete(p, "repository") }), malformed: true},
		"protection rule without repository": {event: "deployment_protection_rule",
			body: []byte(`{"action":"requested","environment":"production"}`), malformed: true},
		// A state GitHub may add: the deployment recorded, as its
		// deployment event would have it; the status not acted on.
		"deployment status with a state lastmile does not know": {event: "deployment_status",
			body: edit(t, "deployment_status.json", func(p map[string]any) {
				p["deployment_status"].(map[string]any)["state"] = "exploded"
			}), ignored: `unknown deployment status state "exploded"`, engineCalls: 1},
		"deployment status without a state": {event: "deployment_status",
			body: edit(t, "deployment_status.json", func(p map[string]any) {
				delete(p["deployment_status"].(map[string]any), "state")
			}), malformed: true},
		"deployment event without a deployment": {event: "deployment",
			body: edit(t, "deployment.json", func(p map[string]any) { delete(p, "deployment") }), malformed: true},
		"deployment status without a deployment": {event: "deployment_status",
			body: edit(t, "deployment_status.json", func(p map[string]any) { delete(p, "deployment") }), malformed: true},
		"check suite requested":    {event: "check_suite", body: payload(t, "check_suite_requested.json"), ignored: "check_suite requested"},
		"ping":                     {event: "ping", body: payload(t, "ping.json"), ignored: "ping"},
		"event lastmile ignores":   {event: "issues", body: []byte(`{"action":"opened"}`), ignored: "issues"},
		"protection rule answered": {event: "deployment_protection_rule", body: []byte(`{"action":"completed","repository":{"id":1,"full_name":"a/b"}}`), ignored: "completed"},
		"engine error is returned": {event: "status", body: payload(t, "status.json"), engineErr: engineErr, wantErr: engineErr, engineCalls: 1},
		"unknown event name":       {event: "no_such_event", body: []byte(`{}`), malformed: true},
		"installation event without an installation": {event: "installation",
			body: edit(t, "installation_deleted.json", func(p map[string]any) { delete(p, "installation") }), malformed: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			eng := &recordingEngine{err: tc.engineErr}
			err := (&githubapp.Router{Engine: eng}).Handle(context.Background(), &pipeline.Delivery{ID: "d", Event: tc.event, Body: tc.body})
			if err == nil {
				t.Fatal("Handle succeeded")
			}
			if got := errors.Is(err, githubapp.ErrMalformed); got != tc.malformed {
				t.Errorf("errors.Is(%v, ErrMalformed) = %v, want %v", err, got, tc.malformed)
			}
			var ig *pipeline.Ignored
			if got := errors.As(err, &ig); got != (tc.ignored != "") {
				t.Errorf("Ignored = %v (%v), want %v", got, err, tc.ignored != "")
			} else if got && !strings.Contains(ig.Reason, tc.ignored) {
				t.Errorf("reason %q should mention %q", ig.Reason, tc.ignored)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v, want %v", err, tc.wantErr)
			}
			if len(eng.calls) != tc.engineCalls {
				t.Errorf("engine called %d times, want %d", len(eng.calls), tc.engineCalls)
			}
		})
	}
}

// GitHub reports a job's own deployment waiting for its environment's
// reviewers with the state "waiting": it is taken as queued, not refused.
func TestRouterDeploymentStatusWaiting(t *testing.T) {
	body := edit(t, "deployment_status.json", func(p map[string]any) {
		p["deployment_status"].(map[string]any)["state"] = "waiting"
	})
	eng := &recordingEngine{}
	if err := (&githubapp.Router{Engine: eng}).Handle(context.Background(),
		&pipeline.Delivery{ID: "d", Event: "deployment_status", Body: body}); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	if got := eng.calls[0].(pipeline.NewDeploymentStatus).Status.State; got != pipeline.DeploymentQueued {
		t.Errorf("state %q, want queued", got)
	}
}

// queuedJob is what the router makes of GitHub's example workflow_job
// queued delivery (testdata/workflow_job_queued.json), its deployment in a
// production environment or not.
func queuedJob(production bool) pipeline.WorkflowJob {
	return pipeline.WorkflowJob{
		Repo:   pipeline.Repo{ID: 591427149, Owner: "lineville", Name: "elastic-machines-testing", InstallationID: 23154469},
		Action: "queued", JobID: 12877621891, RunID: 4747967848, Name: "test",
		HeadSHA: "16c5286e8d9a0629956a28938386b36608707a71", Status: "waiting",
		URL:       "https://github.com/lineville/elastic-machines-testing/actions/runs/4747967848/jobs/8433573014",
		StartedAt: at("2023-04-19T21:12:12Z"),
		Deployment: &pipeline.DeploymentInfo{GitHubID: 875096709, SHA: "16c5286e8d9a0629956a28938386b36608707a71",
			Ref: "main", Environment: "Test", Creator: "lineville", CreatedAt: at("2023-04-19T21:12:12Z"),
			Payload: json.RawMessage(`{}`), WorkflowRunID: 4747967848, Production: production},
	}
}

// The router drops the cached client of an installation uninstalled or
// suspended, before the engine acts on it, and of no other.
func TestRouterForgetsTheClientOfAnInstallationGone(t *testing.T) {
	for _, tc := range []struct {
		event, file string
		want        []int64
	}{
		{"installation", "installation_deleted.json", []int64{2}},
		{"installation", "installation_suspend.json", []int64{16598467}},
		{"installation", "installation_unsuspend.json", nil},
		{"installation_repositories", "installation_repositories_removed.json", nil},
	} {
		t.Run(tc.file, func(t *testing.T) {
			var forgot []int64
			eng := &recordingEngine{}
			rt := &githubapp.Router{Engine: eng, Forget: func(id int64) {
				if len(eng.calls) > 0 {
					t.Error("forgotten after the engine acted")
				}
				forgot = append(forgot, id)
			}}
			if err := rt.Handle(context.Background(), &pipeline.Delivery{ID: "d", Event: tc.event, Body: payload(t, tc.file)}); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(forgot, tc.want) {
				t.Errorf("forgot %v, want %v", forgot, tc.want)
			}
		})
	}
}

// A field of the wrong type is said in words, whole: the field, what
// lastmile reads there, what the payload has — not encoding/json's dump of
// the Go type, which `lastmile deliveries` cut in the middle.
func TestRouterSaysWhichFieldHasTheWrongType(t *testing.T) {
	tests := map[string]struct {
		event string
		body  []byte
		want  string
	}{
		"commits not an array": {"push", edit(t, "push.json", func(p map[string]any) { p["commits"] = "notarray" }),
			`malformed payload: push: field "commits": want an array, got a string`},
		"a commit's author's name a number": {"push", edit(t, "push.json", func(p map[string]any) {
			p["commits"].([]any)[0].(map[string]any)["author"].(map[string]any)["name"] = 5
		}), `malformed payload: push: field "commits.author.name": want a string, got a number`},
		"repository.id a fraction": {"push", []byte(`{"repository":{"id":1.5}}`),
			`malformed payload: push: field "repository.id": want an integer, got the number 1.5`},
		"forced a string": {"push", []byte(`{"forced":"yes"}`),
			`malformed payload: push: field "forced": want true or false, got a string`},
		"reviewers an object": {"deployment_review", edit(t, "deployment_review_requested.json", func(p map[string]any) { p["reviewers"] = map[string]any{} }),
			`malformed payload: deployment_review: field "reviewers": want an array, got an object`},
		"deployment a boolean (go-github's types)": {"deployment", edit(t, "deployment.json", func(p map[string]any) { p["deployment"] = true }),
			`malformed payload: deployment: field "deployment": want an object, got a boolean`},
		"the protection rule's sha an array": {"deployment_protection_rule", []byte(`{"sha":["a"]}`),
			`malformed payload: deployment_protection_rule: field "sha": want a string, got an array`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := (&githubapp.Router{Engine: &recordingEngine{}}).Handle(context.Background(),
				&pipeline.Delivery{ID: "d", Event: tc.event, Body: tc.body})
			if !errors.Is(err, githubapp.ErrMalformed) {
				t.Errorf("Handle = %v, want ErrMalformed", err)
			}
			if err == nil || err.Error() != tc.want {
				t.Errorf("error %q, want %q", err, tc.want)
			}
		})
	}
}

// A deployment_status of a state lastmile does not know hands the engine
// its deployment, as the deployment event does, run link included, and
// not the status.
func TestRouterUnknownStatusStateRecordsTheDeployment(t *testing.T) {
	eng := &recordingEngine{}
	body := edit(t, "deployment_status.json", func(p map[string]any) {
		p["deployment_status"].(map[string]any)["state"] = "exploded"
	})
	err := (&githubapp.Router{Engine: eng}).Handle(context.Background(), &pipeline.Delivery{ID: "d", Event: "deployment_status", Body: body})
	var ig *pipeline.Ignored
	if !errors.As(err, &ig) || len(eng.calls) != 1 {
		t.Fatalf("Handle: %v, engine calls %+v; want Ignored and one call", err, eng.calls)
	}
	d, ok := eng.calls[0].(pipeline.NewDeployment)
	// GitHub's example: deployment 145988746, of run 289782451.
	if !ok || d.Deployment.GitHubID != 145988746 || d.Deployment.WorkflowRunID != 289782451 || d.Repo.FullName() == "/" {
		t.Errorf("engine call %#v; want the status's deployment, as a deployment event", eng.calls[0])
	}
}

// reachingEngine is a recordingEngine that says the repository of every
// delivery received before movedAt is reached through installation 8 now
// (pipeline.Engine.Reaching).
type reachingEngine struct {
	recordingEngine
	movedAt time.Time
	asked   int
}

func (e *reachingEngine) Reaching(_ context.Context, repoID, inst int64, _ string, received time.Time) (int64, error) {
	e.asked++
	if received.Before(e.movedAt) {
		return 8, nil
	}
	return inst, nil
}

// An event that waited in the inbox while its repository moved to another
// installation is handed to the engine with the installation that reaches
// the repository now; one received after that, with its own. A push is
// left to the engine (it goes by the push's time).
func TestEventsOfAMovedRepositoryTakeItsInstallation(t *testing.T) {
	movedAt := at("2030-01-01T00:00:00Z")
	files := map[string]string{
		"deployment": "deployment.json", "deployment_status": "deployment_status.json",
		"workflow_run": "workflow_run_completed.json", "workflow_job": "workflow_job_queued.json",
		"status": "status.json", "check_suite": "check_suite_completed.json",
		"deployment_review": "deployment_review_requested.json",
	}
	bodies := map[string][]byte{
		"deployment_protection_rule": []byte(`{"action":"requested","environment":"staging","event":"push","sha":"abc123",
			"deployment_callback_url":"https://api.github.com/repos/acme/shop/actions/runs/42/deployment_protection_rule",
			"repository":{"id":77,"full_name":"acme/shop"},"installation":{"id":9}}`),
	}
	for event, file := range files {
		b, err := os.ReadFile(filepath.Join("testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		bodies[event] = b
	}
	for event, body := range bodies {
		for _, received := range []time.Time{movedAt.Add(-time.Hour), movedAt.Add(time.Hour)} {
			eng := &reachingEngine{movedAt: movedAt}
			d := &pipeline.Delivery{ID: "d-1", Event: event, Body: body, ReceivedAt: received, RepositoryID: 77, InstallationID: 1}
			err := (&githubapp.Router{Engine: eng}).Handle(context.Background(), d)
			var ignored *pipeline.Ignored
			if err != nil && !errors.As(err, &ignored) {
				t.Fatalf("%s: %v", event, err)
			}
			if len(eng.calls) == 0 {
				t.Fatalf("%s: nothing reached the engine (%v)", event, err)
			}
			repo := reflect.ValueOf(eng.calls[0]).FieldByName("Repo").Interface().(pipeline.Repo)
			want := int64(8)
			if !received.Before(movedAt) {
				want = firstInstallation(t, body)
			}
			if repo.InstallationID != want {
				t.Errorf("%s received %v: installation %d, want %d", event, received, repo.InstallationID, want)
			}
		}
	}
	eng := &reachingEngine{movedAt: movedAt}
	push, err := os.ReadFile(filepath.Join("testdata", "push.json"))
	if err != nil {
		t.Fatal(err)
	}
	d := &pipeline.Delivery{ID: "p-1", Event: "push", Body: push, ReceivedAt: movedAt.Add(-time.Hour), RepositoryID: 77, InstallationID: 1}
	if err := (&githubapp.Router{Engine: eng}).Handle(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if eng.asked != 0 || eng.calls[0].(pipeline.Push).Repo.InstallationID == 8 {
		t.Errorf("a push: Reaching asked %d times, installation %d; want it left to the engine", eng.asked, eng.calls[0].(pipeline.Push).Repo.InstallationID)
	}
}

// firstInstallation is the installation ID a payload names.
func firstInstallation(t *testing.T, body []byte) int64 {
	t.Helper()
	var p struct {
		Installation struct {
			ID int64 `json:"id"`
		} `json:"installation"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	return p.Installation.ID
}
