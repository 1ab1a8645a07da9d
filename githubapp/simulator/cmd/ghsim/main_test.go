package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/app"
	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

// started runs ghsim with args until the test ends, and returns the
// simulator and what ghsim printed when it started.
func started(t *testing.T, args ...string) (*simulator.Simulator, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	ready := make(chan *simulator.Simulator, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, out, out, func(s *simulator.Simulator) { ready <- s }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ghsim: %v", err)
		}
	})
	select {
	case sim := <-ready:
		return sim, out.String()
	case err := <-done:
		t.Fatalf("ghsim stopped: %v\n%s", err, out.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("ghsim did not start within 30 s:\n%s", out.String())
	}
	return nil, ""
}

// receiver is a webhook receiver for ghsim in tests (so that nothing goes
// to lastmile's default address, where anything may listen): it sends the
// event of each delivery on the channel, and answers 202.
func receiver(t *testing.T) (string, <-chan string) {
	events := make(chan string, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		events <- r.Header.Get("X-GitHub-Event")
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/webhook", events
}

func TestRun(t *testing.T) {
	key := filepath.Join(t.TempDir(), "app.pem")
	hook, _ := receiver(t)
	sim, out := started(t, "-webhook-secret", "x", "-key-out", key, "-repo", "acme/a,acme/b", "-webhook-url", hook)
	listen := strings.TrimSuffix(strings.TrimPrefix(hook, "http://"), "/webhook")
	if !strings.HasPrefix(out, "ghsim: GitHub's REST API simulated at http://127.0.0.1:") ||
		!strings.Contains(out, "LASTMILE_WEBHOOK_SECRET=x LASTMILE_PRIVATE_KEY_FILE="+key+" LASTMILE_LISTEN="+listen+" ") ||
		!strings.Contains(out, "curl -X POST "+sim.URL()+"_ghsim/push") {
		t.Errorf("output:\n%s", out)
	}
	if b, err := os.ReadFile(key); err != nil || !bytes.HasPrefix(b, []byte("-----BEGIN RSA PRIVATE KEY-----")) {
		t.Errorf("key file: %v", err)
	}
	// Both repositories are enrolled, and nothing happened yet.
	for _, repo := range []string{"acme/a", "acme/b"} {
		if n := len(sim.Runs(repo)); n != 0 {
			t.Errorf("%s has %d runs", repo, n)
		}
		config, _ := sim.FileAt(repo, "main", ".github/lastmile.yml")
		if !strings.Contains(config, "environments:\n  - name: test\n  - name: staging\n  - name: production\n") {
			t.Errorf("%s's .github/lastmile.yml:\n%s", repo, config)
		}
	}
}

func TestUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-h"}, &stdout, &stderr, nil)
	if !errors.Is(err, flag.ErrHelp) || stderr.Len() != 0 {
		t.Errorf("-h: %v, stderr %q", err, stderr.String())
	}
	for _, want := range []string{"go run ./cmd/lastmile serve", "POST /_ghsim/push", "-approve-as", "-webhook-url"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("-h does not say %q:\n%s", want, stdout.String())
		}
	}
	for _, args := range [][]string{
		{"-colour"},
		{"extra"},
		{"-repo", "other/shop"},
		{"-environments", "test, pro duction"},
		{"-environments", ","},
		{"-webhook-url", "127.0.0.1:8080"},
	} {
		stdout.Reset()
		stderr.Reset()
		if err := run(context.Background(), args, &stdout, &stderr, nil); !errors.Is(err, errUsage) || stdout.Len() != 0 || stderr.Len() == 0 {
			t.Errorf("%v: %v, stdout %q, stderr %q; want a usage error on stderr", args, err, stdout.String(), stderr.String())
		}
	}
}

