package simulator_test

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

func TestWebhookHeadersAndSignatures(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "hello"})
	h.waitIdle()
	got := h.hook.received()
	if len(got) != 1 {
		t.Fatalf("deliveries: %d", len(got))
	}
	r := got[0]
	m := hmac.New(sha1.New, []byte(testSecret))
	m.Write(r.body)
	for k, want := range map[string]string{
		"X-GitHub-Event":                         "push",
		"X-GitHub-Hook-ID":                       "100001",
		"X-GitHub-Hook-Installation-Target-Type": "integration",
		"X-GitHub-Hook-Installation-Target-ID":   strconv.Itoa(testAppID),
		"Content-Type":                           "application/json",
		"X-Hub-Signature":                        "sha1=" + hex.EncodeToString(m.Sum(nil)),
	} {
		if r.header.Get(k) != want {
			t.Errorf("%s = %q, want %q", k, r.header.Get(k), want)
		}
	}
	if ua := r.header.Get("User-Agent"); len(ua) < 16 || ua[:16] != "GitHub-Hookshot/" {
		t.Errorf("User-Agent %q", ua)
	}
	if len(r.guid) != 36 {
		t.Errorf("guid %q", r.guid)
	}
	// go-github parses it.
	ev, err := github.ParseWebHook("push", r.body)
	if err != nil {
		t.Fatal(err)
	}
	push := ev.(*github.PushEvent)
	if push.GetInstallation().GetID() != h.org || push.GetRepo().GetFullName() != "acme/shop" || push.GetRepo().GetDefaultBranch() != "main" || push.GetOrganization().GetLogin() != "acme" {
		t.Errorf("push: %+v", push)
	}
}

func TestPushPayloadDetails(t *testing.T) {
	h := newHarness(t, simulator.Options{PushCommitLimit: 2})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	before := h.sim.Branch("acme/shop", "main")
	res := h.sim.Push("acme/shop", "main",
		simulator.CommitSpec{Message: "one", Author: simulator.Author{Name: "Mona", Email: "mona@example.com", Login: "mona"}, Files: map[string]string{"a.txt": "a"}},
		simulator.CommitSpec{Message: "two", Files: map[string]string{"a.txt": "b", "README.md": ""}},
		simulator.CommitSpec{Message: "three", Files: map[string]string{"c.txt": "c"}},
	)
	h.sim.Push("acme/shop", "feature", simulator.CommitSpec{Message: "f"})
	h.sim.DeleteBranch("acme/shop", "feature")
	back := h.sim.ForcePush("acme/shop", "main", res.Commits[0])
	h.waitIdle()
	ds := h.sim.Deliveries()
	if len(ds) != 4 {
		t.Fatalf("deliveries: %d", len(ds))
	}
	var p struct {
		Ref, Before, After, Compare string
		Created, Deleted, Forced    bool
		BaseRef                     *string `json:"base_ref"`
		Commits                     []struct {
			ID, Message              string
			Added, Removed, Modified []string
			Author                   struct{ Name, Email, Username string }
		}
		HeadCommit *struct{ ID string } `json:"head_commit"`
		Pusher     struct{ Name, Email string }
		Repository struct {
			DefaultBranch string `json:"default_branch"`
			CreatedAt     any    `json:"created_at"`
		}
	}
	if err := json.Unmarshal(ds[0].Body, &p); err != nil {
		t.Fatal(err)
	}
	if p.Ref != "refs/heads/main" || p.Before != before || p.After != res.After || p.Created || p.Deleted || p.Forced || p.BaseRef != nil {
		t.Errorf("push head: %+v", p)
	}
	// The cap keeps the newest commits.
	if len(p.Commits) != 2 || p.Commits[0].ID != res.Commits[1] || p.Commits[1].ID != res.Commits[2] || p.HeadCommit.ID != res.After {
		t.Errorf("commits capped at 2: %+v", p.Commits)
	}
	if !reflect.DeepEqual(p.Commits[0].Modified, []string{"a.txt"}) || !reflect.DeepEqual(p.Commits[0].Removed, []string{"README.md"}) || !reflect.DeepEqual(p.Commits[1].Added, []string{"c.txt"}) {
		t.Errorf("file lists: %+v", p.Commits)
	}
	if p.Compare != fmt.Sprintf("https://github.com/acme/shop/compare/%s...%s", before[:12], res.After[:12]) {
		t.Errorf("compare %s", p.Compare)
	}
	if _, ok := p.Repository.CreatedAt.(float64); !ok || p.Repository.DefaultBranch != "main" {
		t.Errorf("push repository created_at %v (Unix seconds, as GitHub)", p.Repository.CreatedAt)
	}

	var created, deleted struct {
		Created, Deleted bool
		After            string
		HeadCommit       any `json:"head_commit"`
		Commits          []any
	}
	json.Unmarshal(ds[1].Body, &created)
	json.Unmarshal(ds[2].Body, &deleted)
	if !created.Created || len(created.Commits) != 1 {
		t.Errorf("new branch: %+v", created)
	}
	if !deleted.Deleted || deleted.After != "0000000000000000000000000000000000000000" || deleted.HeadCommit != nil || len(deleted.Commits) != 0 {
		t.Errorf("deleted branch: %+v", deleted)
	}
	// The branch rolled back to its first new commit: forced, nothing new.
	var forced struct {
		Before, After, Compare string
		Forced, Created        bool
		HeadCommit             *struct{ ID string } `json:"head_commit"`
		Commits                []any
	}
	json.Unmarshal(ds[3].Body, &forced)
	if !forced.Forced || forced.Created || forced.Before != res.After || forced.After != res.Commits[0] || back.After != res.Commits[0] ||
		forced.HeadCommit == nil || forced.HeadCommit.ID != res.Commits[0] || len(forced.Commits) != 0 ||
		forced.Compare != fmt.Sprintf("https://github.com/acme/shop/compare/%s...%s", res.After[:12], res.Commits[0][:12]) {
		t.Errorf("force push: %+v", forced)
	}
	if got := h.sim.Branch("acme/shop", "main"); got != res.Commits[0] {
		t.Errorf("main after the force push: %s", got)
	}
	// Contents at each commit are right.
	if got, ok := h.sim.FileAt("acme/shop", res.Commits[0], "a.txt"); !ok || got != "a" {
		t.Errorf("a.txt at first commit: %q", got)
	}
	if _, ok := h.sim.FileAt("acme/shop", res.After, "README.md"); ok {
		t.Error("README.md still there after deletion")
	}
	// PushSilently sends nothing.
	h.sim.PushSilently("acme/shop", "main", simulator.CommitSpec{Message: "quiet"})
	h.waitIdle()
	if n := len(h.sim.Deliveries()); n != 4 {
		t.Errorf("PushSilently sent a webhook: %d deliveries", n)
	}
}

