package githubapp_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/githubapp/simulator/oasvalidate"
	"github.com/lastmile-app/lastmile/pipeline"
)

// simWorld is a simulator with two installations, each with one repository.
type simWorld struct {
	sim          *simulator.Simulator
	apiURL       string
	acme, globex int64
}

func newSimWorld(t *testing.T) *simWorld {
	t.Helper()
	// The clients' traffic is checked against GitHub's REST description.
	sim := simulator.New(simulator.Options{AppID: 4242, WebhookSecret: "unused", Wrap: oasvalidate.Wrap(t)})
	t.Cleanup(func() { sim.Close() })
	apiURL, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &simWorld{sim: sim, apiURL: apiURL}
	w.acme = sim.CreateInstallation("acme", "Organization")
	sim.CreateRepo(w.acme, "acme/shop", simulator.RepoOptions{})
	w.globex = sim.CreateInstallation("globex", "Organization")
	sim.CreateRepo(w.globex, "globex/api", simulator.RepoOptions{})
	return w
}

// clients are the App's clients of the world's simulator.
func (w *simWorld) clients(t *testing.T) *githubapp.Clients {
	t.Helper()
	clients, err := githubapp.NewClients(w.apiURL, w.sim.AppID(), simKey(t, w.sim), &githubapp.Transport{})
	if err != nil {
		t.Fatal(err)
	}
	return clients
}

const tokenPath = "/app/installations/*/access_tokens"

func TestClientsInstallationTokensWorkAgainstTheSimulator(t *testing.T) {
	ctx := context.Background()
	w := newSimWorld(t)
	clients := w.clients(t)

	acme, err := clients.Installation(w.acme)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		c, _, err := acme.Repositories.GetCommit(ctx, "acme", "shop", "main", nil)
		if err != nil {
			t.Fatalf("call %d with the installation client: %v", i+1, err)
		}
		if want := w.sim.Branch("acme/shop", "main"); c.GetSHA() != want {
			t.Errorf("commit %s, want main's %s", c.GetSHA(), want)
		}
	}
	// One token for the three calls: ghinstallation keeps it until it
	// nears expiry.
	if n := w.sim.CountRequests("POST", tokenPath); n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}

	// The other installation's token reaches its own repository only.
	globex, err := clients.Installation(w.globex)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := globex.Repositories.GetCommit(ctx, "globex", "api", "main", nil); err != nil {
		t.Errorf("globex client on its repository: %v", err)
	}
	var ghErr *github.ErrorResponse
	if _, _, err := globex.Repositories.GetCommit(ctx, "acme", "shop", "main", nil); !errors.As(err, &ghErr) {
		t.Errorf("globex client on acme's repository: %v, want a GitHub error", err)
	}
	if n := w.sim.CountRequests("POST", tokenPath); n != 2 {
		t.Errorf("%d token requests, want one per installation (2)", n)
	}
	var installs []int64
	for _, r := range w.sim.Requests() {
		if r.Method == "GET" && strings.HasPrefix(r.Path, "/repos/") {
			installs = append(installs, r.InstallationID)
		}
	}
	if want := []int64{w.acme, w.acme, w.acme, w.globex, w.globex}; !slices.Equal(installs, want) {
		t.Errorf("repository calls made as installations %v, want %v", installs, want)
	}

	// The App client authenticates with the App's JWT.
	if _, _, err := clients.App().Apps.ListHookDeliveries(ctx, &github.ListCursorOptions{PerPage: 10}); err != nil {
		t.Errorf("App client: %v", err)
	}
}

// A token GitHub revoked (the simulator's ExpireTokens) does not fail the
// call: it is sent again with a new token.
func TestClientsReplaceARevokedTokenAgainstTheSimulator(t *testing.T) {
	ctx := context.Background()
	w := newSimWorld(t)
	clients := w.clients(t)
	acme, _ := clients.Installation(w.acme)
	for i := range 3 {
		if i == 1 {
			w.sim.ExpireTokens()
		}
		if _, _, err := acme.Repositories.GetCommit(ctx, "acme", "shop", "main", nil); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	var calls []string
	for _, r := range w.sim.Requests() {
		calls = append(calls, fmt.Sprintf("%s %d", r.Method, r.Status))
	}
	if want := []string{"POST 201", "GET 200", "GET 401", "POST 201", "GET 200", "GET 200"}; !slices.Equal(calls, want) {
		t.Errorf("calls %q, want %q", calls, want)
	}
}

func TestClientsAreCachedPerInstallation(t *testing.T) {
	w := newSimWorld(t)
	clients := w.clients(t)
	const callers = 32
	got := make([]*github.Client, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := w.acme
			if i%2 == 1 {
				id = w.globex
			}
			c, err := clients.Installation(id)
			if err != nil {
				t.Errorf("Installation(%d): %v", id, err)
			}
			got[i] = c
		}()
	}
	wg.Wait()
	for i, c := range got {
		if c == nil || c != got[i%2] {
			t.Fatalf("caller %d got client %p, want the cached %p", i, c, got[i%2])
		}
	}
	if got[0] == got[1] {
		t.Error("two installations share one client")
	}
	again, _ := clients.Installation(w.acme)
	if again != got[0] {
		t.Error("a later call built a new client")
	}
	for _, id := range []int64{0, -1} {
		// Not an App's delivery: malformed, so the worker parks it at
		// once instead of retrying what cannot succeed.
		if c, err := clients.Installation(id); !errors.Is(err, githubapp.ErrMalformed) {
			t.Errorf("Installation(%d) = %v, %v; want an ErrMalformed error", id, c, err)
		}
	}
}

