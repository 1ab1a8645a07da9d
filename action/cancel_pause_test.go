//go:build unix

package action_test

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/action"
	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

// blockingClock is fakeClock, except that its first wait of at least min
// does not pass on its own: it ends only with its context, as a real pause
// longer than a cancelled job's budget would.
type blockingClock struct {
	*fakeClock
	min     time.Duration
	blocked chan struct{}
}

func (c *blockingClock) Sleep(ctx context.Context, d time.Duration) error {
	if d >= c.min {
		select {
		case <-c.blocked:
		default:
			close(c.blocked)
			<-ctx.Done()
			return ctx.Err()
		}
	}
	return c.fakeClock.Sleep(ctx, d)
}

// GitHub fails the success status four times (502) and takes the fifth
// try. The job is cancelled early in the 8 s pause before that try: the
// cancellation ends the pause, and the try comes within the time the
// cancellation leaves (not after the rest of the pause, which the
// Action's budget would cut first: a deploy that succeeded left
// in_progress, recorded by lastmile as an error).
func TestCancellationDuringAFinalStatusPauseTriesAgain(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithCancel(w.ctx)
	defer cancel()
	clock := &blockingClock{fakeClock: newFakeClock(), min: 8 * time.Second, blocked: make(chan struct{})}
	id := w.createDeployment()
	gate := filepath.Join(t.TempDir(), "gate")
	if err := syscall.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	s := newStep(t, w.directJob(id), map[string]string{
		"INPUT_COMMAND": `echo "command: waiting"; read -r answer < "$GATE"; echo deployed`,
		"GATE":          gate,
	})
	log := &notifyingLog{changed: make(chan struct{}, 1)}
	env := s.env(log)
	action.SetClock(&env, clock.Now, clock.Sleep)
	done := make(chan gatedResult, 1)
	go func() {
		res, err := action.Run(ctx, env)
		done <- gatedResult{res, err}
	}()
	w.waitFor("in_progress is posted", func(s *simulator.Simulator) bool {
		return len(states(w.deployment(id))) == 1
	})
	// Four 502s on the success status (pauses 1, 2, 4, 8 s); GitHub takes the fifth try.
	w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultServerError, Method: "POST", Path: statusesPath, Times: 4})
	if err := writeGate(gate, "go"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-clock.blocked: // in the 8 s pause after the fourth 502
	case r := <-done:
		t.Fatalf("Run ended before the 8 s pause: %+v, %v\n%s", r.res, r.err, log.String())
	case <-w.ctx.Done():
		t.Fatal("no 8 s pause")
	}
	cancel() // the runner's SIGINT: 4 s left to post
	r := <-done
	if r.err != nil {
		t.Errorf("Run: %v; want the success posted within the cancelled job's 4 s\n%s", r.err, log.String())
	}
	if got := strings.Join(states(w.deployment(id)), ","); got != "in_progress,success" {
		t.Errorf("statuses %s, want in_progress,success", got)
	}
}