func TestPushControl(t *testing.T) {
	hook, events := receiver(t)
	sim, _ := started(t, "-key-out", filepath.Join(t.TempDir(), "app.pem"), "-repo", "acme/shop,acme/api", "-webhook-url", hook)
	push := func(values url.Values) (int, map[string]string) {
		t.Helper()
		resp, err := http.PostForm(sim.URL()+"_ghsim/push", values)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	code, first := push(nil)
	if code != http.StatusCreated || first["repository"] != "acme/shop" || first["branch"] != "main" || len(first["after"]) != 40 {
		t.Fatalf("push: %d %v", code, first)
	}
	code, second := push(url.Values{"repo": {"acme/api"}, "branch": {"feature/x"}, "message": {"Try x"}})
	if code != http.StatusCreated || second["repository"] != "acme/api" || second["branch"] != "feature/x" ||
		second["before"] != strings.Repeat("0", 40) {
		t.Fatalf("push to a new branch: %d %v", code, second)
	}
	for _, bad := range []struct {
		values url.Values
		code   int
	}{
		{url.Values{"repo": {"acme/none"}}, http.StatusNotFound},
		{url.Values{"branch": {"refs/heads/main"}}, http.StatusBadRequest},
		{url.Values{"branch": {"a..b"}}, http.StatusBadRequest},
	} {
		if code, body := push(bad.values); code != bad.code || body["message"] == "" {
			t.Errorf("%v: %d %v, want %d with a message", bad.values, code, body, bad.code)
		}
	}
	// Each push is GitHub's push webhook, and its commit is in the
	// repository.
	deadline := time.After(30 * time.Second)
	for pushes := 0; pushes < 2; {
		select {
		case e := <-events:
			if e == "push" {
				pushes++
			}
		case <-deadline:
			t.Fatalf("%d push webhooks within 30 s, want 2", pushes)
		}
	}
	if got, _ := sim.FileAt("acme/api", "feature/x", "CHANGES.txt"); !strings.Contains(got, "Try x") {
		t.Errorf("CHANGES.txt on feature/x: %q", got)
	}
	if got, _ := sim.FileAt("acme/shop", first["after"], ".github/lastmile.yml"); !strings.Contains(got, "environments:") {
		t.Errorf("the pushed commit has no .github/lastmile.yml: %q", got)
	}
	// GitHub's API is still served beside the control.
	resp, err := http.Get(sim.URL() + "_ghsim/push")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /_ghsim/push: %d", resp.StatusCode)
	}
}

