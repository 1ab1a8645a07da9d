package app

import (
	"bufio"
	"context"
	"encoding/json"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp"
)

func TestRegisterRunsTheManifestFlow(t *testing.T) {
	const secret = "whsec-0123456789abcdef"
	github := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/app-manifests/good-code/conversions" {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"message":"Not Found"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"id": 4242, "slug": "lastmile-acme", "html_url": "https://github.com/apps/lastmile-acme",
			"webhook_secret": secret, "pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n"})
	}))
	defer github.Close()

	out := filepath.Join(t.TempDir(), "my apps") // a space: the env file must quote it
	pr, pw := io.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	exit := make(chan int, 1)
	var stderr strings.Builder
	go func() {
		exit <- Main(ctx, []string{"register", "--webhook-url", "https://lm.example.com/webhook", "--org", "acme",
			"--listen", "127.0.0.1:0", "--out", out, "--github-url", github.URL + "/"}, func(string) string { return "" }, pw, &stderr)
		pw.Close()
	}()
	var printed strings.Builder
	lines := bufio.NewScanner(pr)
	addr, token := "", ""
	for addr == "" && lines.Scan() {
		printed.WriteString(lines.Text() + "\n")
		if m := regexp.MustCompile(`Open http://(\S+)/\?token=(\S+) `).FindStringSubmatch(lines.Text()); m != nil {
			addr, token = m[1], m[2]
		}
	}
	if addr == "" {
		t.Fatalf("no address printed:\n%s%s", printed.String(), stderr.String())
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		for lines.Scan() {
			printed.WriteString(lines.Text() + "\n")
		}
	}()

	// A page of another site that resolves to 127.0.0.1 (DNS rebinding)
	// gets neither the page (nor its state) nor the callback.
	for _, path := range []string{"/", "/callback?state=x&code=good-code"} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		req.Host = "attacker.example:" + addr[strings.LastIndex(addr, ":")+1:]
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest || strings.Contains(string(body), "state=") {
			t.Errorf("%s for Host %s: %d %s; want 421", path, req.Host, resp.StatusCode, body)
		}
	}
	// Another user of this machine reaches the port too, but not the
	// address register printed: no token, no page (and no state).
	for _, q := range []string{"", "?token=guess"} {
		if code, body := fetch(t, http.DefaultClient, "http://"+addr+"/"+q); code != http.StatusForbidden || strings.Contains(body, "state=") {
			t.Errorf("page without the token (%q): %d %s; want 403", q, code, body)
		}
	}
	// The user's browser: the page opened by localhost sends it to the
	// address GitHub's redirect comes back to, where its cookie is set.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	port := addr[strings.LastIndex(addr, ":")+1:]
	code, page := fetch(t, browser, "http://localhost:"+port+"/?token="+token)
	if code != http.StatusOK {
		t.Fatalf("registration page: %d %s", code, page)
	}
	form := regexp.MustCompile(`action="([^"]+)"`).FindStringSubmatch(page)
	value := regexp.MustCompile(`name="manifest" value="([^"]+)"`).FindStringSubmatch(page)
	if form == nil || value == nil {
		t.Fatalf("no manifest form:\n%s", page)
	}
	action := html.UnescapeString(form[1])
	if !strings.HasPrefix(action, "https://github.com/organizations/acme/settings/apps/new?state=") {
		t.Errorf("form posts to %s", action)
	}
	var m githubapp.Manifest
	if err := json.Unmarshal([]byte(html.UnescapeString(value[1])), &m); err != nil {
		t.Fatal(err)
	}
	wantPerms := map[string]string{"contents": "read", "deployments": "write", "statuses": "write", "actions": "read", "metadata": "read", "checks": "read"}
	for k, v := range wantPerms {
		if m.DefaultPermissions[k] != v {
			t.Errorf("permission %s: %q, want %q", k, m.DefaultPermissions[k], v)
		}
	}
	events := strings.Join(m.DefaultEvents, ",")
	for _, e := range []string{"push", "deployment", "deployment_status", "deployment_review", "deployment_protection_rule", "workflow_job", "workflow_run", "status", "check_suite"} {
		if !strings.Contains(","+events+",", ","+e+",") {
			t.Errorf("event %s missing from %s", e, events)
		}
	}
	if m.HookAttributes.URL != "https://lm.example.com/webhook" || m.RedirectURL != "http://"+addr+"/callback" || m.Public {
		t.Errorf("manifest: %+v", m)
	}
	state := strings.TrimPrefix(action, "https://github.com/organizations/acme/settings/apps/new?state=")

	if code, _ := fetch(t, browser, "http://"+addr+"/callback?state=forged&code=good-code"); code != http.StatusBadRequest {
		t.Errorf("forged state: %d", code)
	}
	// Who learnt the state but is not the browser that opened the page
	// (no cookie) cannot hand in its own App's code either.
	if code, _ := fetch(t, http.DefaultClient, "http://"+addr+"/callback?state="+state+"&code=good-code"); code != http.StatusForbidden {
		t.Errorf("answer without the page's cookie: %d, want 403", code)
	}
	if _, err := os.Stat(filepath.Join(out, "lastmile.env")); err == nil {
		t.Fatal("settings written for a forged answer")
	}
	if code, _ := fetch(t, browser, "http://"+addr+"/callback?state="+state+"&code=good-code"); code != http.StatusOK {
		t.Errorf("GitHub's answer: %d", code)
	}
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("register exited %d: %s", code, stderr.String())
		}
	case <-ctx.Done():
		t.Fatal("register did not finish")
	}
	<-scanned // register closed its output
	// The gated environments get their reviewers before the configuration
	// is pushed: that push is already a release.
	for what, text := range map[string]string{"next steps": printed.String(), "registration page": page} {
		if r, c := strings.Index(text, "required reviewers"), strings.Index(text, "lastmile.yml"); r < 0 || c < 0 || r > c {
			t.Errorf("the %s should name required reviewers before .github/lastmile.yml:\n%s", what, text)
		}
	}
	env, err := os.ReadFile(filepath.Join(out, "lastmile.env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"LASTMILE_APP_ID=4242\n", "LASTMILE_WEBHOOK_SECRET=" + secret + "\n",
		"LASTMILE_PRIVATE_KEY_FILE='" + filepath.Join(out, "lastmile-app.pem") + "'\n"} {
		if !strings.Contains(string(env), want) {
			t.Errorf("lastmile.env lacks %q:\n%s", want, env)
		}
	}
	// The printed command, run by a POSIX shell, loads the settings.
	cmd := regexp.MustCompile(`set -a; \. (.+); set \+a`).FindStringSubmatch(printed.String())
	if cmd == nil {
		t.Fatalf("no command to load the settings printed:\n%s", printed.String())
	}
	loaded, err := exec.Command("sh", "-c", "set -a; . "+cmd[1]+`; set +a; printf '%s|%s' "$LASTMILE_APP_ID" "$LASTMILE_PRIVATE_KEY_FILE"`).CombinedOutput()
	if want := "4242|" + filepath.Join(out, "lastmile-app.pem"); err != nil || string(loaded) != want {
		t.Errorf("sh loading %s: %q, %v; want %q", cmd[1], loaded, err, want)
	}
	// It names the database as the README's step 4 does, in the same file,
	// so that serve and the read commands agree on it.
	addDB := "echo 'LASTMILE_DATABASE=/var/lib/lastmile/lastmile.db' >> " + cmd[1]
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(printed.String(), addDB+"\n") || !strings.Contains(string(readme), "echo 'LASTMILE_DATABASE=/var/lib/lastmile/lastmile.db' >> lastmile.env") {
		t.Errorf("register's next steps and the README's step 4 should both add LASTMILE_DATABASE=/var/lib/lastmile/lastmile.db to lastmile.env; register printed:\n%s", printed.String())
	}
	// The database's folder is made by a command a user other than root
	// can run (mkdir -p /var/lib/lastmile cannot), and the user's, as the
	// README says of the database it holds.
	if mkdir := "sudo install -d -o \"$USER\" /var/lib/lastmile"; !strings.Contains(printed.String(), "\n       "+mkdir+" ") ||
		strings.Contains(printed.String(), "mkdir") || !strings.Contains(string(readme), "`"+mkdir+"`") {
		t.Errorf("register's next steps should make the database's folder with %s, as the README says; register printed:\n%s", mkdir, printed.String())
	}
	// Both keep /metrics and /api off the public address, as step 2 says.
	addAdmin := "echo 'LASTMILE_ADMIN_LISTEN=127.0.0.1:9797' >> " + cmd[1]
	if !strings.Contains(printed.String(), addAdmin+"\n") || !strings.Contains(string(readme), "echo 'LASTMILE_ADMIN_LISTEN=127.0.0.1:9797' >> lastmile.env") {
		t.Errorf("register's next steps and the README's step 4 should both add LASTMILE_ADMIN_LISTEN=127.0.0.1:9797 to lastmile.env; register printed:\n%s", printed.String())
	}
	loaded, err = exec.Command("sh", "-c", addDB+"; "+addAdmin+"; set -a; . "+cmd[1]+`; set +a; printf '%s|%s' "$LASTMILE_DATABASE" "$LASTMILE_ADMIN_LISTEN"`).CombinedOutput()
	if want := "/var/lib/lastmile/lastmile.db|127.0.0.1:9797"; err != nil || string(loaded) != want {
		t.Errorf("sh adding the database and admin address to %s: %q, %v; want %q", cmd[1], loaded, err, want)
	}
	for _, f := range []string{"lastmile.env", "lastmile-app.pem"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", f, st.Mode().Perm(), err)
		}
	}
	if strings.Contains(printed.String(), secret) || strings.Contains(stderr.String(), secret) {
		t.Error("the webhook secret was printed")
	}
}

