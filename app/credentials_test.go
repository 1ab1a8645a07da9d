package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/githubapp/simulator/oasvalidate"
	"github.com/lastmile-app/lastmile/pipeline"
)

// loggedSandbox is sandbox with lastmile's log kept in logs, which tells
// when a line containing want arrives.
func loggedSandbox(t *testing.T, configure func(*Config), want string) (*Sandbox, *logLines) {
	t.Helper()
	logs := newLogLines(want)
	sb, err := NewSandbox(context.Background(), SandboxOptions{Dir: t.TempDir(), Logger: logs.logger(), Configure: configure, WrapGitHub: oasvalidate.Wrap(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sb.Close(); err != nil {
			t.Errorf("close sandbox: %v", err)
		}
	})
	return sb, logs
}

// awaitLog waits until logs has had the line it waits for.
func awaitLog(t *testing.T, logs *logLines, what string) {
	t.Helper()
	select {
	case <-logs.seen:
	case <-time.After(30 * time.Second):
		t.Fatalf("no %s in the log after 30 s:\n%s", what, logs)
	}
}

// onlyDelivery returns the one delivery of the sandbox's inbox.
func onlyDelivery(t *testing.T, sb *Sandbox) *pipeline.Delivery {
	t.Helper()
	list, err := sb.App.DB().ListDeliveries(context.Background(), storageFilterAll())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("%d deliveries, want 1: %+v", len(list), list)
	}
	return list[0]
}

// detailRow returns the row of delivery id in `lastmile deliveries` output.
func detailRow(stdout, id string) string {
	for _, l := range strings.Split(stdout, "\n") {
		if strings.Contains(l, id) {
			return strings.TrimRight(l, " ")
		}
	}
	return ""
}

// With a wrong private key every delivery fails to get an installation
// token: `lastmile deliveries --state pending` ends its DETAIL with
// GitHub's answer, the cause, which a cut in the middle keeps.
func TestWrongPrivateKeyShowsGitHubsAnswer(t *testing.T) {
	key := newKey(t)
	sb, logs := loggedSandbox(t, func(c *Config) {
		c.Key = key
		c.MaxAttempts = 100 // pending, not dead, while the test looks
	}, `msg="delivery failed; will retry"`)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	awaitLog(t, logs, "failed delivery") // logged once the failure is recorded
	failed := onlyDelivery(t, sb)
	cause := "installation token for installation " + strconv.FormatInt(failed.InstallationID, 10) +
		": GitHub answered 401 Unauthorized: A JSON web token could not be decoded"
	if !strings.HasSuffix(failed.LastError, cause) || !strings.Contains(failed.LastError, "read .github/lastmile.yml at "+push.After[:7]) {
		t.Errorf("last error %q, want the configuration read, ending with %q", failed.LastError, cause)
	}
	code, stdout, stderr := run(t, sb.Config.Database, "deliveries", "--state", "pending")
	if code != 0 {
		t.Fatalf("deliveries: exit %d, %s", code, stderr)
	}
	t.Logf("lastmile deliveries --state pending:\n%s", stdout)
	// The DETAIL's last 66 characters: most of GitHub's answer.
	if row := detailRow(stdout, failed.ID); !strings.HasSuffix(row, "answered 401 Unauthorized: A JSON web token could not be decoded") {
		t.Errorf("deliveries --state pending shows\n%s\nwant the row of %s to end with GitHub's answer", stdout, failed.ID)
	}
}

// logLines is a log's text, kept for a test, which tells when a line with
// a given text arrives.
type logLines struct {
	mu   sync.Mutex
	text strings.Builder
	want string        // "" once seen
	seen chan struct{} // closed when a line contains want
}

func newLogLines(want string) *logLines { return &logLines{want: want, seen: make(chan struct{})} }

// logger is a text logger writing to l.
func (l *logLines) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// Write takes one record's line (slog's handlers write each at once).
func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.text.Write(p)
	if l.want != "" && bytes.Contains(p, []byte(l.want)) {
		l.want = ""
		close(l.seen)
	}
	return len(p), nil
}

// find returns the first line that contains every part.
func (l *logLines) find(parts ...string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
next:
	for _, line := range strings.Split(l.text.String(), "\n") {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue next
			}
		}
		return line
	}
	return ""
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.text.String()
}

