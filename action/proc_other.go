//go:build !unix

package action

import (
	"os"
	"os/exec"
)

// Outside Unix there are no process groups to signal: the command itself
// is interrupted, then killed. (action.yml refuses runners other than
// Linux; this keeps action.Run usable from Go code elsewhere.)

func setProcessGroup(*exec.Cmd) {}

type processTree struct {
	cmd    *exec.Cmd
	reaped bool // unused: nothing is searched for outside Unix
}

func newProcessTree(cmd *exec.Cmd) *processTree { return &processTree{cmd: cmd} }

func (t *processTree) terminate() { _ = t.cmd.Process.Signal(os.Interrupt) }

func (t *processTree) kill() { _ = t.cmd.Process.Kill() }

func (t *processTree) alive() bool { return false }