func TestDeliveriesAreNotRetriedAndRedeliveryKeepsGUID(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.hook.failNext(503)
	h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "a"})
	h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "b"})
	h.waitIdle()
	ds := h.sim.Deliveries()
	if len(ds) != 2 || ds[0].StatusCode != 503 || ds[0].OK() || ds[0].Status != "Invalid HTTP Response: 503" || !ds[1].OK() || ds[1].Status != "OK" {
		t.Fatalf("deliveries: %+v", ds)
	}
	app := h.appClient(nil)
	ctx := h.ctx()
	if _, _, err := app.Apps.RedeliverHookDelivery(ctx, ds[0].ID); err != nil {
		if _, ok := err.(*github.AcceptedError); !ok {
			t.Fatal(err)
		}
	}
	h.waitIdle()
	ds = h.sim.Deliveries()
	if len(ds) != 3 || !ds[2].Redelivery || ds[2].GUID != ds[0].GUID || string(ds[2].Body) != string(ds[0].Body) || !ds[2].OK() {
		t.Fatalf("redelivery: %+v", ds[2])
	}
	got := h.hook.received()
	if got[2].guid != got[0].guid || got[2].header.Get("X-Hub-Signature-256") != got[0].header.Get("X-Hub-Signature-256") {
		t.Error("redelivery changed guid or signature")
	}
	d, _, err := app.Apps.GetHookDelivery(ctx, ds[2].ID)
	if err != nil || !d.GetRedelivery() || d.GetGUID() != ds[0].GUID || d.Request.Headers["X-GitHub-Event"] != "push" {
		t.Errorf("get delivery: %v %+v", err, d)
	}
	if _, resp, _ := app.Apps.GetHookDelivery(ctx, 1); resp == nil || resp.StatusCode != 404 {
		t.Errorf("unknown delivery: %v", resp)
	}
}

