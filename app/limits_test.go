package app

import (
	"bufio"
	"context"
	"errors"
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

// busyConn is a connection busy with a request: a body announced, not
// sent yet.
func busyConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c := dial(t, addr)
	if _, err := fmt.Fprintf(c, "POST /webhook HTTP/1.1\r\nHost: lastmile\r\nX-GitHub-Event: ping\r\nX-GitHub-Delivery: d\r\nContent-Length: 100\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return c
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
	a := runApp(t, func(a *App) { a.conns = newConnLimit(a.listener, 2, 0) })
	// Two connections busy with a request each (a body announced, not sent
	// yet): the server accepts no third.
	c1, _ := busyConn(t, a.Addr()), busyConn(t, a.Addr())
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
	a := runApp(t, func(a *App) { a.conns = newConnLimit(a.listener, 2, 0) })
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

// One client holds at most its share of the webhook's connections: past
// it, its new ones are closed at once, and the other clients' are served;
// once one of its connections closes, it may open another.
func TestConnectionsPerClientAreCapped(t *testing.T) {
	refused := make(chan string, 1)
	a := runApp(t, func(a *App) {
		a.conns = newConnLimit(a.listener, 8, 2)
		a.conns.refused = func(client string) {
			select {
			case refused <- client:
			default: // the first is enough
			}
		}
	})
	c1, _ := busyConn(t, a.Addr()), busyConn(t, a.Addr())
	c3 := dial(t, a.Addr())
	// Closed at once: well before the server's ReadHeaderTimeout (10 s)
	// would close a connection it had taken.
	c3.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c3.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("a third connection of the client: read %d bytes, %v; want it closed", n, err)
	}
	select { // reported just after it was closed
	case client := <-refused:
		if client != "127.0.0.1" {
			t.Errorf("refused client %q, want 127.0.0.1", client)
		}
	case <-time.After(10 * time.Second):
		t.Error("the connection closed over the cap was not reported")
	}
	c1.Close()
	// The slot is given back once the server saw c1 close: until then a
	// new connection may still be over the cap.
	waitUntil(t, "the client may open a connection again once one closed", 10*time.Second, func() bool {
		c, err := net.Dial("tcp", a.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: lastmile\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A client is an IPv4 address, or an IPv6 address's /64.
func TestClientOfConnection(t *testing.T) {
	tcp := func(s string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(s), Port: 443} }
	for _, tc := range []struct {
		a, b net.Addr
		same bool
	}{
		{tcp("192.0.2.1"), tcp("192.0.2.1"), true},
		{tcp("192.0.2.1"), tcp("192.0.2.2"), false},
		{tcp("192.0.2.1"), tcp("::ffff:192.0.2.1"), true},
		{tcp("2001:db8:1:2::1"), tcp("2001:db8:1:2:ffff::9"), true},
		{tcp("2001:db8:1:2::1"), tcp("2001:db8:1:3::1"), false},
	} {
		if got := clientOf(tc.a) == clientOf(tc.b); got != tc.same {
			t.Errorf("%v and %v: the same client %v (%q, %q), want %v", tc.a, tc.b, got, clientOf(tc.a), clientOf(tc.b), tc.same)
		}
		if clientOf(tc.a) == "" {
			t.Errorf("%v: no client", tc.a)
		}
	}
	if got := clientOf(&net.UnixAddr{Name: "/run/lastmile.sock", Net: "unix"}); got != "" {
		t.Errorf("a unix socket's client %q, want none (no cap)", got)
	}
}

// The connections closed over a client's cap are logged at most once a
// minute, counting those closed since the line before.
func TestConnectionsRefusedLogIsBounded(t *testing.T) {
	var buf strings.Builder
	now := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	r := &connsRefusedLog{log: slog.New(slog.NewJSONHandler(&buf, nil)), now: func() time.Time { return now }, limit: 1024}
	for range 5 {
		r.refused("192.0.2.1")
		now = now.Add(10 * time.Second)
	}
	now = now.Add(15 * time.Second) // 65 s after the first
	r.refused("192.0.2.7")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), buf.String())
	}
	for i, want := range []string{`"client":"192.0.2.1"`, `"client":"192.0.2.7"`} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d %s, want %s", i+1, lines[i], want)
		}
	}
	if !strings.Contains(lines[0], `"closed":1`) || !strings.Contains(lines[1], `"closed":5`) {
		t.Errorf("counts: want 1 then 5 (the four not logged and the last):\n%s", buf.String())
	}
}

