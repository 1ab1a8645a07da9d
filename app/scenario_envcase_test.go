package app

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/metrics"
)

// histogramIn sums a histogram's count and sum over the series of repo's
// environment env in any case.
func histogramIn(t *testing.T, sb *Sandbox, name, repo, env string) (uint64, float64) {
	t.Helper()
	snap, err := sb.App.DB().MetricsSnapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var count uint64
	var sum float64
	for _, h := range snap.Histograms[name] {
		if h.Labels[0] == repo && strings.EqualFold(h.Labels[1], env) {
			count += h.Count
			sum += h.Sum
		}
	}
	return count, sum
}

// lastSuccess is lastmile_last_success_timestamp_seconds of repo's
// environment env, spelled exactly so; 0 if there is no such series.
func lastSuccess(t *testing.T, sb *Sandbox, repo, env string) float64 {
	t.Helper()
	snap, err := sb.App.DB().MetricsSnapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range snap.Gauges[metrics.LastSuccess] {
		if g.Labels[0] == repo && g.Labels[1] == env {
			return g.Value
		}
	}
	return 0
}

// nextSecond waits for the next whole second, and returns it (Unix
// seconds): GitHub dates deployment statuses to the second, and the
// sandbox's deploys take milliseconds.
func nextSecond() float64 {
	next := time.Now().Truncate(time.Second).Add(time.Second)
	time.Sleep(time.Until(next))
	return float64(next.Unix())
}

// GitHub's environment names ignore case: a configuration that respells an
// environment only in case names the same environment, and its first
// success there does not observe again the lead time of the commits that
// reached it under the old spelling.
func TestEnvironmentRespelledInCaseKeepsLeadTimes(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	p1 := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": "environments:\n  - name: test\n  - name: Production\n"}})
	waitFor(t, sb, "Production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, p1.After, "Production") })
	settle(t, sb)
	p2 := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Respell", Files: map[string]string{".github/lastmile.yml": "environments:\n  - name: test\n  - name: production\n"}})
	waitFor(t, sb, "production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, p2.After, "production") })
	settle(t, sb)
	snap, _ := sb.App.DB().MetricsSnapshot(context.Background())
	total := uint64(0)
	for _, h := range snap.Histograms["lastmile_deployment_lead_time_seconds"] {
		if strings.EqualFold(h.Labels[1], "production") {
			total += h.Count
		}
	}
	if total != 2 {
		t.Errorf("lead time observations in the production environment (either spelling): %d, want 2 (two commits, each once)", total)
	}
}

// A case-only respelling keeps the environment's restore clock and last
// success: a failure under the old spelling is restored by the first
// success under the new one, and the new spelling's last success is the
// old one's until then.
func TestEnvironmentRespelledInCaseKeepsRestoreClockAndLastSuccess(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	failedIn := func(sha, env string) func(*simulator.Simulator) bool {
		return func(s *simulator.Simulator) bool {
			for _, d := range s.Deployments(repo) {
				if d.Environment == env && d.SHA == sha && d.State() == "failure" {
					return true
				}
			}
			return false
		}
	}

	p1 := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": "environments:\n  - name: test\n  - name: Production\n"}})
	waitFor(t, sb, "Production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, p1.After, "Production") })
	settle(t, sb)
	first := lastSuccess(t, sb, repo, "Production")
	if first == 0 {
		t.Fatal("no last success in Production after its first success")
	}

	// The second release fails in Production: the restore clock runs.
	nextSecond()
	sb.Sim.SetWorkflow(repo, simulator.WorkflowOptions{FailEnvironments: []string{"Production"}})
	p2 := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Break", Files: map[string]string{"v": "2"}})
	waitFor(t, sb, "Production failure", failedIn(p2.After, "Production"))
	settle(t, sb)
	failing := nextSecond() // after the first failure, before any later one

	// The third respells the environment and fails there too.
	sb.Sim.SetWorkflow(repo, simulator.WorkflowOptions{FailEnvironments: []string{"production"}})
	p3 := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Respell", Files: map[string]string{
		".github/lastmile.yml": "environments:\n  - name: test\n  - name: production\n", "v": "3"}})
	waitFor(t, sb, "production failure", failedIn(p3.After, "production"))
	settle(t, sb)
	if got := lastSuccess(t, sb, repo, "production"); got != first {
		t.Errorf("last success of production after the respelling, before its first success there: %v, want %v (Production's)", got, first)
	}
	if n, _ := histogramIn(t, sb, metrics.TimeToRestore, repo, "production"); n != 0 {
		t.Errorf("restores observed while the environment still fails: %d, want 0", n)
	}

	// The fourth succeeds: restored since the second's failure, under the
	// old spelling; it brings the commits of the three releases since the
	// first's success, each observed once.
	nextSecond()
	sb.Sim.SetWorkflow(repo, simulator.WorkflowOptions{})
	p4 := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Fix", Files: map[string]string{"v": "4"}})
	waitFor(t, sb, "production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, p4.After, "production") })
	settle(t, sb)
	restored := lastSuccess(t, sb, repo, "production")
	if restored <= first {
		t.Fatalf("last success of production after its success: %v, want after %v", restored, first)
	}
	n, sum := histogramIn(t, sb, metrics.TimeToRestore, repo, "production")
	if n != 1 {
		t.Errorf("restores observed: %d, want 1", n)
	} else if sum <= restored-failing {
		t.Errorf("time to restore: %.3fs, want more than %.3fs (from the failure under the old spelling)", sum, restored-failing)
	}
	if n, _ := histogramIn(t, sb, metrics.LeadTime, repo, "production"); n != 4 {
		t.Errorf("lead time observations in production (either spelling): %d, want 4 (four commits, each once)", n)
	}
}