func TestClientsRetryTokenRequestsThroughTheTransport(t *testing.T) {
	ctx := context.Background()
	w := newSimWorld(t)
	w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultServerError, Method: "POST", Path: tokenPath, Times: 2})
	clock, obs := newFakeClock(), &observed{}
	tr := &githubapp.Transport{Observer: obs, Sleep: clock.Sleep, Now: clock.Now, BaseDelay: time.Second}
	clients, err := githubapp.NewClients(w.apiURL, w.sim.AppID(), simKey(t, w.sim), tr)
	if err != nil {
		t.Fatal(err)
	}
	acme, _ := clients.Installation(w.acme)
	if _, _, err := acme.Repositories.GetCommit(ctx, "acme", "shop", "main", nil); err != nil {
		t.Fatalf("GetCommit after two failed token requests: %v", err)
	}
	if n := w.sim.CountRequests("POST", tokenPath); n != 3 {
		t.Errorf("%d token requests, want 3 (two 502s, then the token)", n)
	}
	if got, want := obs.Requests(), []string{"POST 502", "POST 502", "POST 201", "GET 200"}; !slices.Equal(got, want) {
		t.Errorf("observer saw %v, want %v", got, want)
	}
	if n := len(clock.Waits()); n != 2 {
		t.Errorf("backed off %d times, want 2", n)
	}
}

// GitHub counts each installation's rate limit apart, and the App's own:
// the transport reports each quota under its own name, with its reset.
func TestRateLimitsAreReportedPerQuota(t *testing.T) {
	ctx := context.Background()
	w := newSimWorld(t)
	obs := &observed{}
	clients, err := githubapp.NewClients(w.apiURL, w.sim.AppID(), simKey(t, w.sim), &githubapp.Transport{Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	acme, _ := clients.Installation(w.acme)
	globex, _ := clients.Installation(w.globex)
	if _, _, err := acme.Repositories.GetCommit(ctx, "acme", "shop", "main", nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := globex.Repositories.GetCommit(ctx, "globex", "api", "main", nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := clients.App().Apps.ListHookDeliveries(ctx, &github.ListCursorOptions{PerPage: 10}); err != nil {
		t.Fatal(err)
	}
	var quotas []string
	for _, q := range obs.Quotas() {
		name, rest, _ := strings.Cut(q, " ")
		var reset int64
		if _, err := fmt.Sscanf(rest[strings.LastIndex(rest, " ")+1:], "%d", &reset); err != nil || time.Unix(reset, 0).Before(time.Now()) {
			t.Errorf("quota %q: reset not in the future", q)
		}
		quotas = append(quotas, name)
	}
	// The token requests are the App's (JWT), then each installation's call.
	want := []string{"app", fmt.Sprint(w.acme), "app", fmt.Sprint(w.globex), "app"}
	if !slices.Equal(quotas, want) {
		t.Errorf("quotas reported %v, want %v", quotas, want)
	}
}

// GitHub's 422 "the endpoint has been spammed" reaches the pipeline as a
// refusal that passes (Spammed); a 422 for a bad request does not.
func TestCreateDeploymentSpammedIsTemporary(t *testing.T) {
	ctx := context.Background()
	w := newSimWorld(t)
	clients := w.clients(t)
	gh := &githubapp.GitHub{Clients: clients}
	repo := pipeline.Repo{ID: 1, Owner: "acme", Name: "shop", InstallationID: w.acme}
	main := w.sim.Branch("acme/shop", "main")
	w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultSpammed, Method: "POST", Path: "/repos/{o}/{r}/deployments"})
	for _, step := range []struct {
		sha     string
		spammed bool
	}{
		{main, true},
		{"0123456789abcdef0123456789abcdef01234567", false}, // no such commit: "No ref found"
	} {
		_, _, err := gh.CreateDeployment(ctx, repo, pipeline.DeploymentRequest{SHA: step.sha, Environment: "test", RequiredContexts: []string{}})
		var refused *pipeline.RefusedError
		if !errors.As(err, &refused) || refused.Status != 422 || refused.Spammed() != step.spammed {
			t.Errorf("deployment of %s: %v; want a 422 refusal, spammed %v", step.sha[:7], err, step.spammed)
		}
	}
}

func TestClientsOnAGitHubEnterpriseServerPath(t *testing.T) {
	// GHES serves the API under /api/v3/: the token request and the API
	// calls must both keep that prefix.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v3/app/installations/5/access_tokens", func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			http.Error(w, "JWT required", http.StatusUnauthorized)
			return
		}
		writeJSONBody(w, http.StatusCreated, map[string]any{"token": "ghs_enterprise", "expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
	})
	mux.HandleFunc("GET /api/v3/repos/acme/shop/commits/main", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "token ghs_enterprise" {
			http.Error(w, "installation token required", http.StatusUnauthorized)
			return
		}
		writeJSONBody(w, http.StatusOK, map[string]any{"sha": "0123456789abcdef0123456789abcdef01234567"})
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)

	for _, root := range []string{srv.URL + "/api/v3/", srv.URL + "/api/v3"} {
		t.Run(root[len(srv.URL):], func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			clients, err := githubapp.NewClients(root, 99, key, &githubapp.Transport{})
			if err != nil {
				t.Fatal(err)
			}
			if got := clients.BaseURL().String(); got != srv.URL+"/api/v3/" {
				t.Errorf("BaseURL = %s, want a trailing slash", got)
			}
			gh, _ := clients.Installation(5)
			c, _, err := gh.Repositories.GetCommit(context.Background(), "acme", "shop", "main", nil)
			if err != nil {
				t.Fatalf("GetCommit: %v (requests %v)", err, seen)
			}
			if c.GetSHA() != "0123456789abcdef0123456789abcdef01234567" {
				t.Errorf("sha = %s", c.GetSHA())
			}
			mu.Lock()
			defer mu.Unlock()
			want := []string{"POST /api/v3/app/installations/5/access_tokens", "GET /api/v3/repos/acme/shop/commits/main"}
			if !slices.Equal(seen, want) {
				t.Errorf("requests %v, want %v", seen, want)
			}
		})
	}
}

