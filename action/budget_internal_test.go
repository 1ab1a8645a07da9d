package action

import (
	"testing"
	"time"
)

// Once the job is cancelled, a post gets what is left of cancelledBudget
// since the cancellation (the command's stop took its part), at most
// cancelledPostTimeout and at least minCancelledPost: the runner's SIGKILL
// comes 10 s after its SIGINT, whenever the post starts.
func TestPostBudgetCountsFromTheCancellation(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	r := &runner{env: Env{now: func() time.Time { return now }}}
	if got := r.postBudget(); got != cancelledPostTimeout {
		t.Errorf("not cancelled: %s, want %s", got, cancelledPostTimeout)
	}
	for _, tc := range []struct {
		since, want time.Duration
	}{
		{0, cancelledPostTimeout},
		{3 * time.Second, cancelledPostTimeout},
		{5500 * time.Millisecond, 3500 * time.Millisecond}, // KillGrace and the output's half second
		{6 * time.Second, 3 * time.Second},                 // a command that could not be stopped
		{9500 * time.Millisecond, minCancelledPost},
	} {
		at := now.Add(-tc.since)
		r.cancelledAt.Store(&at)
		if got := r.postBudget(); got != tc.want {
			t.Errorf("cancelled %s before: %s, want %s", tc.since, got, tc.want)
		}
	}
}
