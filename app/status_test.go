package app

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/pipeline"
)

// lastmile status says, per environment of a pipeline, what runs there
// (the newest release that succeeded there) and lastmile's newest
// deployment there when it is of a newer release: waiting for its
// reviewers, then rejected. The command, its --json and the read API say
// the same.
func TestStatusSaysWhatEachEnvironmentRunsAndWhatIsOnItsWay(t *testing.T) {
	ctx := context.Background()
	const token = "0123456789abcdef-token"
	sb := sandbox(t, func(c *Config) { c.APIToken = token })
	db := sb.Config.Database
	if code, out, errOut := run(t, db, "status"); code != 0 || strings.TrimSpace(out) != "no pipelines recorded yet" {
		t.Errorf("status of an empty database: exit %d\n%s%s", code, out, errOut)
	}
	repo := sb.repo("shop", map[string]simulator.ReviewPolicy{"staging": simulator.Manual(), "production": simulator.Manual()}, simulator.WorkflowOptions{})
	review := func(sha, env, login string, approve bool) {
		t.Helper()
		var pending simulator.PendingReview
		waitFor(t, sb, env+" waiting for its reviewers", func(s *simulator.Simulator) bool {
			deps := deploymentsByEnv(sb, repo, sha)[env]
			if len(deps) != 1 {
				return false
			}
			for _, p := range s.PendingReviews(repo) {
				if p.Environment == env && runOf(sb, repo, deps[0].ID).ID == p.RunID {
					pending = p
					return true
				}
			}
			return false
		})
		settle(t, sb)
		var err error
		if approve {
			err = sb.Sim.Approve(repo, pending.RunID, env, login, "looks right")
		} else {
			err = sb.Sim.Reject(repo, pending.RunID, env, login, "not today")
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	first := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	review(first.After, "staging", "alice", true)
	review(first.After, "production", "bob", true)
	waitFor(t, sb, "production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, first.After, "production") })
	second := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Fix totals", Files: map[string]string{"totals.go": "package shop\n"}})
	waitFor(t, sb, "test success of the second release", func(s *simulator.Simulator) bool { return succeededIn(s, repo, second.After, "test") })
	waitFor(t, sb, "staging waiting for its reviewers", func(s *simulator.Simulator) bool { return len(s.PendingReviews(repo)) == 1 })
	settle(t, sb)

	type want struct {
		env                  string
		live, latest         string // the commit; "" for none
		state                pipeline.DeploymentState
		awaiting, production bool
	}
	check := func(when string, wants []want) []pipeline.EnvironmentStatus {
		t.Helper()
		list, err := sb.App.DB().Status(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != len(wants) {
			t.Fatalf("%s: %d environments, want %d: %+v", when, len(list), len(wants), list)
		}
		for i, w := range wants {
			e := list[i]
			var live, latest string
			if e.Live != nil {
				live = e.Live.SHA
			}
			if e.Latest != nil {
				latest = e.Latest.SHA
			}
			if e.Repository != repo || e.Environment != w.env || e.Production != w.production || live != w.live || latest != w.latest {
				t.Errorf("%s: #%d %s %s production=%v live %.7s latest %.7s, want %s %s production=%v live %.7s latest %.7s",
					when, i, e.Repository, e.Environment, e.Production, live, latest, repo, w.env, w.production, w.live, w.latest)
				continue
			}
			if e.Latest != nil && (e.Latest.State != w.state || e.Latest.AwaitingReview() != w.awaiting) {
				t.Errorf("%s: %s's latest deployment %s (awaiting review: %v), want %s (%v)", when, w.env, e.Latest.State, e.Latest.AwaitingReview(), w.state, w.awaiting)
			}
			if e.Live != nil && (e.Live.DeploymentID == 0 || e.Live.At.IsZero()) {
				t.Errorf("%s: %s live without its deployment or time: %+v", when, w.env, e.Live)
			}
		}
		return list
	}
	list := check("the second release waiting for staging's reviewers", []want{
		{env: "test", live: second.After},
		{env: "staging", live: first.After, latest: second.After, state: pipeline.DeploymentQueued, awaiting: true},
		{env: "production", live: first.After, production: true},
	})
	if r := list[1].Latest.Review; r == nil || !slices.Equal(r.Reviewers, []string{"alice", "bob"}) {
		t.Errorf("staging's review: %+v, want one requested of alice and bob", r)
	}
	code, out, errOut := run(t, db, "status")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[0], "REPOSITORY") ||
		!strings.Contains(lines[1], "test") || !strings.Contains(lines[1], "#2 "+second.After[:7]) ||
		!strings.Contains(lines[2], "#1 "+first.After[:7]) || !strings.Contains(lines[2], "#2 "+second.After[:7]+" awaiting review by alice, bob since ") ||
		!strings.Contains(lines[3], "production") || !strings.HasSuffix(lines[3], " -") {
		t.Errorf("status: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = run(t, db, "status", "--json", "--repo", repo)
	var fromCLI []pipeline.EnvironmentStatus
	if code != 0 || json.Unmarshal([]byte(out), &fromCLI) != nil || len(fromCLI) != 3 || fromCLI[1].Latest == nil || !fromCLI[1].Latest.AwaitingReview() {
		t.Errorf("status --json --repo %s: exit %d\n%s", repo, code, out)
	}
	code, body := request(t, http.MethodGet, sb.URL()+"/api/v1/status?repository="+repo, "Bearer "+token)
	var fromAPI struct {
		Environments []pipeline.EnvironmentStatus `json:"environments"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &fromAPI) != nil || len(fromAPI.Environments) != 3 ||
		fromAPI.Environments[2].Live == nil || fromAPI.Environments[2].Live.SHA != first.After {
		t.Errorf("GET /api/v1/status: %d %s", code, body)
	}

	review(second.After, "staging", "alice", false)
	waitFor(t, sb, "the rejected staging deployment failed", func(s *simulator.Simulator) bool {
		d := deploymentsByEnv(sb, repo, second.After)["staging"]
		return len(d) == 1 && d[0].State() == "failure"
	})
	settle(t, sb)
	list = check("the second release rejected in staging", []want{
		{env: "test", live: second.After},
		{env: "staging", live: first.After, latest: second.After, state: pipeline.DeploymentFailure},
		{env: "production", live: first.After, production: true},
	})
	if l := list[1].Latest; !strings.Contains(l.Reason, "rejected by alice") || l.Review == nil ||
		l.Review.Action != pipeline.ReviewRejected || l.Review.Actor != "alice" || l.Review.Comment != "not today" {
		t.Errorf("staging's latest deployment: reason %q, review %+v; want alice's rejection", l.Reason, l.Review)
	}
	if code, out, _ := run(t, db, "status", "--repo", repo); code != 0 || !strings.Contains(out, "#2 "+second.After[:7]+" failure since ") {
		t.Errorf("status after the rejection: exit %d\n%s", code, out)
	}

	// A repository lastmile has no record of: said, exit code 1; the API's 404.
	if code, out, errOut := run(t, db, "status", "--repo", "acme/nope"); code != 1 || !strings.Contains(errOut, "acme/nope") || out != "" {
		t.Errorf("status --repo acme/nope: exit %d\n%s%s", code, out, errOut)
	}
	if code, body := request(t, http.MethodGet, sb.URL()+"/api/v1/status?repository=acme/nope", "Bearer "+token); code != http.StatusNotFound {
		t.Errorf("GET /api/v1/status?repository=acme/nope: %d %s, want 404", code, body)
	}
}