// The installation control does what an organisation owner does on
// GitHub, with GitHub's webhooks; bad requests change nothing.
func TestInstallationControl(t *testing.T) {
	hook, events := receiver(t)
	sim, _ := started(t, "-key-out", filepath.Join(t.TempDir(), "app.pem"), "-repo", "acme/shop,acme/api", "-webhook-url", hook)
	control := func(values url.Values) (int, map[string]any) {
		t.Helper()
		resp, err := http.PostForm(sim.URL()+"_ghsim/installation", values)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	next := func(want string) {
		t.Helper()
		select {
		case e := <-events:
			if e != want {
				t.Errorf("webhook %q, want %q", e, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s webhook within 30 s", want)
		}
	}
	for _, bad := range []struct {
		values url.Values
		code   int
	}{
		{url.Values{"action": {"explode"}}, http.StatusBadRequest},
		{nil, http.StatusBadRequest},
		{url.Values{"action": {"remove"}, "repo": {"acme/none"}}, http.StatusNotFound},
		{url.Values{"action": {"suspend"}, "by": {"a b"}}, http.StatusBadRequest},
	} {
		if code, body := control(bad.values); code != bad.code || body["message"] == "" {
			t.Errorf("%v: %d %v, want %d with a message", bad.values, code, body, bad.code)
		}
	}
	if code, body := control(url.Values{"action": {"suspend"}, "by": {"alice"}}); code != http.StatusOK || body["action"] != "suspend" {
		t.Fatalf("suspend: %d %v", code, body)
	}
	next("installation")
	if code, _ := control(url.Values{"action": {"unsuspend"}}); code != http.StatusOK {
		t.Fatalf("unsuspend: %d", code)
	}
	next("installation")
	if code, body := control(url.Values{"action": {"remove"}, "repo": {"ACME/api"}}); code != http.StatusOK || body["repository"] != "acme/api" {
		t.Fatalf("remove: %d %v", code, body)
	}
	next("installation_repositories")
	if code, _ := control(url.Values{"action": {"uninstall"}}); code != http.StatusOK {
		t.Fatalf("uninstall: %d", code)
	}
	next("installation")
	if code, body := control(url.Values{"action": {"suspend"}}); code != http.StatusConflict || body["message"] == "" {
		t.Errorf("suspend after uninstall: %d %v, want 409 with a message", code, body)
	}
}

// The installation control refuses, with 409 and why, what cannot be done
// to the installation as it stands — an unsuspension while it is active, a
// repository removed twice, a suspension twice — and changes nothing: the
// next webhook is the next change's.
func TestInstallationControlRefusesWhatIsDoneAlready(t *testing.T) {
	hook, events := receiver(t)
	sim, _ := started(t, "-key-out", filepath.Join(t.TempDir(), "app.pem"), "-repo", "acme/shop,acme/api", "-webhook-url", hook)
	control := func(values url.Values) (int, string) {
		t.Helper()
		resp, err := http.PostForm(sim.URL()+"_ghsim/installation", values)
		if err != nil {
			t.Fatalf("%v: %v", values, err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		message, _ := body["message"].(string)
		return resp.StatusCode, message
	}
	next := func(want string) {
		t.Helper()
		select {
		case e := <-events:
			if e != want {
				t.Errorf("webhook %q, want %q", e, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s webhook within 30 s", want)
		}
	}
	refused := func(values url.Values, why string) {
		t.Helper()
		if code, message := control(values); code != http.StatusConflict || !strings.Contains(message, why) {
			t.Errorf("%v: %d %q, want 409 saying %q", values, code, message, why)
		}
	}
	refused(url.Values{"action": {"unsuspend"}}, "is not suspended")
	remove := url.Values{"action": {"remove"}, "repo": {"acme/api"}}
	if code, message := control(remove); code != http.StatusOK {
		t.Fatalf("remove: %d %s", code, message)
	}
	next("installation_repositories")
	refused(remove, "does not have acme/api")
	suspend := url.Values{"action": {"suspend"}}
	if code, message := control(suspend); code != http.StatusOK {
		t.Fatalf("suspend: %d %s", code, message)
	}
	next("installation")
	refused(suspend, "is suspended already")
	if code, message := control(url.Values{"action": {"unsuspend"}}); code != http.StatusOK {
		t.Fatalf("unsuspend: %d %s", code, message)
	}
	next("installation")
}

// The README's walk-through: ghsim, then lastmile serve with the settings
// ghsim prints, then a push through ghsim's control: the release reaches
// production and lastmile history shows it.
func TestPushIsAReleaseInLastmile(t *testing.T) {
	dir := t.TempDir()
	hook, _ := receiver(t) // until lastmile listens
	sim, out := started(t, "-key-out", filepath.Join(dir, "app.pem"), "-approve-as", "bob", "-webhook-url", hook)

	// The export line ghsim printed is lastmile's environment, but for the
	// address: the test's lastmile takes a free port, and ghsim is told.
	m := regexp.MustCompile(`(?m)^  export (.*)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no export line in:\n%s", out)
	}
	env := map[string]string{}
	for _, kv := range strings.Fields(m[1]) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = strings.Trim(v, "'")
	}
	if env["LASTMILE_DATABASE"] != filepath.Join(dir, "lastmile.db") || env["LASTMILE_GITHUB_URL"] != sim.URL() {
		t.Fatalf("export line %q", m[1])
	}
	env["LASTMILE_LISTEN"] = "127.0.0.1:0"
	getenv := func(k string) string { return env[k] }

	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	served := make(chan int, 1)
	go func() { served <- app.Main(ctx, []string{"serve"}, getenv, logs, logs) }()
	defer func() {
		cancel()
		if code := <-served; code != 0 {
			t.Errorf("lastmile serve: exit %d\n%s", code, logs.String())
		}
	}()
	addr := logs.waitFor(t, regexp.MustCompile(`"msg":"lastmile starting".*"listen":"([^"]+)"`))
	sim.SetWebhookURL("http://" + addr + "/webhook")

	resp, err := http.Post(sim.URL()+"_ghsim/push", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var pushed struct{ After string }
	json.NewDecoder(resp.Body).Decode(&pushed)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || len(pushed.After) != 40 {
		t.Fatalf("push: %d %+v", resp.StatusCode, pushed)
	}

	// lastmile deploys the commit to each environment in turn.
	wctx, wcancel := context.WithTimeout(context.Background(), time.Minute)
	defer wcancel()
	err = sim.WaitFor(wctx, func(s *simulator.Simulator) bool {
		for _, d := range s.Deployments("acme/shop") {
			if d.SHA == pushed.After && d.Environment == "production" && d.State() == "success" {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("no successful production deployment of %s: %v\n%s", pushed.After, err, logs.String())
	}

	// lastmile history, as the user runs it, shows the release completed
	// once lastmile has handled the last status.
	var history []struct {
		Release struct {
			SHA   string `json:"sha"`
			State string `json:"state"`
		} `json:"release"`
		Stages []struct {
			Environment string `json:"environment"`
			State       string `json:"state"`
		} `json:"stages"`
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var stdout, stderr bytes.Buffer
		code := app.Main(context.Background(), []string{"history", "--json"}, getenv, &stdout, &stderr)
		if code != 0 {
			t.Fatalf("history: exit %d, %s", code, stderr.String())
		}
		if err := json.Unmarshal(stdout.Bytes(), &history); err != nil {
			t.Fatal(err)
		}
		if len(history) == 1 && history[0].Release.State == "completed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("history after a minute: %s\n%s", stdout.String(), logs.String())
		}
		// Wait for the simulator's next change (a delivery answered), or a
		// moment: lastmile records the status after answering its webhook.
		tick, stop := context.WithTimeout(context.Background(), 50*time.Millisecond)
		_ = sim.WaitFor(tick, func(*simulator.Simulator) bool { return false })
		stop()
	}
	if history[0].Release.SHA != pushed.After {
		t.Errorf("release of %s, want %s", history[0].Release.SHA, pushed.After)
	}
	var stages []string
	for _, s := range history[0].Stages {
		stages = append(stages, s.Environment+":"+s.State)
	}
	if got := strings.Join(stages, " "); got != "test:success staging:success production:success" {
		t.Errorf("stages %s", got)
	}

	// The reviewer approved production.
	var stdout, stderr bytes.Buffer
	if code := app.Main(context.Background(), []string{"audit", "acme/shop", pushed.After}, getenv, &stdout, &stderr); code != 0 ||
		!strings.Contains(stdout.String(), "approved by bob") {
		t.Errorf("audit: exit %d, %s\n%s", code, stderr.String(), stdout.String())
	}
}

// syncBuffer is a bytes.Buffer for writers in other goroutines; waitFor
// waits for a line to match.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor returns the first group of re's first match, waiting up to 30 s
// for it to be written.
func (s *syncBuffer) waitFor(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		s.mu.Lock()
		m := re.FindStringSubmatch(s.b.String())
		if m == nil && s.changed == nil {
			s.changed = make(chan struct{})
		}
		changed := s.changed
		s.mu.Unlock()
		if m != nil {
			return m[1]
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("nothing matched %s within 30 s:\n%s", re, s.String())
		}
	}
}