func TestRegisterServesOnlyOnLoopback(t *testing.T) {
	var stderr strings.Builder
	code := Main(context.Background(), []string{"register", "--webhook-url", "https://lm.example.com/webhook", "--listen", "0.0.0.0:0",
		"--out", t.TempDir()}, func(string) string { return "" }, io.Discard, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "loopback") {
		t.Errorf("exit %d, stderr %q; want 2 and a word about loopback", code, stderr.String())
	}
	for addr, want := range map[string]bool{"127.0.0.1:8787": true, "localhost:80": true, "[::1]:8787": true, "127.0.0.1": true,
		"0.0.0.0:8787": false, "attacker.example:8787": false, "192.168.1.10:8787": false, ":8787": false} {
		if loopback(addr) != want {
			t.Errorf("loopback(%q) = %v", addr, !want)
		}
	}
}

func TestRegisterNeedsAWebhookURL(t *testing.T) {
	code, _, errOut := run(t, "", "register")
	if code != 2 || !strings.Contains(errOut, "--webhook-url") {
		t.Errorf("exit %d: %s", code, errOut)
	}
}

// A webhook URL with credentials, an App name GitHub refuses and an
// organisation that cannot exist are refused before anything is served,
// written or sent, and the password is not echoed.
func TestRegisterChecksItsInputs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--webhook-url", "https://u:hunter2@lm.example.com/webhook"}, "--webhook-url must not hold user:password@"},
		{[]string{"--webhook-url", "https://lm.example.com/webhook#x"}, "--webhook-url must not hold user:password@ or a #fragment"},
		{[]string{"--name", ""}, "the App needs a name"},
		{[]string{"--name", "   "}, "the App needs a name"},
		{[]string{"--name", strings.Repeat("a", 35)}, "at most 34 characters"},
		{[]string{"--name", "!!!"}, "needs a letter or a digit"},
		{[]string{"--org", "bad org!"}, "not a GitHub organisation's name"},
		{[]string{"--org", "-acme"}, "not a GitHub organisation's name"},
		{[]string{"--org", "ac--me"}, "not a GitHub organisation's name"},
		{[]string{"--org", strings.Repeat("a", 40)}, "not a GitHub organisation's name"},
	} {
		out := filepath.Join(t.TempDir(), "out")
		args := append([]string{"register", "--webhook-url", "https://lm.example.com/webhook", "--listen", "127.0.0.1:0", "--out", out}, tc.args...)
		code, stdout, errOut := run(t, "", args...)
		if code != 2 || !strings.Contains(errOut, tc.want) || strings.Contains(errOut+stdout, "hunter2") {
			t.Errorf("%q: exit %d, %s%s; want exit 2 saying %q", tc.args, code, stdout, errOut, tc.want)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%q: --out was made (%v)", tc.args, err)
		}
	}
	// What GitHub takes is still taken.
	for _, args := range [][]string{{"--name", strings.Repeat("a", 34)}, {"--name", "lastmile (acme)"}, {"--org", "acme-corp-2"}, {"--org", strings.Repeat("a", 39)}} {
		code, stdout, errOut := run(t, "", append([]string{"register", "--webhook-url", "https://lm.example.com/webhook", "--print-manifest"}, args...)...)
		if code != 0 || !strings.Contains(stdout, `"hook_attributes"`) {
			t.Errorf("%q: exit %d, %s%s", args, code, stdout, errOut)
		}
	}
}