// pipeListener accepts n in-memory connections from one address, then
// reports itself closed.
type pipeListener struct {
	n    int
	addr net.Addr
}

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

func (l *pipeListener) Accept() (net.Conn, error) {
	if l.n == 0 {
		return nil, net.ErrClosed
	}
	l.n--
	c, other := net.Pipe()
	other.Close()
	return addrConn{Conn: c, remote: l.addr}, nil
}
func (l *pipeListener) Close() error   { return nil }
func (l *pipeListener) Addr() net.Addr { return l.addr }

// A client at its cap trying again and again never has the server let
// every client's idle connections go (that walks them all); a connection
// of its own opened a moment ago is not idle yet, and stays.
func TestClientAtItsCapLetsNoOtherConnectionsGo(t *testing.T) {
	addr := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 443}
	l := newConnLimit(&pipeListener{n: 100, addr: addr}, 200, 1)
	fulls, refused := 0, 0
	l.full = func() { fulls++ }
	l.refused = func(string) { refused++ }
	held, err := l.Accept() // the client's one connection, kept
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) { // the 99 others are over the cap
		t.Fatalf("Accept: %v, want the listener's end", err)
	}
	if refused != 99 || fulls != 0 {
		t.Errorf("%d connections refused, every idle connection let go %d times; want 99 and never", refused, fulls)
	}
	if n := len(l.byClient["192.0.2.1"]); n != 1 {
		t.Errorf("the client holds %d connections, want its one, new, kept", n)
	}
}

// A client at its cap has its own idle connections let go, for its next
// one; another client's idle connection is left alone.
func TestClientAtItsCapLetsItsOwnIdleConnectionsGo(t *testing.T) {
	refused := make(chan string, 16)
	a := runApp(t, func(a *App) {
		a.conns = newConnLimit(a.listener, 8, 2)
		a.conns.refused = func(client string) { refused <- client }
	})
	idleOf := func(client string) int {
		a.conns.mu.Lock()
		defer a.conns.mu.Unlock()
		n := 0
		for c := range a.conns.byClient[client] {
			if c.state == http.StateIdle {
				n++
			}
		}
		return n
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	other, err := d.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if got := getHealthz(t, other, 0); got != http.StatusOK {
		t.Fatalf("127.0.0.2: GET /healthz: %d", got)
	}
	own := dial(t, a.Addr())
	if got := getHealthz(t, own, 0); got != http.StatusOK {
		t.Fatalf("127.0.0.1: GET /healthz: %d", got)
	}
	waitUntil(t, "both kept-alive connections idle", 10*time.Second, func() bool { return idleOf("127.0.0.2") == 1 && idleOf("127.0.0.1") == 1 })
	busyConn(t, a.Addr()) // 127.0.0.1's second: at its cap
	dial(t, a.Addr())     // its third, closed at once
	if got := <-refused; got != "127.0.0.1" {
		t.Fatalf("refused %q, want 127.0.0.1", got)
	}
	// Let go before the refusal was reported.
	own.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := own.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("127.0.0.1's idle connection: read %d bytes, %v; want it closed", n, err)
	}
	if got := getHealthz(t, other, 0); got != http.StatusOK {
		t.Errorf("127.0.0.2's idle connection, kept alive, after 127.0.0.1 reached its cap: %d, want 200", got)
	}
	if got := getHealthz(t, dial(t, a.Addr()), 0); got != http.StatusOK {
		t.Errorf("127.0.0.1's next connection, its idle one let go: %d, want 200", got)
	}
}