// The start-up check of the App's credentials (GET /app with its JWT)
// logs what GitHub answered: accepted, refused with the likely cause, or
// not asked at all.
func TestCheckCredentials(t *testing.T) {
	sim := simulator.New(simulator.Options{AppID: 7, Wrap: oasvalidate.Wrap(t)})
	t.Cleanup(func() { sim.Close() })
	apiURL, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sim.CreateInstallation("acme", "Organization")
	key, err := ParsePrivateKey(sim.AppPrivateKeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	clockOff := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"message":"'Issued at' claim ('iat') must be an Integer representing a time in the past","documentation_url":"https://docs.github.com/rest"}`))
	}))
	t.Cleanup(clockOff.Close)
	// A GitHub Enterprise Server's web address, not its API root (/api/v3/).
	webPages := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte("<!DOCTYPE html><html><title>Page not found · GitHub</title></html>"))
	}))
	t.Cleanup(webPages.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := "http://" + ln.Addr().String() + "/"
	ln.Close() // nothing listens there any more: connection refused

	for name, tc := range map[string]struct {
		url   string
		appID int64
		key   *rsa.PrivateKey
		want  []string // parts of one log line
	}{
		"accepted": {apiURL, 7, key, []string{"level=INFO", `msg="GitHub accepts the App's credentials"`, "app_id=7", "app=lastmile", "installations=1"}},
		"wrong private key": {apiURL, 7, otherKey, []string{"level=ERROR",
			`msg="GitHub refuses the App's credentials: LASTMILE_APP_ID or the private key (LASTMILE_PRIVATE_KEY_FILE or LASTMILE_PRIVATE_KEY) is not the App's; every delivery will fail until it is fixed"`,
			"app_id=7", `status="401 Unauthorized"`, `message="A JSON web token could not be decoded"`}},
		"wrong App ID": {apiURL, 8, key, []string{"level=ERROR", "LASTMILE_APP_ID or the private key", "app_id=8", `message="Integration not found"`}},
		"clock off":    {clockOff.URL + "/", 7, key, []string{"level=ERROR", "this machine's clock is likely off", `message="'Issued at' claim`}},
		"not the API root": {webPages.URL + "/", 7, key, []string{"level=ERROR", "GitHub answered 404 Not Found for GET /app",
			"is LASTMILE_GITHUB_URL the REST API root, such as https://HOST/api/v3/ for GitHub Enterprise Server?",
			"github=" + webPages.URL + " ", `status="404 Not Found"`}},
		"unreachable": {unreachable, 7, key, []string{"level=WARN", `msg="could not check the App's credentials with GitHub; going on"`,
			"github=" + strings.TrimSuffix(unreachable, "/"), "connection refused"}},
	} {
		t.Run(name, func(t *testing.T) {
			noWait := func(context.Context, time.Duration) error { return nil } // retries without the backoff
			clients, err := githubapp.NewClients(tc.url, tc.appID, tc.key, &githubapp.Transport{Sleep: noWait})
			if err != nil {
				t.Fatal(err)
			}
			logs := newLogLines("")
			checkCredentials(context.Background(), clients, tc.appID, logs.logger())
			if logs.find(tc.want...) == "" {
				t.Errorf("log:\n%s\nwant a line with %q", logs, tc.want)
			}
		})
	}
}

// Started with a wrong private key, lastmile says so in its log soon after
// it starts, and serves on: it is ready, and takes deliveries.
func TestStartWithAWrongKeyLogsTheCause(t *testing.T) {
	key := newKey(t)
	sb, logs := loggedSandbox(t, func(c *Config) { c.Key = key }, "GitHub refuses the App's credentials")
	awaitLog(t, logs, "word of the refused credentials")
	line := logs.find("level=ERROR", "GitHub refuses the App's credentials", `message="A JSON web token could not be decoded"`)
	if line == "" {
		t.Fatalf("log:\n%s", logs)
	}
	t.Logf("the log line: %s", line)
	resp, err := http.Get(sb.URL() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz: %d, want 200: bad credentials do not make lastmile unready", resp.StatusCode)
	}
}