// observer is an Options.Wrap handler that is a WebhookObserver: it records
// what it is shown.
type observer struct {
	http.Handler
	mu   sync.Mutex
	seen []string // "event/action body"
}

func (o *observer) ObserveWebhook(event, action string, body []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seen = append(o.seen, event+"/"+action+" "+string(body))
}

func (o *observer) observed() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.seen)
}

// The handler Options.Wrap returns sees every webhook before it is sent,
// when it is a WebhookObserver: each delivery attempt (a failed one, a
// redelivery), in order, with the body sent; a held webhook once released.
func TestWebhookObserverSeesEveryDelivery(t *testing.T) {
	obs := &observer{}
	h := newHarness(t, simulator.Options{Wrap: func(next http.Handler) http.Handler {
		obs.Handler = next
		return obs
	}})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.hook.failNext(503)
	first := h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "a"})
	h.sim.HoldWebhooks(simulator.WebhookHold{Event: "status"})
	h.sim.SetCommitStatus("acme/shop", first.After, "ci", "success")
	h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "b"})
	h.waitIdle()
	if n := len(obs.observed()); n != 2 {
		t.Fatalf("observed %d webhooks before the status was released, want the 2 pushes", n)
	}
	h.sim.ReleaseWebhooks()
	h.waitIdle()
	if err := h.sim.Redeliver(h.sim.Deliveries()[0].ID); err != nil {
		t.Fatal(err)
	}
	h.waitIdle()
	ds := h.sim.Deliveries()
	var want []string
	for _, d := range ds {
		want = append(want, d.Event+"/"+d.Action+" "+string(d.Body))
	}
	if got := obs.observed(); len(ds) != 4 || !slices.Equal(got, want) || !ds[3].Redelivery {
		t.Errorf("observed:\n%s\nwant the deliveries:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// "You can redeliver webhook deliveries that occurred in the past 3 days":
// an older one is refused (422), and still listed.
func TestRedeliveryWindow(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	h := newHarness(t, simulator.Options{Clock: clock.Now})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.hook.failNext(503)
	h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "a"})
	h.waitIdle()
	first := h.sim.Deliveries()[0]
	redeliver := func(id int64) apiResponse {
		t.Helper()
		r := h.do("POST", fmt.Sprintf("/app/hook/deliveries/%d/attempts", id), "Bearer "+h.jwtAt(clock.Now()), nil)
		h.waitIdle()
		return r
	}
	clock.Advance(simulator.RedeliveryWindow - time.Minute)
	if r := redeliver(first.ID); r.status != 202 || len(h.sim.Deliveries()) != 2 {
		t.Fatalf("within the window: %d %s, %d deliveries", r.status, r.body, len(h.sim.Deliveries()))
	}
	clock.Advance(2 * time.Minute)
	r := redeliver(first.ID)
	if body := r.json(t); r.status != 422 || body["message"] != "Validation Failed" || body["documentation_url"] == nil {
		t.Errorf("past the window: %d %s", r.status, r.body)
	}
	if err := h.sim.Redeliver(first.ID); err == nil {
		t.Error("Redeliver past the window: no error")
	}
	h.waitIdle()
	if n := len(h.sim.Deliveries()); n != 2 {
		t.Errorf("%d deliveries, want no redelivery past the window", n)
	}
	list := h.do("GET", "/app/hook/deliveries", "Bearer "+h.jwtAt(clock.Now()), nil).list(t)
	if len(list) != 2 || list[1]["id"] != float64(first.ID) {
		t.Errorf("list: %v, want the delivery past the window still listed", list)
	}
	// The redelivery is recent: it can be redelivered.
	if r := redeliver(h.sim.Deliveries()[1].ID); r.status != 202 || len(h.sim.Deliveries()) != 3 {
		t.Errorf("a recent redelivery: %d %s", r.status, r.body)
	}
}

