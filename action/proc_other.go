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

func terminateGroup(cmd *exec.Cmd) { _ = cmd.Process.Signal(os.Interrupt) }

func killGroup(cmd *exec.Cmd) { _ = cmd.Process.Kill() }

func groupAlive(*exec.Cmd) bool { return false }
