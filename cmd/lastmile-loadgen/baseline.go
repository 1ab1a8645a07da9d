package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/lastmile-app/lastmile/githubapp"
)

// secretEnv passes the webhook secret to child processes (not argv: ps
// shows argv).
const secretEnv = "LOADGEN_WEBHOOK_SECRET"

// baselineHandler is the ceiling for lastmile's stack: the same HTTP stack
// (net/http behind echo v4 with the Recover middleware), the same body cap
// and the same HMAC check as githubapp.Webhook, then 202 — no JSON parsing,
// no logging, no storage.
func baselineHandler(secret []byte) http.Handler {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Use(middleware.Recover())
	e.POST("/webhook", echo.WrapHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > githubapp.MaxPayloadBytes {
			reply(w, http.StatusRequestEntityTooLarge, "payload larger than 25 MB")
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, githubapp.MaxPayloadBytes))
		if err != nil {
			reply(w, http.StatusBadRequest, "could not read the body")
			return
		}
		if err := githubapp.VerifySignature(secret, r.Header.Get("X-Hub-Signature-256"), body); err != nil {
			reply(w, http.StatusUnauthorized, err.Error())
			return
		}
		if r.Header.Get("X-GitHub-Delivery") == "" || r.Header.Get("X-GitHub-Event") == "" {
			reply(w, http.StatusBadRequest, "missing X-GitHub-Delivery or X-GitHub-Event")
			return
		}
		reply(w, http.StatusAccepted, "queued")
	})))
	e.GET("/healthz", func(c echo.Context) error { return c.String(http.StatusOK, "ok\n") })
	return e
}

// reply answers as githubapp's writeJSON does.
func reply(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

// newServer returns an http.Server configured as lastmile's (app.New).
func newServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(slog.NewTextHandler(os.Stderr, nil), slog.LevelWarn),
	}
}

// serveBaseline is `lastmile-loadgen baseline`: it serves until the
// lifetime ends, a signal arrives, or (with watchStdin) its parent goes away.
func serveBaseline(ctx context.Context, listen string, secret []byte, lifetime time.Duration, watchStdin bool) error {
	if len(secret) == 0 {
		return errors.New("no webhook secret: set " + secretEnv + " or -secret")
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := newServer(baselineHandler(secret))
	ctx, cancel := context.WithTimeout(ctx, lifetime)
	defer cancel()
	if watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			cancel()
		}()
	}
	fmt.Printf("baseline listening on http://%s/webhook (pid %d)\n", ln.Addr(), os.Getpid())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	return srv.Shutdown(sctx)
}

// child is a server process started by the load generator.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string // host:port
	done  chan error
}

// startBaselineChild runs this program's baseline mode as a child process,
// so that it has its own CPU and memory as lastmile does.
func startBaselineChild(secret []byte, lifetime time.Duration) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "baseline", "-listen", "127.0.0.1:0", "-lifetime", lifetime.String(), "-parent")
	cmd.Env = append(os.Environ(), secretEnv+"="+string(secret))
	cmd.Stderr = os.Stderr
	dieWithParent(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, stdin: stdin, done: make(chan error, 1)}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		first := true
		for sc.Scan() {
			if first {
				lines <- sc.Text()
				first = false
			}
		}
		if first {
			close(lines)
		}
	}()
	go func() { c.done <- cmd.Wait() }()
	select {
	case line, ok := <-lines:
		if !ok {
			return nil, errors.New("baseline server exited before listening")
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[3], "http://") {
			c.kill()
			return nil, fmt.Errorf("baseline server said %q", line)
		}
		c.addr = strings.TrimSuffix(strings.TrimPrefix(f[3], "http://"), "/webhook")
	case <-time.After(30 * time.Second):
		c.kill()
		return nil, errors.New("baseline server did not start within 30s")
	}
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop asks the child to end (stdin closed, then SIGTERM) and waits a while.
func (c *child) stop() {
	if c.stdin != nil {
		c.stdin.Close()
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.kill()
	}
}

func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
	}
}
