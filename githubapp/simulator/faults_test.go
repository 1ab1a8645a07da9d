package simulator_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

const deploymentsPath = "/repos/{owner}/{repo}/deployments"

func deployReq() *github.DeploymentRequest {
	return &github.DeploymentRequest{Ref: github.String("main"), Environment: github.String("test"), AutoMerge: github.Bool(false), RequiredContexts: &[]string{}}
}

func TestFaultServerError(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	gh := h.client(h.org, nil)
	ctx := h.ctx()
	h.sim.InjectFault(simulator.Fault{Kind: simulator.FaultServerError, Method: "POST", Path: deploymentsPath, Times: 2, Status: 503})
	// A GET on the same path is not affected.
	if _, _, err := gh.Repositories.ListDeployments(ctx, "acme", "shop", nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		_, resp, err := gh.Repositories.CreateDeployment(ctx, "acme", "shop", deployReq())
		if err == nil || resp.StatusCode != 503 {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	if len(h.sim.Deployments("acme/shop")) != 0 {
		t.Fatal("a failed request took effect")
	}
	if _, _, err := gh.Repositories.CreateDeployment(ctx, "acme", "shop", deployReq()); err != nil {
		t.Fatalf("third attempt: %v", err)
	}
	if h.sim.PendingFaults() != 0 {
		t.Error("faults left")
	}
	var faulted int
	for _, r := range h.sim.Requests() {
		if r.Fault {
			faulted++
		}
	}
	if faulted != 2 || h.sim.CountRequests("POST", deploymentsPath) != 3 {
		t.Errorf("faulted %d, posts %d", faulted, h.sim.CountRequests("POST", deploymentsPath))
	}
}

// A primary rate limit spends the installation's budget until its reset:
// every call of the installation is refused until then, whatever its path,
// with GitHub's message naming the request; other installations go on, and
// a fresh hour begins at the reset.
func TestFaultPrimaryRateLimit(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	h := newHarness(t, simulator.Options{Clock: clock.Now})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	other := h.sim.CreateInstallation("globex", "Organization")
	h.sim.CreateRepo(other, "globex/web", simulator.RepoOptions{})
	tok, otherTok := h.token(h.org), h.token(other)
	h.sim.InjectFault(simulator.Fault{Kind: simulator.FaultPrimaryRateLimit, Path: deploymentsPath, Reset: 90 * time.Second})
	_, _, err := h.client(h.org, nil).Repositories.CreateDeployment(h.ctx(), "acme", "shop", deployReq())
	var rl *github.RateLimitError
	if !errors.As(err, &rl) {
		t.Fatalf("want RateLimitError, got %v", err)
	}
	reset := rl.Rate.Reset.Time
	if until := reset.Sub(clock.Now()); until < 80*time.Second || until > 100*time.Second {
		t.Errorf("reset in %v", until)
	}
	// The installation's next calls, on any path, until the reset.
	for _, path := range []string{"/repos/acme/shop/commits/main", "/repos/acme/shop/deployments"} {
		r := h.do("GET", path, tok, nil)
		want := fmt.Sprintf("API rate limit exceeded for installation ID %d. If you reach out to GitHub Support for help, please include the request ID %s.", h.org, r.header.Get("X-GitHub-Request-Id"))
		if r.status != 403 || r.header.Get("X-RateLimit-Remaining") != "0" || r.header.Get("X-RateLimit-Reset") != strconv.FormatInt(reset.Unix(), 10) ||
			r.json(t)["message"] != want {
			t.Errorf("GET %s during the limit: %d %v %s", path, r.status, r.header, r.body)
		}
	}
	if r := h.do("GET", "/repos/globex/web/commits/main", otherTok, nil); r.status != 200 {
		t.Errorf("another installation during the limit: %d %s", r.status, r.body)
	}
	clock.Advance(90 * time.Second)
	r := h.do("GET", "/repos/acme/shop/commits/main", tok, nil)
	if r.status != 200 || r.header.Get("X-RateLimit-Remaining") != strconv.Itoa(simulator.DefaultRateLimit-1) {
		t.Errorf("after the reset: %d, remaining %s", r.status, r.header.Get("X-RateLimit-Remaining"))
	}
	// The 429 flavour carries the same headers.
	h.sim.InjectFault(simulator.Fault{Kind: simulator.FaultPrimaryRateLimit, Path: deploymentsPath, Status: http.StatusTooManyRequests})
	r = h.do("POST", "/repos/acme/shop/deployments", tok, deployReq())
	if r.status != 429 || r.header.Get("X-RateLimit-Remaining") != "0" || r.header.Get("X-RateLimit-Reset") == "" {
		t.Errorf("429: %d %v", r.status, r.header)
	}
	if len(h.sim.Deployments("acme/shop")) != 0 {
		t.Error("rate-limited request took effect")
	}
}

func TestFaultSecondaryRateLimit(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.InjectFault(simulator.Fault{Kind: simulator.FaultSecondaryRateLimit, Path: deploymentsPath, RetryAfter: 30 * time.Second})
	_, _, err := h.client(h.org, nil).Repositories.CreateDeployment(h.ctx(), "acme", "shop", deployReq())
	var ab *github.AbuseRateLimitError
	if !errors.As(err, &ab) || ab.RetryAfter == nil || *ab.RetryAfter != 30*time.Second {
		t.Fatalf("want AbuseRateLimitError with Retry-After 30s, got %v", err)
	}
	h.sim.InjectFault(simulator.Fault{Kind: simulator.FaultSecondaryRateLimit, Path: deploymentsPath, Status: 429, RetryAfter: 2 * time.Second})
	r := h.do("POST", "/repos/acme/shop/deployments", h.token(h.org), deployReq())
	if r.status != 429 || r.header.Get("Retry-After") != "2" || r.json(t)["documentation_url"] != "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits" {
		t.Errorf("429: %d %v %s", r.status, r.header, r.body)
	}
}

// GitHub's 422 for an endpoint "spammed" has its error body, like its other
// validation failures, and creates nothing.
func TestFaultSpammed(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.InjectFault(simulator.Fault{Kind: simulator.FaultSpammed, Method: "POST", Path: deploymentsPath})
	r := h.do("POST", "/repos/acme/shop/deployments", h.token(h.org), deployReq())
	body := r.json(t)
	if msg, _ := body["message"].(string); r.status != 422 || !strings.Contains(msg, "the endpoint has been spammed") ||
		!strings.HasPrefix(fmt.Sprint(body["documentation_url"]), "https://docs.github.com/") {
		t.Errorf("spammed: %d %s", r.status, r.body)
	}
	if len(h.sim.Deployments("acme/shop")) != 0 {
		t.Fatal("the spammed request took effect")
	}
	if _, _, err := h.client(h.org, nil).Repositories.CreateDeployment(h.ctx(), "acme", "shop", deployReq()); err != nil {
		t.Errorf("the next request: %v", err)
	}
}

func TestFaultDelay(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	gh := h.client(h.org, nil)
	// Warm the token cache so only the deployment request is delayed.
	if _, _, err := gh.Repositories.ListDeployments(h.ctx(), "acme", "shop", nil); err != nil {
		t.Fatal(err)
	}
	h.sim.InjectFault(simulator.Fault{Kind: simulator.FaultDelay, Path: deploymentsPath, Method: "POST", Delay: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, _, err := gh.Repositories.CreateDeployment(ctx, "acme", "shop", deployReq())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want a client timeout, got %v", err)
	}
	// Like a slow GitHub, the request still takes effect once answered.
	if err := h.sim.WaitFor(h.ctx(), func(s *simulator.Simulator) bool { return len(s.Deployments("acme/shop")) == 1 }); err != nil {
		t.Fatal(err)
	}
}

func TestFaultAppliedButAnswerLost(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	gh := h.client(h.org, nil)
	ctx := h.ctx()
	h.sim.InjectFault(simulator.Fault{Kind: simulator.FaultAppliedLost, Path: deploymentsPath, Method: "POST"})
	_, resp, err := gh.Repositories.CreateDeployment(ctx, "acme", "shop", deployReq())
	if err == nil || resp.StatusCode != 502 {
		t.Fatalf("want 502, got %v", err)
	}
	if n := len(h.sim.Deployments("acme/shop")); n != 1 {
		t.Fatalf("deployments: %d, want the lost one", n)
	}
	last := h.sim.Requests()[len(h.sim.Requests())-1]
	if last.Status != 502 || last.AppliedStatus != 201 || !last.Fault || last.Auth != simulator.AuthInstallation {
		t.Errorf("request record: %+v", last)
	}

	h.sim.InjectFault(simulator.Fault{Kind: simulator.FaultAppliedLost, Path: deploymentsPath, Method: "POST", DropConnection: true})
	_, _, err = gh.Repositories.CreateDeployment(ctx, "acme", "shop", deployReq())
	if err == nil {
		t.Fatal("want a connection error")
	}
	var er *github.ErrorResponse
	if errors.As(err, &er) {
		t.Fatalf("got an HTTP answer: %v", err)
	}
	if n := len(h.sim.Deployments("acme/shop")); n != 2 {
		t.Fatalf("deployments: %d", n)
	}
	// The deployment webhooks went out for both.
	h.waitIdle()
	var created int
	for _, d := range h.sim.Deliveries() {
		if d.Event == "deployment" {
			created++
		}
	}
	if created != 2 {
		t.Errorf("deployment webhooks: %d", created)
	}
	if got := h.sim.Requests()[len(h.sim.Requests())-1]; got.Status != 0 || got.AppliedStatus != 201 {
		t.Errorf("dropped request record: %+v", got)
	}
}
