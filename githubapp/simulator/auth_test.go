package simulator_test

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

func TestAppJWT(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	now := time.Now().Unix()
	path := fmt.Sprintf("/app/installations/%d/access_tokens", h.org)
	other := simulator.New(simulator.Options{AppID: testAppID})
	defer other.Close()
	for name, tc := range map[string]struct {
		auth    string
		message string
	}{
		"none":            {"", "A JSON web token could not be decoded"},
		"garbage":         {"Bearer a.b.c", "A JSON web token could not be decoded"},
		"other key":       {"Bearer " + signJWT(t, other, map[string]any{"iat": now - 60, "exp": now + 60, "iss": testAppID}), "A JSON web token could not be decoded"},
		"expired":         {"Bearer " + signJWT(t, h.sim, map[string]any{"iat": now - 700, "exp": now - 100, "iss": testAppID}), "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires"},
		"too long":        {"Bearer " + signJWT(t, h.sim, map[string]any{"iat": now - 60, "exp": now + 3600, "iss": testAppID}), "'Expiration time' claim ('exp') is too far in the future"},
		"issued later":    {"Bearer " + signJWT(t, h.sim, map[string]any{"iat": now + 120, "exp": now + 300, "iss": testAppID}), "'Issued at' claim ('iat') must be an Integer representing a time in the past"},
		"wrong issuer":    {"Bearer " + signJWT(t, h.sim, map[string]any{"iat": now - 60, "exp": now + 60, "iss": 1}), "Integration not found"},
		"installation tk": {h.token(h.org), "A JSON web token could not be decoded"},
	} {
		t.Run(name, func(t *testing.T) {
			for _, req := range [][2]string{{"POST", path}, {"GET", "/app"}} {
				r := h.do(req[0], req[1], tc.auth, nil)
				if r.status != http.StatusUnauthorized || r.json(t)["message"] != tc.message {
					t.Fatalf("%s %s: got %d %s, want 401 %q", req[0], req[1], r.status, r.body, tc.message)
				}
				if r.json(t)["documentation_url"] == nil {
					t.Errorf("%s %s: no documentation_url", req[0], req[1])
				}
			}
		})
	}
	// A valid JWT with iss as a string (what ghinstallation sends) works.
	r := h.do("POST", path, "Bearer "+signJWT(t, h.sim, map[string]any{"iat": now - 30, "exp": now + 90, "iss": strconv.Itoa(testAppID)}), nil)
	if r.status != 201 {
		t.Fatalf("valid JWT: %d %s", r.status, r.body)
	}
	tok := r.json(t)
	exp, err := time.Parse(time.RFC3339, tok["expires_at"].(string))
	if err != nil || time.Until(exp) < 59*time.Minute || time.Until(exp) > time.Hour {
		t.Errorf("expires_at %v", tok["expires_at"])
	}
	if tok["repository_selection"] != "all" || tok["permissions"].(map[string]any)["deployments"] != "write" {
		t.Errorf("token: %v", tok)
	}
	if r := h.do("GET", "/app", "Bearer "+h.jwt(), nil); r.status != 200 || r.json(t)["id"] != float64(testAppID) {
		t.Errorf("GET /app with a valid JWT: %d %s", r.status, r.body)
	}
	if r := h.do("POST", "/app/installations/999/access_tokens", "Bearer "+h.jwt(), nil); r.status != 404 {
		t.Errorf("unknown installation: %d", r.status)
	}
}

