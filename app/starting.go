package app

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// serveStarting answers on the listeners while New opens the database —
// after an upgrade its migrations may take minutes — so that neither an
// orchestrator's liveness probe (/healthz) restarts lastmile in the middle
// of one, nor a client waits on a connection that nothing reads: /healthz
// answers 200, /readyz and everything else 503 (GitHub's deliveries
// meanwhile are asked for again once lastmile runs). stop hands the
// listeners back, open, for the servers Run starts. A listener whose
// Accept cannot be interrupted (no SetDeadline) is left alone.
func serveStarting(log *slog.Logger, listeners ...net.Listener) (stop func()) {
	var stops []func()
	for _, ln := range listeners {
		dl, ok := ln.(interface{ SetDeadline(time.Time) error })
		if ln == nil || !ok {
			continue
		}
		srv := &http.Server{Handler: http.HandlerFunc(startingAnswer), ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.Serve(keepOpen{ln})
		}()
		stops = append(stops, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			shut := make(chan error, 1)
			go func() { shut <- srv.Shutdown(ctx) }()
			// Serve waits in Accept on a listener Shutdown cannot close:
			// a deadline passed ends the wait, and Serve, the server
			// shutting down, returns (Shutdown waits for it).
			_ = dl.SetDeadline(time.Unix(1, 0))
			if err := <-shut; errors.Is(err, context.DeadlineExceeded) {
				srv.Close() // a client still sending its request: cut
			}
			<-done
			_ = dl.SetDeadline(time.Time{})
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

// keepOpen is a listener whose Close leaves it open, for the next server.
type keepOpen struct{ net.Listener }

func (keepOpen) Close() error { return nil }
