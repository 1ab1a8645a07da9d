package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

// Sandbox is lastmile running against the GitHub simulator, in one process:
// the real service, a real SQLite file and a simulated GitHub that sends
// real signed webhooks. `lastmile demo` and the end-to-end tests use it.
type Sandbox struct {
	Sim    *simulator.Simulator
	App    *App
	Config *Config

	cancel context.CancelFunc
	done   chan error
}

// SandboxOptions configure a Sandbox.
type SandboxOptions struct {
	Dir    string // where the database goes (required)
	Logger *slog.Logger
	// Configure adjusts lastmile's configuration before it starts.
	Configure func(*Config)
	// WrapGitHub, if set, wraps the simulator's REST API handler
	// (simulator.Options.Wrap): the tests check all of lastmile's traffic
	// with GitHub against GitHub's description with it.
	WrapGitHub func(http.Handler) http.Handler
}

// NewSandbox starts the simulator and lastmile, wired to each other over
// 127.0.0.1.
func NewSandbox(ctx context.Context, opts SandboxOptions) (*Sandbox, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	// The App is installed with the permissions its manifest asks for, so
	// that lastmile runs with no more than it would get on GitHub.
	sim := simulator.New(simulator.Options{AppID: 1, WebhookSecret: hex.EncodeToString(secret), Logger: log.With("component", "simulator"),
		Permissions: maps.Clone(githubapp.Permissions), Wrap: opts.WrapGitHub})
	apiURL, err := sim.Start("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	key, err := ParsePrivateKey(sim.AppPrivateKeyPEM())
	if err != nil {
		sim.Close()
		return nil, err
	}
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Database = filepath.Join(opts.Dir, "lastmile.db")
	cfg.WebhookSecret = Secret(sim.WebhookSecret())
	cfg.AppID = sim.AppID()
	cfg.Key = key
	cfg.GitHubURL = apiURL
	cfg.RedeliveryInterval = 0
	if opts.Configure != nil {
		opts.Configure(cfg)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		sim.Close()
		return nil, err
	}
	// Retries come quickly here: the simulator answers at once.
	backoff := func(attempt int) time.Duration { return min(50*time.Millisecond<<min(attempt, 6), 2*time.Second) }
	a, err := New(ctx, cfg, Options{Logger: log, Listener: ln, Backoff: backoff})
	if err != nil {
		ln.Close()
		sim.Close()
		return nil, err
	}
	sim.SetWebhookURL("http://" + a.Addr() + "/webhook")
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	sb := &Sandbox{Sim: sim, App: a, Config: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { sb.done <- a.Run(runCtx) }()
	// Return once the worker runs, so that lastmile is ready (/readyz)
	// when the caller gets it.
	select {
	case <-a.worker.Started():
	case err := <-sb.done:
		sb.done <- err // for Close
	}
	return sb, nil
}

// URL is lastmile's base URL.
func (s *Sandbox) URL() string { return "http://" + s.App.Addr() }

// Close stops lastmile (gracefully) and the simulator.
func (s *Sandbox) Close() error {
	s.cancel()
	var err error
	select {
	case err = <-s.done:
	case <-time.After(time.Minute):
		err = fmt.Errorf("lastmile did not stop within a minute")
	}
	if cerr := s.Sim.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}
