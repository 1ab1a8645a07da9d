package app

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// While New opens the database, /healthz answers 200 and the rest 503; then
// the listener serves the real server, the starting one gone.
func TestServeStartingHandsTheListenerOver(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	base := "http://" + ln.Addr().String()
	client := &http.Client{}
	get := func(method, path string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var logged lockedBuffer
	stop := serveStarting(slog.New(slog.NewTextHandler(&logged, nil)), ln, nil)
	for _, c := range []struct {
		method, path string
		code         int
		body         string
	}{
		{"GET", "/healthz", 200, "ok\n"},
		{"GET", "/readyz", 503, "starting"},
		{"POST", "/webhook", 503, "lastmile is starting"},
		{"GET", "/metrics", 503, "lastmile is starting"},
	} {
		if code, body := get(c.method, c.path); code != c.code || !strings.Contains(body, c.body) {
			t.Errorf("%s %s while starting: %d %q, want %d %q", c.method, c.path, code, body, c.code, c.body)
		}
	}
	// A client that connected and sends nothing (a load balancer's spare
	// connection) does not hold the start: net/http's Shutdown would wait
	// 5 s for it; it is cut.
	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if code, _ := get("GET", "/healthz"); code != 200 { // the silent one accepted by now
		t.Fatalf("healthz: %d", code)
	}
	began := time.Now()
	stop()
	if took := time.Since(began); took >= time.Second {
		t.Errorf("the hand-over took %s with a silent connection open, want it cut, not waited for", took)
	}
	silent.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Error("the silent connection is still open after the start")
	}
	// Nothing logged: the hand-over is no accept error.
	if logged.String() != "" {
		t.Errorf("the hand-over logged:\n%s", logged.String())
	}
	real := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "running\n") })}
	done := make(chan error, 1)
	go func() { done <- real.Serve(ln) }()
	defer func() { real.Close(); <-done }()
	for range 3 {
		if code, body := get("GET", "/readyz"); code != 200 || body != "running\n" {
			t.Fatalf("after the start: %d %q, want the real server's answer", code, body)
		}
	}
}

// While starting, connections that send nothing hold at most
// startingMaxConns file descriptors: past them a new connection is closed
// at once, and once one of them goes, a client is answered again.
func TestServeStartingCapsConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stop := serveStarting(slog.New(slog.NewTextHandler(io.Discard, nil)), ln)
	defer stop()
	silent := make([]net.Conn, startingMaxConns)
	for i := range silent {
		if silent[i], err = net.Dial("tcp", ln.Addr().String()); err != nil {
			t.Fatal(err)
		}
		defer silent[i].Close()
	}
	// Accepted after every silent one (the kernel queues connections in
	// order): closed at once, not held until the server's 10 s
	// ReadHeaderTimeout.
	extra, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := extra.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("connection %d while starting: read %d bytes, %v; want it closed at once", startingMaxConns+1, n, err)
	}
	silent[0].Close()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := client.Get("http://" + ln.Addr().String() + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("healthz: %d", resp.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer once a silent connection went: %v", err)
		}
	}
}

// /metrics names repositories: served on an address other machines reach
// (no LASTMILE_ADMIN_LISTEN, or one on every interface or a public
// address), lastmile says so at start, and what to do.
func TestMetricsExposure(t *testing.T) {
	for _, c := range []struct {
		admin, listen string
		want          string // in the warning; "" for none
	}{
		{"", "[::]:8080", "the webhook's address"},
		{"", "0.0.0.0:8080", "the webhook's address"},
		{"", "10.1.2.3:8080", "the webhook's address"},
		{"", "127.0.0.1:8080", ""},
		{"", "[::1]:8080", ""},
		{"127.0.0.1:9797", "[::]:8080", ""},
		{"localhost:9797", "[::]:8080", ""},
		{"10.1.2.3:9797", "[::]:8080", ""},
		{"[fd00::1]:9797", "[::]:8080", ""},
		{"100.101.102.103:9797", "[::]:8080", ""}, // a Tailscale address
		{":9797", "[::]:8080", "every interface"},
		{"0.0.0.0:9797", "127.0.0.1:8080", "every interface"},
		{"[::]:9797", "[::]:8080", "every interface"},
		{"203.0.113.7:9797", "[::]:8080", "a public address"},
		{"metrics.internal:9797", "[::]:8080", ""}, // a name: lastmile cannot tell
	} {
		for _, api := range []bool{false, true} {
			got := metricsExposure(c.admin, c.listen, api)
			if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
				t.Errorf("admin %q, listen %q: %q, want a warning saying %q", c.admin, c.listen, got, c.want)
			}
			if got != "" && !strings.Contains(got, "LASTMILE_ADMIN_LISTEN") {
				t.Errorf("admin %q, listen %q: %q does not say what to set", c.admin, c.listen, got)
			}
			// The read API is named when it is on (LASTMILE_API_TOKEN set)
			// only: off, it answers nowhere.
			if got != "" && strings.Contains(got, "read API") != api {
				t.Errorf("admin %q, listen %q, API on: %v: %q", c.admin, c.listen, api, got)
			}
		}
	}
	if got, want := metricsExposure("", "[::]:8080", false), "/metrics answers on the webhook's address, reachable from other machines: /metrics names your repositories and environments to anyone who reaches it; set LASTMILE_ADMIN_LISTEN (such as 127.0.0.1:9797) to serve it on an address of its own, or let your proxy pass only /webhook"; got != want {
		t.Errorf("the API off: %q, want %q", got, want)
	}
}