// A --github-url that serve would refuse is refused before anything is
// created on GitHub or written, and its credentials are not echoed.
func TestRegisterRefusesAGitHubURLServeWouldRefuse(t *testing.T) {
	for _, u := range []string{"https://admin:hunter2@ghe.example.com/api/v3/", "https://ghe.example.com/api/v3/?x=1", "ghe.example.com"} {
		out := t.TempDir()
		code, _, errOut := run(t, "", "register", "--webhook-url", "https://lm.example.com/webhook",
			"--listen", "127.0.0.1:0", "--out", out, "--github-url", u)
		if code != 2 || !strings.Contains(errOut, "--github-url") || strings.Contains(errOut, "hunter2") {
			t.Errorf("--github-url %s: exit %d: %s", u, code, errOut)
		}
		if files, _ := os.ReadDir(out); len(files) != 0 {
			t.Errorf("--github-url %s: %d files written to --out", u, len(files))
		}
	}
}

// So is a --github (the web root the page's form posts to, printed) with
// credentials, a query or no host: it is not put in the page, nor echoed
// with its password, and the error names --github, not the API URL made
// from it.
func TestRegisterRefusesABadGitHubWebRoot(t *testing.T) {
	for _, u := range []string{"https://admin:hunter2@ghe.example.com", "//admin:hunter2@ghe.example.com", "https://ghe.example.com/?x=1", "not a url"} {
		out := t.TempDir()
		code, stdout, errOut := run(t, "", "register", "--webhook-url", "https://lm.example.com/webhook",
			"--listen", "127.0.0.1:0", "--out", out, "--github", u)
		if code != 2 || !strings.Contains(errOut, "--github:") || strings.Contains(errOut, "--github-url") || strings.Contains(errOut+stdout, "hunter2") {
			t.Errorf("--github %s: exit %d: %s%s", u, code, stdout, errOut)
		}
		if files, _ := os.ReadDir(out); len(files) != 0 {
			t.Errorf("--github %s: %d files written to --out", u, len(files))
		}
	}
}