func TestNewClientsRejectsABadURL(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := githubapp.NewClients("http://[::1", 1, key, &githubapp.Transport{}); err == nil {
		t.Error("NewClients accepted an unparsable URL")
	}
}

// A token GitHub refuses ends the error with GitHub's status and message,
// the cause, which `lastmile deliveries` keeps when it cuts a long error in
// the middle; the token endpoint's URL is not in it.
func TestInstallationTokenErrorsEndWithGitHubsAnswer(t *testing.T) {
	ctx := context.Background()
	w := newSimWorld(t)
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		appID int64
		key   *rsa.PrivateKey
		want  string
	}{
		"wrong private key": {w.sim.AppID(), otherKey, "GitHub answered 401 Unauthorized: A JSON web token could not be decoded"},
		"wrong App ID":      {w.sim.AppID() + 1, simKey(t, w.sim), "GitHub answered 401 Unauthorized: Integration not found"},
	} {
		t.Run(name, func(t *testing.T) {
			clients, err := githubapp.NewClients(w.apiURL, tc.appID, tc.key, &githubapp.Transport{})
			if err != nil {
				t.Fatal(err)
			}
			acme, _ := clients.Installation(w.acme)
			_, _, _, err = acme.Repositories.GetContents(ctx, "acme", "shop", ".github/lastmile.yml", nil)
			want := fmt.Sprintf("installation token for installation %d: %s", w.acme, tc.want)
			if err == nil || !strings.HasSuffix(err.Error(), want) {
				t.Fatalf("error %v, want one ending with %q", err, want)
			}
			if strings.Contains(err.Error(), "access_tokens") {
				t.Errorf("error %q names the token endpoint", err)
			}
			var te *githubapp.InstallationTokenError
			if !errors.As(err, &te) || te.Installation != w.acme || te.Status != "401 Unauthorized" {
				t.Errorf("error %#v: want an *InstallationTokenError of installation %d, 401", err, w.acme)
			}
		})
	}
}

