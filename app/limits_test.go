package app

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// runApp starts lastmile on a loopback address, with set applied first,
// and stops it at the end of the test.
func runApp(t *testing.T, set func(*App)) *App {
	t.Helper()
	cfg := bareConfig(t, "http://127.0.0.1:1/")
	a, err := New(context.Background(), cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if set != nil {
		set(a)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

// getHealthz sends GET /healthz on c, with a header of pad bytes, and reads the
// answer (within 10 s).
func getHealthz(t *testing.T, c net.Conn, pad int) int {
	t.Helper()
	if _, err := fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: lastmile\r\nX-Pad: %s\r\n\r\n", strings.Repeat("p", pad)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Headers are bounded to 64 KiB (net/http's default is 1 MiB a
// connection): GitHub sends a few KB of them.
func TestHeadersAreBounded(t *testing.T) {
	a := runApp(t, nil)
	if got := getHealthz(t, dial(t, a.Addr()), 16<<10); got != http.StatusOK {
		t.Errorf("16 KiB of headers: %d, want 200", got)
	}
	if got := getHealthz(t, dial(t, a.Addr()), 80<<10); got != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("80 KiB of headers: %d, want 431", got)
	}
}

// The webhook's address holds a bounded number of connections open at
// once: past it, the next one is served only once another closed.
func TestConnectionsAreCapped(t *testing.T) {
	a := runApp(t, func(a *App) { a.conns = newConnLimit(a.listener, 2) })
	// Two connections busy with a request each (a body announced, not sent
	// yet): the server accepts no third.
	busy := func() net.Conn {
		c := dial(t, a.Addr())
		if _, err := fmt.Fprintf(c, "POST /webhook HTTP/1.1\r\nHost: lastmile\r\nX-GitHub-Event: ping\r\nX-GitHub-Delivery: d\r\nContent-Length: 100\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		return c
	}
	c1, _ := busy(), busy()
	c3 := dial(t, a.Addr())
	waitUntil(t, "the server waits for a connection to close before accepting another", 10*time.Second, a.conns.waiting.Load)
	c1.Close()
	if got := getHealthz(t, c3, 0); got != http.StatusOK {
		t.Errorf("the third connection once the first closed: %d, want 200", got)
	}
}

// Connections kept alive with nothing to do do not hold the slots while a
// new one waits: at the cap, the server lets its idle connections go.
func TestIdleConnectionsGiveWayAtTheCap(t *testing.T) {
	a := runApp(t, func(a *App) { a.conns = newConnLimit(a.listener, 2) })
	idle := []net.Conn{dial(t, a.Addr()), dial(t, a.Addr())}
	for _, c := range idle {
		if got := getHealthz(t, c, 0); got != http.StatusOK { // then idle, kept alive
			t.Fatalf("GET /healthz: %d", got)
		}
	}
	if got := getHealthz(t, dial(t, a.Addr()), 0); got != http.StatusOK {
		t.Errorf("a new connection beside two idle ones at the cap: %d, want 200", got)
	}
}
