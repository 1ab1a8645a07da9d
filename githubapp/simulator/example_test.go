package simulator_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

// A scenario: a push, a deployment created by the App, and the workflow run
// it triggers, gated by a reviewer who approves at once.
func Example() {
	// Where the App receives webhooks (lastmile's POST /webhook in real tests).
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	}))
	defer hooks.Close()

	sim := simulator.New(simulator.Options{AppID: 42, WebhookSecret: "s3cret", WebhookURL: hooks.URL})
	defer sim.Close()
	api, err := sim.Start("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	inst := sim.CreateInstallation("acme", "Organization")
	sim.CreateRepo(inst, "acme/shop", simulator.RepoOptions{})
	sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{})
	sim.SetEnvironment("acme/shop", "production", simulator.EnvironmentOptions{
		Reviewers: []string{"alice"},
		Review:    simulator.AutoApprove("alice", "ship it"),
	})
	push := sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "Fix checkout", Files: map[string]string{"app.txt": "v2"}})

	// The App's client, exactly as lastmile builds it.
	atr, _ := ghinstallation.NewAppsTransport(http.DefaultTransport, sim.AppID(), sim.AppPrivateKeyPEM())
	atr.BaseURL = strings.TrimSuffix(api, "/")
	gh := github.NewClient(&http.Client{Transport: ghinstallation.NewFromAppsTransport(atr, inst)})
	gh.BaseURL, _ = gh.BaseURL.Parse(api)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, _, err := gh.Repositories.CreateDeployment(ctx, "acme", "shop", &github.DeploymentRequest{
		Ref: github.String(push.After), Environment: github.String("production"),
		AutoMerge: github.Bool(false), RequiredContexts: &[]string{},
	})
	if err != nil {
		panic(err)
	}
	// Wait on a condition, never with a sleep.
	if err := sim.WaitIdle(ctx); err != nil {
		panic(err)
	}
	for _, dep := range sim.Deployments("acme/shop") {
		fmt.Println(dep.ID == d.GetID(), dep.Environment, dep.State())
	}
	for _, del := range sim.Deliveries() {
		if del.Event == "deployment_review" {
			fmt.Println(del.Event, del.Action)
		}
	}
	// Output:
	// true production success
	// deployment_review requested
	// deployment_review approved
}
