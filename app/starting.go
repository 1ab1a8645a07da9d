package app

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// serveStarting answers on the listeners while New opens the database —
// after an upgrade its migrations may take minutes — so that neither an
// orchestrator's liveness probe (/healthz) restarts lastmile in the middle
// of one, nor a client waits on a connection that nothing reads: /healthz
// answers 200, /readyz and everything else 503 (GitHub's deliveries
// meanwhile are asked for again once lastmile runs). stop hands the
// listeners back, open, for the servers Run starts. A listener whose
// Accept cannot be interrupted (no SetDeadline) is left alone. Each
// listener holds at most startingMaxConns connections at once: past it a
// new one is closed as it comes (the client tries again), not left to
// hold a file descriptor for ReadHeaderTimeout.
func serveStarting(log *slog.Logger, listeners ...net.Listener) (stop func()) {
	var stops []func()
	for _, ln := range listeners {
		dl, ok := ln.(interface{ SetDeadline(time.Time) error })
		if ln == nil || !ok {
			continue
		}
		srv := &http.Server{Handler: http.HandlerFunc(startingAnswer), ReadHeaderTimeout: 10 * time.Second,
			MaxHeaderBytes: maxHeaderBytes, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		kept := &keepOpen{Listener: ln, max: startingMaxConns}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.Serve(kept)
		}()
		stops = append(stops, func() {
			// Serve waits in Accept on a listener it must not close: a
			// deadline passed ends the wait, and Accept then says the
			// listener is closed, so that Serve returns at once.
			kept.stopping.Store(true)
			_ = dl.SetDeadline(time.Unix(1, 0))
			<-done
			_ = dl.SetDeadline(time.Time{})
			// The answers in progress end (they take microseconds); a
			// connection that has sent nothing yet, which net/http would
			// wait 5 s for, is cut.
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if err := srv.Shutdown(ctx); errors.Is(err, context.DeadlineExceeded) {
				srv.Close()
			}
		})
	}
	return func() {
		for _, s := range stops {
			s()
		}
	}
}

func startingAnswer(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Connection", "close")
	if r.URL.Path == "/healthz" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
		return
	}
	w.Header().Set("Retry-After", "30")
	if r.URL.Path == "/readyz" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("starting: opening the database\n"))
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte(`{"message":"lastmile is starting (opening its database): try again later"}` + "\n"))
}

// startingMaxConns caps the connections open at once to each address
// while lastmile starts: every answer then is a few bytes and closes its
// connection, so only clients that connect and send nothing hold one.
const startingMaxConns = 256

// keepOpen is a listener whose Close leaves it open, for the next server,
// whose Accept, once stopping, says it is closed, and which holds at most
// max connections open at once.
type keepOpen struct {
	net.Listener
	stopping atomic.Bool
	max      int64
	open     atomic.Int64
}

func (k *keepOpen) Accept() (net.Conn, error) {
	for {
		c, err := k.Listener.Accept()
		if k.stopping.Load() {
			if c != nil {
				c.Close() // accepted as the deadline came: the next server's
			}
			return nil, net.ErrClosed
		}
		if err != nil {
			return c, err
		}
		if k.open.Add(1) > k.max {
			k.open.Add(-1)
			c.Close()
			continue
		}
		return &countedConn{Conn: c, open: &k.open}, nil
	}
}

// countedConn takes itself off the count of open connections when it is
// closed (once).
type countedConn struct {
	net.Conn
	open *atomic.Int64
	once sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.open.Add(-1) })
	return err
}

func (c *countedConn) CloseWrite() error { return closeWrite(c.Conn) }

func (*keepOpen) Close() error { return nil }
