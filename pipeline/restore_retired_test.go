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
// clock stopped when lastmile retired the environment — where, without the
// time off, the same success measures the restore.
func TestTimeOffLastmileIsNoRestore(t *testing.T) {
	for _, tc := range []struct {
		name     string
		leave    bool
		restores uint64
	}{
		{"stays enrolled", false, 1},
		{"leaves and comes back", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now, wait := manualClock(time.Now().Add(-30 * 24 * time.Hour))
			h := newHarness(t, c0, c1, c2, c3)
			h.gh.now, h.engine.Now, h.db.Now = now, now, now
			h.release(c0, c1, 10, "test", "staging")
			h.status(c1, "production", pipeline.DeploymentInProgress, 12, true)
			h.status(c1, "production", pipeline.DeploymentFailure, 12, true)
			wait(time.Hour)
			if tc.leave {
				h.gh.noConfig = []string{c2}
			}
			// Not enrolled there: ignored, saying so.
			if err := h.push(c1, c2, false); err != nil && !(tc.leave && errors.As(err, new(*pipeline.Ignored))) {
				t.Fatal(err)
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