// An earlier App's key or settings in --out are never overwritten: register
// refuses before anything is created on GitHub.
func TestRegisterKeepsAnEarlierAppsFiles(t *testing.T) {
	for _, name := range []string{"lastmile-app.pem", "lastmile.env"} {
		out := t.TempDir()
		earlier := filepath.Join(out, name)
		if err := os.WriteFile(earlier, []byte("earlier"), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := run(t, "", "register", "--webhook-url", "https://lm.example.com/webhook",
			"--listen", "127.0.0.1:0", "--out", out)
		if code != 2 || !strings.Contains(errOut, name+" already exists") {
			t.Errorf("%s present: exit %d: %s", name, code, errOut)
		}
		if b, err := os.ReadFile(earlier); err != nil || string(b) != "earlier" {
			t.Errorf("%s was changed: %q %v", name, b, err)
		}
	}
}

func fetch(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func get(t *testing.T, u string) string {
	t.Helper()
	_, body := fetch(t, http.DefaultClient, u)
	return body
}

// registerRun is a lastmile register started against a fake GitHub, with
// the browser that opened its page (and so holds its cookie).
type registerRun struct {
	addr, state string
	browser     *http.Client
	out         string
	exit        chan int
	stderr      *strings.Builder // read once exit has answered
	printed     *strings.Builder // stdout, read once printedAll is closed
	printedAll  chan struct{}
}

func startRegister(t *testing.T, ctx context.Context, githubURL string, args ...string) *registerRun {
	t.Helper()
	r := &registerRun{out: t.TempDir(), exit: make(chan int, 1), stderr: &strings.Builder{}, printed: &strings.Builder{}, printedAll: make(chan struct{})}
	pr, pw := io.Pipe()
	go func() {
		r.exit <- Main(ctx, append([]string{"register", "--webhook-url", "https://lm.example.com/webhook",
			"--listen", "127.0.0.1:0", "--out", r.out, "--github-url", githubURL + "/"}, args...), func(string) string { return "" }, pw, r.stderr)
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	token := ""
	for r.addr == "" && lines.Scan() {
		r.printed.WriteString(lines.Text() + "\n")
		if m := regexp.MustCompile(`Open http://(\S+)/\?token=(\S+) `).FindStringSubmatch(lines.Text()); m != nil {
			r.addr, token = m[1], m[2]
		}
	}
	if r.addr == "" {
		t.Fatal("register printed no address")
	}
	go func() {
		defer close(r.printedAll)
		for lines.Scan() {
			r.printed.WriteString(lines.Text() + "\n")
		}
		io.Copy(io.Discard, pr)
	}()
	jar, _ := cookiejar.New(nil)
	r.browser = &http.Client{Jar: jar}
	code, page := fetch(t, r.browser, "http://"+r.addr+"/?token="+token)
	form := regexp.MustCompile(`action="[^"]+\?state=([0-9a-f]+)"`).FindStringSubmatch(page)
	if code != http.StatusOK || form == nil {
		t.Fatalf("registration page: %d %s", code, page)
	}
	r.state = form[1]
	return r
}

// callback is GitHub sending the browser back with code (or the user
// reloading that page).
func (r *registerRun) callback(t *testing.T, code string) (int, string) {
	t.Helper()
	return fetch(t, r.browser, "http://"+r.addr+"/callback?state="+r.state+"&code="+code)
}

// An exchange of GitHub's code that got no answer (the connection closed)
// or a server error leaves the registration open: reloading the page tries
// the same code again, and the settings are written once GitHub answers.
func TestRegisterRetriesTheCodeWithoutAnAnswer(t *testing.T) {
	var calls atomic.Int32
	github := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/app-manifests/good-code/conversions" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		switch calls.Add(1) {
		case 1: // the connection breaks before GitHub answers
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		case 2:
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"message":"Service Unavailable"}`)
		default:
			writeConversion(w)
		}
	}))
	defer github.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := startRegister(t, ctx, github.URL, "--org", "acme")

	for try := 1; try <= 2; try++ {
		code, page := r.callback(t, "good-code")
		if code != http.StatusServiceUnavailable || !strings.Contains(page, "Reload this page to try again") {
			t.Errorf("try %d: %d %s; want 503 and a word about reloading", try, code, page)
		}
		if _, err := os.Stat(filepath.Join(r.out, "lastmile.env")); err == nil {
			t.Fatalf("try %d: settings written without GitHub's answer", try)
		}
		select {
		case code := <-r.exit:
			t.Fatalf("try %d: register exited %d before GitHub answered: %s", try, code, r.stderr.String())
		default:
		}
	}
	if code, page := r.callback(t, "good-code"); code != http.StatusOK || !strings.Contains(page, "ID 4242") {
		t.Errorf("reload once GitHub answers: %d %s", code, page)
	}
	select {
	case code := <-r.exit:
		if code != 0 {
			t.Fatalf("register exited %d: %s", code, r.stderr.String())
		}
	case <-ctx.Done():
		t.Fatal("register did not finish")
	}
	if env, err := os.ReadFile(filepath.Join(r.out, "lastmile.env")); err != nil || !strings.Contains(string(env), "LASTMILE_APP_ID=4242\n") {
		t.Errorf("lastmile.env: %q %v", env, err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("GitHub was asked %d times, want 3", n)
	}
	if !strings.Contains(r.stderr.String(), "Reload the page in the browser to try again") {
		t.Errorf("the terminal was not told to reload: %s", r.stderr.String())
	}
}

// GitHub's definitive refusal of the code (it was used, or expired) ends
// the registration, and says how to finish with the App GitHub may have
// made, on the page and in the terminal.
func TestRegisterGivesUpOnARefusedCode(t *testing.T) {
	for org, apps := range map[string]string{"acme": "https://github.com/organizations/acme/settings/apps)", "": "https://github.com/settings/apps)"} {
		var calls atomic.Int32
		github := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"message":"Not Found"}`)
		}))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		var args []string
		if org != "" {
			args = []string{"--org", org}
		}
		r := startRegister(t, ctx, github.URL, args...)
		advice := []string{"GitHub may already have created the App", apps, "generate a private key", "set a webhook secret",
			`write lastmile.env as the README's "Or create the App by hand" section says`, "delete the App there and run lastmile register again"}
		has := func(what, text string) {
			t.Helper()
			for _, a := range advice {
				if !strings.Contains(text, a) {
					t.Errorf("org %q: %s lacks %q:\n%s", org, what, a, text)
				}
			}
		}
		code, page := r.callback(t, "used-code")
		if code != http.StatusBadGateway || !strings.Contains(page, "404 Not Found") {
			t.Errorf("org %q: refused code: %d %s", org, code, page)
		}
		has("the page", page)
		select {
		case code := <-r.exit:
			if code != 1 {
				t.Errorf("org %q: register exited %d, want 1", org, code)
			}
		case <-ctx.Done():
			t.Fatalf("org %q: register did not finish", org)
		}
		has("the terminal", r.stderr.String())
		if n := calls.Load(); n != 1 {
			t.Errorf("org %q: GitHub was asked %d times, want 1", org, n)
		}
		if files, _ := os.ReadDir(r.out); len(files) != 0 {
			t.Errorf("org %q: %d files written", org, len(files))
		}
		cancel()
		github.Close()
	}
}

