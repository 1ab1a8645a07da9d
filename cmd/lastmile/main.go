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
	code := app.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
