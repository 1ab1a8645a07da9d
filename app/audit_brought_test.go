package app

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/pipeline"
)

// A commit a release brought has no release of its own: `audit REPO SHA`
// of it shows the release that brought it — with lastmile's
// protection-rule decision about a deployment of that commit made by hand,
// and that deployment, which no record held.
func TestTheAuditOfABroughtCommitHoldsTheDecisionsAboutIt(t *testing.T) {
	sb := sandbox(t, nil)
	full, inst := protectedStaging(sb, simulator.WorkflowOptions{CreateDeployment: true})
	push := sb.Sim.Push(full, "main",
		simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": testThenStaging}},
		simulator.CommitSpec{Message: "Fix rounding", Files: map[string]string{"totals.go": "package totals\n"}})
	a := push.Commits[0]
	waitFor(t, sb, "staging success of the head", func(s *simulator.Simulator) bool { return succeededIn(s, full, push.After, "staging") })
	settle(t, sb)
	before := len(sb.Sim.ProtectionRuleReviews(full))
	gh := appClient(t, sb, inst)
	if _, _, err := gh.Repositories.CreateDeployment(context.Background(), "acme", "shop", &github.DeploymentRequest{
		Ref: github.String(a), Environment: github.String("staging"), AutoMerge: github.Bool(false), RequiredContexts: &[]string{},
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, sb, "lastmile's answer about the brought commit", func(s *simulator.Simulator) bool { return len(s.ProtectionRuleReviews(full)) > before })
	settle(t, sb)
	answer := sb.Sim.ProtectionRuleReviews(full)[before]

	code, out, errOut := run(t, sb.Config.Database, "audit", "--json", full, a)
	var rec pipeline.AuditRecord
	if code != 0 || json.Unmarshal([]byte(out), &rec) != nil {
		t.Fatalf("audit --json %s: exit %d %s%s", a[:7], code, out, errOut)
	}
	if rec.BroughtCommit == nil || rec.BroughtCommit.SHA != a {
		t.Fatalf("audit of the brought commit does not say so: %s", out)
	}
	found := false
	for _, p := range rec.ProtectionDecisions {
		found = found || p.RunID == answer.RunID && p.SHA == a && p.State == pipeline.ProtectionRejected
	}
	if !found {
		t.Errorf("lastmile's decision about %s in staging (run %d, %s) is not in its record: %+v", a[:7], answer.RunID, answer.State, rec.ProtectionDecisions)
	}
	deps := 0
	for _, e := range rec.Environments {
		for _, d := range e.Deployments {
			if d.SHA == a {
				deps++
			}
		}
	}
	if deps == 0 {
		t.Errorf("the deployments of %s made by hand are not in its record", a[:7])
	}
	// The head's own record is as it was: its decisions, not the other's.
	code, out, _ = run(t, sb.Config.Database, "audit", "--json", full, push.After)
	var head pipeline.AuditRecord
	if code != 0 || json.Unmarshal([]byte(out), &head) != nil {
		t.Fatalf("audit of the head: exit %d", code)
	}
	for _, p := range head.ProtectionDecisions {
		if p.SHA != push.After {
			t.Errorf("the head's record holds a decision about %s", p.SHA[:7])
		}
	}
}
