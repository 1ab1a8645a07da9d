package app

import (
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// maxWebhookConns caps the connections the webhook's address holds open at
// once. GitHub delivers over a few connections at a time, a reverse proxy
// over its pool of them (the load generator uses 16); without a cap every
// client could open connections up to the process's file descriptor limit,
// each with its buffers and, while its headers arrive, up to
// maxHeaderBytes.
const maxWebhookConns = 4096

// maxConnsPerClient caps the connections one client (an IPv4 address, an
// IPv6 /64, the usual allocation of one host or network) holds open at
// once on the webhook's address: without it, one client announcing bodies
// and sending nothing — no secret needed — holds every slot for the
// server's ReadTimeout, again and again, and GitHub's deliveries wait
// behind it until GitHub gives up; with it, no fewer than four clients
// can. GitHub delivers over a few connections at a time, and a reverse
// proxy in front of lastmile (one client to it) over as many as the
// requests it has in flight and the idle ones it keeps (those are let go
// when the client reaches its cap — its own, not other clients' —, as all
// are at the address's): far fewer.
const maxConnsPerClient = maxWebhookConns / 4

// maxHeaderBytes bounds a request's headers (net/http's default is 1 MiB):
// GitHub sends a few KB of them.
const maxHeaderBytes = 64 << 10

// connLimit is a listener that holds at most a given number of connections
// open at once: past it, Accept waits until one closes, and the next
// connections wait in the kernel's backlog, not served.
type connLimit struct {
	net.Listener
	slots     chan struct{}
	perClient int // connections one client holds at most (0: no cap)
	// refused, if set, is called when a client's connection is closed at
	// once, over perClient.
	refused func(client string)
	mu      sync.Mutex
	// byClient are the open connections of each client, with their
	// states (ConnState reports them).
	byClient  map[string]map[*limitedConn]struct{}
	closed    chan struct{}
	closeOnce sync.Once
	waiting   atomic.Bool // Accept waits for a slot
	// full, if set, is called when Accept has to wait for a slot, and
	// every second while it waits: the server then lets its idle
	// connections go (see App.Run), so that connections kept alive with
	// nothing to do do not hold the slots for their IdleTimeout while new
	// ones wait.
	full func()
}

func newConnLimit(l net.Listener, max, perClient int) *connLimit {
	return &connLimit{Listener: l, slots: make(chan struct{}, max), closed: make(chan struct{}),
		perClient: perClient, byClient: map[string]map[*limitedConn]struct{}{}}
}

// Accept returns the next connection within both caps: one from a client
// already at its cap is closed at once (in the kernel's backlog it would
// hold others back), and the next one accepted.
func (l *connLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.accept()
		if err != nil {
			return nil, err
		}
		lc := &limitedConn{Conn: c, l: l, client: clientOf(c.RemoteAddr()), since: time.Now()}
		if l.admit(lc) {
			return lc, nil
		}
		client := lc.client
		c.Close()
		<-l.slots
		// Its idle connections, if any, make room for its next; other
		// clients' are theirs to keep.
		l.letIdleGo(client)
		if l.refused != nil {
			l.refused(client)
		}
	}
}

// admit counts a connection of its client, unless the client holds its
// cap already.
func (l *connLimit) admit(c *limitedConn) bool {
	if l.perClient <= 0 || c.client == "" {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	open := l.byClient[c.client]
	if len(open) >= l.perClient {
		return false
	}
	if open == nil {
		open = map[*limitedConn]struct{}{}
		l.byClient[c.client] = open
	}
	open[c] = struct{}{}
	return true
}

func (l *connLimit) leave(c *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if open := l.byClient[c.client]; open != nil {
		if delete(open, c); len(open) == 0 {
			delete(l.byClient, c.client)
		}
	}
}

// idleAfter is how long a connection may stay silent after it opened
// before it counts as idle, as net/http counts it.
const idleAfter = 5 * time.Second

// letIdleGo closes client's idle connections: kept alive between
// requests, or opened and silent for idleAfter (as net/http's own
// closing of idle connections picks them).
func (l *connLimit) letIdleGo(client string) {
	var idle []*limitedConn
	now := time.Now()
	l.mu.Lock()
	for c := range l.byClient[client] {
		if c.state == http.StateIdle || c.state == http.StateNew && now.Sub(c.since) > idleAfter {
			idle = append(idle, c)
		}
	}
	l.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

// track returns an http.Server's ConnState hook that records each of its
// connections' states for letIdleGo, then calls next (if any).
func (l *connLimit) track(next func(net.Conn, http.ConnState)) func(net.Conn, http.ConnState) {
	return func(c net.Conn, s http.ConnState) {
		if lc, ok := c.(*limitedConn); ok {
			l.mu.Lock()
			lc.state, lc.since = s, time.Now()
			l.mu.Unlock()
		}
		if next != nil {
			next(c, s)
		}
	}
}

// clientOf is the client a connection counts against: its IPv4 address,
// or its IPv6 address's /64; "" (no cap) for other kinds of addresses.
func clientOf(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return ""
	}
	if ip4 := tcp.IP.To4(); ip4 != nil {
		return ip4.String()
	}
	return (&net.IPNet{IP: tcp.IP.Mask(net.CIDRMask(64, 128)), Mask: net.CIDRMask(64, 128)}).String()
}

// accept takes a slot, waiting for one, then the next connection.
func (l *connLimit) accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	default:
		l.waiting.Store(true)
		// While it waits, every second (connections accepted last become
		// idle only after their first request).
		tick := time.NewTicker(time.Second)
		for waiting := true; waiting; {
			if l.full != nil {
				l.full()
			}
			select {
			case l.slots <- struct{}{}:
				waiting = false
			case <-l.closed:
				tick.Stop()
				l.waiting.Store(false)
				return nil, net.ErrClosed
			case <-tick.C:
			}
		}
		tick.Stop()
		l.waiting.Store(false)
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return c, nil
}

func (l *connLimit) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// limitedConn gives its slot, and its client's, back when it is closed
// (once).
type limitedConn struct {
	net.Conn
	l      *connLimit
	client string
	once   sync.Once
	// state, and since when, as the server last reported it (l.mu).
	state http.ConnState
	since time.Time
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.leave(c)
		<-c.l.slots
	})
	return err
}

func (c *limitedConn) CloseWrite() error { return closeWrite(c.Conn) }

// closeWrite shuts the writing side of c, where it has one: a wrapped
// connection keeps net/http's closing of a connection after an answer that
// ends it (the writing side first, so that the client reads the answer).
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// connsRefusedLog is the WARN line of connections closed over their
// client's cap: the first at once, then at most one a minute (a client at
// its cap may try again many times a second), counting those closed since
// the line before.
type connsRefusedLog struct {
	log   *slog.Logger
	now   func() time.Time
	limit int // connections a client holds at most

	mu     sync.Mutex
	last   time.Time // of the last line
	closed int       // connections closed since it
}

func (r *connsRefusedLog) refused(client string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed++
	now := r.now()
	if !r.last.IsZero() && now.Sub(r.last) < time.Minute {
		return
	}
	r.log.Warn("webhook address: a client holds as many connections as one may, its new ones are closed at once (a reverse proxy buffering whole requests in front of lastmile keeps slow clients away)",
		"client", client, "max_connections_per_client", r.limit, "closed", r.closed)
	r.last, r.closed = now, 0
}
