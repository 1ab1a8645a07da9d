package app

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

// apiCalls counts lastmile's calls to GitHub (the App's and its
// installations', not the simulated workflows'), by endpoint, leaving out
// installation token requests and the start-up check of the App's
// credentials (GET /app, once per start).
func apiCalls(sim *simulator.Simulator) map[string]int {
	ids := regexp.MustCompile(`/[0-9a-f]{40}|/\d+`)
	out := map[string]int{}
	for _, r := range sim.Requests() {
		if r.Auth != simulator.AuthInstallation && r.Auth != simulator.AuthApp {
			continue
		}
		if strings.HasSuffix(r.Path, "/access_tokens") || r.Method == "GET" && r.Path == "/app" {
			continue
		}
		out[r.Method+" "+ids.ReplaceAllString(r.Path, "/{id}")]++
	}
	return out
}

// TestGitHubRequestsPerEnvironment measures lastmile's GitHub API use on the
// happy path: per push, and per promoted environment (target: at most 2).
func TestGitHubRequestsPerEnvironment(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", map[string]simulator.ReviewPolicy{"production": simulator.AutoApprove("bob", "")}, simulator.WorkflowOptions{})
	const envs = 3
	const pushes = 3
	var last simulator.PushResult
	for i := range pushes {
		files := map[string]string{"v": fmt.Sprint(i)}
		if i == 0 {
			files[".github/lastmile.yml"] = threeEnvs
		}
		last = sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: fmt.Sprint("change ", i), Files: files})
		sha := last.After
		waitFor(t, sb, "production", func(s *simulator.Simulator) bool { return succeededIn(s, repo, sha, "production") })
		settle(t, sb)
	}
	calls := apiCalls(sb.Sim)
	total := 0
	var lines []string
	for k, n := range calls {
		total += n
		lines = append(lines, fmt.Sprintf("%3d  %s", n, k))
	}
	sort.Strings(lines)
	perPush := calls["GET /repos/acme/shop/contents/.github/lastmile.yml"]
	perEnv := float64(total-perPush) / float64(pushes*envs)
	t.Logf("GitHub API calls for %d pushes promoted through %d environments:\n%s\nper push (configuration read): %.1f; per promoted environment: %.2f",
		pushes, envs, strings.Join(lines, "\n"), float64(perPush)/pushes, perEnv)
	if perPush != pushes {
		t.Errorf("configuration read %d times for %d pushes", perPush, pushes)
	}
	if perEnv > 2 {
		t.Errorf("%.2f GitHub requests per promoted environment, want at most 2", perEnv)
	}
}

// BenchmarkPushToFirstDeployment measures the time from a push (the
// simulator, answering at once, sends its webhook) to the first deployment's
// creation reaching the simulator: the delivery, intake and its durable
// commit, the worker, reading the configuration, recording the release and
// the intent, and the creation request.
// It reports p50 and p99 in milliseconds.
//
//	go test ./app -run '^$' -bench PushToFirstDeployment -benchtime 200x
func BenchmarkPushToFirstDeployment(b *testing.B) {
	sb, err := NewSandbox(context.Background(), SandboxOptions{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer sb.Close()
	inst := sb.Sim.CreateInstallation("acme", "Organization")
	var latencies []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		repo := fmt.Sprintf("acme/svc%d", i)
		sb.Sim.CreateRepo(inst, repo, simulator.RepoOptions{})
		sb.Sim.PushSilently(repo, "main", simulator.CommitSpec{Message: "Enrol", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
		b.StartTimer()

		start := time.Now()
		push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Change", Files: map[string]string{"v": "1"}})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var created time.Time
		err := sb.Sim.WaitFor(ctx, func(s *simulator.Simulator) bool {
			for _, d := range s.Deployments(repo) {
				if d.SHA == push.After {
					created = d.CreatedAt
					return true
				}
			}
			return false
		})
		cancel()
		if err != nil {
			b.Fatalf("no deployment for push %d: %v", i, err)
		}
		latencies = append(latencies, created.Sub(start))
	}
	b.StopTimer()
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(latencies[len(latencies)-1].Microseconds())/1000, "max-ms")
}
