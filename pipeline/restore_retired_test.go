package pipeline_test

import (
	"errors"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// Production fails; then the repository leaves lastmile (its
// .github/lastmile.yml removed) for two weeks, deploying by other means,
// and comes back: the first success after that restores nothing — the
// clock stopped when lastmile retired the environment, and again when it
// made it live, for a failure that a deployment in flight reported in
// between — where, without the time off, the same success measures the
// restore.
func TestTimeOffLastmileIsNoRestore(t *testing.T) {
	for _, tc := range []struct {
		name        string
		leave       bool
		failOutside bool // the failure reported after the repository left
		restores    uint64
	}{
		{name: "stays enrolled", restores: 1},
		{name: "leaves and comes back", leave: true},
		{name: "fails while out, comes back", leave: true, failOutside: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now, wait := manualClock(time.Now().Add(-30 * 24 * time.Hour))
			h := newHarness(t, c0, c1, c2, c3)
			h.gh.now, h.engine.Now, h.db.Now = now, now, now
			h.release(c0, c1, 10, "test", "staging")
			h.status(c1, "production", pipeline.DeploymentInProgress, 12, true)
			if !tc.failOutside {
				h.status(c1, "production", pipeline.DeploymentFailure, 12, true)
			}
			wait(time.Hour)
			if tc.leave {
				h.gh.noConfig = []string{c2}
			}
			// Not enrolled there: ignored, saying so.
			if err := h.push(c1, c2, false); err != nil && !(tc.leave && errors.As(err, new(*pipeline.Ignored))) {
				t.Fatal(err)
			}
			if tc.failOutside {
				wait(time.Hour)
				h.status(c1, "production", pipeline.DeploymentFailure, 12, true)
			}
			wait(14 * 24 * time.Hour)
			h.gh.noConfig = nil
			h.release(c2, c3, 20, "test", "staging", "production")
			if n, sum := h.restoresObserved("production"); n != tc.restores {
				t.Errorf("time to restore observed %d times (%.1f days), want %d", n, sum/86400, tc.restores)
			}
		})
	}
}
