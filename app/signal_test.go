package app

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

// stuckServe starts `lastmile serve` against a GitHub that never answers
// and hands it a push: the delivery in hand waits on GitHub (its
// installation token) until the shutdown timeout.
func stuckServe(t *testing.T, shutdownTimeout string) *proc {
	t.Helper()
	called := make(chan string, 16)
	gone := make(chan struct{})
	github := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case called <- r.Method + " " + r.URL.Path:
		default:
		}
		select { // never answers while the test runs
		case <-r.Context().Done():
		case <-gone:
		}
	}))
	t.Cleanup(github.Close)
	t.Cleanup(func() { close(gone) })
	dir := t.TempDir()
	key := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(newKey(t))})
	const secret = "s3cret-s3cret"
	p := startServe(t, []string{
		"LASTMILE_DATABASE=" + dir + "/lastmile.db", "LASTMILE_WEBHOOK_SECRET=" + secret, "LASTMILE_APP_ID=7",
		"LASTMILE_PRIVATE_KEY=" + string(key), "LASTMILE_GITHUB_URL=" + github.URL + "/",
		"LASTMILE_REDELIVERY_INTERVAL=0", "LASTMILE_SHUTDOWN_TIMEOUT=" + shutdownTimeout,
	})
	push := makePush(t, 42, 9, "acme/shop", strings.Repeat("0", 40), simulator.PushResult{After: strings.Repeat("a", 40), Commits: []string{strings.Repeat("a", 40)}})
	req, err := http.NewRequest(http.MethodPost, "http://"+p.addr+"/webhook", bytes.NewReader(push.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", push.id)
	req.Header.Set("X-Hub-Signature-256", githubapp.SignatureHeader([]byte(secret), push.body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("push: %s", resp.Status)
	}
	deadline := time.After(60 * time.Second)
	for inHand := false; !inHand; {
		select {
		case call := <-called:
			inHand = call == "POST /app/installations/9/access_tokens"
		case <-deadline:
			t.Fatalf("the worker did not call GitHub\n%s", p.logs)
		}
	}
	return p
}

// SIGTERM asks `lastmile serve` for a clean stop: it waits for the delivery
// in hand up to the shutdown timeout. Another SIGTERM, a second or more
// after the first, ends it at once.
func TestASecondSIGTERMStopsAtOnce(t *testing.T) {
	p := stuckServe(t, "5m")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "lastmile stopping", 30*time.Second, func() bool { return strings.Contains(p.logs.String(), "lastmile stopping") })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Fatal(err)
		}
		select {
		case err := <-p.done:
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
				t.Errorf("exit after another SIGTERM: %v; want ended by the signal", err)
			}
			return
		case <-time.After(200 * time.Millisecond): // the next SIGTERM
		}
		if time.Now().After(deadline) {
			t.Fatalf("still running 30 s into SIGTERMs sent after the first (the shutdown timeout is 5 minutes)\n%s", p.logs)
		}
	}
}

// A Ctrl-C that a launcher passes on as a SIGTERM while the terminal sends
// the SIGINT too: two signals at once are one request for a clean stop,
// which ends when the shutdown timeout does, with exit code 0.
func TestTwoSignalsAtOnceAreOneCleanStop(t *testing.T) {
	p := stuckServe(t, "2s")
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	// The SIGTERM comes as lastmile starts stopping (well within the
	// second).
	waitUntil(t, "lastmile stopping", 30*time.Second, func() bool { return strings.Contains(p.logs.String(), "lastmile stopping") })
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("exit after SIGINT and SIGTERM at once: %v; want a clean stop, code 0\n%s", err, p.logs)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("still running a minute after a clean stop with a 2 s shutdown timeout\n%s", p.logs)
	}
}
