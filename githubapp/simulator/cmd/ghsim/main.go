// Command ghsim runs the GitHub simulator as a process, for trying lastmile
// by hand: it serves the REST API on a loopback address, writes the App's
// private key to a file, creates an installation with repositories, an
// `on: deployment` workflow and environments, and delivers webhooks to the
// given URL until it is interrupted.
//
//	ghsim -webhook-url http://127.0.0.1:8080/webhook -webhook-secret s3cret \
//	      -key-out /tmp/app.pem -repo acme/shop -environments test,staging,production
//
// Then start lastmile with LASTMILE_GITHUB_URL set to the printed API URL,
// LASTMILE_APP_ID, LASTMILE_WEBHOOK_SECRET and LASTMILE_PRIVATE_KEY_FILE.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) { // -h: the usage is printed
			return
		}
		fmt.Fprintln(os.Stderr, "ghsim:", err)
		os.Exit(1)
	}
}

// run starts the simulator as the flags say, reports on out, calls ready
// (if not nil) once it serves, and stops when ctx ends.
func run(ctx context.Context, args []string, out io.Writer, ready func(*simulator.Simulator)) error {
	fs := flag.NewFlagSet("ghsim", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address of the REST API")
	appID := fs.Int64("app-id", 1, "the App's ID")
	hookURL := fs.String("webhook-url", "", "where webhooks are delivered")
	secret := fs.String("webhook-secret", "", "the webhook secret")
	keyOut := fs.String("key-out", "", "file to write the App's private key (PEM) to")
	owner := fs.String("owner", "acme", "organization the App is installed on")
	repos := fs.String("repo", "acme/shop", "comma-separated repositories to create")
	envs := fs.String("environments", "test,staging,production", "comma-separated environments of each repository")
	reviewer := fs.String("approve-as", "", "if set, production needs this reviewer, who approves at once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *secret == "" {
		return errors.New("-webhook-secret is required")
	}
	sim := simulator.New(simulator.Options{AppID: *appID, WebhookSecret: *secret, WebhookURL: *hookURL})
	defer sim.Close()
	api, err := sim.Start(*listen)
	if err != nil {
		return err
	}
	if *keyOut != "" {
		if err := os.WriteFile(*keyOut, sim.AppPrivateKeyPEM(), 0o600); err != nil {
			return err
		}
	}
	inst := sim.CreateInstallation(*owner, "Organization")
	for _, repo := range strings.Split(*repos, ",") {
		repo = strings.TrimSpace(repo)
		if repo == "" {
			continue
		}
		sim.CreateRepo(inst, repo, simulator.RepoOptions{})
		sim.SetWorkflow(repo, simulator.WorkflowOptions{})
		for _, env := range strings.Split(*envs, ",") {
			opts := simulator.EnvironmentOptions{}
			if env == "production" && *reviewer != "" {
				opts = simulator.EnvironmentOptions{Reviewers: []string{*reviewer}, Review: simulator.AutoApprove(*reviewer, "approved by ghsim")}
			}
			sim.SetEnvironment(repo, strings.TrimSpace(env), opts)
		}
	}
	fmt.Fprintf(out, "api %s\napp-id %d\ninstallation %d\n", api, *appID, inst)
	if ready != nil {
		ready(sim)
	}
	<-ctx.Done()
	return nil
}
