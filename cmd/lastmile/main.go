// Command lastmile is the lastmile GitHub App: `lastmile serve` runs it,
// `lastmile demo` shows it working against a simulated GitHub, and the other
// commands read its database. `lastmile --help` lists them.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lastmile-app/lastmile/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first SIGTERM or Ctrl-C asks for a clean stop (the delivery in
	// hand finished, up to the shutdown timeout); a second one, a second or
	// more after it, ends the process at once, as Go does by default: what
	// was answered 2xx is on disk already. (Within that second it is taken
	// for the same request: a launcher that passes its Ctrl-C on to lastmile
	// as a SIGTERM while the terminal sends lastmile the SIGINT too.)
	go func() {
		<-ctx.Done()
		time.Sleep(time.Second)
		stop()
	}()
	code := app.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
