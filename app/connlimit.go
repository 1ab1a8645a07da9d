package app

import (
	"net"
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

// maxHeaderBytes bounds a request's headers (net/http's default is 1 MiB):
// GitHub sends a few KB of them.
const maxHeaderBytes = 64 << 10

// connLimit is a listener that holds at most a given number of connections
// open at once: past it, Accept waits until one closes, and the next
// connections wait in the kernel's backlog, not served.
type connLimit struct {
	net.Listener
	slots     chan struct{}
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

func newConnLimit(l net.Listener, max int) *connLimit {
	return &connLimit{Listener: l, slots: make(chan struct{}, max), closed: make(chan struct{})}
}

func (l *connLimit) Accept() (net.Conn, error) {
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
	return &limitedConn{Conn: c, l: l}, nil
}

func (l *connLimit) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// limitedConn gives its slot back when it is closed (once).
type limitedConn struct {
	net.Conn
	l    *connLimit
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { <-c.l.slots })
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