func TestListDeliveriesCursor(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	for i := 0; i < 5; i++ {
		h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: strconv.Itoa(i)})
	}
	h.hook.failNext(500)
	h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "failed"})
	h.waitIdle()
	app := h.appClient(nil)
	ctx := h.ctx()
	var ids []int64
	opts := &github.ListCursorOptions{PerPage: 2}
	for pages := 0; ; pages++ {
		list, resp, err := app.Apps.ListHookDeliveries(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range list {
			ids = append(ids, d.GetID())
		}
		if resp.Cursor == "" {
			break
		}
		if pages > 5 {
			t.Fatal("cursor does not end")
		}
		opts.Cursor = resp.Cursor
	}
	all := h.sim.Deliveries()
	if len(ids) != 6 || ids[0] != all[5].ID || ids[5] != all[0].ID {
		t.Errorf("ids %v (want newest first, all 6)", ids)
	}
	// status=failure filter (go-github v62 has no field for it).
	tok := "Bearer " + h.jwt()
	r := h.do("GET", "/app/hook/deliveries?status=failure", tok, nil)
	if l := r.list(t); len(l) != 1 || l[0]["status_code"] != float64(500) {
		t.Errorf("failure filter: %s", r.body)
	}
	// GitHub's filter goes by status_code: a 3xx is a success.
	h.hook.failNext(304)
	h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "redirected"})
	h.waitIdle()
	if l := h.do("GET", "/app/hook/deliveries?status=failure", tok, nil).list(t); len(l) != 1 {
		t.Errorf("failure filter with a 304: %d deliveries, want the 500 alone", len(l))
	}
	if l := h.do("GET", "/app/hook/deliveries?status=success&per_page=100", tok, nil).list(t); len(l) != 6 || l[0]["status_code"] != float64(304) {
		t.Errorf("success filter with a 304: %v; want 6 deliveries, the 304 first", l)
	}
	// Installation tokens cannot list deliveries.
	if r := h.do("GET", "/app/hook/deliveries", h.token(h.org), nil); r.status != 401 {
		t.Errorf("with installation token: %d", r.status)
	}
}

func TestDeliveriesWaitForWebhookURL(t *testing.T) {
	sim := simulator.New(simulator.Options{WebhookSecret: testSecret})
	defer sim.Close()
	inst := sim.CreateInstallation("mona", "User")
	sim.CreateRepo(inst, "mona/app", simulator.RepoOptions{})
	sim.Push("mona/app", "main", simulator.CommitSpec{Message: "x"})
	if !sim.Idle() || sim.Queued() != 1 || len(sim.Deliveries()) != 0 {
		t.Fatalf("queued %d, deliveries %d", sim.Queued(), len(sim.Deliveries()))
	}
	rc := newReceiver(t)
	sim.SetWebhookURL(rc.url())
	d, err := sim.WaitForDelivery(testCtx(t), 0, "push", "")
	if err != nil || !d.OK() {
		t.Fatalf("delivery: %v %+v", err, d)
	}
	// A user-owned repository's events have no organization.
	var p map[string]any
	json.Unmarshal(d.Body, &p)
	if _, ok := p["organization"]; ok {
		t.Error("organization on a user's repository")
	}
}

func TestWebhookConnectionErrorIsRecorded(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.hook.srv.Close()
	h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "x"})
	h.waitIdle()
	ds := h.sim.Deliveries()
	if len(ds) != 1 || ds[0].StatusCode != 0 || ds[0].OK() || ds[0].Status == "" {
		t.Fatalf("%+v", ds)
	}
}

func TestCheckSuiteCompleted(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	sha := h.sim.Branch("acme/shop", "main")
	h.sim.CompleteCheckSuite("acme/shop", sha, "success")
	cs, _ := h.checkSuiteCompleted(0)
	if cs.GetHeadSHA() != sha || cs.GetConclusion() != "success" || cs.GetHeadBranch() != "main" {
		t.Errorf("%+v", cs)
	}
}

