package app

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/metrics/promtest"
)

// TestDashboardsAgainstARealPrometheus runs lastmile through a scenario —
// three releases to production, the second failing, the third restoring,
// and another repository's deployment that no workflow run takes up —
// lets a real Prometheus scrape it with lastmile's rules loaded, and checks
// every dashboard query returns what the scenario implies.
func TestDashboardsAgainstARealPrometheus(t *testing.T) {
	sb := sandbox(t, nil)
	prom := promtest.StartT(t, sb.App.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const repo = "acme/shop"
	inst := sb.Sim.CreateInstallation("acme", "Organization")
	sb.Sim.CreateRepo(inst, repo, simulator.RepoOptions{})
	sb.Sim.SetEnvironment(repo, "production", simulator.EnvironmentOptions{Reviewers: []string{"bob"}, Review: simulator.Manual()})
	sb.Sim.SetWorkflow(repo, simulator.WorkflowOptions{})
	cfg := "environments:\n  - name: staging\n  - name: production\n"

	// approveProduction waits for the release's production job to wait for
	// bob, lets Prometheus see the state before, and approves it.
	approveProduction := func(step string) {
		t.Helper()
		waitFor(t, sb, step+": production review", func(s *simulator.Simulator) bool { return len(s.PendingReviews(repo)) == 1 })
		settle(t, sb)
		if _, err := prom.WaitForEvaluation(ctx, time.Now(), 2); err != nil {
			t.Fatalf("%s: %v\n%s", step, err, prom.Log())
		}
		p := sb.Sim.PendingReviews(repo)[0]
		if err := sb.Sim.Approve(repo, p.RunID, p.Environment, "bob", "ok"); err != nil {
			t.Fatal(err)
		}
	}
	finished := func(sha, state string) {
		t.Helper()
		waitFor(t, sb, "production "+state, func(s *simulator.Simulator) bool {
			for _, d := range deploymentsInEnv(s, repo, sha, "production") {
				if d.State() == state {
					return true
				}
			}
			return false
		})
		settle(t, sb)
	}

	r1 := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Enrol", Files: map[string]string{".github/lastmile.yml": cfg}})
	approveProduction("first release")
	finished(r1.After, "success")

	sb.Sim.SetWorkflow(repo, simulator.WorkflowOptions{FailEnvironments: []string{"production"}})
	r2 := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Break", Files: map[string]string{"v": "2"}})
	approveProduction("second release")
	finished(r2.After, "failure")

	// The third release's commit was written 90 minutes ago: its lead time
	// lands in the (1h, 2h] bucket.
	sb.Sim.SetWorkflow(repo, simulator.WorkflowOptions{})
	r3 := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Fix", Time: time.Now().Add(-90 * time.Minute), Files: map[string]string{"v": "3"}})
	approveProduction("third release")
	finished(r3.After, "success")

	// A repository with no deploy workflow: its deployment to staging
	// waits for a run that never comes.
	bareInst := sb.Sim.CreateInstallation("umbrella", "Organization")
	sb.Sim.CreateRepo(bareInst, "umbrella/bare", simulator.RepoOptions{})
	bare := sb.Sim.Push("umbrella/bare", "main", simulator.CommitSpec{Message: "Enrol", Files: map[string]string{".github/lastmile.yml": cfg}})
	waitFor(t, sb, "umbrella/bare's deployment to staging", func(s *simulator.Simulator) bool {
		return len(deploymentsInEnv(s, "umbrella/bare", bare.After, "staging")) == 1
	})
	settle(t, sb)

	at, err := prom.WaitForEvaluation(ctx, time.Now(), 3)
	if err != nil {
		t.Fatalf("%v\n%s", err, prom.Log())
	}

	// The raw series first: the counts and the known commit's bucket.
	one := func(expr string) float64 {
		t.Helper()
		s, err := prom.Query(ctx, expr, at)
		if err != nil || len(s) != 1 {
			t.Fatalf("%s: %v %v", expr, s, err)
		}
		return s[0].Value
	}
	sel := `{repository="acme/shop", environment="production"`
	if got := one(`lastmile_deployments_total` + sel + `, state="success"}`); got != 2 {
		t.Errorf("successful production deployments: %v, want 2", got)
	}
	if got := one(`lastmile_deployments_total` + sel + `, state="failure"}`); got != 1 {
		t.Errorf("failed production deployments: %v, want 1", got)
	}
	if got := one(`lastmile_deployment_lead_time_seconds_bucket` + sel + `, le="7200"} - ignoring(le) lastmile_deployment_lead_time_seconds_bucket` + sel + `, le="3600"}`); got != 1 {
		t.Errorf("commits with a lead time in (1h, 2h]: %v, want 1 (the third release's)", got)
	}
	if got := one(`lastmile_time_to_restore_seconds_count` + sel + `}`); got != 1 {
		t.Errorf("restores observed: %v, want 1", got)
	}
	if got := one(`lastmile_approval_wait_seconds_count` + sel + `}`); got != 3 {
		t.Errorf("approval waits observed: %v, want 3", got)
	}

	// Then every dashboard query, with the variables as a manager would
	// pick them: this repository, its production environments, one day.
	builtins := map[string]string{"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
	want := map[string]func(v float64) bool{
		"Successful deployments, last 7 days/A":                   rounds(2),
		"Deployment success rate ($window)/A":                     near(2.0/3, 0.01),
		"Deployment success rate over time ($window)/A":           near(2.0/3, 0.01),
		"Deploy frequency: successful deployments per 24 hours/A": rounds(2),
		"Time since last successful deployment/A":                 func(v float64) bool { return v >= 0 && v < 300 },
		"Lead time for changes ($window): median and p90/B":       func(v float64) bool { return v > 3600 && v <= 7200 },
		"Lead time for changes, median ($window)/A":               func(v float64) bool { return v > 0 && v <= 60 },
		"Lead time for changes ($window): median and p90/A":       func(v float64) bool { return v > 0 && v <= 60 },
		"Time to restore ($window): median/A":                     func(v float64) bool { return v > 0 && v <= 60 },
		"Approval wait ($window): median and p90/A":               func(v float64) bool { return v > 0 && v <= 300 },
		"Approval wait ($window): median and p90/B":               func(v float64) bool { return v > 0 && v <= 300 },
		"Deployment duration ($window): median and p90/A":         func(v float64) bool { return v > 0 && v <= 300 },
		"Deployment duration ($window): median and p90/B":         func(v float64) bool { return v > 0 && v <= 300 },
		"Webhook deliveries by outcome/A":                         func(v float64) bool { return v >= 0 },
		"GitHub API requests by status code/A":                    func(v float64) bool { return v >= 0 },
		"Inbox: pending deliveries/A":                             near(0, 0),
		"Inbox: age of the oldest pending delivery/A":             near(0, 0),
		"Dead deliveries/A":                                       near(0, 0),
		"Worker: deliveries handled by result/A":                  func(v float64) bool { return v >= 0 },
		"Worker: handling latency/A":                              func(v float64) bool { return v > 0 },
		"Worker: handling latency/B":                              func(v float64) bool { return v > 0 },
		"GitHub rate limit: remaining vs limit/A":                 func(v float64) bool { return v > 0 },
		"GitHub rate limit: remaining vs limit/B":                 near(5000, 0),
		"Metrics: database read errors/A":                         near(0, 0),
		"Process: resident memory/A":                              func(v float64) bool { return v > 1e6 },
		"Go: goroutines/A":                                        func(v float64) bool { return v > 5 },
		"Build info/A":                                            near(1, 0),
		"Deployments waiting for a workflow run/A":                func(v float64) bool { return v >= 0 && v < 300 },
	}
	outcomes := map[string]float64{}
	checked := map[string]bool{}
	for _, name := range []string{"delivery.json", "operations.json"} {
		d, err := promtest.LoadDashboard(filepath.Join(promtest.Dir(), "dashboards", name))
		if err != nil {
			t.Fatal(err)
		}
		overrides := map[string][]string{}
		if name == "delivery.json" {
			overrides = map[string][]string{"repository": {repo}, "window": {"1d"}}
		}
		vs, err := d.Resolve(ctx, prom, at, overrides, builtins)
		if err != nil {
			t.Fatal(err)
		}
		if envs := vs.Selected("environment"); name == "delivery.json" && (len(envs) != 1 || envs[0] != "production") {
			t.Errorf("the environment variable defaults to %v, want the production environment", envs)
		}
		results, err := d.Evaluate(ctx, prom, vs, at)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range results {
			key := r.Key()
			if r.Err != nil {
				t.Errorf("%s: %s: %v", name, key, r.Err)
				continue
			}
			if strings.HasPrefix(key, "Deployments by outcome") {
				for _, s := range r.Samples {
					outcomes[s.Labels["state"]] = s.Value
				}
				checked[key] = true
				continue
			}
			ok, known := want[key]
			if !known {
				t.Errorf("%s: no expectation for query %s: %s", name, key, r.Expr)
				continue
			}
			checked[key] = true
			if len(r.Samples) == 0 {
				t.Errorf("%s: %s returned nothing: %s", name, key, r.Expr)
			}
			for _, s := range r.Samples {
				if !ok(s.Value) {
					t.Errorf("%s: %s = %v %v, not what the scenario implies\n  %s", name, key, s.Value, s.Labels, r.Expr)
				}
			}
		}
	}
	for key := range want {
		if !checked[key] {
			t.Errorf("query %s is no longer on a dashboard", key)
		}
	}
	if math.Round(outcomes["success"]) != 2 || math.Round(outcomes["failure"]) != 1 || math.Round(outcomes["error"]) != 0 {
		t.Errorf("deployments by outcome: %v, want success 2, failure 1, error 0", outcomes)
	}
}

// rounds accepts values that round to want: increase() extrapolates a little
// over series as young as the test's.
func rounds(want float64) func(float64) bool {
	return func(v float64) bool { return math.Round(v) == want }
}

func near(want, tolerance float64) func(float64) bool {
	return func(v float64) bool { return math.Abs(v-want) <= tolerance+1e-9 }
}