// A browser that goes away while the code is being exchanged (a reload of
// the slow page, a closed tab) does not cost the App's key: GitHub answers
// a code once, so the exchange finishes and writes the settings.
func TestRegisterKeepsTheAnswerWhenTheBrowserLeaves(t *testing.T) {
	var calls atomic.Int32
	received, abandoned := make(chan struct{}), make(chan struct{})
	github := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if calls.Add(1) > 1 { // the code was used
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"message":"Not Found"}`)
			return
		}
		close(received)
		// GitHub creates the App, taking a second to answer, while the
		// browser gives up; an exchange abandoned with it ends here.
		<-abandoned
		select {
		case <-r.Context().Done():
			return
		case <-time.After(time.Second):
		}
		writeConversion(w)
	}))
	defer github.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := startRegister(t, ctx, github.URL, "--org", "acme")

	leave, gone := context.WithCancel(ctx)
	first, _ := http.NewRequestWithContext(leave, http.MethodGet, "http://"+r.addr+"/callback?state="+r.state+"&code=good-code", nil)
	done := make(chan error, 1)
	go func() {
		resp, err := r.browser.Do(first)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case <-received:
	case <-ctx.Done():
		t.Fatal("the code never reached GitHub")
	}
	gone()
	if err := <-done; err == nil {
		t.Fatal("the abandoned load got an answer")
	}
	close(abandoned)
	select {
	case <-r.exit:
	case <-ctx.Done():
		t.Fatal("register did not finish")
	}
	env, err := os.ReadFile(filepath.Join(r.out, "lastmile.env"))
	if err != nil || !strings.Contains(string(env), "LASTMILE_APP_ID=4242") || calls.Load() != 1 {
		t.Errorf("GitHub answered the exchange with the App's key, asked %d times; settings %q (%v)\nstderr:\n%s",
			calls.Load(), env, err, r.stderr.String())
	}
}

// writeConversion answers a manifest code's conversion as GitHub does: 201
// with App 4242's ID, key and webhook secret.
func writeConversion(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]any{"id": 4242, "slug": "lastmile-acme", "html_url": "https://github.com/apps/lastmile-acme",
		"webhook_secret": "whsec-0123456789abcdef", "pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n"})
}

// --print-manifest prints the manifest to fill GitHub's form by hand: the
// name and webhook given, and no redirect_url (there is no page to go back
// to), without taking the --listen port.
func TestRegisterPrintsTheManifest(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0") // --listen's port, taken
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	out := t.TempDir()
	code, stdout, stderr := run(t, "", "register", "--print-manifest", "--webhook-url", "https://lm.example.com/webhook",
		"--name", "lastmile-acme", "--listen", held.Addr().String(), "--out", out)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(stdout), &m); err != nil {
		t.Fatalf("%v:\n%s", err, stdout)
	}
	if _, ok := m["redirect_url"]; ok {
		t.Errorf("the printed manifest has a redirect_url:\n%s", stdout)
	}
	if m["name"] != "lastmile-acme" || m["hook_attributes"].(map[string]any)["url"] != "https://lm.example.com/webhook" {
		t.Errorf("printed manifest:\n%s", stdout)
	}
	if files, _ := os.ReadDir(out); len(files) != 0 {
		t.Errorf("%d files written to --out", len(files))
	}
}

// A webhook URL whose path is not /webhook is taken (a proxy in front may
// map it there), with a warning: lastmile answers deliveries on POST
// /webhook only, and GitHub's would otherwise all be 404s.
func TestRegisterWarnsOfAWebhookURLNotOnWebhook(t *testing.T) {
	for _, tc := range []struct{ url, path string }{
		{"https://lm.example.com/", `"/"`},
		{"https://lm.example.com", `"/"`},
		{"https://lm.example.com/webhook/", `"/webhook/"`},
		{"https://lm.example.com/lastmile/webhook", `"/lastmile/webhook"`},
	} {
		code, stdout, stderr := run(t, "", "register", "--print-manifest", "--webhook-url", tc.url)
		want := "lastmile register: warning: --webhook-url's path is " + tc.path + ", not /webhook: lastmile answers deliveries on POST /webhook only, so a proxy in front of it must send this path there\n"
		if code != 0 || stderr != want || !strings.Contains(stdout, `"url": "`+tc.url+`"`) {
			t.Errorf("%s: exit %d, stderr %q, stdout %q; want 0, the manifest with the URL, and on stderr %q", tc.url, code, stderr, stdout, want)
		}
	}
	code, _, stderr := run(t, "", "register", "--print-manifest", "--webhook-url", "https://lm.example.com/webhook?from=github")
	if code != 0 || stderr != "" {
		t.Errorf("/webhook with a query: exit %d, stderr %q; want no warning", code, stderr)
	}
}

// An --out where the App's key and settings cannot be written is refused
// before the page is served (GitHub would make an App whose key is lost),
// and nothing is left there.
func TestRegisterChecksTheOutFolderFirst(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a-file")
	if err := os.WriteFile(file, []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	outs := map[string]string{"a file": file, "a folder in a file": filepath.Join(file, "apps")}
	if st, err := os.Stat("/proc/self"); err == nil && st.IsDir() {
		outs["a folder that takes no file"] = "/proc" // even root creates none there
	}
	for what, out := range outs {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var stdout, stderr strings.Builder
		code := Main(ctx, []string{"register", "--webhook-url", "https://lm.example.com/webhook", "--listen", "127.0.0.1:0", "--out", out},
			func(string) string { return "" }, &stdout, &stderr)
		cancel()
		if want := "lastmile register: --out " + out + ": the App's key and settings could not be written there: "; code != 2 ||
			!strings.HasPrefix(stderr.String(), want) || strings.Contains(stdout.String(), "Open http") {
			t.Errorf("--out %s: exit %d, stdout %q, stderr %q; want 2, and on stderr %q", what, code, stdout.String(), stderr.String(), want)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "kept" {
		t.Errorf("the file given as --out: %q, %v", b, err)
	}
	if files, _ := os.ReadDir(dir); len(files) != 1 {
		t.Errorf("%d files left beside the file", len(files))
	}
}

// A folder register made for --out is gone again when it stops before
// GitHub answered.
func TestRegisterRemovesTheOutFolderItMadeWhenStopped(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "new", "apps")
	pr, pw := io.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	exit := make(chan int, 1)
	go func() {
		exit <- Main(ctx, []string{"register", "--webhook-url", "https://lm.example.com/webhook", "--listen", "127.0.0.1:0", "--out", out},
			func(string) string { return "" }, pw, io.Discard)
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	for lines.Scan() && !strings.HasPrefix(lines.Text(), "Waiting for GitHub") {
	}
	go io.Copy(io.Discard, pr)
	if st, err := os.Stat(out); err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Errorf("--out while register waits: %v, %v; want a folder, mode 0700", st, err)
	}
	cancel()
	if code := <-exit; code != 1 {
		t.Errorf("register stopped: exit %d, want 1", code)
	}
	if files, _ := os.ReadDir(dir); len(files) != 0 {
		t.Errorf("%d files left where register made --out", len(files))
	}
}

// An App registered on a GitHub Enterprise Server gets the server's
// redelivery window in lastmile.env (it keeps deliveries 7 days); one on
// github.com keeps the default.
func TestRegisterWritesTheRedeliveryWindowOfGHES(t *testing.T) {
	github := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { writeConversion(w) }))
	defer github.Close()
	for web, want := range map[string]string{"https://ghe.example.com": "LASTMILE_REDELIVERY_WINDOW=168h\n", "https://github.com/": ""} {
		env := registeredEnv(t, github.URL, web)
		if got := regexp.MustCompile(`(?m)^LASTMILE_REDELIVERY_WINDOW=.*\n`).FindString(string(env)); got != want {
			t.Errorf("--github %s: lastmile.env has %q, want %q:\n%s", web, got, want, env)
		}
		if want != "" {
			d, err := time.ParseDuration(strings.TrimSpace(strings.TrimPrefix(want, "LASTMILE_REDELIVERY_WINDOW=")))
			if err != nil || d != 7*24*time.Hour {
				t.Errorf("%q: %v, %v", want, d, err)
			}
		}
	}
}

// register's next steps name lastmile.env and the key by their absolute
// paths, whatever --out was given as: they are pasted in another folder.
func TestRegisterPrintsAbsolutePaths(t *testing.T) {
	github := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { writeConversion(w) }))
	defer github.Close()
	dir := t.TempDir()
	t.Chdir(dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := startRegister(t, ctx, github.URL, "--out", "apps")
	code, page := r.callback(t, "good-code")
	if code != http.StatusOK {
		t.Fatalf("GitHub's answer: %d %s", code, page)
	}
	if !strings.Contains(page, "Its settings are in "+filepath.Join(dir, "apps")+".") {
		t.Errorf("the page does not name --out's absolute path: %s", page)
	}
	if code := <-r.exit; code != 0 {
		t.Fatalf("exit %d: %s", code, r.stderr.String())
	}
	<-r.printedAll
	env := filepath.Join(dir, "apps", "lastmile.env")
	for _, want := range []string{
		"(lastmile-app.pem, lastmile.env) to " + filepath.Join(dir, "apps") + ".\n",
		"  private key:  " + filepath.Join(dir, "apps", "lastmile-app.pem") + "\n",
		"  settings:     " + env + " (",
		"echo 'LASTMILE_DATABASE=/var/lib/lastmile/lastmile.db' >> " + shellWord(env) + "\n",
		"set -a; . " + shellWord(env) + "; set +a; lastmile serve\n",
	} {
		if !strings.Contains(r.printed.String(), want) {
			t.Errorf("register printed no %q:\n%s", want, r.printed.String())
		}
	}
}

// register says who will own the App: an organisation's owner must
// confirm its App; without --org, the App is the user's own.
func TestRegisterSaysWhoOwnsTheApp(t *testing.T) {
	for org, want := range map[string]string{
		"acme": `press "Create GitHub App" (you must be an owner of the organisation acme).`,
		"":     `press "Create GitHub App" (the App will belong to your personal account; for an organisation's, give --org ORG).`,
	} {
		github := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { writeConversion(w) }))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		args := []string{}
		if org != "" {
			args = append(args, "--org", org)
		}
		r := startRegister(t, ctx, github.URL, args...)
		r.callback(t, "good-code")
		<-r.exit
		<-r.printedAll
		if !strings.Contains(r.printed.String(), want) || strings.Contains(r.printed.String(), "owner of your account") {
			t.Errorf("--org %q: register printed, without %q:\n%s", org, want, r.printed.String())
		}
		cancel()
		github.Close()
	}
}

