//go:build unix

package action

import (
	"os/exec"
	"syscall"
)

// setProcessGroup starts the command in a process group of its own, so that
// a cancellation reaches everything it started.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// processTree is what a deploy command started: its process group, and
// the processes it started that left the group — a step run under
// timeout(1) or setsid, a job under set -m — which a signal to the group
// misses.
// Those still among the command's descendants are found (where the system
// shows them: see descendantsOutside) each time the tree is signalled or
// looked at, and remembered, so that they are signalled still once the
// command that started them is gone.
type processTree struct {
	cmd    *exec.Cmd
	strays map[int]uint64 // pid → its start time, to tell a reused pid
	// reaped tells that the command has been waited for: its pid may be
	// another process's now, and is no root of the search.
	reaped bool
}

func newProcessTree(cmd *exec.Cmd) *processTree {
	return &processTree{cmd: cmd, strays: map[int]uint64{}}
}

// terminate sends SIGTERM to the tree; kill, SIGKILL.
func (t *processTree) terminate() { t.signal(syscall.SIGTERM) }
func (t *processTree) kill()      { t.signal(syscall.SIGKILL) }

// signal signals the command's process group (or the command alone should
// its group be gone, or never made) and each process that left it.
func (t *processTree) signal(sig syscall.Signal) {
	t.find()
	if err := syscall.Kill(-t.cmd.Process.Pid, sig); err != nil {
		_ = t.cmd.Process.Signal(sig)
	}
	for pid, start := range t.strays {
		if s, ok := processStart(pid); ok && s == start {
			_ = syscall.Kill(pid, sig)
		}
	}
}

// alive reports whether the command's process group, or a process that
// left it, has a process left (a stray that has exited, and waits to be
// reaped by its parent, is not; a member of the group is until reaped).
func (t *processTree) alive() bool {
	if syscall.Kill(-t.cmd.Process.Pid, 0) != syscall.ESRCH {
		return true
	}
	t.find()
	for pid, start := range t.strays {
		if s, ok := processStart(pid); ok && s == start {
			return true
		}
		delete(t.strays, pid)
	}
	return false
}

// find adds to strays the descendants of the command (until it is
// reaped), and of the strays already known that are still the processes
// they were, that are not in its process group. A process whose parent
// has exited (a double fork, setsid -f) is no one's descendant any more:
// it is not found.
func (t *processTree) find() {
	roots := map[int]uint64{}
	if !t.reaped {
		roots[t.cmd.Process.Pid] = 0 // its child until reaped: not reused
	}
	for pid, start := range t.strays {
		roots[pid] = start
	}
	for pid, start := range descendantsOutside(roots, t.cmd.Process.Pid) {
		t.strays[pid] = start
	}
}