// Check runs recorded with SetCheckRun make up one check suite of the commit:
// check_suite completed is sent when the last of them completes (success
// only if every one succeeded), and again when a re-run completes.
func TestSetCheckRunCompletesTheCheckSuite(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	sha := h.sim.Branch("acme/shop", "main")
	build := h.sim.SetCheckRun("acme/shop", sha, "build", "queued", "")
	if id := h.sim.SetCheckRun("acme/shop", sha, "build", "in_progress", ""); id != build {
		t.Errorf("build in progress: check run %d, want the queued one %d", id, build)
	}
	h.sim.SetCheckRun("acme/shop", sha, "lint", "in_progress", "")
	h.sim.SetCheckRun("acme/shop", sha, "lint", "completed", "success")
	h.waitIdle()
	if got := h.events(); len(got) != 0 {
		t.Fatalf("webhooks while build runs: %v", got)
	}
	if id := h.sim.SetCheckRun("acme/shop", sha, "build", "completed", "failure"); id != build {
		t.Errorf("build completed: check run %d, want %d", id, build)
	}
	suite := func(from int, want string) *github.CheckSuite {
		t.Helper()
		cs, body := h.checkSuiteCompleted(from)
		if cs.GetHeadSHA() != sha || cs.GetStatus() != "completed" || cs.GetConclusion() != want || cs.GetApp().GetSlug() != "ci" {
			t.Errorf("check suite: %s %s %s by %s, want %s completed %s by ci", cs.GetHeadSHA(), cs.GetStatus(), cs.GetConclusion(), cs.GetApp().GetSlug(), sha, want)
		}
		var raw struct {
			CheckSuite struct {
				LatestCheckRunsCount int `json:"latest_check_runs_count"`
			} `json:"check_suite"`
		}
		if err := json.Unmarshal(body, &raw); err != nil || raw.CheckSuite.LatestCheckRunsCount != 2 {
			t.Errorf("latest_check_runs_count %d (%v), want 2", raw.CheckSuite.LatestCheckRunsCount, err)
		}
		return cs
	}
	first := suite(0, "failure")

	// The failed build is re-run: a new check run of the name, which counts
	// instead of the failed one.
	if id := h.sim.SetCheckRun("acme/shop", sha, "build", "in_progress", ""); id == build {
		t.Errorf("re-run of build kept check run %d", id)
	}
	h.waitIdle()
	if n := len(h.events()); n != 1 {
		t.Fatalf("webhooks after the re-run started: %v", h.events())
	}
	h.sim.SetCheckRun("acme/shop", sha, "build", "completed", "success")
	if second := suite(1, "success"); second.GetID() != first.GetID() {
		t.Errorf("the re-run completed suite %d, want the commit's suite %d", second.GetID(), first.GetID())
	}
}

// SetCheckRun panics when misused, as the other fixtures do.
func TestSetCheckRunMisuse(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	sha := h.sim.Branch("acme/shop", "main")
	for name, call := range map[string]func(){
		"unknown repository":      func() { h.sim.SetCheckRun("acme/nope", sha, "build", "queued", "") },
		"unknown commit":          func() { h.sim.SetCheckRun("acme/shop", strings.Repeat("0", 40), "build", "queued", "") },
		"no name":                 func() { h.sim.SetCheckRun("acme/shop", sha, "", "queued", "") },
		"unknown status":          func() { h.sim.SetCheckRun("acme/shop", sha, "build", "pending", "") },
		"conclusion while queued": func() { h.sim.SetCheckRun("acme/shop", sha, "build", "in_progress", "success") },
		"completed without one":   func() { h.sim.SetCheckRun("acme/shop", sha, "build", "completed", "") },
		"unknown conclusion":      func() { h.sim.SetCheckRun("acme/shop", sha, "build", "completed", "passed") },
		"stale is GitHub's":       func() { h.sim.SetCheckRun("acme/shop", sha, "build", "completed", "stale") },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			call()
		}()
	}
}

