package app

import (
	"net"
	"sync"
	"sync/atomic"
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
}

func newConnLimit(l net.Listener, max int) *connLimit {
	return &connLimit{Listener: l, slots: make(chan struct{}, max), closed: make(chan struct{})}
}

func (l *connLimit) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	default:
		l.waiting.Store(true)
		select {
		case l.slots <- struct{}{}:
			l.waiting.Store(false)
		case <-l.closed:
			l.waiting.Store(false)
			return nil, net.ErrClosed
		}
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

// CloseWrite keeps net/http's closing of a connection after an error (it
// shuts the writing side first, so that the client reads the answer).
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
