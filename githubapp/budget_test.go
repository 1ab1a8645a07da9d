package githubapp_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/storage/storagetest"
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

// budgetServer is the webhook on a real HTTP server (the connections of
// these tests are raw ones) with a budget of bodies held at once.
func budgetServer(t *testing.T, budget int64) (*githubapp.Webhook, *httptest.Server) {
	t.Helper()
	db := storagetest.Open(t)
	hook := githubapp.NewWebhook(hookSecret, db, githubapp.Handles, &rejections{}, nil, discardLog())
	hook.MaxBodiesInFlight = budget
	srv := httptest.NewServer(hook)
	t.Cleanup(srv.Close) // before the database closes
	return hook, srv
}

// rawPost opens a connection and sends a delivery's headers, announcing
// length bytes of body, and the first bytes of body given (unsigned).
func rawPost(t *testing.T, srv *httptest.Server, id string, length int64, body []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := fmt.Fprintf(c, "POST /webhook HTTP/1.1\r\nHost: lastmile\r\nContent-Type: application/json\r\n"+
		"X-GitHub-Event: push\r\nX-GitHub-Delivery: %s\r\nContent-Length: %d\r\n\r\n", id, length); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(body); err != nil {
		t.Fatal(err)
	}
	return c
}

// answer reads the answer on c (within 10 s).
func answer(t *testing.T, c net.Conn) int {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A body's announced length (small enough to be read into one buffer of
// its size) is taken from the budget before that buffer is allocated, not
// as its bytes arrive: connections that announce a body and send nothing
// hold no memory the budget does not count, and once it is full the next
// one is refused with 503 before a byte of its body arrived. What they
// held is given back when they go.
func TestWebhookCountsPresizedBodiesBeforeTheyArrive(t *testing.T) {
	const budget, announced = 256 << 10, 1000 // 1000 bytes: a small body, under 1/256 of the budget
	hook, srv := budgetServer(t, budget)
	fit := budget / (announced + 1) // each holds its length and the byte that sees its end
	var conns []net.Conn
	for i := range fit {
		conns = append(conns, rawPost(t, srv, fmt.Sprint("silent-", i), announced, nil))
	}
	waitUntil(t, fmt.Sprintf("%d silent bodies held (%d bytes held)", fit, hook.Held()), 10*time.Second,
		func() bool { return hook.Held() == int64(fit*(announced+1)) })

	if got := answer(t, rawPost(t, srv, "one-more", announced, nil)); got != http.StatusServiceUnavailable {
		t.Errorf("one more silent body past the budget: %d, want 503", got)
	}
	// A body that fits in what is left is read.
	left := budget - fit*(announced+1)
	body := []byte(fmt.Sprintf(`{"zen":"%0*d"}`, left-20, 0))
	in := &intake{srv: srv}
	if resp, msg := in.post(t, delivery{id: "ping-1", event: "ping", body: body}); resp.StatusCode != http.StatusOK {
		t.Errorf("a ping of %d bytes, %d left in the budget: %s %v", len(body), left, resp.Status, msg)
	}
	if got := hook.Held(); got != int64(fit*(announced+1)) {
		t.Errorf("held %d once the ping was stored, want %d", got, fit*(announced+1))
	}
	for _, c := range conns {
		c.Close()
	}
	waitUntil(t, fmt.Sprintf("the silent bodies given back (%d bytes held)", hook.Held()), 10*time.Second,
		func() bool { return hook.Held() == 0 })
}

// Senders of large bodies, who need no secret to send them slowly, cannot
// take the whole budget: past 3/4 of it only small bodies (1/256 of it,
// 16 KB at most) are read, so GitHub's usual deliveries (a push is 7–8 KB) are still
// stored while unsigned junk stalls on the other connections; the junk past
// 3/4 is refused with 503.
func TestWebhookKeepsAReserveForSmallBodies(t *testing.T) {
	const budget = 4 << 20 // a small body: 16 KiB at most; 3 MiB for the large ones
	hook, srv := budgetServer(t, budget)
	junk := make([]byte, 1<<20-100) // read into a buffer of 1 MiB
	for i := range 3 {
		c := rawPost(t, srv, fmt.Sprint("junk-", i), githubapp.MaxPayloadBytes, nil)
		if _, err := c.Write(junk); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, fmt.Sprintf("3 MiB of junk held (%d bytes held)", hook.Held()), 10*time.Second,
		func() bool { return hook.Held() == 3<<20 })

	// One more large body: past 3/4 of the budget, refused as it grows.
	c := rawPost(t, srv, "junk-3", githubapp.MaxPayloadBytes, nil)
	go c.Write(junk) // fails once the connection is closed
	var status atomic.Int64
	go func() {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			status.Store(-1)
			return
		}
		resp.Body.Close()
		status.Store(int64(resp.StatusCode))
	}()
	waitUntil(t, fmt.Sprintf("the fourth junk body answered or held (%d bytes held)", hook.Held()), 10*time.Second,
		func() bool { return status.Load() != 0 || hook.Held() == 4<<20 })

	in := &intake{srv: srv}
	if resp, msg := in.post(t, delivery{id: "push-1", event: "push", body: payload(t, "push.json")}); resp.StatusCode != http.StatusAccepted {
		t.Errorf("GitHub's signed push while unsigned junk holds the budget: %s %v, want 202", resp.Status, msg)
	}
	waitUntil(t, "the fourth junk body answered", 10*time.Second, func() bool { return status.Load() != 0 })
	if got := status.Load(); got != http.StatusServiceUnavailable {
		t.Errorf("a fourth large body past 3/4 of the budget: %d, want 503", got)
	}
}

