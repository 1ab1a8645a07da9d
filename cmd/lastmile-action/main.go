// Command lastmile-action is the entry point of the lastmile GitHub Action
// (action/action.yml): it runs action.Run with the environment the runner
// gives the step, and fails the step when Run fails.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/lastmile-app/lastmile/action"
)

func main() {
	// The token (INPUT_TOKEN) is not for the deploy command: best effort.
	_ = hideEnvironment()
	// A cancelled job gets SIGINT, then SIGTERM 7.5 s later: both end ctx,
	// and both stay caught, so the Action can still report the error.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	_, err := action.Run(ctx, action.Env{})
	stop()
	if err != nil {
		// Run has written err to the job log as an ::error:: command.
		os.Exit(1)
	}
}
