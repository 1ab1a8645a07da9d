package pipeline_test

// Delivery metrics that follow GitHub's history, not the order lastmile
// hears of it.

import (
	"testing"

	"github.com/lastmile-app/lastmile/pipeline"
)

// c1, the repository's first release, fails in staging; c2 carries it to
// production. c1's first successful deployment in production is c2's,
// though lastmile never deployed c1's release there.
func TestLeadTimeOfAFirstReleaseThatStoppedBeforeProduction(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentSuccess, 10, true)
	h.status(c1, "staging", pipeline.DeploymentFailure, 11, true)
	h.release(c1, c2, 20, "test", "staging", "production")
	for env, want := range map[string]uint64{"test": 2, "staging": 2, "production": 2} {
		if n := h.leadTimesObserved(env); n != want {
			t.Errorf("lead times in %s: %d, want %d (c1 and c2)", env, n, want)
		}
	}
}

// An environment's first success brings the commits of the releases since
// the first whose configuration names it, whatever the case of the name
// (GitHub's environment names ignore case): c1's configuration names
// Staging, where it fails; c2's names staging.
func TestLeadTimeOfAnEnvironmentsFirstSuccessIgnoresTheCaseOfItsName(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.gh.config = "environments:\n  - name: test\n  - name: Staging\n"
	h.release(c0, c1, 10, "test")
	h.status(c1, "Staging", pipeline.DeploymentFailure, 11, true)
	h.gh.config = "environments:\n  - name: test\n  - name: staging\n"
	h.release(c1, c2, 20, "test", "staging")
	if n := h.leadTimesObserved("staging"); n != 2 {
		t.Errorf("lead times in staging: %d, want 2 (c1 and c2)", n)
	}
}