// checkSuiteCompleted waits for the check_suite completed webhook sent at or
// after delivery number from, and returns its check suite and raw body.
func (h *harness) checkSuiteCompleted(from int) (*github.CheckSuite, []byte) {
	h.t.Helper()
	d, err := h.sim.WaitForDelivery(h.ctx(), from, "check_suite", "completed")
	if err != nil {
		h.t.Fatal(err)
	}
	ev, err := github.ParseWebHook("check_suite", d.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return ev.(*github.CheckSuiteEvent).GetCheckSuite(), d.Body
}

// Bot users are rendered as GitHub renders them: the login escaped in
// their API URLs ("lastmile%5Bbot%5D"), the App's page as html_url, and the
// App's avatar ("/in/<app id>").
func TestBotUsers(t *testing.T) {
	h, _ := deployedHarness(t)
	api := strings.TrimSuffix(h.api, "/")
	for _, tc := range []struct {
		user        map[string]any
		login, slug string
		app         int
	}{
		{dig(h.payload(0, "deployment", "created"), "deployment", "creator").(map[string]any), "lastmile[bot]", "lastmile", testAppID},
		{dig(h.payload(0, "deployment_status", "created"), "deployment_status", "creator").(map[string]any), "github-actions[bot]", "github-actions", 15368},
	} {
		u := tc.user
		esc := strings.ReplaceAll(strings.ReplaceAll(tc.login, "[", "%5B"), "]", "%5D")
		if u["login"] != tc.login || u["type"] != "Bot" || u["url"] != api+"/users/"+esc ||
			u["events_url"] != api+"/users/"+esc+"/events{/privacy}" || u["html_url"] != "https://github.com/apps/"+tc.slug ||
			u["avatar_url"] != fmt.Sprintf("https://avatars.githubusercontent.com/in/%d?v=4", tc.app) {
			t.Errorf("%s: %v", tc.login, u)
		}
	}
}

// A pull request merged with a merge commit, and a branch fast-forwarded:
// pushes that are not forced and list the commits they bring to the
// branch, those a push listed before (the feature branch's) not distinct.
func TestPushOfAMergeAndOfAFastForward(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	before := h.sim.Branch("acme/shop", "main")
	feature := h.sim.Push("acme/shop", "feature",
		simulator.CommitSpec{Message: "f1", Files: map[string]string{"f.txt": "1"}},
		simulator.CommitSpec{Message: "f2", Files: map[string]string{"f.txt": "2", "README.md": ""}})
	main := h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "m1", Files: map[string]string{"m.txt": "m"}})
	merge := h.sim.Merge("acme/shop", "main", "feature", simulator.CommitSpec{Message: "Merge pull request #1 from acme/feature"})
	next := h.sim.Push("acme/shop", "next", simulator.CommitSpec{Message: "n1", Files: map[string]string{"n.txt": "n"}})
	ff := h.sim.FastForward("acme/shop", "main", next.After)
	h.waitIdle()
	ds := h.sim.Deliveries()
	if len(ds) != 5 {
		t.Fatalf("deliveries: %d", len(ds))
	}
	type listed struct {
		ID       string
		Distinct bool
	}
	read := func(i int) (before, after string, forced bool, commits []listed) {
		t.Helper()
		var p struct {
			Before, After string
			Forced        bool
			Commits       []listed
		}
		if err := json.Unmarshal(ds[i].Body, &p); err != nil {
			t.Fatal(err)
		}
		return p.Before, p.After, p.Forced, p.Commits
	}
	b, a, forced, commits := read(2)
	want := []listed{{feature.Commits[0], false}, {feature.Commits[1], false}, {merge.After, true}}
	if b != main.After || a != merge.After || forced || !slices.Equal(commits, want) || !slices.Equal(merge.Commits, []string{feature.Commits[0], feature.Commits[1], merge.After}) {
		t.Errorf("merge push: %s..%s forced %v commits %v (result %v), want %s..%s not forced, %v", b, a, forced, commits, merge.Commits, main.After, merge.After, want)
	}
	b, a, forced, commits = read(4)
	want = []listed{{next.After, false}}
	if b != merge.After || a != next.After || forced || !slices.Equal(commits, want) || ff.After != next.After {
		t.Errorf("fast-forward push: %s..%s forced %v commits %v, want %s..%s not forced, %v", b, a, forced, commits, merge.After, next.After, want)
	}
	// The merge's tree: main's, with the feature's changes (README.md
	// removed on the feature branch: gone).
	gh := h.client(h.org, nil)
	for path, wantContent := range map[string]string{"f.txt": "2", "m.txt": "m", "README.md": ""} {
		file, _, resp, err := gh.Repositories.GetContents(h.ctx(), "acme", "shop", path, &github.RepositoryContentGetOptions{Ref: merge.After})
		var got string
		if err == nil {
			got, err = file.GetContent()
		} else if wantContent == "" && resp != nil && resp.StatusCode == http.StatusNotFound {
			err = nil
		}
		if err != nil || got != wantContent {
			t.Errorf("%s at the merge: %q %v, want %q", path, got, err, wantContent)
		}
	}
	if before == main.After {
		t.Errorf("main did not move: %s", before)
	}
}
