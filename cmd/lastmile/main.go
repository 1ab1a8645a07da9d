// Command lastmile is the lastmile GitHub App: `lastmile serve` runs it,
// `lastmile demo` shows it working against a simulated GitHub, and the other
// commands read its database. `lastmile --help` lists them.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/lastmile-app/lastmile/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first SIGTERM or Ctrl-C asks for a clean stop (the delivery in
	// hand finished, up to the shutdown timeout); once it came, a second
	// one ends the process at once, as Go does by default: what was
	// answered 2xx is on disk already.
	go func() {
		<-ctx.Done()
		stop()
	}()
	code := app.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