// What GitHub answers once an installation is suspended or the App
// uninstalled is told apart from other failures: a call with the token
// minted before is refused as suspended (403); once the client is
// forgotten, the new token's refusal says it (403 suspended). An
// uninstalled App's token is revoked (401, which says nothing of the
// installation): the call is sent again with a new token, whose refusal
// (404) says it, forgotten or not. A 404 of another kind (a repository the
// installation does not have) is neither.
func TestClientsTellAnInstallationSuspendedOrGone(t *testing.T) {
	ctx := context.Background()
	w := newSimWorld(t)
	clients := w.clients(t)
	gh := &githubapp.GitHub{Clients: clients}
	shop := pipeline.Repo{Owner: "acme", Name: "shop", InstallationID: w.acme}
	read := func() error {
		_, err := gh.ReadFile(ctx, shop, "README.md", "main")
		return err
	}
	check := func(when string, err error, suspended bool, gone int64) {
		t.Helper()
		if got := githubapp.InstallationSuspended(err); got != suspended {
			t.Errorf("%s: InstallationSuspended(%v) = %v, want %v", when, err, got, suspended)
		}
		if id, ok := githubapp.InstallationGone(err); ok != (gone != 0) || id != gone {
			t.Errorf("%s: InstallationGone(%v) = %d, %v; want %d", when, err, id, ok, gone)
		}
	}
	if err := read(); err != nil {
		t.Fatal(err)
	}
	check("a 404 of a repository of another installation", func() error {
		_, err := gh.ReadFile(ctx, pipeline.Repo{Owner: "globex", Name: "api", InstallationID: w.acme}, "README.md", "main")
		return err
	}(), false, 0)

	if err := w.sim.SuspendInstallation(w.acme, "alice"); err != nil {
		t.Fatal(err)
	}
	check("suspended, the token minted before", read(), true, 0)
	clients.Forget(w.acme)
	err := read()
	check("suspended, a new token", err, true, 0)
	var te *githubapp.InstallationTokenError
	if !errors.As(err, &te) || te.Code != http.StatusForbidden || te.Message != "This installation has been suspended" {
		t.Errorf("error %#v: want the token refused with GitHub's 403", err)
	}
	if err := w.sim.UnsuspendInstallation(w.acme, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := read(); err != nil {
		t.Fatalf("unsuspended: %v", err)
	}

	w.sim.DeleteInstallation(w.acme, "octocat")
	before := w.sim.CountRequests("POST", tokenPath)
	check("uninstalled, the token minted before", read(), false, w.acme)
	if n := w.sim.CountRequests("POST", tokenPath) - before; n != 1 {
		t.Errorf("uninstalled: %d token requests after the 401, want 1", n)
	}
	clients.Forget(w.acme)
	check("uninstalled, a new token", read(), false, w.acme)
}

// A token request that gets no answer says why, last; a rate limit stays
// one for the worker, which then waits instead of counting an attempt.
func TestInstallationTokenErrorsKeepTheirCause(t *testing.T) {
	ctx := context.Background()
	w := newSimWorld(t)
	w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultPrimaryRateLimit, Method: "POST", Path: tokenPath, Times: 1, Reset: time.Hour})
	clients := w.clients(t)
	acme, _ := clients.Installation(w.acme)
	_, _, err := acme.Repositories.GetCommit(ctx, "acme", "shop", "main", nil)
	if _, limited := githubapp.IsRateLimited(err); !limited {
		t.Fatalf("error %v: want a rate limit", err)
	}
	prefix := fmt.Sprintf("installation token for installation %d: GitHub primary rate limit (HTTP 403): retry after ", w.acme)
	if !strings.Contains(err.Error(), prefix) {
		t.Errorf("error %q, want it to end with %q and the time", err, prefix)
	}
}

// ghinstallation signs the App's JWT once per call, valid for about 90
// seconds. A call held in the transport by rate limits (Retry-After: 25,
// four times) is not sent again once its JWT may have expired: after 60
// seconds of waits it ends as *RateLimitedError, and the caller's next call
// carries a new JWT — it never becomes a 401.
func TestTransportDoesNotHoldTheAppsJWTPastItsLife(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Now()} // ghinstallation dates the JWT by the real clock
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var claims struct{ Exp int64 }
		parts := strings.Split(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), ".")
		if len(parts) == 3 {
			b, _ := base64.RawURLEncoding.DecodeString(parts[1])
			_ = json.Unmarshal(b, &claims)
		}
		w.Header().Set("Content-Type", "application/json")
		if claims.Exp == 0 || clock.Now().Unix() >= claims.Exp {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"message":"'Expiration time' claim ('exp') is too far in the past"}`)
			return
		}
		w.Header().Set("Retry-After", "25")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"message":"You have exceeded a secondary rate limit."}`)
	}))
	defer srv.Close()
	clients, err := githubapp.NewClients(srv.URL+"/", 1, key, &githubapp.Transport{Sleep: clock.Sleep, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = clients.App().Apps.ListHookDeliveries(context.Background(), &github.ListCursorOptions{})
	var waited time.Duration
	for _, w := range clock.Waits() {
		waited += w
	}
	var limited *githubapp.RateLimitedError
	if !errors.As(err, &limited) || !limited.Secondary || waited > time.Minute || calls.Load() < 2 {
		t.Errorf("after %d calls and %v of waits: %v; want a secondary *RateLimitedError within a minute of waits, the JWT never sent expired", calls.Load(), waited, err)
	}
}
