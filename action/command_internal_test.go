package action

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// After SIGKILL the command's end is awaited a while, not for ever: one
// that SIGKILL cannot end (run as another user through a setuid program,
// or stuck on a hung mount) must leave time to post the error status
// before the runner kills the Action. Its exit, when it comes in time, is
// the result.
func TestKilledWaitsBoundedly(t *testing.T) {
	exited := errors.New("signal: killed")
	done := make(chan error, 1)
	done <- exited
	if err := killed(done, time.Minute); err != exited {
		t.Errorf("killed, the command ended: %v, want its exit %v", err, exited)
	}
	began := time.Now()
	err := killed(make(chan error), 50*time.Millisecond)
	if !errors.Is(err, errUnstoppable) || !strings.Contains(err.Error(), "did not end on SIGKILL") {
		t.Errorf("killed, the command never ends: %v, want an error saying so", err)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("killed waited %s for a command that never ends, want about 50ms", took)
	}
}
