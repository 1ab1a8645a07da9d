package githubapp_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/githubapp"
)

var testAppKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

// tokenGitHub is a fake GitHub that mints installation tokens, valid for
// an hour of the real clock (ghinstallation's), and takes them until it
// revokes them. It does not check the App's JWT.
type tokenGitHub struct {
	*httptest.Server

	mu      sync.Mutex
	minted  int
	revoked map[string]bool
	refuse  bool // every token refused (401)
	lag     int  // the calls each token minted from now on is unknown for (404 to GET, 401 to others)
	unknown map[string]int
	missing bool     // every GET answered 404
	log     []string // "METHOD path status token#"
	bodies  []string // of the calls made with a token
}

func newTokenGitHub(t *testing.T) *tokenGitHub {
	t.Helper()
	g := &tokenGitHub{revoked: map[string]bool{}, unknown: map[string]int{}}
	g.Server = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.Close)
	return g
}

func (g *tokenGitHub) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	now := time.Now()
	w.Header().Set("Date", now.UTC().Format(http.TimeFormat))
	w.Header().Set("Content-Type", "application/json")
	g.mu.Lock()
	defer g.mu.Unlock()
	if r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/access_tokens") {
		g.minted++
		tok := fmt.Sprintf("ghs_token%d", g.minted)
		g.log = append(g.log, "POST /access_tokens 201 "+strings.TrimPrefix(tok, "ghs_"))
		if g.lag > 0 {
			g.unknown[tok] = g.lag
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"token":%q,"expires_at":%q}`, tok, now.Add(time.Hour).UTC().Format(time.RFC3339))
		return
	}
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "token ")
	g.bodies = append(g.bodies, string(body))
	if !strings.HasPrefix(tok, "ghs_") || g.revoked[tok] || g.refuse {
		g.log = append(g.log, fmt.Sprintf("%s %s 401 %s", r.Method, r.URL.Path, strings.TrimPrefix(tok, "ghs_")))
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest"}`)
		return
	}
	if g.unknown[tok] > 0 && r.Method != http.MethodGet {
		g.unknown[tok]--
		g.log = append(g.log, fmt.Sprintf("%s %s 401 %s", r.Method, r.URL.Path, strings.TrimPrefix(tok, "ghs_")))
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest"}`)
		return
	}
	if g.unknown[tok] > 0 || g.missing && r.Method == http.MethodGet {
		g.unknown[tok] = max(g.unknown[tok]-1, 0)
		g.log = append(g.log, fmt.Sprintf("%s %s 404 %s", r.Method, r.URL.Path, strings.TrimPrefix(tok, "ghs_")))
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"message":"Not Found","documentation_url":"https://docs.github.com/rest"}`)
		return
	}
	g.log = append(g.log, fmt.Sprintf("%s %s 200 %s", r.Method, r.URL.Path, strings.TrimPrefix(tok, "ghs_")))
	fmt.Fprint(w, `{"id":1,"full_name":"o/r","state":"success"}`)
}

// unknownFor makes each token minted from now on unknown to GitHub for its
// first n calls, as its replicas may not know a token just given.
func (g *tokenGitHub) unknownFor(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lag = n
}

// notFound makes GitHub answer every GET 404 (true) or as before (false).
func (g *tokenGitHub) notFound(missing bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.missing = missing
}

// revoke makes GitHub refuse every token minted so far.
func (g *tokenGitHub) revoke() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := 1; i <= g.minted; i++ {
		g.revoked[fmt.Sprintf("ghs_token%d", i)] = true
	}
}

func (g *tokenGitHub) refuseAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refuse = true
}

// Log returns the calls since the last Log, and forgets them.
func (g *tokenGitHub) Log() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	log := g.log
	g.log = nil
	return log
}

func (g *tokenGitHub) Bodies() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.bodies...)
}

// installationClient is installation 7's client against g.
func (g *tokenGitHub) installationClient(t *testing.T, obs *observed) *github.Client {
	t.Helper()
	return installation7(t, g.URL, obs)
}

// A token GitHub refuses (401: revoked, or expired all the same) is
// dropped and the call sent again, once, with a new token, which later
// calls use. Each call is counted.
func TestInstallationTokenRefusedIsReplaced(t *testing.T) {
	ctx := context.Background()
	g := newTokenGitHub(t)
	obs := &observed{}
	gh := g.installationClient(t, obs)
	if _, _, err := gh.Repositories.Get(ctx, "o", "r"); err != nil {
		t.Fatal(err)
	}
	g.revoke()
	if _, _, err := gh.Repositories.Get(ctx, "o", "r"); err != nil {
		t.Fatalf("call after the token was revoked: %v", err)
	}
	if _, _, err := gh.Repositories.Get(ctx, "o", "r"); err != nil {
		t.Fatalf("call after that: %v", err)
	}
	want := []string{
		"POST /access_tokens 201 token1", "GET /repos/o/r 200 token1",
		"GET /repos/o/r 401 token1", "POST /access_tokens 201 token2", "GET /repos/o/r 200 token2",
		"GET /repos/o/r 200 token2",
	}
	if log := g.Log(); !slices.Equal(log, want) {
		t.Errorf("calls %q, want %q", log, want)
	}
	if got, want := obs.Requests(), []string{"POST 201", "GET 200", "GET 401", "POST 201", "GET 200", "GET 200"}; !slices.Equal(got, want) {
		t.Errorf("calls counted %q, want %q", got, want)
	}
}

// Calls refused together get one new token between them.
func TestInstallationTokenRefusedToConcurrentCalls(t *testing.T) {
	ctx := context.Background()
	g := newTokenGitHub(t)
	gh := g.installationClient(t, nil)
	if _, _, err := gh.Repositories.Get(ctx, "o", "r"); err != nil {
		t.Fatal(err)
	}
	g.revoke()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := gh.Repositories.Get(ctx, "o", "r"); err != nil {
				t.Errorf("call after the token was revoked: %v", err)
			}
		}()
	}
	wg.Wait()
	var mints int
	for _, c := range g.Log() {
		if strings.HasPrefix(c, "POST /access_tokens") {
			mints++
		}
	}
	if mints != 2 {
		t.Errorf("%d tokens minted, want 2", mints)
	}
}

// A new token refused too is GitHub's answer once its replicas have had
// the time to know it: the call is sent again with it while it is that
// new (tokenLag: after one second, then two more), not with a third token,
// and a token just minted is not replaced at once. The error does not
// carry the token.
func TestInstallationTokenRefusedTwiceIsTheAnswer(t *testing.T) {
	ctx := context.Background()
	g := newTokenGitHub(t)
	gh := g.installationClient(t, nil)
	if _, _, err := gh.Repositories.Get(ctx, "o", "r"); err != nil {
		t.Fatal(err)
	}
	g.Log()
	g.refuseAll()
	check := func(when string, want []string) {
		t.Helper()
		_, _, err := gh.Repositories.Get(ctx, "o", "r")
		var er *github.ErrorResponse
		if !errors.As(err, &er) || er.Response.StatusCode != http.StatusUnauthorized || er.Message != "Bad credentials" {
			t.Errorf("%s: %v, want GitHub's 401", when, err)
		}
		if err != nil && strings.Contains(err.Error(), "ghs_") {
			t.Errorf("%s: the error %q carries the token", when, err)
		}
		if log := g.Log(); !slices.Equal(log, want) {
			t.Errorf("%s: calls %q, want %q", when, log, want)
		}
	}
	check("the token kept refused, then a new one", []string{
		"GET /repos/o/r 401 token1", "POST /access_tokens 201 token2", "GET /repos/o/r 401 token2", "GET /repos/o/r 401 token2", "GET /repos/o/r 401 token2"})
	check("a new token refused", []string{"POST /access_tokens 201 token3", "GET /repos/o/r 401 token3", "GET /repos/o/r 401 token3", "GET /repos/o/r 401 token3"})
}

// A token GitHub's replicas do not know yet, just after it was given (a
// 404 to a GET, a 401 to a POST), is not taken at its word: the call is
// sent again with it a second later, and GitHub answers.
func TestInstallationTokenNotKnownYetIsWaitedFor(t *testing.T) {
	ctx := context.Background()
	g := newTokenGitHub(t)
	g.unknownFor(1)
	gh := g.installationClient(t, nil)
	if _, _, err := gh.Repositories.Get(ctx, "o", "r"); err != nil {
		t.Fatalf("GET with a token GitHub did not know at first: %v", err)
	}
	if log, want := g.Log(), []string{"POST /access_tokens 201 token1", "GET /repos/o/r 404 token1", "GET /repos/o/r 200 token1"}; !slices.Equal(log, want) {
		t.Errorf("GET: calls %q, want %q", log, want)
	}
	g.revoke() // the next call gets a new token, unknown for one call too
	st := &github.RepoStatus{State: github.String("success"), Context: github.String("lastmile")}
	if _, _, err := gh.Repositories.CreateStatus(ctx, "o", "r", "abc123", st); err != nil {
		t.Fatalf("POST with a token GitHub did not know at first: %v", err)
	}
	if log, want := g.Log(), []string{"POST /repos/o/r/statuses/abc123 401 token1", "POST /access_tokens 201 token2",
		"POST /repos/o/r/statuses/abc123 401 token2", "POST /repos/o/r/statuses/abc123 200 token2"}; !slices.Equal(log, want) {
		t.Errorf("POST: calls %q, want %q", log, want)
	}
}

// A 404 is most often GitHub's answer: with a token just given, the call
// is sent once more; with a token an earlier call had an answer to, not.
func TestInstallationTokenNotFoundIsTheAnswer(t *testing.T) {
	ctx := context.Background()
	g := newTokenGitHub(t)
	g.notFound(true)
	gh := g.installationClient(t, nil)
	for _, c := range []struct {
		when string
		want []string
	}{
		{"a new token", []string{"POST /access_tokens 201 token1", "GET /repos/o/r 404 token1", "GET /repos/o/r 404 token1"}},
		{"the token kept", []string{"GET /repos/o/r 404 token1"}},
	} {
		_, _, err := gh.Repositories.Get(ctx, "o", "r")
		var er *github.ErrorResponse
		if !errors.As(err, &er) || er.Response.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %v, want GitHub's 404", c.when, err)
		}
		if log := g.Log(); !slices.Equal(log, c.want) {
			t.Errorf("%s: calls %q, want %q", c.when, log, c.want)
		}
	}
}

// A POST refused for its token is sent again with its body: GitHub did
// not act on it.
func TestInstallationTokenRefusedPOSTIsReplayed(t *testing.T) {
	ctx := context.Background()
	g := newTokenGitHub(t)
	gh := g.installationClient(t, nil)
	if _, _, err := gh.Repositories.Get(ctx, "o", "r"); err != nil {
		t.Fatal(err)
	}
	g.revoke()
	g.Log()
	st := &github.RepoStatus{State: github.String("success"), Context: github.String("lastmile"), Description: github.String("deployed")}
	req, err := gh.NewRequest("POST", "repos/o/r/statuses/abc123", st)
	if err != nil {
		t.Fatal(err)
	}
	// Not a body net/http could read again by itself (it rewinds one it
	// failed to send whole): the replay is lastmile's.
	req.GetBody = nil
	if _, err := gh.Do(ctx, req, nil); err != nil {
		t.Fatalf("POST after the token was revoked: %v", err)
	}
	want := []string{"POST /repos/o/r/statuses/abc123 401 token1", "POST /access_tokens 201 token2", "POST /repos/o/r/statuses/abc123 200 token2"}
	if log := g.Log(); !slices.Equal(log, want) {
		t.Errorf("calls %q, want %q", log, want)
	}
	bodies := g.Bodies()
	sent := bodies[len(bodies)-2:]
	if sent[0] == "" || sent[1] != sent[0] || !strings.Contains(sent[0], `"description":"deployed"`) {
		t.Errorf("bodies sent %q, want the status twice", sent)
	}
}

// Installations ask for their first tokens at once, each through a
// ghinstallation Transport that shares nothing with the others' (sharing
// one AppsTransport was a data race, for go test -race to report).
func TestInstallationTokensAskedForTogether(t *testing.T) {
	ctx := context.Background()
	g := newTokenGitHub(t)
	key, err := testAppKey()
	if err != nil {
		t.Fatal(err)
	}
	clients, err := githubapp.NewClients(g.URL+"/", 1, key, &githubapp.Transport{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for id := range int64(4) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gh, err := clients.Installation(id + 1)
			if err == nil {
				_, _, err = gh.Repositories.Get(ctx, "o", "r")
			}
			if err != nil {
				t.Errorf("installation %d: %v", id+1, err)
			}
		}()
	}
	wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.minted != 4 {
		t.Errorf("%d tokens minted, want 4", g.minted)
	}
}

// A token ghinstallation renews (a while before the old one expires, at the
// call that finds it due) is as new to GitHub's replicas as a first one: a
// GET answered 404 with it is sent again too.
func TestInstallationTokenRenewedNotKnownYetIsWaitedFor(t *testing.T) {
	var mu sync.Mutex
	minted := 0
	unknown := map[string]bool{}
	var log []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		w.Header().Set("Date", now.UTC().Format(http.TimeFormat))
		w.Header().Set("Content-Type", "application/json")
		mu.Lock()
		defer mu.Unlock()
		if r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/access_tokens") {
			minted++
			tok := fmt.Sprintf("ghs_t%d", minted)
			unknown[tok] = minted > 1 // the renewed token: unknown for one call
			log = append(log, "mint "+tok)
			w.WriteHeader(http.StatusCreated)
			// The first due for renewal at once (within tokenRenewal of
			// expiring): ghinstallation renews it at the next call.
			life := time.Hour
			if minted == 1 {
				life = 4*time.Minute + 30*time.Second
			}
			fmt.Fprintf(w, `{"token":%q,"expires_at":%q}`, tok, now.Add(life).UTC().Format(time.RFC3339))
			return
		}
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "token ")
		if unknown[tok] {
			unknown[tok] = false
			log = append(log, "GET 404 "+tok)
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"message":"Not Found"}`)
			return
		}
		log = append(log, "GET 200 "+tok)
		fmt.Fprint(w, `{"id":1,"full_name":"o/r"}`)
	}))
	defer srv.Close()
	gh := installation7(t, srv.URL, nil)
	ctx := context.Background()
	if _, _, err := gh.Repositories.Get(ctx, "o", "r"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := gh.Repositories.Get(ctx, "o", "r"); err != nil { // renews the token within the call
		t.Errorf("GET with a token just renewed: %v; want it sent again, as with a first token", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"mint ghs_t1", "GET 200 ghs_t1", "mint ghs_t2", "GET 404 ghs_t2", "GET 200 ghs_t2"}; !slices.Equal(log, want) {
		t.Errorf("calls %q, want %q", log, want)
	}
}

// A token ghinstallation renewed within a call that began with one kept,
// still refused (401) once it is no longer that new, is a kept token's
// refusal: after the lag's tries (three, over three seconds), the call is
// sent once more with another token.
func TestInstallationTokenRenewedAndRefusedIsReplaced(t *testing.T) {
	var mu sync.Mutex
	minted := 0
	var log []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		w.Header().Set("Date", now.UTC().Format(http.TimeFormat))
		w.Header().Set("Content-Type", "application/json")
		mu.Lock()
		defer mu.Unlock()
		if r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/access_tokens") {
			minted++
			tok := fmt.Sprintf("ghs_t%d", minted)
			log = append(log, "mint "+tok)
			life := time.Hour
			if minted == 1 {
				life = 4*time.Minute + 30*time.Second // due for renewal at the next call
			}
			w.WriteHeader(http.StatusCreated)
			fmt.Fprintf(w, `{"token":%q,"expires_at":%q}`, tok, now.Add(life).UTC().Format(time.RFC3339))
			return
		}
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "token ")
		if tok == "ghs_t2" { // the renewed token: refused for good
			log = append(log, "GET 401 "+tok)
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"message":"Bad credentials"}`)
			return
		}
		log = append(log, "GET 200 "+tok)
		fmt.Fprint(w, `{"id":1,"full_name":"o/r"}`)
	}))
	defer srv.Close()
	gh := installation7(t, srv.URL, nil)
	ctx := context.Background()
	if _, _, err := gh.Repositories.Get(ctx, "o", "r"); err != nil { // t1, kept
		t.Fatal(err)
	}
	if _, _, err := gh.Repositories.Get(ctx, "o", "r"); err != nil { // renews within the call: t2
		t.Errorf("GET with a renewed token GitHub refuses: %v; want it sent again with another token", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"mint ghs_t1", "GET 200 ghs_t1", "mint ghs_t2", "GET 401 ghs_t2", "GET 401 ghs_t2", "GET 401 ghs_t2", "mint ghs_t3", "GET 200 ghs_t3"}; !slices.Equal(log, want) {
		t.Errorf("calls %q, want %q", log, want)
	}
}

// Call A renews the token (ghinstallation, within A's call); call B, made
// while A waits for its answer, uses the new token and is answered first
// (200), which makes the token kept. A's answer, a 404 from a replica that
// does not know the token yet, is still waited past: a token was given
// since A's call began.
func TestInstallationTokenRenewedWithinACallRacingAnother(t *testing.T) {
	var mu sync.Mutex
	minted := 0
	aArrived := make(chan struct{})
	bDone := make(chan struct{})
	var aOnce sync.Once
	var log []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		w.Header().Set("Date", now.UTC().Format(http.TimeFormat))
		w.Header().Set("Content-Type", "application/json")
		if r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/access_tokens") {
			mu.Lock()
			minted++
			n := minted
			mu.Unlock()
			w.WriteHeader(http.StatusCreated)
			life := time.Hour
			if n == 1 {
				life = 4*time.Minute + 30*time.Second // due for renewal
			}
			fmt.Fprintf(w, `{"token":"ghs_t%d","expires_at":%q}`, n, now.Add(life).UTC().Format(time.RFC3339))
			return
		}
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "token ")
		mu.Lock()
		log = append(log, r.URL.Path+" "+tok)
		mu.Unlock()
		if tok == "ghs_t2" && r.URL.Path == "/repos/o/a" {
			first := false
			aOnce.Do(func() { first = true; close(aArrived) })
			if first {
				<-bDone // B answered first
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprint(w, `{"message":"Not Found"}`)
				return
			}
		}
		fmt.Fprint(w, `{"id":1,"full_name":"o/r"}`)
	}))
	defer srv.Close()
	gh := installation7(t, srv.URL, nil)
	ctx := context.Background()
	if _, _, err := gh.Repositories.Get(ctx, "o", "r"); err != nil { // t1, kept
		t.Fatal(err)
	}
	aErr := make(chan error, 1)
	go func() { _, _, err := gh.Repositories.Get(ctx, "o", "a"); aErr <- err }() // renews: t2
	<-aArrived
	if _, _, err := gh.Repositories.Get(ctx, "o", "b"); err != nil {
		t.Fatal(err)
	}
	close(bDone)
	if err := <-aErr; err != nil {
		mu.Lock()
		defer mu.Unlock()
		t.Errorf("A, a GET with a token renewed within it, answered 404 within tokenLag: %v (calls %q); want it sent again", err, log)
	}
}

// installation7 is installation 7's client of App 1 against the GitHub at
// url, its calls counted by obs if it is not nil.
func installation7(t *testing.T, url string, obs *observed) *github.Client {
	t.Helper()
	key, err := testAppKey()
	if err != nil {
		t.Fatal(err)
	}
	tr := &githubapp.Transport{}
	if obs != nil {
		tr.Observer = obs
	}
	clients, err := githubapp.NewClients(url+"/", 1, key, tr)
	if err != nil {
		t.Fatal(err)
	}
	gh, err := clients.Installation(7)
	if err != nil {
		t.Fatal(err)
	}
	return gh
}
