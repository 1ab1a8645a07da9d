package simulator_test

import (
	"errors"
	"io"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

// A connection that has sent no request (a client transport's spare, dialed
// for a request another connection took) does not hold Close: net/http's
// Shutdown would wait 5 s for it, and every demo's Ctrl-C now and then
// with it. It is closed, a request on a kept-alive one is still answered.
func TestCloseDoesNotWaitForSilentConnections(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	u, err := url.Parse(h.api)
	if err != nil {
		t.Fatal(err)
	}
	// One request first, so the server has served and the connection below
	// is known to it (ConnState) before Close.
	if r := h.do("GET", "/meta", "", nil); r.status != 200 && r.status != 404 {
		t.Fatalf("a first request: %d", r.status)
	}
	silent, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	dialed := time.Now()
	if err := h.sim.Close(); err != nil {
		t.Fatal(err)
	}
	// The property is a duration: Close must not have waited out net/http's
	// 5 s for a new connection (it takes milliseconds).
	if waited := time.Since(dialed); waited >= 5*time.Second {
		t.Errorf("Close waited %s for a connection that sent nothing", waited)
	}
	silent.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := silent.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Errorf("the silent connection after Close: %v, want it closed", err)
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}