// The README's lastmile.env for an App created by hand sets what register
// writes: its lines, the variables register writes for github.com; its
// commented lines, those it writes besides or instead for a GitHub
// Enterprise Server.
func TestREADMEHandWrittenSettingsAreRegisters(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)```sh\n(\\s*LASTMILE_APP_ID=.*?)```").FindSubmatch(readme)
	if block == nil {
		t.Fatal("no sh block starting with LASTMILE_APP_ID= in the README")
	}
	names := func(text, prefix string) []string {
		var n []string
		for _, m := range regexp.MustCompile(`(?m)^\s*`+regexp.QuoteMeta(prefix)+`(LASTMILE_[A-Z_]+)=`).FindAllStringSubmatch(text, -1) {
			n = append(n, m[1])
		}
		return n
	}
	set, ghesOnly := names(string(block[1]), ""), names(string(block[1]), "# ")
	if m := regexp.MustCompile(`(?m)^\s*LASTMILE_GITHUB_URL=(\S+)$`).FindSubmatch(block[1]); m == nil || string(m[1]) != "https://api.github.com/" {
		t.Errorf("the README's hand-written lastmile.env should set LASTMILE_GITHUB_URL=https://api.github.com/, as register does for github.com:\n%s", block[1])
	}
	github := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { writeConversion(w) }))
	defer github.Close()
	for _, web := range []string{"https://github.com/", "https://ghe.example.com"} {
		env := registeredEnv(t, github.URL, web)
		written := names(string(env), "")
		if web == "https://github.com/" {
			if !slices.Equal(set, written) {
				t.Errorf("the README's hand-written lastmile.env sets %v; register writes %v for github.com", set, written)
			}
			continue
		}
		for _, n := range ghesOnly {
			if !slices.Contains(written, n) {
				t.Errorf("the README's hand-written lastmile.env names %s for GitHub Enterprise Server; register writes %v there", n, written)
			}
		}
		for _, n := range written {
			if !slices.Contains(set, n) && !slices.Contains(ghesOnly, n) {
				t.Errorf("register writes %s for GitHub Enterprise Server; the README's hand-written lastmile.env does not name it", n)
			}
		}
	}
}

// registeredEnv runs register for an App on the GitHub at web (--github),
// GitHub's API answering from api, and returns the lastmile.env it wrote.
func registeredEnv(t *testing.T, api, web string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := startRegister(t, ctx, api, "--github", web)
	if code, page := r.callback(t, "good-code"); code != http.StatusOK {
		t.Fatalf("--github %s: GitHub's answer: %d %s", web, code, page)
	}
	if code := <-r.exit; code != 0 {
		t.Fatalf("--github %s: exit %d: %s", web, code, r.stderr.String())
	}
	env, err := os.ReadFile(filepath.Join(r.out, "lastmile.env"))
	if err != nil {
		t.Fatal(err)
	}
	return env
}
