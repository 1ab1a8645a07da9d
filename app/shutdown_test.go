package app

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// waitUntil polls cond until it holds, failing the test at the deadline.
func waitUntil(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// SIGTERM stops the worker at once (it starts nothing new), even while a
// slow client holds the HTTP server's shutdown: the worker's deliveries
// must not wait for it, nor start after it.
func TestShutdownStopsTheWorkerBeforeSlowClients(t *testing.T) {
	cfg := bareConfig(t, "http://127.0.0.1:1/")
	cfg.ShutdownTimeout = time.Minute
	a, err := New(context.Background(), cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	active := make(chan struct{}, 8)
	a.http.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateActive {
			active <- struct{}{}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitUntil(t, "the worker runs", 10*time.Second, a.worker.Alive)

	// A client sends half a delivery and stops there.
	c, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /webhook HTTP/1.1\r\nHost: lastmile\r\nContent-Length: 1000\r\n\r\n{\"zen\":")
	select {
	case <-active:
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not start reading the request")
	}

	cancel() // SIGTERM
	waitUntil(t, "the worker stops while the slow client holds the server", 10*time.Second, func() bool { return !a.worker.Alive() })
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) while a request was still being read", err)
	default:
	}
	c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return once the client left")
	}
}

// newKey is a fresh App private key: one GitHub (the simulator) does not
// know, or any key where none is checked.
func newKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// bareConfig is a configuration for an App built in the test, on
// 127.0.0.1, with a fresh database, GitHub at github and no redelivery.
func bareConfig(t *testing.T, github string) *Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Database = filepath.Join(t.TempDir(), "lastmile.db")
	cfg.WebhookSecret = Secret("s3cret")
	cfg.AppID = 1
	cfg.Key = newKey(t)
	cfg.GitHubURL = github
	cfg.RedeliveryInterval = 0
	return cfg
}

// A start that cannot bind its addresses (a port in use) fails before it
// touches the database: no new file, no lock file, nothing migrated.
func TestAStartThatCannotListenLeavesNoDatabase(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for name, set := range map[string]func(*Config){
		"webhook address": func(c *Config) { c.Listen = taken.Addr().String() },
		"admin address":   func(c *Config) { c.AdminListen = taken.Addr().String() },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := bareConfig(t, "http://127.0.0.1:1/")
			set(cfg)
			if _, err = New(context.Background(), cfg, Options{Logger: slog.New(slog.DiscardHandler)}); err == nil {
				t.Fatal("New succeeded on an address in use")
			}
			if !strings.Contains(err.Error(), "listen on "+taken.Addr().String()) {
				t.Errorf("error %q should name the address", err)
			}
			left, err := os.ReadDir(filepath.Dir(cfg.Database))
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range left {
				t.Errorf("the failed start left %s", f.Name())
			}
		})
	}
}