func TestInstallationTokens(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	h := newHarness(t, simulator.Options{Clock: clock.Now})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{Private: true})
	h.sim.CreateRepo(h.org, "acme/other", simulator.RepoOptions{Private: true})
	user := h.sim.CreateInstallation("mona", "User")
	h.sim.CreateRepo(user, "mona/dotfiles", simulator.RepoOptions{Private: true})

	tok := h.token(h.org)
	if r := h.do("GET", "/repos/acme/shop/contents/README.md", tok, nil); r.status != 200 {
		t.Fatalf("own repo: %d %s", r.status, r.body)
	}
	// Another installation's repository is invisible.
	if r := h.do("GET", "/repos/mona/dotfiles/contents/README.md", tok, nil); r.status != 404 || r.json(t)["message"] != "Not Found" {
		t.Errorf("other installation: %d %s", r.status, r.body)
	}
	// No credentials: private repositories do not exist.
	if r := h.do("GET", "/repos/acme/shop/contents/README.md", "", nil); r.status != 404 {
		t.Errorf("anonymous: %d", r.status)
	}
	// The App's JWT is not for repository endpoints.
	if r := h.do("GET", "/repos/acme/shop/contents/README.md", "Bearer "+h.jwt(), nil); r.status != 403 {
		t.Errorf("JWT on repo endpoint: %d", r.status)
	}
	// A token scoped to one repository sees only it.
	r := h.do("POST", fmt.Sprintf("/app/installations/%d/access_tokens", h.org), "Bearer "+h.jwt(), map[string]any{"repositories": []string{"other"}})
	if r.status != 201 || r.json(t)["repository_selection"] != "selected" {
		t.Fatalf("scoped token: %d %s", r.status, r.body)
	}
	scoped := "token " + r.json(t)["token"].(string)
	// GitHub's stateless format since April 2026: ghs_APPID_ and a JWT —
	// two dots, yet a token, not the App's JWT, also as a Bearer.
	if raw := r.json(t)["token"].(string); !strings.HasPrefix(raw, fmt.Sprintf("ghs_%d_eyJ", testAppID)) || strings.Count(raw, ".") != 2 {
		t.Errorf("token %q, want ghs_%d_ and a JWT", raw, testAppID)
	}
	if r := h.do("GET", "/repos/acme/other/contents/README.md", "Bearer "+strings.TrimPrefix(scoped, "token "), nil); r.status != 200 {
		t.Errorf("the token as a Bearer credential: %d %s", r.status, r.body)
	}
	if r := h.do("GET", "/repos/acme/shop/contents/README.md", scoped, nil); r.status != 404 {
		t.Errorf("scoped token on another repo: %d", r.status)
	}
	if r := h.do("GET", "/repos/acme/other/contents/README.md", scoped, nil); r.status != 200 {
		t.Errorf("scoped token on its repo: %d", r.status)
	}
	// An hour later the token is expired: 401 Bad credentials.
	clock.Advance(time.Hour + time.Second)
	r = h.do("GET", "/repos/acme/shop/contents/README.md", tok, nil)
	if r.status != 401 || r.json(t)["message"] != "Bad credentials" || r.json(t)["documentation_url"] == nil {
		t.Errorf("expired token: %d %s", r.status, r.body)
	}
	if r := h.do("GET", "/repos/acme/shop/contents/README.md", "token ghs_unknown", nil); r.status != 401 {
		t.Errorf("unknown token: %d", r.status)
	}
}

// Reads need their permission as writes do: a token without it gets
// GitHub's 403 "Resource not accessible by integration", one with it (read
// or write) gets through.
func TestReadPermissions(t *testing.T) {
	h, id := deployedHarness(t)
	run := h.sim.Runs("acme/shop")[0]
	sha := h.sim.Branch("acme/shop", "main")
	reads := map[string]string{ // path -> the permission it needs
		"/repos/acme/shop/contents/README.md":                                "contents",
		"/repos/acme/shop/compare/" + sha + "..." + sha:                      "contents",
		"/repos/acme/shop/commits/main":                                      "contents",
		"/repos/acme/shop/commits/main/statuses":                             "statuses",
		"/repos/acme/shop/commits/main/status":                               "statuses",
		"/repos/acme/shop/deployments":                                       "deployments",
		fmt.Sprintf("/repos/acme/shop/deployments/%d", id):                   "deployments",
		fmt.Sprintf("/repos/acme/shop/deployments/%d/statuses", id):          "deployments",
		fmt.Sprintf("/repos/acme/shop/actions/runs/%d", run.ID):              "actions",
		fmt.Sprintf("/repos/acme/shop/actions/jobs/%d/logs", run.Jobs[0].ID): "actions",
	}
	tokenWith := func(perms map[string]string) string {
		t.Helper()
		r := h.do("POST", fmt.Sprintf("/app/installations/%d/access_tokens", h.org), "Bearer "+h.jwt(), map[string]any{"permissions": perms})
		if r.status != 201 {
			t.Fatalf("token with %v: %d %s", perms, r.status, r.body)
		}
		return "token " + r.json(t)["token"].(string)
	}
	all := map[string]string{"actions": "read", "contents": "read", "deployments": "write", "statuses": "write"}
	for path, perm := range reads {
		without := map[string]string{}
		for k, v := range all {
			if k != perm {
				without[k] = v
			}
		}
		if r := h.do("GET", path, tokenWith(without), nil); r.status != 403 || r.json(t)["message"] != "Resource not accessible by integration" {
			t.Errorf("GET %s without %s: %d %s", path, perm, r.status, r.body)
		}
		if r := h.do("GET", path, tokenWith(map[string]string{perm: all[perm]}), nil); r.status != 200 && r.status != 302 {
			t.Errorf("GET %s with only %s %s: %d %s", path, perm, all[perm], r.status, r.body)
		}
	}
	// The installation's own permissions bound its tokens: an App without
	// contents cannot read a file.
	h2 := newHarness(t, simulator.Options{Permissions: map[string]string{"deployments": "write", "metadata": "read"}})
	h2.sim.CreateRepo(h2.org, "acme/shop", simulator.RepoOptions{})
	if r := h2.do("GET", "/repos/acme/shop/contents/README.md", h2.token(h2.org), nil); r.status != 403 {
		t.Errorf("an installation without contents: %d %s", r.status, r.body)
	}
}