// Nor do bodies over 16 KB, however far under 1/256 of the budget, take
// the reserve: 256 unsigned bodies of 256 KiB each stall and hold 3/4 of a
// 64 MiB budget at most, and GitHub's signed push is still stored.
func TestWebhookReserveIsForBodiesOf16KBAtMost(t *testing.T) {
	const budget = 64 << 20 // 1/256: 256 KiB; a small body: 16 KiB at most
	hook, srv := budgetServer(t, budget)
	var refused atomic.Int64
	for i := range 256 {
		c := rawPost(t, srv, fmt.Sprint("junk-", i), 256<<10-1, make([]byte, 128<<10+1)) // grows a buffer of 256 KiB
		go func() {
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				resp.Body.Close()
				refused.Add(1)
			}
		}()
	}
	waitUntil(t, fmt.Sprintf("the junk held or refused (%d bytes held, %d refused)", hook.Held(), refused.Load()), 20*time.Second,
		func() bool {
			return hook.Held()+refused.Load()*(256<<10) >= 256*(256<<10) || hook.Held() == budget-budget/4
		})
	if held := hook.Held(); held > budget-budget/4 {
		t.Fatalf("junk of 256 KiB bodies holds %d bytes, past 3/4 of the budget (%d)", held, budget-budget/4)
	}
	in := &intake{srv: srv}
	if resp, msg := in.post(t, delivery{id: "push-1", event: "push", body: payload(t, "push.json")}); resp.StatusCode != http.StatusAccepted {
		t.Errorf("GitHub's signed push while unsigned 256 KiB bodies stall: %s %v, want 202", resp.Status, msg)
	}
}

// A body refused for the budget is answered 503 and its connection let go
// within a second, not held while the server would read the rest of a body
// that never comes.
func TestWebhookBusyRefusalLetsTheConnectionGo(t *testing.T) {
	const budget, announced = 256 << 10, 1000
	hook, srv := budgetServer(t, budget)
	fit := budget / (announced + 1)
	for i := range fit {
		rawPost(t, srv, fmt.Sprint("silent-", i), announced, nil)
	}
	waitUntil(t, "the budget full", 10*time.Second, func() bool { return hook.Held() == int64(fit*(announced+1)) })
	c := rawPost(t, srv, "one-more", announced, nil) // announces 1000 bytes, sends none
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !resp.Close {
		t.Fatalf("one more past the budget: %s, close %v; want 503, the connection closed", resp.Status, resp.Close)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Error("bytes after the 503")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("the connection refused with 503 is still open 10 s later: the server waits for the body it refused")
	}
}