func TestGhinstallationRefreshesExpiredTokens(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	gh := h.client(h.org, nil)
	ctx := h.ctx()
	if _, _, err := gh.Repositories.GetCommit(ctx, "acme", "shop", "main", nil); err != nil {
		t.Fatal(err)
	}
	if n := h.sim.CountRequests("POST", "/app/installations/*/access_tokens"); n != 1 {
		t.Fatalf("token requests: %d", n)
	}
	// ghinstallation caches the token by its expires_at; a revoked token
	// surfaces as 401 to the caller, as on GitHub.
	h.sim.ExpireTokens()
	_, _, err := gh.Repositories.GetCommit(ctx, "acme", "shop", "main", nil)
	var er *github.ErrorResponse
	if !errors.As(err, &er) || er.Response.StatusCode != 401 || er.Message != "Bad credentials" {
		t.Fatalf("revoked token: %v", err)
	}
}

func TestRateLimitAccounting(t *testing.T) {
	h := newHarness(t, simulator.Options{RateLimit: 100})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	tok := h.token(h.org)
	first := h.do("GET", "/repos/acme/shop/commits/main", tok, nil)
	second := h.do("GET", "/repos/acme/shop/commits/main", tok, nil)
	for _, hdr := range []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Used", "X-RateLimit-Reset", "X-RateLimit-Resource", "X-GitHub-Request-Id"} {
		if first.header.Get(hdr) == "" {
			t.Errorf("no %s", hdr)
		}
	}
	if first.header.Get("X-RateLimit-Limit") != "100" || first.header.Get("X-RateLimit-Remaining") != "99" || second.header.Get("X-RateLimit-Remaining") != "98" {
		t.Errorf("remaining %s then %s", first.header.Get("X-RateLimit-Remaining"), second.header.Get("X-RateLimit-Remaining"))
	}
	if first.header.Get("X-GitHub-Request-Id") == second.header.Get("X-GitHub-Request-Id") {
		t.Error("request ids repeat")
	}
	// A second token of the same installation shares the budget.
	if r := h.do("GET", "/repos/acme/shop/commits/main", h.token(h.org), nil); r.header.Get("X-RateLimit-Remaining") != "97" {
		t.Errorf("shared budget: %s", r.header.Get("X-RateLimit-Remaining"))
	}
	// Spent: 403 with remaining 0, which go-github reports as RateLimitError.
	h.sim.SetRateLimitUsed(h.org, 100)
	gh := h.client(h.org, nil)
	_, _, err := gh.Repositories.GetCommit(h.ctx(), "acme", "shop", "main", nil)
	var rl *github.RateLimitError
	if !errors.As(err, &rl) {
		t.Fatalf("want RateLimitError, got %v", err)
	}
}

// Date is GitHub's clock, which clients read (lastmile's redelivery keeps
// its checkpoint in it): the simulator's, answers and lost answers alike.
func TestDateIsTheSimulatorsClock(t *testing.T) {
	clock := &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	h := newHarness(t, simulator.Options{Clock: clock.Now})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	const want = "Wed, 02 Jan 2030 03:04:05 GMT"
	if r := h.do("GET", "/repos/acme/shop/commits/main", "", nil); r.status != 200 || r.header.Get("Date") != want {
		t.Errorf("answer: %d, Date %q, want %q", r.status, r.header.Get("Date"), want)
	}
	h.sim.InjectFault(simulator.Fault{Kind: simulator.FaultAppliedLost, Path: "/repos/acme/shop/commits/main"})
	if r := h.do("GET", "/repos/acme/shop/commits/main", "", nil); r.status != 502 || r.header.Get("Date") != want {
		t.Errorf("lost answer: %d, Date %q, want %q", r.status, r.header.Get("Date"), want)
	}
}

func TestConcurrentUse(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{})
	gh := h.client(h.org, nil)
	ctx := h.ctx()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p := h.sim.Push("acme/shop", fmt.Sprintf("b%d", i), simulator.CommitSpec{Files: map[string]string{"f": strconv.Itoa(i)}})
			if _, _, err := gh.Repositories.CreateDeployment(ctx, "acme", "shop", &github.DeploymentRequest{
				Ref: github.String(p.After), Environment: github.String(fmt.Sprintf("env%d", i)), AutoMerge: github.Bool(false), RequiredContexts: &[]string{},
			}); err != nil {
				t.Error(err)
			}
			h.sim.Deliveries()
			h.sim.Deployments("acme/shop")
		}(i)
	}
	wg.Wait()
	h.waitIdle()
	for _, d := range h.sim.Deployments("acme/shop") {
		if d.State() != "success" {
			t.Errorf("deployment %d: %s", d.ID, d.State())
		}
	}
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
